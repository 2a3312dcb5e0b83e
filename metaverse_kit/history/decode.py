"""The decode layer: Capture archives' bytes + a schema lookup + a reader schema -> RecordBatches.

This module is pure: its functions depend only on their arguments (file bytes, where they came
from, a mapping or function from schema id to definition, the reader schema and two options),
touch no registry, lake or cache, and return Arrow data. It is what a replay runs on one
machine (:mod:`metaverse_kit.history.replay` lists, prunes, caches and deduplicates around it)
and what a distributed engine ships to its workers (a Spark ``mapInArrow`` or Dask
``from_map`` function calls :func:`decode_file` on each file's bytes)::

    from metaverse_kit.history.decode import decode_file, output_schema

    schema = output_schema(reader_definition)             # from the reader alone
    done = decode_file(data, path=path, schemas={schema_id: definition, ...},
                       reader=reader_definition, on_bad_file="skip")
    done.batch                                            # a RecordBatch of `schema`
    done.skipped                                          # SkippedPart records

What it does, per archive:

1. **Container** (:mod:`._container`): the blocks are walked; a damaged part (truncated, bad
   framing, not a Capture archive at all) raises :class:`CaptureFileError` naming the file and
   the byte offset, or with ``on_bad_file="skip"`` is left out and recorded as a
   :class:`SkippedPart`, every intact block being kept. Zero bytes are an empty archive.
2. **Envelope**: sequence number, offset, enqueued time, properties... read natively
   (:mod:`._decoder`, DataFusion) or with fastavro; ``x-opt-enqueued-time`` when the event has
   it, else the ``EnqueuedTimeUtc`` text, parsed in bulk (one Arrow ``strptime`` per file).
3. **Bodies**, grouped by the schema id of their content type: each writer version's group is
   decoded with its own schema (natively, fastavro event by event for what the native reader
   cannot read), then resolved to the reader's Arrow type column by column (:mod:`._resolve`:
   defaults, dropped fields, promotions, enum symbols, union branches, aliases). An event whose
   writer cannot be resolved gets a ``decode_error`` naming the first failing field path, and
   keeps its raw ``body``; so do events that are not registry Avro, name an unknown schema id,
   another schema altogether or a writer schema no Arrow type holds (a union of two longs), and
   events holding a timestamp, date or time no Python object holds (:func:`_unreadable_times`).
   A union value is in the branch it was written in, whichever decoder reads it. No row has a
   null payload without a ``decode_error``.
"""

from __future__ import annotations

import functools
import io
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit.backends.protocols import CaptureFile
from metaverse_kit.capture import parse_capture_path
from metaverse_kit.errors import CaptureFileError, ConfigurationError, SchemaParseError
from metaverse_kit.events.avro import LOGICAL_RANGES, AvroSchema, names_match
from metaverse_kit.events.codec import parsed_schema, schema_id_from_content_type
from metaverse_kit.history import _container, _decoder
from metaverse_kit.history._resolve import ResolutionUnsupported, resolution
from metaverse_kit.history.arrow_types import (
    ArrowMapping,
    branch_records,
    mapping_for,
    parsed,
    python_range_problems,
)

__all__ = [
    "BAD_FILE_CHOICES",
    "DECODERS",
    "ENVELOPE_FIELDS",
    "GROUP_EVENTS",
    "GROUP_FILES",
    "MIXED_GROUP_EVENTS",
    "RECORDING_COLUMNS",
    "SKIPPED_KEY",
    "CaptureBytes",
    "DecodedFile",
    "Envelope",
    "MessageIds",
    "PayloadSchema",
    "SchemaLookup",
    "Schemas",
    "SkippedPart",
    "assemble",
    "check_options",
    "decode_capture_file",
    "decode_capture_files",
    "decode_file",
    "decode_files",
    "decode_stream",
    "output_schema",
    "payload_schema",
    "read_envelope",
    "read_message_ids",
    "read_message_ids_of",
    "skipped_files",
    "skipped_metadata",
    "with_skipped",
]

#: The ``decoder=`` choices: the native reader with fastavro where it cannot ("auto", "fast"),
#: or fastavro only. Every choice gives the same table.
DECODERS = ("auto", "fast", "fastavro")
#: The ``on_bad_file=`` choices: raise :class:`CaptureFileError`, or skip the damaged part.
BAD_FILE_CHOICES = ("raise", "skip")
#: Schema metadata key of a batch (or table) under which the parts skipped are kept, as JSON.
SKIPPED_KEY = b"metaverse.skipped_files"

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
#: A schema id -> definition lookup: a function (None when unknown) or a mapping.
Schemas = SchemaLookup | Mapping[str, str | None]

# Capture's EnqueuedTimeUtc: M/d/yyyy h:mm:ss AM/PM, in UTC.
_ENQUEUED_FORMAT = "%m/%d/%Y %I:%M:%S %p"


@dataclass(frozen=True)
class PayloadSchema:
    """The reader schema: payload columns are typed by it, and every body is read as it.

    Bodies written with another schema of the same name (an older or newer version, or a
    schema whose name the reader lists among its aliases) are decoded with their own writer
    schema and resolved to this one by Avro's rules (see :mod:`._resolve`).
    """

    definition: str

    @property
    def avro(self) -> AvroSchema:
        """The parsed schema."""
        return parsed(self.definition)

    @property
    def name(self) -> str | None:
        """The schema's full name."""
        return self.avro.name

    def mapping(self) -> ArrowMapping:
        """The Arrow type of the whole record and its converter (computed once per schema)."""
        return mapping_for(self.definition)

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


def payload_schema(reader: PayloadSchema | AvroSchema | str | dict | None) -> PayloadSchema | None:
    """The reader as a :class:`PayloadSchema`: a definition (JSON text or parsed), an
    :class:`AvroSchema`, a :class:`PayloadSchema`, or None for the envelope columns only."""
    if reader is None or isinstance(reader, PayloadSchema):
        return reader
    if isinstance(reader, AvroSchema):
        return PayloadSchema(reader.canonical_text)
    if isinstance(reader, str):
        return PayloadSchema(reader)
    return PayloadSchema(AvroSchema(reader).canonical_text)


def output_schema(reader: PayloadSchema | AvroSchema | str | dict | None) -> pa.Schema:
    """The Arrow schema of every batch decoded with ``reader`` (None: the envelope only)."""
    payload = payload_schema(reader)
    return payload.arrow_schema() if payload else pa.schema(ENVELOPE_FIELDS)


@dataclass(frozen=True)
class CaptureBytes:
    """One Capture archive to decode: its bytes, its path (for messages) and what is known of it."""

    data: bytes
    path: str = ""
    file: CaptureFile | None = None


