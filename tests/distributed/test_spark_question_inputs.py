"""The history questions asked of a Spark DataFrame check and warn as the local ones do, for the
same inputs: undecoded events, a replay recorded as started late, times outside a column's
range, missing or of the wrong type, narrowed tables and mistyped aspect names. The checks
run before any Spark job but the one that counts undecoded events, once per DataFrame."""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import metaverse_kit as mk
from metaverse_kit.distributed import spark_replay
from metaverse_kit.distributed.spark_questions import aspects as spark_aspects
from metaverse_kit.history import HistoryInputError, audit_trail, changes, state_as_of
from metaverse_kit.history.replay import REPLAY_START_KEY, replay_start
from tests.conftest import SimClock
from tests.distributed.conftest import spark_arrow

A = mk.aspects
ORDERS = mk.make_dataset_urn("hive", "sales.orders")
CUSTOMERS = mk.make_dataset_urn("snowflake", "crm.customers")


@dataclass
class History:
    """Three days of writes (ORDERS owned and tagged on day 0, re-owned on days 1 and 2),
    replayed locally and on Spark, with and without the registry."""

    ws: mk.Workspace
    t0: datetime
    t1: datetime
    t2: datetime
    end: datetime
    local: pa.Table
    df: Any
    raw_local: pa.Table
    raw: Any


