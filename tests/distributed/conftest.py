"""Engines and lakes of the distributed tests: one Spark session and one Dask cluster per run.

Spark runs in local mode (``local[2]``, the machine's JVM); Dask as a ``LocalCluster`` of two
worker processes. Both start once, when the first test needs them, and serve every test of
the session. The lakes are built once: the demo history; an evolved one (three versions of the
MCE schema, two of which need resolution to the newest, copies of a file in two other
partitions, foreign bodies); and a damaged one (zero-byte, truncated and bit-flipped files
whose intact blocks are copies of the demo history's events).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.capture import append_events, capture_path
from metaverse_kit.demo import emit_sample_history
from metaverse_kit.distributed import registry_schemas
from tests.conftest import SimClock

SORT_KEYS = [
    ("partition", "ascending"),
    ("sequence_number", "ascending"),
    ("capture_file", "ascending"),
]


def spark_session(cores: int) -> Any:
    """A local Spark session for tests and small data (the notebook uses the same settings)."""
    from pyspark.sql import SparkSession

    # NOTE: the Python workers Spark starts must run this interpreter (with pyarrow and us).
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("metaverse-kit-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        # NOTE: on a few dozen rows, compiling code for the MCE's ~400-leaf value struct costs
        # seconds per stage and saves nothing; interpreted evaluation gives the same answers.
        .config("spark.sql.codegen.wholeStage", "false")
        .config("spark.sql.codegen.factoryMode", "NO_CODEGEN")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A local Spark session with two cores, stopped at the end of the run."""
    pyspark = pytest.importorskip("pyspark")
    # The Spark 3.5 run of `make test` says which pyspark it means to test.
    expected = os.environ.get("METAVERSE_TEST_PYSPARK")
    assert expected is None or pyspark.__version__.startswith(expected), pyspark.__version__
    session = spark_session(2)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A ``distributed`` client on a LocalCluster of two single-threaded worker processes."""
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    # NOTE: ":0", a free port: None means Dask's :8787, and with that port taken (another
    # cluster, a second test run) the scheduler warns, which fails the fixture here.
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def spark_arrow(df: Any) -> pa.Table:
    """A Spark DataFrame's rows as Arrow, in Spark's order.

    NOTE: ``toArrow`` is pyspark 4's; on pyspark 3.5 (the Spark 3.5 run of ``make test``) the
    same Arrow batches come from the method ``toPandas`` uses.
    """
    from pyspark.sql.pandas.types import to_arrow_schema

    from metaverse_kit.distributed.spark import without_pandas_warning

    with without_pandas_warning():
        if hasattr(df, "toArrow"):
            return df.toArrow()
        batches = df._collect_as_arrow()
        # NOTE: the batches' own schema: their timestamps are in the session's time zone.
        schema = batches[0].schema if batches else to_arrow_schema(df.schema)
        return pa.Table.from_batches(batches, schema=schema)


def spark_rows(df: Any) -> pa.Table:
    """A Spark DataFrame's rows as Arrow, sorted like :func:`local_rows`."""
    table = spark_arrow(df)
    return table.sort_by(SORT_KEYS) if table.num_rows else table


def dask_rows(ddf: Any) -> pa.Table:
    """A Dask DataFrame's rows as Arrow (computed on the scheduler in use), sorted."""
    table = pa.Table.from_pandas(ddf.compute(), preserve_index=False)
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
    """A Capture tree to replay, what resolves its schema ids, and the reader schema."""

    root: Path
    registry: Any
    schemas: dict[str, str]
    schema: Any = None


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """The sample history of ``metaverse init --sample`` (41 events, 4 partitions)."""
    home = tmp_path_factory.mktemp("demo") / "ws"
    with mk.connect(path=home) as ws:
        emit_sample_history(ws)
        yield Lake(home / "lake", ws.registry, registry_schemas(ws.registry))


def _versions(definition: str) -> tuple[str, str]:
    """Two newer versions of the MCE: v2 adds a field with a default (resolved for v1 events),
    v3 another (resolved for v1 and v2 events)."""
    schema = json.loads(definition)
    schema["fields"].append({"name": "origin", "type": "string", "default": "legacy"})
    v2 = json.dumps(schema)
    schema["fields"].append({"name": "tags", "type": {"type": "array", "items": "string"}})
    schema["fields"][-1]["default"] = ["untagged"]
    return v2, json.dumps(schema)


@pytest.fixture(scope="session")
def evolved_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """Three versions of the MCE schema, copies of one file in two other partitions, foreign bodies.

    Replayed with the newest (``schema=None``): bodies of the older ones are read with their
    own schema and get the newer fields' defaults. The copies (same message ids) sit in
    partitions 0 and 3 while the original is in 2, so the copy the replay keeps is not the
    file that came first in time.
    """
    root = tmp_path_factory.mktemp("evolved")
    clock = SimClock(datetime(2026, 2, 1, 8, 0, tzinfo=UTC))
    with mk.connect(path=root / "ws", clock=clock) as ws:
        emit_sample_history(ws, start=datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
        v2, v3 = _versions(mk.mce_definition())
        for i in range(6):
            clock.advance(minutes=7)
            event = mk.mce(
                mk.make_dataset_urn("hive", f"db.evolved_{i}"),
                [mk.aspects.global_tags(["Evolved", f"T{i}"])],
            )
            if i < 3:
                ws.emit({**event, "origin": f"v2 event {i}"}, schema=v2)
            else:
                ws.emit({**event, "origin": "v3", "tags": [f"t{i}"]}, schema=v3)
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
        yield Lake(lake, ws.registry, registry_schemas(ws.registry))


@pytest.fixture(scope="session")
def damaged_lake(tmp_path_factory: pytest.TempPathFactory, demo_lake: Lake) -> Lake:
    """The demo history plus a zero-byte file, a truncated file and a bit-flipped one.

    The damaged files hold six events of the demo history again (the same message ids), in
    blocks of two: their intact blocks replay, and deduplicate against the demo's events.
    """
    root = tmp_path_factory.mktemp("damaged") / "lake"
    shutil.copytree(demo_lake.root, root)
    records = [
        r for p in sorted(root.rglob("*.avro")) for r in fastavro.reader(io.BytesIO(p.read_bytes()))
    ][:6]
    assert len(records) == 6
    for r in records:
        r["SequenceNumber"] += 1000
    plain = append_events(None, records[:2])
    for r in records[2:4], records[4:]:
        plain = append_events(plain, r)
    deflated = append_events(None, records[:2], codec="deflate")
    second = len(deflated)
    for r in records[2:4], records[4:]:
        deflated = append_events(deflated, r)
    flipped = bytearray(deflated)
    # A flipped bit inside the second block's compressed bytes: its framing stays whole.
    flipped[second + 12] ^= 0x10
    for partition, data in (
        ("1", b""),
        ("2", plain[: len(plain) - 40]),
        ("3", bytes(flipped)),
    ):
        path = root / capture_path(
            "metaverse-local", "metaverse", partition, datetime(2026, 1, 20, tzinfo=UTC)
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return Lake(root, demo_lake.registry, demo_lake.schemas)
