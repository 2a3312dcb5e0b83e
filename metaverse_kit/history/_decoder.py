"""The native Avro decoder of replay: Apache DataFusion's Avro reader (Rust, arrow-rs) into Arrow.

Two steps, each one call into native code, so no Python runs per event:

1. :func:`read_envelope` reads a Capture container (any codec) into Arrow columns, and turns
   its property maps (values are unions of long, double, string, bytes, null) into
   ``map<string, string>`` with vectorised gathers.
2. :func:`decode_bodies` splices the bodies of one schema id into a single Avro block behind
   a container header that carries the writer schema (an Avro body is exactly one datum, so
   the concatenation of n bodies is a valid block of n records), reads that block, and
   conforms DataFusion's Arrow types to :mod:`metaverse_kit.history.arrow_types` (dense unions
   become ``struct<branch, <short name>...>``, enums become strings). :func:`decode_chunks`
   gives the arrays of its reads (at most ``_BATCH_ROWS`` records each) without joining them.

:func:`interleave` puts arrays decoded apart (one writer version each) back in event order.

DataFusion reads files, not bytes: each call writes its input to a private temporary file
(in ``/dev/shm`` when there is one) and removes it, or, for a whole local file the caller names
(``source=``) that still holds what the caller read, reads that file in place through a
temporary link. Everything here is a function of its
arguments; the session contexts cached per thread hold no data between calls.

Whatever this module cannot do raises :class:`Unsupported`, and the caller decodes with
fastavro instead, so a schema or file the native reader rejects still replays, only slower.
DataFusion names a reader's Arrow fields with Avro metadata (``avro.name``...) that its
inferred table schema lacks, and then refuses its own batches for union children; passing
the inferred schema back with that metadata restored (:func:`_with_avro_metadata`) avoids it.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit.capture import AVRO_MAGIC, zigzag
from metaverse_kit.events.avro import AvroSchema
from metaverse_kit.history.arrow_types import parsed

__all__ = [
    "TEMP_PREFIX",
    "Unsupported",
    "available",
    "compact_nulls",
    "decode_bodies",
    "decode_chunks",
    "interleave",
    "lookup",
    "own",
    "pool",
    "property_text",
    "read_envelope",
    "read_properties",
    "string_entry",
    "temp_folders",
]

_STRINGS = pa.map_(pa.string(), pa.string())
_local = threading.local()
# DataFusion 55 misreads unions when one Avro block spans two of its batches ("Offsets must be
# non-negative..."): every call reads at most this many records, all in one batch.
_BATCH_ROWS = 8192


def pool() -> pa.MemoryPool:
    """Where the arrays replay returns are allocated: the C library's allocator.

    PERF: pyarrow's default pool (mimalloc) backs its arenas with transparent huge pages and
    returns freed pages to the system within milliseconds, to fault them in again for the
    next group; on a virtual machine those faults cost more system time than the decoding
    itself (0.1-1 s per 100,000 events here). malloc places the table's buffers exactly,
    reuses what a group frees for the next, and measured lowest in both time and peak memory
    (jemalloc came close). Passed per call: the process's default pool is left alone.
    """
    return pa.system_memory_pool()


def compact_nulls(n: int, t: pa.DataType) -> pa.Array:
    """``n`` nulls of type ``t`` whose buffers are each exactly the size their array needs.

    Every buffer is a slice of one zeroed buffer shared by all such arrays: about half of a
    replayed table of DataHub MCEs is union branches and optional records that no event of a
    group uses, and they now cost no memory, nor the time to fill and copy it (a replay of
    ``benchmarks/replay.py``'s history: peak memory 345 -> 240 MiB, CPU time about a fifth
    less). ``pa.nulls`` also shares one zeroed buffer, but hands every child the buffer of the
    largest size any of them needs (also the empty values of its lists); the Arrow IPC writer
    (the replay cache) then writes that whole buffer for each of them, so a cache entry would
    grow by the size of every all-null branch times its nesting. Slices of the right size are
    written as what they are. NOTE: not memoised: hashing a DataHub-sized Arrow type (its
    text) costs as much as building the array again.
    """
    bitmap = _zeroed((n + 7) // 8)
    if pa.types.is_struct(t):
        children = [compact_nulls(n, t.field(i).type) for i in range(t.num_fields)]
        return pa.Array.from_buffers(t, n, [bitmap], n, children=children)
    if pa.types.is_map(t):
        entries = pa.struct([t.key_field, t.item_field])
        offsets = _zeroed(4 * (n + 1))
        return pa.Array.from_buffers(
            t, n, [bitmap, offsets], n, children=[compact_nulls(0, entries)]
        )
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        offsets = _zeroed((8 if pa.types.is_large_list(t) else 4) * (n + 1))
        child = compact_nulls(0, t.value_type)
        return pa.Array.from_buffers(t, n, [bitmap, offsets], n, children=[child])
    if pa.types.is_string(t) or pa.types.is_binary(t):
        return pa.Array.from_buffers(t, n, [bitmap, _zeroed(4 * (n + 1)), _zeroed(0)], n)
    if pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        return pa.Array.from_buffers(t, n, [bitmap, _zeroed(8 * (n + 1)), _zeroed(0)], n)
    if pa.types.is_null(t):
        return pa.nulls(n)
    width = getattr(t, "bit_width", None)
    if isinstance(width, int) and width > 0 and not pa.types.is_dictionary(t):
        # Fixed width: numbers, booleans, times, decimals, fixed-size binary.
        return pa.Array.from_buffers(t, n, [bitmap, _zeroed((n * width + 7) // 8)], n)
    # Anything else (dictionaries, unions: replay makes neither): a copy, compact.
    shared = pa.nulls(n, t, memory_pool=pool())
    return pa.concat_arrays([shared], memory_pool=pool()) if pa.types.is_nested(t) else shared


_zeros_lock = threading.Lock()
_zeros: pa.Buffer | None = None


def _zeroed(size: int) -> pa.Buffer:
    """``size`` zero bytes: a slice of one shared buffer, grown when a bigger one is needed."""
    global _zeros
    with _zeros_lock:
        if _zeros is None or _zeros.size < size:
            # Arrays never write into their buffers; a grown buffer leaves the old one to the
            # arrays that hold slices of it. Aligned as Arrow allocates (64 bytes).
            zeros = pa.allocate_buffer(max(size, 1 << 16), memory_pool=pool())
            np.frombuffer(zeros, dtype=np.uint8)[:] = 0
            _zeros = zeros
        return _zeros.slice(0, size)


def own(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A copy of ``a`` in :func:`pool`: nothing of DataFusion's output outlives a call.

    PERF: an array imported from DataFusion keeps its whole record batch alive (all columns,
    with the spare capacity of its builders) for as long as any one buffer of it is used, in
    DataFusion's own allocator, which then holds several times the bytes still in use. Copying
    the few leaves replay keeps (strings, offsets, keys) lets every batch go after its group.
    """
    chunks = a.chunks if isinstance(a, pa.ChunkedArray) else [a]
    if not chunks:
        return pa.array([], a.type)
    return pa.concat_arrays(chunks, memory_pool=pool())


