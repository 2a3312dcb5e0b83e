"""Replay Capture archives into Arrow: the envelope of every event plus its decoded payload.

:func:`decode_capture_file` is a function of one file's bytes (and a schema lookup by id) that
returns a RecordBatch and touches no global state, so the same function can later run inside a
distributed engine (Spark's ``mapInArrow``, Dask's ``from_map``). :func:`replay_batches`
streams one batch per file; :func:`replay_capture` collects them into a table.

Every event is kept. Bodies that are not registry Avro (JSON, text, an unknown schema id, another
schema than the replay's) keep their raw ``body`` and say why in ``decode_error``.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit._time import utc_time
from metaverse_kit.backends.protocols import CaptureFile, Lake, Schema, SchemaRegistry
from metaverse_kit.capture import parse_capture_path, parse_enqueued_time, read_header
from metaverse_kit.errors import (
    CaptureFileError,
    ConfigurationError,
    SchemaNotFoundError,
)
from metaverse_kit.events.avro import AvroSchema
from metaverse_kit.events.codec import parsed_schema, schema_id_from_content_type
from metaverse_kit.history import _decoder
from metaverse_kit.history.arrow_types import ArrowMapping, arrow_mapping
from metaverse_kit.history.cache import ReplayCache, open_cache, schema_fingerprint

__all__ = [
    "DUPLICATES_DROPPED_KEY",
    "ENVELOPE_FIELDS",
    "CaptureBytes",
    "PayloadSchema",
    "ReplayStream",
    "decode_capture_file",
    "decode_capture_files",
    "duplicates_dropped",
    "replay_batches",
    "replay_capture",
    "replay_lake",
]

_PROPS = pa.map_(pa.string(), pa.string())
ENVELOPE_FIELDS: list[pa.Field] = [
    pa.field("namespace", pa.string()),
    pa.field("eventhub", pa.string()),
    pa.field("partition", pa.string()),
    pa.field("sequence_number", pa.int64(), nullable=False),
    pa.field("offset", pa.string()),
    pa.field("enqueued_time", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("partition_key", pa.string()),
    pa.field("content_type", pa.string()),
    pa.field("schema_id", pa.string()),
    pa.field("message_id", pa.string()),
    pa.field("properties", _PROPS),
    pa.field("system_properties", _PROPS),
    pa.field("capture_file", pa.string()),
    pa.field("body", pa.binary()),
    pa.field("decode_error", pa.string()),
]

SchemaLookup = Callable[[str], str | None]

#: Schema metadata key of a replayed table (and of each streamed batch): the number of events
#: dropped because an earlier event had the same message id, as ASCII digits.
DUPLICATES_DROPPED_KEY = b"metaverse.duplicates_dropped"


@dataclass(frozen=True)
class PayloadSchema:
    """The schema payload columns are typed by; bodies of other versions of it are read by name.

    Bodies written with another schema of the same full name (an older or newer version) are
    decoded with their own writer schema and placed into these columns field by field.
    """

    definition: str

    @property
    def avro(self) -> AvroSchema:
        """The parsed schema."""
        return _parsed(self.definition)

    @property
    def name(self) -> str | None:
        """The schema's full name."""
        return self.avro.name

    def mapping(self) -> ArrowMapping:
        """The Arrow type of the whole record and its converter (computed once per schema)."""
        return _mapping(self.definition)

    def arrow_fields(self) -> list[pa.Field]:
        """The payload columns: the top-level fields of the record."""
        mapping = self.mapping()
        return (
            list(mapping.type)
            if pa.types.is_struct(mapping.type)
            else [pa.field("payload", mapping.type)]
        )

    def arrow_schema(self) -> pa.Schema:
        """Envelope and payload columns together, as every replay returns them."""
        return pa.schema(ENVELOPE_FIELDS + self.arrow_fields())


# PERF: DataHub-sized schemas take tens of milliseconds to parse and map; once per definition.
@functools.lru_cache(maxsize=64)
def _parsed(definition: str) -> AvroSchema:
    return AvroSchema(definition)


@functools.lru_cache(maxsize=64)
def _mapping(definition: str) -> ArrowMapping:
    return arrow_mapping(_parsed(definition))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + bytes(value).hex()
    return str(value)


def _props(values: dict | None) -> list[tuple[str, str | None]]:
    return [(k, _text(v)) for k, v in (values or {}).items()]


