"""What Spark executors and Dask workers run: pure functions of Capture bytes and a spec.

Nothing here imports an engine or calls a registry: the driver resolves every schema id the
files use and ships the definitions in the spec, so a task is a function of the bytes it is
handed and of what was pickled with it.

Two passes read the files:

- :func:`scan_files` reads only the envelopes. It returns one summary row per file (events,
  schema ids, the error that made it unreadable) and one row per event that has a message id
  (path, row, message id), after the replay's time and partition filter. The driver uses them
  to resolve schemas, to report damaged files, and to find the message ids that occur more
  than once, with the copy the local replay would keep.
- :func:`decode_files` decodes envelopes and payloads, applies the same filter, drops the
  copies the driver named, and returns the replay's columns.

:func:`_decode` is the only call into the replay's decoder, so pointing these tasks at another
decoder is a change of one function.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit.errors import CaptureFileError

__all__ = [
    "BAD_FILE_CHOICES",
    "SCAN_SCHEMA",
    "SkippedFile",
    "TaskSpec",
    "decode_files",
    "decoded_files",
    "group_by_size",
    "scan_files",
]

#: What ``on_bad_file`` accepts: stop at the first damaged file, or leave it out and say so.
BAD_FILE_CHOICES = ("raise", "skip")

#: The rows :func:`scan_files` returns. ``row`` is -1 on a file's summary row, which carries
#: ``events`` (all the file's events, before filtering), ``schema_ids`` and ``error``; event
#: rows carry ``row`` (the event's position in its file) and ``message_id``.
SCAN_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("message_id", pa.string()),
        pa.field("events", pa.int64()),
        pa.field("schema_ids", pa.list_(pa.string())),
        pa.field("error", pa.string()),
    ]
)

# PERF: bodies of several small files are decoded in one native call (see
# history.replay._GROUP_EVENTS); a task cuts its files into groups of about this many bytes.
_GROUP_BYTES = 4 << 20
_GROUP_FILES = 256


@dataclass(frozen=True)
class SkippedFile:
    """A Capture file a replay left out (``on_bad_file="skip"``): where, why, what was kept."""

    path: str
    reason: str
    events_kept: int = 0


@dataclass(frozen=True)
class TaskSpec:
    """Everything a task needs besides the bytes: pickled once and shipped with the tasks.

    ``payload`` is the payload schema's definition (None: the envelope only); ``schemas`` maps
    every schema id the files use to its definition (ids missing from it are unknown, as ids the
    registry does not know are in a local replay). ``start``, ``end`` and ``partitions`` filter
    events as the local replay does. ``first_copies`` maps each message id that occurs more than
    once to the (path, row) of the copy to keep (``("", -1)``: keep none, it was exported
    before). ``roots`` maps the prefix of paths as the
    engine names them to the prefix the driver's listing uses (so ``capture_file`` is the same).
    """

    payload: str | None
    schemas: Mapping[str, str] = field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None
    partitions: tuple[str, ...] | None = None
    on_bad_file: str = "raise"
    first_copies: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    roots: tuple[tuple[str, str], ...] = ()
    #: Events of a file before this row were exported by an earlier run (the file has grown).
    skip_rows: Mapping[str, int] = field(default_factory=dict)

    def our_path(self, engine_path: str) -> str:
        """The driver's name of a file the engine names ``engine_path``."""
        path = engine_path
        if path.startswith("file:"):
            path = "/" + path[len("file:") :].lstrip("/")
        for engine_root, root in self.roots:
            if path == engine_root or path.startswith(engine_root.rstrip("/") + "/"):
                return root + path[len(engine_root) :]
        return path


def group_by_size(
    items: Sequence[Any], size: Any, *, limit: int, files: int = _GROUP_FILES
) -> Iterator[list[Any]]:
    """Consecutive runs of ``items`` of about ``limit`` bytes (``size(item)``), or ``files``."""
    group: list[Any] = []
    total = 0
    for item in items:
        n = int(size(item))
        if group and (total + n > limit or len(group) >= files):
            yield group
            group, total = [], 0
        group.append(item)
        total += n
    if group:
        yield group