def interleave(pieces: list[pa.Array], index: np.ndarray) -> pa.Array:
    """``take(concat(pieces), index)``, where ``index`` (int64) is -1 for a null row.

    How the groups of an evolved lake's writer versions, decoded apart, are put back in event
    order. PERF: a record of DataHub's size has hundreds of leaves, and most of them, whole
    union branches, are null in every piece; Arrow's ``take`` still gathers each (and the
    concatenation copies each first). Here an all-null subtree is made at once, records and
    lists are walked (a list's items are gathered by the same rule, one level down), and only
    the leaves that hold a value are concatenated and taken: about 40% less time on
    ``benchmarks/replay.py``'s ``evolved-fields`` history (0.58 s to 0.35 s for 100,000 events).
    """
    return _interleave(pieces, _Rows(index), pieces[0].type)


class _Rows:
    """Where an interleaved array's rows come from: ``index`` into the pieces, -1 for null."""

    def __init__(self, index: np.ndarray, *, nulls: bool = True) -> None:
        self.index = index
        self.missing = index < 0 if nulls else None
        self.safe = index if self.missing is None else np.where(self.missing, 0, index)
        self._at: pa.Array | None = None

    @property
    def at(self) -> pa.Array:
        """``index`` as Arrow's take wants it (made once, shared by every leaf)."""
        if self._at is None:
            missing = self.missing if self.missing is not None and self.missing.any() else None
            self._at = pa.array(self.index, mask=missing)
        return self._at

    def validity(self, pieces: list[pa.Array]) -> tuple[np.ndarray | None, pa.Array | None]:
        """Which rows are valid (None: all) and the mask Arrow takes (None: no nulls)."""
        valid = None if self.missing is None else ~self.missing
        if any(p.null_count for p in pieces):
            taken = np.concatenate([p.is_valid().to_numpy(zero_copy_only=False) for p in pieces])[
                self.safe
            ]
            valid = taken if valid is None else valid & taken
        if valid is None or valid.all():
            return None, None
        return valid, pa.array(~valid)


def _interleave(pieces: list[pa.Array], rows: _Rows, t: Any) -> pa.Array:
    n = len(rows.index)
    if all(p.null_count == len(p) for p in pieces):
        return compact_nulls(n, t)
    if pa.types.is_struct(t):
        _, mask = rows.validity(pieces)
        children = [
            _interleave([p.field(i) for p in pieces], rows, t.field(i).type)
            for i in range(t.num_fields)
        ]
        return pa.StructArray.from_arrays(children, fields=list(t), mask=mask, memory_pool=pool())
    if pa.types.is_list(t) and not pa.types.is_map(t):
        valid, mask = rows.validity(pieces)
        starts, lengths, values = [], [], []
        base = 0
        for p in pieces:
            offsets = np.asarray(p.offsets)
            starts.append(offsets[:-1] - offsets[0] + base)
            lengths.append(np.diff(offsets))
            # NOTE: .values is the whole child, also outside a sliced list's window.
            values.append(p.values.slice(offsets[0], offsets[-1] - offsets[0]))
            base += len(values[-1])
        count = np.concatenate(lengths)[rows.safe]
        if valid is not None:
            count[~valid] = 0
        out = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(count, out=out[1:])
        # Each row's items, in order: its first item's place in the pieces, counted on.
        items = np.repeat(np.concatenate(starts)[rows.safe] - out[:-1], count) + np.arange(out[-1])
        child = _interleave(values, _Rows(items, nulls=False), t.value_type)
        return pa.ListArray.from_arrays(pa.array(out), child, type=t, mask=mask, pool=pool())
    return pc.take(pa.concat_arrays(pieces, memory_pool=pool()), rows.at, memory_pool=pool())


