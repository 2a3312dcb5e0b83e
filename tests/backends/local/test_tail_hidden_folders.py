"""``ws.tail(start="latest")`` opened while a folder of the lake cannot be listed: what the
folder held then is not new, what is written below it afterwards is.

The tail runs in a child process that the kernel holds to file modes (see
:func:`tests.conftest.python_as_other_user`; the tests run as root, whom ``chmod`` alone does
not stop). This process, root, writes into the locked folder while the child's tail is open.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import metaverse_kit as mk
from tests.conftest import REPO, SimClock, as_other_user, python_as_other_user

URN = mk.make_dataset_urn("hive", "db.orders")
# Generous: the child has to start Python and import the toolkit first.
TIMEOUT = 60.0

# Opens a tail at "latest" (argv[2]: with the checkpoint name, closed at once and opened again
# after the folder argv[3] was unlocked; "-": kept open), says so in argv[4], waits for argv[5]
# (this process wrote into the locked folder), gives the folder mode 755 and reads until
# argv[6] events came; prints what the tail handed out and the warnings.
_CHILD = r"""
import json, os, sys, time, warnings
import metaverse_kit as mk

root, checkpoint, locked, opened, written, wanted = sys.argv[1:7]
name = None if checkpoint == "-" else checkpoint
out = {"before": [], "after": []}
def ids(tail, timeout):
    return [i for b in tail.read(timeout) for i in b.column("message_id").to_pylist()]
