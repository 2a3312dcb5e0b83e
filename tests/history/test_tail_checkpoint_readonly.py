"""A tail with a checkpoint in a workspace whose checkpoint folder this user cannot write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import metaverse_kit as mk
from tests.conftest import python_as_other_user

# Opens the tail with the checkpoint argv[2], reads, closes; prints what each step raised and
# how many file descriptors the tail left open.
_READER = r"""
import json, os, sys
import metaverse_kit as mk

out = {}
with mk.connect(path=sys.argv[1]) as ws:
    fds = len(os.listdir("/proc/self/fd"))
    tail = ws.tail(checkpoint=sys.argv[2])
    for step, call in [("read", lambda: tail.read(0.2)), ("close", tail.close)]:
        try:
            call()
            out[step] = None
        except Exception as exc:
            out[step] = f"{type(exc).__name__}: {exc}"
    out["closed"] = tail.closed
    out["fds"] = len(os.listdir("/proc/self/fd")) - fds
print(json.dumps(out))
"""


def test_a_checkpoint_that_cannot_be_saved_is_said_and_the_tail_still_closes(
    tmp_path: Path,
) -> None:
    """Closing raised before the consumer was closed: its three descriptors stayed open (on
    Azure, its threads and connections)."""
    with mk.connect(path=tmp_path / "ws") as ws:
        ws.emit(mk.example_mce())
        with ws.tail(checkpoint="nightly"):
            pass
        assert ws.path is not None
        folder = ws.path / "checkpoints" / "$Default"
    os.chmod(folder, 0o555)
    try:
        done = python_as_other_user(
            _READER, str(tmp_path / "ws"), "nightly", cache=tmp_path / "xdg"
        )
    finally:
        os.chmod(folder, 0o755)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    for step in ("read", "close"):
        assert seen[step].startswith(f"ReadOnlyWorkspaceError: Cannot write in {folder}")
    assert seen["closed"] and seen["fds"] == 0
