"""Replay Capture archives into Arrow: the envelope of every event plus its decoded payload.

:func:`decode_capture_file` is a function of one file's bytes (and a schema lookup by id) that
returns a RecordBatch and touches no global state, so the same function can later run inside a
distributed engine (Spark's ``mapInArrow``, Dask's ``from_map``). :func:`replay_batches`
streams one batch per file; :func:`replay_capture` collects them into a table.

Every event is kept. Bodies that are not registry Avro (JSON, text, an unknown schema id, another
schema than the replay's) keep their raw ``body`` and say why in ``decode_error``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fastavro
import pyarrow as pa

from metaverse_kit.backends.protocols import CaptureFile, Lake, Schema, SchemaRegistry
from metaverse_kit.capture import parse_capture_path, parse_enqueued_time, read_header
from metaverse_kit.errors import (
    CaptureFileError,
    ConfigurationError,
    SchemaNotFoundError,
)
from metaverse_kit.events.avro import AvroSchema
from metaverse_kit.events.codec import parsed_schema, schema_id_from_content_type
from metaverse_kit.history.arrow_types import arrow_mapping

__all__ = [
    "ENVELOPE_FIELDS",
    "PayloadSchema",
    "decode_capture_file",
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
        return AvroSchema(self.definition)

    @property
    def name(self) -> str | None:
        """The schema's full name."""
        return self.avro.name

    def arrow_fields(self) -> list[pa.Field]:
        """The payload columns: the top-level fields of the record."""
        mapping = arrow_mapping(self.avro)
        return (
            list(mapping.type)
            if pa.types.is_struct(mapping.type)
            else [pa.field("payload", mapping.type)]
        )

    def arrow_schema(self) -> pa.Schema:
        """Envelope and payload columns together, as every replay returns them."""
        return pa.schema(ENVELOPE_FIELDS + self.arrow_fields())


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
) -> pa.RecordBatch:
    """Decode one Capture archive's bytes into a RecordBatch of envelope and payload columns.

    ``schemas`` maps a schema id to its definition (None when unknown). The file is read with
    the schema written in it. Raises :class:`CaptureFileError` naming ``path`` when the bytes
    are not a readable Capture archive.
    """
    schema = payload.arrow_schema() if payload else pa.schema(ENVELOPE_FIELDS)
    where = path or "the Capture file"
    _, _, blocks_start = read_header(data, where=where)
    if blocks_start >= len(data):
        return _empty_batch(schema)
    try:
        records: list[Any] = list(fastavro.reader(io.BytesIO(data)))
    except Exception as exc:  # fastavro raises many types for corrupt input
        raise CaptureFileError(f"{where} is not a readable Capture archive: {exc}") from exc
    if not records:
        return _empty_batch(schema)
    missing = {"SequenceNumber", "EnqueuedTimeUtc", "Body"} - set(records[0])
    if missing:
        raise CaptureFileError(
            f"{where} is an Avro file but not a Capture archive: no {', '.join(sorted(missing))}"
        )
    info = file or _file_from_path(path)
    n = len(records)
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
            try:
                times.append(int(parse_enqueued_time(r["EnqueuedTimeUtc"]).timestamp() * 1000))
            except ValueError as exc:
                raise CaptureFileError(
                    f"{where}: event {r['SequenceNumber']} has an unreadable EnqueuedTimeUtc "
                    f"{r['EnqueuedTimeUtc']!r}"
                ) from exc
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
    bodies, errors, payload_columns = _decode_payloads(records, ids, payload, schemas)
    columns: list[Any] = [
        pa.array([info.namespace if info else None] * n, pa.string()),
        pa.array([info.eventhub if info else None] * n, pa.string()),
        pa.array([info.partition if info else None] * n, pa.string()),
        pa.array(seq, pa.int64()),
        pa.array(offsets, pa.string()),
        pa.array(times, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        pa.array(keys, pa.string()),
        pa.array(ctypes, pa.string()),
        pa.array(ids, pa.string()),
        pa.array(mids, pa.string()),
        pa.array(props, _PROPS),
        pa.array(sysprops, _PROPS),
        pa.array([path or None] * n, pa.string()),
        pa.array(bodies, pa.binary()),
        pa.array(errors, pa.string()),
        *payload_columns,
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


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
    records: list[dict], ids: list[str | None], payload: PayloadSchema | None, schemas: SchemaLookup
) -> tuple[list, list, list[pa.Array]]:
    n = len(records)
    bodies: list[bytes | None] = [r.get("Body") for r in records]
    errors: list[str | None] = [None] * n
    if payload is None:
        return bodies, errors, []
    reader = payload.avro
    mapping = arrow_mapping(reader)
    values: list[Any] = [None] * n
    definitions: dict[str, str | None] = {}
    for i, (schema_id, body) in enumerate(zip(ids, bodies, strict=True)):
        if body is None:
            errors[i] = "the event has no body"
            continue
        if schema_id is None:
            errors[i] = "not registry Avro (no avro/binary+<schema id> content type)"
            continue
        if schema_id not in definitions:
            definitions[schema_id] = schemas(schema_id)
        definition = definitions[schema_id]
        if definition is None:
            errors[i] = f"unknown schema id {schema_id}"
            continue
        if definition != payload.definition and AvroSchema(definition).name != reader.name:
            errors[i] = (
                f"written with schema {AvroSchema(definition).name}, not the replay's "
                f"{reader.name}; replay with schema= that schema to decode it"
            )
            continue
        buf = io.BytesIO(body)
        try:
            value = fastavro.schemaless_reader(
                buf, parsed_schema(definition), None, return_record_name=True
            )
        except Exception as exc:  # a corrupt body must not stop the replay of the others
            errors[i] = f"body does not decode with schema {schema_id}: {exc}"
            continue
        if buf.tell() != len(body):
            errors[i] = f"body has {len(body) - buf.tell()} bytes left after decoding"
            continue
        values[i] = value
        bodies[i] = None
    if mapping.convert is not None:
        values = [None if v is None else mapping.convert(v) for v in values]
    struct = pa.array(values, mapping.type) if pa.types.is_struct(mapping.type) else None
    if struct is None:
        return bodies, errors, [pa.array(values, mapping.type)]
    # NOTE: flatten(), unlike field(i), carries the null rows of undecoded events into each column.
    return bodies, errors, list(struct.flatten())


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
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigurationError(
                f"{what} must be an ISO 8601 time such as 2026-01-31T12:00:00Z, not {value!r}"
            ) from None
    if not isinstance(value, datetime):
        raise ConfigurationError(f"{what} must be a datetime or ISO 8601 text, not {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def replay_lake(
    lake: Lake,
    *,
    registry: SchemaRegistry | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    partitions: Sequence[str | int] | None = None,
    schema: Any = None,
    progress: bool | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream the events of a lake as RecordBatches, one per Capture file, in replay order.

    Files are pruned by partition and by the time in their path before they are opened; rows
    are then kept when ``start <= enqueued_time <= end``. Naive datetimes are taken as UTC.
    """
    start_utc, end_utc = _as_utc(start, "start"), _as_utc(end, "end")
    if start_utc and end_utc and start_utc > end_utc:
        raise ConfigurationError(f"start ({start_utc}) is after end ({end_utc})")
    parts = None if partitions is None else [str(p) for p in partitions]
    payload = _payload_schema(schema)
    lookup = _registry_lookup(registry)
    files = lake.list_files(partitions=parts, start=start_utc, end=end_utc)
    show = len(files) > 20 if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(f.size for f in files), unit="B", unit_scale=True, desc="replay")
    try:
        for f in files:
            batch = decode_capture_file(
                lake.read_bytes(f), payload=payload, schemas=lookup, path=f.path, file=f
            )
            if bar is not None:
                bar.update(f.size)
            batch = _filter(batch, start_utc, end_utc, parts)
            if batch.num_rows:
                yield batch
    finally:
        if bar is not None:
            bar.close()


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
) -> Iterator[pa.RecordBatch]:
    """Stream any Capture tree, file or list of files as RecordBatches (one per file).

    Memory stays bounded by the largest file, whatever the length of the history.
    """
    lake = _lake_for(location, storage_options)
    yield from replay_lake(
        lake,
        registry=registry,
        start=start,
        end=end,
        partitions=partitions,
        schema=schema,
        progress=progress,
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
) -> pa.Table:
    """Replay any Capture tree (a folder copied from a lake, one file, a list, a URL) into a table.

    ``registry`` resolves the schema ids in content types; without it every body is kept raw.
    ``schema`` types the payload columns (default: the built-in MCE schema; ``False``: the
    envelope only). Raises :class:`CaptureFileError` naming a file that cannot be read.
    """
    payload = _payload_schema(schema)
    arrow_schema = payload.arrow_schema() if payload else pa.schema(ENVELOPE_FIELDS)
    batches = list(
        replay_batches(
            location,
            registry=registry,
            start=start,
            end=end,
            partitions=partitions,
            schema=payload or False,
            storage_options=storage_options,
            progress=progress,
        )
    )
    return pa.Table.from_batches(batches, schema=arrow_schema)