class Unsupported(Exception):
    """The native reader cannot decode this input; decode it with fastavro instead."""


def available() -> bool:
    """True when DataFusion is installed."""
    try:
        import datafusion  # noqa: F401
    except ImportError:
        return False
    return True


def _context() -> Any:
    ctx = getattr(_local, "ctx", None)
    if ctx is None:
        import datafusion

        # NOTE: one partition keeps the rows in file order and the work on this thread's core.
        ctx = datafusion.SessionContext(
            datafusion.SessionConfig().with_target_partitions(1).with_batch_size(_BATCH_ROWS)
        )
        # NOTE: DataFusion keeps each file's statistics (a DataHub-sized schema's columns) for
        # the life of the session, and every read here is of a new temporary file, never read
        # twice: 5,000 reads left ~40 MiB behind in each thread's session, growing with every
        # replay of a notebook. Off; the other caches hold what they say (paths, footers).
        ctx.sql("SET datafusion.runtime.file_statistics_cache_limit = '0'").collect()
        _local.ctx = ctx
    return ctx


#: How the temporary files of a native read start: ``mk-replay-<pid>-<random>.avro``. The pid
#: lets :func:`metaverse_kit.history.cache.remove_leftovers` tell a dead process's leftover
#: (killed mid-read) from a file a running replay still reads.
TEMP_PREFIX = "mk-replay-"


def _tmpdir() -> str | None:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def temp_folders() -> list[str]:
    """Where native reads put their temporary files: ``/dev/shm`` (when usable), the temp folder."""
    shm = _tmpdir()
    return [*([shm] if shm else []), tempfile.gettempdir()]


def _temp_file(folder: str | None) -> tuple[int, str]:
    """A new, empty private file in ``folder`` (None: the temp folder), named as
    :data:`TEMP_PREFIX` says; its descriptor and path."""
    return tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".avro", dir=folder)


def _write_temp(data: bytes | list[Any], folder: str | None) -> str:
    fd, path = _temp_file(folder)
    try:
        with os.fdopen(fd, "wb") as f:
            for part in [data] if isinstance(data, bytes) else data:
                f.write(part)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    return path


@contextlib.contextmanager
def _as_file(data: bytes | list[Any]) -> Iterator[str]:
    shm = _tmpdir()
    try:
        path = _write_temp(data, shm)
    except OSError:
        if shm is None:
            raise
        # NOTE: containers often mount a small /dev/shm (64 MiB); a big file goes to disk.
        path = _write_temp(data, None)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _read(
    path: str, schema: pa.Schema | None = None, columns: tuple[str, ...] | None = None
) -> pa.Table:
    try:
        frame = _context().read_avro(path, schema=schema)
        if columns is not None:
            import datafusion

            frame = frame.select(*[datafusion.col(f'"{c}"') for c in columns])
        return frame.to_arrow_table()
    except Exception as exc:  # DataFusion raises plain Exception for every failure
        raise Unsupported(str(exc)) from exc


def _inferred_schema(path: str) -> pa.Schema:
    try:
        return _context().read_avro(path).schema()
    except Exception as exc:
        raise Unsupported(str(exc)) from exc


# -- the envelope ---------------------------------------------------------------------------


def property_text(value: Any) -> str | None:
    """A Capture property value as text: bytes as UTF-8 (``0x<hex>`` when they are not)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + bytes(value).hex()
    return str(value)


def _text_values(values: pa.Array) -> pa.Array:
    """Property values as text, as :func:`property_text` renders them one by one."""
    t = values.type
    if pa.types.is_null(t):
        return pa.nulls(len(values), pa.string())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return values.cast(pa.string())
    if pa.types.is_integer(t):
        return values.cast(pa.string())
    if pa.types.is_dictionary(t):
        return values.dictionary_decode().cast(pa.string())
    # doubles, booleans and bytes are rare in properties; render them exactly as Python does.
    return pa.array([property_text(v) for v in values.to_pylist()], pa.string())


def _union_gather(union: pa.Array, parts: list[pa.Array]) -> pa.Array:
    """One array from a dense union's per-child arrays (each as long as its child)."""
    codes = np.asarray(union.type_codes)
    offsets = np.asarray(union.offsets)
    child_of = np.zeros(max(union.type.type_codes) + 1, dtype=np.int64)
    for i, code in enumerate(union.type.type_codes):
        child_of[code] = i
    sizes = np.array([0] + [len(p) for p in parts[:-1]], dtype=np.int64)
    base = np.cumsum(sizes)
    if not parts:
        return pa.array([], pa.string())
    gathered = pa.concat_arrays(parts)
    return pc.take(gathered, pa.array(base[child_of[codes]] + offsets), memory_pool=pool())