def _empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)


def decode_capture_file(
    data: bytes,
    *,
    payload: PayloadSchema | None,
    schemas: SchemaLookup,
    path: str = "",
    file: CaptureFile | None = None,
    decoder: str = "auto",
) -> pa.RecordBatch:
    """Decode one Capture archive's bytes into a RecordBatch of envelope and payload columns.

    ``schemas`` maps a schema id to its definition (None when unknown). The file is read with
    the schema written in it. Raises :class:`CaptureFileError` naming ``path`` when the bytes
    are not a readable Capture archive. ``decoder``: ``"auto"`` (default) uses the native
    decoder (:mod:`metaverse_kit.history._decoder`) and fastavro for what it cannot read;
    ``"fast"`` the same; ``"fastavro"`` only fastavro. All give the same batch.
    """
    return decode_capture_files(
        [CaptureBytes(data, path, file)], payload=payload, schemas=schemas, decoder=decoder
    )[0]


@dataclass(frozen=True)
class CaptureBytes:
    """One Capture archive to decode: its bytes, its path (for messages) and what is known of it."""

    data: bytes
    path: str = ""
    file: CaptureFile | None = None


def decode_capture_files(
    items: Sequence[CaptureBytes],
    *,
    payload: PayloadSchema | None,
    schemas: SchemaLookup,
    decoder: str = "auto",
) -> list[pa.RecordBatch]:
    """Decode several Capture archives; one RecordBatch per archive, as :func:`decode_capture_file`.

    The bodies of all the archives are decoded together, which spreads the fixed cost of a
    native decoder call (planning, walking a DataHub-sized schema) over many small files, as
    Capture writes them (one per partition and time window). A pure function of its arguments.
    """
    _check_decoder(decoder)
    native = decoder != "fastavro" and _decoder.available()
    envelopes = [_envelope_of(item, native=native) for item in items]
    return _assemble(items, envelopes, payload=payload, schemas=schemas, native=native)


def _envelope_of(item: CaptureBytes, *, native: bool) -> _Envelope | None:
    """The envelope columns of one archive (None when it holds no event)."""
    where = item.path or "the Capture file"
    _, _, blocks_start = read_header(item.data, where=where)
    if blocks_start >= len(item.data):
        return None
    if native:
        try:
            return _envelope_native(item.data, where)
        except _decoder.Unsupported:
            pass
    return _envelope_fastavro(item.data, where)


def _assemble(
    items: Sequence[CaptureBytes],
    envelopes: Sequence[_Envelope | None],
    *,
    payload: PayloadSchema | None,
    schemas: SchemaLookup,
    native: bool,
) -> list[pa.RecordBatch]:
    """Decode the bodies of all ``envelopes`` together and cut the result into one batch each."""
    schema = payload.arrow_schema() if payload else pa.schema(ENVELOPE_FIELDS)
    present = [e for e in envelopes if e is not None]
    if not present:
        return [_empty_batch(schema) for _ in items]
    # PERF: the bodies of the files stay apart (chunks): the decoder reads them in place.
    body: Any = pa.chunked_array([e.body for e in present], pa.binary())
    ids = pa.concat_arrays([e.schema_ids for e in present])
    bodies, errors, payload_columns = _decode_payloads(body, ids, payload, schemas, native=native)
    del body
    pool = _decoder._pool()
    batches = []
    at = 0
    for item, envelope in zip(items, envelopes, strict=True):
        if envelope is None:
            batches.append(_empty_batch(schema))
            continue
        info = item.file or _file_from_path(item.path)
        n = len(envelope.sequence_number)

        def constant(value: str | None, n: int = n) -> pa.Array:
            return pa.repeat(pa.scalar(value, pa.string()), n, memory_pool=pool)

        columns: list[Any] = [
            constant(info.namespace if info else None),
            constant(info.eventhub if info else None),
            constant(info.partition if info else None),
            envelope.sequence_number,
            envelope.offset,
            envelope.enqueued_time,
            envelope.partition_key,
            envelope.content_type,
            envelope.schema_ids,
            envelope.message_id,
            envelope.properties,
            envelope.system_properties,
            constant(item.path or None),
            bodies.slice(at, n),
            constant(None) if errors is None else pa.array(errors[at : at + n], pa.string()),
            *[c.slice(at, n) for c in payload_columns],
        ]
        batches.append(pa.RecordBatch.from_arrays(columns, schema=schema))
        at += n
    return batches


