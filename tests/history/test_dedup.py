"""Replay drops the duplicates at-least-once delivery makes, keeping the first copy."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

import metaverse_kit as mk
from metaverse_kit.backends.protocols import OutgoingEvent, Receipt
from metaverse_kit.capture import append_events
from metaverse_kit.history.replay import DUPLICATES_DROPPED_KEY, duplicates_dropped
from tests.conftest import SimClock


def _resend(ws: mk.Workspace, receipt: Receipt, body: bytes) -> Receipt:
    """What a producer does after a lost acknowledgement: send the same event again."""
    again = OutgoingEvent(
        body=body,
        content_type=receipt.content_type,
        partition_key=receipt.partition_key,
        message_id=receipt.message_id,
    )
    return ws.hub.send([again], schema_ids=[receipt.schema_id])[0]


def _body_of(ws: mk.Workspace, receipt: Receipt) -> bytes:
    raw = mk.replay_capture(ws.lake, schema=False, cache=False)
    row = raw.filter(pa.compute.equal(raw["message_id"], receipt.message_id))
    return row["body"][0].as_py()


def test_a_retried_send_is_replayed_once(workspace: mk.Workspace) -> None:
    first = workspace.emit(mk.example_mce())[0]
    body = _body_of(workspace, first)
    second = _resend(workspace, first, body)
    assert second.message_id == first.message_id
    assert second.sequence_number == first.sequence_number + 1  # the hub stored it twice
    table = workspace.replay()
    assert table.num_rows == 1
    assert table["sequence_number"].to_pylist() == [first.sequence_number]
    assert duplicates_dropped(table) == 1
    assert table.schema.metadata[DUPLICATES_DROPPED_KEY] == b"1"
    everything = mk.replay_capture(workspace.lake, registry=workspace.registry, dedup=False)
    assert everything.num_rows == 2 and duplicates_dropped(everything) == 0
    assert everything["message_id"].to_pylist() == [first.message_id] * 2


def test_the_first_copy_is_kept_across_files_and_streams_count(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    first = workspace.emit(mk.example_mce())[0]
    others = workspace.emit(
        [mk.mce(mk.make_dataset_urn("hive", f"t{i}"), [mk.aspects.status(False)]) for i in range(5)]
    )
    clock.advance(minutes=20)  # the retry lands in a later Capture window, another file
    second = _resend(workspace, first, _body_of(workspace, first))
    assert second.location != first.location
    stream = mk.replay_batches(workspace.lake, registry=workspace.registry)
    batches = list(stream)
    assert stream.duplicates_dropped == 1
    rows = pa.Table.from_batches([b.replace_schema_metadata(None) for b in batches])
    assert rows.num_rows == 6
    kept = rows.filter(pa.compute.equal(rows["message_id"], first.message_id))
    assert kept["capture_file"].to_pylist() == [first.location]
    assert set(rows["message_id"].to_pylist()) == {first.message_id} | {
        r.message_id for r in others
    }
    assert sum(duplicates_dropped(b) for b in batches) == 1


def test_events_without_message_id_are_never_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "ns" / "hub" / "0" / "2026" / "01" / "01" / "00" / "00"
    folder.mkdir(parents=True)
    same = {
        "Offset": "0",
        "EnqueuedTimeUtc": "1/1/2026 12:00:00 AM",
        "SystemProperties": {},
        "Properties": {},
        "Body": b"{}",
    }
    with_id = {**same, "SystemProperties": {"message-id": "m-1"}}
    (folder / "00.avro").write_bytes(
        append_events(
            None,
            [
                {**same, "SequenceNumber": 0},
                {**same, "SequenceNumber": 1},
                {**with_id, "SequenceNumber": 2},
                {**with_id, "SequenceNumber": 3},
            ],
        )
    )
    table = mk.replay_capture(tmp_path)
    assert table["sequence_number"].to_pylist() == [0, 1, 2]
    assert duplicates_dropped(table) == 1
    assert mk.replay_capture(tmp_path, dedup=False).num_rows == 4


def test_the_table_and_the_stream_drop_the_same_rows(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    """replay_capture deduplicates the whole table at once, the stream batch by batch."""
    receipts = workspace.emit(
        [mk.mce(mk.make_dataset_urn("hive", f"t{i}"), [mk.aspects.status(False)]) for i in range(6)]
    )
    bodies = {r.message_id: _body_of(workspace, r) for r in receipts}
    _resend(workspace, receipts[2], bodies[receipts[2].message_id])  # same file
    clock.advance(minutes=20)
    for r in (receipts[0], receipts[2], receipts[5]):  # later files, one id a third time
        _resend(workspace, r, bodies[r.message_id])
    table = mk.replay_capture(workspace.lake, registry=workspace.registry, cache=False)
    stream = mk.replay_batches(workspace.lake, registry=workspace.registry, cache=False)
    streamed = pa.Table.from_batches([b.replace_schema_metadata(None) for b in stream])
    assert duplicates_dropped(table) == stream.duplicates_dropped == 4
    assert table.replace_schema_metadata(None).equals(streamed)
    assert sorted(table["message_id"].to_pylist()) == sorted(r.message_id for r in receipts)
