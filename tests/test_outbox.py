"""The durable outbox on the local backend: written before the send, cleared after, retried."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

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


def _one_waiting(workspace: mk.Workspace, clock: SimClock) -> Any:
    """One event left in the outbox: the hub refused it (a clock without a timezone)."""
    hub = workspace.hub
    assert isinstance(hub, LocalEventHub)
    hub.clock = lambda: datetime(2026, 3, 2, 9, 0)
    with pytest.raises(mk.ConfigurationError):
        workspace.emit(mk.example_mce())
    hub.clock = clock
    (entry,) = workspace.outbox.list()
    return entry


def test_a_batch_being_sent_elsewhere_is_neither_retried_nor_discarded(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    entry = _one_waiting(workspace, clock)
    lock = workspace.outbox.folder / f"{entry.batch}.lock"
    with _batch_lock(lock, wait=True) as held:
        assert held
        assert workspace.outbox.retry() == []
        assert workspace.outbox.discard([entry.message_id]) == 0
    assert workspace.outbox.discard([entry.message_id]) == 1
    assert workspace.outbox.list() == [] and workspace.replay().num_rows == 0


def test_sending_tells_a_batch_a_live_process_holds(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    entry = _one_waiting(workspace, clock)
    assert not workspace.outbox.sending(entry.batch)
    lock = workspace.outbox.folder / f"{entry.batch}.lock"
    with _batch_lock(lock, wait=True):
        assert workspace.outbox.sending(entry.batch)
    assert not workspace.outbox.sending(entry.batch) and not lock.exists()  # made nothing


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


class _DownHub(LocalEventHub):
    """The local hub while its service is down: every send fails, nothing is written."""

    def send(self, events: Sequence[OutgoingEvent], *, schema_ids: Sequence[str]) -> list[Receipt]:
        raise mk.ServiceError("the hub is down")


def test_a_batch_file_holds_shared_fields_once_and_gives_back_every_entry(tmp_path: Path) -> None:
    hub = _DownHub(tmp_path / "lake", tmp_path / "hub", namespace="nsnsns", eventhub="eh")
    outbox = Outbox(tmp_path / "outbox", hub)
    stamped = MappingProxyType({"metaverse-emitted-time": "1772438401000", "n": 1})
    events = [
        OutgoingEvent(bytes([i]) * i, "avro/binary+s", f"k{i % 2}", f"m{i}", stamped)
        for i in range(5)
    ]
    events.append(OutgoingEvent(b"\x00\xff", "avro/binary+t", "", "m5", {"other": None}))
    with pytest.raises(mk.EmitError, match="6 of 6 events were not sent"):
        outbox.send(events, schema_ids=["s"] * 5 + ["t"])
    (path,) = outbox.folder.glob("*.json")
    data = json.loads(path.read_bytes())
    assert data["format"] == 2 and data["count"] == 6
    assert data["shared"]["attempts"] == 1 and "the hub is down" in data["shared"]["last_error"]
    assert set(data["columns"]) == {
        "message_id",
        "schema_id",
        "content_type",
        "partition_key",
        "properties",
    }
    entries = outbox.list()
    assert [e.event() for e in entries] == [
        OutgoingEvent(e.body, e.content_type, e.partition_key, e.message_id, dict(e.properties))
        for e in events
    ]
    assert [e.schema_id for e in entries] == ["s"] * 5 + ["t"]
    assert {e.batch for e in entries} == {path.stem} and entries[0].attempts == 1


def test_batches_written_by_earlier_versions_are_read_and_retried(
    workspace: mk.Workspace,
) -> None:
    hub = workspace.hub
    assert isinstance(hub, LocalEventHub)
    good = hub.clock
    hub.clock = lambda: datetime(2026, 3, 2, 9, 0)  # naive: the local hub refuses it
    with pytest.raises(mk.ConfigurationError):
        workspace.emit([mk.example_mce(), mk.example_mce()])
    (path,) = workspace.outbox.folder.glob("*.json")
    waiting = workspace.outbox.list()
    # The form of format 1: one object per entry.
    old = {"format": 1, "events": [e.to_obj() for e in waiting]}
    path.write_text(json.dumps(old, indent=2))
    assert workspace.outbox.list() == waiting
    hub.clock = good
    receipts = workspace.outbox.retry()
    assert [r.message_id for r in receipts] == [e.message_id for e in waiting]
    assert workspace.replay()["message_id"].to_pylist() == [e.message_id for e in waiting]


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["columns"]["message_id"].pop(),
        lambda d: d["shared"].pop("created"),
        lambda d: d.update(format=3),
        lambda d: d.update(bodies=["not base64!"] * d["count"]),
    ],
    ids=["a short column", "a missing field", "a newer format", "a body that is not base64"],
)
def test_a_damaged_batch_file_is_named_in_the_error(
    tmp_path: Path, damage: Callable[[dict], object]
) -> None:
    hub = _DownHub(tmp_path / "lake", tmp_path / "hub", namespace="nsnsns", eventhub="eh")
    outbox = Outbox(tmp_path / "outbox", hub)
    events = [OutgoingEvent(b"a", "t", f"k{i}", f"m{i}") for i in range(2)]
    with pytest.raises(mk.EmitError):
        outbox.send(events, schema_ids=["s", "s"])
    (path,) = outbox.folder.glob("*.json")
    data = json.loads(path.read_bytes())
    damage(data)
    path.write_text(json.dumps(data))
    with pytest.raises(mk.ConfigurationError, match=f"outbox file {path} is not an outbox batch"):
        outbox.list()


def test_a_damaged_batch_file_does_not_keep_the_other_batches_from_being_sent(
    tmp_path: Path, clock: SimClock
) -> None:
    down = _DownHub(tmp_path / "lake", tmp_path / "hub", namespace="nsnsns", eventhub="eh")
    outbox = Outbox(tmp_path / "outbox", down)
    for i in range(3):
        with pytest.raises(mk.EmitError):
            outbox.send([OutgoingEvent(b"a", "t", f"k{i}", f"m{i}")], schema_ids=["s"])
    damaged, *_ = sorted(outbox.folder.glob("*.json"))
    # The first write of a batch is not fsynced: a power loss can leave it empty.
    damaged.write_bytes(b"")
    with pytest.raises(mk.ConfigurationError, match="cut short by a power loss"):
        outbox.list()
    assert "cannot be read" in repr(outbox)  # a notebook can still show the workspace
    outbox.hub = LocalEventHub(
        tmp_path / "lake", tmp_path / "hub", namespace="nsnsns", eventhub="eh", clock=clock
    )
    with pytest.warns(mk.MetaverseWarning, match=f"outbox file {damaged} is not valid JSON"):
        assert outbox.discard(["m2"]) == 1
    with pytest.warns(mk.MetaverseWarning, match="moved out of the outbox folder") as seen:
        assert [r.message_id for r in outbox.retry()] == ["m1"]
    assert len(seen) == 1  # once per retry, not once per look at the file
    # The damaged file stays for the steward to look at; nothing else is left.
    assert sorted(outbox.folder.glob("*.json")) == [damaged]


def test_a_json_object_without_events_is_not_read_as_an_empty_batch(tmp_path: Path) -> None:
    hub = _DownHub(tmp_path / "lake", tmp_path / "hub", namespace="nsnsns", eventhub="eh")
    outbox = Outbox(tmp_path / "outbox", hub)
    outbox.folder.mkdir()
    # Format 1 had no "format" key: an unrelated JSON object looks like one with no events.
    (outbox.folder / "00000000000000000001-deadbeef.json").write_text('{"evnets": []}')
    with pytest.raises(mk.ConfigurationError, match=r"not an outbox batch.*events"):
        outbox.list()
