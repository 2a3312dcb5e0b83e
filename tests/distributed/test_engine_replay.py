"""The replay on Spark and on Dask gives the local replay's table, file for file and row for row."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.distributed import dask_replay, registry_schemas, spark_replay
from tests.distributed.conftest import Lake, assert_same_table, dask_rows, spark_rows

Replay = Callable[..., tuple[pa.Table, Any]]


@pytest.fixture(params=["spark", "dask-cluster"])
def replay(request: pytest.FixtureRequest) -> Replay:
    """Replay on one engine: (its rows as Arrow, sorted by partition and sequence; the frame)."""
    if request.param == "spark":
        spark = request.getfixturevalue("spark")

        def on_spark(location: Any, **kw: Any) -> tuple[pa.Table, Any]:
            df = spark_replay(spark, location, **kw)
            return spark_rows(df), df

        return on_spark
    request.getfixturevalue("dask_client")

    def on_dask(location: Any, **kw: Any) -> tuple[pa.Table, Any]:
        ddf = dask_replay(location, **kw)
        return dask_rows(ddf), ddf

    return on_dask


def test_the_demo_history(replay: Replay, demo_lake: Lake) -> None:
    local = mk.replay_capture(demo_lake.root, registry=demo_lake.registry, cache=False)
    got, frame = replay(demo_lake.root, registry=demo_lake.registry)
    assert got.num_rows == 41
    assert_same_table(local, got)
    assert mk.duplicates_dropped(frame) == 0


def test_dask_with_threads_and_ranges(demo_lake: Lake, evolved_lake: Lake) -> None:
    # NOTE: ranges are applied by the driver's listing and the shared tasks, the same for
    # both engines: Dask's threaded scheduler alone checks them.
    import dask

    lake = evolved_lake
    options = {"start": "2026-01-10T00:00:00Z", "end": "2026-03-01T00:00:00Z", "partitions": [0, 2]}
    local = mk.replay_capture(lake.root, registry=lake.registry, cache=False, **options)
    assert local.num_rows > 0
    with dask.config.set(scheduler="threads"):
        got = dask_rows(dask_replay(lake.root, registry=lake.registry, **options))
        assert_same_table(local, got)
        # A plan pass and a decode of one file per partition, on the threaded scheduler while
        # the session's distributed client is alive.
        small = dask_replay(demo_lake.root, registry=demo_lake.registry, partition_bytes=4096)
        assert small.npartitions > 4
        assert_same_table(
            mk.replay_capture(demo_lake.root, registry=demo_lake.registry, cache=False),
            dask_rows(small),
        )
        # A partition the lake has no file of: the driver's listing says so, as locally.
        with pytest.warns(mk.MissingPartitionWarning, match="partition '9' is") as caught:
            assert len(dask_replay(lake.root, registry=lake.registry, partitions=[9])) == 0
        assert caught[0].filename == __file__


def test_the_dask_plan_compares_ids_whose_hashes_collide(evolved_lake: Lake) -> None:
    """Dask's plan finds repeated message ids by their 64-bit hashes, then compares the ids
    that share one: with every id given the same hash, every distinct id is still kept."""
    import dask
    import numpy as np

    from metaverse_kit.distributed._plan import Planner
    from metaverse_kit.distributed.dask import _decoded, _plan

    lake = evolved_lake
    local = mk.replay_capture(lake.root, registry=lake.registry, cache=False)

    def planner() -> Planner:
        return Planner(
            lake.root,
            registry=lake.registry,
            schemas=None,
            schema=None,
            start=None,
            end=None,
            partitions=None,
            storage_options=None,
            on_bad_file="raise",
        )

    def repeated(plan: Any) -> list[tuple[str, int]]:
        assert plan.spec.repeated is not None and plan.spec.first is not None
        return sorted(zip(plan.spec.repeated.to_pylist(), plan.spec.first.tolist(), strict=True))

    with dask.config.set(scheduler="sync"):
        real = _plan(planner(), 4096)
        one_hash = _plan(planner(), 4096, hash_ids=lambda ids: np.zeros(len(ids), np.uint64))
        assert real.duplicates == one_hash.duplicates == mk.duplicates_dropped(local) > 0
        assert repeated(real) == repeated(one_hash)
        assert len(repeated(real)) < local.num_rows // 2
        p = planner()
        assert_same_table(
            local,
            dask_rows(
                _decoded(
                    p, _plan(p, 4096, hash_ids=lambda ids: np.zeros(len(ids), np.uint64)), 4096
                )
            ),
        )


def test_real_azure_capture_files(replay: Replay, real_capture: Any) -> None:
    local = mk.replay_capture(real_capture, cache=False)
    got, _ = replay(real_capture)
    assert_same_table(local, got)


def test_three_schema_versions_duplicates_and_foreign_bodies(
    replay: Replay, evolved_lake: Lake
) -> None:
    lake = evolved_lake
    local = mk.replay_capture(lake.root, registry=lake.registry, cache=False)
    assert mk.duplicates_dropped(local) > 0
    # The newest version is the reader; older events got the defaults of the fields they lack.
    assert {"origin", "tags"} <= set(local.column_names)
    assert {"legacy", "v3"} <= set(local.column("origin").to_pylist())
    assert ["untagged"] in local.column("tags").to_pylist()
    assert any(e and e.startswith("unknown schema id") for e in local["decode_error"].to_pylist())
    # NOTE: no registry: the schemas travel with the tasks, as on a cluster without one, and
    # schema=None picks the newest version among them, as the local replay does from the registry.
    got, frame = replay(lake.root, schemas=lake.schemas)
    assert_same_table(local, got)
    assert mk.duplicates_dropped(frame) == mk.duplicates_dropped(local)


def _warned(caught: Any) -> list[str]:
    # NOTE: pyspark 3.5 warns too (distutils) whenever it builds an Arrow UDF.
    return [str(w.message) for w in caught if issubclass(w.category, mk.CaptureFileWarning)]


def _skipped_records(parts: list[Any]) -> list[tuple[Any, ...]]:
    return sorted((p.path, p.offset, p.reason, p.events_kept) for p in parts)


def test_damaged_files_keep_their_intact_blocks(replay: Replay, damaged_lake: Lake) -> None:
    with pytest.warns(mk.CaptureFileWarning) as expected:
        local = mk.replay_capture(
            damaged_lake.root, registry=damaged_lake.registry, cache=False, on_bad_file="skip"
        )
    skipped = mk.skipped_files(local)
    # A truncated file and a bit-flipped one (the zero-byte file is an empty archive).
    assert len({p.path for p in skipped}) == 2
    assert all(p.events_kept > 0 and p.offset for p in skipped)
    with pytest.warns(mk.CaptureFileWarning) as caught:
        got, frame = replay(damaged_lake.root, registry=damaged_lake.registry, on_bad_file="skip")
    assert _warned(caught) == _warned(expected)
    assert_same_table(local, got)
    assert _skipped_records(mk.skipped_files(frame)) == _skipped_records(skipped)
    assert mk.duplicates_dropped(frame) == mk.duplicates_dropped(local) > 0


def test_a_damaged_file_raises_the_local_replays_error(replay: Replay, damaged_lake: Lake) -> None:
    with pytest.raises(mk.CaptureFileError) as local:
        mk.replay_capture(damaged_lake.root, cache=False)
    with pytest.raises(mk.CaptureFileError) as remote:
        replay(damaged_lake.root, registry=damaged_lake.registry)
    assert str(remote.value) == str(local.value)
    assert "at byte" in str(local.value)


def test_reader_schema_from_a_mapping(evolved_lake: Lake) -> None:
    # The rule without a registry: registry Schemas by version, else the mapping's last of the
    # MCE's name; the built-in definition when none has that name.
    from metaverse_kit.events.builtin import MCE_FULL_NAME
    from metaverse_kit.history.replay import reader_schema

    registry = evolved_lake.registry
    newest = reader_schema(None, registry=registry)
    assert newest is not None
    assert reader_schema(None, schemas=registry_schemas(registry)) == newest
    versions = [
        registry.get_schema(group_name=g, name=MCE_FULL_NAME, version=v)
        for g in registry.list_groups()
        for v in registry.list_versions(g, MCE_FULL_NAME)
    ]
    backwards = {s.properties.id: s for s in reversed(versions)}
    assert reader_schema(None, schemas=backwards) == newest
    oldest = versions[0]
    assert reader_schema(None, schemas={"x": oldest.definition}).definition == oldest.definition
    with warnings.catch_warnings():
        assert reader_schema(None, schemas={"x": '{"type": "string"}'}) == reader_schema(None)


def test_dask_partitions_cost_the_same_whatever_the_codec() -> None:
    # Deflated and plain files of as many events each: by bytes, the small deflated ones would
    # pile up in one partition; by the events the plan pass counted, partitions are even.
    from types import SimpleNamespace

    from metaverse_kit.capture import CaptureFile
    from metaverse_kit.distributed.dask import FILE_OPEN_BYTES, _groups

    files = [CaptureFile(f"p{i}", 128_000 if i < 20 else 1_400_000, "v") for i in range(40)]
    planner = SimpleNamespace(engine_path=lambda f: f.path)
    events = {f.path: 2_500 for f in files}
    by_events = _groups(planner, files, 4_000_000, events)  # type: ignore[arg-type]
    assert sorted({len(g) for g in by_events}) == [5]
    by_bytes = _groups(planner, files, 4_000_000)  # type: ignore[arg-type]
    assert max(len(g) for g in by_bytes) <= 4_000_000 // FILE_OPEN_BYTES


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("not json", "schemas['7'] is not an Avro schema: The schema definition is not valid JSON"),
        ({"type": "record"}, "schemas['7'] is not an Avro schema: A record needs a name"),
        (42, "schemas['7'] must be a definition"),
    ],
)
def test_a_bad_schemas_mapping_is_refused_before_any_engine_work(
    demo_lake: Lake, value: object, words: str
) -> None:
    with pytest.raises(mk.ConfigurationError, match=re.escape(words)):
        dask_replay(demo_lake.root, schemas={7: value})


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"partitions": "01"}, "partitions= takes a list of partition ids"),
        ({"partitions": ["0", "x"]}, "partitions= names partition 'x'"),
        ({"registry": "my-namespace"}, "registry= takes a schema registry"),
        ({"dedup": "false"}, "dedup= takes True or False"),
        ({"partition_bytes": 0}, "partition_bytes= takes a size in bytes"),
        ({"partition_bytes": "lots"}, "partition_bytes= takes a size in bytes"),
    ],
)
def test_a_bad_range_or_registry_is_refused_as_locally(
    demo_lake: Lake, options: dict, words: str
) -> None:
    with pytest.raises(mk.ConfigurationError, match=re.escape(words)):
        dask_replay(demo_lake.root, **options)


def test_dask_partition_sizes_may_be_written_as_dask_writes_them(demo_lake: Lake) -> None:
    import dask

    with dask.config.set(scheduler="sync"):
        as_text = dask_replay(demo_lake.root, registry=demo_lake.registry, partition_bytes="4KiB")
        as_int = dask_replay(demo_lake.root, registry=demo_lake.registry, partition_bytes=4096)
    assert 1 < as_text.npartitions == as_int.npartitions


def test_what_is_not_a_spark_session_or_a_question_s_input_is_named() -> None:
    from metaverse_kit.distributed import spark_replay

    # A master URL where the session belongs would otherwise fail inside with AttributeError.
    with pytest.raises(mk.ConfigurationError, match=r"the Spark session to run on .* 'local\[2\]'"):
        spark_replay("local[2]", "lake")


def test_a_dask_replay_is_asked_through_its_export(demo_lake: Lake) -> None:
    import dask

    with dask.config.set(scheduler="sync"):
        ddf = dask_replay(demo_lake.root, registry=demo_lake.registry)
    from metaverse_kit.history import HistoryInputError

    with pytest.raises(HistoryInputError, match="for a Dask replay: ask the Parquet dataset"):
        mk.history.state_as_of(ddf, "2026-12-31")


def test_a_dask_task_ships_only_the_files_it_reads(demo_lake: Lake) -> None:
    # A spec holds a record of every listed file; a task pickled with the whole listing would
    # grow with the lake (300 MB per task for a million Capture files).
    import pickle

    import dask

    files = sorted(str(p) for p in demo_lake.root.rglob("*.avro"))
    assert len(files) >= 8

    def largest_task(paths: list[str]) -> int:
        with dask.config.set(scheduler="sync"):
            ddf = dask_replay(paths, registry=demo_lake.registry, partition_bytes=1)
        assert ddf.npartitions == len(paths)
        return max(len(pickle.dumps(task)) for task in dict(ddf.__dask_graph__()).values())

    assert abs(largest_task(files) - largest_task(files[:2])) < 200


def _spec_of(files: int, schemas: dict[str, str]) -> Any:
    """A task spec listing ``files`` Capture files named as Azure names them."""
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    from metaverse_kit.capture import CaptureFile
    from metaverse_kit.distributed._tasks import FileEntry, TaskSpec

    start = datetime(2026, 1, 1, tzinfo=UTC)
    entries = {}
    for i in range(files):
        window, partition = start + timedelta(minutes=5 * (i // 32)), str(i % 32)
        path = f"/lake/ns/eh/{partition}/{window:%Y/%m/%d/%H/%M/%S}.avro"
        entries[path] = FileEntry(
            CaptureFile(path, 1000 + i, f"0x8DC{i:010X}", "ns", "eh", partition, window), i
        )
    return replace(TaskSpec(reader=None, schemas=schemas), files=entries)


def test_a_spark_task_function_does_not_carry_the_listing(spark: Any, demo_lake: Lake) -> None:
    # The records of the listed files go in a broadcast, loaded once per Python worker; the
    # function each task unpickles stays the same size whatever the lake.
    from pyspark import cloudpickle

    from metaverse_kit.distributed.spark import _decode_function, _shipped

    def pickled(files: int) -> int:
        shipped = _shipped(spark, _spec_of(files, demo_lake.schemas))
        assert len(shipped().files) == files  # what a task sees, here on the driver
        return len(cloudpickle.dumps(_decode_function(shipped, pa.schema([]))))

    assert abs(pickled(10_000) - pickled(10)) < 200
    # Every Spark replay test reads through the broadcast: the rows are checked there.


class _ConnectSession:
    """What ``_shipped`` sees of a Spark Connect session: no ``sparkContext``."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"{name} is not supported on Spark Connect")


def test_on_spark_connect_a_task_function_carries_the_listing_packed(demo_lake: Lake) -> None:
    # Connect cannot broadcast: the listing goes with the function, compressed (the plan is a
    # gRPC message of at most 128 MiB by default), and a worker unpacks it once, not per task.
    import pickle

    cloudpickle = pytest.importorskip("pyspark.cloudpickle")
    from metaverse_kit.distributed.spark import _decode_function, _shipped

    spec = _spec_of(20_000, demo_lake.schemas)
    shipped = _shipped(_ConnectSession(), spec)
    function = cloudpickle.dumps(_decode_function(shipped, pa.schema([])))
    assert len(function) / 20_000 < 30
    assert len(function) < len(pickle.dumps(spec)) / 5
    # Two tasks in one worker: the second finds the first's spec.
    tasks = [pickle.loads(cloudpickle.dumps(shipped)) for _ in range(2)]
    specs = [task() for task in tasks]
    assert specs[0] is specs[1]
    assert specs[0].files == spec.files and specs[0].schemas == spec.schemas
    other = _shipped(_ConnectSession(), _spec_of(3, demo_lake.schemas))
    assert len(other().files) == 3
    # The replays on a Connect server read through it (test_spark_connect.py).
