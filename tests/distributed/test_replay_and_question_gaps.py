"""What a partial replay records reaches every table the Spark questions take, and the
distributed replays take the inputs a Spark or Dask user passes as the local replay does.

- The aspects DataFrame the questions explode a replay into (``mk.history.aspects(df)``, with
  or without its values), and a replay DataFrame without its ``capture_file`` column, keep a
  ``start=`` that left events of the lake out: the questions asked of them warn as the local
  ones do of the same tables (they warned of nothing).
- ``spark_replay`` and ``dask_replay`` with ``dedup=False`` (no plan pass) record a start inside
  a Capture file, as the local replay does (only a listing told, and it cannot).
- A ``file:`` URI (Spark's spelling of a local path) is a location; ``mk.history.aspects`` takes
  a Spark DataFrame and ``latest_aspect`` says what to ask instead.
- Events whose schema id is known but whose body does not decode are warned of as locally.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.capture import append_events, capture_path
from metaverse_kit.distributed import dask_replay, spark_replay
from metaverse_kit.history import HistoryInputError, aspects, changes, latest_aspect, state_as_of
from metaverse_kit.history.replay import replay_start
from tests.conftest import SimClock
from tests.distributed.conftest import assert_same_table, dask_rows, spark_arrow, spark_rows

A = mk.aspects
ORDERS = mk.make_dataset_urn("hive", "sales.orders")
T0 = datetime(2026, 3, 2, 8, 0, 10, tzinfo=UTC)


@dataclass
class History:
    """Two writes of ORDERS 20 s apart (one Capture file), a third a day later (another)."""

    ws: mk.Workspace
    lake: Path
    #: Between the first file's two events: only reading that file tells what it left out.
    inside: datetime
    #: After the first file: the listing tells.
    later: datetime
    end: datetime


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    clock = SimClock(T0)
    with mk.connect(path=tmp_path_factory.mktemp("gaps") / "ws", clock=clock) as ws:
        ws.emit(mk.mce(ORDERS, [A.ownership(["jdoe"]), A.global_tags(["Raw"])]))
        clock.advance(seconds=20)
        ws.emit(mk.mce(ORDERS, [A.global_tags(["Silver"])]))
        later = clock.advance(days=1)
        ws.emit(mk.mce(ORDERS, [A.global_tags(["Gold"])]))
        end = clock.advance(hours=1)
        lake = Path(ws.path or ".", "lake")
        assert len(list(lake.rglob("*.avro"))) == 2
        yield History(ws, lake, T0 + timedelta(seconds=10), later, end)


def _warned(ask: Callable[[], Any]) -> list[str]:
    """The messages of the warnings of this toolkit ``ask`` gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ask()
    return [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if issubclass(w.category, mk.MetaverseWarning)
    ]


def _tables(events: Any, drop: Callable[[Any, str], Any]) -> dict[str, Any]:
    """The tables a question takes that are made from one replay's table ``events``."""
    return {
        "events": events,
        "aspects": aspects(events),
        "aspects without values": aspects(events, values=False),
        "events without capture_file": drop(events, "capture_file"),
    }


