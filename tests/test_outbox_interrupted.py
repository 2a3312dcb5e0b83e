"""A send a process began and never finished (killed, a kernel restart): the retry that sends
its events again says, as a warning a steward sees, that the lake may now hold them twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import metaverse_kit as mk
from metaverse_kit.backends.local.hub import LocalEventHub
from metaverse_kit.backends.protocols import OutgoingEvent, Receipt
from metaverse_kit.errors import InterruptedSendWarning
from metaverse_kit.outbox import Outbox, OutboxEntry, _batch_lock
from tests.conftest import REPO, SimClock


class _Killed(BaseException):
    """What a SIGKILL does to a send, in-process: nothing after it runs, no error is kept."""


class _DyingHub(LocalEventHub):
    """The local hub, killed after it took the first event of a send."""

    def send(self, events: Sequence[OutgoingEvent], *, schema_ids: Sequence[str]) -> list[Receipt]:
        super().send(events[:1], schema_ids=schema_ids[:1])
        raise _Killed


class _DownHub(LocalEventHub):
    """The local hub while its service is down: every send fails, nothing is written."""

    def send(self, events: Sequence[OutgoingEvent], *, schema_ids: Sequence[str]) -> list[Receipt]:
        raise mk.ServiceError("the hub is down")


def _hub(cls: type[LocalEventHub], root: Path, clock: SimClock) -> LocalEventHub:
    return cls(
        root / "lake", root / "hub", namespace="metaverse-local", eventhub="metaverse", clock=clock
    )


def _events(n: int) -> list[OutgoingEvent]:
    return [OutgoingEvent(f"body-{i}".encode(), "t", f"k{i}", f"m{i}") for i in range(n)]


def _retry_warned(root: Path) -> tuple[list[Receipt], list[str]]:
    """Open the workspace again (as the next process would), retry; the receipts and the
    messages of the InterruptedSendWarnings given."""
    with mk.connect(path=root) as ws, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        receipts = ws.outbox.retry()
        assert ws.outbox.list() == []
    others = [w for w in caught if not issubclass(w.category, InterruptedSendWarning)]
    assert others == []
    return receipts, [str(w.message) for w in caught]


def test_a_retry_after_a_killed_send_warns_naming_the_batch_and_what_replay_does(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    """It was a log line only: a steward in a notebook never saw it."""
    root = workspace.path
    assert root is not None
    with pytest.raises(_Killed):
        Outbox(root / "outbox", _hub(_DyingHub, root, clock)).send(_events(3), schema_ids=["s"] * 3)
    (batch,) = {e.batch for e in workspace.outbox.list()}
    receipts, (message,) = _retry_warned(root)
    assert [r.message_id for r in receipts] == ["m0", "m1", "m2"]
    assert f"batch {batch} (3 events emitted " in message
    assert "the lake may hold them twice, with the same message id (m0, m1, m2)" in message
    assert "Replay keeps the first copy of each" in message
    assert "mk.duplicates_dropped(ws.replay())" in message
    assert "ws.replay(dedup=False)" in message
    # What the warning says: m0 is in the lake twice, and replay keeps one copy.
    everything = workspace.replay(schema=False, dedup=False, cache=False, progress=False)
    assert sorted(everything["message_id"].to_pylist()) == ["m0", "m0", "m1", "m2"]
    table = workspace.replay(schema=False, cache=False, progress=False)
    assert sorted(table["message_id"].to_pylist()) == ["m0", "m1", "m2"]
    assert mk.duplicates_dropped(table) == 1


def test_a_retry_after_a_killed_retry_warns_too(workspace: mk.Workspace, clock: SimClock) -> None:
    """Only never-tried events were taken for a stopped process's leftovers: a retry killed
    while it sent events that had failed before left them with no sign, and the next retry
    said nothing."""
    root = workspace.path
    assert root is not None
    with pytest.raises(mk.EmitError):
        Outbox(root / "outbox", _hub(_DownHub, root, clock)).send(_events(2), schema_ids=["s"] * 2)
    assert [(e.attempts, e.unconfirmed) for e in workspace.outbox.list()] == [(1, False)] * 2
    with pytest.raises(_Killed):
        Outbox(root / "outbox", _hub(_DyingHub, root, clock)).retry()
    assert [e.unconfirmed for e in workspace.outbox.list()] == [True, True]
    receipts, (message,) = _retry_warned(root)
    assert [r.message_id for r in receipts] == ["m0", "m1"]
    assert "sent 2 event(s) again" in message and "(m0, m1)" in message


def test_a_retry_of_events_the_hub_refused_says_nothing(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    root = workspace.path
    assert root is not None
    for _ in range(2):  # refused when emitted, and refused again by a retry
        box = Outbox(root / "outbox", _hub(_DownHub, root, clock))
        with pytest.raises(mk.EmitError):
            box.send(_events(2), schema_ids=["s"] * 2) if _ == 0 else box.retry()
    receipts, said = _retry_warned(root)
    assert [r.message_id for r in receipts] == ["m0", "m1"] and said == []


def test_a_killed_sends_events_refused_by_a_retry_are_still_named_when_sent(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    """A retry the hub refuses sends nothing again: the events stay as unsure as they were."""
    root = workspace.path
    assert root is not None
    with pytest.raises(_Killed):
        Outbox(root / "outbox", _hub(_DyingHub, root, clock)).send(_events(2), schema_ids=["s"] * 2)
    with pytest.raises(mk.EmitError):
        Outbox(root / "outbox", _hub(_DownHub, root, clock)).retry()
    assert [(e.attempts, e.unconfirmed) for e in workspace.outbox.list()] == [(1, True)] * 2
    _, (message,) = _retry_warned(root)
    assert "(m0, m1)" in message


@pytest.mark.parametrize(("attempts", "warned"), [(0, True), (2, False)])
def test_batches_of_earlier_versions_are_unsure_when_never_tried(
    workspace: mk.Workspace, clock: SimClock, attempts: int, warned: bool
) -> None:
    """Files written before ``unconfirmed`` was kept: never tried is what told them."""
    root = workspace.path
    assert root is not None
    with pytest.raises(mk.EmitError):
        Outbox(root / "outbox", _hub(_DownHub, root, clock)).send(_events(1), schema_ids=["s"])
    (path,) = (root / "outbox").glob("*.json")
    data = json.loads(path.read_bytes())
    data["shared"].pop("unconfirmed")
    data["shared"]["attempts"] = attempts
    path.write_text(json.dumps(data))
    (entry,) = workspace.outbox.list()
    assert entry.unconfirmed is warned
    _, said = _retry_warned(root)
    assert len(said) == int(warned)


def test_a_retry_of_one_large_batch_compares_no_entry_with_every_other(
    tmp_path: Path, clock: SimClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which entries to keep was found by comparing each entry with every chosen one: a batch
    of 8,000 events took 6 s to retry, one of 100,000 about a quarter of an hour."""
    box = Outbox(tmp_path / "outbox", _hub(_DownHub, tmp_path, clock))
    n = 3000
    with pytest.raises(mk.EmitError):
        box.send(_events(n), schema_ids=["s"] * n)
    compared = 0
    equal = OutboxEntry.__eq__

    def counting(self: OutboxEntry, other: object) -> Any:
        nonlocal compared
        compared += 1
        return equal(self, other)

    monkeypatch.setattr(OutboxEntry, "__eq__", counting)
    box.hub = _hub(LocalEventHub, tmp_path, clock)
    assert len(box.retry([f"m{i}" for i in range(0, n, 2)])) == n // 2
    assert len(box.retry()) == n // 2
    assert compared <= n


