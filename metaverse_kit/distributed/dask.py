"""Replay a Capture lake on Dask: ``dask.dataframe.from_map`` over groups of files.

The driver lists and prunes the files (the local replay's lake code) and cuts them into
partitions of about ``partition_bytes``; each partition's task reads its files (local paths,
or ``abfs[s]://`` through fsspec/adlfs with ``storage_options``) and decodes them with the
local replay's own per-file decoder. Columns are pandas ``ArrowDtype`` columns of exactly the
replay's Arrow types. An envelope pass runs when :func:`dask_replay` is called (damaged files,
schema ids in use, repeated message ids); the returned DataFrame is lazy.

dask is imported when a function here is called, never when ``metaverse_kit`` is.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from metaverse_kit.backends.protocols import SchemaRegistry
from metaverse_kit.distributed._driver import REPEATED_SCHEMA, Planner, ReplayPlan
from metaverse_kit.distributed._tasks import (
    SCAN_SCHEMA,
    TaskSpec,
    decode_files,
    group_by_size,
    read_local,
    scan_files,
)
from metaverse_kit.errors import CaptureFileError, MissingDependencyError
from metaverse_kit.history.export import (
    ExportFolder,
    ExportReport,
    new_run,
    with_event_date,
    write_part,
)

if TYPE_CHECKING:
    import dask.dataframe as dd

__all__ = ["dask_export", "dask_replay", "require_dask"]

#: Bytes of Capture files per Dask partition (a file larger than this is a partition alone).
PARTITION_BYTES = 64 << 20


def require_dask() -> Any:
    """The ``dask.dataframe`` module; raises :class:`MissingDependencyError` naming the extra."""
    try:
        import dask.dataframe
    except ImportError as exc:
        raise MissingDependencyError(
            "Replaying on Dask", ["dask[dataframe]"], extra="dask"
        ) from exc
    return dask.dataframe


def _read(path: str, storage_options: dict | None) -> bytes:
    if "://" not in path:
        return read_local(path)
    import fsspec

    try:
        with fsspec.open(path, "rb", **(storage_options or {})) as f:
            return bytes(f.read())
    except FileNotFoundError as exc:
        raise CaptureFileError(f"{path} disappeared while replaying") from exc


def _frame(table: pa.Table) -> Any:
    import pandas as pd

    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _scan_partition(paths: Sequence[str], *, spec: TaskSpec, storage_options: dict | None) -> Any:
    batch = scan_files([(p, _read(p, storage_options)) for p in paths], spec)
    return _frame(pa.Table.from_batches([batch], SCAN_SCHEMA))


def _decode_partition(
    paths: Sequence[str], *, spec: TaskSpec, schema: pa.Schema, storage_options: dict | None
) -> Any:
    items = [(p, _read(p, storage_options)) for p in paths]
    return _frame(pa.Table.from_batches(list(decode_files(items, spec, schema)), schema))


def _partitions(files: Sequence[Any], size: int) -> list[list[str]]:
    return [
        [f.path for f in group]
        for group in group_by_size(files, lambda f: f.size, limit=size, files=10_000)
    ]


def _scan(planner: Planner, partition_bytes: int, exported: Any = None) -> ReplayPlan:
    import dask

    dd = require_dask()
    groups = _partitions(planner.readable, partition_bytes)
    if not groups:
        return planner.finish(SCAN_SCHEMA.empty_table(), REPEATED_SCHEMA.empty_table())
    scan = functools.partial(
        _scan_partition, spec=planner.spec, storage_options=planner.storage_options
    )
    scanned = dd.from_map(
        scan, groups, meta=_frame(SCAN_SCHEMA.empty_table()), label="metaverse-scan"
    ).persist()
    summaries = scanned[scanned["row"] < 0][["path", "events", "schema_ids", "error"]]
    events = scanned[scanned["row"] >= 0][["message_id", "path", "row"]]
    # NOTE: a task-based shuffle works on every scheduler (P2P needs a distributed client)
    # and the frames shuffled here are narrow: a message id, a path and a row per event.
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        if planner.dedup:
            counts = events["message_id"].value_counts()
            summary_frame, counted = dask.compute(summaries, counts[counts > 1])
            ids = list(counted.index)
            copies = events[events["message_id"].isin(ids)].compute() if ids else None
        else:
            (summary_frame,) = dask.compute(summaries)
            copies = None
        collided = None
        if exported is not None:
            import pandas as pd

            # NOTE: both sides as Arrow strings: Dask warns (and may mismatch) on mixed dtypes.
            string = pd.ArrowDtype(pa.string())
            ids_frame = exported[["message_id"]].astype(string).drop_duplicates()
            collided = events.merge(ids_frame, on="message_id", how="inner").compute()
    del scanned
    summary_table = pa.Table.from_pandas(summary_frame, preserve_index=False)
    repeated = (
        REPEATED_SCHEMA.empty_table()
        if copies is None
        else pa.Table.from_pandas(copies, preserve_index=False)
    )
    return planner.finish(
        summary_table.cast(pa.schema([SCAN_SCHEMA.field(n) for n in summary_table.column_names])),
        repeated.cast(REPEATED_SCHEMA),
        None
        if collided is None
        else pa.Table.from_pandas(collided, preserve_index=False).cast(REPEATED_SCHEMA),
    )


def dask_replay(
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
    partition_bytes: int = PARTITION_BYTES,
) -> dd.DataFrame:
    """Replay a Capture tree on Dask: a DataFrame of the rows ``mk.replay_capture`` returns.

    Options as :func:`~metaverse_kit.distributed.spark_replay`; ``storage_options`` are also
    handed to fsspec (adlfs) by the workers that read ``abfs[s]://`` files. One partition per
    group of consecutive files of about ``partition_bytes``, in replay order, so
    ``.compute()`` gives the local replay's rows in its order. Columns are pandas
    ``ArrowDtype`` of the replay's Arrow types (``pa.Table.from_pandas`` gives the table
    back). Uses the current Dask scheduler (a ``distributed.Client`` when one is active).

    Raises :class:`~metaverse_kit.errors.MissingDependencyError` when dask is not installed
    (``pip install "metaverse-kit[dask]"``), :class:`~metaverse_kit.errors.CaptureFileError`
    for a damaged file with ``on_bad_file="raise"`` and
    :class:`~metaverse_kit.errors.ConfigurationError` for a bad option.
    """
    dd = require_dask()
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
    plan = _scan(planner, partition_bytes)
    meta = _frame(plan.arrow_schema.empty_table())
    groups = _partitions([f for f in plan.files if f.size > 0], partition_bytes)
    if not groups:
        return dd.from_pandas(meta, npartitions=1)
    decode = functools.partial(
        _decode_partition,
        spec=plan.spec,
        schema=plan.arrow_schema,
        storage_options=planner.storage_options,
    )
    return dd.from_map(decode, groups, meta=meta, label="metaverse-replay")


def _write_partition(
    paths: Sequence[str],
    index: int,
    *,
    spec: TaskSpec,
    schema: pa.Schema,
    storage_options: dict | None,
    folder: str,
) -> int:
    items = [(p, _read(p, storage_options)) for p in paths]
    table = pa.Table.from_batches(list(decode_files(items, spec, schema)), schema)
    write_part(with_event_date(table), Path(folder), f"dask-{index:05d}")
    return table.num_rows


def dask_export(
    location: Any,
    out: str | os.PathLike[str],
    *,
    registry: SchemaRegistry | None = None,
    schemas: Mapping[str, Any] | None = None,
    schema: Any = None,
    storage_options: dict | None = None,
    on_bad_file: str = "raise",
    partition_bytes: int = PARTITION_BYTES,
) -> ExportReport:
    """:func:`~metaverse_kit.history.export.export_parquet` on Dask: workers decode and write.

    Appends the Capture files new since the last run to the Parquet dataset at ``out`` (see
    :mod:`metaverse_kit.history.export`), which the client and every worker must reach as
    the same local path (a shared disk or a mount). Options as :func:`dask_replay`.
    """
    dd = require_dask()
    import dask

    with ExportFolder(out) as folder:
        planner = Planner.for_export(
            location,
            registry=registry,
            schemas=schemas,
            schema=schema,
            storage_options=storage_options,
            on_bad_file=on_bad_file,
        )
        if not folder.start(planner):
            return ExportReport(str(folder.out), None, 0, 0)
        data = [str(p) for p in folder.data_files()]
        exported = dd.read_parquet(data, columns=["message_id"]) if data else None
        plan = _scan(planner, partition_bytes, exported)
        run = new_run()
        staging = folder.staging(run)
        write = functools.partial(
            _write_partition,
            spec=plan.spec,
            schema=plan.arrow_schema,
            storage_options=planner.storage_options,
            folder=os.path.abspath(staging),
        )
        groups = _partitions([f for f in plan.files if f.size > 0], partition_bytes)
        counts = dask.compute(*[dask.delayed(write)(g, i) for i, g in enumerate(groups)])
        files = folder.records(
            planner.files,
            root=planner.lake.root,
            events=plan.events,
            skipped={s.path: s.reason for s in plan.skipped},
        )
        return folder.commit(
            run,
            files=files,
            rows=int(sum(counts)),
            skipped=[asdict(s) for s in plan.skipped],
            duplicates=plan.duplicates,
            engine="dask",
        )
