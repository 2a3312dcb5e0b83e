"""Crash leftovers, a stuck journal and outbox entries: cleaned on opening, listed by the doctor."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.backends.health import Doctor, Finding
from metaverse_kit.backends.local.doctor import LocalDoctor
from metaverse_kit.backends.local.hub import LocalEventHub
from metaverse_kit.backends.protocols import OutgoingEvent, Receipt
from metaverse_kit.cli import main
from metaverse_kit.outbox import Outbox
from tests.conftest import SimClock


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _leave(folder: Path, name: str, size: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"x" * size)
    return path


def test_opening_removes_the_leftovers_of_dead_processes_only(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    mk.connect(path=root).close()
    dead, me = _dead_pid(), os.getpid()
    lake_dir = root / "lake" / "metaverse-local" / "metaverse" / "0" / "2026" / "03" / "02" / "08"
    gone = [
        _leave(root / "registry", f".index.json.{dead}.abcd1234.tmp"),
        _leave(root / "outbox", f".0001-ab.json.{dead}.x_y2z9k1.tmp"),
        _leave(lake_dir / "00", f".00.avro.{dead}.pending", 1000),  # the hub before 0008
        _leave(root, ".workspace.json.q8w7e6r5.tmp"),  # no pid, and old
    ]
    os.utime(gone[-1], (0, 0))
    kept = [
        _leave(root / "registry", f".index.json.{me}.abcd1234.tmp"),  # a live writer's
        _leave(root, ".workspace.json.a1b2c3d4.tmp"),  # no pid, but young: maybe live
        _leave(root / "cache" / "replay", f".entry.{dead}.abcd1234.tmp"),  # the cache's own
        _leave(root / "registry", "notes.tmp"),  # not ours
    ]
    with mk.connect(path=root):
        pass
    assert [p for p in gone if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []


def test_doctor_lists_and_repairs_leftovers_journal_and_outbox(
    workspace: mk.Workspace, clock: SimClock, capsys: pytest.CaptureFixture[str]
) -> None:
    root = workspace.path
    assert root is not None
    receipt = workspace.emit(mk.example_mce())[0]
    doctor = LocalDoctor(root)
    assert isinstance(doctor, Doctor)
    assert doctor.check() == []
    assert main(["--workspace", str(root), "doctor"]) == 0
    assert capsys.readouterr().out == f"The workspace {root} is healthy.\n"

    # What a killed send leaves: its journal, half a block, a temporary file.
    lake_file = Path(receipt.location)
    good = lake_file.stat().st_size
    relative = lake_file.relative_to(root / "lake").as_posix()
    journal = {
        "format": 2,
        "pid": _dead_pid(),
        "files": [{"partition": receipt.partition, "path": relative, "length": good}],
    }
    (root / "hub" / "journal.json").write_text(json.dumps(journal))
    with open(lake_file, "ab") as f:
        f.write(b"\x02\xc0\x01half a block")
    tmp = _leave(root / "hub", f".partitions.json.{journal['pid']}.k3j4h5g6.tmp", 3000)
    # And an event the hub refused, waiting in the outbox.
    workspace.hub.clock = lambda: datetime(2026, 3, 2, 9, 0)  # type: ignore[attr-defined]
    with pytest.raises(mk.ConfigurationError):
        workspace.emit(mk.example_mce())
    workspace.hub.clock = clock  # type: ignore[attr-defined]

    findings = doctor.check()
    assert [(f.severity, f.kind) for f in findings] == [
        ("warning", "stuck-journal"),
        ("warning", "leftover"),
        ("warning", "outbox"),
    ]
    assert all(isinstance(f, Finding) and f.fix for f in findings)
    assert f"process {journal['pid']} was killed half done" in findings[0].message
    assert f"{tmp} (2.9 KiB) was left by a killed process" in findings[1].message
    assert "1 event(s) emitted at" in findings[2].message
    assert "timezone-aware" in findings[2].message and "ws.outbox.retry()" in findings[2].fix

    assert main(["--workspace", str(root), "doctor", "--repair"]) == 2
    out, err = capsys.readouterr()
    assert f"repaired: rolled {lake_file} back to its last complete block ({good} bytes)" in out
    assert f"repaired: deleted {tmp} (2.9 KiB), left by a killed process" in out
    assert "1 problem(s)" in err and "--repair" not in err  # the outbox is not the doctor's
    assert lake_file.stat().st_size == good and not tmp.exists()
    workspace.outbox.retry()
    assert doctor.check() == []


def test_a_live_send_is_not_a_stuck_journal(workspace: mk.Workspace) -> None:
    root = workspace.path
    assert root is not None
    workspace.emit(mk.example_mce())
    (root / "hub" / "journal.json").write_text(json.dumps({"format": 2, "pid": 1, "files": []}))
    hub = workspace.hub
    with hub.exclusive():  # type: ignore[attr-defined]
        assert LocalDoctor(root).check() == []  # a send holds the lock: its journal is live
    assert [f.kind for f in LocalDoctor(root).check()] == ["stuck-journal"]


def test_doctor_needs_a_workspace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--workspace", str(tmp_path / "nothing"), "doctor"]) == 2
    assert "No workspace at" in capsys.readouterr().err


def _events(n: int) -> list[OutgoingEvent]:
    return [OutgoingEvent(f"body-{i}".encode(), "t", f"k{i}", f"m{i}") for i in range(n)]


class _Killed(BaseException):
    """What a SIGKILL does to a send, in-process: nothing after it runs, no error is kept."""


class _DyingHub(LocalEventHub):
    """The local hub, killed after it took the first event of a send, or checked by ``during``."""

    during: Callable[[], object] | None = None

    def send(self, events: Sequence[OutgoingEvent], *, schema_ids: Sequence[str]) -> list[Receipt]:
        if self.during is not None:
            self.during()
            return super().send(events, schema_ids=schema_ids)
        super().send(events[:1], schema_ids=schema_ids[:1])
        raise _Killed


def _dying_hub(root: Path, clock: SimClock) -> _DyingHub:
    return _DyingHub(
        root / "lake", root / "hub", namespace="metaverse-local", eventhub="metaverse", clock=clock
    )


def test_a_batch_a_live_process_is_sending_is_noted_not_reported(
    workspace: mk.Workspace, clock: SimClock, capsys: pytest.CaptureFixture[str]
) -> None:
    root = workspace.path
    assert root is not None
    hub = _dying_hub(root, clock)
    seen: list[tuple[list[Finding], int]] = []
    hub.during = lambda: seen.append(
        (LocalDoctor(root).check(), main(["--workspace", str(root), "doctor"]))
    )
    Outbox(root / "outbox", hub).send(_events(3), schema_ids=["s"] * 3)
    ((findings, status),) = seen
    (finding,) = findings
    assert (finding.severity, finding.kind) == ("info", "outbox")
    assert (
        "3 event(s) emitted at" in finding.message
        and "being sent by a live process" in finding.message
    )
    assert finding.fix.startswith("nothing to do")
    assert status == 0 and "is healthy" in capsys.readouterr().out
    assert LocalDoctor(root).check() == []


def test_a_batch_a_killed_send_left_is_not_confirmed_sent_rather_than_never_sent(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    root = workspace.path
    assert root is not None
    with pytest.raises(_Killed):
        Outbox(root / "outbox", _dying_hub(root, clock)).send(_events(3), schema_ids=["s"] * 3)
    (finding,) = LocalDoctor(root).check()
    assert (finding.severity, finding.kind) == ("warning", "outbox")
    assert "never sent" not in finding.message
    assert "3 event(s) emitted at" in finding.message and "not confirmed sent" in finding.message
    assert "some may already be in the lake" in finding.message
    assert "replay drops a retry's copies" in finding.fix and "ws.outbox.retry()" in finding.fix
    with pytest.warns(mk.InterruptedSendWarning, match="3 event"):
        workspace.outbox.retry()
    assert LocalDoctor(root).check() == []
    table = workspace.replay(schema=False, cache=False, progress=False)
    assert sorted(table["message_id"].to_pylist()) == ["m0", "m1", "m2"]  # m0's copy dropped


class _DownHub(LocalEventHub):
    """The local hub while its service is down: every send fails, nothing is written."""

    def send(self, events: Sequence[OutgoingEvent], *, schema_ids: Sequence[str]) -> list[Receipt]:
        raise mk.ServiceError("the hub is down")


def test_a_killed_retry_of_a_batch_that_failed_before_is_not_confirmed_sent(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    # The batch's earlier error is not the news: its retry was killed mid-send, so some of its
    # events may be in the lake, which "last error: the hub is down" alone would hide.
    root = workspace.path
    assert root is not None
    down = _DownHub(root / "lake", root / "hub", namespace="metaverse-local", eventhub="metaverse")
    with pytest.raises(mk.EmitError):
        Outbox(root / "outbox", down).send(_events(3), schema_ids=["s"] * 3)
    (finding,) = LocalDoctor(root).check()
    assert (
        "last error: ServiceError: the hub is down" in finding.message
    )  # a clean refusal: nothing went out
    with pytest.raises(_Killed):
        Outbox(root / "outbox", _dying_hub(root, clock)).retry()
    (finding,) = LocalDoctor(root).check()
    assert (
        "not confirmed sent" in finding.message and "may already be in the lake" in finding.message
    )
