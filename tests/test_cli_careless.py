"""``metaverse`` options a careless user or script gives: an empty ``--out`` (an unset
variable), a file for ``--workspace``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.demo import emit_sample_history

CLI = [sys.executable, "-m", "metaverse_kit.cli"]


@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_out_is_refused_not_taken_for_the_current_folder(tmp_path: Path, out: str) -> None:
    """``--out "$OUT"`` with the variable unset exported the history into whatever folder the
    command ran in."""
    with mk.connect(path=tmp_path / "ws") as ws:
        emit_sample_history(ws)
    here = tmp_path / "here"
    here.mkdir()
    done = subprocess.run(
        [*CLI, "--workspace", str(tmp_path / "ws"), "replay", "--out", out],
        capture_output=True,
        text=True,
        cwd=here,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "metaverse replay: error: argument --out: is empty (an unset variable?): give a .parquet "
        "file to write, or a folder for a Parquet dataset; see 'metaverse replay --help'\n"
    )
    assert list(here.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [["init"], ["doctor"], ["replay", "--out", "x.parquet"], ["app", "--port", "8867"]],
    ids=["init", "doctor", "replay", "app"],
)
def test_a_workspace_that_is_a_file_is_said_so(tmp_path: Path, argv: list[str]) -> None:
    """It said "Cannot use <file>/config.toml: a part of the path is a file, not a folder",
    naming a file the user never gave."""
    if argv[0] == "app":
        pytest.importorskip("voila")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    done = subprocess.run(
        [*CLI, "--workspace", str(notes), *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"metaverse {argv[0]}: error: --workspace {notes} is a file, not a folder: give the "
        "workspace's folder\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert notes.read_text() == "mine"
