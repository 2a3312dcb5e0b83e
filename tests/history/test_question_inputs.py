"""History questions given inputs at their edges: undecoded events, a replay that started late,
times outside a column's range or missing, narrowed tables and mistyped aspect names."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import metaverse_kit as mk
from metaverse_kit.history import (
    HistoryInputError,
    aspects,
    audit_trail,
    changes,
    latest_aspect,
    state_as_of,
)
from metaverse_kit.history.questions import time_scalar
from metaverse_kit.history.replay import replay_start
from tests.conftest import SimClock

A = mk.aspects
ORDERS = mk.make_dataset_urn("hive", "sales.orders")
CUSTOMERS = mk.make_dataset_urn("snowflake", "crm.customers")


class Lake:
    """Three days of writes: ORDERS owned and tagged on day 0, re-owned on days 1 and 2."""

    def __init__(self, ws: mk.Workspace, clock: SimClock) -> None:
        self.ws = ws
        self.t0 = clock.now
        ws.emit(mk.mce(ORDERS, [A.ownership(["jdoe"]), A.global_tags(["Raw"])]))
        ws.emit(mk.mce(CUSTOMERS, [A.global_tags(["PII"])]))
        self.t1 = clock.advance(days=1)
        ws.emit(mk.mce(ORDERS, [A.ownership(["jdoe", "mchen"])]))
        self.t2 = clock.advance(days=1)
        ws.emit(mk.mce(ORDERS, [A.ownership(["mchen"])]))
        self.end = clock.advance(hours=1)
        self.events = ws.replay(progress=False)


@pytest.fixture
def lake(workspace: mk.Workspace, clock: SimClock) -> Lake:
    return Lake(workspace, clock)


def _caught(call: object) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()  # type: ignore[operator]
    return list(caught)


# -- A: events that did not decode ---------------------------------------------------------------


def test_each_question_warns_once_of_events_that_did_not_decode(lake: Lake) -> None:
    # A replay without registry= cannot resolve the schema ids: no event decodes.
    raw = mk.replay_capture(lake.ws.path / "lake", progress=False, cache=False)
    assert raw.num_rows == 4 and raw.column("decode_error").null_count == 0
    questions = {
        "state_as_of": lambda: state_as_of(raw, lake.end),
        "changes": lambda: changes(raw, lake.t0, lake.end),
        "audit_trail": lambda: audit_trail(raw, ORDERS),
        "latest_aspect": lambda: latest_aspect(raw, ORDERS, "ownership"),
    }
    for name, ask in questions.items():
        caught = _caught(ask)
        assert [w.category for w in caught] == [mk.UndecodedEventWarning], name
        message = str(caught[0].message)
        assert message.startswith(f"{name}: 4 of 4 events did not decode"), message
        assert "unknown schema id" in message and "registry=" in message
    # aspects() documents that undecoded events have no rows; it says nothing itself.
    assert not _caught(lambda: aspects(raw))


def test_a_table_where_some_events_did_not_decode_counts_them(lake: Lake) -> None:
    raw = mk.replay_capture(lake.ws.path / "lake", progress=False, cache=False)
    mixed = pa.concat_tables([lake.events, raw.slice(0, 1).cast(lake.events.schema)])
    with pytest.warns(mk.UndecodedEventWarning, match="1 of 5 events did not decode"):
        state = state_as_of(mixed, lake.end)
    assert state.num_rows == state_as_of(lake.events, lake.end).num_rows


def test_the_most_common_reason_of_reasons_as_common_is_the_first_in_text_order(
    lake: Lake,
) -> None:
    # NOTE: not the first in the table: a Spark DataFrame has no order, and both paths must agree.
    raw = mk.replay_capture(lake.ws.path / "lake", progress=False, cache=False)
    first = pc.is_in(raw["sequence_number"], pa.array([0, 3], pa.int64()))
    reasons = pc.if_else(first, "b: first written", "a: later")
    raw = raw.set_column(raw.schema.get_field_index("decode_error"), "decode_error", reasons)
    with pytest.warns(mk.UndecodedEventWarning) as caught:
        state_as_of(raw, lake.end)
    message = str(caught[0].message)
    assert "4 of 4 events did not decode" in message
    assert "most common reason, 2 of them: a: later" in message
    # Not an unknown schema id: the advice is where to see them.
    assert "filter on decode_error" in message


def test_an_input_error_comes_without_the_warning_of_undecoded_events(lake: Lake) -> None:
    # NOTE: filterwarnings = error: a warning given before the check would be raised instead.
    raw = mk.replay_capture(lake.ws.path / "lake", progress=False, cache=False)
    i = raw.schema.get_field_index("enqueued_time")
    as_text = raw.set_column(i, "enqueued_time", pc.cast(raw["enqueued_time"], pa.string()))
    for ask in (
        lambda: state_as_of(as_text, lake.end),
        lambda: changes(as_text, lake.t0, lake.end),
        lambda: audit_trail(as_text, ORDERS),
    ):
        with pytest.raises(HistoryInputError, match="'enqueued_time' column must hold"):
            ask()
    with pytest.raises(HistoryInputError, match="did you mean 'ownership'"):
        latest_aspect(raw, ORDERS, "owner")
    with pytest.raises(HistoryInputError, match="did you mean 'ownership'"):
        audit_trail(raw, ORDERS, aspect="owner")
    with pytest.raises(HistoryInputError, match="as_of must be a time"):
        latest_aspect(raw, ORDERS, "ownership", as_of=pd.NaT)


# -- B: a replay that started late ---------------------------------------------------------------


def test_a_replay_started_after_the_lake_began_records_its_start(
    lake: Lake, tmp_path: Path
) -> None:
    part = lake.ws.replay(lake.t1, progress=False)
    assert replay_start(part) == lake.t1
    assert replay_start(lake.events) is None
    # A start before the lake's first event leaves nothing out: nothing recorded, no warning.
    early = lake.ws.replay(lake.t0 - timedelta(days=30), progress=False)
    assert replay_start(early) is None
    state_as_of(early, lake.end)
    changes(early, lake.t1, lake.end)
    # The record survives a Parquet file and the aspects table.
    pq.write_table(part, tmp_path / "part.parquet")
    assert replay_start(pq.read_table(tmp_path / "part.parquet")) == lake.t1
    assert replay_start(aspects(part)) == lake.t1


def test_changes_and_state_of_a_replay_started_late_warn(lake: Lake, tmp_path: Path) -> None:
    part = lake.ws.replay(lake.t1, progress=False)
    with pytest.warns(mk.PartialHistoryWarning, match="replayed from 2026-03-03") as caught:
        window = changes(part, lake.t1, lake.end)
    assert len(caught) == 1 and "'added'" in str(caught[0].message)
    # Day 1's ownership had a value before: the table cannot know it, so it reads as added.
    assert dict(zip(window["aspect"].to_pylist(), window["change"].to_pylist(), strict=True))[
        "ownership"
    ] == ("added")
    with pytest.warns(mk.PartialHistoryWarning, match="before it are missing"):
        state_as_of(part, lake.end)
    pq.write_table(part, tmp_path / "part.parquet")
    with pytest.warns(mk.PartialHistoryWarning):
        changes(tmp_path / "part.parquet", lake.t1, lake.end)
    with pytest.warns(mk.PartialHistoryWarning):
        changes(aspects(part), lake.t1, lake.end)
    # A window opened after the replay's start whose every change has its value from before is
    # whole: no warning (filterwarnings = error).
    later = changes(part, lake.t2, lake.end)
    assert later["change"].to_pylist() == ["changed"]
    # The whole replay answers without a warning, and rightly.
    full = changes(lake.events, lake.t1, lake.end)
    assert set(full["change"].to_pylist()) == {"changed"}


# -- C: times outside the range of a nanosecond column -------------------------------------------


def test_times_past_a_nanosecond_column_range_are_before_or_after_everything(lake: Lake) -> None:
    ns = pa.timestamp("ns", tz="UTC")
    i = lake.events.schema.get_field_index("enqueued_time")
    events_ns = lake.events.set_column(
        i, pa.field("enqueued_time", ns, nullable=False), lake.events["enqueued_time"].cast(ns)
    )
    assert state_as_of(events_ns, "9999-12-31").num_rows == 3
    assert changes(events_ns, "0001-01-01", "9999-12-31").num_rows == 3
    assert state_as_of(events_ns, "1000-01-01").num_rows == 0
    column = events_ns["enqueued_time"]
    assert time_scalar(datetime(9999, 12, 31, tzinfo=UTC), column).value == 2**63 - 1
    assert time_scalar(datetime(1, 1, 1, tzinfo=UTC), column, round_up=True).value == -(2**63)


def test_times_whose_utc_is_past_what_a_datetime_holds_are_before_or_after_everything(
    lake: Lake,
) -> None:
    # In UTC these are in year 10000 and year 0: no datetime holds them.
    assert state_as_of(lake.events, "9999-12-31T23:00:00-05:00").num_rows == 3
    assert changes(lake.events, "0001-01-01T00:00:00+01:00", "9999-12-31").num_rows == 3
    assert state_as_of(lake.events, "0001-01-01T00:00:00+01:00").num_rows == 0
    assert latest_aspect(lake.events, ORDERS, "ownership", as_of="0001-01-01T00:00+01:00") is None


# -- D: tables the questions take ----------------------------------------------------------------


def test_the_questions_take_an_audit_trail_and_a_narrowed_aspects_table(lake: Lake) -> None:
    trail = audit_trail(lake.events, ORDERS)
    expected = changes(lake.events, lake.t0, lake.end).filter(
        pc.equal(changes(lake.events, lake.t0, lake.end)["urn"], ORDERS)
    )
    assert changes(trail, lake.t0, lake.end).equals(expected)
    assert audit_trail(trail, ORDERS).equals(trail)
    table = aspects(lake.events)
    narrowed = table.drop_columns(["platform", "entity_type", "message_id", "emitted_time"])
    assert changes(narrowed, lake.t0, lake.end)["platform"].to_pylist() == [
        "hive",
        "hive",
        "snowflake",
    ]
    again = audit_trail(narrowed, ORDERS)
    assert again["entity_type"].to_pylist() == ["dataset"] * 4
    assert again["message_id"].null_count == 4
    assert again["value"].equals(trail["value"])


# -- E: times that are not times -----------------------------------------------------------------


def test_a_missing_time_or_a_text_time_column_is_a_history_input_error(lake: Lake) -> None:
    with pytest.raises(HistoryInputError, match="when must be a time, not a missing one"):
        state_as_of(lake.events, pd.NaT)
    with pytest.raises(HistoryInputError, match="start must be a time"):
        changes(lake.events, pd.NaT, pd.NaT)
    with pytest.raises(HistoryInputError, match="as_of must be a time"):
        latest_aspect(lake.events, ORDERS, "ownership", as_of=pd.NaT)
    i = lake.events.schema.get_field_index("enqueued_time")
    as_text = lake.events.set_column(
        i, "enqueued_time", pc.cast(lake.events["enqueued_time"], pa.string())
    )
    with pytest.raises(HistoryInputError, match="'enqueued_time' column must hold timestamps"):
        state_as_of(as_text, lake.end)
    # audit_trail judges late writes on those times: text, or numbers, are refused as well.
    as_numbers = lake.events.set_column(
        i, "enqueued_time", pc.cast(lake.events["enqueued_time"], pa.int64())
    )
    for table, kind in ((as_text, "string"), (as_numbers, "int64")):
        with pytest.raises(HistoryInputError, match=f"must hold timestamps .*not {kind}"):
            audit_trail(table, ORDERS)


def test_a_dataframe_is_refused_saying_what_to_pass_instead(lake: Lake) -> None:
    frame = lake.events.to_pandas(types_mapper=pd.ArrowDtype)
    for ask in (
        lambda: state_as_of(frame, lake.end),
        lambda: changes(frame, lake.t0, lake.end),
        lambda: audit_trail(frame, ORDERS),
    ):
        with pytest.raises(HistoryInputError, match="got DataFrame") as raised:
            ask()
        assert "pa.Table.from_pandas(df, preserve_index=False)" in str(raised.value)
    # What the message says to pass answers as the replay's table does.
    table = pa.Table.from_pandas(frame, preserve_index=False)
    assert state_as_of(table, lake.end).equals(state_as_of(lake.events, lake.end))


# -- F: aspect names -----------------------------------------------------------------------------


def test_a_mistyped_aspect_name_is_refused_with_the_closest_one(lake: Lake) -> None:
    for wrong in ("owner", "Ownershp"):
        with pytest.raises(HistoryInputError, match="did you mean 'ownership'") as raised:
            latest_aspect(lake.events, ORDERS, wrong)
        assert "globalTags" in str(raised.value)  # the known aspects are listed
    with pytest.raises(HistoryInputError, match=r"'owners'.*did you mean 'ownership'"):
        audit_trail(lake.events, ORDERS, aspect="owners")
    with pytest.raises(HistoryInputError, match="did you mean 'globalTags'"):
        latest_aspect(aspects(lake.events), ORDERS, "globaltag")
    # Aspects the schema has, under any of their names, with no write: None / no rows.
    for name in ("datasetDeprecation", "DatasetDeprecation", "status"):
        assert latest_aspect(lake.events, ORDERS, name) is None
        assert audit_trail(lake.events, ORDERS, aspect=name).num_rows == 0
    full = "com.linkedin.pegasus2avro.common.Ownership"
    assert latest_aspect(lake.events, ORDERS, full) == latest_aspect(
        lake.events, ORDERS, "Ownership"
    )
    assert latest_aspect(lake.events, CUSTOMERS, "ownership") is None


# -- which write is where, without the values ------------------------------------------------------


def test_without_values_the_same_rows_and_columns_but_value(lake: Lake) -> None:
    """aspects(values=False) and state_as_of(values=False): the same answer less its nested
    values (which a caller looks up by event_index and aspect_index)."""
    h = lake
    h.ws.emit(mk.mce(CUSTOMERS, [A.status(True)]))
    events = h.ws.replay(progress=False)
    full = mk.history.aspects(events)
    bare = mk.history.aspects(events, values=False)
    assert bare.equals(full.drop_columns(["value"]))
    for when in (h.t0, h.t1, h.end + timedelta(days=1)):
        for removed in (False, True):
            want = mk.history.state_as_of(events, when, include_removed=removed)
            want = want.drop_columns(["value"])
            assert mk.history.state_as_of(
                events, when, include_removed=removed, values=False
            ).equals(want)
            assert mk.history.state_as_of(bare, when, include_removed=removed, values=False).equals(
                want
            )
            assert mk.history.state_as_of(full, when, include_removed=removed, values=False).equals(
                want
            )
    # Each write's value is where the two indexes say.
    state = mk.history.state_as_of(events, h.end, values=False)
    values = mk.history.state_as_of(events, h.end)
    for row, value in zip(state.to_pylist(), values.column("value").to_pylist(), strict=True):
        written = mk.history.aspects(events.slice(row["event_index"], 1))
        at = written.column("aspect_index").to_pylist().index(row["aspect_index"])
        assert written.column("value")[at].as_py() == value


def test_a_question_that_needs_the_values_says_they_are_missing(lake: Lake) -> None:
    bare = mk.history.aspects(lake.events, values=False)
    with pytest.raises(mk.history.MissingColumnError, match="value"):
        mk.history.changes(bare, lake.t0, lake.end)
    with pytest.raises(mk.history.MissingColumnError, match="value"):
        mk.history.audit_trail(bare, ORDERS)
    with pytest.raises(mk.history.MissingColumnError, match="value"):
        mk.history.state_as_of(bare, lake.end)
    with pytest.raises(mk.ConfigurationError, match="values= takes True or False"):
        mk.history.aspects(lake.events, values="no")
