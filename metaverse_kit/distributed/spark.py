"""Replay a Capture lake on Spark: the ``binaryFile`` source and ``mapInArrow`` over our decoder.

The driver lists and prunes the files (the local replay's lake code), Spark reads their bytes
(``binaryFile``), and executors decode them with the local replay's own per-file decoder inside
``mapInArrow``. Two Spark jobs run when :func:`spark_replay` is called, both on the envelopes
only: one finds damaged files and the schema ids in use, one the message ids that occur more
than once. The returned DataFrame is lazy: the payloads are decoded when it is used.

pyspark is imported when a function here is called, never when ``metaverse_kit`` is.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from metaverse_kit.backends.protocols import SchemaRegistry
from metaverse_kit.distributed._driver import (
    REPEATED_SCHEMA,
    SUMMARY_COLUMNS,
    Planner,
    ReplayPlan,
)
from metaverse_kit.distributed._tasks import SCAN_SCHEMA, TaskSpec, decode_files, scan_files
from metaverse_kit.errors import MissingDependencyError
from metaverse_kit.history.export import (
    EVENT_DATE,
    ExportFolder,
    ExportReport,
    new_run,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "require_pyspark",
    "spark_export",
    "spark_replay",
    "spark_schema",
    "without_pandas_warning",
]

_PANDAS_WARNING = "PySpark does not yet fully support pandas"


def require_pyspark() -> Any:
    """The ``pyspark.sql`` module; raises :class:`MissingDependencyError` naming the extra."""
    try:
        import pyspark.sql
    except ImportError as exc:
        raise MissingDependencyError("Replaying on Spark", ["pyspark"], extra="spark") from exc
    return pyspark.sql


@contextlib.contextmanager
def without_pandas_warning() -> Iterator[None]:
    """Silence pyspark's warning that it does not fully support pandas 3.

    NOTE: pyspark checks the pandas version each time it builds an Arrow UDF; our functions use
    Arrow only (no pandas conversion), so the warning says nothing about them.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PANDAS_WARNING, category=FutureWarning)
        yield


def spark_schema(arrow_schema: pa.Schema) -> Any:
    """The Spark ``StructType`` of an Arrow schema, mapped the way pyspark maps Arrow types."""
    require_pyspark()
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(arrow_schema)


