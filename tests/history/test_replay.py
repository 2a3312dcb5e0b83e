"""Replay into Arrow: real Azure files, our own files, pruning, foreign bodies, streaming."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.backends.local.lake import LocalLake
from metaverse_kit.backends.protocols import CaptureFile
from metaverse_kit.capture import append_events, read_header
from tests.conftest import SimClock


def test_the_three_real_capture_files(real_capture: Path) -> None:
    table = mk.replay_capture(real_capture)
    assert table.num_rows == 22
    assert sorted(table["sequence_number"].to_pylist()) == [0, 1, *range(4, 24)]
    by_file = table.group_by("capture_file").aggregate([("sequence_number", "count")])
    assert sorted(by_file["sequence_number_count"].to_pylist()) == [1, 1, 20]
    blue = table.filter(pa.compute.match_substring(table["capture_file"], "BlueFrog"))
    # No x-opt-enqueued-time in the 2016 file: the EnqueuedTimeUtc text is used.
    assert blue["enqueued_time"][0].as_py() == datetime(2016, 11, 16, 16, 44, 11, tzinfo=UTC)
    mba = table.filter(pa.compute.match_substring(table["capture_file"], "17-10-12"))
    # The 2022 files carry epoch milliseconds, finer than the text.
    assert mba["enqueued_time"][0].as_py() == datetime(2022, 12, 9, 17, 10, 16, 46000, tzinfo=UTC)
    assert mba["partition_key"][0].as_py() == "d8b14c3c-fcfa-4bf4-d034-be8c3f3ecab5"
    # JSON bodies are kept, with the reason they were not decoded.
    assert table["body"].null_count == 0
    assert set(table["decode_error"].to_pylist()) == {
        "not registry Avro (no avro/binary+<schema id> content type)"
    }
    assert table["proposedSnapshot"].null_count == 22


def test_emitted_events_replay_to_typed_columns(workspace: mk.Workspace, clock: SimClock) -> None:
    urn = mk.make_dataset_urn("snowflake", "db.orders")
    receipts = workspace.emit(
        [
            mk.mce(
                urn,
                [
                    mk.aspects.ownership(["jdoe", ("mchen", "DATA_STEWARD")], time_ms=7),
                    mk.aspects.global_tags(["PII", "Gold"]),
                ],
            ),
            mk.example_mce(),
        ]
    )
    table = workspace.replay()
    assert table.num_rows == 2
    row = table.filter(pa.compute.equal(table["partition_key"], urn)).to_pylist()[0]
    assert row["enqueued_time"] == clock.now
    assert row["namespace"] == "metaverse-local" and row["eventhub"] == "metaverse"
    assert row["schema_id"] == receipts[0].schema_id and row["decode_error"] is None
    assert row["body"] is None and row["message_id"] == receipts[0].message_id
    snapshot = row["proposedSnapshot"]
    assert snapshot["branch"].endswith("DatasetSnapshot")
    aspects = snapshot["DatasetSnapshot"]["aspects"]
    assert [a["branch"].rpartition(".")[2] for a in aspects] == ["Ownership", "GlobalTags"]
    owners = aspects[0]["Ownership"]["owners"]
    assert [(o["owner"], o["type"]) for o in owners] == [
        ("urn:li:corpuser:jdoe", "TECHNICAL_OWNER"),
        ("urn:li:corpuser:mchen", "DATA_STEWARD"),
    ]
    types = table.schema
    assert types.field("enqueued_time").type == pa.timestamp("ms", tz="UTC")
    assert pa.types.is_struct(types.field("proposedSnapshot").type)


class CountingLake:
    """A lake that records which files replay opened, to prove pruning happens before reading."""

    def __init__(self, inner: LocalLake) -> None:
        self.inner = inner
        self.root = inner.root
        self.opened: list[str] = []

    def list_files(self, **kw: object) -> list[CaptureFile]:
        return self.inner.list_files(**kw)  # type: ignore[arg-type]

    def read_bytes(self, file: CaptureFile) -> bytes:
        self.opened.append(file.path)
        return self.inner.read_bytes(file)

    def close(self) -> None:
        pass


def test_pruning_by_partition_and_time_before_opening(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    urns = [mk.make_dataset_urn("hive", f"t{i}") for i in range(12)]
    for _ in range(3):
        workspace.emit([mk.mce(u, [mk.aspects.status(False)]) for u in urns])
        clock.advance(days=1)
    lake = CountingLake(workspace.lake)  # type: ignore[arg-type]
    everything = mk.replay_capture(lake, registry=workspace.registry)
    assert everything.num_rows == 36
    all_files = len(lake.opened)
    lake.opened.clear()
    day2 = datetime(2026, 3, 3, tzinfo=UTC)
    some = mk.replay_capture(
        lake, registry=workspace.registry, start=day2, end="2026-03-03T23:59:59Z", partitions=["1"]
    )
    assert 0 < some.num_rows < 12
    assert set(some["partition"].to_pylist()) == {"1"}
    assert len(lake.opened) == 1 < all_files
    assert workspace.replay(partitions=[1]).num_rows == some.num_rows * 3


def test_empty_archives_are_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "ns" / "hub" / "0" / "2026" / "01" / "01" / "00" / "00"
    folder.mkdir(parents=True)
    (folder / "00.avro").write_bytes(append_events(None, []))  # header only
    header = append_events(None, [])
    _, sync, _ = read_header(header)
    (folder / "05.avro").write_bytes(header + b"\x00\x00" + sync)  # one empty block
    assert mk.replay_capture(tmp_path).num_rows == 0


def test_foreign_and_unknown_bodies_are_kept(workspace: mk.Workspace, tmp_path: Path) -> None:
    workspace.emit(mk.example_mce())
    folder = tmp_path / "extra" / "ns" / "hub" / "3" / "2026" / "03" / "02" / "08" / "00"
    folder.mkdir(parents=True)
    base = {"Offset": "0", "EnqueuedTimeUtc": "3/2/2026 8:00:00 AM", "Properties": {}}
    (folder / "00.avro").write_bytes(
        append_events(
            None,
            [
                {**base, "SequenceNumber": 0, "SystemProperties": {}, "Body": b'{"json": true}'},
                {
                    **base,
                    "SequenceNumber": 1,
                    "Body": b"\x00",
                    "SystemProperties": {"content-type": "avro/binary+" + "f" * 32},
                },
                {**base, "SequenceNumber": 2, "Body": None, "SystemProperties": {}},
            ],
        )
    )
    files = [Path(f.path) for f in workspace.lake.list_files()] + [folder / "00.avro"]
    table = mk.replay_capture(files, registry=workspace.registry)
    assert table.num_rows == 4
    errors = dict(
        zip(table["sequence_number"].to_pylist(), table["decode_error"].to_pylist(), strict=False)
    )
    assert errors[1] == f"unknown schema id {'f' * 32}"
    assert errors[2] == "the event has no body"
    extra = table.filter(pa.compute.equal(table["partition"], "3"))
    assert extra["body"].to_pylist()[0] == b'{"json": true}'


def test_a_corrupt_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.avro"
    bad.write_bytes(b"not avro at all")
    with pytest.raises(mk.CaptureFileError, match=r"bad\.avro"):
        mk.replay_capture(bad)


def test_replay_batches_streams_one_batch_per_file(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    for _ in range(3):
        workspace.emit(mk.example_mce())
        clock.advance(minutes=10)
    batches = list(workspace.replay_batches())
    assert [b.num_rows for b in batches] == [1, 1, 1]
    assert all(isinstance(b, pa.RecordBatch) for b in batches)


def test_bad_times_are_user_errors(workspace: mk.Workspace) -> None:
    with pytest.raises(mk.ConfigurationError, match="ISO 8601"):
        workspace.replay(start="yesterday")
    with pytest.raises(mk.ConfigurationError, match=r"after end"):
        workspace.replay(start="2026-02-01", end="2026-01-01")
