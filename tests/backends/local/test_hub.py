"""The local hub: partitions, sequence numbers, Capture files as Azure writes them, crash safety."""

from __future__ import annotations

import io
import json
import multiprocessing
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import pytest

import metaverse_kit as mk
from metaverse_kit.backends.local.hub import LocalEventHub
from metaverse_kit.backends.protocols import OutgoingEvent
from metaverse_kit.capture import encode_blocks, read_header
from tests.conftest import SimClock


def _events(n: int, key: str = "k") -> list[OutgoingEvent]:
    return [
        OutgoingEvent(
            body=f"body-{i}".encode(),
            content_type="avro/binary+" + "a" * 32,
            partition_key=f"{key}{i % 5}",
            message_id=f"m-{key}-{i}",
        )
        for i in range(n)
    ]


def test_receipts_follow_event_hubs_rules(workspace: mk.Workspace, clock: SimClock) -> None:
    user = mk.make_user_urn("jdoe")
    first = workspace.emit(mk.example_mce())[0]
    receipts = workspace.emit([mk.mce(user, [mk.aspects.status(False)]) for _ in range(3)])
    assert [r.sequence_number for r in receipts if r.partition == receipts[0].partition][:3] == [
        receipts[0].sequence_number,
        receipts[0].sequence_number + 1,
        receipts[0].sequence_number + 2,
    ]
    # One urn, one partition: its events stay in order.
    assert {r.partition for r in receipts} == {workspace.hub.partition_for(user)}
    assert all(r.partition_key == user for r in receipts)
    assert first.content_type == f"avro/binary+{first.schema_id}"
    assert first.enqueued_time == clock.now
    assert str(first).startswith("MCE Published: partition ")
    assert Path(first.location).is_file()
    assert int(receipts[1].offset) > int(receipts[0].offset)
    assert len({r.message_id for r in [first, *receipts]}) == 4


def test_partition_of_a_key_is_stable(tmp_path: Path) -> None:
    hub = LocalEventHub(
        tmp_path / "lake", tmp_path / "hub", namespace="n", eventhub="e", partition_count=4
    )
    assert hub.partition_for("urn:li:corpuser:datahub") == hub.partition_for(
        "urn:li:corpuser:datahub"
    )
    spread = {hub.partition_for(f"urn:{i}") for i in range(100)}
    assert spread == {"0", "1", "2", "3"}


def test_capture_files_look_like_azures(
    workspace: mk.Workspace, clock: SimClock, real_capture: Path
) -> None:
    receipt = workspace.emit(mk.example_mce())[0]
    path = Path(receipt.location)
    relative = path.relative_to(workspace.path / "lake").as_posix()
    assert relative == f"metaverse-local/metaverse/{receipt.partition}/2026/03/02/08/00/00.avro"
    ours = path.read_bytes()
    azure = (real_capture / "mba_p9--2022-12-09--16-50-12.avro").read_bytes()
    our_meta, _, our_start = read_header(ours)
    azure_meta, _, azure_start = read_header(azure)
    assert our_meta == azure_meta
    assert ours[: our_start - 16] == azure[: azure_start - 16]  # all but the random sync marker
    (record,) = list(fastavro.reader(io.BytesIO(ours)))
    assert record["EnqueuedTimeUtc"] == "3/2/2026 8:00:00 AM"
    assert record["SystemProperties"]["x-opt-enqueued-time"] == int(clock.now.timestamp() * 1000)
    assert record["SystemProperties"]["x-opt-partition-key"] == receipt.partition_key
    assert record["SystemProperties"]["content-type"] == receipt.content_type
    assert record["Properties"]["content-type"] == receipt.content_type
    assert record["Properties"]["message-id"] == receipt.message_id
    assert mk.decode_body(record["Body"], mk.mce_definition()) == mk.example_mce()


