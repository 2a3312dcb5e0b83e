"""The live tail on the local hub: other processes' emits, start positions, checkpoints, close."""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import metaverse_kit as mk
from metaverse_kit.backends.local.consumer import LocalEventConsumer
from metaverse_kit.history.replay import PayloadSchema
from tests.conftest import SimClock, read_until

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "metaverse_kit.cli"]
# Generous: a child process has to start Python and import the toolkit first.
ARRIVAL_TIMEOUT = 60.0


# Read until the events came, within ARRIVAL_TIMEOUT by default.
_read_until = functools.partial(read_until, timeout=ARRIVAL_TIMEOUT)


def _ordered(table: pa.Table) -> pa.Table:
    order = pc.sort_indices(
        table, sort_keys=[("partition", "ascending"), ("sequence_number", "ascending")]
    )
    return table.take(order).replace_schema_metadata(None)


def _emit_history(ws: mk.Workspace, clock: SimClock) -> None:
    urns = [mk.make_dataset_urn("hive", f"db.t{i}") for i in range(5)]
    for step in range(4):
        ws.emit([mk.mce(u, [mk.aspects.status(step % 2 == 0)]) for u in urns])
        clock.advance(minutes=7)


def test_emits_from_another_process_arrive(tmp_path: Path) -> None:
    with mk.connect(path=tmp_path / "ws") as ws, ws.tail() as tail:
        assert tail.read(0.2) == []  # "latest": nothing old, nothing new yet
        child = subprocess.run(
            [*CLI, "--workspace", str(ws.path), "emit", "--example"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert child.returncode == 0, child.stderr
        got = _read_until(tail, 1)
    assert got.num_rows == 1
    row = got.to_pylist()[0]
    assert row["partition_key"] == "urn:li:corpuser:datahub"
    assert f"sequence number {row['sequence_number']}" in child.stdout
    assert row["decode_error"] is None and row["capture_file"].endswith(".avro")
    # The same columns as a replay, with the payload decoded.
    assert got.schema.remove_metadata() == PayloadSchema(mk.mce_definition()).arrow_schema()
    assert row["proposedSnapshot"]["CorpUserSnapshot"]["urn"] == "urn:li:corpuser:datahub"


def test_a_waiting_tail_is_woken_by_the_hub_not_by_polling(tmp_path: Path) -> None:
    with mk.connect(path=tmp_path / "ws") as ws:
        consumer = LocalEventConsumer(
            ws.path / "lake",
            ws.path / "hub",
            namespace="metaverse-local",
            eventhub="metaverse",
            positions=dict.fromkeys(ws.hub.partition_ids(), "latest"),
            safety_interval=3600,
        )
        with consumer:
            if sys.platform.startswith("linux"):
                assert consumer.uses_inotify
            # The receive waits up to an hour; only the hub's commit can end it early.
            emitter = threading.Timer(0.3, lambda: ws.emit(mk.example_mce()))
            emitter.start()
            chunks = consumer.receive(timeout=3600 if consumer.uses_inotify else 5)
            emitter.join()
    assert len(chunks) == 1 and chunks[0].path.endswith(".avro")


def test_start_positions(workspace: mk.Workspace, clock: SimClock) -> None:
    _emit_history(workspace, clock)
    replayed = _ordered(workspace.replay(progress=False))
    total = replayed.num_rows
    assert total == 20

    with workspace.tail(start="earliest") as tail:
        everything = _ordered(_read_until(tail, total))
    assert everything.equals(replayed)

    since = replayed["enqueued_time"][10].as_py()
    with workspace.tail(start=since) as tail:
        later = _ordered(_read_until(tail, 1))
        later = pa.concat_tables([later, *[pa.Table.from_batches([b]) for b in tail.read(0.3)]])
    expected = replayed.filter(pc.greater_equal(replayed["enqueued_time"], since))
    assert _ordered(later).equals(expected)

    partition = replayed["partition"][0].as_py()
    in_partition = replayed.filter(pc.equal(replayed["partition"], partition))
    with workspace.tail(start={partition: 2}) as tail:
        got = _ordered(_read_until(tail, in_partition.num_rows - 2))
        assert tail.read(0.3) == []  # the other partitions start at "latest"
    assert got["sequence_number"].to_pylist() == list(range(2, in_partition.num_rows))

    with workspace.tail(start="latest", partitions=[partition]) as tail:
        assert tail.read(0.2) == []
        urn = in_partition["partition_key"][0].as_py()
        receipts = workspace.emit(mk.mce(urn, [mk.aspects.status(True)]))
        (new,) = _read_until(tail, 1).to_pylist()
    assert (new["partition"], new["sequence_number"]) == (
        receipts[0].partition,
        receipts[0].sequence_number,
    )


def test_close_from_another_thread_leaves_nothing_running(tmp_path: Path) -> None:
    def fds() -> set[tuple[str, str]]:
        """The process's open files: (descriptor, what it points at)."""
        out = set()
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the listing's own descriptor, gone
                out.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
        return out

    with mk.connect(path=tmp_path / "ws") as ws:
        gc.collect()
        threads_before, fds_before = set(threading.enumerate()), fds()
        tail = ws.tail()
        seen: list[int] = []
        reader = threading.Thread(target=lambda: seen.extend(b.num_rows for b in tail))
        reader.start()
        ws.emit(mk.example_mce())
        deadline = time.monotonic() + ARRIVAL_TIMEOUT
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        tail.close()  # wakes the reader waiting for the next events
        reader.join(timeout=30)
        assert not reader.is_alive()
        assert seen == [1]
        assert set(threading.enumerate()) == threads_before
        if os.path.isdir("/proc/self/fd"):
            # NOTE: nothing opened and left open; a file of an earlier test's server closing
            # meanwhile is not the tail's (the full suite saw one fd fewer after, twice).
            assert fds() - fds_before == set()
        tail.close()  # twice is harmless
        assert list(tail) == []


def test_a_named_checkpoint_resumes_after_what_was_handed_out(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    _emit_history(workspace, clock)
    with workspace.tail(start="earliest", checkpoint="nightly") as tail:
        first = _read_until(tail, 20)
    assert first.num_rows == 20
    workspace.emit([mk.mce(mk.make_dataset_urn("hive", "db.new"), [mk.aspects.status(False)])])
    with workspace.tail(start="earliest", checkpoint="nightly") as tail:
        resumed = _read_until(tail, 1)
        assert tail.read(0.3) == []
    assert resumed["partition_key"].to_pylist() == [
        "urn:li:dataset:(urn:li:dataPlatform:hive,db.new,PROD)"
    ]
    assert (workspace.path / "checkpoints" / "$Default" / "nightly.json").exists()
    # Another consumer group keeps its own progress; a failure inside the block keeps the
    # batch being handled unmarked, so it comes again.
    with (
        pytest.raises(RuntimeError),
        workspace.tail(start="earliest", checkpoint="nightly", consumer_group="audit") as tail,
    ):
        assert _read_until(tail, 21).num_rows == 21
        raise RuntimeError("the handler failed")
    with workspace.tail(start="earliest", checkpoint="nightly", consumer_group="audit") as tail:
        assert _read_until(tail, 21).num_rows == 21


def test_a_block_being_written_is_left_for_later(workspace: mk.Workspace) -> None:
    with workspace.tail() as tail:
        (receipt,) = workspace.emit(mk.example_mce())
        assert _read_until(tail, 1).num_rows == 1
        path = Path(receipt.location or "")
        intact = path.read_bytes()
        path.write_bytes(intact + b"\x02\xfe\x01 half a block")  # as a writer mid-append leaves it
        assert tail.read(0.3) == []
        path.write_bytes(intact)
        workspace.emit(mk.example_mce())
        assert _read_until(tail, 1).num_rows == 1


def test_a_damaged_block_is_left_out_and_named_and_the_other_files_events_arrive(
    workspace: mk.Workspace,
) -> None:
    """One damaged block made a read raise, and the events of every other file read with it
    were lost: the consumer had moved past them, so the next read returned nothing."""
    from metaverse_kit.capture import read_header

    with workspace.tail() as tail:
        receipts = workspace.emit(
            [
                mk.mce(mk.make_dataset_urn("hive", f"db.t{i}"), [mk.aspects.status(False)])
                for i in range(6)
            ]
        )
        damaged = Path(receipts[0].location or "")
        others = [r for r in receipts if r.location != receipts[0].location]
        assert others
        data = bytearray(damaged.read_bytes())
        _, _, first = read_header(bytes(data), where=str(damaged))
        data[first + 8 : first + 14] = b"\xff" * 6  # inside a record: the framing stays whole
        damaged.write_bytes(bytes(data))
        with pytest.warns(mk.CaptureFileWarning, match=re.escape(str(damaged))):
            got = _read_until(tail, len(others))
        assert tail.read(0.3) == []
        assert [s.path for s in tail.skipped_files] == [str(damaged)]
        assert "do not decode" in tail.skipped_files[0].reason
    assert sorted(got["message_id"].to_pylist()) == sorted(r.message_id for r in others)


def test_a_block_whose_framing_is_damaged_is_named_and_the_blocks_after_it_arrive(
    workspace: mk.Workspace,
) -> None:
    """A damaged block with complete blocks after it was taken for a block being written: the
    tail waited before it for ever, naming nothing, and never handed out what followed."""
    urn = mk.make_dataset_urn("hive", "db.orders")
    with workspace.tail() as tail:
        (first,) = workspace.emit(mk.mce(urn, [mk.aspects.status(False)]))
        assert _read_until(tail, 1).num_rows == 1
        path = Path(first.location or "")
        (second,) = workspace.emit(mk.mce(urn, [mk.aspects.status(True)]))
        end_of_second = path.stat().st_size
        (third,) = workspace.emit(mk.mce(urn, [mk.aspects.status(False)]))
        assert first.location == second.location == third.location
        data = bytearray(path.read_bytes())
        data[end_of_second - 16 : end_of_second] = bytes(16)  # the second block's sync marker
        path.write_bytes(bytes(data))
        with pytest.warns(mk.CaptureFileWarning, match=re.escape(str(path))):
            got = _read_until(tail, 1)
        assert tail.read(0.3) == []
        assert [s.path for s in tail.skipped_files] == [str(path)]
        (fourth,) = workspace.emit(mk.mce(urn, [mk.aspects.status(True)]))
        got = pa.concat_tables([got, _read_until(tail, 1)])
    assert got["message_id"].to_pylist() == [third.message_id, fourth.message_id]


def _damage_header(path: Path) -> bytes:
    """Overwrite the first bytes of the Capture file at ``path``; returns its bytes before."""
    intact = path.read_bytes()
    path.write_bytes(b"XXXX" + intact[4:])
    return intact


def test_a_file_with_a_damaged_header_is_named_the_others_arrive_and_it_is_read_once_restored(
    workspace: mk.Workspace,
) -> None:
    """A file whose Avro header was damaged made every read raise, for ever, and the events of
    the files read with it were lost."""
    with workspace.tail() as tail:
        receipts = workspace.emit(
            [
                mk.mce(mk.make_dataset_urn("hive", f"db.t{i}"), [mk.aspects.status(False)])
                for i in range(8)
            ]
        )
        damaged = Path(receipts[-1].location or "")
        mine = [r for r in receipts if r.location == str(damaged)]
        others = [r for r in receipts if r.location != str(damaged)]
        assert others
        intact = _damage_header(damaged)
        with pytest.warns(mk.CaptureFileWarning, match=re.escape(str(damaged))) as caught:
            got = _read_until(tail, len(others))
        assert "cannot be read (not an Avro container" in str(caught[0].message)
        assert tail.read(0.3) == []  # no error, and the file is not named again
        assert [(s.path, s.offset) for s in tail.skipped_files] == [(str(damaged), None)]
        assert "not an Avro container" in tail.skipped_files[0].reason
        assert sorted(got["message_id"].to_pylist()) == sorted(r.message_id for r in others)

        damaged.write_bytes(intact)  # restored from a copy: the same size as the damaged file
        restored = _read_until(tail, len(mine))
    assert sorted(restored["message_id"].to_pylist()) == sorted(r.message_id for r in mine)


def test_latest_opens_past_a_damaged_file_and_never_hands_out_what_it_held(
    workspace: mk.Workspace,
) -> None:
    urn = mk.make_dataset_urn("hive", "db.orders")
    (old,) = workspace.emit(mk.mce(urn, [mk.aspects.status(False)]))
    damaged = Path(old.location or "")
    intact = _damage_header(damaged)
    with workspace.tail(start="latest") as tail:  # raised CaptureFileError
        assert tail.read(0.2) == []
        damaged.write_bytes(intact)
        assert tail.read(0.3) == []  # what the file held was written before the start
        (new,) = workspace.emit(mk.mce(urn, [mk.aspects.status(True)]))
        got = _read_until(tail, 1)
    assert got["message_id"].to_pylist() == [new.message_id]
    assert tail.skipped_files == []


def test_a_checkpoint_keeps_a_damaged_file_of_an_older_window_to_read_once_restored(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    urn = mk.make_dataset_urn("hive", "db.orders")
    (old,) = workspace.emit(mk.mce(urn, [mk.aspects.status(False)]))
    clock.advance(minutes=30)
    (later,) = workspace.emit(mk.mce(urn, [mk.aspects.status(True)]))
    damaged = Path(old.location or "")
    assert later.location != str(damaged)  # a newer window's file of the same partition
    intact = _damage_header(damaged)
    with (
        pytest.warns(mk.CaptureFileWarning, match=re.escape(str(damaged))),
        workspace.tail(start="earliest", checkpoint="nightly") as tail,
    ):
        assert _read_until(tail, 1)["message_id"].to_pylist() == [later.message_id]
    damaged.write_bytes(intact)
    with workspace.tail(start="earliest", checkpoint="nightly") as tail:
        got = _read_until(tail, 1)
        assert tail.read(0.3) == []
    assert got["message_id"].to_pylist() == [old.message_id]


def test_a_damaged_block_is_named_at_its_offset_in_the_file(workspace: mk.Workspace) -> None:
    """The offset of a damaged block counted from the start of what the tail read of the file
    (its header, then the new blocks), not from the start of the file."""
    urn = mk.make_dataset_urn("hive", "db.orders")
    with workspace.tail() as tail:
        (first,) = workspace.emit(mk.mce(urn, [mk.aspects.status(False)]))
        assert _read_until(tail, 1).num_rows == 1
        path = Path(first.location or "")
        second_block = path.stat().st_size
        (second,) = workspace.emit(mk.mce(urn, [mk.aspects.status(True)]))
        assert second.location == first.location
        data = bytearray(path.read_bytes())
        data[second_block + 8 : second_block + 14] = b"\xff" * 6  # records that do not decode
        path.write_bytes(bytes(data))
        with pytest.warns(mk.CaptureFileWarning, match=re.escape(str(path))):
            assert tail.read(1.0) == []
    assert [(s.path, s.offset) for s in tail.skipped_files] == [(str(path), second_block)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"start": "yesterday"}, "'earliest', 'latest', a time"),
        ({"start": 5}, "A sequence number starts one partition"),
        ({"start": {"0": -1}}, "0 or more"),
        ({"start": {"9": 0}}, "no partition 9"),
        ({"partitions": ["0", "7"]}, "no partition 7"),
        ({"partitions": []}, "names no partition"),
        ({"partitions": "01"}, "a list of partition ids"),
        ({"partitions": ["x"]}, "names partition 'x'"),
        ({"dedup": "off"}, "dedup= takes True or False"),
        ({"checkpoint": "Not_A_Container"}, "must name a blob container"),
        ({"consumer_group": "a/b"}, "not a consumer group name"),
    ],
)
def test_bad_options_are_refused_before_anything_opens(
    workspace: mk.Workspace, options: dict, message: str
) -> None:
    with pytest.raises(mk.ConfigurationError, match=message):
        workspace.tail(**options)


def test_the_cli_prints_one_line_per_event_until_interrupted(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    _emit_history(workspace, clock)
    process = subprocess.Popen(
        [*CLI, "--workspace", str(workspace.path), "tail", "--since", "earliest"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(20)]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert "Traceback" not in err
    assert all("  partition " in line and "status" in line for line in lines), lines
    assert all(line.rstrip().endswith("(captured)") for line in lines)
    assert sum("urn:li:dataset:(urn:li:dataPlatform:hive,db.t0,PROD)" in x for x in lines) == 4
