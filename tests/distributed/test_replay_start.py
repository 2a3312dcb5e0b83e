"""spark_replay and dask_replay record a start= that left events of the lake out, as the local
replay does (``replay_start``), so that the history questions warn that their answer lacks
what came before it: files wholly before the start (pruned unread, told by the listing), and a
file that holds events on both sides of it (told by the plan pass)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import metaverse_kit as mk
from metaverse_kit.distributed import dask_replay, spark_replay
from metaverse_kit.history.replay import replay_start
from tests.conftest import SimClock

URN = mk.make_dataset_urn("hive", "sales.orders")
T0 = datetime(2026, 3, 2, 8, 0, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def one_window(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mk.Workspace]:
    """Two events of one entity 20 s apart: one Capture file holds both."""
    clock = SimClock(T0)
    with mk.connect(path=tmp_path_factory.mktemp("start") / "ws", clock=clock) as ws:
        ws.emit(mk.mce(URN, [mk.aspects.global_tags(["Raw"])]))
        clock.advance(seconds=20)
        ws.emit(mk.mce(URN, [mk.aspects.global_tags(["Gold"])]))
        files = list(Path(ws.path or ".", "lake").rglob("*.avro"))
        assert len(files) == 1
        yield ws


def _engines(spark: Any) -> dict[str, Any]:
    import dask

    def on_dask(ws: mk.Workspace, **kw: Any) -> Any:
        with dask.config.set(scheduler="synchronous"):
            return dask_replay(ws.lake, registry=ws.registry, **kw)

    return {
        "spark": lambda ws, **kw: spark_replay(spark, ws.lake, registry=ws.registry, **kw),
        "dask": on_dask,
    }


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        # Between the two events of the one file: the plan pass finds an event before it.
        (T0 + timedelta(seconds=10), T0 + timedelta(seconds=10)),
        # Before the lake's first event: nothing is left out, nothing is recorded.
        (T0 - timedelta(hours=1), None),
        (None, None),
    ],
)
@pytest.mark.parametrize("engine", ["spark", "dask"])
def test_a_start_inside_a_file_is_recorded_as_the_local_replay_records_it(
    spark: Any, one_window: mk.Workspace, engine: str, start: datetime | None, expected: Any
) -> None:
    local = one_window.replay(start=start, progress=False, cache=False)
    got = _engines(spark)[engine](one_window, start=start)
    assert replay_start(local) == expected
    assert replay_start(got) == expected


def test_without_a_plan_pass_the_listing_still_tells(tmp_path: Path, spark: Any) -> None:
    """dedup=False (with on_bad_file="raise") runs no plan pass: files pruned unread still say
    the replay is partial."""
    clock = SimClock(T0)
    with mk.connect(path=tmp_path / "ws", clock=clock) as ws:
        ws.emit(mk.mce(URN, [mk.aspects.global_tags(["Raw"])]))
        later = clock.advance(days=1)
        ws.emit(mk.mce(URN, [mk.aspects.global_tags(["Gold"])]))
        df = spark_replay(spark, ws.lake, registry=ws.registry, start=later, dedup=False)
        assert replay_start(df) == later
        assert replay_start(ws.replay(start=later, progress=False, cache=False)) == later