# -- the decoder ---------------------------------------------------------------------------------


def _decode(
    items: Sequence[tuple[str, bytes]], spec: TaskSpec, *, envelope_only: bool
) -> list[Any]:
    """Decode files with the local replay's own per-file decoder: one RecordBatch per file.

    NOTE: the one call into the decoder. It raises :class:`CaptureFileError` naming the first
    file it cannot read; :func:`_decode_each` turns that into per-file results.
    """
    from metaverse_kit.history.replay import CaptureBytes, PayloadSchema, decode_capture_files

    payload = None if envelope_only or spec.payload is None else PayloadSchema(spec.payload)
    return decode_capture_files(
        [CaptureBytes(data, path) for path, data in items],
        payload=payload,
        schemas=spec.schemas.get,
    )


def _decode_each(
    items: Sequence[tuple[str, bytes]], spec: TaskSpec, *, envelope_only: bool
) -> list[pa.RecordBatch | CaptureFileError]:
    """:func:`_decode` of a group; when a file of it is damaged, each file on its own.

    A damaged file's place holds its :class:`CaptureFileError`. With block-level recovery in
    the decoder, a file's intact blocks would come back here with the error of the rest.
    """
    try:
        return list(_decode(items, spec, envelope_only=envelope_only))
    except CaptureFileError:
        if len(items) == 1:
            return [_error_of(items[0], spec, envelope_only=envelope_only)]
    out: list[pa.RecordBatch | CaptureFileError] = []
    for item in items:
        try:
            out.extend(_decode([item], spec, envelope_only=envelope_only))
        except CaptureFileError as exc:
            out.append(exc)
    return out


def _error_of(
    item: tuple[str, bytes], spec: TaskSpec, *, envelope_only: bool
) -> pa.RecordBatch | CaptureFileError:
    try:
        return _decode([item], spec, envelope_only=envelope_only)[0]
    except CaptureFileError as exc:
        return exc


def _filtered(
    batch: pa.RecordBatch, spec: TaskSpec, path: str
) -> tuple[pa.RecordBatch, np.ndarray]:
    """The events of one file inside the replay's time and partition range, with their rows."""
    from metaverse_kit.history.replay import _filter

    rows = np.arange(batch.num_rows, dtype=np.int64)
    skip = spec.skip_rows.get(path, 0)
    if skip:
        batch, rows = batch.slice(skip), rows[skip:]
    if spec.start is None and spec.end is None and spec.partitions is None:
        return batch, rows
    with_rows = batch.append_column("__row", pa.array(rows, pa.int64()))
    parts = None if spec.partitions is None else list(spec.partitions)
    kept = _filter(with_rows, spec.start, spec.end, parts)
    index = kept.column("__row").to_numpy()
    return kept.drop_columns(["__row"]), index


# -- the two passes ------------------------------------------------------------------------------


def scan_files(items: Sequence[tuple[str, bytes]], spec: TaskSpec) -> pa.RecordBatch:
    """The envelope pass: a summary row per file and a row per event with a message id.

    ``items`` are (path as the engine names it, bytes). Damaged files get a summary row with
    their error whatever ``on_bad_file`` says: the driver decides.
    """
    columns: dict[str, list[Any]] = {name: [] for name in SCAN_SCHEMA.names}
    pieces: list[pa.RecordBatch] = []
    named = [(spec.our_path(path), data) for path, data in items]
    for (path, _), result in zip(named, _decode_each(named, spec, envelope_only=True), strict=True):
        if isinstance(result, CaptureFileError):
            _summary(columns, path, 0, [], str(result))
            continue
        ids = result.column("schema_id")
        _summary(columns, path, result.num_rows, [i for i in pc.unique(ids).to_pylist() if i], None)
        kept, rows = _filtered(result, spec, path)
        mids = kept.column("message_id")
        have = pc.is_valid(mids).to_numpy(zero_copy_only=False)
        if have.any():
            n = int(have.sum())
            pieces.append(
                pa.RecordBatch.from_arrays(
                    [
                        pa.repeat(pa.scalar(path, pa.string()), n),
                        pa.array(rows[have]),
                        mids.filter(pa.array(have)),
                        pa.nulls(n, pa.int64()),
                        pa.nulls(n, pa.list_(pa.string())),
                        pa.nulls(n, pa.string()),
                    ],
                    schema=SCAN_SCHEMA,
                )
            )
    summary = pa.RecordBatch.from_pydict(columns, schema=SCAN_SCHEMA)
    if not pieces:
        return summary
    table = pa.Table.from_batches([summary, *pieces], SCAN_SCHEMA).combine_chunks()
    return table.to_batches()[0]