def _strings_map(column: pa.Array) -> pa.MapArray:
    """``map<string, union|string>`` as ``map<string, string>``; a null map becomes empty."""
    if column.offset:
        column = pa.concat_arrays([column])
    items = column.items
    if pa.types.is_union(items.type):
        if items.type.mode != "dense":
            raise Unsupported("sparse union property values")
        parts = [_text_values(items.field(i)) for i in range(items.type.num_fields)]
        text = _union_gather(items, parts)
    else:
        text = own(_text_values(items))
    return pa.MapArray.from_arrays(
        own(column.offsets), own(column.keys), text, type=_STRINGS, pool=pool()
    )


def lookup(strings: pa.MapArray, key: str) -> pa.Array:
    """The value of ``key`` in each row's map (the last one, as a dict keeps), empty as null."""
    found = pc.map_lookup(strings, pa.scalar(key), "last")
    return pc.if_else(pc.equal(found, ""), pa.scalar(None, pa.string()), found, memory_pool=pool())


def _long_entry(column: pa.Array, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``long`` value of ``key`` in a union-valued map, and whether it has one."""
    n = len(column)
    values = np.zeros(n, dtype=np.int64)
    has = np.zeros(n, dtype=bool)
    items = column.items
    if not pa.types.is_union(items.type) or len(items) == 0:
        return values, has
    names = [items.type.field(i).name for i in range(items.type.num_fields)]
    if "long" not in names:
        return values, has
    child = names.index("long")
    code = items.type.type_codes[child]
    keys = column.keys
    hit = np.asarray(pc.fill_null(pc.equal(keys, key), False)) & (
        np.asarray(items.type_codes) == code
    )
    if not hit.any():
        return values, has
    offsets = np.asarray(column.offsets)
    rows = np.repeat(np.arange(n), np.diff(offsets))
    longs = np.asarray(items.field(child).fill_null(0))
    entry = np.nonzero(hit)[0]
    # NOTE: ascending entry order, so a repeated key leaves its last value, as a dict does.
    values[rows[entry]] = longs[np.asarray(items.offsets)[entry]]
    has[rows[entry]] = True
    return values, has


def _containers_of_at_most(data: bytes, rows: int) -> tuple[list[Any], int]:
    """``data`` as one container, or cut at block boundaries into containers of <= rows records;
    and how many records ``data`` holds.

    DataFusion misreads unions past its first batch (see :data:`_BATCH_ROWS`); Capture writes
    many blocks per file, so a big file is read as several small ones with the same header.
    """
    from metaverse_kit.capture import read_header, read_varint

    total = 0
    try:
        _, sync, pos = read_header(data)
        header = data[:pos]
        parts: list[Any] = []
        start, count = pos, 0
        while pos < len(data):
            n, at = read_varint(data, pos)
            size, at = read_varint(data, at)
            end = at + size + 16
            if data[end - 16 : end] != sync or n < 0 or size < 0:
                raise Unsupported("corrupt block")
            if n > rows:
                raise Unsupported(f"a block of {n} records")
            if count + n > rows:
                parts.append([header, memoryview(data)[start:pos]])
                start, count = pos, 0
            count += n
            total += n
            pos = end
    except (IndexError, ValueError) as exc:
        raise Unsupported("unreadable container") from exc
    if not parts:
        return [data], total
    parts.append([header, memoryview(data)[start:pos]])
    return parts, total


@contextlib.contextmanager
def _in_place(source: str | None, data: bytes) -> Iterator[str | None]:
    """A name for the local file ``source`` under which DataFusion can read it where it is,
    when it holds ``len(data)`` bytes (what the caller read of it); None otherwise.

    The name is a symbolic link in the temporary folder (named as :func:`_as_file` names its
    copies, so :func:`~metaverse_kit.history.cache.remove_leftovers` clears one a killed process
    left): DataFusion takes a path as a URL and a glob, and a lake's folder may be named with
    ``%``, ``#``, ``?`` or ``[``. The caller still checks the rows it reads against ``data``'s.
    """
    if not source or not os.path.isabs(source):
        yield None
        return
    try:
        found = os.stat(source)
        # NOTE: a regular file only: DataFusion would read a folder as a table of its files.
        if not stat.S_ISREG(found.st_mode) or found.st_size != len(data):
            yield None  # grown, rewritten or replaced since: read what the caller holds
            return
    except OSError:
        yield None
        return
    for folder in temp_folders():
        try:
            fd, link = _temp_file(folder)
            os.close(fd)
            os.unlink(link)
            os.symlink(source, link)
        except OSError:
            continue
        try:
            yield link
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
        return
    yield None


_ENVELOPE = ("SequenceNumber", "Offset", "EnqueuedTimeUtc", "SystemProperties", "Properties")


def _read_archive(
    data: bytes, columns: tuple[str, ...] | None = None, *, source: str | None = None
) -> pa.Table:
    """A Capture container's records (``columns`` of them, default all) as one chunk each.

    ``source``: the absolute path of a local file ``data`` was read from in full. PERF: a file
    of one read's records is read where it is instead of copied to a temporary file first
    (a million events of uncompressed Capture files: ~0.6 s -> ~0.4 s of native reading).
    """
    parts, records = _containers_of_at_most(data, _BATCH_ROWS)
    if len(parts) == 1 and source:
        table = None
        with _in_place(source, data) as path, contextlib.suppress(Unsupported):
            table = _read(path, columns=columns) if path else None
        # NOTE: a file rewritten between the size check and the read (Capture files only
        # grow) could give other rows, or none; the bytes held are the answer then.
        if table is not None and table.num_rows == records:
            return table.combine_chunks()
    tables = []
    for part in parts:
        with _as_file(part) as path:
            tables.append(_read(path, columns=columns))
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    return table.combine_chunks()


def _property_maps(table: pa.Table) -> tuple[pa.MapArray, pa.MapArray]:
    """The system and application property maps of the records; :class:`Unsupported` when
    there is no record or they are not maps."""
    if not table.num_rows:
        raise Unsupported("no records")
    system = table.column("SystemProperties").chunk(0)
    app = table.column("Properties").chunk(0)
    if not (pa.types.is_map(system.type) and pa.types.is_map(app.type)):
        raise Unsupported("properties are not maps")
    return system, app


def read_envelope(data: bytes, *, source: str | None = None) -> dict[str, Any]:
    """Read a Capture container's records into Arrow columns.

    Returns ``sequence_number``, ``offset``, ``enqueued_text`` (EnqueuedTimeUtc), ``body``,
    ``properties`` and ``system_properties`` (``map<string, string>``), and
    ``enqueued_ms`` / ``has_enqueued_ms`` (numpy: ``x-opt-enqueued-time`` when it is a long).
    All but ``enqueued_text`` and ``body`` are copies (see :func:`own`): keep those two only
    as long as the bodies take to decode.
    ``source``: the absolute path of the local file ``data`` is all of, when there is one
    (read in place, see :func:`_read_archive`).
    Raises :class:`Unsupported` for anything but a readable Capture archive.
    """
    table = _read_archive(data, source=source)
    if not {*_ENVELOPE, "Body"} <= set(table.column_names):
        raise Unsupported("not the Capture record")
    system, app = _property_maps(table)
    ms, has_ms = _long_entry(system, "x-opt-enqueued-time")
    return {
        "sequence_number": own(table.column("SequenceNumber").chunk(0).cast(pa.int64())),
        "offset": own(table.column("Offset").chunk(0).cast(pa.string())),
        "enqueued_text": table.column("EnqueuedTimeUtc").chunk(0),
        "body": table.column("Body").chunk(0).cast(pa.binary()),
        "system_properties": _strings_map(system),
        "properties": _strings_map(app),
        "enqueued_ms": ms,
        "has_enqueued_ms": has_ms,
    }


_PROPERTIES = ("EnqueuedTimeUtc", "SystemProperties", "Properties")


def read_properties(data: bytes, *, source: str | None = None) -> dict[str, Any]:
    """Read what a Capture container's records say of their events, without their bodies.

    Returns ``system_properties`` and ``properties`` as the reader gives them (maps of union
    values: read them with :func:`string_entry`), ``enqueued_text``, and ``enqueued_ms`` /
    ``has_enqueued_ms`` as :func:`read_envelope` does. For a plan that needs the message ids
    and times of many files: no body, offset or sequence number becomes an array.
    ``source`` as :func:`read_envelope`'s.
    Raises :class:`Unsupported` for anything but a readable Capture archive.
    """
    table = _read_archive(data, columns=_PROPERTIES, source=source)
    system, app = _property_maps(table)
    ms, has_ms = _long_entry(system, "x-opt-enqueued-time")
    return {
        "enqueued_text": table.column("EnqueuedTimeUtc").chunk(0),
        "system_properties": system,
        "properties": app,
        "enqueued_ms": ms,
        "has_enqueued_ms": has_ms,
    }


def string_entry(column: pa.MapArray, key: str) -> pa.Array:
    """Per row, the last value of ``key`` in a map of union values as text, empty as null:
    what :func:`lookup` gives on the map as :func:`read_envelope` converts it.

    PERF: only the entries named ``key`` are looked at when their values are strings (message
    ids are); any other value type converts the whole map first.
    """
    n = len(column)
    if column.offset:
        column = pa.concat_arrays([column])
    keys = column.keys
    hit = np.asarray(pc.fill_null(pc.equal(keys, key), False))
    if not hit.any():
        return pa.nulls(n, pa.string())
    items = column.items
    entries = np.flatnonzero(hit)
    if pa.types.is_union(items.type):
        if items.type.mode != "dense":
            raise Unsupported("sparse union property values")
        names = [items.type.field(i).name for i in range(items.type.num_fields)]
        if "string" not in names:
            return lookup(_strings_map(column), key)
        child = names.index("string")
        if not (np.asarray(items.type_codes)[entries] == items.type.type_codes[child]).all():
            return lookup(_strings_map(column), key)
        values = items.field(child).take(pa.array(np.asarray(items.offsets)[entries]))
    elif pa.types.is_string(items.type):
        values = items.take(pa.array(entries))
    else:
        return lookup(_strings_map(column), key)
    rows = np.searchsorted(np.asarray(column.offsets), entries, side="right") - 1
    # NOTE: entries come in order, so a row's last one wins, as a dict keeps it.
    last = np.append(rows[1:] != rows[:-1], True)
    at = np.full(n, -1, dtype=np.int64)
    at[rows[last]] = np.flatnonzero(last)
    found = pc.take(values, pa.array(at, mask=at < 0))
    return pc.if_else(pc.equal(found, ""), pa.scalar(None, pa.string()), found, memory_pool=pool())


# -- the bodies -----------------------------------------------------------------------------


def _container(definition: str, count: int, block: list[Any]) -> list[Any]:
    """A container of one block of ``count`` records whose bytes are the parts of ``block``."""
    sync = b"metaverse-splice"  # any 16 bytes: the file is ours and read once
    meta = [(b"avro.schema", definition.encode()), (b"avro.codec", b"null")]
    header = bytearray(AVRO_MAGIC) + zigzag(len(meta))
    for key, value in meta:
        header += zigzag(len(key)) + key + zigzag(len(value)) + value
    header += zigzag(0) + sync
    size = sum(len(part) for part in block)
    return [bytes(header), zigzag(count) + zigzag(size), *block, sync]


def _named_metadata(avro: AvroSchema, t: Any) -> dict[str, str] | None:
    r = avro.resolve(t)
    if isinstance(r, list):
        others = [b for b in r if b != "null"]
        return _named_metadata(avro, others[0]) if len(others) == 1 else None
    if not isinstance(r, dict) or r.get("type") not in ("record", "error", "enum", "fixed"):
        return None
    namespace, _, short = avro.branch_name(r).rpartition(".")
    meta = {"avro.name": short}
    if namespace:
        meta["avro.namespace"] = namespace
    if r["type"] == "enum":
        meta["avro.enum.symbols"] = json.dumps(r["symbols"], separators=(",", ":"))
    return meta


def _with_avro_metadata(avro: AvroSchema, inferred: pa.Schema) -> pa.Schema:
    """DataFusion's inferred schema with the Avro metadata its reader puts on named types."""

    def field(f: pa.Field, t: Any) -> pa.Field:
        if pa.types.is_null(f.type):
            return f
        return pa.field(f.name, typ(f.type, t), f.nullable, _named_metadata(avro, t))

    def typ(at: pa.DataType, t: Any) -> pa.DataType:
        r = avro.resolve(t)
        if isinstance(r, list):
            others = [b for b in r if b != "null"]
            if len(others) == 1:
                return typ(at, others[0])
            if not pa.types.is_union(at):
                return at
            # The reader keeps a child for "null" among several branches, or leaves it out.
            branches = r if at.num_fields == len(r) else others
            if at.num_fields != len(branches):
                return at
            return pa.dense_union(
                [field(at.field(i), b) for i, b in enumerate(branches)], list(at.type_codes)
            )
        if isinstance(r, str):
            return at
        kind = r["type"]
        if kind in ("record", "error") and pa.types.is_struct(at):
            return pa.struct([field(at.field(i), f["type"]) for i, f in enumerate(r["fields"])])
        if kind == "array" and pa.types.is_list(at):
            return pa.list_(field(at.value_field, r["items"]))
        if kind == "map" and pa.types.is_map(at):
            return pa.map_(at.key_field, field(at.item_field, r["values"]), at.keys_sorted)
        return at

    root = avro.resolve(avro.root)
    if not isinstance(root, dict) or root.get("type") not in ("record", "error"):
        raise Unsupported("the payload schema's root is not a record")
    return pa.schema([field(inferred.field(i), f["type"]) for i, f in enumerate(root["fields"])])


_KEEP = ("type", "name", "namespace", "fields", "items", "values", "symbols", "size")
_KEEP_LOGICAL = ("logicalType", "precision", "scale")


def _clean(t: Any) -> Any:
    """An Avro type without the attributes the binary encoding ignores.

    DataHub's schemas carry ``Aspect``, ``Searchable``, ``doc``, ``symbolDocs``... which
    DataFusion would copy into Arrow field metadata and then fail to match (see the module
    docstring); the bytes of a datum do not depend on any of them.
    """
    if isinstance(t, list):
        return [_clean(b) for b in t]
    if not isinstance(t, dict):
        return t
    out = {k: t[k] for k in (*_KEEP, *_KEEP_LOGICAL) if k in t}
    if "fields" in out:
        out["fields"] = [{"name": f["name"], "type": _clean(f["type"])} for f in t["fields"]]
    for key in ("items", "values"):
        if key in out:
            out[key] = _clean(out[key])
    if isinstance(out.get("type"), (dict, list)):
        out["type"] = _clean(out["type"])
    return out


def _cleaned(definition: str) -> str:
    cache: dict[str, str] = getattr(_local, "cleaned", None) or {}
    _local.cleaned = cache
    if definition not in cache:
        cache[definition] = json.dumps(_clean(json.loads(definition)), separators=(",", ":"))
    return cache[definition]


def _reader_schema(definition: str, avro: AvroSchema, path: str) -> pa.Schema:
    cache: dict[str, pa.Schema] = getattr(_local, "schemas", None) or {}
    _local.schemas = cache
    if definition not in cache:
        cache[definition] = _with_avro_metadata(avro, _inferred_schema(path))
    return cache[definition]


def _data_of(bodies: pa.Array) -> Any:
    """The bytes of a binary array's values, end to end, without copying them."""
    bodies = bodies.cast(pa.binary())
    n = len(bodies)
    buffers = bodies.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32)[bodies.offset : bodies.offset + n + 1]
    buffer = buffers[2]
    start, end = int(offsets[0]), int(offsets[-1])
    return memoryview(buffer)[start:end] if buffer is not None else b""


