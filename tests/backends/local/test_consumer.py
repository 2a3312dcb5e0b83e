"""The local consumer meets files in the lake it cannot read: it names them and reads the rest."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

import metaverse_kit as mk
from tests.conftest import SimClock, python_as_other_user, read_until

URN = mk.make_dataset_urn("hive", "db.orders")
# Generous: the test machine may be busy.
ARRIVAL_TIMEOUT = 30.0


def _emit(ws: mk.Workspace, n: int, urn: str = URN) -> list[mk.Receipt]:
    return ws.emit([mk.mce(urn, [mk.aspects.status(i % 2 == 0)]) for i in range(n)])


def _broken_link(path: Path) -> None:
    path.symlink_to(path.with_name("nothing-here"))


def _folder(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize("make", [_broken_link, _folder], ids=["broken-link", "folder"])
def test_a_path_with_a_capture_name_that_is_no_file_is_named_and_stops_nothing(
    workspace: mk.Workspace, make: Callable[[Path], None]
) -> None:
    """The lake refuses a list of files holding one that is no file (as one a repair moved
    aside between the walk and the listing is): every read of the partition raised."""
    (first,) = _emit(workspace, 1)
    stray = Path(first.location or "").with_name("59.avro")
    make(stray)
    with workspace.tail(start="earliest") as tail:
        with pytest.warns(mk.CaptureFileWarning, match=re.escape(str(stray))) as caught:
            got = read_until(tail, 1)
        assert len(caught) == 1 and "not a file" in str(caught[0].message)
        assert tail.read(0.3) == []  # not named again
        more = _emit(workspace, 2)
        got = pa.concat_tables([got, read_until(tail, 2)])
        if stray.is_dir():
            stray.rmdir()
        else:
            stray.unlink()
        last = _emit(workspace, 1)
        got = pa.concat_tables([got, read_until(tail, 1)])
    assert got["message_id"].to_pylist() == [r.message_id for r in [first, *more, *last]]


def test_a_file_replaced_by_a_longer_other_archive_is_read_again_from_its_first_block(
    workspace: mk.Workspace, clock: SimClock, tmp_path: Path
) -> None:
    """A file replaced by other bytes was read on from the position reached in the old ones:
    inside a block of the new file, so nothing of it, nor anything appended later, came."""
    with workspace.tail() as tail:
        (old,) = _emit(workspace, 1)
        assert read_until(tail, 1).num_rows == 1
        with mk.connect(path=tmp_path / "other", clock=clock) as other:
            copies = _emit(other, 3)
        path, copy = Path(old.location or ""), Path(copies[0].location or "")
        assert path.relative_to(workspace.path) == copy.relative_to(other.path)
        assert copy.stat().st_size > path.stat().st_size
        shutil.copyfile(copy, path)
        got = read_until(tail, 3)
    assert got["message_id"].to_pylist() == [r.message_id for r in copies]


# Runs without the right to ignore file modes: tails from the start until the events of the
# files it can read came, gives the locked file or folder the mode argv[5] (octal), tails until
# its events came; prints what the tail handed out and said.
_LOCKED_OUT = r"""
import json, os, sys, time, warnings
import metaverse_kit as mk

root, locked, mode = sys.argv[1], sys.argv[2], int(sys.argv[5], 8)
out = {"ids": [], "after_chmod": [], "warnings": []}
with warnings.catch_warnings(record=True) as caught, mk.connect(path=root) as ws:
    warnings.simplefilter("always")
    with ws.tail(start="earliest") as tail:
        deadline = time.monotonic() + 30
        while len(out["ids"]) < int(sys.argv[3]) and time.monotonic() < deadline:
            for b in tail.read(0.5):
                out["ids"] += b.column("message_id").to_pylist()
        out["quiet"] = [b.num_rows for b in tail.read(0.3)]
        os.chmod(locked, mode)
        deadline = time.monotonic() + 30
        while len(out["after_chmod"]) < int(sys.argv[4]) and time.monotonic() < deadline:
            for b in tail.read(0.5):
                out["after_chmod"] += b.column("message_id").to_pylist()
    out["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
print(json.dumps(out))
"""


def test_a_file_this_user_cannot_open_is_named_and_read_once_it_can_be(tmp_path: Path) -> None:
    """A Capture file the user may not read (another user's, mode 0600) made every read raise
    a bare PermissionError."""
    with mk.connect(path=tmp_path / "ws") as ws:
        receipts = ws.emit(
            [
                mk.mce(mk.make_dataset_urn("hive", f"db.t{i}"), [mk.aspects.status(False)])
                for i in range(8)
            ]
        )
    locked = Path(receipts[0].location or "")
    mine = [r.message_id for r in receipts if r.location == str(locked)]
    others = [r.message_id for r in receipts if r.location != str(locked)]
    assert others
    os.chmod(locked, 0)
    try:
        done = python_as_other_user(
            _LOCKED_OUT,
            str(tmp_path / "ws"),
            str(locked),
            str(len(others)),
            str(len(mine)),
            "644",
            cache=tmp_path / "xdg",
        )
    finally:
        os.chmod(locked, 0o644)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert sorted(seen["ids"]) == sorted(others)
    assert seen["quiet"] == []
    assert sorted(seen["after_chmod"]) == sorted(mine)
    (warning,) = seen["warnings"]
    assert warning.startswith("CaptureFileWarning: ") and str(locked) in warning
    assert "Permission denied" in warning


def test_a_folder_this_user_cannot_list_is_named_and_read_once_it_can_be(
    tmp_path: Path,
) -> None:
    """A folder of the lake the user may not list made every read of the tail raise a bare
    PermissionError, and the other partitions' events were lost with it."""
    with mk.connect(path=tmp_path / "ws") as ws:
        receipts = ws.emit(
            [
                mk.mce(mk.make_dataset_urn("hive", f"db.t{i}"), [mk.aspects.status(False)])
                for i in range(8)
            ]
        )
    first = Path(receipts[0].location or "")
    # The partition's year folder: <lake>/<namespace>/<hub>/<partition>/<YYYY>.
    folder = first.parents[4]
    assert folder.name.isdigit() and len(folder.name) == 4
    inside = [r.message_id for r in receipts if str(folder) in (r.location or "")]
    others = [r.message_id for r in receipts if str(folder) not in (r.location or "")]
    assert inside and others
    os.chmod(folder, 0)
    try:
        done = python_as_other_user(
            _LOCKED_OUT,
            str(tmp_path / "ws"),
            str(folder),
            str(len(others)),
            str(len(inside)),
            "755",
            cache=tmp_path / "xdg",
        )
    finally:
        os.chmod(folder, 0o755)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert sorted(seen["ids"]) == sorted(others)
    assert seen["quiet"] == []
    assert sorted(seen["after_chmod"]) == sorted(inside)
    (warning,) = seen["warnings"]
    assert warning.startswith(f"CaptureFileWarning: {folder} is in the lake but cannot be listed")
    assert "Permission denied" in warning