@dataclass(frozen=True)
class SkippedPart:
    """A file, or a block of one, left out of a replay made with ``on_bad_file="skip"``.

    ``path`` is the file; ``offset`` the byte where the damaged part starts (None when the
    whole file was skipped); ``reason`` what was wrong; ``events_kept`` how many events of
    that file were read from its intact blocks and replayed.
    """

    path: str
    reason: str
    events_kept: int = 0
    offset: int | None = None

    def error(self) -> CaptureFileError:
        """The :class:`CaptureFileError` a replay with ``on_bad_file="raise"`` raises for it."""
        where = f"at byte {self.offset}" if self.offset is not None else "as a whole"
        return CaptureFileError(
            f"{self.path or 'a Capture file'} cannot be read {where}: {self.reason}. "
            "To replay everything else (keeping the file's intact blocks), pass "
            "on_bad_file='skip' (metaverse replay --skip-bad-files)."
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as plain data (what a table's metadata keeps)."""
        return {
            "path": self.path,
            "offset": self.offset,
            "reason": self.reason,
            "events_kept": self.events_kept,
        }


@dataclass(frozen=True)
class DecodedFile:
    """What decoding one archive gave: its batch and the parts of it that were skipped.

    ``within`` is set when ``batch`` is rows of a batch decoded for a group of many small
    files: that batch and where this file's rows start in it. A consumer that keeps whole
    files of one group (``replay_capture``) keeps one slice of it instead of a batch per file.
    """

    batch: pa.RecordBatch
    skipped: tuple[SkippedPart, ...] = ()
    within: tuple[pa.RecordBatch, int] | None = None


def skipped_files(table: Any) -> list[SkippedPart]:
    """The parts of files a replay made with ``on_bad_file="skip"`` left out (see
    :class:`SkippedPart`); empty when nothing was skipped or the table does not say.

    ``table`` is what a replay returned: an Arrow table or batch (its schema metadata), a
    Dask DataFrame of ``dask_replay`` or what it computed (its ``attrs``), or a Spark DataFrame of
    ``spark_replay`` (the metadata of its ``capture_file`` column), each under
    :data:`SKIPPED_KEY`.
    """
    raw = recorded(table, SKIPPED_KEY)
    if not raw:
        return []
    return [SkippedPart(**item) for item in json.loads(raw)]


#: The columns whose field metadata holds what a replay recorded, on an engine (Spark) that keeps
#: a column's metadata through projections and no metadata of the whole table.
RECORDING_COLUMNS = ("capture_file", "enqueued_time")


def recorded(table: Any, key: bytes) -> bytes | None:
    """What a replay recorded under ``key`` on ``table`` (see :func:`skipped_files`), or None.

    NOTE: duck-typed, so that this layer imports no engine: Arrow keeps it in the schema
    metadata, pandas and Dask in ``attrs``, Spark in the metadata of the ``capture_file`` field
    and, for a DataFrame narrowed or exploded without it (Spark keeps a column's metadata
    through projections, not the schema's), of the ``enqueued_time`` field.
    """
    schema = getattr(table, "schema", None)
    if isinstance(schema, pa.Schema):
        return (schema.metadata or {}).get(key)
    text = key.decode()
    # NOTE: a Dask DataFrame keeps attrs on its meta (the empty frame every partition matches).
    for frame in (table, getattr(table, "_meta", None)):
        attrs = getattr(frame, "attrs", None)
        if isinstance(attrs, Mapping) and text in attrs:
            return str(attrs[text]).encode()
    carriers = {getattr(f, "name", None): f for f in getattr(schema, "fields", None) or ()}
    for name in RECORDING_COLUMNS:
        metadata = getattr(carriers.get(name), "metadata", None)
        if isinstance(metadata, Mapping) and text in metadata:
            return str(metadata[text]).encode()
    return None


def skipped_metadata(skipped: Sequence[SkippedPart]) -> bytes:
    """The schema metadata value (under :data:`SKIPPED_KEY`) that :func:`skipped_files` reads."""
    return json.dumps([s.to_dict() for s in skipped]).encode()


def with_skipped(batch: pa.RecordBatch, skipped: Sequence[SkippedPart]) -> pa.RecordBatch:
    """``batch`` whose schema metadata records ``skipped`` (see :func:`skipped_files`)."""
    metadata = dict(batch.schema.metadata or {})
    if skipped:
        metadata[SKIPPED_KEY] = skipped_metadata(skipped)
    else:
        metadata.pop(SKIPPED_KEY, None)
    return batch.replace_schema_metadata(metadata or None)


def check_options(*, decoder: str, on_bad_file: str) -> None:
    """Raise :class:`ConfigurationError` for a ``decoder`` or ``on_bad_file`` not offered."""
    if decoder not in DECODERS:
        raise ConfigurationError(
            f"decoder= takes {', '.join(map(repr, DECODERS))}; got {decoder!r}"
        )
    if on_bad_file not in BAD_FILE_CHOICES:
        raise ConfigurationError(
            f"on_bad_file= takes {', '.join(map(repr, BAD_FILE_CHOICES))}; got {on_bad_file!r}"
        )


def _native(decoder: str) -> bool:
    return decoder != "fastavro" and _decoder.available()


def _lookup_of(schemas: Schemas) -> SchemaLookup:
    if isinstance(schemas, Mapping):
        return schemas.get
    return schemas


# -- the envelope -------------------------------------------------------------------------------


@dataclass
class _Columns:
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

    def slice(self, offset: int, length: int) -> _Columns:
        """The columns of ``length`` events from ``offset`` (no copy)."""
        # PERF: the field names once, not dataclasses.fields() per call (per small file).
        return _Columns(*[getattr(self, name).slice(offset, length) for name in _COLUMN_NAMES])


_COLUMN_NAMES = tuple(f.name for f in fields(_Columns))


@dataclass
class Envelope:
    """One archive's envelope columns (None when it holds no event) and its damaged parts."""

    columns: _Columns | None
    damage: list[_container.Damage] = field(default_factory=list)

    @property
    def events(self) -> int:
        """How many events the archive's intact blocks hold."""
        return 0 if self.columns is None else len(self.columns.sequence_number)


def read_envelope(
    item: CaptureBytes, *, decoder: str = "auto", on_bad_file: str = "raise"
) -> Envelope:
    """Read one archive's envelope, leaving damaged parts out (``on_bad_file="skip"``) or
    raising :class:`CaptureFileError` at the first (``"raise"``)."""
    return _envelope(
        item,
        _container.scan(item.data, where=item.path or "the Capture file"),
        decoder=decoder,
        on_bad_file=on_bad_file,
    )


def _envelope(
    item: CaptureBytes, found: _container.Scan, *, decoder: str, on_bad_file: str
) -> Envelope:
    """:func:`read_envelope` of an archive whose blocks were walked already (``found``)."""
    where = item.path or "the Capture file"
    damage = list(found.damage)
    _check_damage(damage, item.path, on_bad_file)
    if not found.events:
        return Envelope(None, damage)
    data = _container.joined(found.intact())
    try:
        try:
            columns = _read_columns(
                data, where, native=_native(decoder), source=item.path if found.whole else None
            )
        except _Undecodable:
            # Framing was whole, yet the records do not decode: find the damaged blocks.
            good, more = _container.blocks_that_decode(found)
            damage.extend(more)
            _check_damage(damage, item.path, on_bad_file)
            if not good:
                return Envelope(None, damage)
            columns = _read_columns(_container.joined(found.intact(good)), where, native=False)
    except (_Undecodable, _BadTimes) as exc:
        damage.append(_container.Damage(None, str(exc)))
        _check_damage(damage, item.path, on_bad_file)
        return Envelope(None, damage)
    return Envelope(columns, damage)


#: Archives at most this big are read together (see :func:`_with_envelopes`).
SMALL_FILE_BYTES = 256 << 10
#: At most this many small archives are read in one native call.
SMALL_FILES = 64


def _small_runs(
    items: Iterable[CaptureBytes | DecodedFile], *, native: bool
) -> Iterator[tuple[bool, list[tuple[Any, _container.Scan | None]]]]:
    """The items in order, each with its walked blocks (None for a :class:`DecodedFile`), in
    runs: consecutive small archives whose framing is whole, to be read together (True), and
    every other item alone (False).

    PERF: a native read costs about 2 ms whatever its size, and a quiet hub's Capture files
    hold a few events each (one file per partition and window): 5,000 files of 0-2 events
    replayed at 2.7 ms a file, slower than the baseline. Runs hold at most :data:`SMALL_FILES`
    archives and, unless one archive holds more, :data:`GROUP_EVENTS` events.
    """
    run: list[tuple[Any, _container.Scan | None]] = []
    events = 0
    for item in items:
        found = None
        if not isinstance(item, DecodedFile):
            found = _container.scan(item.data, where=item.path or "the Capture file")
            if native and found.whole and 0 < len(item.data) <= SMALL_FILE_BYTES:
                if run and events + found.events > GROUP_EVENTS:
                    yield True, run  # one native read each, never a read cut in two
                    run, events = [], 0
                run.append((item, found))
                events += found.events
                if len(run) >= SMALL_FILES:
                    yield True, run
                    run, events = [], 0
                continue
        if run:
            yield True, run
            run, events = [], 0
        yield False, [(item, found)]
    if run:
        yield True, run


_T = TypeVar("_T")


def _read_together(
    run: list[tuple[Any, _container.Scan | None]], read: Callable[[bytes], tuple[_T, int]]
) -> list[tuple[_T, int] | None]:
    """Read whole archives' blocks, those of one header (codec, schema) at once: for each
    archive, what ``read`` gave for its header's archives joined (``read`` says how many rows
    it read) and the row its events start at; None for an archive with no event, or one whose
    header's archives could not be read so (a record that does not decode, a time that does not
    parse, a count that does not add up): read it alone, which says which and why.

    The blocks are joined behind the first archive's header, each closed by its sync marker.
    """
    out: list[tuple[_T, int] | None] = [None] * len(run)
    by_header: dict[bytes, list[int]] = {}
    for i, (_, found) in enumerate(run):
        if found is not None and found.events:
            by_header.setdefault(found.header_key, []).append(i)
    for members in by_header.values():
        scans = [found for i in members if (found := run[i][1]) is not None]
        try:
            got, rows = read(_container.spliced(scans))
        except (_decoder.Unsupported, _Undecodable, _BadTimes):
            continue
        if rows != sum(found.events for found in scans):
            continue
        at = 0
        for i, found in zip(members, scans, strict=True):
            out[i] = (got, at)
            at += found.events
    return out


def _with_envelopes(
    items: Iterable[CaptureBytes | DecodedFile], *, decoder: str, on_bad_file: str
) -> Iterator[tuple[CaptureBytes | DecodedFile, Envelope | None]]:
    """Each item with its envelope (None for a :class:`DecodedFile`), in order; small whole
    archives read together (:func:`_small_runs`)."""

    def read(data: bytes) -> tuple[_Columns, int]:
        columns = _columns_native(data, "several Capture files")
        return columns, len(columns.sequence_number)

    for together, run in _small_runs(items, native=_native(decoder)):
        reads = _read_together(run, read) if together else [None]
        for (item, found), got in zip(run, reads, strict=True):
            if found is None:
                yield item, None
            elif got is not None:
                columns, at = got
                yield item, Envelope(columns.slice(at, found.events), [])
            else:
                yield item, _envelope(item, found, decoder=decoder, on_bad_file=on_bad_file)


def _check_damage(damage: list[_container.Damage], path: str, on_bad_file: str) -> None:
    damage.sort(key=lambda d: -1 if d.offset is None else d.offset)
    if damage and on_bad_file == "raise":
        raise SkippedPart(path, damage[0].reason, 0, damage[0].offset).error()


@dataclass
class MessageIds:
    """What a plan over many archives needs of one: its events' message ids and enqueued
    times (None when it holds no event), its damaged parts and how many events it holds."""

    message_id: pa.Array | None
    enqueued_time: pa.Array | None
    damage: list[_container.Damage]
    events: int


def read_message_ids(
    item: CaptureBytes, *, decoder: str = "auto", on_bad_file: str = "raise"
) -> MessageIds:
    """The message ids and enqueued times of one archive's events, as :func:`read_envelope`
    reads them, and its damaged parts (skipped or raised as ``on_bad_file`` says).

    PERF: an archive whose framing is whole is read natively without its bodies, offsets or
    other properties (half to two thirds of reading its envelope); anything else is read by
    :func:`read_envelope`, so both give the same events and the same damage.
    """
    found = _container.scan(item.data, where=item.path or "the Capture file")
    return _message_ids(item, found, decoder=decoder, on_bad_file=on_bad_file)


def read_message_ids_of(
    items: Iterable[CaptureBytes], *, decoder: str = "auto", on_bad_file: str = "raise"
) -> Iterator[MessageIds | CaptureFileError]:
    """:func:`read_message_ids` of each item, in order, lazily; for a damaged archive with
    ``on_bad_file="raise"``, the :class:`CaptureFileError` it would raise, in its place, so
    that a plan learns of every archive. Small whole archives are read together, as the
    replay reads their envelopes (:func:`_small_runs`).
    """

    def read(data: bytes) -> tuple[tuple[pa.Array, pa.Array], int]:
        ids, times = _native_message_ids(data, "several Capture files")
        return (ids, times), len(times)

    for together, run in _small_runs(items, native=_native(decoder)):
        reads = _read_together(run, read) if together else [None]
        for (item, found), got in zip(run, reads, strict=True):
            assert found is not None  # archives only: each was walked
            if got is not None:
                (ids, times), at = got
                yield MessageIds(
                    ids.slice(at, found.events), times.slice(at, found.events), [], found.events
                )
                continue
            try:
                yield _message_ids(item, found, decoder=decoder, on_bad_file=on_bad_file)
            except CaptureFileError as exc:
                yield exc


def _message_ids(
    item: CaptureBytes, found: _container.Scan, *, decoder: str, on_bad_file: str
) -> MessageIds:
    """:func:`read_message_ids` of an archive whose blocks were walked already (``found``)."""
    if _native(decoder) and found.whole and found.events:
        try:
            ids, times = _native_message_ids(item.data, item.path, source=item.path)
        except (_decoder.Unsupported, _BadTimes):
            pass  # the envelope's read says what it is
        else:
            return MessageIds(ids, times, [], len(times))
    envelope = _envelope(item, found, decoder=decoder, on_bad_file=on_bad_file)
    columns = envelope.columns
    return MessageIds(
        None if columns is None else columns.message_id,
        None if columns is None else columns.enqueued_time,
        envelope.damage,
        envelope.events,
    )


def _native_message_ids(
    data: bytes, where: str, *, source: str | None = None
) -> tuple[pa.Array, pa.Array]:
    """The message ids and enqueued times of a whole archive's records, read natively without
    their bodies; raises :class:`_decoder.Unsupported` or :class:`_BadTimes`."""
    cols = _decoder.read_properties(data, source=source)
    times = _enqueued_ms(
        cols["enqueued_ms"],
        cols["has_enqueued_ms"],
        cols["enqueued_text"],
        pa.array(np.arange(len(cols["enqueued_ms"]))),
        where,
    )
    ids = _decoder.string_entry(cols["system_properties"], "message-id")
    if ids.null_count:
        ids = pc.coalesce(ids, _decoder.string_entry(cols["properties"], "message-id"))
    return ids, times


class _Undecodable(Exception):
    """The records of an archive whose framing is whole do not decode."""


class _BadTimes(Exception):
    """An event has neither x-opt-enqueued-time nor a readable EnqueuedTimeUtc."""


def _read_columns(data: bytes, where: str, *, native: bool, source: str | None = None) -> _Columns:
    if native:
        try:
            return _columns_native(data, where, source=source)
        except _decoder.Unsupported:
            pass
    return _columns_fastavro(data, where)


def _enqueued_ms(
    ms: np.ndarray, has: np.ndarray, texts: pa.Array, seqs: pa.Array, where: str
) -> pa.Array:
    """Epoch milliseconds of each event: ``x-opt-enqueued-time`` where ``has``, else the
    ``EnqueuedTimeUtc`` text, parsed in bulk (older Capture files carry only the text)."""
    missing = ~has
    if missing.any():
        # PERF: Arrow's strptime once per distinct text (events of one second share it), never
        # once per event in Python.
        chosen = texts if missing.all() else texts.filter(pa.array(missing))
        distinct = chosen.cast(pa.string()).dictionary_encode()
        parsed_ms = pc.take(
            pc.strptime(
                pc.utf8_trim_whitespace(distinct.dictionary),
                format=_ENQUEUED_FORMAT,
                unit="ms",
                error_is_null=True,
            ),
            distinct.indices,
        )
        if parsed_ms.null_count:
            bad = int(np.flatnonzero(missing)[np.flatnonzero(parsed_ms.is_null())[0]])
            raise _BadTimes(
                f"event {seqs[bad].as_py()} has no x-opt-enqueued-time and an unreadable "
                f"EnqueuedTimeUtc {texts[bad].as_py()!r}"
            )
        ms = ms.copy()
        ms[missing] = parsed_ms.cast(pa.int64()).to_numpy(zero_copy_only=False)
    return pa.array(ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))


def _columns_native(data: bytes, where: str, *, source: str | None = None) -> _Columns:
    cols = _decoder.read_envelope(data, source=source)
    system, app = cols["system_properties"], cols["properties"]
    pool = _decoder.pool()
    content_type = pc.coalesce(
        _decoder.lookup(system, "content-type"),
        _decoder.lookup(app, "content-type"),
        _decoder.lookup(system, "x-opt-content-type"),
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
    return _Columns(
        sequence_number=cols["sequence_number"],
        offset=cols["offset"],
        enqueued_time=_enqueued_ms(
            cols["enqueued_ms"],
            cols["has_enqueued_ms"],
            cols["enqueued_text"],
            cols["sequence_number"],
            where,
        ),
        partition_key=pc.map_lookup(
            system, pa.scalar("x-opt-partition-key"), "last", memory_pool=pool
        ),
        content_type=content_type,
        schema_ids=ids,
        message_id=pc.coalesce(
            _decoder.lookup(system, "message-id"),
            _decoder.lookup(app, "message-id"),
            memory_pool=pool,
        ),
        properties=app,
        system_properties=system,
        body=cols["body"],
    )


def _props(values: dict | None) -> list[tuple[str, str | None]]:
    return [(k, _decoder.property_text(v)) for k, v in (values or {}).items()]


def _columns_fastavro(data: bytes, where: str) -> _Columns:
    try:
        records: list[Any] = list(fastavro.reader(io.BytesIO(data)))
    except Exception as exc:  # fastavro raises many types for damaged input
        raise _Undecodable(f"the records do not decode: {exc}") from exc
    text = _decoder.property_text
    seq, offsets, times, has, texts, keys, ctypes, ids, mids = ([] for _ in range(9))
    props, sysprops = [], []
    for r in records:
        system = r.get("SystemProperties") or {}
        app = r.get("Properties") or {}
        seq.append(r["SequenceNumber"])
        offsets.append(r.get("Offset"))
        ms = system.get("x-opt-enqueued-time")
        known = isinstance(ms, int) and not isinstance(ms, bool)
        times.append(ms if known else 0)
        has.append(known)
        texts.append(r.get("EnqueuedTimeUtc"))
        keys.append(text(system.get("x-opt-partition-key")))
        ct = text(
            system.get("content-type")
            or app.get("content-type")
            or system.get("x-opt-content-type")
        )
        ctypes.append(ct)
        ids.append(schema_id_from_content_type(ct))
        mids.append(text(system.get("message-id") or app.get("message-id")))
        props.append(_props(app))
        sysprops.append(_props(system))
    sequence_number = pa.array(seq, pa.int64())
    return _Columns(
        sequence_number=sequence_number,
        offset=pa.array(offsets, pa.string()),
        enqueued_time=_enqueued_ms(
            np.asarray(times, dtype=np.int64),
            np.asarray(has, dtype=bool),
            pa.array(texts, pa.string()),
            sequence_number,
            where,
        ),
        partition_key=pa.array(keys, pa.string()),
        content_type=pa.array(ctypes, pa.string()),
        schema_ids=pa.array(ids, pa.string()),
        message_id=pa.array(mids, pa.string()),
        properties=pa.array(props, _PROPS),
        system_properties=pa.array(sysprops, _PROPS),
        body=pa.array([r.get("Body") for r in records], pa.binary()),
    )


# -- the bodies -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _empty_batch(definition: str | None) -> pa.RecordBatch:
    """The batch of a file with no event, for a reader's definition (None: envelope only).

    PERF: building it takes 7-9 ms for a DataHub-sized schema, and Capture writes a file per
    partition and window even when no event came (a fifth of a quiet hub's files): made once.
    """
    schema = output_schema(None if definition is None else PayloadSchema(definition))
    return pa.RecordBatch.from_pylist([], schema=schema)


def _file_from_path(path: str) -> CaptureFile | None:
    info = parse_capture_path(path)
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


def assemble(
    items: Sequence[CaptureBytes],
    envelopes: Sequence[Envelope],
    *,
    reader: PayloadSchema | AvroSchema | str | dict | None,
    schemas: Schemas,
    decoder: str = "auto",
) -> list[DecodedFile]:
    """Decode the bodies of all ``envelopes`` together; one :class:`DecodedFile` per item.

    Decoding bodies of many archives at once spreads a native call's fixed cost (planning,
    walking a DataHub-sized schema) over the many small files Capture writes. ``items`` give
    each file's path (and what is known of it); their bytes are no longer needed.
    """
    payload = payload_schema(reader)
    lookup = _lookup_of(schemas)
    schema = output_schema(payload)
    present = [
        (item, e.columns) for item, e in zip(items, envelopes, strict=True) if e.columns is not None
    ]
    bodies: pa.Array | None = None
    errors: np.ndarray | None = None
    payload_columns: list[pa.Array] = []
    if present:
        # PERF: the bodies of the files stay apart (chunks): the decoder reads them in place.
        body: Any = pa.chunked_array([c.body for _, c in present], pa.binary())
        ids = pa.concat_arrays([c.schema_ids for _, c in present])
        bodies, errors, payload_columns = _decode_payloads(
            body, ids, payload, lookup, native=_native(decoder)
        )
        del body
    events = sum(len(c.sequence_number) for _, c in present)
    whole: pa.RecordBatch | None = None
    many_small = len(present) > _FEW_FILES and events <= _SMALL_FILE_EVENTS * len(present)
    if bodies is not None and many_small:
        whole = _batch_of(present, bodies, errors, payload_columns, schema)
    out = []
    at = 0
    for item, envelope in zip(items, envelopes, strict=True):
        skipped = tuple(
            SkippedPart(item.path, d.reason, envelope.events, d.offset) for d in envelope.damage
        )
        columns = envelope.columns
        if columns is None or bodies is None:
            empty = _empty_batch(payload.definition if payload else None)
            out.append(DecodedFile(with_skipped(empty, skipped), skipped))
            continue
        n = len(columns.sequence_number)
        within = None
        if whole is not None:
            batch, within = whole.slice(at, n), (whole, at)
        else:
            batch = _batch_of(
                [(item, columns)],
                bodies.slice(at, n),
                None if errors is None else errors[at : at + n],
                [c.slice(at, n) for c in payload_columns],
                schema,
            )
        out.append(DecodedFile(with_skipped(batch, skipped) if skipped else batch, skipped, within))
        at += n
    return out


#: A group of more than this many files with events, of at most :data:`_SMALL_FILE_EVENTS`
#: events each on average, is assembled as one batch and cut file by file. PERF: a batch of
#: DataHub's columns costs ~0.1 ms to build (its constants, a slice of every column, the
#: checks), more than a quiet hub's file of one or two events costs to decode; bigger files
#: keep a batch each, as joining their envelopes would copy them.
_FEW_FILES = 8
_SMALL_FILE_EVENTS = 64


def _batch_of(
    files: Sequence[tuple[CaptureBytes, _Columns]],
    bodies: pa.Array,
    errors: np.ndarray | None,
    payload_columns: list[pa.Array],
    schema: pa.Schema,
) -> pa.RecordBatch:
    """The replayed batch of the events of ``files`` (each with its envelope), in order:
    ``bodies`` left undecoded, decode ``errors`` and payload columns are theirs, in order."""
    pool = _decoder.pool()
    counts = np.array([len(c.sequence_number) for _, c in files], dtype=np.int64)
    which = pa.array(np.repeat(np.arange(len(files), dtype=np.int64), counts))
    infos = [item.file or _file_from_path(item.path) for item, _ in files]

    def per_file(values: list[str | None]) -> pa.Array:
        return pc.take(pa.array(values, pa.string()), which, memory_pool=pool)

    def joined(parts: Sequence[pa.Array]) -> pa.Array:
        return parts[0] if len(parts) == 1 else pa.concat_arrays(list(parts), memory_pool=pool)

    columns = [c for _, c in files]
    n = int(counts.sum())
    arrays: list[Any] = [
        per_file([i.namespace if i else None for i in infos]),
        per_file([i.eventhub if i else None for i in infos]),
        per_file([i.partition if i else None for i in infos]),
        *[joined([getattr(c, name) for c in columns]) for name in _ENVELOPE_COLUMNS],
        per_file([item.path or None for item, _ in files]),
        bodies,
        pa.nulls(n, pa.string()) if errors is None else pa.array(errors, pa.string()),
        *payload_columns,
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


#: The envelope columns of a replayed batch, in the output schema's order.
_ENVELOPE_COLUMNS = (
    "sequence_number",
    "offset",
    "enqueued_time",
    "partition_key",
    "content_type",
    "schema_ids",
    "message_id",
    "properties",
    "system_properties",
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

    Bodies are grouped by schema id (``ids``, a string array). The reader's own bodies and
    those of writers whose bytes the reader's schema reads as they resolve are decoded together,
    natively; each other writer's group is decoded with its own schema and resolved to the
    reader (:func:`_decode_group`); the groups are then put back in event order. The errors are
    an object array of messages (None where decoded), or None when no event has one.
    """
    pool = _decoder.pool()
    n = len(body)
    if payload is None:
        return _decoder.own(body), None, []
    errors = np.full(n, None, dtype=object)
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
    # What to decode together: bodies of the reader's schema and of every writer whose bodies
    # the reader's schema reads as they resolve (it only appended branches or symbols...) in
    # one native call; every other writer version on its own, then resolved.
    batches: dict[str, list[tuple[str, str, np.ndarray]]] = {}
    for schema_id, rows in groups.items():
        definition = schemas(schema_id)
        if definition is None:
            errors[rows] = f"unknown schema id {schema_id}"
            continue
        writer = parsed(definition)
        if definition != payload.definition and not _same_record(writer, reader):
            errors[rows] = (
                f"written with schema {writer.name}, not the replay's "
                f"{reader.name}; replay with schema= that schema to decode it"
            )
            continue
        if definition != payload.definition:
            try:
                mapping_for(definition)
            except SchemaParseError as exc:
                # NOTE: a schema no Arrow type holds (a union of two longs...) reads nothing.
                errors[rows] = f"written with schema {schema_id}, which cannot be decoded: {exc}"
                continue
        key = payload.definition if _reads_as_reader(definition, payload) else definition
        batches.setdefault(key, []).append((schema_id, definition, rows))
    pieces: list[pa.Array] = []
    index = np.full(n, -1, dtype=np.int64)
    used = 0
    # (what to decode with, its members, whether to try the native reader)
    work = [(key, members, native) for key, members in batches.items()]
    while work:
        key, members, try_native = work.pop(0)
        rows = (
            members[0][2] if len(members) == 1 else np.sort(np.concatenate([m[2] for m in members]))
        )
        group = body if len(rows) == n else body.take(pa.array(rows))
        attempted = try_native and key == payload.definition
        together = _decode_native(group, key) if attempted else None
        if together is not None:
            values, group_errors = together, None
        elif len(members) > 1:
            # The native reader refused them together: each version on its own.
            work[:0] = [(m[1], [m], try_native and m[1] != key) for m in members]
            continue
        else:
            schema_id, definition, _ = members[0]
            values, group_errors = _decode_group(
                group,
                definition,
                payload,
                schema_id,
                native=try_native and not (attempted and definition == key),
            )
        del group
        if group_errors is not None:
            failed = np.flatnonzero(group_errors.astype(bool))
            errors[rows[failed]] = group_errors[failed]
        pieces.extend(values)
        index[rows] = used + np.arange(len(rows))
        used += len(rows)
    if not pieces:
        values = _decoder.compact_nulls(n, mapping.type)
    elif used == n and bool((index == np.arange(n)).all()):
        # In event order already (one version; one piece per native read of a big file).
        values = pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces, memory_pool=pool)
    else:
        values = _decoder.interleave(pieces, index)
    values = _unreadable_times(values, payload, errors)
    decoded_rows = (index >= 0) & ~errors.astype(bool)
    if decoded_rows.all():
        # NOTE: a fresh all-null array; if_else would keep the decoded bodies' bytes alive.
        out = pa.nulls(n, pa.binary(), memory_pool=pool)
    elif decoded_rows.any():
        out = _decoder.own(pc.if_else(pa.array(decoded_rows), pa.scalar(None, pa.binary()), body))
    else:
        out = _decoder.own(body)
    # Messages are never empty: bool() is False only where there is none.
    has_errors = bool(errors.astype(bool).any())
    if not pa.types.is_struct(mapping.type):
        return out, errors if has_errors else None, [values]
    # NOTE: flatten(), unlike field(i), carries the null rows of undecoded events into each column.
    return out, errors if has_errors else None, list(values.flatten(memory_pool=pool))


def _out_of_range(problem: str) -> str:
    """The ``decode_error`` of an event holding a date or time no Python object holds."""
    return (
        f"holds a value no Python datetime can: {problem}; its raw body is kept (a replay with "
        "a schema where that field has no logicalType reads the number)"
    )


def _unreadable_times(values: pa.Array, payload: PayloadSchema, errors: np.ndarray) -> pa.Array:
    """``values`` with the payload of every event holding a timestamp, date or time no Python
    object holds left out (null), and its ``decode_error`` (in ``errors``) naming the field.

    NOTE: another producer may write such a number (validation refuses it here), and Arrow holds
    it, but to_pylist, to_pandas, the history questions and the widgets then raise an
    OverflowError naming no field, or wrap a time of day past midnight, far from the cause. So
    the event is kept as every event that cannot be read is: its envelope, its raw body and why
    (the questions warn that they leave it out), and both decoders give the same row.
    """
    if not _holds_dates_or_times(payload.definition):
        return values
    problems = python_range_problems(payload.avro, values)
    if problems is None:
        return values
    bad = problems.astype(bool) & ~errors.astype(bool)
    if not bad.any():
        return values
    for i in np.flatnonzero(bad).tolist():
        errors[i] = _out_of_range(problems[i])
    return pc.if_else(
        pa.array(~bad), values, pa.scalar(None, values.type), memory_pool=_decoder.pool()
    )


@functools.lru_cache(maxsize=64)
def _holds_dates_or_times(definition: str) -> bool:
    """Whether any type of ``definition`` is a timestamp, date or time (once per definition).

    PERF: asked per decoded batch; by the definition's text, whose hash Python keeps, not by the
    Arrow type, whose hash costs 0.5 ms for the MCE's (a quiet hub's replay decodes thousands of
    batches, at 0.4 ms a file).
    """
    nodes = [parsed(definition).definition]
    while nodes:
        node = nodes.pop()
        if isinstance(node, list):
            nodes.extend(node)
        elif isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str) and (kind, node.get("logicalType")) in LOGICAL_RANGES:
                return True
            nodes.extend(v for k, v in node.items() if k in ("type", "items", "values", "fields"))
    return False


def _date_or_time(avro: AvroSchema, t: Any) -> bool:
    r = avro.resolve(t)
    return isinstance(r, dict) and (r.get("type"), r.get("logicalType")) in LOGICAL_RANGES


@functools.lru_cache(maxsize=64)
def _numbers_fit(definition: str) -> bool:
    """True unless a union of ``definition`` has a date or time branch beside another int or
    long branch: there a number fastavro resolves to a reader without its logical type could
    not tell its branch (a writer's own branches are named: :func:`_branch_named`)."""
    avro = parsed(definition)
    types = [f["type"] for t in avro.named.values() for f in t.get("fields", [])]
    types.append(avro.root)
    while types:
        t = types.pop()
        if isinstance(t, list):
            whole = [b for b in t if avro.kind(b) in ("int", "long")]
            if len(whole) > 1 and any(_date_or_time(avro, b) for b in whole):
                return False
            types.extend(t)
        elif isinstance(t, dict) and t.get("type") in ("array", "map"):
            types.append(t["items"] if t["type"] == "array" else t["values"])
    return True


def _plain(t: Any) -> Any:
    """A schema's JSON form with its dates and times as the numbers they are written as."""
    if isinstance(t, list):
        return [_plain(b) for b in t]
    if not isinstance(t, dict):
        return t
    kind = t.get("type")
    if isinstance(kind, str) and (kind, t.get("logicalType")) in LOGICAL_RANGES:
        return kind
    return {k: _plain(v) if k in ("type", "items", "values", "fields") else v for k, v in t.items()}


@functools.lru_cache(maxsize=64)
def _numbers_schema(definition: str) -> Any:
    """fastavro's parsed form of ``definition`` that reads dates and times as their numbers."""
    return fastavro.parse_schema(_plain(json.loads(definition)))


@functools.lru_cache(maxsize=64)
def _branch_named(definition: str, *, numbers: bool = False) -> Any:
    """fastavro's parsed form of a writer's ``definition`` that names the branch of every union
    value (:func:`~metaverse_kit.history.arrow_types.branch_records`), so that the fastavro
    decoder puts each value in the branch it was written in, as the native decoder does; with
    ``numbers``, dates and times are read as their numbers."""
    schema = branch_records(definition)
    return fastavro.parse_schema(_plain(schema) if numbers else schema)


def _as_numbers(data: bytes, definition: str, reader: str | None) -> tuple[Any, int] | None:
    """``data`` read with its dates and times as their numbers, and how many bytes that took;
    None when that fails too, or when a number could be put in the wrong branch of a union.

    NOTE: for a body fastavro could not read because a date or time no Python object holds
    (its datetime raises): read so, the event gets the same row and decode_error as the native
    decoder gives it (:func:`_unreadable_times`), and a reader without that logical type reads
    the number.
    """
    if reader is not None and not (_numbers_fit(definition) and _numbers_fit(reader)):
        return None
    buf = io.BytesIO(data)
    try:
        value = fastavro.schemaless_reader(
            buf,
            _branch_named(definition, numbers=True)
            if reader is None
            else _numbers_schema(definition),
            None if reader is None else _numbers_schema(reader),
            return_record_name=True,
        )
    except Exception:  # NOTE: then it says what fastavro said in the first place.
        return None
    return value, buf.tell()


def _same_record(writer: AvroSchema, reader: AvroSchema) -> bool:
    """True when a writer's root may be read as the reader's (same name, or an alias)."""
    w, r = writer.root_type, reader.root_type
    if not (isinstance(w, dict) and isinstance(r, dict) and "name" in w and "name" in r):
        return writer.canonical_text == reader.canonical_text
    return names_match(w, r)


def _reads_as_reader(definition: str, payload: PayloadSchema) -> bool:
    """True when bodies of ``definition`` decode with the reader's schema as they resolve."""
    if definition == payload.definition:
        return True
    try:
        return resolution(definition, payload.definition).same_bytes
    except ResolutionUnsupported:
        return False


def _decode_native(bodies: pa.Array | pa.ChunkedArray, definition: str) -> list[pa.Array] | None:
    """``bodies`` decoded natively with ``definition`` (the arrays of its native reads, in
    order), or None when the native reader cannot."""
    try:
        return _decoder.decode_chunks(bodies, definition, mapping_for(definition).type)
    except _decoder.Unsupported:
        return None


def _decode_group(
    bodies: pa.Array | pa.ChunkedArray,
    definition: str,
    payload: PayloadSchema,
    schema_id: str,
    *,
    native: bool,
) -> tuple[list[pa.Array], np.ndarray | None]:
    """One writer version's bodies as the reader's type: (values, in pieces; errors or None).

    Decoded with the writer's schema (natively, or with fastavro event by event where the
    native reader cannot), then resolved to the reader (:mod:`._resolve`). A failed event is
    null in ``values`` and has its message in ``errors``.
    """
    try:
        plan = resolution(definition, payload.definition)
    except ResolutionUnsupported:
        return _fastavro_resolved(bodies, definition, payload, schema_id)
    errors: np.ndarray | None = None
    pieces = _decode_native(bodies, definition) if native else None
    if pieces is None:
        pieces, errors = _fastavro_bodies(bodies, definition, schema_id)
    if plan.identity:
        return pieces, errors
    resolved: list[pa.Array] = []
    failed: list[np.ndarray] = []
    try:
        for piece in pieces:
            values, failures = plan.apply(piece)
            resolved.append(values)
            failed.append(np.full(len(piece), None, dtype=object) if failures is None else failures)
    except ResolutionUnsupported:
        return _fastavro_resolved(bodies, definition, payload, schema_id)
    failures = np.concatenate(failed) if failed else np.full(0, None, dtype=object)
    if failures.astype(bool).any():
        prefix = (
            f"written with schema {schema_id}, which cannot be read as the replay's "
            f"{payload.name}: "
        )
        if errors is None:
            errors = np.full(len(bodies), None, dtype=object)
        for i in np.flatnonzero(failures.astype(bool)).tolist():
            if errors[i] is None:
                errors[i] = prefix + failures[i]
    return resolved, errors


def _python_bodies(bodies: pa.Array | pa.ChunkedArray) -> list[Any]:
    return bodies.to_pylist()


def _fastavro_bodies(
    bodies: pa.Array | pa.ChunkedArray, definition: str, schema_id: str
) -> tuple[list[pa.Array], np.ndarray | None]:
    """Decode event by event with fastavro and the writer's own schema."""
    return _fastavro(bodies, definition, None, mapping_for(definition), schema_id)


def _fastavro_resolved(
    bodies: pa.Array | pa.ChunkedArray, definition: str, payload: PayloadSchema, schema_id: str
) -> tuple[list[pa.Array], np.ndarray | None]:
    """Decode event by event with fastavro's own resolution to the reader (what the Arrow
    resolution does not do itself, such as a decimal read with another scale)."""
    return _fastavro(bodies, definition, payload.definition, payload.mapping(), schema_id)


def _fastavro(
    bodies: pa.Array | pa.ChunkedArray,
    definition: str,
    reader: str | None,
    mapping: ArrowMapping,
    schema_id: str,
) -> tuple[list[pa.Array], np.ndarray | None]:
    # NOTE: read alone, a writer's union values name their branch. fastavro's own resolution to
    # a reader (only what the Arrow resolution cannot do, a decimal of another scale) names
    # records alone: there a union value's branch is still told by its value.
    writer = _branch_named(definition) if reader is None else parsed_schema(definition)
    read_as = None if reader is None else parsed_schema(reader)
    values: list[Any] = []
    errors = np.full(len(bodies), None, dtype=object)
    for i, data in enumerate(_python_bodies(bodies)):
        buf = io.BytesIO(data)
        try:
            value = fastavro.schemaless_reader(buf, writer, read_as, return_record_name=True)
            read = buf.tell()
        except Exception as exc:  # a corrupt body must not stop the replay of the others
            numbers = _as_numbers(data, definition, reader)
            if numbers is None:
                errors[i] = f"body does not decode with schema {schema_id}: {exc}"
                values.append(None)
                continue
            value, read = numbers
        if read != len(data):
            errors[i] = f"body has {len(data) - read} bytes left after decoding"
            values.append(None)
            continue
        values.append(value if mapping.convert is None else mapping.convert(value))
    array = pa.array(values, mapping.type, memory_pool=_decoder.pool())
    return [array], errors if errors.astype(bool).any() else None


# -- whole files --------------------------------------------------------------------------------


def decode_files(
    items: Sequence[CaptureBytes],
    *,
    reader: PayloadSchema | AvroSchema | str | dict | None,
    schemas: Schemas,
    decoder: str = "auto",
    on_bad_file: str = "raise",
) -> list[DecodedFile]:
    """Decode several Capture archives; one :class:`DecodedFile` per archive, in order.

    ``reader`` types the payload columns (a definition, or None for the envelope only);
    ``schemas`` maps a schema id to its definition (a dict or a function; None when unknown).
    ``decoder``: ``"auto"`` (the native reader, fastavro where it cannot), ``"fast"`` (the
    same) or ``"fastavro"``; all give the same batches. ``on_bad_file``: ``"raise"`` raises
    :class:`CaptureFileError` naming the file and byte offset of the first damaged part;
    ``"skip"`` keeps every intact block and records what it left out. A pure function.
    """
    check_options(decoder=decoder, on_bad_file=on_bad_file)
    envelopes = [read_envelope(i, decoder=decoder, on_bad_file=on_bad_file) for i in items]
    return assemble(items, envelopes, reader=reader, schemas=schemas, decoder=decoder)


#: Events whose bodies are decoded together by :func:`decode_stream`: enough to spread a native
#: call's fixed cost (planning, walking a DataHub-sized schema) over many of Capture's small
#: files, few enough that a streaming replay's memory stays small.
#: PERF: at most one native read (``_decoder._BATCH_ROWS``), so its output is not copied into one.
GROUP_EVENTS = 8192
#: Events decoded together when some of them were written with a writer version that is decoded
#: apart and resolved (see :func:`assemble`): its own native reads cost about as much as the
#: reader's whatever their size (~10 ms of DataFusion and ~5 ms of conforming per call for a
#: DataHub-sized schema, measured for 1 to 2,800 bodies), and the groups are put back in event
#: order by a copy anyway, so larger groups are cheaper. PERF: ``benchmarks/replay.py``'s
#: ``evolved-fields`` history (100,000 events, 10% of such a version), its own measurement
#: process, best of 5: 2.05 s of CPU with groups of 8,192 events, 1.77 s with 16,384, 1.59 s
#: with 32,768, for 65 MiB more peak memory (418 MiB against 353; the table is 241 MiB).
MIXED_GROUP_EVENTS = 4 * GROUP_EVENTS
#: At most this many files are decoded together by :func:`decode_stream`.
GROUP_FILES = 256


def decode_stream(
    items: Iterable[CaptureBytes | DecodedFile],
    *,
    reader: PayloadSchema | AvroSchema | str | dict | None,
    schemas: Schemas,
    decoder: str = "auto",
    on_bad_file: str = "raise",
) -> Iterator[DecodedFile]:
    """Decode archives one after another: one :class:`DecodedFile` per item, in order, lazily.

    Each archive's envelope is read as it comes (its bytes are then let go) and the bodies of
    consecutive archives are decoded together, about :data:`GROUP_EVENTS` events at a time
    (:data:`MIXED_GROUP_EVENTS` where some were written with a version decoded apart; see
    :func:`assemble`), so memory stays bounded by a group whatever the number of items.
    An item that is already a :class:`DecodedFile` (a cache's) is passed through in its place.
    Options as :func:`decode_files`; :class:`CaptureFileError` is raised (``"raise"``) when
    the damaged archive is reached. A pure function of its inputs.
    """
    check_options(decoder=decoder, on_bad_file=on_bad_file)
    payload = payload_schema(reader)
    apart = _Apart(payload, _lookup_of(schemas))
    # (what was done already, or the item and its envelope) in order
    pending: deque[tuple[DecodedFile | None, CaptureBytes, Envelope | None]] = deque()
    events = 0
    limit = GROUP_EVENTS

    def flush() -> Iterator[DecodedFile]:
        todo = [(item, env) for done, item, env in pending if done is None and env is not None]
        decoded = iter(
            assemble(
                [item for item, _ in todo],
                [env for _, env in todo],
                reader=payload,
                schemas=schemas,
                decoder=decoder,
            )
            if todo
            else []
        )
        while pending:
            done, _, _ = pending.popleft()
            yield done if done is not None else next(decoded)

    for item, envelope in _with_envelopes(items, decoder=decoder, on_bad_file=on_bad_file):
        if isinstance(item, DecodedFile):
            if pending:
                pending.append((item, CaptureBytes(b""), None))
            else:
                yield item
            continue
        assert envelope is not None  # every archive comes with its envelope
        n = envelope.events
        # PERF: a group of one writer version never grows past one native read (GROUP_EVENTS),
        # so its decoded bodies are one array, not pieces concatenated (a copy of every payload
        # column); one that mixes in versions decoded apart is copied anyway and grows larger.
        mixed = apart.any_in(envelope)
        if pending and events + n > (MIXED_GROUP_EVENTS if mixed else limit):
            yield from flush()
            events, limit = 0, GROUP_EVENTS
        if mixed:
            limit = MIXED_GROUP_EVENTS
        # The bytes are not needed once the envelope is read; keep only where they came from.
        pending.append((None, CaptureBytes(b"", item.path, item.file), envelope))
        del item
        events += n
        if events >= limit or len(pending) >= GROUP_FILES:
            yield from flush()
            events, limit = 0, GROUP_EVENTS
    yield from flush()


class _Apart:
    """Which schema ids :func:`assemble` decodes apart from the reader's group, remembered."""

    def __init__(self, payload: PayloadSchema | None, lookup: SchemaLookup) -> None:
        self.payload = payload
        self.lookup = lookup
        self.known: dict[str, bool] = {}

    def any_in(self, envelope: Envelope) -> bool:
        """True when some event of ``envelope`` was written with a version decoded apart."""
        if self.payload is None or envelope.columns is None:
            return False
        ids = pc.unique(envelope.columns.schema_ids.drop_null()).to_pylist()
        return any(self._apart(i) for i in ids)

    def _apart(self, schema_id: str) -> bool:
        if schema_id not in self.known:
            assert self.payload is not None
            definition = self.lookup(schema_id)
            # NOTE: an unknown or foreign id is not decoded at all (it gets its decode_error).
            self.known[schema_id] = (
                definition is not None
                and _same_record(parsed(definition), self.payload.avro)
                and not _reads_as_reader(definition, self.payload)
            )
        return self.known[schema_id]


def decode_file(
    data: bytes,
    *,
    path: str = "",
    file: CaptureFile | None = None,
    reader: PayloadSchema | AvroSchema | str | dict | None,
    schemas: Schemas,
    decoder: str = "auto",
    on_bad_file: str = "raise",
) -> DecodedFile:
    """Decode one Capture archive's bytes (see :func:`decode_files`). A pure function."""
    return decode_files(
        [CaptureBytes(data, path, file)],
        reader=reader,
        schemas=schemas,
        decoder=decoder,
        on_bad_file=on_bad_file,
    )[0]


def decode_capture_file(
    data: bytes,
    *,
    payload: PayloadSchema | None,
    schemas: Schemas,
    path: str = "",
    file: CaptureFile | None = None,
    decoder: str = "auto",
    on_bad_file: str = "raise",
) -> pa.RecordBatch:
    """Decode one Capture archive's bytes into a RecordBatch of envelope and payload columns.

    ``payload`` is the reader schema (None: the envelope only); ``schemas`` maps a schema id to
    its definition. Raises :class:`CaptureFileError` naming ``path`` when the bytes are not a
    readable Capture archive (with ``on_bad_file="skip"``, what was skipped is in the batch's
    metadata: :func:`skipped_files`). See :func:`decode_file`, which returns both.
    """
    return decode_file(
        data,
        path=path,
        file=file,
        reader=payload,
        schemas=schemas,
        decoder=decoder,
        on_bad_file=on_bad_file,
    ).batch


def decode_capture_files(
    items: Sequence[CaptureBytes],
    *,
    payload: PayloadSchema | None,
    schemas: Schemas,
    decoder: str = "auto",
    on_bad_file: str = "raise",
) -> list[pa.RecordBatch]:
    """Decode several Capture archives; one RecordBatch per archive (see :func:`decode_files`)."""
    return [
        d.batch
        for d in decode_files(
            items, reader=payload, schemas=schemas, decoder=decoder, on_bad_file=on_bad_file
        )
    ]
