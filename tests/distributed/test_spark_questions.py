"""The history questions asked of a Spark DataFrame give the local answers, as DataFrames."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.demo import emit_sample_history
from metaverse_kit.distributed import spark_export, spark_replay
from metaverse_kit.errors import LateEventWarning
from metaverse_kit.history.export import EVENT_DATE, with_event_date
from tests.conftest import SimClock
from tests.distributed.conftest import spark_arrow

ORDERS = mk.make_dataset_urn("hive", "db.late_orders")


@pytest.fixture(scope="module")
def late_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The demo history plus a late write: an ownership emitted while the hub was down,
    retried after a newer one (so write order and arrival order differ)."""
    clock = SimClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    home = tmp_path_factory.mktemp("late") / "ws"
    with mk.connect(path=home, clock=clock) as ws:
        emit_sample_history(ws, start=datetime(2026, 1, 5, tzinfo=UTC))
        # A naive clock makes the local hub refuse every send, as an unreachable hub would.
        ws.hub.clock = lambda: datetime(2026, 3, 2, 9, 0)  # type: ignore[attr-defined]
        with pytest.raises(mk.ConfigurationError):
            ws.emit(mk.mce(ORDERS, [mk.aspects.ownership(["alice"])]))
        time.sleep(0.005)
        ws.hub.clock = clock  # type: ignore[attr-defined]
        ws.emit(mk.mce(ORDERS, [mk.aspects.ownership(["bob"])]))
        clock.advance(minutes=10)
        with pytest.warns(LateEventWarning):
            ws.outbox.retry()
        yield ws


@pytest.fixture(scope="module")
def histories(spark: Any, late_history: Any) -> tuple[pa.Table, Any]:
    """The history replayed locally (a table) and on Spark (a DataFrame)."""
    ws = late_history
    local = ws.replay(cache=False, progress=False)
    return local, spark_replay(spark, ws.lake, registry=ws.registry).cache()


def _same(local: pa.Table, df: Any) -> None:
    assert type(df).__name__ == "DataFrame"
    got = spark_arrow(df)
    if "event_index" in local.column_names:
        local = local.drop_columns(["event_index"])
    assert got.column_names == local.column_names
    expected = local.cast(got.schema)
    for name in got.column_names:
        assert got.column(name).equals(expected.column(name)), name


@pytest.mark.parametrize(
    ("when", "include_removed"),
    [("2026-01-20T00:00:00Z", False), ("2026-03-05", True)],
)
def test_state_as_of(histories: tuple[pa.Table, Any], when: str, include_removed: bool) -> None:
    local, df = histories
    expected = mk.history.state_as_of(local, when, include_removed=include_removed)
    assert expected.num_rows > 0
    _same(expected, mk.history.state_as_of(df, when, include_removed=include_removed))


def test_audit_trails(histories: tuple[pa.Table, Any]) -> None:
    local, df = histories
    rows = mk.history.aspects(local)
    counts = rows.group_by("urn").aggregate([("aspect", "count")])
    urn = counts.sort_by([("aspect_count", "descending")])["urn"][0].as_py()
    expected = mk.history.audit_trail(local, urn)
    assert expected.num_rows > 3
    assert any(expected["changed_fields"].to_pylist())
    _same(expected, mk.history.audit_trail(df, urn))
    # The late write comes first (it was made first) and is marked late.
    late = mk.history.audit_trail(local, ORDERS, aspect="ownership")
    assert late["late"].to_pylist() == [True, False]
    _same(late, mk.history.audit_trail(df, ORDERS, aspect="ownership"))


@pytest.mark.parametrize("include_unchanged", [False, True])
def test_changes_between_two_times(
    histories: tuple[pa.Table, Any], include_unchanged: bool
) -> None:
    local, df = histories
    start, end = "2026-01-15T00:00:00Z", "2026-03-02T08:20:00Z"
    expected = mk.history.changes(local, start, end, include_unchanged=include_unchanged)
    kinds = set(expected["change"].to_pylist())
    assert {"added", "changed"} <= kinds
    _same(expected, mk.history.changes(df, start, end, include_unchanged=include_unchanged))


def test_bad_input_is_refused_before_spark_runs(histories: tuple[pa.Table, Any]) -> None:
    _, df = histories
    with pytest.raises(mk.history.HistoryInputError, match="after end"):
        mk.history.changes(df, "2026-02-01", "2026-01-01")
    with pytest.raises(mk.history.HistoryInputError, match="must be a URN"):
        mk.history.audit_trail(df, "jdoe")
    with pytest.raises(mk.history.MissingColumnError, match="proposedSnapshot"):
        mk.history.state_as_of(df.drop("proposedSnapshot"), "2026-02-01")


def test_answers_do_not_depend_on_the_session_time_zone(
    spark: Any, late_history: Any, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    ws = late_history
    local = ws.replay(cache=False, progress=False)

    # A moment whose answer differs from those 11 hours before and after it, so a time read in
    # the session's zone (UTC-11 below) instead of as an instant would be seen.
    def rows(seconds: float) -> int:
        return mk.history.state_as_of(local, datetime.fromtimestamp(seconds, UTC)).num_rows

    moment = next(
        datetime.fromtimestamp(t, UTC)
        for t in sorted({t.timestamp() for t in local["enqueued_time"].to_pylist()})
        if rows(t) not in (rows(t - 11 * 3600), rows(t + 11 * 3600))
    )
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "Pacific/Pago_Pago")  # UTC-11, no summer time
    try:
        df = spark_replay(spark, ws.lake, registry=ws.registry).cache()
        _same(mk.history.state_as_of(local, moment), mk.history.state_as_of(df, moment))
        text = moment.isoformat()
        _same(
            mk.history.changes(local, "2026-01-01", text),
            mk.history.changes(df, "2026-01-01", text),
        )
        _same(
            mk.history.audit_trail(local, ORDERS, aspect="ownership"),
            mk.history.audit_trail(df, ORDERS, aspect="ownership"),
        )
        df.unpersist()
        # The export's event dates are UTC days, as the local export's, in any session zone.
        spark_export(spark, ws.lake, tmp_path / "history", registry=ws.registry)
        days = pq.read_table(tmp_path / "history").column(EVENT_DATE).cast(pa.string())
        expected = with_event_date(local).column(EVENT_DATE).cast(pa.string())
        assert sorted(days.to_pylist()) == sorted(expected.to_pylist())
        times = local["enqueued_time"].to_pylist()
        assert any((t - timedelta(hours=11)).date() != t.date() for t in times)
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)