@dataclass
class _Envelope:
    """The envelope columns of one file, whichever decoder read them."""

    sequence_number: pa.Array
    offset: pa.Array
    enqueued_time: pa.Array
    partition_key: pa.Array
    content_type: pa.Array
    schema_ids: pa.Array  # string
    message_id: pa.Array
    properties: pa.Array
    system_properties: pa.Array
    body: pa.Array


def _envelope_native(data: bytes, where: str) -> _Envelope:
    import numpy as np
    import pyarrow.compute as pc

    cols = _decoder.read_envelope(data)
    ms: Any = cols["enqueued_ms"]
    missing = np.nonzero(~cols["has_enqueued_ms"])[0]
    if len(missing):
        texts = cols["enqueued_text"]
        seqs = cols["sequence_number"]
        ms = ms.copy()
        for i in missing.tolist():
            ms[i] = _enqueued_text_ms(texts[i].as_py(), seqs[i].as_py(), where)
    system, app = cols["system_properties"], cols["properties"]
    pool = _decoder._pool()
    content_type = pc.coalesce(
        _decoder._lookup(system, "content-type"),
        _decoder._lookup(app, "content-type"),
        _decoder._lookup(system, "x-opt-content-type"),
        memory_pool=pool,
    )
    # Few distinct content types per file: parse each once.
    encoded = content_type.dictionary_encode()
    ids = pc.take(
        pa.array(
            [schema_id_from_content_type(c) for c in encoded.dictionary.to_pylist()], pa.string()
        ),
        encoded.indices,
        memory_pool=pool,
    )
    return _Envelope(
        sequence_number=cols["sequence_number"],
        offset=cols["offset"],
        enqueued_time=pa.array(ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        partition_key=pc.map_lookup(
            system, pa.scalar("x-opt-partition-key"), "last", memory_pool=pool
        ),
        content_type=content_type,
        schema_ids=ids,
        message_id=pc.coalesce(
            _decoder._lookup(system, "message-id"),
            _decoder._lookup(app, "message-id"),
            memory_pool=pool,
        ),
        properties=app,
        system_properties=system,
        body=cols["body"],
    )


def _enqueued_text_ms(text: Any, sequence_number: Any, where: str) -> int:
    try:
        return int(parse_enqueued_time(text).timestamp() * 1000)
    except (ValueError, AttributeError) as exc:
        raise CaptureFileError(
            f"{where}: event {sequence_number} has an unreadable EnqueuedTimeUtc {text!r}"
        ) from exc


def _envelope_fastavro(data: bytes, where: str) -> _Envelope | None:
    try:
        records: list[Any] = list(fastavro.reader(io.BytesIO(data)))
    except Exception as exc:  # fastavro raises many types for corrupt input
        raise CaptureFileError(f"{where} is not a readable Capture archive: {exc}") from exc
    if not records:
        return None
    missing = {"SequenceNumber", "EnqueuedTimeUtc", "Body"} - set(records[0])
    if missing:
        raise CaptureFileError(
            f"{where} is an Avro file but not a Capture archive: no {', '.join(sorted(missing))}"
        )
    seq, offsets, times, keys, ctypes, ids, mids = [], [], [], [], [], [], []
    props, sysprops = [], []
    for r in records:
        system = r.get("SystemProperties") or {}
        app = r.get("Properties") or {}
        seq.append(r["SequenceNumber"])
        offsets.append(r.get("Offset"))
        ms = system.get("x-opt-enqueued-time")
        if isinstance(ms, int):
            times.append(ms)
        else:
            times.append(_enqueued_text_ms(r["EnqueuedTimeUtc"], r["SequenceNumber"], where))
        keys.append(_text(system.get("x-opt-partition-key")))
        ct = _text(
            system.get("content-type")
            or app.get("content-type")
            or system.get("x-opt-content-type")
        )
        ctypes.append(ct)
        ids.append(schema_id_from_content_type(ct))
        mids.append(_text(system.get("message-id") or app.get("message-id")))
        props.append(_props(app))
        sysprops.append(_props(system))
    return _Envelope(
        sequence_number=pa.array(seq, pa.int64()),
        offset=pa.array(offsets, pa.string()),
        enqueued_time=pa.array(times, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        partition_key=pa.array(keys, pa.string()),
        content_type=pa.array(ctypes, pa.string()),
        schema_ids=pa.array(ids, pa.string()),
        message_id=pa.array(mids, pa.string()),
        properties=pa.array(props, _PROPS),
        system_properties=pa.array(sysprops, _PROPS),
        body=pa.array([r.get("Body") for r in records], pa.binary()),
    )


DECODERS = ("auto", "fast", "fastavro")


def _check_decoder(decoder: str) -> None:
    if decoder not in DECODERS:
        raise ConfigurationError(
            f"decoder= is one of {', '.join(map(repr, DECODERS))}, not {decoder!r}"
        )


def _file_from_path(path: str) -> CaptureFile | None:
    info = parse_capture_path(path) if path else None
    if info is None:
        return None
    return CaptureFile(
        path=path,
        size=0,
        version="",
        namespace=info.namespace,
        eventhub=info.eventhub,
        partition=info.partition,
        window_start=info.window_start,
    )


def _decode_payloads(
    body: pa.Array | pa.ChunkedArray,
    ids: pa.Array,
    payload: PayloadSchema | None,
    schemas: SchemaLookup,
    *,
    native: bool,
) -> tuple[pa.Array, np.ndarray | None, list[pa.Array]]:
    """Decode the bodies: (bodies left undecoded, decode errors or None, payload columns).

    Bodies are grouped by schema id (``ids``, a string array). A group written with the
    replay's own schema is decoded in one native call when ``native``; other groups (another
    version of the schema), and a group the native reader refuses, are decoded body by body
    with fastavro. The errors are an object array of messages (None where decoded), or None
    when no event has one.
    """
    pool = _decoder._pool()
    n = len(body)
    errors = np.full(n, None, dtype=object)
    if payload is None:
        return _decoder._own(body), None, []
    reader = payload.avro
    mapping = payload.mapping()
    valid = pc.is_valid(body)
    present = (valid.combine_chunks() if isinstance(valid, pa.ChunkedArray) else valid).to_numpy(
        zero_copy_only=False
    )
    encoded = ids.dictionary_encode()
    dictionary = encoded.dictionary
    codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
    errors[~present] = "the event has no body"
    errors[present & (codes < 0)] = "not registry Avro (no avro/binary+<schema id> content type)"
    # In order of first appearance, as the events come.
    firsts = np.unique(codes[present & (codes >= 0)], return_index=True)
    groups = {
        dictionary[int(code)].as_py(): np.flatnonzero(present & (codes == code))
        for code, _ in sorted(zip(*firsts, strict=True), key=lambda cf: cf[1])
    }
    pieces: list[pa.Array] = []
    index = np.full(n, -1, dtype=np.int64)
    used = 0
    slow_rows: list[int] = []
    slow_values: list[Any] = []
    python_bodies: list[Any] | None = None
    for schema_id, rows in groups.items():
        definition = schemas(schema_id)
        if definition is None:
            errors[rows] = f"unknown schema id {schema_id}"
            continue
        if definition != payload.definition and _parsed(definition).name != reader.name:
            errors[rows] = (
                f"written with schema {_parsed(definition).name}, not the replay's "
                f"{reader.name}; replay with schema= that schema to decode it"
            )
            continue
        same = definition == payload.definition or (
            _parsed(definition).canonical_text == reader.canonical_text
        )
        if native and same:
            group = body if len(rows) == n else body.take(pa.array(rows))
            try:
                decoded = _decoder.decode_bodies(group, definition, mapping.type)
            except _decoder.Unsupported:
                decoded = None
            del group
            if decoded is not None:
                pieces.append(decoded)
                index[rows] = used + np.arange(len(rows))
                used += len(rows)
                continue
        if python_bodies is None:
            python_bodies = body.to_pylist()
        parsed = parsed_schema(definition)
        for i in rows.tolist():
            data = python_bodies[i]
            buf = io.BytesIO(data)
            try:
                value = fastavro.schemaless_reader(buf, parsed, None, return_record_name=True)
            except Exception as exc:  # a corrupt body must not stop the replay of the others
                errors[i] = f"body does not decode with schema {schema_id}: {exc}"
                continue
            if buf.tell() != len(data):
                errors[i] = f"body has {len(data) - buf.tell()} bytes left after decoding"
                continue
            slow_rows.append(i)
            slow_values.append(value)
    if slow_rows:
        if mapping.convert is not None:
            slow_values = [mapping.convert(v) for v in slow_values]
        pieces.append(pa.array(slow_values, mapping.type, memory_pool=pool))
        index[np.asarray(slow_rows, dtype=np.int64)] = used + np.arange(len(slow_rows))
        used += len(slow_rows)
    decoded_rows = index >= 0
    if not pieces:
        values = _decoder.compact_nulls(n, mapping.type)
    elif len(pieces) == 1 and used == n and bool((index == np.arange(n)).all()):
        values = pieces[0]
    else:
        values = pc.take(
            pa.concat_arrays(pieces, memory_pool=pool),
            pa.array(index, mask=~decoded_rows),
            memory_pool=pool,
        )
    if decoded_rows.all():
        # NOTE: a fresh all-null array; if_else would keep the decoded bodies' bytes alive.
        out = pa.nulls(n, pa.binary(), memory_pool=pool)
    elif decoded_rows.any():
        out = _decoder._own(pc.if_else(pa.array(decoded_rows), pa.scalar(None, pa.binary()), body))
    else:
        out = _decoder._own(body)
    # Messages are never empty: bool() is False only where there is none.
    has_errors = bool(errors.astype(bool).any())
    if not pa.types.is_struct(mapping.type):
        return out, errors if has_errors else None, [values]
    # NOTE: flatten(), unlike field(i), carries the null rows of undecoded events into each column.
    return out, errors if has_errors else None, list(values.flatten(memory_pool=pool))


def _registry_lookup(registry: SchemaRegistry | None) -> SchemaLookup:
    cache: dict[str, str | None] = {}

    def lookup(schema_id: str) -> str | None:
        if schema_id not in cache:
            if registry is None:
                cache[schema_id] = None
            else:
                try:
                    cache[schema_id] = registry.get_schema(schema_id).definition
                except SchemaNotFoundError:
                    cache[schema_id] = None
        return cache[schema_id]

    return lookup


def _payload_schema(schema: Any) -> PayloadSchema | None:
    if schema is False:
        return None
    if schema is None:
        from metaverse_kit.events.builtin import mce_definition

        return PayloadSchema(mce_definition())
    if isinstance(schema, PayloadSchema):
        return schema
    if isinstance(schema, Schema):
        return PayloadSchema(schema.definition)
    if isinstance(schema, (dict, list)):
        return PayloadSchema(AvroSchema(schema).canonical_text)
    if isinstance(schema, str):
        return PayloadSchema(AvroSchema(schema).canonical_text)
    raise ConfigurationError(
        f"schema= takes a definition (JSON text or dict), a registry Schema, None for the "
        f"built-in MCE schema or False for the envelope only; got {type(schema).__name__}"
    )


def _as_utc(value: datetime | str | None, what: str) -> datetime | None:
    return None if value is None else utc_time(value, what, error=ConfigurationError)


class ReplayStream(Iterator[pa.RecordBatch]):
    """The batches of a replay, one per Capture file, and what deduplication dropped so far.

    Iterate it like any iterator of RecordBatches. ``duplicates_dropped`` counts the events
    left out because an earlier event had the same message id; it is final once the stream
    is exhausted. Each batch also says how many of its file's events were dropped, in its
    schema metadata under ``b"metaverse.duplicates_dropped"``.
    """

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self._batches = batches
        #: Events dropped as duplicates so far (the final count once the stream is exhausted).
        self.duplicates_dropped = 0

    def __iter__(self) -> ReplayStream:
        return self

    def __next__(self) -> pa.RecordBatch:
        batch = next(self._batches)
        dropped = batch.schema.metadata or {}
        self.duplicates_dropped += int(dropped.get(DUPLICATES_DROPPED_KEY, b"0"))
        return batch

    def close(self) -> None:
        """Stop reading; closes the progress bar and releases the file being read."""
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()


def _dedup(batch: pa.RecordBatch, seen: set[str]) -> tuple[pa.RecordBatch, int]:
    """Drop the rows whose message id is in ``seen`` (or repeats within the batch).

    Rows without a message id are always kept. ``seen`` grows by the ids of the kept rows.
    PERF: only the batch's distinct ids become Python strings, and the set does the rest.
    """
    ids = batch.column("message_id")
    n = len(ids)
    if ids.null_count == n:
        return batch, 0
    encoded = ids.dictionary_encode()
    distinct = encoded.dictionary.to_pylist()
    repeated = seen.intersection(distinct)
    seen.update(distinct)
    if not repeated and len(distinct) == n - ids.null_count:
        return batch, 0
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    before = np.empty_like(codes)
    before[0] = -1
    np.maximum.accumulate(codes[:-1], out=before[1:])
    old = np.fromiter((d in repeated for d in distinct), dtype=bool, count=len(distinct))
    # Codes come in order of first appearance: a row is its id's first when its code is new.
    keep = (codes < 0) | ((codes > before) & ~old[np.maximum(codes, 0)])
    dropped = n - int(np.count_nonzero(keep))
    if dropped:
        batch = batch.filter(pa.array(keep))
    return batch, dropped


def _dedup_table(table: pa.Table) -> tuple[pa.Table, int]:
    """:func:`_dedup` over a whole table at once: keep each message id's first row.

    PERF: dictionary-encoding the ids replaces a Python set. Codes are given in order of first
    appearance, so a table without duplicates has as many distinct ids as ids (and is returned
    as it is, not copied), and a row is an id's first exactly when its code is larger than
    every code before it: no sort.
    """
    ids = table.column("message_id")
    n = table.num_rows
    if ids.null_count == n:
        return table, 0
    encoded = ids.dictionary_encode()
    chunks = encoded.chunks
    if not chunks or len(chunks[0].dictionary) == n - ids.null_count:
        return table, 0
    codes = np.concatenate(
        [c.indices.fill_null(-1).to_numpy(zero_copy_only=False) for c in chunks]
    ).astype(np.int64, copy=False)
    before = np.empty_like(codes)
    before[0] = -1
    np.maximum.accumulate(codes[:-1], out=before[1:])
    keep = (codes < 0) | (codes > before)
    kept = int(np.count_nonzero(keep))
    return table.filter(pa.array(keep)), n - kept


def _with_dropped(batch: pa.RecordBatch, dropped: int) -> pa.RecordBatch:
    metadata = dict(batch.schema.metadata or {})
    metadata[DUPLICATES_DROPPED_KEY] = str(dropped).encode()
    return batch.replace_schema_metadata(metadata)


def replay_lake(
    lake: Lake,
    *,
    registry: SchemaRegistry | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    partitions: Sequence[str | int] | None = None,
    schema: Any = None,
    progress: bool | None = None,
    dedup: bool = True,
    cache: bool | str | os.PathLike[str] | None = True,
    decoder: str = "auto",
) -> ReplayStream:
    """Stream the events of a lake as RecordBatches, one per Capture file, in replay order.

    Files are pruned by partition and by the time in their path before they are opened; rows
    are then kept when ``start <= enqueued_time <= end``. Naive datetimes are taken as UTC.

    ``dedup`` (default True) drops an event whose message id an earlier event of the replay
    already had (Event Hubs is at-least-once: a retried send can be stored twice). The first
    copy in (partition, sequence number) order is kept; events without a message id are never
    dropped. Only events inside the replayed range are compared. The stream remembers every
    message id it has seen (about 100 bytes each), so its memory grows with the number of
    events with a message id, not with their size; pass ``dedup=False`` to keep it flat.

    ``cache``: True (default) keeps the decoded files (Arrow IPC) in the per-user cache folder
    (``$XDG_CACHE_HOME/metaverse-kit/replay``); a path puts them there instead; False or None
    reads and decodes every file each time. See :mod:`metaverse_kit.history.cache`.
    ``decoder`` picks the Avro decoder: ``"auto"`` (the fast one, with fastavro where it
    cannot), ``"fast"`` or ``"fastavro"``; every choice returns the same table.
    """
    start_utc, end_utc = _as_utc(start, "start"), _as_utc(end, "end")
    if start_utc and end_utc and start_utc > end_utc:
        raise ConfigurationError(f"start ({start_utc}) is after end ({end_utc})")
    parts = None if partitions is None else [str(p) for p in partitions]
    payload = _payload_schema(schema)
    _check_decoder(decoder)
    lookup = _registry_lookup(registry)
    store = open_cache(cache)
    files = lake.list_files(partitions=parts, start=start_utc, end=end_utc)
    show = len(files) > 20 if progress is None else progress
    return ReplayStream(
        _replay_files(
            lake, files, payload, lookup, store, start_utc, end_utc, parts, show, dedup, decoder
        )
    )


def _replay_files(
    lake: Lake,
    files: list[CaptureFile],
    payload: PayloadSchema | None,
    lookup: SchemaLookup,
    store: ReplayCache | None,
    start: datetime | None,
    end: datetime | None,
    parts: list[str] | None,
    show: bool,
    dedup: bool,
    decoder: str,
) -> Iterator[pa.RecordBatch]:
    arrow_schema = payload.arrow_schema() if payload else pa.schema(ENVELOPE_FIELDS)
    fingerprint = schema_fingerprint(arrow_schema, payload.definition if payload else None)
    seen: set[str] = set()
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(f.size for f in files), unit="B", unit_scale=True, desc="replay")
    try:
        for f, batch in _decoded(lake, files, payload, lookup, store, fingerprint, decoder):
            if bar is not None:
                bar.update(f.size)
            batch = _filter(batch, start, end, parts)
            dropped = 0
            if dedup and batch.num_rows:
                batch, dropped = _dedup(batch, seen)
            if batch.num_rows or dropped:
                yield _with_dropped(batch, dropped)
    finally:
        if bar is not None:
            bar.close()


# Events whose bodies are decoded together: enough to spread a native call's fixed cost
# (planning, walking a DataHub-sized schema) over many of Capture's small files, few enough
# that a streaming replay's memory stays small and does not depend on the history's length.
# PERF: at most one native read (_decoder._BATCH_ROWS), so its output is not copied into one.
_GROUP_EVENTS = 8192
_GROUP_FILES = 256


def _decoded(
    lake: Lake,
    files: list[CaptureFile],
    payload: PayloadSchema | None,
    lookup: SchemaLookup,
    store: ReplayCache | None,
    fingerprint: str,
    decoder: str,
) -> Iterator[tuple[CaptureFile, pa.RecordBatch]]:
    """Each file with its batch, in order: from the cache when it has it, decoded otherwise.

    Files missing from the cache are read one by one and their bodies decoded in groups of
    about :data:`_GROUP_EVENTS` events (see :func:`decode_capture_files`).
    """
    arrow_schema = payload.arrow_schema() if payload else pa.schema(ENVELOPE_FIELDS)
    native = decoder != "fastavro" and _decoder.available()
    # (file, cached batch or None, bytes read, envelope) in replay order
    pending: list[tuple[CaptureFile, pa.RecordBatch | None, CaptureBytes | None, Any]] = []
    events = 0

    def flush() -> Iterator[tuple[CaptureFile, pa.RecordBatch]]:
        todo = [(item, env) for _, b, item, env in pending if b is None and item is not None]
        decoded = iter(
            _assemble(
                [item for item, _ in todo],
                [env for _, env in todo],
                payload=payload,
                schemas=lookup,
                native=native,
            )
            if todo
            else []
        )
        for f, cached, _, _ in pending:
            batch = cached if cached is not None else next(decoded)
            if cached is None and store is not None:
                store.put(f, fingerprint, batch, lookup)
            yield f, batch
        pending.clear()

    for f in files:
        cached = store.get(f, fingerprint, arrow_schema, lookup) if store else None
        if cached is not None:
            if pending:
                pending.append((f, cached, None, None))
            else:
                yield f, cached
            continue
        item = CaptureBytes(lake.read_bytes(f), f.path, f)
        envelope = _envelope_of(item, native=native)
        del item
        n = 0 if envelope is None else len(envelope.sequence_number)
        # PERF: a group never grows past one native read (_GROUP_EVENTS), so its decoded
        # bodies are one array, not pieces concatenated (a copy of every payload column).
        if pending and events + n > _GROUP_EVENTS:
            yield from flush()
            events = 0
        # The bytes are not needed once the envelope is read; keep only where they came from.
        pending.append((f, None, CaptureBytes(b"", f.path, f), envelope))
        events += n
        if events >= _GROUP_EVENTS or len(pending) >= _GROUP_FILES:
            yield from flush()
            events = 0
    yield from flush()


def _filter(
    batch: pa.RecordBatch,
    start: datetime | None,
    end: datetime | None,
    partitions: list[str] | None,
) -> pa.RecordBatch:
    import pyarrow.compute as pc

    mask = None
    times = batch.column("enqueued_time")
    conditions = []
    if start is not None:
        conditions.append(pc.greater_equal(times, pa.scalar(start, times.type)))
    if end is not None:
        conditions.append(pc.less_equal(times, pa.scalar(end, times.type)))
    if partitions is not None:
        part = batch.column("partition")
        conditions.append(pc.or_kleene(pc.is_null(part), pc.is_in(part, pa.array(partitions))))
    for c in conditions:
        mask = c if mask is None else pc.and_(mask, c)
    return batch if mask is None else batch.filter(mask)


def _lake_for(location: Any, storage_options: dict | None) -> Lake:
    if isinstance(location, Lake):
        return location
    text = location if isinstance(location, str) else None
    if text is not None and text.startswith(("abfs://", "abfss://", "az://")):
        from metaverse_kit.backends import load_backend

        return load_backend("azure").lake_from_url(text, storage_options=storage_options or {})
    if storage_options:
        raise ConfigurationError("storage_options apply only to abfs:// and abfss:// locations")
    from metaverse_kit.backends.local.lake import LocalLake

    if isinstance(location, (str, os.PathLike)):
        return LocalLake(location)
    if isinstance(location, Iterable):
        return LocalLake(list(location))
    raise ConfigurationError(
        f"replay_capture takes a folder, a file, a list of files, an abfss:// URL or a Lake; "
        f"got {type(location).__name__}"
    )


def replay_batches(
    location: Any,
    *,
    registry: SchemaRegistry | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    partitions: Sequence[str | int] | None = None,
    schema: Any = None,
    storage_options: dict | None = None,
    progress: bool | None = None,
    dedup: bool = True,
    cache: bool | str | os.PathLike[str] | None = True,
    decoder: str = "auto",
) -> ReplayStream:
    """Stream any Capture tree, file or list of files as RecordBatches (one per file).

    Memory stays bounded by the largest file, whatever the length of the history, except for
    the set of message ids deduplication remembers (see :func:`replay_lake` for ``dedup``,
    ``cache`` and ``decoder``). The returned stream's ``duplicates_dropped`` counts what
    deduplication left out.
    """
    lake = _lake_for(location, storage_options)
    return replay_lake(
        lake,
        registry=registry,
        start=start,
        end=end,
        partitions=partitions,
        schema=schema,
        progress=progress,
        dedup=dedup,
        cache=cache,
        decoder=decoder,
    )


def replay_capture(
    location: Any,
    *,
    registry: SchemaRegistry | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    partitions: Sequence[str | int] | None = None,
    schema: Any = None,
    storage_options: dict | None = None,
    progress: bool | None = None,
    dedup: bool = True,
    cache: bool | str | os.PathLike[str] | None = True,
    decoder: str = "auto",
) -> pa.Table:
    """Replay any Capture tree (a folder copied from a lake, one file, a list, a URL) into a table.

    ``registry`` resolves the schema ids in content types; without it every body is kept raw.
    ``schema`` types the payload columns (default: the built-in MCE schema; ``False``: the
    envelope only). Duplicates (same message id) are dropped unless ``dedup=False``; how many
    is in the table's schema metadata under ``b"metaverse.duplicates_dropped"`` (see
    :func:`duplicates_dropped`). Decoded files are cached unless ``cache=False`` (see
    :func:`replay_lake`). Raises :class:`CaptureFileError` naming a file that cannot be read.
    """
    payload = _payload_schema(schema)
    arrow_schema = payload.arrow_schema() if payload else pa.schema(ENVELOPE_FIELDS)
    stream = replay_batches(
        location,
        registry=registry,
        start=start,
        end=end,
        partitions=partitions,
        schema=payload or False,
        storage_options=storage_options,
        progress=progress,
        # NOTE: the whole table is deduplicated at once below, faster than batch by batch.
        dedup=False,
        cache=cache,
        decoder=decoder,
    )
    batches = [b.replace_schema_metadata(None) for b in stream]
    table = pa.Table.from_batches(batches, schema=arrow_schema)
    dropped = 0
    if dedup:
        table, dropped = _dedup_table(table)
    return table.replace_schema_metadata({DUPLICATES_DROPPED_KEY: str(dropped).encode()})


def duplicates_dropped(table: pa.Table | pa.RecordBatch) -> int:
    """How many duplicate events the replay that made ``table`` dropped (0 when not recorded)."""
    metadata = table.schema.metadata or {}
    return int(metadata.get(DUPLICATES_DROPPED_KEY, b"0"))
