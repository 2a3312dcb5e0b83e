"""What Spark executors and Dask workers run: pure functions of Capture bytes and a spec.

Nothing here imports an engine or calls a registry: the driver ships every schema definition it
knows (:class:`TaskSpec`), and a task is a function of the bytes it is handed and of that spec.
Both passes call the decode layer (:mod:`metaverse_kit.history.decode`) directly, as the local
replay does, and filter with the replay's own :func:`~metaverse_kit.history.replay.range_mask`:

- :func:`scan_rows` (the *plan pass*) reads only envelopes: one row per file (its events, what
  was damaged) and one per event with a message id (the id and its place in replay order),
  which the engine aggregates to the ids that occur more than once (Dask compares their
  :func:`id_hashes` first);
- :func:`decoded_batches` (the *decode pass*) decodes envelopes and payloads and drops every
  copy of a repeated id but the one the local replay keeps (the first in replay order).
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit.capture import CaptureFile
from metaverse_kit.errors import CaptureFileError
from metaverse_kit.history.decode import (
    CaptureBytes,
    DecodedFile,
    SkippedPart,
    decode_stream,
    read_message_ids_of,
)
from metaverse_kit.history.replay import range_mask

__all__ = [
    "FILE",
    "MESSAGE",
    "SCAN_SCHEMA",
    "FileEntry",
    "TaskSpec",
    "decoded_batches",
    "engine_key",
    "group_by_size",
    "id_hashes",
    "read_local",
    "scan_rows",
]

#: ``kind`` of a plan-pass row: a file's summary (``key`` is its path, ``info`` JSON) or an
#: event's message id (``key``; ``order`` is its place in replay order).
FILE, MESSAGE = 0, 1

#: The rows :func:`scan_rows` returns; engines group them by (kind, key).
SCAN_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.int8()),
        pa.field("key", pa.string()),
        pa.field("order", pa.int64()),
        pa.field("info", pa.string()),
    ]
)

# An event's place in replay order: its file's position in the listing, then its row.
_ROW_BITS = 32


@dataclass(frozen=True)
class FileEntry:
    """A listed Capture file as tasks know it: the listing's record, its position, what to skip.

    ``skip`` events at its start were exported by an earlier run (a grown file, exports only).
    Tasks read ``file.size`` bytes, what the listing saw, so both passes see the same events
    of a file that grows meanwhile.
    """

    file: CaptureFile
    ordinal: int
    skip: int = 0


@dataclass(frozen=True)
class TaskSpec:
    """Everything a task needs besides the bytes, pickled with the tasks.

    ``reader`` is the reader schema's definition (None: the envelope only); ``schemas`` maps
    every schema id the driver knows to its definition (ids missing from it are unknown, as an
    id the registry does not know is in a local replay). ``start``, ``end``, ``partitions``
    filter rows as the local replay does. ``files`` are the listed files by
    :func:`engine_key`. ``repeated`` are the message ids that occur more than once and
    ``first`` the replay order of the copy to keep (-1: none, the dataset has it already).
    """

    reader: str | None
    schemas: Mapping[str, str]
    decoder: str = "auto"
    on_bad_file: str = "raise"
    start: datetime | None = None
    end: datetime | None = None
    partitions: tuple[str, ...] | None = None
    files: Mapping[str, FileEntry] = field(default_factory=dict)
    repeated: pa.Array | None = None
    first: np.ndarray | None = None

    def entry(self, engine_path: str) -> FileEntry:
        """The listed file the engine names ``engine_path``; raises :class:`CaptureFileError`
        for a file the driver did not list (the engine read something else)."""
        found = self.files.get(engine_key(engine_path))
        if found is None and engine_path.startswith("file:") and "%" in engine_path:
            # NOTE: a Spark that %-escapes the local paths it names (3.5 and 4.x do not).
            found = self.files.get("/" + unquote(engine_path[len("file:") :]).lstrip("/"))
        if found is None:
            raise CaptureFileError(
                f"{engine_path} was read by the engine but not listed by the driver"
            )
        return found

    def only(self, paths: Iterable[str]) -> TaskSpec:
        """The spec of a task that reads only ``paths`` (engine paths): less to ship."""
        return replace(self, files={k: self.files[k] for k in map(engine_key, paths)})


def engine_key(path: str) -> str:
    """One spelling of a file's name for the driver's listing and the engine's reads.

    Spark names local files ``file:/abs/path``, as Hadoop prints a path: the characters as they
    are (a folder named ``lake%20copy`` is not ``lake copy``); the driver may list them relative
    to the working folder.
    """
    if path.startswith("file:"):
        return "/" + path[len("file:") :].lstrip("/")
    if "://" in path:
        return unquote(path)
    return os.path.abspath(path)


def group_by_size(
    items: Sequence[Any], size: Any, *, limit: int, files: int = 10_000
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


def read_local(path: str) -> bytes:
    """The bytes of a local file (``file:`` URIs too); raises :class:`CaptureFileError`."""
    try:
        with open(engine_key(path) if path.startswith("file:") else path, "rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise CaptureFileError(f"{path} disappeared while replaying") from exc


# -- which rows of a file the replay keeps ------------------------------------------------------


def _kept_rows(
    batch: pa.RecordBatch, entry: FileEntry, spec: TaskSpec
) -> tuple[pa.RecordBatch, np.ndarray]:
    """The rows of one file's batch the replay keeps (range, exported start) and their rows."""
    rows = np.arange(batch.num_rows, dtype=np.int64)
    if entry.skip:
        batch, rows = batch.slice(entry.skip), rows[entry.skip :]
    mask = range_mask(
        batch,
        start=spec.start,
        end=spec.end,
        partitions=None if spec.partitions is None else list(spec.partitions),
    )
    if mask is None:
        return batch, rows
    keep = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
    return batch.filter(pa.array(keep)), rows[keep]


