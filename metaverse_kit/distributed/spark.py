"""Replay a Capture lake on Spark: ``binaryFile`` and ``mapInArrow`` over the decode layer.

The driver lists and prunes the files (the local replay's lake code) and knows the schemas;
Spark reads the files' bytes (``binaryFile``) and executors run :mod:`._tasks` in
``mapInArrow``. :func:`spark_replay` runs one Spark job, the plan pass (envelopes only: damaged
files, message ids that occur more than once, grouped with a hash aggregate), and returns a
lazy DataFrame whose rows are decoded, once, when it is used.

pyspark is imported when a function here is called, never when ``metaverse_kit`` is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from metaverse_kit.backends.protocols import CaptureFile, SchemaRegistry
from metaverse_kit.distributed._plan import GROUPED_SCHEMA, Plan, Planner, held_before, records
from metaverse_kit.distributed._tasks import (
    FILE,
    MESSAGE,
    SCAN_SCHEMA,
    TaskSpec,
    decoded_batches,
    scan_rows,
)
from metaverse_kit.errors import ConfigurationError, MissingDependencyError
from metaverse_kit.history.decode import RECORDING_COLUMNS
from metaverse_kit.history.export import ExportFolder, ExportReport, PartWriter, new_run
from metaverse_kit.history.replay import REPLAY_START_KEY

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "START_COLUMN",
    "require_pyspark",
    "spark_export",
    "spark_replay",
    "spark_schema",
    "with_recorded_start",
    "without_pandas_warning",
]

_PANDAS_WARNING = "PySpark does not yet fully support pandas"

#: The column whose metadata also records a replay's partial start (:data:`REPLAY_START_KEY`),
#: besides ``capture_file``'s: every table a history question takes has it (the aspects
#: DataFrame the questions explode a replay into has no ``capture_file``), and Spark keeps a
#: column's metadata through the projections, filters and joins that keep the column.
START_COLUMN = RECORDING_COLUMNS[1]
_LISTING = "spark.sql.sources.parallelPartitionDiscovery.threshold"


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
    """The Spark ``StructType`` of an Arrow schema, mapped the way pyspark 4 maps Arrow types."""
    require_pyspark()
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(pa.schema([f.with_type(_mapped(f.type)) for f in arrow_schema]))


def _mapped(t: pa.DataType) -> pa.DataType:
    """``t`` with the Arrow types pyspark 3.5 does not map replaced by what pyspark 4 maps them
    to: a fixed-size binary (an Avro ``fixed``, such as the audit header's message id) is
    ``BinaryType`` (pyspark 3.5 raises ``UNSUPPORTED_DATA_TYPE_FOR_ARROW_CONVERSION``)."""
    if pa.types.is_fixed_size_binary(t):
        return pa.binary()
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_mapped(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(t.value_field.with_type(_mapped(t.value_type)))
    if pa.types.is_map(t):
        return pa.map_(t.key_field, t.item_field.with_type(_mapped(t.item_type)))
    return t


def _check_session(spark: Any) -> None:
    """Raise :class:`ConfigurationError` unless ``spark`` is a Spark session (classic or Connect).

    NOTE: by what it offers, not its class: pyspark 3.5's Connect session does not derive from
    the classic one.
    """
    if not all(hasattr(spark, a) for a in ("read", "conf", "createDataFrame")):
        raise ConfigurationError(
            "The first argument is the Spark session to run on (SparkSession.builder..."
            f"getOrCreate(), or the notebook's `spark`), not {type(spark).__name__} {spark!r:.60}"
        )


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


@contextlib.contextmanager
def _listing_on_driver(spark: SparkSession, local: bool) -> Iterator[None]:
    """Let Spark stat local files on the driver instead of in a job of its own.

    PERF: Spark lists more than 32 paths with a Spark job (one task per path, seconds of
    scheduling for files on this machine's disk); for remote stores that parallelism pays.
    """
    if not local:
        yield
        return
    with _conf(spark, _LISTING, str(2**31 - 1)):
        yield


@contextlib.contextmanager
def _conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """The session's ``key`` set to ``value`` for the time of the block."""
    before = spark.conf.get(key)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def _binary_files(spark: SparkSession, planner: Planner, files: Sequence[CaptureFile]) -> Any:
    """The files' bytes as Spark reads them: ``path`` (Spark's name) and ``content``."""
    paths = [_glob_escaped(planner.engine_path(f)) for f in files]
    # NOTE: the file index is built (the files listed) when the DataFrame is made; on Spark
    # Connect only when the plan runs, after the setting is restored (the same files, listed
    # by a Spark job: seen on a local Connect server).
    with _listing_on_driver(spark, planner.local):
        return spark.read.format("binaryFile").load(paths).select("path", "content")


def _contents(batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[str, bytes]]:
    for batch in batches:
        paths = batch.column("path").to_pylist()
        contents = batch.column("content")
        for i, path in enumerate(paths):
            yield path, contents[i].as_py()


def _shipped(spark: SparkSession, spec: TaskSpec) -> Callable[[], TaskSpec]:
    """How a task gets ``spec``: its records of the listed files in a Spark broadcast, the rest
    with the task's function.

    NOTE: a spec holds a record of every listed file (about 200 bytes each). In the function,
    the whole listing would be unpickled by every task (PySpark broadcasts a large function
    but loads it per task): 1.2 s and 20 MB per task for 100,000 Capture files. A broadcast
    variable is loaded once per Python worker. Spark Connect has no SparkContext to broadcast
    with: the spec then goes with the function, packed (see :class:`_Packed`).
    """
    try:
        files = spark.sparkContext.broadcast(dict(spec.files))
    except Exception:  # pyspark's Connect error types vary by version
        return _Packed.of(spec).spec
    light = replace(spec, files={})
    return lambda: replace(light, files=files.value)


# The specs a Python worker has unpacked, by digest (see _Packed.spec); a few, not every job's.
_UNPACKED: dict[str, TaskSpec] = {}
_UNPACKED_KEPT = 4


@dataclass(frozen=True)
class _Packed:
    """A task spec compressed, for a Spark Connect task's function; unpacked once per worker.

    NOTE: on Connect the function carries the listing: it travels in the plan (a gRPC message:
    Connect refuses those over 128 MiB by default, which 200 bytes a file reach at 670,000
    files) and every task unpickles it. Compressed, a file costs about 18 bytes, and a worker
    decompresses and unpickles the spec once, by its digest, not in every task.
    """

    digest: str
    blob: bytes

    @classmethod
    def of(cls, spec: TaskSpec) -> _Packed:
        """``spec`` packed."""
        raw = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
        return cls(hashlib.sha256(raw).hexdigest(), zlib.compress(raw, 1))

    def spec(self) -> TaskSpec:
        """The spec, unpacked the first time this worker process needs it."""
        found = _UNPACKED.get(self.digest)
        if found is None:
            found = pickle.loads(zlib.decompress(self.blob))
            while len(_UNPACKED) >= _UNPACKED_KEPT:
                del _UNPACKED[next(iter(_UNPACKED))]
            _UNPACKED[self.digest] = found
        return found


def _scan_function(spec: Callable[[], TaskSpec]) -> Any:
    def scan(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        task = spec()
        for batch in batches:
            yield scan_rows(_contents(iter([batch])), task)

    return scan


def _decode_function(spec: Callable[[], TaskSpec], schema: pa.Schema) -> Any:
    def decode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for _, _, rows in decoded_batches(_contents(batches), spec(), schema):
            if rows.num_rows:
                yield rows

    return decode


def _plan(spark: SparkSession, planner: Planner, exported: DataFrame | None = None) -> Plan:
    """Run the plan pass on Spark (one job) and hand its grouped rows to the planner.

    ``exported`` (an export's) holds the message ids the dataset has already.
    """
    f = require_pyspark().functions
    if not planner.files:
        return planner.finish(GROUPED_SCHEMA.empty_table())
    scanned = _binary_files(spark, planner, planner.files).mapInArrow(
        _scan_function(_shipped(spark, planner.spec)), spark_schema(SCAN_SCHEMA)
    )
    if exported is not None:
        ids = exported.where(f.col("message_id").isNotNull()).select(
            f.lit(MESSAGE).cast("byte").alias("kind"),
            f.col("message_id").alias("key"),
            f.lit(-1).cast("long").alias("order"),
            f.lit(None).cast("string").alias("info"),
        )
        scanned = scanned.unionByName(ids.distinct())
    # PERF: a hash aggregate: every message id is counted where it is read and only the
    # summary rows and the ids seen more than once come back to the driver. A file's info is
    # part of the key (a file has one row; a message id's info is null) because an aggregate
    # of a string (first(info)) makes Spark sort every row instead (SortAggregate; 1,000,000
    # ids: see ADR 10).
    grouped = (
        scanned.groupBy("kind", "key", "info")
        .agg(f.min("order").alias("first"), f.count(f.lit(1)).alias("n"))
        .where((f.col("kind") == FILE) | (f.col("n") > 1))
    )
    # NOTE: collect(), not toArrow() (pyspark 4 only): a row per file and per repeated id.
    rows = [r.asDict() for r in grouped.collect()]
    return planner.finish(pa.Table.from_pylist(rows, GROUPED_SCHEMA))


def _unplanned(spark: SparkSession, planner: Planner) -> Plan:
    """The plan of a replay without a plan pass; with ``start=``, after a scan of the envelopes
    of :meth:`~._plan.Planner.boundary_files` (one small job) tells whether it left events out.
    """
    boundary = planner.boundary_files()
    if not boundary:
        return planner.unplanned()
    f = require_pyspark().functions
    scanned = _binary_files(spark, planner, boundary).mapInArrow(
        _scan_function(_shipped(spark, planner.spec)), spark_schema(SCAN_SCHEMA)
    )
    # NOTE: damage is not raised here: without a plan pass it fails the job that decodes it.
    infos = scanned.where(f.col("kind") == FILE).select("info").collect()
    return planner.unplanned(cut=held_before(json.loads(row.info) for row in infos))


def _decoded(spark: SparkSession, planner: Planner, plan: Plan) -> DataFrame:
    struct = spark_schema(plan.arrow_schema)
    if not plan.files:
        df = spark.createDataFrame([], struct)
    else:
        df = _binary_files(spark, planner, plan.files).mapInArrow(
            _decode_function(_shipped(spark, plan.spec), _arrow_of(struct)), struct
        )
    recorded = records(plan)
    return with_recorded_start(
        df.withMetadata("capture_file", recorded), recorded.get(REPLAY_START_KEY.decode())
    )


def with_recorded_start(df: DataFrame, start: str | None) -> DataFrame:
    """``df`` whose :data:`START_COLUMN` records ``start`` (ISO 8601 text), the start of a replay
    that left events of the lake out; ``df`` itself for None or without that column.

    NOTE: a table of Arrow keeps its metadata through ``select`` and ``drop_columns``, so a
    local question of a narrowed replay, or of its aspects table, still warns; on Spark the
    ``capture_file`` column's metadata goes with that column, so the start is recorded here too.
    """
    if start is None or START_COLUMN not in df.columns:
        return df
    metadata = {**df.schema[START_COLUMN].metadata, REPLAY_START_KEY.decode(): start}
    return df.withMetadata(START_COLUMN, metadata)


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
    of files (each also as a ``file:`` URI, Spark's spelling of a local path), an ``abfss://``
    URL (listed on the driver with ``storage_options``; executors read it through Spark's own
    ABFS driver and its settings) or a Lake. Columns and rows are
    those of the local replay, with Arrow types mapped to Spark's as pyspark maps them
    (timestamps become ``TimestampType``); rows come in no particular order (sort by
    ``partition`` and ``sequence_number``).

    Schemas: the driver ships to the executors every schema version ``registry=`` lists
    (:func:`~metaverse_kit.distributed.registry_schemas`) and ``schemas={id: definition}``
    (for clusters that cannot reach the registry; it wins over the registry). Executors never
    call the registry; an id neither knows comes out as an unknown schema id, as in a local
    replay whose registry does not know it. ``schema`` is the reader as in the local replay;
    ``schema=None`` the newest MCE version in the registry, or among ``schemas`` (see
    :func:`~metaverse_kit.history.replay.reader_schema`).

    Duplicates (same message id) are dropped across the whole history, keeping the copy the
    local replay keeps (``dedup=False`` keeps them); ``mk.duplicates_dropped(df)`` says how
    many. ``on_bad_file="raise"`` raises :class:`~metaverse_kit.errors.CaptureFileError` (the
    local replay's, for the first damaged file in replay order) before returning; ``"skip"``
    keeps every intact block, warns :class:`~metaverse_kit.errors.CaptureFileWarning` as the
    local replay does, and ``mk.skipped_files(df)`` lists the parts left out.

    Runs one Spark job over the envelopes before returning (damage, repeated message ids;
    none with ``dedup=False`` and ``"raise"``: damage then fails the job that reads the file,
    and with ``start=`` one job reads the envelopes of the few files whose time window began
    before it, to know whether the replay leaves events out: see ``mk.history.replay_start``);
    the payloads are decoded when the DataFrame is used. Raises
    :class:`~metaverse_kit.errors.MissingDependencyError` when pyspark is not installed
    (``pip install "metaverse-kit[spark]"``) and
    :class:`~metaverse_kit.errors.ConfigurationError` for a bad option.
    """
    require_pyspark()
    _check_session(spark)
    with without_pandas_warning():
        planner = Planner(
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
        )
        plan = _plan(spark, planner) if planner.needs_scan else _unplanned(spark, planner)
        return _decoded(spark, planner, plan)


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
    as the same local path (a shared disk or a mount such as ``/Volumes/...``). Options as
    :func:`spark_replay`. Executors write the files with pyarrow, as the local export and Dask
    write them (the same Parquet types), so runs of any kind append to one dataset. Raises as
    :func:`~metaverse_kit.history.export.export_parquet` does.
    """
    require_pyspark()
    _check_session(spark)
    with without_pandas_warning(), ExportFolder(out) as folder:
        planner = Planner.for_export(
            folder,
            location,
            registry=registry,
            schemas=schemas,
            schema=schema,
            storage_options=storage_options,
            on_bad_file=on_bad_file,
        )
        if planner is None:
            return folder.up_to_date()
        # The files runs wrote, named one by one: a file no run named is not the dataset's.
        data = [_glob_escaped(_local_uri(path)) for path in folder.data_files()]
        exported = None
        if data:
            with _listing_on_driver(spark, True):  # an export folder is always local
                exported = spark.read.parquet(*data).select("message_id")
        plan = _plan(spark, planner, exported)
        return _write(spark, planner, plan, folder)


def _write(spark: SparkSession, planner: Planner, plan: Plan, folder: ExportFolder) -> ExportReport:
    run = new_run()
    staging = os.path.abspath(folder.staging(run))
    written: list[str] = []
    if plan.files:
        tasks = _binary_files(spark, planner, plan.files).mapInArrow(
            _write_function(_shipped(spark, plan.spec), plan.arrow_schema, staging), "file string"
        )
        # NOTE: Spark returns the rows of one successful attempt of each task.
        written = [row.file for row in tasks.collect()]
    # The commit keeps those files only, and checks that they hold what the plan says.
    return folder.commit(
        run,
        files=folder.records(
            planner.files, root=planner.lake.root, events=plan.events, skipped=plan.skipped
        ),
        rows=plan.export_rows,
        skipped=plan.skipped,
        duplicates=plan.duplicates,
        engine="spark",
        reader=plan.spec.reader,
        written=written,
    )


def _write_function(spec: Callable[[], TaskSpec], schema: pa.Schema, staging: str) -> Any:
    """A task's decode and write: its rows go into ``staging`` as the local export writes them,
    and it returns the names of the files it wrote.

    NOTE: executors write with pyarrow (:class:`PartWriter`), not Spark's Parquet writer: the
    files have the local export's types (a column of Arrow's null type, which Spark 3.5's
    writer refuses as VOID; millisecond timestamps), and the decoded rows never become Spark
    rows. Files are named by task and attempt: a failed attempt's files, or those of a
    speculative copy that lost, are not the run's (the commit removes them), and two attempts
    never write to one file.
    """

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        context = TaskContext.get()
        assert context is not None  # a mapInArrow task always has one
        task = f"{context.partitionId():05d}-{context.attemptNumber()}"
        parts = PartWriter(Path(staging), schema, f"spark-{task}")
        for _, _, rows in decoded_batches(_contents(batches), spec(), schema):
            parts.add(rows)
        parts.close()
        yield pa.record_batch([pa.array(parts.files, pa.string())], names=["file"])

    return write


def _local_uri(path: Path) -> str:
    return "file://" + os.path.abspath(path)