@pytest.mark.parametrize("start", ["inside", "later", None])
def test_every_table_made_from_a_partial_spark_replay_warns_as_the_local_one(
    spark: Any, history: History, start: str | None
) -> None:
    h = history
    when = None if start is None else getattr(h, start)
    local = h.ws.replay(start=when, progress=False, cache=False)
    df = spark_replay(spark, h.lake, registry=h.ws.registry, start=when).cache()
    assert replay_start(df) == replay_start(local) == when
    questions: dict[str, Callable[[Any], Any]] = {
        "state_as_of": lambda t: state_as_of(t, h.end),
        "state_as_of without values": lambda t: state_as_of(t, h.end, values=False),
        "changes": lambda t: changes(t, T0, h.end),
    }
    local_tables = _tables(local, lambda t, c: t.drop_columns([c]))
    spark_tables = _tables(df, lambda t, c: t.drop(c))
    # A replay DataFrame that records its start on capture_file alone (as spark_replay did
    # before, kept so by a Parquet file Spark wrote): its aspects carry it on.
    only_on_file = df.withMetadata("enqueued_time", {})
    local_tables["aspects of a replay recorded on capture_file"] = local_tables["aspects"]
    spark_tables["aspects of a replay recorded on capture_file"] = aspects(only_on_file)
    for table, local_table in local_tables.items():
        # mk.history.replay_start read capture_file alone: None for a Spark aspects DataFrame.
        assert replay_start(spark_tables[table]) == replay_start(local_table), table
        for name, ask in questions.items():
            if table == "aspects without values" and name != "state_as_of without values":
                continue  # the others need the values (both paths say the column is missing)
            if table not in ("events", "aspects without values") and name != "state_as_of":
                # PERF: each question is a Spark job of a few seconds; every question reads the
                # start the same way (warn_partial), so one question a table tells the table.
                continue
            if start != "inside" and table != "events":
                # PERF: the other starts differ in how spark_replay finds the start (the
                # listing; none), which replay_start above checks on every table.
                continue
            expected = _warned(lambda ask=ask, t=local_table: ask(t))
            got = _warned(lambda ask=ask, t=spark_tables[table]: ask(t))
            assert got == expected, (table, name)
            assert len(got) == (start is not None), (table, name, got)
            assert all(g.startswith("PartialHistoryWarning") for g in got)


def test_mk_history_aspects_takes_a_spark_dataframe(spark: Any, history: History) -> None:
    h = history
    local = h.ws.replay(progress=False, cache=False)
    df = spark_replay(spark, h.lake, registry=h.ws.registry)
    keys = [("sequence_number", "ascending"), ("aspect_index", "ascending")]
    for values in (True, False):
        expected = aspects(local, values=values).drop_columns(["event_index"]).sort_by(keys)
        got = spark_arrow(aspects(df, values=values)).sort_by(keys)
        assert got.column_names == expected.column_names
        assert got.equals(expected.cast(got.schema))
    # Locally an aspects table without values is taken by state_as_of(values=False): on Spark too.
    state = state_as_of(aspects(df, values=False), h.end, values=False)
    expected = state_as_of(aspects(local, values=False), h.end, values=False)
    got = spark_arrow(state)
    assert got.equals(expected.drop_columns(["event_index"]).cast(got.schema))


def test_latest_aspect_of_a_spark_dataframe_says_what_to_ask_instead(
    spark: Any, history: History
) -> None:
    df = spark_replay(spark, history.lake, registry=history.ws.registry)
    with pytest.raises(HistoryInputError, match=r"no pyspark DataFrame.*state_as_of"):
        latest_aspect(df, ORDERS, "globalTags")


def _on_dask(location: Any, **options: Any) -> Any:
    import dask

    with dask.config.set(scheduler="synchronous"):
        return dask_replay(location, **options)


@pytest.mark.parametrize("engine", ["spark", "dask"])
def test_a_replay_without_a_plan_pass_records_a_start_inside_a_file(
    spark: Any, history: History, engine: str
) -> None:
    """dedup=False (with on_bad_file="raise") runs no plan pass; the few files whose window
    began before start= are scanned, as the local replay reads them."""
    h = history
    run = {
        "spark": lambda **kw: spark_replay(spark, h.lake, registry=h.ws.registry, **kw),
        "dask": lambda **kw: _on_dask(h.lake, registry=h.ws.registry, **kw),
    }[engine]
    for when in (h.inside, h.later, T0 - timedelta(hours=1), None):
        local = h.ws.replay(start=when, dedup=False, progress=False, cache=False)
        got = run(start=when, dedup=False)
        expected = None if when is None or when < T0 else when
        assert replay_start(got) == replay_start(local) == expected, when
    df = spark_replay(spark, h.lake, registry=h.ws.registry, start=h.inside, dedup=False)
    with pytest.warns(mk.PartialHistoryWarning, match="replayed from"):
        state_as_of(df, h.end)