def test_events_append_within_a_window_and_roll_to_the_next(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    urn = mk.make_user_urn("a")
    a = workspace.emit(mk.mce(urn, [mk.aspects.status(False)]))[0]
    clock.advance(minutes=2)
    b = workspace.emit(mk.mce(urn, [mk.aspects.status(True)]))[0]
    clock.advance(minutes=4)
    c = workspace.emit(mk.mce(urn, [mk.aspects.status(False)]))[0]
    assert a.location == b.location != c.location
    assert c.location.endswith("/2026/03/02/08/05/00.avro")
    records = list(fastavro.reader(io.BytesIO(Path(a.location).read_bytes())))
    assert [r["SequenceNumber"] for r in records] == [0, 1]


def test_enqueued_time_never_goes_back_in_a_partition(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    urn = mk.make_user_urn("a")
    first = workspace.emit(mk.mce(urn, [mk.aspects.status(False)]))[0]
    clock.now = datetime(2020, 1, 1, tzinfo=UTC)
    second = workspace.emit(mk.mce(urn, [mk.aspects.status(True)]))[0]
    assert second.enqueued_time == first.enqueued_time
    assert second.sequence_number == first.sequence_number + 1


def test_invalid_events_are_rejected_before_anything_is_written(workspace: mk.Workspace) -> None:
    good = mk.example_mce()
    bad = mk.mce(mk.make_user_urn("x"), [mk.aspects.status(False)])
    bad["proposedSnapshot"][1]["aspects"][0][1]["removed"] = "no"
    with pytest.raises(mk.ValidationError) as info:
        workspace.emit([good, bad, bad])
    paths = [p.path for p in info.value.problems]
    assert paths == [
        "events[1].proposedSnapshot.aspects[0].removed",
        "events[2].proposedSnapshot.aspects[0].removed",
    ]
    assert not list((workspace.path / "lake").rglob("*.avro"))


def test_an_event_larger_than_event_hubs_takes_is_refused_before_the_outbox(
    workspace: mk.Workspace,
) -> None:
    """Event Hubs refuses an event over 1 MiB (Standard, Premium); the local hub wrote a
    2.5 MB one, which passed offline and failed on Azure. An emit refuses it before anything
    is written (in the outbox it failed every retry)."""
    big = mk.mce(
        mk.make_dataset_urn("hive", "db.wide"),
        [mk.aspects.dataset_properties(description="x" * 1_100_000)],
    )
    small = mk.example_mce()
    with pytest.raises(mk.ValidationError) as info:
        workspace.emit([small, big, small])
    (problem,) = info.value.problems
    assert problem.path == "events[1]"
    assert "more than Event Hubs takes (1048576 bytes" in problem.message
    assert workspace.outbox.list() == []
    assert not list((workspace.path / "lake").rglob("*.avro"))


def test_the_hub_refuses_an_event_larger_than_event_hubs_takes_alone(tmp_path: Path) -> None:
    """The hub itself refuses it too, as the Azure hub does: the send's others land."""
    hub = _hub(tmp_path)
    events = [
        OutgoingEvent(b"x" * size, "avro/binary+1", "k", f"m{i}")
        for i, size in enumerate([10, 1_048_577, 10])
    ]
    with pytest.raises(mk.EmitError) as info:
        hub.send(events, schema_ids=["1"] * 3)
    assert [i for i, _ in info.value.failures] == [1]
    assert "is larger than Event Hubs takes (1048576 bytes)" in str(info.value.failures[0][1])
    assert [r.message_id for r in info.value.receipts] == ["m0", "m2"]


def _hub(tmp_path: Path, partitions: int = 4) -> LocalEventHub:
    return LocalEventHub(
        tmp_path / "lake",
        tmp_path / "hub",
        namespace="n",
        eventhub="e",
        partition_count=partitions,
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
    )


def _lake_records(tmp_path: Path) -> list[dict]:
    return [
        r
        for f in sorted((tmp_path / "lake").rglob("*.avro"))
        for r in fastavro.reader(io.BytesIO(f.read_bytes()))
    ]


def _killed_send(tmp_path: Path, hub: LocalEventHub, *, cut: int | None) -> Path:
    """Leave what a send killed after its journal and part of its append leaves behind.

    ``cut``: how many bytes of the appended blocks made it (None: all of them).
    """
    (receipt,) = hub.send(_events(1, key="x"), schema_ids=["s"])
    path = Path(receipt.location)
    state = json.loads(hub.state_path.read_text())
    part = state[receipt.partition]
    records = [
        {
            "SequenceNumber": part["next_sequence"] + i,
            "Offset": str(part["next_offset"]),
            "EnqueuedTimeUtc": "1/1/2026 12:00:00 AM",
            "SystemProperties": {"x-opt-enqueued-time": 1767225600000, "message-id": f"k{i}"},
            "Properties": {},
            "Body": b"killed",
        }
        for i in range(3)
    ]
    blocks, _ = encode_blocks(records, codec="null", sync=bytes.fromhex(part["sync"]))
    journal = {
        "format": 2,
        "pid": 1,
        "files": [
            {
                "partition": receipt.partition,
                "path": path.relative_to(tmp_path / "lake").as_posix(),
                "length": part["length"],
                "new": False,
            }
        ],
    }
    hub.journal_path.write_text(json.dumps(journal))
    with open(path, "ab") as f:
        f.write(blocks if cut is None else blocks[:cut])
    return path


def test_a_send_killed_mid_block_is_rolled_back_by_truncation(tmp_path: Path) -> None:
    hub = _hub(tmp_path, partitions=1)
    hub.send(_events(5), schema_ids=["s"] * 5)
    path = _killed_send(tmp_path, hub, cut=40)
    good = json.loads(hub.state_path.read_text())["0"]["length"]
    assert path.stat().st_size == good + 40
    # The next hub to send truncates the torn block first: nothing lost, nothing reused.
    _hub(tmp_path, partitions=1).send(_events(2, key="c"), schema_ids=["s"] * 2)
    records = _lake_records(tmp_path)
    assert [r["SequenceNumber"] for r in records] == list(range(8))
    assert hub.pending() is None


def test_complete_blocks_of_a_killed_send_roll_the_numbers_forward(tmp_path: Path) -> None:
    hub = _hub(tmp_path, partitions=1)
    hub.send(_events(5), schema_ids=["s"] * 5)
    _killed_send(tmp_path, hub, cut=None)
    assert hub.recover() == []  # nothing to truncate: the killed send's block was whole
    receipts = hub.send(_events(2, key="c"), schema_ids=["s"] * 2)
    assert [r.sequence_number for r in receipts] == [9, 10]
    records = _lake_records(tmp_path)
    assert [r["SequenceNumber"] for r in records] == list(range(11))


def test_appends_in_place_without_rewriting_the_file(tmp_path: Path) -> None:
    hub = _hub(tmp_path, partitions=1)
    (first,) = hub.send(_events(1), schema_ids=["s"])
    path = Path(first.location)
    inode, head = path.stat().st_ino, path.read_bytes()
    hub.send(_events(3, key="b"), schema_ids=["s"] * 3)
    assert path.stat().st_ino == inode  # the same file, grown: not a copy renamed over it
    assert path.read_bytes().startswith(head)
    assert len(_lake_records(tmp_path)) == 4


def _emit_worker(path: str, worker: int, count: int) -> list[tuple[str, int]]:
    with mk.connect(path=path) as ws:
        out = []
        for i in range(count):
            urn = mk.make_dataset_urn("hive", f"w{worker}.t{i % 7}")
            r = ws.emit(mk.mce(urn, [mk.aspects.status(False)]))[0]
            out.append((r.partition, r.sequence_number))
        return out


def test_two_processes_emitting_at_once_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "ws")
    mk.connect(path=path).close()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_emit_worker, [(path, 0, 40), (path, 1, 40)])
    receipts = [r for worker in results for r in worker]
    assert len(receipts) == len(set(receipts)) == 80
    table = mk.connect(path=path).replay(schema=False)
    assert table.num_rows == 80
    pairs = set(
        zip(table["partition"].to_pylist(), table["sequence_number"].to_pylist(), strict=True)
    )
    assert pairs == set(receipts)
    state = json.loads((tmp_path / "ws" / "hub" / "partitions.json").read_text())
    for partition, part in state.items():
        numbers = sorted(s for p, s in receipts if p == partition)
        assert numbers == list(range(part["next_sequence"]))


@pytest.mark.parametrize(
    ("option", "value"),
    [("partition_count", 0), ("partition_count", 2000), ("window_seconds", 30), ("codec", "gzip")],
)
def test_a_hub_made_directly_is_held_to_the_workspace_settings_ranges(
    tmp_path: Path, option: str, value: object
) -> None:
    with pytest.raises(mk.ConfigurationError, match=f"The option {option}={value!r} is refused"):
        LocalEventHub(
            tmp_path / "lake", tmp_path / "hub", namespace="n", eventhub="e", **{option: value}
        )
