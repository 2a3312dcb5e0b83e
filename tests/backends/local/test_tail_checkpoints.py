"""The local tail's checkpoints and positions meet what happens to a workspace between two
openings: a tail closed before it read, a damaged or newer checkpoint, a file written again."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.backends.local.consumer import CHECKPOINT_FORMAT
from metaverse_kit.capture import read_header
from tests.conftest import SimClock, read_until

URN = mk.make_dataset_urn("hive", "db.orders")
# Generous: the test machine may be busy.
ARRIVAL_TIMEOUT = 30.0


def _emit(ws: mk.Workspace, n: int) -> list[mk.Receipt]:
    return ws.emit([mk.mce(URN, [mk.aspects.status(i % 2 == 0)]) for i in range(n)])


def _checkpoint(ws: mk.Workspace, name: str) -> Path:
    assert ws.path is not None
    return ws.path / "checkpoints" / "$Default" / f"{name}.json"


def test_a_start_by_sequence_number_holds_for_a_tail_resumed_before_it_read(
    workspace: mk.Workspace,
) -> None:
    """The number was not in the checkpoint: a tail closed before its first read resumed from
    the partition's first event."""
    receipts = _emit(workspace, 5)
    partition = receipts[0].partition
    workspace.tail(start={partition: 3}, checkpoint="by-number").close()
    with workspace.tail(start={partition: 3}, checkpoint="by-number") as tail:
        got = read_until(tail, 2, settle=0.3)
    assert got["sequence_number"].to_pylist() == [3, 4]


def test_a_start_by_time_holds_for_a_tail_resumed_before_it_read(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    early = _emit(workspace, 2)
    start = clock.advance(seconds=20)
    late = _emit(workspace, 2)
    assert {r.location for r in early} == {r.location for r in late}  # one window, one file
    workspace.tail(start=start, checkpoint="by-time").close()
    with workspace.tail(start=start, checkpoint="by-time") as tail:
        got = read_until(tail, 2, settle=0.3)
    assert got["message_id"].to_pylist() == [r.message_id for r in late]


def _one_file_checkpoint(workspace: mk.Workspace, name: str) -> tuple[Path, dict[str, object]]:
    """A checkpoint ``name`` saved after one event was read, and its content."""
    with workspace.tail(checkpoint=name) as tail:
        _emit(workspace, 1)
        read_until(tail, 1, settle=0.3)
    path = _checkpoint(workspace, name)
    saved = json.loads(path.read_text())
    assert saved["format"] == CHECKPOINT_FORMAT
    return path, saved


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda s: "{not json", "is damaged (not JSON"),
        (lambda s: json.dumps([s]), "is damaged ([{"),
        (lambda s: json.dumps({**s, "partitions": {"0": {}}}), "is damaged (no 'window')"),
        (
            lambda s: json.dumps({**s, "partitions": {"0": {"window": None, "files": {"x": 1}}}}),
            "is damaged ('x' is no Capture file of partition 0)",
        ),
        (
            lambda s: json.dumps(
                {**s, "partitions": {"0": {"window": None, "files": {}, "unreadable": ["/etc"]}}}
            ),
            "is damaged ('/etc' is no Capture file of partition 0)",
        ),
        (
            lambda s: json.dumps(
                {**s, "partitions": {"0": {"window": "2026-03-02T08:00:00", "files": {}}}}
            ),
            "is damaged (window '2026-03-02T08:00:00' has no time zone)",
        ),
        (lambda s: json.dumps({**s, "eventhub": "other"}), "is damaged (it is of the event hub"),
        (
            lambda s: json.dumps({**s, "format": CHECKPOINT_FORMAT + 1}),
            f"is of format {CHECKPOINT_FORMAT + 1}, written by a newer metaverse-kit",
        ),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "no-window",
        "file-no-capture-path",
        "file-outside-the-lake",
        "naive-window",
        "other-event-hub",
        "newer-format",
    ],
)
def test_a_damaged_or_newer_checkpoint_is_refused_naming_it_and_leaks_nothing(
    workspace: mk.Workspace, damage: object, said: str
) -> None:
    """A file key that was no Capture path made every read raise a CaptureFileError naming
    no checkpoint; one outside the lake was read as a Capture file; a checkpoint of a newer
    format was read in part; each refused opening kept three file descriptors open."""
    path, saved = _one_file_checkpoint(workspace, "damaged")
    assert callable(damage)
    path.write_text(damage(saved))
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(mk.ConfigurationError) as info:
            workspace.tail(checkpoint="damaged")
        assert str(info.value).startswith(f"The checkpoint file {path} ")
        assert said in str(info.value)
    assert len(os.listdir("/proc/self/fd")) == fds