def decode_bodies(
    bodies: pa.BinaryArray | pa.ChunkedArray, definition: str, target: pa.DataType
) -> pa.Array:
    """Decode Avro bodies (no nulls) written with ``definition`` into an array of ``target``.

    ``target`` is ``arrow_mapping(AvroSchema(definition)).type``. ``bodies`` may be chunked
    (the bodies of several files, not concatenated first). Raises :class:`Unsupported`
    when the native reader cannot read them as ``len(bodies)`` records of that schema; the
    caller then decodes them one by one (which also finds the corrupt one).
    """
    chunks = decode_chunks(bodies, definition, target)
    return chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks, memory_pool=pool())


def decode_chunks(
    bodies: pa.BinaryArray | pa.ChunkedArray, definition: str, target: pa.DataType
) -> list[pa.Array]:
    """:func:`decode_bodies`, as the arrays of its native reads (one per ``_BATCH_ROWS``)."""
    n = len(bodies)
    if n > _BATCH_ROWS:
        return [
            _decode_batch(bodies.slice(at, _BATCH_ROWS), definition, target)
            for at in range(0, n, _BATCH_ROWS)
        ]
    return [_decode_batch(bodies, definition, target)]


def _decode_batch(
    bodies: pa.BinaryArray | pa.ChunkedArray, definition: str, target: pa.DataType
) -> pa.Array:
    n = len(bodies)
    if n == 0:
        return pa.array([], target)
    if bodies.null_count:
        raise Unsupported("null bodies")
    chunks = bodies.chunks if isinstance(bodies, pa.ChunkedArray) else [bodies]
    block = [_data_of(c) for c in chunks if len(c)]
    writer = _cleaned(definition)
    avro = parsed(writer)
    with _as_file(_container(writer, n, block)) as path:
        table = _read(path, _reader_schema(writer, avro, path))
    if table.num_rows != n:
        raise Unsupported(f"read {table.num_rows} records from {n} bodies")
    table = table.combine_chunks()
    root = avro.resolve(avro.root)
    if pa.types.is_struct(target):
        columns = [
            _conform(avro, table.column(i).chunk(0), f["type"], target.field(i).type)
            for i, f in enumerate(root["fields"])
        ]
        return pa.StructArray.from_arrays(columns, fields=list(target))
    raise Unsupported("the payload schema's root is not a record")


