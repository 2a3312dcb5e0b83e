"""The hub's journal and state and the workspace settings are checked where they are read.

A journal or state naming a file outside the lake (``..``, an absolute path, a symbolic link
leading out) is refused whole: nothing it names is truncated, removed, replaced or appended
to, even by opening the workspace. A file of the wrong shape is a one-line
:class:`ConfigurationError` naming it, never a traceback, and ``metaverse doctor`` reports it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.backends.local.doctor import LocalDoctor
from metaverse_kit.capture import read_header
from metaverse_kit.cli import main


def _workspace_and_victim(tmp_path: Path) -> tuple[Path, mk.Receipt, Path]:
    """A workspace with one event, and a Capture file outside it that must never change."""
    root = tmp_path / "ws"
    with mk.connect(path=root) as ws:
        receipt = ws.emit(mk.example_mce())[0]
    victim = tmp_path / "victim" / "important.avro"
    victim.parent.mkdir()
    victim.write_bytes(Path(receipt.location).read_bytes())
    return root, receipt, victim


def _dot_dot(root: Path, victim: Path) -> str:
    return os.path.relpath(victim, root / "lake")


def _absolute(root: Path, victim: Path) -> str:
    return str(victim)


def _symlink(root: Path, victim: Path) -> str:
    (root / "lake" / "elsewhere").symlink_to(victim.parent, target_is_directory=True)
    return "elsewhere/important.avro"


ESCAPES: dict[str, Callable[[Path, Path], str]] = {
    "dot-dot": _dot_dot,
    "absolute": _absolute,
    "symlink": _symlink,
}


@pytest.mark.parametrize("new", [False, True], ids=["append", "new"])
@pytest.mark.parametrize("escape", list(ESCAPES))
def test_a_journal_naming_a_file_outside_the_lake_is_refused_and_touches_nothing(
    tmp_path: Path, escape: str, new: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    root, receipt, victim = _workspace_and_victim(tmp_path)
    before = victim.read_bytes()
    bad = ESCAPES[escape](root, victim)
    journal_path = root / "hub" / "journal.json"
    journal = {
        "format": 2,
        "pid": 1,
        "files": [
            {"partition": receipt.partition, "path": bad, "length": len(before) - 10, "new": new}
        ],
    }
    journal_path.write_text(json.dumps(journal) + "\n")
    state_before = (root / "hub" / "partitions.json").read_bytes()

    # Opening a workspace the user can write (any command, even one that only reads) tidies it.
    assert main(["--workspace", str(root), "schemas", "list"]) == 0
    assert victim.read_bytes() == before
    assert (root / "hub" / "partitions.json").read_bytes() == state_before
    with mk.connect(path=root) as ws, pytest.raises(mk.ConfigurationError) as info:
        ws.emit(mk.example_mce())
    message = str(info.value)
    assert str(journal_path) in message and repr(bad) in message and "\n" not in message
    assert victim.read_bytes() == before
    assert (root / "hub" / "partitions.json").read_bytes() == state_before

    capsys.readouterr()
    assert main(["--workspace", str(root), "doctor"]) == 2
    out = capsys.readouterr().out
    assert f"error: The hub journal {journal_path} cannot be acted on" in out and repr(bad) in out
    assert "not this hub's to act on" in out
    (finding,) = [f for f in LocalDoctor(root).check() if f.kind == "stuck-journal"]
    assert finding.severity == "error" and finding.repairable

    actions = LocalDoctor(root).repair()
    assert any("nothing it names was touched" in a for a in actions)
    assert json.loads((root / "hub" / "journal.json.refused").read_text()) == journal
    assert victim.read_bytes() == before
    with mk.connect(path=root) as ws:
        ws.outbox.retry()  # the refused emit's event
        ws.emit(mk.example_mce())
        assert ws.replay(cache=False, progress=False).num_rows == 3
    assert LocalDoctor(root).check() == []
    assert victim.read_bytes() == before


def test_a_journal_of_an_older_version_renaming_outside_the_lake_is_refused(
    tmp_path: Path,
) -> None:
    root, _, victim = _workspace_and_victim(tmp_path)
    before = victim.read_bytes()
    other = tmp_path / "victim" / ".other.avro.1.pending"
    other.write_bytes(b"not the victim")
    journal = {"renames": [[str(other), str(victim)]], "state": {}}
    (root / "hub" / "journal.json").write_text(json.dumps(journal))
    mk.connect(path=root).close()
    with mk.connect(path=root) as ws, pytest.raises(mk.ConfigurationError, match="renames"):
        ws.emit(mk.example_mce())
    assert victim.read_bytes() == before and other.exists()


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_a_hub_state_naming_a_file_outside_the_lake_is_unreadable(
    tmp_path: Path, escape: str
) -> None:
    root, receipt, victim = _workspace_and_victim(tmp_path)
    before = victim.read_bytes()
    state_path = root / "hub" / "partitions.json"
    state = json.loads(state_path.read_text())
    bad = ESCAPES[escape](root, victim)
    state[receipt.partition].update(file=bad, sync=read_header(before)[1].hex(), length=len(before))
    state_path.write_text(json.dumps(state))

    with mk.connect(path=root) as ws, pytest.raises(mk.ConfigurationError) as info:
        ws.emit(mk.example_mce())  # was appended to the victim
    assert str(state_path) in str(info.value) and repr(bad) in str(info.value)
    assert "doctor --repair" in str(info.value)
    assert victim.read_bytes() == before
    (finding,) = [f for f in LocalDoctor(root).check() if f.kind == "state"]
    assert repr(bad) in finding.message and finding.repairable
    LocalDoctor(root).repair()
    assert bad not in state_path.read_text()
    with mk.connect(path=root) as ws:
        ws.outbox.retry()
    assert victim.read_bytes() == before


_SHAPES = {
    "state-a-list": ("hub/partitions.json", lambda _: "[1, 2]", "it holds a list"),
    "state-no-counters": (
        "hub/partitions.json",
        lambda _: '{"0": {"next_sequence": 3}}',
        "partition '0' has no next_offset (expected a whole number)",
    ),
    "state-text-counter": (
        "hub/partitions.json",
        lambda _: '{"0": {"next_sequence": "3", "next_offset": 0, "last_enqueued_ms": 0}}',
        "partition '0' has next_sequence '3' (expected a whole number)",
    ),
    "journal-no-path": (
        "hub/journal.json",
        lambda _: '{"format": 2, "files": [{"partition": "0"}]}',
        "file entry 0 has no path (expected a file in the lake)",
    ),
    "journal-a-list": ("hub/journal.json", lambda _: "[1]", "it holds a list"),
    "settings-a-list": ("workspace.json", lambda _: "[]", "holds a JSON list"),
    "settings-text-count": (
        "workspace.json",
        lambda text: text.replace('"partition_count": 4', '"partition_count": "4"'),
        "gives partition_count as '4'; expected a whole number",
    ),
}


@pytest.mark.parametrize("case", list(_SHAPES))
def test_a_file_of_the_wrong_shape_is_named_in_one_line_not_a_traceback(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name, content, expected = _SHAPES[case]
    root = tmp_path / "ws"
    assert main(["--workspace", str(root), "emit", "--example"]) == 0
    path = root / name
    path.write_text(content(path.read_text() if path.exists() else ""))
    capsys.readouterr()

    assert main(["--workspace", str(root), "emit", "--example"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and expected in err, err
    assert main(["--workspace", str(root), "doctor"]) == 2
    out, err = capsys.readouterr()
    assert str(path) in out + err and expected in out + err and "Traceback" not in err
    if name.startswith("hub/"):  # the doctor sets the journal aside, rebuilds the state
        assert main(["--workspace", str(root), "doctor", "--repair"]) == 2  # the outbox waits
        with mk.connect(path=root) as ws:
            ws.outbox.retry()
            assert ws.replay(cache=False, progress=False).num_rows == 2
        assert main(["--workspace", str(root), "doctor"]) == 0