def test_a_checkpoint_of_an_earlier_version_is_read(workspace: mk.Workspace) -> None:
    path, saved = _one_file_checkpoint(workspace, "earlier")
    earlier = {
        "eventhub": saved["eventhub"],
        "partitions": {
            p: {k: v for k, v in c.items() if k in ("window", "files", "unreadable")}
            for p, c in saved["partitions"].items()  # type: ignore[attr-defined]
        },
    }
    path.write_text(json.dumps(earlier))
    with workspace.tail(checkpoint="earlier") as tail:
        assert tail.read(0.3) == []
        more = _emit(workspace, 2)
        got = read_until(tail, 2, settle=0.3)
    assert got["message_id"].to_pylist() == [r.message_id for r in more]


def _same_blocks_elsewhere(
    workspace: mk.Workspace, ours: mk.Receipt, other: Path, clock: SimClock
) -> tuple[Path, list[mk.Receipt]]:
    """Another workspace's file at our file's path, with a first block that ends where ours
    did (two sends of one event each): only its sync marker tells it from ours."""
    with mk.connect(path=other, clock=SimClock(clock.now)) as elsewhere:
        theirs = _emit(elsewhere, 1) + _emit(elsewhere, 1)
    path, copy = Path(ours.location or ""), Path(theirs[0].location or "")
    assert workspace.path is not None and elsewhere.path is not None
    assert path.relative_to(workspace.path) == copy.relative_to(elsewhere.path)
    # What makes the position reached in ours look like a block end in theirs.
    data, position = copy.read_bytes(), path.stat().st_size
    _, sync, _ = read_header(data)
    assert data[position - 16 : position] == sync != read_header(path.read_bytes())[1]
    return copy, theirs


def test_a_file_written_again_at_its_path_is_read_from_its_first_block(
    workspace: mk.Workspace, clock: SimClock, tmp_path: Path
) -> None:
    """A file deleted and written again by the hub (or restored from elsewhere) with a block
    ending where the tail had read the old one to: the blocks before that were never handed
    out. The sync marker tells the files apart."""
    with workspace.tail() as tail:
        (ours,) = _emit(workspace, 1)
        read_until(tail, 1, settle=0.3)
        copy, theirs = _same_blocks_elsewhere(workspace, ours, tmp_path / "other", clock)
        shutil.copyfile(copy, ours.location or "")
        got = read_until(tail, 2, settle=0.3)
    assert got["message_id"].to_pylist() == [r.message_id for r in theirs]


def test_a_checkpoint_tells_a_file_written_again_since_it_was_saved(
    workspace: mk.Workspace, clock: SimClock, tmp_path: Path
) -> None:
    with workspace.tail(checkpoint="written-again") as tail:
        (ours,) = _emit(workspace, 1)
        read_until(tail, 1, settle=0.3)
    copy, theirs = _same_blocks_elsewhere(workspace, ours, tmp_path / "other", clock)
    Path(ours.location or "").unlink()
    shutil.copyfile(copy, ours.location or "")
    with workspace.tail(checkpoint="written-again") as tail:
        got = read_until(tail, 2, settle=0.3)
    assert got["message_id"].to_pylist() == [r.message_id for r in theirs]


def test_a_checkpoint_whose_file_was_deleted_resumes_with_what_comes_next(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    with workspace.tail(checkpoint="deleted") as tail:
        (first,) = _emit(workspace, 1)
        read_until(tail, 1, settle=0.3)
    Path(first.location or "").unlink()
    with workspace.tail(checkpoint="deleted") as tail:
        assert tail.read(0.3) == []
        clock.advance(minutes=10)
        later = _emit(workspace, 2)
        got = read_until(tail, 2, settle=0.3)
    assert got["message_id"].to_pylist() == [r.message_id for r in later]
    assert datetime(2026, 3, 2, 8, 10, tzinfo=UTC) <= got["enqueued_time"][0].as_py()