def _conform(avro: AvroSchema, a: pa.Array, t: Any, target: pa.DataType) -> pa.Array:
    """DataFusion's Arrow form of an Avro value as ``arrow_types`` shapes it."""
    if a.null_count == len(a) and len(a):
        # PERF: optional records and fields no event of the batch sets (most of DataHub's).
        return compact_nulls(len(a), target)
    r = avro.resolve(t)
    if isinstance(r, list):
        others = [b for b in r if b != "null"]
        if not others:
            return compact_nulls(len(a), target)
        if len(others) == 1:
            return _conform(avro, a, others[0], target)
        return _union(avro, a, others, target)
    if isinstance(r, str):
        return _cast(a, target)
    kind = r["type"]
    mask = a.is_null() if a.null_count else None
    if kind in ("record", "error"):
        if not pa.types.is_struct(a.type) or a.offset:
            raise Unsupported(f"record {r['name']} read as {a.type}")
        children = [
            _conform(avro, a.field(i), f["type"], target.field(i).type)
            for i, f in enumerate(r["fields"])
        ]
        return pa.StructArray.from_arrays(
            children, fields=list(target), mask=mask, memory_pool=pool()
        )
    if kind == "array":
        if not pa.types.is_list(a.type):
            raise Unsupported(f"array read as {a.type}")
        values = _conform(avro, a.values, r["items"], target.value_type)
        return pa.ListArray.from_arrays(own(a.offsets), values, type=target, mask=mask, pool=pool())
    if kind == "map":
        if not pa.types.is_map(a.type):
            raise Unsupported(f"map read as {a.type}")
        items = _conform(avro, a.items, r["values"], target.item_type)
        return pa.MapArray.from_arrays(
            own(a.offsets), own(a.keys), items, type=target, mask=mask, pool=pool()
        )
    if kind == "enum" and pa.types.is_dictionary(a.type):
        return _cast(pc.take(a.dictionary, a.indices, memory_pool=pool()), target, copy=False)
    return _cast(a, target)