def _arrow_of(struct_type: Any) -> pa.Schema:
    """The Arrow schema Spark exchanges for ``struct_type`` (timestamps in microseconds, UTC)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    try:
        return to_arrow_schema(struct_type, timezone="UTC")
    except TypeError:  # pyspark 3.5: no timezone argument, always UTC
        return to_arrow_schema(struct_type)


def _glob_escaped(path: str) -> str:
    # NOTE: Spark expands glob characters in the paths it loads; Capture paths have none, but
    # the folder a user copied them to might.
    for c in "\\*?[]{}":
        path = path.replace(c, "\\" + c)
    return path


def _binary_files(spark: SparkSession, paths: Sequence[str]) -> DataFrame:
    return spark.read.format("binaryFile").load([_glob_escaped(p) for p in paths])


def _scan_function(spec: TaskSpec) -> Any:
    def scan(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            paths = batch.column("path").to_pylist()
            contents = batch.column("content")
            yield scan_files([(p, contents[i].as_py()) for i, p in enumerate(paths)], spec)

    return scan


def _decode_function(spec: TaskSpec, schema: pa.Schema) -> Any:
    def decode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            paths = batch.column("path").to_pylist()
            contents = batch.column("content")
            items = [(p, contents[i].as_py()) for i, p in enumerate(paths)]
            del batch, contents
            yield from decode_files(items, spec, schema)

    return decode


def _scan(spark: SparkSession, planner: Planner, exported: DataFrame | None = None) -> ReplayPlan:
    """Run the envelope pass on Spark (one job) and hand its results to the planner.

    ``exported`` (an export's) has the message ids the dataset already holds.
    """
    sql = require_pyspark()
    functions, window = sql.functions, sql.Window
    files = planner.readable
    if not files:
        return planner.finish(SCAN_SCHEMA.empty_table(), REPEATED_SCHEMA.empty_table())
    raw = _binary_files(spark, [planner.engine_path(f) for f in files]).select("path", "content")
    scanned = raw.mapInArrow(_scan_function(planner.spec), spark_schema(SCAN_SCHEMA))
    flag = functions.lit(False)
    if exported is not None:
        ids = exported.select("message_id").distinct().withColumn("exported", functions.lit(True))
        scanned = scanned.join(ids, "message_id", "left")
        flag = functions.coalesce(functions.col("exported"), functions.lit(False))
    scanned = scanned.withColumn("exported", flag)
    if planner.dedup:
        # PERF: one job: the copies of each message id are counted by a window over the
        # (small) event rows, and only the summary rows and the repeated ids come back.
        copies = functions.count(functions.lit(1)).over(window.partitionBy("message_id"))
        scanned = scanned.withColumn(
            "copies", functions.when(functions.col("row") >= 0, copies)
        ).where("row < 0 OR copies > 1 OR exported")
    else:
        scanned = scanned.where("row < 0 OR exported")
    # NOTE: collect(), not toArrow() (pyspark 4 only): a row per file and per repeated copy.
    rows = [r.asDict() for r in scanned.collect()]
    summary_schema = pa.schema([SCAN_SCHEMA.field(n) for n in SUMMARY_COLUMNS])
    copies = [r for r in rows if r["row"] >= 0 and (r.get("copies") or 0) > 1]
    return planner.finish(
        pa.Table.from_pylist([r for r in rows if r["row"] < 0], summary_schema),
        pa.Table.from_pylist(copies, REPEATED_SCHEMA),
        pa.Table.from_pylist([r for r in rows if r["exported"]], REPEATED_SCHEMA),
    )


def spark_replay(
    spark: SparkSession,
    location: Any,
    *,
    registry: SchemaRegistry | None = None,
    schemas: Mapping[str, Any] | None = None,
    schema: Any = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    partitions: Sequence[str | int] | None = None,
    storage_options: dict | None = None,
    on_bad_file: str = "raise",
    dedup: bool = True,
) -> DataFrame:
    """Replay a Capture tree on Spark: a DataFrame of the rows ``mk.replay_capture`` returns.

    ``location`` is what :func:`~metaverse_kit.replay_capture` takes: a folder, a file, a list
    of files, an ``abfss://`` URL (listed on the driver with ``storage_options``; executors
    read it through Spark's own ABFS driver and its settings) or a Lake. Columns and rows are
    those of the local replay, with Arrow types mapped to Spark's as pyspark maps them
    (timestamps become ``TimestampType``); rows come in no particular order (sort by
    ``partition`` and ``sequence_number``).

    Schemas: ``registry=`` resolves the schema ids the files use, once, on the driver;
    ``schemas={id: definition}`` gives them for clusters that cannot reach the registry (both
    may be given: the mapping wins). Executors never call the registry. ``schema`` types the
    payload as in the local replay (default: the built-in MCE; ``False``: the envelope only).

    Duplicates (same message id) are dropped across the whole history, keeping the copy the
    local replay keeps; ``dedup=False`` keeps them. ``on_bad_file="raise"`` raises
    :class:`~metaverse_kit.errors.CaptureFileError` naming the first damaged file;
    ``"skip"`` leaves damaged files out and warns
    :class:`~metaverse_kit.distributed.SkippedFilesWarning` (its ``skipped`` lists them).

    Runs two Spark jobs over the envelopes before returning (damaged files, schema ids,
    repeated message ids). Raises :class:`~metaverse_kit.errors.MissingDependencyError` when
    pyspark is not installed (``pip install "metaverse-kit[spark]"``) and
    :class:`~metaverse_kit.errors.ConfigurationError` for a bad option.
    """
    require_pyspark()
    with without_pandas_warning():
        return _spark_replay(
            spark,
            Planner(
                location,
                registry=registry,
                schemas=schemas,
                schema=schema,
                start=start,
                end=end,
                partitions=partitions,
                storage_options=storage_options,
                on_bad_file=on_bad_file,
                dedup=dedup,
            ),
        )


def _spark_replay(spark: SparkSession, planner: Planner) -> DataFrame:
    return _decoded(spark, planner, _scan(spark, planner))


def _decoded(spark: SparkSession, planner: Planner, plan: ReplayPlan) -> DataFrame:
    struct = spark_schema(plan.arrow_schema)
    files = [f for f in plan.files if f.size > 0]
    if not files:
        return spark.createDataFrame([], struct)
    raw = _binary_files(spark, [planner.engine_path(f) for f in files]).select("path", "content")
    return raw.mapInArrow(_decode_function(plan.spec, _arrow_of(struct)), struct)


def spark_export(
    spark: SparkSession,
    location: Any,
    out: str | os.PathLike[str],
    *,
    registry: SchemaRegistry | None = None,
    schemas: Mapping[str, Any] | None = None,
    schema: Any = None,
    storage_options: dict | None = None,
    on_bad_file: str = "raise",
) -> ExportReport:
    """:func:`~metaverse_kit.history.export.export_parquet` on Spark: executors decode and write.

    Appends the Capture files new since the last run to the Parquet dataset at ``out`` (see
    :mod:`metaverse_kit.history.export`), which the driver and every executor must reach
    as the same local path (a shared disk or a mount such as ``/dbfs/...``). Options as
    :func:`spark_replay`. Timestamps are written as Parquet ``TIMESTAMP_MILLIS`` (UTC), the
    type the local export writes, so runs of either kind append to one dataset.
    """
    require_pyspark()
    with without_pandas_warning(), ExportFolder(out) as folder:
        planner = Planner.for_export(
            location,
            registry=registry,
            schemas=schemas,
            schema=schema,
            storage_options=storage_options,
            on_bad_file=on_bad_file,
        )
        return _export(spark, planner, folder)


def _export(spark: SparkSession, planner: Planner, folder: ExportFolder) -> ExportReport:
    import pyarrow.parquet as pq

    functions = require_pyspark().functions
    if not folder.start(planner):
        return ExportReport(str(folder.out), None, 0, 0)
    exported = (
        spark.read.parquet(_local_uri(folder.out)).select("message_id")
        if folder.data_files()
        else None
    )
    plan = _scan(spark, planner, exported)
    run = new_run()
    staging = folder.staging(run)
    micros = functions.unix_micros(functions.col("enqueued_time"))
    day = functions.date_from_unix_date(
        functions.floor(micros / functions.lit(86_400_000_000)).cast("int")
    )
    rows = _decoded(spark, planner, plan).withColumn(EVENT_DATE, day)
    key = "spark.sql.parquet.outputTimestampType"
    before = spark.conf.get(key)
    spark.conf.set(key, "TIMESTAMP_MILLIS")
    try:
        rows.write.partitionBy(EVENT_DATE).mode("overwrite").parquet(_local_uri(staging))
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)
    written = sum(
        pq.ParquetFile(p).metadata.num_rows for p in staging.glob(f"{EVENT_DATE}=*/*.parquet")
    )
    files = folder.records(
        planner.files,
        root=planner.lake.root,
        events=plan.events,
        skipped={s.path: s.reason for s in plan.skipped},
    )
    return folder.commit(
        run,
        files=files,
        rows=written,
        skipped=[asdict(s) for s in plan.skipped],
        duplicates=plan.duplicates,
        engine="spark",
    )


def _local_uri(path: Path) -> str:
    return _glob_escaped("file://" + os.path.abspath(path))
