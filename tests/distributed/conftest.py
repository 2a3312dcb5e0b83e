"""Engines and lakes of the distributed tests: one Spark session and one Dask cluster per run.

Spark runs in local mode (``local[2]``, the machine's JVM); Dask as a ``LocalCluster`` of two
worker processes. Both start once, when the first test needs them. The lakes are built once:
the demo history; an evolved one (two versions of the MCE schema, duplicated files across
partitions, foreign bodies); and the demo history with a zero-byte and a truncated file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.capture import append_events, capture_path
from metaverse_kit.demo import emit_sample_history
from tests.conftest import SimClock

SORT_KEYS = [
    ("partition", "ascending"),
    ("sequence_number", "ascending"),
    ("capture_file", "ascending"),
]


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A local Spark session with two cores, stopped at the end of the run."""
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    # NOTE: the Python workers Spark starts must run this interpreter (with pyarrow and us).
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("metaverse-kit-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.session.timeZone", "UTC")
        # NOTE: on a few dozen rows, compiling code for the MCE's ~400-leaf value struct costs
        # seconds per stage and saves nothing; interpreted evaluation gives the same answers.
        .config("spark.sql.codegen.wholeStage", "false")
        .config("spark.sql.codegen.factoryMode", "NO_CODEGEN")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A ``distributed`` client on a LocalCluster of two single-threaded worker processes."""
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def spark_rows(df: Any) -> pa.Table:
    """A Spark DataFrame's rows as Arrow, sorted like :func:`local_rows`."""
    from metaverse_kit.distributed.spark import without_pandas_warning

    with without_pandas_warning():
        table = df.toArrow()
    return table.sort_by(SORT_KEYS) if table.num_rows else table


def local_rows(table: pa.Table, like: pa.Table | None = None) -> pa.Table:
    """The local replay's table, sorted by partition and sequence number, cast to ``like``."""
    table = table.replace_schema_metadata(None)
    table = table.sort_by(SORT_KEYS) if table.num_rows else table
    return table if like is None else table.cast(like.schema)


def assert_same_table(local: pa.Table, got: pa.Table) -> None:
    """Same columns, types and rows; names the first column that differs."""
    expected = local_rows(local, got)
    assert got.column_names == expected.column_names
    assert got.num_rows == expected.num_rows
    for name in expected.column_names:
        assert got.column(name).equals(expected.column(name)), name
    assert got.equals(expected)


@dataclass
class Lake:
    """A Capture tree to replay, what resolves its schema ids, and the payload schema."""

    root: Path
    registry: Any
    schemas: dict[str, str]
    schema: Any = None


def _registry_map(registry: Any) -> dict[str, str]:
    out = {}
    for group in registry.list_groups():
        for name in registry.list_schemas(group):
            for version in registry.list_versions(group, name):
                s = registry.get_schema(group_name=group, name=name, version=version)
                out[s.properties.id] = s.definition
    return out


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """The sample history of ``metaverse init --sample`` (41 events, 4 partitions)."""
    home = tmp_path_factory.mktemp("demo") / "ws"
    with mk.connect(path=home) as ws:
        emit_sample_history(ws)
        yield Lake(home / "lake", ws.registry, _registry_map(ws.registry))


def _v2(definition: str) -> str:
    schema = json.loads(definition)
    schema["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    return json.dumps(schema)


@pytest.fixture(scope="session")
def evolved_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """Two versions of the MCE schema, copies of one file in two other partitions, foreign bodies.

    Replayed with the newer schema: bodies of the older one are read with their own schema.
    The copies (same message ids) sit in partitions 0 and 3 while the original is in 2, so
    the copy the replay keeps is not the file that came first in time.
    """
    root = tmp_path_factory.mktemp("evolved")
    clock = SimClock(datetime(2026, 2, 1, 8, 0, tzinfo=UTC))
    with mk.connect(path=root / "ws", clock=clock) as ws:
        emit_sample_history(ws, start=datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
        v2 = _v2(mk.mce_definition())
        for i in range(6):
            clock.advance(minutes=7)
            event = mk.mce(
                mk.make_dataset_urn("hive", f"db.evolved_{i}"),
                [mk.aspects.global_tags(["Evolved", f"T{i}"])],
            )
            ws.emit({**event, "note": f"v2 event {i}"}, schema=v2)
        lake = root / "ws" / "lake"
        files = sorted(p for p in lake.rglob("*.avro") if "/2/" in p.as_posix())
        original = files[0]
        for partition, when in (
            ("0", datetime(2026, 3, 1, tzinfo=UTC)),
            ("3", datetime(2025, 1, 1, tzinfo=UTC)),
        ):
            copy = lake / capture_path("metaverse-local", "metaverse", partition, when)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(original, copy)
        foreign = lake / capture_path(
            "metaverse-local", "metaverse", "1", datetime(2026, 2, 2, tzinfo=UTC)
        )
        foreign.parent.mkdir(parents=True, exist_ok=True)
        base = {"Offset": "0", "EnqueuedTimeUtc": "2/2/2026 8:00:00 AM", "Properties": {}}
        foreign.write_bytes(
            append_events(
                None,
                [
                    {**base, "SequenceNumber": 0, "SystemProperties": {}, "Body": b'{"json": 1}'},
                    {
                        **base,
                        "SequenceNumber": 1,
                        "Body": b"\x00",
                        "SystemProperties": {"content-type": "avro/binary+" + "f" * 32},
                    },
                    {**base, "SequenceNumber": 2, "Body": None, "SystemProperties": {}},
                ],
            )
        )
        yield Lake(lake, ws.registry, _registry_map(ws.registry), schema=v2)


@pytest.fixture(scope="session")
def damaged_lake(tmp_path_factory: pytest.TempPathFactory, demo_lake: Lake) -> Lake:
    """The demo history plus a zero-byte file and a file cut in the middle of a block."""
    root = tmp_path_factory.mktemp("damaged") / "lake"
    shutil.copytree(demo_lake.root, root)
    whole = sorted(root.rglob("*.avro"), key=lambda p: p.stat().st_size)[-1].read_bytes()
    for partition, data in (("1", b""), ("2", whole[: len(whole) * 2 // 3])):
        path = root / capture_path(
            "metaverse-local", "metaverse", partition, datetime(2026, 1, 20, tzinfo=UTC)
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return Lake(root, demo_lake.registry, demo_lake.schemas)


def damaged_files(lake: Lake) -> tuple[list[Path], list[Path]]:
    """(intact files, damaged files) of a lake, by reading each with the local replay."""
    good, bad = [], []
    for path in sorted(lake.root.rglob("*.avro")):
        try:
            mk.replay_capture(path, cache=False)
        except mk.CaptureFileError:
            bad.append(path)
        else:
            good.append(path)
    return good, bad
