"""The durable outbox on the local backend: written before the send, cleared after, retried."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.backends.local.hub import LocalEventHub
from metaverse_kit.backends.protocols import OutgoingEvent, Receipt
from metaverse_kit.outbox import Outbox, _batch_lock
from tests.conftest import SimClock


class _WatchedHub(LocalEventHub):
    """The local hub, noting what the outbox held at the moment each send started."""

    def __init__(self, outbox_folder: Path, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.outbox_folder = outbox_folder
        self.seen: list[list[str]] = []

    def send(self, events: Sequence[OutgoingEvent], *, schema_ids: Sequence[str]) -> list[Receipt]:
        self.seen.append([e.message_id for e in Outbox(self.outbox_folder, self).list()])
        return super().send(events, schema_ids=schema_ids)


def test_events_are_in_the_outbox_during_the_send_and_gone_after(
    tmp_path: Path, clock: SimClock
) -> None:
    hub = _WatchedHub(
        tmp_path / "outbox",
        tmp_path / "lake",
        tmp_path / "hub",
        namespace="ns",
        eventhub="eh",
        clock=clock,
    )
    outbox = Outbox(tmp_path / "outbox", hub)
    events = [OutgoingEvent(b"a", "avro/binary+s", "k", "m1"), OutgoingEvent(b"b", "t", "k", "m2")]
    receipts = outbox.send(events, schema_ids=["s", "s"])
    assert hub.seen == [["m1", "m2"]]
    assert [r.message_id for r in receipts] == ["m1", "m2"]
    assert outbox.list() == [] and not list((tmp_path / "outbox").iterdir())


def test_a_failing_hub_leaves_the_events_in_the_outbox_until_retried(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    hub = workspace.hub
    assert isinstance(hub, LocalEventHub)
    hub.clock = lambda: datetime(2026, 3, 2, 9, 0)  # naive: the local hub refuses it
    with pytest.raises(mk.ConfigurationError, match="timezone-aware") as info:
        workspace.emit([mk.example_mce(), mk.example_mce()])
    assert any("outbox" in note for note in getattr(info.value, "__notes__", []))
    waiting = workspace.outbox.list()
    assert len(waiting) == 2 and waiting[0].attempts == 1
    assert "timezone-aware" in (waiting[0].last_error or "")
    assert workspace.replay().num_rows == 0
    hub.clock = clock
    receipts = workspace.outbox.retry()
    assert [r.message_id for r in receipts] == [e.message_id for e in waiting]
    table = workspace.replay()
    assert table["message_id"].to_pylist() == [e.message_id for e in waiting]
    assert len(workspace.outbox) == 0


def test_a_batch_being_sent_elsewhere_is_neither_retried_nor_discarded(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    hub = workspace.hub
    assert isinstance(hub, LocalEventHub)
    hub.clock = lambda: datetime(2026, 3, 2, 9, 0)
    with pytest.raises(mk.ConfigurationError):
        workspace.emit(mk.example_mce())
    hub.clock = clock
    (entry,) = workspace.outbox.list()
    lock = workspace.outbox.folder / f"{entry.batch}.lock"
    with _batch_lock(lock, wait=True) as held:
        assert held
        assert workspace.outbox.retry() == []
        assert workspace.outbox.discard([entry.message_id]) == 0
    assert workspace.outbox.discard([entry.message_id]) == 1
    assert workspace.outbox.list() == [] and workspace.replay().num_rows == 0


def test_retrying_some_events_keeps_the_others_whatever_happens(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    hub = workspace.hub
    assert isinstance(hub, LocalEventHub)
    hub.clock = lambda: datetime(2026, 3, 2, 9, 0)
    with pytest.raises(mk.ConfigurationError):
        workspace.emit([mk.example_mce(), mk.example_mce(), mk.example_mce()])
    first, second, third = workspace.outbox.list()
    with pytest.raises(mk.ConfigurationError):
        workspace.outbox.retry([second.message_id])
    assert [e.message_id for e in workspace.outbox.list()] == [
        first.message_id,
        third.message_id,
        second.message_id,
    ]
    hub.clock = clock
    assert [r.message_id for r in workspace.outbox.retry([third.message_id])] == [third.message_id]
    assert {e.message_id for e in workspace.outbox.list()} == {first.message_id, second.message_id}
