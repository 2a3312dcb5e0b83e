"""Replay a Capture lake on Dask: ``dask.dataframe.from_map`` over groups of files.

The driver lists and prunes the files (the local replay's lake code) and cuts them into
partitions of about ``partition_bytes`` in replay order; each partition's task reads its files
(local paths, or ``abfs[s]://`` through fsspec/adlfs with ``storage_options``) and runs
:mod:`._tasks`. Columns are pandas ``ArrowDtype`` columns of exactly the replay's Arrow types.
:func:`dask_replay` computes the plan pass (envelopes only: damaged files, message ids that
occur more than once, found by their 64-bit hashes and then compared exactly, see :func:`_plan`)
and returns a lazy DataFrame whose rows are decoded, once, when used.

dask is imported when a function here is called, never when ``metaverse_kit`` is.
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit.backends.protocols import CaptureFile, SchemaRegistry
from metaverse_kit.distributed._plan import GROUPED_SCHEMA, Plan, Planner, held_before, records
from metaverse_kit.distributed._tasks import (
    FILE,
    MESSAGE,
    SCAN_SCHEMA,
    TaskSpec,
    decoded_batches,
    group_by_size,
    id_hashes,
    read_local,
    scan_rows,
)
from metaverse_kit.errors import CaptureFileError, ConfigurationError, MissingDependencyError
from metaverse_kit.history.export import (
    ExportFolder,
    ExportReport,
    message_ids_of,
    new_run,
    with_event_date,
    write_part,
)

if TYPE_CHECKING:
    import dask.dataframe as dd

__all__ = ["PARTITION_BYTES", "dask_export", "dask_replay", "require_dask"]

#: Bytes of Capture files per Dask partition (a file larger than this is a partition alone).
#: PERF: on benchmarks/scale_out.py's tree (1,000,000 events, 300 MB) 32 MB gives 10
#: partitions of about 250 MB of Arrow each and 1.66x from 1 to 2 workers; 64 MB gave 5, which
#: two workers cannot share evenly (1.05x); 16 MB gave 1.6x and a slower lone worker.
PARTITION_BYTES = 32 << 20

#: What opening a file costs, in bytes of reading, when files are grouped by their size
#: (Spark's ``spark.sql.files.openCostInBytes`` idea): many small or empty Capture files do
#: not end up in one partition.
FILE_OPEN_BYTES = 1 << 20


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
    if "://" not in path or path.startswith("file:"):
        return read_local(path)
    import fsspec

    try:
        with fsspec.open(path, "rb", **(storage_options or {})) as f:
            return bytes(f.read())
    except FileNotFoundError as exc:
        raise CaptureFileError(f"{path} disappeared while replaying") from exc


def _items(paths: Sequence[str], storage_options: dict | None) -> Any:
    return ((p, _read(p, storage_options)) for p in paths)


def _frame(table: pa.Table, attrs: Mapping[str, str] | None = None) -> Any:
    import pandas as pd

    frame = table.to_pandas(types_mapper=pd.ArrowDtype)
    if attrs:
        frame.attrs.update(attrs)
    return frame


def _partition_size(value: object) -> int:
    """``partition_bytes`` as a number of bytes: a positive int, or text as Dask writes sizes
    (``"64MiB"``, ``"100 MB"``); raises :class:`ConfigurationError` for anything else."""
    from dask.utils import parse_bytes

    size: object = value
    if isinstance(value, str):
        try:
            size = parse_bytes(value)
        except ValueError:
            size = None
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ConfigurationError(
            f"partition_bytes= takes a size in bytes (33554432) or as text ('32MiB'); got {value!r}"
        )
    return size


def _groups(
    planner: Planner,
    files: Sequence[CaptureFile],
    size: int,
    events: Mapping[str, int] | None = None,
) -> list[list[str]]:
    """Consecutive files in groups of about ``size`` bytes: one partition each.

    With the plan pass's event counts (``events``), a file weighs its events times the lake's
    mean bytes per event: decoding costs by the event, and a deflated file holds as many events
    as a plain one ten times its size (a tree of both gave one 130-file partition that took a
    third of the whole decode). Without them (the plan pass itself), a file weighs its bytes
    plus :data:`FILE_OPEN_BYTES`, as Spark's file sources weigh the cost of opening a file.
    """
    total = sum(events.get(f.path, 0) for f in files) if events else 0
    per_event = sum(f.size for f in files) / total if total else 0.0

    def weight(f: CaptureFile) -> float:
        if events and total:
            return events.get(f.path, 0) * per_event
        return f.size + FILE_OPEN_BYTES

    return [
        [planner.engine_path(f) for f in group]
        for group in group_by_size(files, weight, limit=size)
    ]


# -- the plan pass -------------------------------------------------------------------------------


def _task_specs(spec: TaskSpec, groups: Sequence[Sequence[str]]) -> list[TaskSpec]:
    """Each group's spec with only its own files: what its task is pickled with.

    NOTE: a spec holds a record of every listed file (about 300 bytes each); shipped whole with
    every task, a listing of a million Capture files (a year of a busy namespace) would send
    300 MB with each task. The schemas and the repeated ids still go with each.
    """
    return [spec.only(paths) for paths in groups]


@dataclass(frozen=True)
class _Scanned:
    """What one plan task found, kept on its worker: its files' rows (:data:`FILE`), and the
    message ids of its events with their replay order and their :func:`id_hashes`."""

    files: pa.RecordBatch
    ids: pa.Array
    orders: np.ndarray
    hashes: np.ndarray


def _scan_group(
    paths: Sequence[str],
    spec: TaskSpec,
    *,
    storage_options: dict | None,
    hash_ids: Callable[[pa.Array], np.ndarray],
) -> _Scanned:
    batch = scan_rows(_items(paths, storage_options), spec)
    kinds = batch.column("kind").to_numpy(zero_copy_only=False)
    files = int((kinds == FILE).sum())  # scan_rows puts its files' rows first
    ids = batch.column("key").slice(files)
    return _Scanned(
        files=batch.slice(0, files),
        ids=ids,
        orders=batch.column("order").slice(files).to_numpy(zero_copy_only=False),
        hashes=hash_ids(ids),
    )


def _hashes(scanned: _Scanned) -> np.ndarray:
    return scanned.hashes


def _exported_ids(path: str) -> pa.Array:
    """The distinct message ids of one of an export's data files.

    NOTE: not ``dd.read_parquet``: fsspec expands glob characters in the paths it is given,
    and an export folder's name may hold some (``[``, ``?``, ``*``).
    """
    return pc.unique(message_ids_of(path).drop_null()).cast(pa.string())


def _repeated(
    hashes: Sequence[np.ndarray],
    exported: Sequence[pa.Array],
    hash_ids: Callable[[pa.Array], np.ndarray],
) -> np.ndarray:
    """The hashes that occur more than once among the scanned ids and the exported ones
    (which the dataset holds once each), sorted."""
    every = np.concatenate([*hashes, *(hash_ids(e) for e in exported), np.zeros(0, np.uint64)])
    values, counts = np.unique(every, return_counts=True)
    return values[counts > 1]


def _candidates(ids: pa.Array, hashes: np.ndarray, repeated: np.ndarray) -> np.ndarray:
    """Which of ``ids`` have a hash in ``repeated`` (sorted): the only ones compared exactly."""
    if not len(repeated) or not len(ids):
        return np.zeros(len(ids), dtype=bool)
    at = np.searchsorted(repeated, hashes).clip(0, len(repeated) - 1)
    return repeated[at] == hashes


def _scanned_candidates(scanned: _Scanned, repeated: np.ndarray) -> pa.Table:
    keep = _candidates(scanned.ids, scanned.hashes, repeated)
    return pa.table(
        {
            "key": scanned.ids.filter(pa.array(keep)),
            "order": pa.array(scanned.orders[keep], pa.int64()),
        }
    )


def _exported_candidates(
    ids: pa.Array, repeated: np.ndarray, hash_ids: Callable[[pa.Array], np.ndarray]
) -> pa.Table:
    """The exported ids with a hash in ``repeated``, with order -1 (none of them is kept)."""
    kept = ids.filter(pa.array(_candidates(ids, hash_ids(ids), repeated)))
    return pa.table({"key": kept, "order": pa.repeat(pa.scalar(-1, pa.int64()), len(kept))})


def _file_rows(scanned: _Scanned) -> pa.RecordBatch:
    return scanned.files


def _plan(
    planner: Planner,
    partition_bytes: int,
    exported: Sequence[str] = (),
    *,
    hash_ids: Callable[[pa.Array], np.ndarray] = id_hashes,
) -> Plan:
    """Compute the plan pass on the current Dask scheduler and hand it to the planner.

    Each task scans a group of files and keeps what it found; only the 64-bit hashes of the
    message ids travel, to one task that finds the hashes seen more than once; each scan then
    sends back the ids that have one of those hashes (copies, and the rare ids that share a
    hash with another), which the driver compares exactly. PERF: on benchmarks/scale_out.py's
    tree (1,000,000 events, none repeated) Dask's ``groupby().agg`` of the ids themselves cost
    ~1 s of a 3.3-3.9 s plan on one worker, and more with more partitions (6.0 s with 23);
    this costs ~0.1 s, so the plan can have as many tasks as the decode, for every worker.
    """
    import dask

    groups = _groups(planner, planner.files, partition_bytes)
    if not groups:
        return planner.finish(GROUPED_SCHEMA.empty_table())
    scan = dask.delayed(_scan_group, pure=False)
    scans = [
        scan(paths, spec, storage_options=planner.storage_options, hash_ids=hash_ids)
        for paths, spec in zip(groups, _task_specs(planner.spec, groups), strict=True)
    ]
    known = [dask.delayed(_exported_ids)(path) for path in exported]
    repeated = dask.delayed(_repeated)([dask.delayed(_hashes)(s) for s in scans], known, hash_ids)
    files, found, found_known = dask.compute(
        [dask.delayed(_file_rows)(s) for s in scans],
        [dask.delayed(_scanned_candidates)(s, repeated) for s in scans],
        [dask.delayed(_exported_candidates)(k, repeated, hash_ids) for k in known],
    )
    if found_known:
        # An exported id is in the dataset once: one copy of it, whichever parts list it.
        known_ids = pc.unique(pa.concat_tables(found_known).column("key").combine_chunks())
        found.append(
            pa.table(
                {"key": known_ids, "order": pa.repeat(pa.scalar(-1, pa.int64()), len(known_ids))}
            )
        )
    candidates = pa.concat_tables(found) if found else None
    table = pa.Table.from_batches(files, SCAN_SCHEMA)
    file_rows = pa.table(
        {
            "kind": table.column("kind"),
            "key": table.column("key"),
            "first": table.column("order"),
            "n": pa.repeat(pa.scalar(1, pa.int64()), table.num_rows),
            "info": table.column("info"),
        },
        schema=GROUPED_SCHEMA,
    )
    parts = [file_rows]
    if candidates is not None and candidates.num_rows:
        counted = candidates.group_by("key").aggregate([("order", "min"), ("order", "count")])
        counted = counted.filter(pc.greater(counted.column("order_count"), 1))
        parts.append(
            pa.table(
                {
                    "kind": pa.repeat(pa.scalar(MESSAGE, pa.int8()), counted.num_rows),
                    "key": counted.column("key"),
                    "first": counted.column("order_min"),
                    "n": counted.column("order_count"),
                    "info": pa.nulls(counted.num_rows, pa.string()),
                },
                schema=GROUPED_SCHEMA,
            )
        )
    return planner.finish(pa.concat_tables(parts))


def _file_infos(
    paths: Sequence[str], spec: TaskSpec, *, storage_options: dict | None
) -> list[dict[str, Any]]:
    """The plan pass's :data:`FILE` rows' ``info`` of one group of files, read."""
    batch = scan_rows(_items(paths, storage_options), spec)
    kinds = batch.column("kind").to_numpy(zero_copy_only=False)
    return [json.loads(i) for i in batch.column("info").filter(pa.array(kinds == FILE)).to_pylist()]


def _unplanned(planner: Planner, partition_bytes: int) -> Plan:
    """The plan of a replay without a plan pass; with ``start=``, after a scan of the envelopes
    of :meth:`~._plan.Planner.boundary_files` tells whether it left events out."""
    import dask

    boundary = planner.boundary_files()
    if not boundary:
        return planner.unplanned()
    groups = _groups(planner, boundary, partition_bytes)
    scan = dask.delayed(_file_infos, pure=False)
    found = dask.compute(
        *[
            scan(paths, spec, storage_options=planner.storage_options)
            for paths, spec in zip(groups, _task_specs(planner.spec, groups), strict=True)
        ]
    )
    # NOTE: damage is not raised here: without a plan pass it raises where it is decoded.
    return planner.unplanned(cut=held_before(info for infos in found for info in infos))


# -- the decode pass -----------------------------------------------------------------------------


def _decode_table(
    paths: Sequence[str], spec: TaskSpec, schema: pa.Schema, storage_options: dict | None
) -> pa.Table:
    rows = [r for _, _, r in decoded_batches(_items(paths, storage_options), spec)]
    return pa.Table.from_batches(rows, schema)


def _decode_partition(
    paths: Sequence[str],
    spec: TaskSpec,
    *,
    schema: pa.Schema,
    storage_options: dict | None,
    attrs: Mapping[str, str],
) -> Any:
    return _frame(_decode_table(paths, spec, schema, storage_options), attrs)


def _decoded(planner: Planner, plan: Plan, partition_bytes: int) -> dd.DataFrame:
    dd = require_dask()
    attrs = records(plan)
    meta = _frame(plan.arrow_schema.empty_table(), attrs)
    groups = _groups(planner, plan.files, partition_bytes, plan.events)
    if not groups:
        return dd.from_pandas(meta, npartitions=1)
    return dd.from_map(
        _decode_partition,
        groups,
        _task_specs(plan.spec, groups),
        meta=meta,
        label="mk-replay",
        schema=plan.arrow_schema,
        storage_options=planner.storage_options,
        attrs=attrs,
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
    partition_bytes: int | str = PARTITION_BYTES,
) -> dd.DataFrame:
    """Replay a Capture tree on Dask: a DataFrame of the rows ``mk.replay_capture`` returns.

    Options as :func:`~metaverse_kit.distributed.spark_replay`; ``storage_options`` are also
    handed to fsspec (adlfs) by the workers that read ``abfs[s]://`` files. One partition per
    group of consecutive files of about ``partition_bytes`` (bytes, or text such as
    ``"64MiB"``), in replay order, so
    ``.compute()`` gives the local replay's rows in its order. Columns are pandas
    ``ArrowDtype`` of the replay's Arrow types (``pa.Table.from_pandas`` gives the table
    back); ``mk.skipped_files(ddf)`` and ``mk.duplicates_dropped(ddf)`` read its ``attrs``.
    Uses the current Dask scheduler (a ``distributed.Client`` when one is active), which runs
    the plan pass before this returns.

    Raises :class:`~metaverse_kit.errors.MissingDependencyError` when dask is not installed
    (``pip install "metaverse-kit[dask]"``), :class:`~metaverse_kit.errors.CaptureFileError`
    for a damaged file with ``on_bad_file="raise"`` and
    :class:`~metaverse_kit.errors.ConfigurationError` for a bad option.
    """
    require_dask()
    size = _partition_size(partition_bytes)
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
    plan = _plan(planner, size) if planner.needs_scan else _unplanned(planner, size)
    return _decoded(planner, plan, size)


# -- the export ----------------------------------------------------------------------------------


def _write_partition(
    paths: Sequence[str],
    spec: TaskSpec,
    index: int,
    *,
    schema: pa.Schema,
    storage_options: dict | None,
    folder: str,
) -> tuple[int, list[str]]:
    """A task's decode and write: its rows and the files it wrote (relative to ``folder``).

    NOTE: named by task and call: a task Dask ran again (its worker was lost) writes files of
    its own, and the commit keeps only the ones the results name.
    """
    table = _decode_table(paths, spec, schema, storage_options)
    name = f"dask-{index:05d}-{uuid.uuid4().hex[:8]}"
    return table.num_rows, write_part(with_event_date(table), Path(folder), name)


def dask_export(
    location: Any,
    out: str | os.PathLike[str],
    *,
    registry: SchemaRegistry | None = None,
    schemas: Mapping[str, Any] | None = None,
    schema: Any = None,
    storage_options: dict | None = None,
    on_bad_file: str = "raise",
    partition_bytes: int | str = PARTITION_BYTES,
) -> ExportReport:
    """:func:`~metaverse_kit.history.export.export_parquet` on Dask: workers decode and write.

    Appends the Capture files new since the last run to the Parquet dataset at ``out`` (see
    :mod:`metaverse_kit.history.export`), which the client and every worker must reach as
    the same local path (a shared disk or a mount). Options as :func:`dask_replay`. Raises as
    :func:`~metaverse_kit.history.export.export_parquet` does.
    """
    require_dask()
    import dask

    size = _partition_size(partition_bytes)
    with ExportFolder(out) as folder:
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
        plan = _plan(planner, size, [str(p) for p in folder.data_files()])
        run = new_run()
        write = functools.partial(
            _write_partition,
            schema=plan.arrow_schema,
            storage_options=planner.storage_options,
            folder=os.path.abspath(folder.staging(run)),
        )
        groups = _groups(planner, plan.files, size, plan.events)
        specs = _task_specs(plan.spec, groups)
        done = dask.compute(*[dask.delayed(write)(g, specs[i], i) for i, g in enumerate(groups)])
        return folder.commit(
            run,
            files=folder.records(
                planner.files, root=planner.lake.root, events=plan.events, skipped=plan.skipped
            ),
            rows=sum(rows for rows, _ in done),
            skipped=plan.skipped,
            duplicates=plan.duplicates,
            engine="dask",
            reader=plan.spec.reader,
            written=[path for _, files in done for path in files],
        )