# Sends 3 events through an outbox whose hub takes the first and then waits (the process is
# killed there), after saying so in the file argv[2].
_SENDER = r"""
import sys, time
from metaverse_kit.backends.local.hub import LocalEventHub
from metaverse_kit.backends.protocols import OutgoingEvent
from metaverse_kit.outbox import Outbox

root, ready = sys.argv[1], sys.argv[2]

class Stalling(LocalEventHub):
    def send(self, events, *, schema_ids):
        super().send(events[:1], schema_ids=schema_ids[:1])
        open(ready, "w").close()
        time.sleep(600)

hub = Stalling(f"{root}/lake", f"{root}/hub", namespace="metaverse-local", eventhub="metaverse")
events = [OutgoingEvent(f"body-{i}".encode(), "t", f"k{i}", f"m{i}") for i in range(3)]
Outbox(f"{root}/outbox", hub).send(events, schema_ids=["s"] * 3)
"""


def test_a_retry_after_a_real_sigkill_warns(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    with mk.connect(path=root, clock=SimClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))):
        pass
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", _SENDER, str(root), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the child never sent"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    receipts, (message,) = _retry_warned(root)
    assert [r.message_id for r in receipts] == ["m0", "m1", "m2"]
    assert "sent 3 event(s) again" in message and "(m0, m1, m2)" in message
    assert list((root / "outbox").iterdir()) == []  # the dead sender's lock file is gone too


def test_a_late_event_another_process_is_sending_is_not_named_by_this_retry(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    """Two processes retrying at once each named every late event of the outbox, also those
    the other one sent: one late event was reported twice, by a retry that did not send it."""
    urn = mk.make_dataset_urn("hive", "db.orders")
    hub = workspace.hub
    assert isinstance(hub, LocalEventHub)
    hub.clock = lambda: datetime(2026, 3, 2, 9, 0)  # naive: the local hub refuses it
    with pytest.raises(mk.ConfigurationError):
        workspace.emit(mk.mce(urn, [mk.aspects.ownership(["alice"])]))
    (waiting,) = workspace.outbox.list()
    time.sleep(0.005)  # the newer write is made a few milliseconds later
    hub.clock = clock
    workspace.emit(mk.mce(urn, [mk.aspects.ownership(["bob"])]))
    lock = workspace.outbox.folder / f"{waiting.batch}.lock"
    with _batch_lock(lock, wait=True):  # what another process's retry holds while it sends
        assert workspace.outbox.retry() == []  # filterwarnings=error: a warning fails the test
    with pytest.warns(mk.LateEventWarning, match=waiting.message_id):
        workspace.outbox.retry()