def _cast(a: pa.Array, target: pa.DataType, *, copy: bool = True) -> pa.Array:
    if a.type == target:
        return own(a) if copy else a
    try:
        return a.cast(target, memory_pool=pool())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise Unsupported(f"cannot cast {a.type} to {target}") from exc


def _union(avro: AvroSchema, a: pa.Array, others: list[Any], target: pa.DataType) -> pa.Array:
    if not pa.types.is_union(a.type) or a.type.mode != "dense":
        raise Unsupported(f"union read as {a.type}")
    ut = a.type
    # A union with "null" among several branches may carry a null child; map the rest in order.
    children = [i for i in range(ut.num_fields) if not pa.types.is_null(ut.field(i).type)]
    if len(children) != len(others):
        raise Unsupported(f"union of {len(others)} branches read with {ut.num_fields} children")
    if a.offset:
        raise Unsupported("sliced union")
    codes = np.asarray(a.type_codes)
    offsets = np.asarray(a.offsets)
    names = [avro.branch_name(avro.resolve(b)) for b in others]
    branch_index = np.full(len(codes), -1, dtype=np.int64)
    fields = []
    for k, (child, branch) in enumerate(zip(children, others, strict=True)):
        code = ut.type_codes[child]
        here = codes == code
        if not here.any():
            # PERF: most branches of DataHub's unions are absent from a given file.
            fields.append(compact_nulls(len(codes), target.field(1 + k).type))
            continue
        branch_index[here] = k
        conformed = _conform(avro, a.field(child), branch, target.field(1 + k).type)
        if not np.array_equal(offsets[here], np.arange(len(conformed))):
            # Child rows not used once each in order (no writer we know does this): gather.
            take = np.where(here, offsets, 0)
            fields.append(pc.take(conformed, pa.array(take, mask=~here), memory_pool=pool()))
        else:
            fields.append(_expand(conformed, here))
    missing = branch_index < 0
    branch = pc.take(
        pa.array(names, pa.string()),
        pa.array(np.where(missing, 0, branch_index), mask=missing),
        memory_pool=pool(),
    )
    return pa.StructArray.from_arrays(
        [branch, *fields],
        fields=list(target),
        mask=pa.array(missing) if missing.any() else None,
        memory_pool=pool(),
    )