@pytest.mark.parametrize("engine", ["spark", "dask"])
def test_a_file_uri_is_the_local_path_it_names(spark: Any, history: History, engine: str) -> None:
    h = history
    local = mk.replay_capture(h.lake, registry=h.ws.registry, progress=False, cache=False)
    files = sorted(h.lake.rglob("*.avro"))
    replay, rows = {
        "spark": (lambda loc: spark_replay(spark, loc, registry=h.ws.registry), spark_rows),
        "dask": (lambda loc: _on_dask(loc, registry=h.ws.registry), dask_rows),
    }[engine]
    for location in (
        f"file:{h.lake}",
        f"file://{h.lake}/",
        f"file://localhost{h.lake}",
        [f"file://{f}" for f in files],
    ):
        got: pa.Table = rows(replay(location))
        assert_same_table(local, got)
    with pytest.raises(mk.ConfigurationError, match="not a path on this machine"):
        replay(f"file://elsewhere{h.lake}")


def test_an_event_of_a_known_schema_id_that_does_not_decode_is_warned_of_as_locally(
    spark: Any, tmp_path: Path
) -> None:
    """The count of undecoded events comes from the decoded rows: the plan pass, which reads
    no body, would count none here (the event's schema id is one the schemas know)."""
    clock = SimClock(T0)
    with mk.connect(path=tmp_path / "ws", clock=clock) as ws:
        ws.emit(mk.mce(ORDERS, [A.global_tags(["Raw"])]))
        content_type = ws.replay(progress=False, cache=False)["content_type"][0].as_py()
        lake = Path(ws.path or ".", "lake")
        cut = lake / capture_path("metaverse-local", "metaverse", "1", T0 + timedelta(hours=1))
        cut.parent.mkdir(parents=True, exist_ok=True)
        cut.write_bytes(
            append_events(
                None,
                [
                    {
                        "SequenceNumber": 0,
                        "Offset": "0",
                        "EnqueuedTimeUtc": "3/2/2026 9:00:00 AM",
                        "SystemProperties": {"content-type": content_type},
                        "Properties": {},
                        "Body": b"\x02\xff\xff\xff",  # a body cut short
                    }
                ],
            )
        )
        local = mk.replay_capture(lake, registry=ws.registry, progress=False, cache=False)
        assert local["decode_error"].null_count == 1
        df = spark_replay(spark, lake, registry=ws.registry)
        when = T0 + timedelta(days=1)
        expected = _warned(lambda: state_as_of(local, when))
        assert _warned(lambda: state_as_of(df, when)) == expected
        assert len(expected) == 1 and "1 of 2 events did not decode" in expected[0]


@pytest.mark.parametrize("engine", ["spark", "dask"])
def test_a_lake_in_a_folder_whose_name_holds_a_percent_escape(
    spark: Any, history: History, engine: str, tmp_path: Path
) -> None:
    """Spark names local files as they are: ``lake%20copy`` is not ``lake copy`` (the files
    were taken for files the driver never listed); a ``file:`` URI of it is read so too."""
    copy = tmp_path / "lake%20copy%2F?"
    shutil.copytree(history.lake, copy)
    local = mk.replay_capture(copy, registry=history.ws.registry, progress=False, cache=False)
    assert local.num_rows == 3
    replay, rows = {
        "spark": (lambda loc: spark_replay(spark, loc, registry=history.ws.registry), spark_rows),
        "dask": (lambda loc: _on_dask(loc, registry=history.ws.registry), dask_rows),
    }[engine]
    for location in (copy, f"file://{copy}"):
        assert_same_table(local, rows(replay(location)))


def test_a_file_the_engine_names_with_percent_escapes_is_the_listed_file(tmp_path: Path) -> None:
    """For an engine that %-escapes the local paths it names (Spark 3.5 and 4.x do not)."""
    from urllib.parse import quote

    from metaverse_kit.capture import CaptureFile
    from metaverse_kit.distributed._tasks import FileEntry, TaskSpec, engine_key

    listed = CaptureFile(path=str(tmp_path / "lake copy" / "0.avro"), size=1, version="1")
    spec = TaskSpec(reader=None, schemas={}, files={engine_key(listed.path): FileEntry(listed, 0)})
    assert spec.entry(f"file://{listed.path}").file == listed
    assert spec.entry(f"file:{quote(listed.path)}").file == listed
    with pytest.raises(mk.CaptureFileError, match="not listed by the driver"):
        spec.entry(f"file:{tmp_path}/elsewhere.avro")