def _summary(
    columns: dict[str, list[Any]], path: str, events: int, ids: list[str], error: str | None
) -> None:
    for name, value in zip(SCAN_SCHEMA.names, (path, -1, None, events, ids, error), strict=True):
        columns[name].append(value)


def decoded_files(
    items: Sequence[tuple[str, bytes]], spec: TaskSpec
) -> Iterator[tuple[str, pa.RecordBatch | CaptureFileError, int]]:
    """Each file's path, its replay rows (filtered, deduplicated) or its error, and its events.

    ``items`` are (path as the engine names it, bytes); the path given back is the driver's.
    The event count is the whole file's, before filtering (what an export records).
    """
    named = [(spec.our_path(path), data) for path, data in items]
    for group in group_by_size(named, lambda item: len(item[1]), limit=_GROUP_BYTES):
        for (path, _), result in zip(
            group, _decode_each(group, spec, envelope_only=False), strict=True
        ):
            if isinstance(result, CaptureFileError):
                yield path, result, 0
                continue
            kept, rows = _filtered(result, spec, path)
            yield path, _without_repeats(kept, rows, path, spec.first_copies), result.num_rows


def decode_files(
    items: Sequence[tuple[str, bytes]], spec: TaskSpec, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """The decode pass: the replay's rows of ``items`` (filtered, deduplicated) as ``schema``.

    ``schema`` is the replay's Arrow schema, or the engine's version of it (Spark's timestamps
    are microseconds): each batch is cast to it. A damaged file raises
    :class:`CaptureFileError` with ``on_bad_file="raise"`` and is left out with ``"skip"``
    (the driver has already reported it).
    """
    for _, result, _ in decoded_files(items, spec):
        if isinstance(result, CaptureFileError):
            if spec.on_bad_file == "raise":
                raise result
            continue
        if result.num_rows:
            yield result.replace_schema_metadata(None).cast(schema)


def _without_repeats(
    batch: pa.RecordBatch, rows: np.ndarray, path: str, first: Mapping[str, tuple[str, int]]
) -> pa.RecordBatch:
    """Drop every copy of a repeated message id but the one the driver chose to keep."""
    if not first or not batch.num_rows:
        return batch
    ids = batch.column("message_id")
    repeated = pc.is_in(ids, value_set=pa.array(list(first), pa.string()), skip_nulls=True)
    candidates = np.flatnonzero(repeated.to_numpy(zero_copy_only=False))
    if not len(candidates):
        return batch
    keep = np.ones(batch.num_rows, dtype=bool)
    values = ids.take(pa.array(candidates)).to_pylist()
    for i, mid in zip(candidates.tolist(), values, strict=True):
        keep[i] = first[mid] == (path, int(rows[i]))
    return batch.filter(pa.array(keep))


def read_local(path: str) -> bytes:
    """The bytes of a local file (``file:`` URIs too); raises :class:`CaptureFileError`."""
    local = path[len("file:") :] if path.startswith("file:") else path
    try:
        with open(os.path.normpath(local), "rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise CaptureFileError(f"{path} disappeared while replaying") from exc
