"""Replay into Arrow: real Azure files, our own files, pruning, foreign bodies, streaming."""

from __future__ import annotations

import os
import re
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import metaverse_kit as mk
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


def test_pruning_by_partition_and_time_before_opening(
    workspace: mk.Workspace, counting_lake: Any, clock: SimClock
) -> None:
    urns = [mk.make_dataset_urn("hive", f"t{i}") for i in range(12)]
    for _ in range(3):
        workspace.emit([mk.mce(u, [mk.aspects.status(False)]) for u in urns])
        clock.advance(days=1)
    lake = counting_lake
    everything = mk.replay_capture(lake, registry=workspace.registry, cache=False)
    assert everything.num_rows == 36
    all_files = len(lake.opened)
    lake.opened.clear()
    day2 = datetime(2026, 3, 3, tzinfo=UTC)
    some = mk.replay_capture(
        lake,
        registry=workspace.registry,
        start=day2,
        end="2026-03-03T23:59:59Z",
        partitions=["1"],
        cache=False,
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


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # A partition no event hub has would otherwise replay nothing, silently; a lone string
        # would be read as one partition per character ("12": 1 and 2).
        ({"partitions": ["x"]}, "names partition 'x'; Event Hubs partition ids are"),
        ({"partitions": [-1]}, "names partition -1"),
        ({"partitions": [True]}, "names partition True"),
        ({"partitions": "12"}, "a list of partition ids such as ['0', '1'], not '12'"),
        ({"partitions": 3}, "a list of partition ids"),
        # A registry of the wrong kind would otherwise fail deep inside with AttributeError.
        ({"registry": "https://ns.servicebus.windows.net"}, "registry= takes a schema registry"),
        # A string is true to Python: dedup="no" would deduplicate, the opposite of what it says.
        ({"dedup": "no"}, "dedup= takes True or False, not 'no'"),
        ({"progress": "yes"}, "progress= takes True or False (None shows a bar"),
        ({"on_file": "print"}, "on_file= takes a function of a ReplayProgress, not str"),
        ({"storage_options": "key=1"}, "storage_options= takes a dict of the options adlfs"),
    ],
)
def test_bad_ranges_registries_and_options_are_user_errors(
    workspace: mk.Workspace, options: dict, message: str
) -> None:
    workspace.emit(mk.example_mce())
    with pytest.raises(mk.ConfigurationError, match=re.escape(message)):
        mk.replay_capture(workspace.lake, **{"registry": workspace.registry, **options})


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("", "The Capture location is empty"),
        ("  ", "The Capture location is empty"),
        (b"lake", "got bytes"),
        ({"path": "lake"}, "got dict"),
        (42, "got int"),
        (None, "got NoneType"),
    ],
    ids=["empty", "blank", "bytes", "dict", "int", "none"],
)
def test_a_location_that_names_no_lake_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, location: object, message: str
) -> None:
    """Not read as the working folder (``Path("")``) or as a list of its characters."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(mk.ConfigurationError, match=re.escape(message)):
        mk.replay_capture(location)


def test_a_file_uri_is_the_local_path_it_names(workspace: mk.Workspace) -> None:
    # Spark's spelling of a local path: spark_replay took it, the local replay said "No Capture
    # file or folder at file:///...".
    workspace.emit(mk.example_mce())
    lake = str(workspace.lake.root)  # type: ignore[attr-defined]
    expected = mk.replay_capture(lake, registry=workspace.registry, cache=False)
    for uri in (f"file://{lake}", f"file:{lake}", f"file://localhost{lake}/"):
        got = mk.replay_capture(uri, registry=workspace.registry, cache=False)
        assert got.equals(expected), uri
    files = [f"file://{f.path}" for f in workspace.lake.list_files()]
    assert mk.replay_capture(files, registry=workspace.registry, cache=False).equals(expected)
    with pytest.raises(mk.ConfigurationError, match="not a path on this machine"):
        mk.replay_capture(f"file://otherhost{lake}")


def test_partition_ids_may_be_numbers_or_text(workspace: mk.Workspace, clock: SimClock) -> None:
    for i in range(8):
        workspace.emit(mk.mce(mk.make_dataset_urn("hive", f"t{i}"), [mk.aspects.status(False)]))
        clock.advance(minutes=1)
    every = workspace.replay(cache=False)
    some = sorted(set(every["partition"].to_pylist()))[:2]
    assert len(some) == 2
    as_numbers = workspace.replay(cache=False, partitions=[int(p) for p in some])
    assert as_numbers.equals(workspace.replay(cache=False, partitions=some))
    assert sorted(set(as_numbers["partition"].to_pylist())) == some


def test_a_workspace_replay_names_partitions_its_hub_does_not_have(
    workspace: mk.Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace.emit(mk.example_mce())
    [here] = set(workspace.replay(cache=False)["partition"].to_pylist())
    # The hub's word alone: the lake's warning that it has no file of partition 7 said the
    # same thing, first. (The suite turns warnings into errors: none is given.)
    with pytest.raises(mk.ConfigurationError, match="The event hub has no partition 7; it has 0"):
        workspace.replay(cache=False, partitions=[here, 7])
    # A partition of the hub with nothing captured in the range is an empty answer, not an error.
    assert workspace.replay(cache=False, partitions=[here], start="2099-01-01").num_rows == 0

    def unreachable() -> list[str]:
        raise mk.ConfigurationError("no Data Sender role")

    # A hub that cannot say (offline, or on Azure a role the lake does not need) is not asked;
    # the lake's files say that none is of partition 7.
    monkeypatch.setattr(workspace.hub, "partition_ids", unreachable)
    with pytest.warns(mk.MissingPartitionWarning, match=rf"'7'.*lake's partitions: {here}\)"):
        assert workspace.replay(cache=False, partitions=[7]).num_rows == 0


def test_a_bare_lake_warns_of_partitions_it_has_no_file_of(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    """Without a hub to ask, a partition id no file has is said (a typo would otherwise
    replay nothing without a word); one whose files lie outside the range is not."""
    for i in range(8):
        workspace.emit(mk.mce(mk.make_dataset_urn("hive", f"t{i}"), [mk.aspects.status(False)]))
    lake = Path(str(workspace.lake.root))
    parts = sorted({p.relative_to(lake).parts[2] for p in lake.rglob("*.avro")}, key=int)
    assert len(parts) > 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            mk.replay_capture(lake, cache=False, partitions=parts[:1], start="2099-01-01").num_rows
            == 0
        )
    with pytest.warns(mk.MissingPartitionWarning) as caught:
        table = mk.replay_capture(lake, cache=False, partitions=[parts[0], 9, 12])
    assert set(table["partition"].to_pylist()) == {parts[0]}
    [warning] = caught
    assert str(warning.message) == (
        "No Capture file of partitions '9', '12' is in the lake: the replay holds none of "
        f"their events (the lake's partitions: {', '.join(parts)})"
    )
    assert warning.filename == __file__  # the user's line, not one of the package's


# -- the native decoder and the fastavro fallback give the same tables ---------------------


def _same(a: pa.Table, b: pa.Table) -> None:
    assert a.schema == b.schema
    for name in a.column_names:
        assert a[name].equals(b[name]), name
    assert a.equals(b, check_metadata=True)


def test_a_list_of_files_is_each_file_once(
    workspace: mk.Workspace, clock: SimClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        workspace.emit(mk.mce(mk.make_dataset_urn("hive", f"t{i}"), [mk.aspects.status(False)]))
        clock.advance(hours=2)  # a new Capture window, a new file
    lake = Path(str(workspace.lake.root))
    files = sorted(lake.rglob("*.avro"))
    assert len(files) == 3
    monkeypatch.chdir(lake)
    relative = [os.path.relpath(f) for f in files]
    once = mk.replay_capture(files, cache=False, dedup=False)
    # The same file twice, as written and as its absolute path (a mix commonpath refuses).
    twice = mk.replay_capture([relative[0], *files], cache=False, dedup=False)
    assert twice.num_rows == once.num_rows == 3
    assert mk.duplicates_dropped(mk.replay_capture([files[0], files[0]], cache=False)) == 0
    with pytest.raises(mk.ConfigurationError, match="is a folder; a list of locations takes"):
        mk.replay_capture([lake, files[0]], cache=False)
    with pytest.raises(mk.ConfigurationError, match="takes Capture file paths; got int 7"):
        mk.replay_capture([files[0], 7], cache=False)


def test_native_and_fastavro_decoders_agree_on_the_demo_history(workspace: mk.Workspace) -> None:
    from metaverse_kit.demo import emit_sample_history

    emit_sample_history(workspace)
    # Application properties of several Avro types go through the union-to-text conversion.
    workspace.emit(
        mk.example_mce(),
        properties={"origin": "test", "retries": 2, "ratio": 0.5},
    )
    native = mk.replay_capture(
        workspace.lake, registry=workspace.registry, cache=False, decoder="fast", progress=False
    )
    slow = mk.replay_capture(
        workspace.lake, registry=workspace.registry, cache=False, decoder="fastavro", progress=False
    )
    assert native.num_rows > 30
    assert native["decode_error"].null_count == native.num_rows
    last = native.filter(pa.compute.equal(native["sequence_number"], native["sequence_number"]))
    props = [dict(p) for p in last["properties"].to_pylist() if dict(p).get("origin")]
    assert props == [
        {
            "metaverse-emitted-time": props[0]["metaverse-emitted-time"],  # a long, as text
            "origin": "test",
            "retries": "2",
            "ratio": "0.5",
            "content-type": props[0]["content-type"],
            "message-id": props[0]["message-id"],
        }
    ]
    assert props[0]["metaverse-emitted-time"].isdigit()
    _same(native, slow)


def test_native_and_fastavro_decoders_agree_on_real_capture_files(real_capture: Path) -> None:
    _same(
        mk.replay_capture(real_capture, cache=False, decoder="fast"),
        mk.replay_capture(real_capture, cache=False, decoder="fastavro"),
    )
    _same(
        mk.replay_capture(real_capture, cache=False, decoder="fast", schema=False),
        mk.replay_capture(real_capture, cache=False, decoder="fastavro", schema=False),
    )


def test_a_corrupt_body_is_isolated_by_the_fallback(workspace: mk.Workspace) -> None:
    good = workspace.emit([mk.example_mce(), mk.example_mce()])
    lake_file = Path(good[0].location or "")
    # A third event in the same file whose body is cut short: the native reader cannot read
    # the spliced block, so this file's bodies are decoded one by one and only it fails.
    table = mk.replay_capture(workspace.lake, schema=False, cache=False)
    body = table["body"][0].as_py()
    records = [
        {
            "SequenceNumber": 99,
            "Offset": "0",
            "EnqueuedTimeUtc": "3/2/2026 8:00:00 AM",
            "SystemProperties": {
                "content-type": good[0].content_type,
                "message-id": "cut",
                "x-opt-partition-key": good[0].partition_key,
            },
            "Properties": {"raw": b"\xff\x00", "ok": b"y", "none": None, "n": -1},
            "Body": body[:-3],
        }
    ]
    lake_file.write_bytes(append_events(lake_file.read_bytes(), records))
    tables = []
    for decoder in ("fast", "fastavro"):
        rows = mk.replay_capture(
            workspace.lake, registry=workspace.registry, cache=False, decoder=decoder
        )
        errors = dict(
            zip(rows["message_id"].to_pylist(), rows["decode_error"].to_pylist(), strict=True)
        )
        assert errors["cut"].startswith("body does not decode with schema")
        assert [errors[r.message_id] for r in good] == [None, None]
        cut = rows.filter(pa.compute.equal(rows["message_id"], "cut"))
        assert dict(cut["properties"][0].as_py()) == {
            "raw": "0xff00",
            "ok": "y",
            "none": None,
            "n": "-1",
        }
        tables.append(rows)
    _same(*tables)


def test_unknown_decoder_is_a_user_error(workspace: mk.Workspace) -> None:
    with pytest.raises(mk.ConfigurationError, match="decoder="):
        mk.replay_capture(workspace.lake, decoder="turbo")


def test_the_native_path_reads_our_files_without_falling_back(workspace: mk.Workspace) -> None:
    from metaverse_kit.demo import emit_sample_history
    from metaverse_kit.events.builtin import mce_definition
    from metaverse_kit.history import _decoder
    from metaverse_kit.history.replay import PayloadSchema

    emit_sample_history(workspace)
    target = PayloadSchema(mce_definition()).mapping().type
    decoded = 0
    for f in workspace.lake.list_files():
        envelope = _decoder.read_envelope(workspace.lake.read_bytes(f))  # raises if it cannot
        values = _decoder.decode_bodies(envelope["body"], mce_definition(), target)
        assert len(values) == len(envelope["body"]) and values.null_count == 0
        decoded += len(values)
    assert decoded == workspace.replay().num_rows


def test_large_groups_are_read_in_chunks(
    workspace: mk.Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metaverse_kit.history import _decoder

    workspace.emit(
        [mk.example_mce(), mk.mce(mk.make_dataset_urn("hive", "t"), [mk.aspects.status(True)])]
    )
    monkeypatch.setattr(_decoder, "_BATCH_ROWS", 3)
    raw = mk.replay_capture(workspace.lake, schema=False, cache=False)
    records = [
        {
            "SequenceNumber": i,
            "Offset": str(i),
            "EnqueuedTimeUtc": "3/2/2026 8:00:00 AM",
            "SystemProperties": {"content-type": raw["content_type"][i % 2].as_py()},
            "Properties": {},
            "Body": raw["body"][i % 2].as_py(),
        }
        for i in range(10)
    ]
    path = Path(workspace.path or ".") / "big" / "ns" / "hub" / "0" / "2026" / "03" / "02"
    path = path / "08" / "00" / "00.avro"
    path.parent.mkdir(parents=True)
    path.write_bytes(append_events(None, records))
    fast = mk.replay_capture(path, registry=workspace.registry, cache=False, decoder="fast")
    slow = mk.replay_capture(path, registry=workspace.registry, cache=False, decoder="fastavro")
    assert fast.num_rows == 10 and fast["decode_error"].null_count == 10
    _same(fast, slow)


def test_big_capture_files_are_read_in_parts_of_whole_blocks(
    workspace: mk.Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metaverse_kit.history import _decoder

    urn = mk.make_dataset_urn("hive", "db.one")
    for i in range(4):  # one block per send, all in one file (same key, same window)
        workspace.emit([mk.mce(urn, [mk.aspects.global_tags([f"T{i}", f"U{i}"])])] * 2)
    (f,) = workspace.lake.list_files()
    data = workspace.lake.read_bytes(f)
    monkeypatch.setattr(_decoder, "_BATCH_ROWS", 3)
    assert len(_decoder._containers_of_at_most(data, 3)[0]) == 4
    assert len(_decoder.read_envelope(data)["body"]) == 8
    with pytest.raises(_decoder.Unsupported, match="block of 2 records"):
        _decoder._containers_of_at_most(data, 1)
    fast = mk.replay_capture(workspace.lake, registry=workspace.registry, cache=False)
    slow = mk.replay_capture(
        workspace.lake, registry=workspace.registry, cache=False, decoder="fastavro"
    )
    assert fast["sequence_number"].to_pylist() == list(range(8))
    _same(fast, slow)


def test_a_reader_schema_is_checked_as_the_registry_checks_one(workspace: mk.Workspace) -> None:
    """A union default not of its first branch would fill older events' field with what Avro
    before 1.12 refuses to read; the registry refuses such a schema, so does a replay."""
    bad = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "u", "type": ["null", "int"], "default": 3}],
    }
    with pytest.raises(mk.SchemaParseError, match="first branch"):
        workspace.replay(schema=bad, progress=False)
