"""The history questions asked of a Spark DataFrame give the local answers, as DataFrames."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.distributed import spark_replay
from metaverse_kit.distributed.spark import without_pandas_warning
from tests.distributed.conftest import Lake


@pytest.fixture(scope="module")
def histories(spark: Any, demo_lake: Lake) -> tuple[pa.Table, Any]:
    """The demo history replayed locally (a table) and on Spark (a DataFrame)."""
    local = mk.replay_capture(demo_lake.root, registry=demo_lake.registry, cache=False)
    return local, spark_replay(spark, demo_lake.root, registry=demo_lake.registry).cache()


def _same(local: pa.Table, df: Any) -> None:
    assert type(df).__name__ == "DataFrame"
    with without_pandas_warning():
        got = df.toArrow()
    if "event_index" in local.column_names:
        local = local.drop_columns(["event_index"])
    assert got.column_names == local.column_names
    expected = local.cast(got.schema)
    for name in got.column_names:
        assert got.column(name).equals(expected.column(name)), name


@pytest.mark.parametrize(
    ("when", "include_removed"),
    [("2026-01-20T00:00:00Z", False), ("2026-03-01", True)],
)
def test_state_as_of(histories: tuple[pa.Table, Any], when: str, include_removed: bool) -> None:
    local, df = histories
    expected = mk.history.state_as_of(local, when, include_removed=include_removed)
    assert expected.num_rows > 0
    _same(expected, mk.history.state_as_of(df, when, include_removed=include_removed))


def test_audit_trail_of_the_busiest_entity(histories: tuple[pa.Table, Any]) -> None:
    local, df = histories
    rows = mk.history.aspects(local)
    counts = rows.group_by("urn").aggregate([("aspect", "count")])
    urn = counts.sort_by([("aspect_count", "descending")])["urn"][0].as_py()
    expected = mk.history.audit_trail(local, urn)
    assert expected.num_rows > 3
    assert any(expected["changed_fields"].to_pylist())
    _same(expected, mk.history.audit_trail(df, urn))
    ownership = mk.history.audit_trail(local, urn, aspect="ownership")
    _same(ownership, mk.history.audit_trail(df, urn, aspect="ownership"))


@pytest.mark.parametrize("include_unchanged", [False, True])
def test_changes_between_two_times(
    histories: tuple[pa.Table, Any], include_unchanged: bool
) -> None:
    local, df = histories
    start, end = "2026-01-15T00:00:00Z", "2026-02-10T00:00:00Z"
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