@pytest.fixture(scope="module")
def history(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    clock = SimClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    with mk.connect(path=tmp_path_factory.mktemp("inputs") / "ws", clock=clock) as ws:
        t0 = clock.now
        ws.emit(mk.mce(ORDERS, [A.ownership(["jdoe"]), A.global_tags(["Raw"])]))
        ws.emit(mk.mce(CUSTOMERS, [A.global_tags(["PII"])]))
        t1 = clock.advance(days=1)
        ws.emit(mk.mce(ORDERS, [A.ownership(["jdoe", "mchen"])]))
        t2 = clock.advance(days=1)
        ws.emit(mk.mce(ORDERS, [A.ownership(["mchen"])]))
        end = clock.advance(hours=1)
        yield History(
            ws,
            t0,
            t1,
            t2,
            end,
            ws.replay(progress=False, cache=False),
            spark_replay(spark, ws.lake, registry=ws.registry).cache(),
            # A replay without registry= cannot resolve the schema ids: no event decodes.
            mk.replay_capture(ws.path / "lake", progress=False, cache=False),
            spark_replay(spark, ws.lake).cache(),
        )


@contextlib.contextmanager
def spark_jobs(spark: Any) -> Iterator[list[int]]:
    """The ids of the Spark jobs run in the block (filled in when it ends)."""
    context = spark.sparkContext
    group = f"question-inputs-{uuid.uuid4()}"
    context.setJobGroup(group, "jobs a question runs")
    found: list[int] = []
    try:
        yield found
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
        found.extend(context.statusTracker().getJobIdsForGroup(group))


def _warned(ask: Callable[[], Any]) -> tuple[Any, list[str]]:
    """What ``ask`` returned, and the messages of the warnings of this toolkit it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answer = ask()
    ours = [w for w in caught if issubclass(w.category, mk.MetaverseWarning)]
    return answer, [f"{w.category.__name__}: {w.message}" for w in ours]


def _rows(df: Any) -> pa.Table:
    return spark_arrow(df)


# -- A: events that did not decode ---------------------------------------------------------------


def test_each_question_warns_as_locally_of_events_that_did_not_decode(
    spark: Any, history: History
) -> None:
    h = history
    assert h.raw_local.column("decode_error").null_count == 0
    questions: dict[str, Callable[[Any], Any]] = {
        "state_as_of": lambda events: state_as_of(events, h.end),
        "changes": lambda events: changes(events, h.t0, h.end),
        "audit_trail": lambda events: audit_trail(events, ORDERS),
    }
    jobs: list[list[int]] = []
    for name, ask in questions.items():
        _, expected = _warned(lambda ask=ask: ask(h.raw_local))
        with spark_jobs(spark) as run:
            answer, got = _warned(lambda ask=ask: ask(h.raw))
        jobs.append(run)
        assert got == expected and len(got) == 1, name
        assert got[0].startswith(f"UndecodedEventWarning: {name}: 4 of 4 events"), got
        assert "registry=" in got[0]
    # PERF: one aggregate (a job per shuffle stage, with adaptive execution) counted the
    # undecoded events, for the first question; the others reused its count.
    assert jobs[0] and jobs[1:] == [[], []], jobs
    assert _rows(answer).num_rows == 0
    # A DataFrame whose events all decoded: no warning (filterwarnings = error).
    state_as_of(h.df, h.end)


def test_a_dataframe_where_some_events_did_not_decode_counts_them_as_locally(
    history: History,
) -> None:
    h = history
    mixed = h.df.unionByName(h.raw.limit(1))
    with pytest.warns(mk.UndecodedEventWarning, match="1 of 5 events did not decode"):
        state = state_as_of(mixed, h.end)
    assert _rows(state).num_rows == _rows(state_as_of(h.df, h.end)).num_rows
    # The most common reason: of reasons as common, the first in text order (on both paths).
    first = pc.is_in(h.raw_local["sequence_number"], pa.array([0, 3], pa.int64()))
    local = h.raw_local.set_column(
        h.raw_local.schema.get_field_index("decode_error"),
        "decode_error",
        pc.if_else(first, "b: first written", "a: later"),
    )
    assert sorted(pc.value_counts(local["decode_error"]).field("counts").to_pylist()) == [2, 2]
    from pyspark.sql import functions as F

    df = h.raw.withColumn(
        "decode_error",
        F.when(F.col("sequence_number").isin(0, 3), "b: first written").otherwise("a: later"),
    )
    _, expected = _warned(lambda: state_as_of(local, h.end))
    _, got = _warned(lambda: state_as_of(df, h.end))
    assert got == expected
    assert "most common reason, 2 of them: a: later" in got[0]


# -- B: a replay recorded as started late --------------------------------------------------------


def _started_late(spark: Any, h: History) -> Any:
    """spark_replay(start=t1), with the start recorded as the local replay records it."""
    df = spark_replay(spark, h.ws.lake, registry=h.ws.registry, start=h.t1)
    recorded = {REPLAY_START_KEY.decode(): h.t1.isoformat()}
    return df.withMetadata("capture_file", recorded).cache()


def test_changes_and_state_of_a_replay_recorded_as_started_late_warn_as_locally(
    spark: Any, history: History
) -> None:
    h = history
    local = h.ws.replay(h.t1, progress=False, cache=False)
    assert replay_start(local) == h.t1
    part = _started_late(spark, h)
    assert replay_start(part) == h.t1
    for ask in (
        lambda events: state_as_of(events, h.end),
        lambda events: changes(events, h.t1, h.end),
    ):
        _, expected = _warned(lambda ask=ask: ask(local))
        _, got = _warned(lambda ask=ask: ask(part))
        assert got == expected and len(got) == 1
        assert got[0].startswith("PartialHistoryWarning")
    # A window opened after the start whose every change has its value from before is whole.
    later = changes(part, h.t2, h.end)
    assert _rows(later)["change"].to_pylist() == ["changed"]


def test_spark_replay_records_a_start_that_left_events_out(spark: Any, history: History) -> None:
    """Files wholly before start= are pruned unread: the listing says the replay is partial,
    and the questions warn of it as they do of the local replay."""
    df = spark_replay(spark, history.ws.lake, registry=history.ws.registry, start=history.t1)
    local = history.ws.replay(start=history.t1, progress=False, cache=False)
    assert replay_start(df) == replay_start(local) == history.t1
    with pytest.warns(mk.PartialHistoryWarning, match="replayed from"):
        state_as_of(df, history.end)


# -- C: times outside the range of every column --------------------------------------------------


def test_times_past_what_a_datetime_holds_are_before_or_after_everything(
    history: History,
) -> None:
    h = history
    assert _rows(state_as_of(h.df, "9999-12-31T23:00:00-05:00")).num_rows == 3
    assert _rows(changes(h.df, "0001-01-01T00:00:00+01:00", "9999-12-31")).num_rows == 3
    assert _rows(state_as_of(h.df, "0001-01-01T00:00:00+01:00")).num_rows == 0


# -- D: tables the questions take ----------------------------------------------------------------


def _without_event_index(table: pa.Table) -> pa.Table:
    if "event_index" in table.column_names:
        table = table.drop_columns(["event_index"])
    return table


def _same(local: pa.Table, df: Any, *, by: list[str] | None = None) -> None:
    """The same columns and rows (in that order, or sorted ``by`` these columns)."""
    got = _rows(df)
    local = _without_event_index(local)
    if by is not None:
        got, local = (t.sort_by([(c, "ascending") for c in by]) for t in (got, local))
    assert got.column_names == local.column_names
    expected = local.cast(got.schema)
    for name in got.column_names:
        assert got.column(name).equals(expected.column(name)), name


def test_the_questions_take_an_audit_trail_and_a_narrowed_aspects_dataframe(
    history: History,
) -> None:
    h = history
    trail = audit_trail(h.df, ORDERS)
    _same(audit_trail(h.local, ORDERS), trail)
    _same(changes(audit_trail(h.local, ORDERS), h.t0, h.end), changes(trail, h.t0, h.end))
    # NOTE: a trail does not say the position of two aspects of one event: by name on Spark.
    again = audit_trail(trail, ORDERS)
    _same(audit_trail(h.local, ORDERS), again, by=["sequence_number", "aspect"])
    assert _rows(again)["aspect"].to_pylist()[:2] == ["globalTags", "ownership"]
    _same(
        audit_trail(audit_trail(h.local, ORDERS), ORDERS, aspect="ownership"),
        audit_trail(trail, ORDERS, aspect="ownership"),
    )
    carried = ["platform", "entity_type", "message_id", "emitted_time"]
    narrowed_local = mk.history.aspects(h.local).drop_columns(carried)
    narrowed = spark_aspects(h.df).drop(*carried)
    window = changes(narrowed, h.t0, h.end)
    assert _rows(window)["platform"].to_pylist() == ["hive", "hive", "snowflake"]
    _same(changes(narrowed_local, h.t0, h.end), window)
    _same(state_as_of(narrowed_local, h.end), state_as_of(narrowed, h.end))
    again = _rows(audit_trail(narrowed, ORDERS))
    assert again["entity_type"].to_pylist() == ["dataset"] * 4
    assert again["message_id"].null_count == 4


# -- E: times that are not times -----------------------------------------------------------------


def test_a_missing_time_or_a_column_without_timestamps_is_refused_before_any_job(
    spark: Any, history: History
) -> None:
    from pyspark.sql import functions as F

    h = history
    as_text = h.raw.withColumn("enqueued_time", F.col("enqueued_time").cast("string"))
    as_numbers = h.df.withColumn("enqueued_time", F.col("enqueued_time").cast("long"))
    with spark_jobs(spark) as jobs:
        with pytest.raises(HistoryInputError, match="when must be a time, not a missing one"):
            state_as_of(h.df, pd.NaT)
        with pytest.raises(HistoryInputError, match="start must be a time"):
            changes(h.df, pd.NaT, h.end)
        # NOTE: raw's events did not decode: the error comes, not that warning.
        for ask in (
            lambda events: state_as_of(events, h.end),
            lambda events: changes(events, h.t0, h.end),
            lambda events: audit_trail(events, ORDERS),
        ):
            with pytest.raises(HistoryInputError, match="'enqueued_time' column must hold") as e:
                ask(as_text)
            assert "not string" in str(e.value) and ".cast('timestamp')" in str(e.value)
            with pytest.raises(HistoryInputError, match="not bigint"):
                ask(as_numbers)
    assert jobs == []


def test_a_time_column_without_a_zone_is_utc_whatever_the_session_zone(
    spark: Any, history: History
) -> None:
    from pyspark.sql import functions as F

    h = history
    # NOTE: made in the UTC session: the cast writes each instant's UTC wall time.
    naive = h.df.withColumn("enqueued_time", F.col("enqueued_time").cast("timestamp_ntz"))
    assert type(naive.schema["enqueued_time"].dataType).__name__ == "TimestampNTZType"
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "Pacific/Pago_Pago")  # UTC-11
    try:
        # An hour after day 1's write: 11 hours off, the answer would be the day before's.
        moment = h.t1.replace(hour=h.t1.hour + 1)
        _same(state_as_of(h.local, moment), state_as_of(naive, moment))
        _same(changes(h.local, h.t1, moment), changes(naive, h.t1, moment))
        assert _rows(changes(naive, h.t1, moment)).num_rows == 1
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)


# -- F: aspect names -----------------------------------------------------------------------------


def test_a_mistyped_aspect_name_is_refused_with_the_closest_one_before_any_job(
    spark: Any, history: History
) -> None:
    h = history
    with spark_jobs(spark) as jobs:
        for events in (h.local, h.df):
            with pytest.raises(HistoryInputError, match=r"'owners'.*did you mean 'ownership'") as e:
                audit_trail(events, ORDERS, aspect="owners")
            assert "globalTags" in str(e.value)
        with pytest.raises(HistoryInputError, match="aspect must be an aspect name"):
            audit_trail(h.df, ORDERS, aspect="")
        with pytest.raises(HistoryInputError, match="did you mean 'globalTags'"):
            audit_trail(spark_aspects(h.df), ORDERS, aspect="globaltag")
    assert jobs == []
    # Aspects the schema has, under any of their names, with no write: no rows.
    for name in ("datasetDeprecation", "DatasetDeprecation", "status"):
        assert _rows(audit_trail(h.df, ORDERS, aspect=name)).num_rows == 0
    full = "com.linkedin.pegasus2avro.common.Ownership"
    _same(audit_trail(h.local, ORDERS, aspect=full), audit_trail(h.df, ORDERS, aspect=full))
