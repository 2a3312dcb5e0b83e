"""History questions on real emitted histories: aspects, state as of, audit trails, changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import metaverse_kit as mk
from metaverse_kit.demo import emit_sample_history
from metaverse_kit.history import (
    HistoryInputError,
    MissingColumnError,
    aspect_record,
    aspects,
    audit_trail,
    changed_fields,
    changes,
    latest_aspect,
    state_as_of,
)
from tests.conftest import SimClock

A = mk.aspects
ORDERS = mk.make_dataset_urn("hive", "sales.orders")
CUSTOMERS = mk.make_dataset_urn("snowflake", "crm.customers")


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


class History:
    """A small history with known times: owners, tags, a soft delete and a restore."""

    def __init__(self, ws: mk.Workspace, clock: SimClock) -> None:
        self.t0 = clock.now
        ws.emit(
            mk.mce(
                ORDERS,
                [
                    A.dataset_properties(description="Order lines"),
                    A.ownership(["jdoe"], time_ms=_ms(clock.now)),
                    A.global_tags(["Raw"]),
                ],
            )
        )
        ws.emit(mk.mce(CUSTOMERS, [A.global_tags(["PII"])]))
        self.t1 = clock.advance(days=1)
        ws.emit(
            mk.mce(
                ORDERS,
                [
                    A.ownership(
                        ["jdoe", ("mchen", "DATA_STEWARD")],
                        time_ms=_ms(clock.now),
                        actor=mk.make_user_urn("mchen"),
                    )
                ],
            )
        )
        self.t2 = clock.advance(days=1)
        ws.emit(mk.mce(ORDERS, [A.global_tags(["Raw", "Gold"])]))
        self.t3 = clock.advance(days=1)
        # The same value again: a write that changes nothing.
        ws.emit(mk.mce(ORDERS, [A.global_tags(["Raw", "Gold"])]))
        self.t4 = clock.advance(days=1)
        ws.emit(mk.mce(CUSTOMERS, [A.status(True)]))
        self.t5 = clock.advance(days=1)
        ws.emit(mk.mce(CUSTOMERS, [A.status(False)]))
        self.events = ws.replay(progress=False)


@pytest.fixture
def history(workspace: mk.Workspace, clock: SimClock) -> History:
    return History(workspace, clock)


def _owners(value: dict | None) -> list[tuple[str, str]]:
    assert value is not None
    return [(o["owner"], o["type"]) for o in value["owners"]]


def _tags(value: dict | None) -> list[str]:
    assert value is not None
    return [t["tag"].rpartition(":")[2] for t in value["tags"]]


def test_the_questions_are_reachable_from_the_package() -> None:
    assert mk.history.state_as_of is state_as_of
    assert mk.history.latest_aspect is latest_aspect
    assert {"aspects", "state_as_of", "audit_trail", "changes", "latest_aspect"} <= set(
        mk.history.__all__
    )


# -- latest_aspect ---------------------------------------------------------------------------------


def test_latest_aspect_is_the_last_write(history: History) -> None:
    events = history.events
    assert _owners(latest_aspect(events, ORDERS, "ownership")) == [
        ("urn:li:corpuser:jdoe", "TECHNICAL_OWNER"),
        ("urn:li:corpuser:mchen", "DATA_STEWARD"),
    ]
    # The record's short and full names work as well as DataHub's aspect name.
    full = "com.linkedin.pegasus2avro.common.Ownership"
    assert latest_aspect(events, ORDERS, "Ownership") == latest_aspect(events, ORDERS, full)
    before_change = latest_aspect(
        events, ORDERS, "ownership", as_of=history.t1 - timedelta(milliseconds=1)
    )
    assert _owners(before_change) == [("urn:li:corpuser:jdoe", "TECHNICAL_OWNER")]
    assert latest_aspect(events, ORDERS, "status") is None
    assert latest_aspect(events, mk.make_user_urn("nobody"), "ownership") is None
    # A soft-deleted then restored entity: the last Status written.
    assert latest_aspect(events, CUSTOMERS, "status") == {
        "removed": False,
        "lifecycleStage": None,
        "lifecycleLastUpdated": None,
    }


def test_latest_aspect_gives_what_the_builders_take(
    history: History, workspace: mk.Workspace
) -> None:
    value = latest_aspect(history.events, ORDERS, "globalTags")
    # NOTE: the round trip a widget does: start from the latest value, edit it, emit it again.
    assert value is not None
    value["tags"].append({"tag": "urn:li:tag:Finance", "context": None, "attribution": None})
    workspace.emit(mk.mce(ORDERS, [("com.linkedin.pegasus2avro.common.GlobalTags", value)]))
    assert _tags(latest_aspect(workspace.replay(progress=False), ORDERS, "globalTags")) == [
        "Raw",
        "Gold",
        "Finance",
    ]


# -- aspects -------------------------------------------------------------------------------------


def test_aspects_has_one_row_per_event_and_aspect(history: History) -> None:
    table = aspects(history.events)
    assert table.num_rows == 9
    assert table.column_names[:7] == [
        "urn",
        "entity_type",
        "platform",
        "aspect",
        "aspect_type",
        "change",
        "value",
    ]
    first = table.slice(0, 5).select(["urn", "aspect", "platform", "entity_type"]).to_pylist()
    # The first MCE's three aspects in their order, then the other entity at the same time.
    assert [(r["urn"], r["aspect"]) for r in first[:3]] == [
        (ORDERS, "datasetProperties"),
        (ORDERS, "ownership"),
        (ORDERS, "globalTags"),
    ]
    assert first[0]["platform"] == "hive" and first[0]["entity_type"] == "dataset"
    assert table["change"].to_pylist().count("soft_delete") == 1
    assert set(table["change"].to_pylist()) == {"upsert", "soft_delete"}
    # The value keeps its types: the union struct with the record under its short name.
    value_type = table.schema.field("value").type
    assert value_type.field("branch").type == pa.string()
    owners = value_type.field("Ownership").type.field("owners").type
    assert pa.types.is_list(owners) and owners.value_type.field("owner").type == pa.string()
    removed = pc.struct_field(table["value"], ["Status", "removed"]).to_pylist()
    assert removed.count(True) == 1 and removed.count(False) == 1
    # event_index points back at the event.
    row = table.slice(3, 1).to_pylist()[0]
    event = history.events.slice(row["event_index"], 1).to_pylist()[0]
    assert event["message_id"] == row["message_id"]
    assert event["sequence_number"] == row["sequence_number"]


def test_aspects_of_an_empty_lake(workspace: mk.Workspace) -> None:
    empty = workspace.replay(progress=False)
    table = aspects(empty)
    assert table.num_rows == 0
    assert "value" in table.column_names
    assert state_as_of(empty, datetime.now(UTC)).num_rows == 0
    assert changes(empty, "2026-01-01", "2026-02-01").num_rows == 0
    assert latest_aspect(empty, ORDERS, "ownership") is None


def test_events_that_did_not_decode_have_no_aspects(real_capture: Path) -> None:
    # Real Azure files with JSON bodies: every event kept by the replay, none of them an MCE.
    events = mk.replay_capture(real_capture, progress=False)
    assert events.num_rows == 22
    assert aspects(events).num_rows == 0
    # The questions say why their answer is empty: no event decoded.
    with pytest.warns(mk.UndecodedEventWarning, match="22 of 22 events did not decode"):
        assert state_as_of(events, "2030-01-01").num_rows == 0
    with pytest.warns(mk.UndecodedEventWarning, match="not registry Avro"):
        assert changes(events, "2000-01-01", "2030-01-01").num_rows == 0


def test_aspect_record_unwraps_a_value() -> None:
    value = {"branch": "com.linkedin.pegasus2avro.common.Status", "Status": {"removed": True}}
    assert aspect_record(value) == {"removed": True}
    assert aspect_record(None) is None


# -- state as of ---------------------------------------------------------------------------------


def _state(table: pa.Table) -> dict[tuple[str, str], dict]:
    return {
        (r["urn"], r["aspect"]): r
        for r in table.select(["urn", "aspect", "value", "removed", "enqueued_time"]).to_pylist()
    }


def test_state_at_and_just_before_an_event(history: History) -> None:
    at = _state(state_as_of(history.events, history.t1))
    before = _state(state_as_of(history.events, history.t1 - timedelta(milliseconds=1)))
    # Exactly at the event's time it counts; one millisecond earlier it does not.
    assert len(_owners(aspect_record(at[(ORDERS, "ownership")]["value"]))) == 2
    assert len(_owners(aspect_record(before[(ORDERS, "ownership")]["value"]))) == 1
    assert at[(ORDERS, "ownership")]["enqueued_time"] == history.t1
    assert set(at) == {
        (ORDERS, "datasetProperties"),
        (ORDERS, "ownership"),
        (ORDERS, "globalTags"),
        (CUSTOMERS, "globalTags"),
    }
    assert state_as_of(history.events, history.t0 - timedelta(seconds=1)).num_rows == 0


def test_state_leaves_out_removed_entities_unless_asked(history: History) -> None:
    removed = state_as_of(history.events, history.t4)
    assert CUSTOMERS not in removed["urn"].to_pylist()
    assert set(removed["removed"].to_pylist()) == {False}
    everything = _state(state_as_of(history.events, history.t4, include_removed=True))
    assert everything[(CUSTOMERS, "globalTags")]["removed"] is True
    assert everything[(CUSTOMERS, "status")]["removed"] is True
    assert everything[(ORDERS, "ownership")]["removed"] is False
    restored = _state(state_as_of(history.events, history.t5))
    assert restored[(CUSTOMERS, "status")]["removed"] is False
    assert _tags(aspect_record(restored[(CUSTOMERS, "globalTags")]["value"])) == ["PII"]


def test_state_is_sorted_and_typed(history: History) -> None:
    state = state_as_of(history.events, history.t5)
    keys = list(zip(state["urn"].to_pylist(), state["aspect"].to_pylist(), strict=True))
    assert keys == sorted(keys)
    assert state.schema.field("value").type == aspects(history.events).schema.field("value").type
    assert "change" not in state.column_names


def test_naive_times_are_utc_and_text_and_dates_work(history: History) -> None:
    naive = history.t1.replace(tzinfo=None)
    assert state_as_of(history.events, naive).equals(state_as_of(history.events, history.t1))
    text = history.t1.isoformat().replace("+00:00", "Z")
    assert state_as_of(history.events, text).equals(state_as_of(history.events, history.t1))
    other_zone = history.t1.astimezone(ZoneInfo("Europe/Paris"))
    assert state_as_of(history.events, other_zone).equals(state_as_of(history.events, history.t1))
    day = date(history.t0.year, history.t0.month, history.t0.day) + timedelta(days=1)
    assert state_as_of(history.events, day).num_rows == 4


# -- audit trail ---------------------------------------------------------------------------------


def test_audit_trail_of_owners_and_tags(history: History) -> None:
    trail = audit_trail(history.events, ORDERS)
    rows = trail.to_pylist()
    assert [r["aspect"] for r in rows] == [
        "datasetProperties",
        "ownership",
        "globalTags",
        "ownership",
        "globalTags",
        "globalTags",
    ]
    times = [r["enqueued_time"] for r in rows]
    assert times == sorted(times)
    first_owner, second_owner = rows[1], rows[3]
    assert first_owner["previous_value"] is None
    assert first_owner["changed_fields"] == ["owners", "lastModified"]
    assert second_owner["previous_value"] == first_owner["value"]
    assert second_owner["changed_fields"] == [
        "owners[owner=urn:li:corpuser:mchen]",
        "lastModified.time",
        "lastModified.actor",
    ]
    assert second_owner["actor"] == "urn:li:corpuser:mchen"
    assert rows[4]["changed_fields"] == ["tags[tag=urn:li:tag:Gold]"]
    # The rewrite of the same tags stays in the trail, with nothing changed.
    assert rows[5]["changed_fields"] == []
    assert rows[5]["previous_value"] == rows[5]["value"]
    assert {r["change"] for r in rows} == {"upsert"}


def test_audit_trail_of_a_soft_delete_and_restore(history: History) -> None:
    trail = audit_trail(history.events, CUSTOMERS, aspect="status")
    assert trail["change"].to_pylist() == ["soft_delete", "upsert"]
    assert trail["changed_fields"].to_pylist() == [["removed"], ["removed"]]
    assert trail["enqueued_time"].to_pylist() == [history.t4, history.t5]
    # event_index points into the table given, not into one filtered by urn.
    for r in trail.to_pylist():
        event = history.events.slice(r["event_index"], 1).to_pylist()[0]
        assert event["message_id"] == r["message_id"]


def test_audit_trail_of_an_unknown_entity_is_empty(history: History) -> None:
    trail = audit_trail(history.events, mk.make_user_urn("nobody"))
    assert trail.num_rows == 0
    assert "changed_fields" in trail.column_names


# -- changes -------------------------------------------------------------------------------------


def test_changes_between_two_times(history: History) -> None:
    window = changes(history.events, history.t1, history.t4).to_pylist()
    kinds = {(r["urn"], r["aspect"]): r for r in window}
    assert set(kinds) == {(ORDERS, "ownership"), (ORDERS, "globalTags"), (CUSTOMERS, "status")}
    owners = kinds[(ORDERS, "ownership")]
    assert owners["change"] == "changed"
    assert len(_owners(aspect_record(owners["before"]))) == 1
    assert len(_owners(aspect_record(owners["after"]))) == 2
    tags = kinds[(ORDERS, "globalTags")]
    assert (tags["change"], tags["writes"], tags["changed_fields"]) == (
        "changed",
        2,
        ["tags[tag=urn:li:tag:Gold]"],
    )
    assert (tags["first_time"], tags["last_time"]) == (history.t2, history.t3)
    assert kinds[(CUSTOMERS, "status")]["change"] == "removed"
    restored = changes(history.events, history.t5, history.t5).to_pylist()
    assert [(r["urn"], r["change"]) for r in restored] == [(CUSTOMERS, "restored")]
    first_day = changes(history.events, history.t0, history.t0)
    assert set(first_day["change"].to_pylist()) == {"added"}
    assert first_day.num_rows == 4


def test_changes_hide_rewrites_unless_asked(history: History) -> None:
    assert changes(history.events, history.t3, history.t3).num_rows == 0
    rewrite = changes(history.events, history.t3, history.t3, include_unchanged=True).to_pylist()
    assert [(r["aspect"], r["change"], r["changed_fields"]) for r in rewrite] == [
        ("globalTags", "unchanged", [])
    ]


def test_changes_refuse_a_reversed_window(history: History) -> None:
    with pytest.raises(HistoryInputError, match="is after end"):
        changes(history.events, history.t2, history.t1)


# -- order across partitions ---------------------------------------------------------------------


def _keys_for_partitions(ws: mk.Workspace) -> dict[str, str]:
    hub = ws.hub
    found: dict[str, str] = {}
    for i in range(1000):
        partition = hub.partition_for(f"key-{i}")  # type: ignore[attr-defined]
        found.setdefault(partition, f"key-{i}")
        if len(found) == 4:
            return found
    raise AssertionError("the local hub did not use four partitions")


def test_ties_in_time_follow_partition_then_sequence(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    keys = _keys_for_partitions(workspace)
    # All at one instant: partition 2 after partition 0, and within partition 0, in sequence order.
    # NOTE: the same emit time too (as a batch from one notebook has), else it orders them.
    one = {"metaverse-emitted-time": 1_772_438_400_000}
    for tag, key in (("InTwo", "2"), ("FirstInZero", "0"), ("SecondInZero", "0")):
        workspace.emit(
            mk.mce(ORDERS, [A.global_tags([tag])]), partition_key=keys[key], properties=one
        )
    events = workspace.replay(progress=False)
    assert set(events["partition"].to_pylist()) == {"0", "2"}
    assert _tags(latest_aspect(events, ORDERS, "globalTags")) == ["InTwo"]
    trail = audit_trail(events, ORDERS)
    assert [_tags(aspect_record(v)) for v in trail["value"].to_pylist()] == [
        ["FirstInZero"],
        ["SecondInZero"],
        ["InTwo"],
    ]
    # A later time wins whatever the partition.
    clock.advance(seconds=1)
    workspace.emit(mk.mce(ORDERS, [A.global_tags(["Later"])]), partition_key=keys["1"])
    events = workspace.replay(progress=False)
    assert _tags(latest_aspect(events, ORDERS, "globalTags")) == ["Later"]
    state = state_as_of(events, clock.now)
    assert state.num_rows == 1 and state["partition"].to_pylist() == ["1"]


def test_partitions_are_ordered_as_numbers(history: History) -> None:
    # Partition "10" sorts after "9" (as a number), not between "1" and "2" (as text).
    events = history.events
    t = events["enqueued_time"][0]
    two = events.slice(0, 1)
    same_time = pa.concat_tables([two, two])
    same_time = same_time.set_column(
        same_time.schema.get_field_index("partition"), "partition", pa.array(["10", "9"])
    )
    same_time = same_time.set_column(
        same_time.schema.get_field_index("message_id"), "message_id", pa.array(["a", "b"])
    )
    rows = aspects(same_time)
    assert rows["enqueued_time"][0] == t
    assert rows["partition"].to_pylist()[:: rows.num_rows // 2] == ["9", "10"]


# -- inputs: Parquet, replay_capture, errors -----------------------------------------------------


def test_parquet_round_trip_gives_the_same_answers(history: History, tmp_path: Path) -> None:
    path = tmp_path / "history.parquet"
    pq.write_table(history.events, path)
    for source in (path, str(path), pq.read_table(path)):
        assert (
            aspects(source)
            .drop_columns(["event_index"])
            .equals(aspects(history.events).drop_columns(["event_index"]))
        )
        assert state_as_of(source, history.t5).equals(state_as_of(history.events, history.t5))
        assert audit_trail(source, ORDERS).equals(audit_trail(history.events, ORDERS))
        assert changes(source, history.t1, history.t5).equals(
            changes(history.events, history.t1, history.t5)
        )
    # The aspects table itself can be saved and asked again.
    saved = tmp_path / "aspects.parquet"
    pq.write_table(aspects(history.events), saved)
    assert state_as_of(saved, history.t4, include_removed=True).equals(
        state_as_of(history.events, history.t4, include_removed=True)
    )
    assert audit_trail(saved, ORDERS).equals(audit_trail(history.events, ORDERS))
    # An aspects table sorted another way (newest first) is put back in replay order first.
    newest_first = aspects(history.events).sort_by([("enqueued_time", "descending")])
    assert state_as_of(newest_first, history.t5).equals(state_as_of(history.events, history.t5))
    assert audit_trail(newest_first, ORDERS).equals(audit_trail(history.events, ORDERS))


def test_replay_capture_of_the_lake_folder_gives_the_same_state(
    history: History, workspace: mk.Workspace
) -> None:
    assert workspace.path is not None
    table = mk.replay_capture(workspace.path / "lake", registry=workspace.registry)
    assert (
        state_as_of(table, history.t5)
        .drop_columns(["event_index"])
        .equals(state_as_of(history.events, history.t5).drop_columns(["event_index"]))
    )


def test_missing_columns_are_named(history: History, workspace: mk.Workspace) -> None:
    envelope_only = workspace.replay(schema=False, progress=False)
    with pytest.raises(MissingColumnError, match="'proposedSnapshot'") as info:
        aspects(envelope_only)
    assert info.value.column == "proposedSnapshot"
    assert isinstance(info.value, mk.MetaverseError)
    without_time = history.events.drop_columns(["enqueued_time"])
    with pytest.raises(MissingColumnError, match="'enqueued_time'"):
        state_as_of(without_time, history.t1)
    with pytest.raises(MissingColumnError, match="'sequence_number'"):
        audit_trail(history.events.drop_columns(["sequence_number"]), ORDERS)


def test_bad_inputs_say_what_was_expected(history: History, tmp_path: Path) -> None:
    with pytest.raises(HistoryInputError, match=r"pyarrow\.Table"):
        aspects([{"urn": ORDERS}])
    with pytest.raises(HistoryInputError, match="does not exist"):
        aspects(tmp_path / "missing.parquet")
    (tmp_path / "not.parquet").write_text("hello")
    with pytest.raises(HistoryInputError, match="not a readable Parquet file"):
        aspects(tmp_path / "not.parquet")
    with pytest.raises(HistoryInputError, match="ISO 8601"):
        state_as_of(history.events, "last tuesday")
    with pytest.raises(HistoryInputError, match="not int"):
        state_as_of(history.events, 1767603714000)
    with pytest.raises(HistoryInputError, match="urn must be a URN"):
        audit_trail(history.events, "sales.orders")
    with pytest.raises(HistoryInputError, match="aspect name"):
        latest_aspect(history.events, ORDERS, "")


# -- changed_fields ------------------------------------------------------------------------------

_TYPE = pa.struct(
    [
        ("name", pa.string()),
        ("props", pa.map_(pa.string(), pa.string())),
        ("items", pa.list_(pa.struct([("id", pa.string()), ("n", pa.int64())]))),
        ("stamp", pa.struct([("time", pa.int64()), ("actor", pa.string())])),
    ]
)


def test_changed_fields_paths() -> None:
    old = {
        "name": "a",
        "props": [("team", "x"), ("tier", "1")],
        "items": [{"id": "p", "n": 1}, {"id": "q", "n": 2}],
        "stamp": {"time": 1, "actor": "me"},
    }
    new = {
        "name": "a",
        "props": [("team", "y"), ("owner", "z")],
        "items": [{"id": "p", "n": 5}],
        "stamp": None,
    }
    assert changed_fields(old, new, _TYPE) == [
        "props[owner]",
        "props[team]",
        "props[tier]",
        "items[0].n",
        "items[1]",
        "stamp",
    ]
    assert changed_fields(old, old, _TYPE) == []
    assert changed_fields(None, new, _TYPE) == ["name", "props", "items"]
    assert changed_fields(old, None, _TYPE) == ["name", "props", "items", "stamp"]


_OWNERS = pa.struct(
    [("owners", pa.list_(pa.struct([("owner", pa.string()), ("type", pa.string())])))]
)


def test_changed_fields_match_named_items_by_name() -> None:
    jdoe, mchen = {"owner": "jdoe", "type": "TECHNICAL_OWNER"}, {"owner": "mchen", "type": "X"}
    okoro = {"owner": "okoro", "type": "DATA_STEWARD"}
    # One owner inserted in the middle is one change, not every later owner changed.
    assert changed_fields({"owners": [jdoe, mchen]}, {"owners": [jdoe, okoro, mchen]}, _OWNERS) == [
        "owners[owner=okoro]"
    ]
    retyped = {"owner": "mchen", "type": "DATA_STEWARD"}
    assert changed_fields({"owners": [jdoe, mchen]}, {"owners": [retyped]}, _OWNERS) == [
        "owners[owner=jdoe]",
        "owners[owner=mchen].type",
    ]
    # The same owners in another order: the list changed, no owner did.
    assert changed_fields({"owners": [jdoe, mchen]}, {"owners": [mchen, jdoe]}, _OWNERS) == [
        "owners"
    ]
    # Two items with one name cannot be matched by it: positions again.
    twice = {"owners": [jdoe, jdoe]}
    assert changed_fields(twice, {"owners": [jdoe, retyped]}, _OWNERS) == [
        "owners[1].owner",
        "owners[1].type",
    ]


# -- the sample history --------------------------------------------------------------------------


def test_the_sample_history(workspace: mk.Workspace) -> None:
    emit_sample_history(workspace)
    events = workspace.replay(progress=False)
    end = pc.max(events["enqueued_time"]).as_py()
    campaigns = mk.make_dataset_urn("hive", "marketing.campaigns")
    live = state_as_of(events, end)
    assert campaigns not in live["urn"].to_pylist()
    assert campaigns in state_as_of(events, end, include_removed=True)["urn"].to_pylist()
    customers = mk.make_dataset_urn("hive", "sales.customers")
    owners = audit_trail(events, customers, aspect="ownership")
    assert owners["actor"].to_pylist() == ["urn:li:corpuser:datahub", "urn:li:corpuser:mchen"]
    revenue = mk.make_dataset_urn("snowflake", "analytics.revenue_daily")
    tags = audit_trail(events, revenue, aspect="globalTags")
    pii = "tags[tag=urn:li:tag:PII]"
    assert tags["changed_fields"].to_pylist() == [["tags"], [pii], [pii]]
    # The PII tag was added and taken away again: net, no change, unless asked.
    start = tags["enqueued_time"].to_pylist()[1]
    net = changes(events, start, end)
    assert (revenue, "globalTags") not in zip(
        net["urn"].to_pylist(), net["aspect"].to_pylist(), strict=True
    )