with warnings.catch_warnings(record=True) as caught, mk.connect(path=root) as ws:
    warnings.simplefilter("always")
    tail = ws.tail(start="latest", checkpoint=name)
    if name is not None:
        tail.close()
    else:
        out["before"] += ids(tail, 0.3)
    open(opened, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(written) and time.monotonic() < deadline:
        time.sleep(0.05)
    if name is None:
        out["before"] += ids(tail, 0.3)  # still locked: nothing of it yet
    os.chmod(locked, 0o755)
    if name is not None:
        tail = ws.tail(start="latest", checkpoint=name)
    deadline = time.monotonic() + 60
    while len(out["after"]) < int(wanted) and time.monotonic() < deadline:
        out["after"] += ids(tail, 0.5)
    out["after"] += ids(tail, 1.0)  # nothing more comes
    tail.close()
out["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
print(json.dumps(out))
"""


@pytest.fixture
def history(tmp_path: Path) -> Iterator[tuple[mk.Workspace, SimClock, list[mk.Receipt]]]:
    """A workspace whose partition of :data:`URN` has files of two windows, 10 minutes apart."""
    clock = SimClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    with mk.connect(path=tmp_path / "ws", clock=clock) as ws:
        receipts = ws.emit([mk.mce(URN, [mk.aspects.status(i % 2 == 0)]) for i in range(3)])
        clock.advance(minutes=10)
        receipts += ws.emit([mk.mce(URN, [mk.aspects.status(i % 2 == 0)]) for i in range(3)])
        yield ws, clock, receipts


def _run_child(
    tmp_path: Path,
    root: Path,
    locked: Path,
    *,
    checkpoint: str | None,
    write: Iterator[None],
    wanted: int,
) -> dict[str, list[str]]:
    """Run :data:`_CHILD` with ``locked`` at mode 000, ``write`` once its tail is open, until
    ``wanted`` events came after the folder was unlocked."""
    opened, written = tmp_path / "opened", tmp_path / "written"
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    command = [sys.executable, "-c", _CHILD, str(root), checkpoint or "-", str(locked)]
    os.chmod(locked, 0)
    try:
        child = subprocess.Popen(
            as_other_user([*command, str(opened), str(written), str(wanted)]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + TIMEOUT
        while not opened.exists():
            if child.poll() is not None or time.monotonic() > deadline:
                child.kill()
                pytest.fail(f"the child's tail did not open: {child.communicate()[1][-3000:]}")
            time.sleep(0.05)
        next(write, None)
        written.touch()
        stdout, stderr = child.communicate(timeout=TIMEOUT * 2)
    finally:
        os.chmod(locked, 0o755)
    assert child.returncode == 0, stderr
    result: dict[str, list[str]] = json.loads(stdout.splitlines()[-1])
    return result


def _folder(receipt: mk.Receipt, which: str) -> Path:
    path = Path(receipt.location or "")
    # <partition>/<YYYY>/<MM>/<DD>/<HH>/<mm>/<ss>.avro
    return path.parents[5] if which == "partition" else path.parent


@pytest.mark.parametrize(
    ("which", "checkpoint"),
    [("partition", None), ("minute", None), ("minute", "hidden-resumed")],
    ids=["partition-folder", "newest-minute-folder", "newest-minute-folder-across-a-checkpoint"],
)
def test_latest_never_hands_out_what_a_folder_it_could_not_list_held_when_it_opened(
    tmp_path: Path,
    history: tuple[mk.Workspace, SimClock, list[mk.Receipt]],
    which: str,
    checkpoint: str | None,
) -> None:
    """Once the folder could be listed, the events it held before the tail opened were handed
    out as new: "latest" could not tell them from what was written after."""
    ws, clock, receipts = history
    assert ws.path is not None
    locked = _folder(receipts[-1], which)
    if which == "minute":  # the older window's file stays in sight
        assert Path(receipts[0].location or "").parent != locked
    new: list[mk.Receipt] = []

    def write() -> Iterator[None]:
        # Into the file of the locked folder: this process, root, may write there.
        clock.advance(seconds=30)
        new.extend(ws.emit([mk.mce(URN, [mk.aspects.status(True)]) for _ in range(2)]))
        yield

    seen = _run_child(tmp_path, ws.path, locked, checkpoint=checkpoint, write=write(), wanted=2)
    assert [r.location for r in new] == [receipts[-1].location] * 2
    assert seen["before"] == []
    assert seen["after"] == [r.message_id for r in new]
    (warning,) = {w for w in seen["warnings"] if str(locked) in w}
    assert warning.startswith(f"CaptureFileWarning: {locked} is in the lake but cannot be listed")


def test_latest_says_so_when_the_hub_state_cannot_tell_what_a_hidden_folder_held(
    tmp_path: Path, history: tuple[mk.Workspace, SimClock, list[mk.Receipt]]
) -> None:
    """Without the hub's sequence numbers the tail cannot tell old events below the folder from
    new ones: it hands them all out, and says so when it opens."""
    ws, _, receipts = history
    assert ws.path is not None
    state = ws.path / "hub" / "partitions.json"
    locked = _folder(receipts[-1], "partition")
    os.chmod(state, 0)
    try:
        seen = _run_child(
            tmp_path, ws.path, locked, checkpoint=None, write=iter(()), wanted=len(receipts)
        )
    finally:
        os.chmod(state, 0o644)
    assert sorted(seen["after"]) == sorted(r.message_id for r in receipts)
    (warning,) = [w for w in seen["warnings"] if "hub state cannot be read" in w]
    assert warning.startswith(f"CaptureFileWarning: {locked} cannot be listed")
    assert str(state) in warning and "also those written before it opened" in warning


# Opens a tail at "latest" with the folder argv[2] locked; unlocks it and locks its parent
# argv[3] at once, reads, unlocks the parent, reads; prints what the tail handed out.
_CHILD_PARENT_LOCKED = r"""
import json, os, sys, warnings
import metaverse_kit as mk

root, locked, parent = sys.argv[1:4]
got = []
warnings.simplefilter("ignore", mk.CaptureFileWarning)  # named: the other tests' subject
with mk.connect(path=root) as ws, ws.tail(start="latest") as tail:
    for steps in [[(locked, 0o755), (parent, 0)], [(parent, 0o755)]]:
        for folder, mode in steps:
            os.chmod(folder, mode)
        got += [i for b in tail.read(1.0) for i in b.column("message_id").to_pylist()]
print(json.dumps(got))
"""


def test_a_hidden_folder_whose_parent_cannot_be_listed_meanwhile_stays_hidden(
    tmp_path: Path, history: tuple[mk.Workspace, SimClock, list[mk.Receipt]]
) -> None:
    """While its parent cannot be listed, the folder is not reached, so it is not known to
    have been read: what it held at the start is still not new."""
    ws, _, receipts = history
    assert ws.path is not None
    locked = _folder(receipts[-1], "minute")
    # A path of a later hour the tail cannot read: every read looks at the partition again.
    stray = _folder(receipts[-1], "partition") / "2026" / "03" / "02" / "09" / "00" / "00.avro"
    stray.parent.mkdir(parents=True)
    stray.symlink_to(stray.with_name("nothing-here"))
    os.chmod(locked, 0)
    try:
        done = python_as_other_user(
            _CHILD_PARENT_LOCKED,
            str(ws.path),
            str(locked),
            str(locked.parent),
            cache=tmp_path / "xdg",
        )
    finally:
        os.chmod(locked.parent, 0o755)
        os.chmod(locked, 0o755)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