def _archives(
    items: Iterable[tuple[str, bytes]], spec: TaskSpec, entries: deque[FileEntry]
) -> Iterator[CaptureBytes]:
    """``items`` (engine path, bytes) as the decode layer's archives, lazily: the bytes the
    listing saw, named by the driver's path (local files are read in place by that name).
    Each one's listed entry is appended to ``entries`` as it is handed on, for the caller to
    pair with what the decode layer gives back, in the same order."""
    for engine_path, data in items:
        entry = spec.entry(engine_path)
        entries.append(entry)
        yield CaptureBytes(data[: entry.file.size], entry.file.path, entry.file)


def _orders(entry: FileEntry, rows: np.ndarray) -> np.ndarray:
    return (np.int64(entry.ordinal) << _ROW_BITS) | rows


# -- the plan pass -------------------------------------------------------------------------------


def scan_rows(items: Iterable[tuple[str, bytes]], spec: TaskSpec) -> pa.RecordBatch:
    """The plan pass over ``items`` (engine path, bytes): a :data:`FILE` row per file and a
    :data:`MESSAGE` row per kept event with a message id (see :data:`SCAN_SCHEMA`).

    A file's ``info`` is JSON: ``events`` (read from its intact blocks), ``before`` (of those,
    enqueued before the spec's ``start``), ``skipped`` (the
    :class:`SkippedPart` records of ``on_bad_file="skip"``) and ``error`` (with ``"raise"``,
    the message the local replay raises for it). Damage is reported, never raised: the driver
    raises for the first damaged file in replay order, as the local replay does.
    """
    kinds: list[int] = []
    keys: list[str] = []
    orders: list[int] = []
    infos: list[str | None] = []
    pieces: list[pa.RecordBatch] = []
    entries: deque[FileEntry] = deque()
    archives = _archives(items, spec, entries)
    for read in read_message_ids_of(archives, decoder=spec.decoder, on_bad_file=spec.on_bad_file):
        entry = entries.popleft()
        path = entry.file.path
        found, error = (None, str(read)) if isinstance(read, CaptureFileError) else (read, None)
        events = 0 if found is None else found.events
        skipped = [] if found is None else found.damage
        # NOTE: whether the file held events before start= (the replay then leaves part of the
        # lake's history out, which it records for the questions to warn of).
        before = 0
        if spec.start is not None and found is not None and found.enqueued_time is not None:
            times = found.enqueued_time
            earlier = pc.less(times, pa.scalar(spec.start, times.type))
            before = int(pc.sum(earlier).as_py() or 0)
        kinds.append(FILE)
        keys.append(path)
        orders.append(entry.ordinal)
        infos.append(
            json.dumps(
                {
                    "events": events,
                    "before": before,
                    "error": error,
                    "skipped": [
                        SkippedPart(path, d.reason, events, d.offset).to_dict() for d in skipped
                    ],
                }
            )
        )
        if found is None or found.message_id is None or found.enqueued_time is None:
            continue
        ids = pa.RecordBatch.from_arrays(
            [
                found.enqueued_time,
                found.message_id,
                pa.repeat(pa.scalar(entry.file.partition, pa.string()), events),
            ],
            names=["enqueued_time", "message_id", "partition"],
        )
        kept, rows = _kept_rows(ids, entry, spec)
        mids = kept.column("message_id")
        have = pc.is_valid(mids).to_numpy(zero_copy_only=False)
        if not have.any():
            continue
        n = int(have.sum())
        pieces.append(
            pa.RecordBatch.from_arrays(
                [
                    pa.repeat(pa.scalar(MESSAGE, pa.int8()), n),
                    mids.filter(pa.array(have)),
                    pa.array(_orders(entry, rows[have]), pa.int64()),
                    pa.nulls(n, pa.string()),
                ],
                schema=SCAN_SCHEMA,
            )
        )
    summary = pa.RecordBatch.from_arrays(
        [
            pa.array(kinds, pa.int8()),
            pa.array(keys, pa.string()),
            pa.array(orders, pa.int64()),
            pa.array(infos, pa.string()),
        ],
        schema=SCAN_SCHEMA,
    )
    if not pieces:
        return summary
    return pa.Table.from_batches([summary, *pieces], SCAN_SCHEMA).combine_chunks().to_batches()[0]


