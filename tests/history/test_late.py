"""Late retries do not win: writes of an aspect are ordered by when the user emitted them."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.capture import EMITTED_TIME_PROPERTY
from metaverse_kit.errors import LateEventWarning
from metaverse_kit.history import audit_trail, changes, latest_aspect, state_as_of
from tests.conftest import SimClock

ORDERS = mk.make_dataset_urn("hive", "db.orders")


def _owner(events: pa.Table) -> str:
    value = latest_aspect(events, ORDERS, "ownership")
    assert value is not None
    return str(value["owners"][0]["owner"])


def _hub_down(ws: mk.Workspace) -> None:
    # A naive clock makes the local hub refuse every send, as an unreachable hub would.
    ws.hub.clock = lambda: datetime(2026, 3, 2, 9, 0)  # type: ignore[attr-defined]


def test_every_event_carries_the_time_it_was_emitted(workspace: mk.Workspace) -> None:
    before = round(time.time() * 1000)
    receipts = workspace.emit([mk.example_mce(), mk.example_mce()], properties={"team": "a"})
    after = round(time.time() * 1000)
    table = workspace.replay(progress=False)
    stamps = {dict(p)[EMITTED_TIME_PROPERTY] for p in table["properties"].to_pylist()}
    (stamp,) = stamps  # one emit, one time
    assert before <= int(stamp) <= after
    assert [dict(p)["team"] for p in table["properties"].to_pylist()] == ["a", "a"]
    assert len(receipts) == 2


def test_a_late_retry_does_not_override_a_newer_write(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    _hub_down(workspace)
    with pytest.raises(mk.ConfigurationError):
        workspace.emit(mk.mce(ORDERS, [mk.aspects.ownership(["alice"])]))
    (waiting,) = workspace.outbox.list()
    time.sleep(0.005)  # the user's second write is made a few milliseconds later
    workspace.hub.clock = clock  # type: ignore[attr-defined]
    (bob,) = workspace.emit(mk.mce(ORDERS, [mk.aspects.ownership(["bob"])]))
    clock.advance(minutes=10)  # the retry reaches the hub well after bob's write
    with pytest.warns(LateEventWarning) as info:
        (retried,) = workspace.outbox.retry()
    message = str(info[0].message)
    assert f"{waiting.message_id} (ownership of {ORDERS}, emitted " in message
    assert "history keeps the newer writes and audit_trail() marks these late=True" in message

    events = workspace.replay(progress=False)
    assert _owner(events) == "urn:li:corpuser:bob"
    state = state_as_of(events, clock.now)
    owned = state.filter(pa.compute.equal(state["aspect"], "ownership"))
    assert owned["message_id"].to_pylist() == [bob.message_id]
    trail = audit_trail(events, ORDERS, aspect="ownership")
    assert trail["message_id"].to_pylist()[0] == retried.message_id  # in the order made
    assert trail["late"].to_pylist() == [True, False]
    assert trail["enqueued_time"][0].as_py() > trail["enqueued_time"][1].as_py()
    assert trail["emitted_time"][0].as_py() < trail["emitted_time"][1].as_py()
    # The window in which the late retry arrived changed nothing in the end.
    window = changes(events, clock.now, clock.now)
    assert window.num_rows == 0
    kept = changes(events, clock.now, clock.now, include_unchanged=True)
    assert kept["change"].to_pylist() == ["unchanged"]
    # Before the retry arrived, bob was the owner too.
    assert _owner(
        events.filter(pa.compute.not_equal(events["message_id"], retried.message_id))
    ) == ("urn:li:corpuser:bob")


def test_a_retry_of_the_newest_write_does_not_warn(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    workspace.emit(mk.mce(ORDERS, [mk.aspects.ownership(["alice"])]))
    time.sleep(0.005)
    _hub_down(workspace)
    with pytest.raises(mk.ConfigurationError):
        workspace.emit(mk.mce(ORDERS, [mk.aspects.ownership(["bob"])]))
    workspace.hub.clock = clock  # type: ignore[attr-defined]
    workspace.outbox.retry()  # filterwarnings=error: a warning here fails the test
    events = workspace.replay(progress=False)
    assert _owner(events) == "urn:li:corpuser:bob"
    assert audit_trail(events, ORDERS)["late"].to_pylist() == [False, False]


def test_events_without_an_emit_time_keep_the_hub_order(workspace: mk.Workspace) -> None:
    # Events from other producers have no emit time (or one set by hand that is no time, which
    # our emit refuses: another producer sends it to the hub itself).
    from metaverse_kit.backends.protocols import OutgoingEvent
    from metaverse_kit.events.codec import content_type_for, encode_bodies

    props = workspace.schema_properties(None)
    (body,) = encode_bodies(
        [mk.mce(ORDERS, [mk.aspects.ownership(["alice"])])],
        workspace.registry.get_schema(props.id).definition,
    )
    workspace.hub.send(
        [
            OutgoingEvent(
                body, content_type_for(props.id), ORDERS, "m1", {EMITTED_TIME_PROPERTY: "yesterday"}
            )
        ],
        schema_ids=[props.id],
    )
    workspace.emit(
        mk.mce(ORDERS, [mk.aspects.ownership(["bob"])]), properties={EMITTED_TIME_PROPERTY: None}
    )
    events = workspace.replay(progress=False)
    trail = audit_trail(events, ORDERS)
    assert trail["emitted_time"].to_pylist() == [None, None]
    assert trail["late"].to_pylist() == [False, False]
    assert _owner(events) == "urn:li:corpuser:bob"


def test_an_emit_time_given_by_the_caller_is_kept(workspace: mk.Workspace, clock: SimClock) -> None:
    # Re-emitting an old history keeps its times: the older write stays older.
    old = round(datetime(2020, 1, 1, tzinfo=UTC).timestamp() * 1000)
    workspace.emit(mk.mce(ORDERS, [mk.aspects.ownership(["bob"])]))
    clock.advance(minutes=1)
    workspace.emit(
        mk.mce(ORDERS, [mk.aspects.ownership(["alice"])]), properties={EMITTED_TIME_PROPERTY: old}
    )
    events = workspace.replay(progress=False)
    assert _owner(events) == "urn:li:corpuser:bob"
    assert audit_trail(events, ORDERS)["late"].to_pylist() == [True, False]


def test_the_demo_emits_at_its_simulated_times(workspace: mk.Workspace) -> None:
    """Stamped with the machine's clock, the demo's audit trail showed events emitted months
    after the simulated hub enqueued them."""
    from metaverse_kit.demo import emit_sample_history

    emit_sample_history(workspace)
    events = workspace.replay(progress=False)
    emitted = [int(dict(p)[EMITTED_TIME_PROPERTY]) for p in events["properties"].to_pylist()]
    enqueued = [round(t.timestamp() * 1000) for t in events["enqueued_time"].to_pylist()]
    assert emitted == enqueued
