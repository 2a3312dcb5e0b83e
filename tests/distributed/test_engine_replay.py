"""The replay on Spark and on Dask gives the local replay's table, file for file and row for row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.distributed import SkippedFilesWarning, dask_replay, spark_replay
from tests.distributed.conftest import Lake, assert_same_table, damaged_files, spark_rows

Replay = Callable[..., pa.Table]


@pytest.fixture(params=["spark", "dask-cluster"])
def replay(request: pytest.FixtureRequest) -> Replay:
    """Replay on one engine; the rows as an Arrow table sorted by partition and sequence."""
    if request.param == "spark":
        spark = request.getfixturevalue("spark")
        return lambda location, **kw: spark_rows(spark_replay(spark, location, **kw))
    request.getfixturevalue("dask_client")
    return dask_rows


def dask_rows(location: Any, **kw: Any) -> pa.Table:
    """The rows of :func:`dask_replay` as an Arrow table (the Dask scheduler in use)."""
    from tests.distributed.conftest import SORT_KEYS

    frame = dask_replay(location, **kw).compute()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table.sort_by(SORT_KEYS) if table.num_rows else table


def test_the_demo_history(replay: Replay, demo_lake: Lake) -> None:
    local = mk.replay_capture(demo_lake.root, registry=demo_lake.registry, cache=False)
    got = replay(demo_lake.root, registry=demo_lake.registry)
    assert got.num_rows == 41
    assert_same_table(local, got)


def test_dask_with_threads(demo_lake: Lake) -> None:
    import dask

    local = mk.replay_capture(demo_lake.root, registry=demo_lake.registry, cache=False)
    with dask.config.set(scheduler="threads"):
        got = dask_rows(demo_lake.root, registry=demo_lake.registry, partition_bytes=4096)
    assert_same_table(local, got)


def test_real_azure_capture_files(replay: Replay, real_capture: Any) -> None:
    local = mk.replay_capture(real_capture, cache=False)
    assert_same_table(local, replay(real_capture))


def test_two_schema_versions_duplicates_and_foreign_bodies(
    replay: Replay, evolved_lake: Lake
) -> None:
    lake = evolved_lake
    local = mk.replay_capture(lake.root, registry=lake.registry, schema=lake.schema, cache=False)
    assert mk.duplicates_dropped(local) > 0
    assert "note" in local.column_names
    # NOTE: no registry here: the schemas travel with the tasks, as on a cluster without one.
    got = replay(lake.root, schemas=lake.schemas, schema=lake.schema)
    assert_same_table(local, got)


def test_time_and_partition_ranges(dask_client: Any, evolved_lake: Lake) -> None:
    # NOTE: ranges are applied by the driver's listing and the shared tasks, the same for
    # both engines: Dask alone checks them.
    lake = evolved_lake
    options = {"start": "2026-01-10T00:00:00Z", "end": "2026-03-01T00:00:00Z", "partitions": [0, 2]}
    local = mk.replay_capture(lake.root, registry=lake.registry, cache=False, **options)
    assert local.num_rows > 0
    assert_same_table(local, dask_rows(lake.root, registry=lake.registry, **options))


def test_damaged_files_are_skipped_and_reported(replay: Replay, damaged_lake: Lake) -> None:
    good, bad = damaged_files(damaged_lake)
    assert len(bad) == 2
    local = mk.replay_capture(good, registry=damaged_lake.registry, cache=False)
    with pytest.warns(SkippedFilesWarning) as caught:
        got = replay(damaged_lake.root, registry=damaged_lake.registry, on_bad_file="skip")
    assert_same_table(local, got)
    skipped = caught[0].message.skipped  # type: ignore[union-attr]
    assert sorted(s.path for s in skipped) == sorted(str(p) for p in bad)
    assert all(s.reason and s.events_kept == 0 for s in skipped)


def test_a_damaged_file_raises_the_local_replays_error(replay: Replay, damaged_lake: Lake) -> None:
    with pytest.raises(mk.CaptureFileError) as local:
        mk.replay_capture(damaged_lake.root, cache=False)
    with pytest.raises(mk.CaptureFileError) as remote:
        replay(damaged_lake.root, registry=damaged_lake.registry)
    assert str(remote.value) == str(local.value)