def id_hashes(ids: pa.Array) -> np.ndarray:
    """A 64-bit hash (``uint64``) of each string of ``ids`` (no nulls): equal ids, equal hashes.

    For a plan that finds repeated message ids by their hashes first, then compares the few
    candidates' ids exactly: different ids may share a hash, never the reverse.
    PERF: ids of one length (a uuid's, a hex digest's) are rows of one byte matrix, hashed a
    64-bit word at a time with numpy: ~40 ms per 1,000,000 ids, against ~750 ms for Arrow's
    ``value_counts`` of the strings themselves. Ids of many lengths are hashed length by length.
    """
    wide = pa.types.is_large_string(ids.type) or pa.types.is_large_binary(ids.type)
    n = len(ids)
    out = np.zeros(n, dtype=np.uint64)
    if not n:
        return out
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64 if wide else np.int32)[
        ids.offset : ids.offset + n + 1
    ].astype(np.int64)
    raw = ids.buffers()[2]
    data = np.frombuffer(raw, dtype=np.uint8) if raw is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    with np.errstate(over="ignore"):
        for length in np.unique(lengths).tolist():
            rows = np.flatnonzero(lengths == length) if len(lengths) else lengths
            words = -(-length // 8)
            matrix = np.zeros((len(rows), words * 8), dtype=np.uint8)
            if length and len(rows) == n:
                # one length: the ids are one contiguous run of equal rows
                matrix[:, :length] = data[offsets[0] : offsets[-1]].reshape(n, length)
            elif length:
                matrix[:, :length] = data[offsets[:-1][rows, None] + np.arange(length)]
            h = np.full(len(rows), _mix(np.array([length + 1], dtype=np.uint64))[0])
            for column in matrix.view(np.uint64).T:
                h = _mix(h ^ column)
            out[rows] = h
    return out


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


# -- the decode pass -----------------------------------------------------------------------------


def _without_copies(
    batch: pa.RecordBatch, entry: FileEntry, rows: np.ndarray, spec: TaskSpec
) -> pa.RecordBatch:
    """Drop every copy of a repeated message id but the one the plan keeps."""
    if spec.repeated is None or spec.first is None or not len(spec.repeated) or not len(rows):
        return batch
    at = pc.index_in(batch.column("message_id"), value_set=spec.repeated)
    if at.null_count == len(at):
        return batch
    where = pc.fill_null(at, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    repeated = where >= 0
    keep = ~repeated
    keep[repeated] = spec.first[where[repeated]] == _orders(entry, rows[repeated])
    return batch.filter(pa.array(keep))


def decoded_batches(
    items: Iterable[tuple[str, bytes]], spec: TaskSpec, schema: pa.Schema | None = None
) -> Iterator[tuple[FileEntry, DecodedFile, pa.RecordBatch]]:
    """The decode pass over ``items`` (engine path, bytes), lazily, in order.

    For each file: its entry, what the decode layer gave (all its events, what was skipped)
    and the rows the replay keeps of it (range, exported start, copies of repeated message ids
    dropped), cast to ``schema`` when given (an engine's version of the replay's Arrow schema:
    Spark's timestamps are microseconds). Raises :class:`CaptureFileError` for a damaged file
    with ``on_bad_file="raise"`` (the plan pass found none: the file changed since).
    """
    entries: deque[FileEntry] = deque()
    decoded = decode_stream(
        _archives(items, spec, entries),
        reader=spec.reader,
        schemas=spec.schemas,
        decoder=spec.decoder,
        on_bad_file=spec.on_bad_file,
    )
    for done in decoded:
        entry = entries.popleft()
        kept, rows = _kept_rows(done.batch, entry, spec)
        kept = _without_copies(kept, entry, rows, spec).replace_schema_metadata(None)
        yield entry, done, kept if schema is None else kept.cast(schema)