class _Spread:
    """Where a union branch's rows go (``here``), with what every column of it shares."""

    def __init__(self, here: np.ndarray) -> None:
        self.here = here
        self.n = len(here)
        self.count = int(np.count_nonzero(here))
        # PERF: the validity of every column without nulls of its own: computed once, shared.
        self.bitmap = pa.py_buffer(np.packbits(here, bitorder="little"))

    def validity(self, a: pa.Array) -> tuple[pa.Buffer, int]:
        """The validity bitmap of ``a`` spread over ``here``, and its null count."""
        if not a.null_count:
            return self.bitmap, self.n - self.count
        valid = np.zeros(self.n, dtype=bool)
        valid[self.here] = a.is_valid().to_numpy(zero_copy_only=False)
        return pa.py_buffer(np.packbits(valid, bitorder="little")), self.n - (
            self.count - a.null_count
        )

    def offsets(self, offsets: np.ndarray) -> pa.Buffer:
        """Offsets of variable-length values spread over ``here`` (empty where it is False)."""
        full = np.zeros(self.n + 1, dtype=np.int32)
        full[1:][self.here] = np.diff(offsets)
        np.cumsum(full, out=full)
        return pa.py_buffer(full)


def _expand(a: pa.Array, here: np.ndarray, spread: _Spread | None = None) -> pa.Array:
    """Spread ``a``'s rows, in order, over the positions where ``here`` is True; null elsewhere.

    The same as ``take`` with null indices, but list and map values are reused, not copied:
    only offsets, validity and flat leaves are rebuilt, which is what makes unions of deep
    records cheap. A branch that every row takes is ``a`` itself.
    """
    spread = spread or _Spread(here)
    if spread.count == spread.n and len(a) == spread.n:
        return a
    n, t = spread.n, a.type
    if a.null_count == len(a):
        return compact_nulls(n, t)
    if not a.offset:
        if pa.types.is_struct(t):
            bitmap, nulls = spread.validity(a)
            children = [_expand(a.field(i), here, spread) for i in range(t.num_fields)]
            return pa.Array.from_buffers(t, n, [bitmap], nulls, children=children)
        is_list = pa.types.is_list(t) or pa.types.is_map(t)
        if is_list or pa.types.is_string(t) or pa.types.is_binary(t):
            offsets = np.frombuffer(a.buffers()[1], dtype=np.int32)[: len(a) + 1]
            if offsets[0] == 0:
                bitmap, nulls = spread.validity(a)
                full = spread.offsets(offsets)
                if is_list:
                    return pa.Array.from_buffers(t, n, [bitmap, full], nulls, children=[a.values])
                return pa.Array.from_buffers(t, n, [bitmap, full, a.buffers()[2]], nulls)
        if pa.types.is_boolean(t):
            bits = np.unpackbits(
                np.frombuffer(a.buffers()[1], dtype=np.uint8), count=len(a), bitorder="little"
            )
            values = np.zeros(n, dtype=np.uint8)
            values[here] = bits
            bitmap, nulls = spread.validity(a)
            data = pa.py_buffer(np.packbits(values, bitorder="little"))
            return pa.Array.from_buffers(t, n, [bitmap, data], nulls)
        if pa.types.is_primitive(t) and t.bit_width in (8, 16, 32, 64):
            # Values under null slots are whatever the reader left there: masked, never read.
            dense = np.frombuffer(a.buffers()[1], dtype=f"u{t.bit_width // 8}")[: len(a)]
            values = np.zeros(n, dtype=dense.dtype)
            values[here] = dense
            bitmap, nulls = spread.validity(a)
            return pa.Array.from_buffers(t, n, [bitmap, pa.py_buffer(values)], nulls)
    index = np.cumsum(here) - 1
    return pc.take(a, pa.array(np.where(here, index, 0), mask=~here), memory_pool=pool())
