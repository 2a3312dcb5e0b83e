"""The Event Hubs Capture file format: the archive schema, its path layout and its time format.

Capture writes Avro object container files of ``Microsoft.ServiceBus.Messaging.EventData``
records at ``<namespace>/<eventhub>/<partition>/<YYYY>/<MM>/<DD>/<HH>/<mm>/<ss>.avro`` (the default
path format). The local hub writes files that are byte-for-byte what Capture writes: the same
schema text, the same metadata order, ``null`` codec by default. Readers never rely on this
schema, though: real files differ (see ``shared/fixtures/capture-real``), so every file is read
with the schema written in it.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import fastavro

from metaverse_kit.errors import CaptureFileError, MissingPartitionWarning, warn

__all__ = [
    "AVRO_MAGIC",
    "BLOCK_RECORDS",
    "CAPTURE_MAX_WINDOW",
    "CAPTURE_SCHEMA",
    "CAPTURE_SCHEMA_TEXT",
    "EMITTED_TIME_PROPERTY",
    "Block",
    "BlockScan",
    "CaptureFile",
    "CapturePath",
    "EventDataEncoder",
    "append_events",
    "capture_path",
    "check_appendable",
    "complete_length",
    "decode_block",
    "encode_blocks",
    "event_record",
    "format_enqueued_time",
    "frame_block",
    "frame_blocks",
    "new_header",
    "parse_capture_path",
    "parse_enqueued_time",
    "read_header",
    "read_varint",
    "scan_blocks",
    "select_files",
    "window_overlaps",
    "zigzag",
]

# NOTE: the exact text Azure writes (from the 2022 files), kept byte for byte so that our files
# are indistinguishable from Capture's own.
CAPTURE_SCHEMA_TEXT = (
    '{"type":"record","name":"EventData","namespace":"Microsoft.ServiceBus.Messaging",'
    '"fields":[{"name":"SequenceNumber","type":"long"},{"name":"Offset","type":"string"},'
    '{"name":"EnqueuedTimeUtc","type":"string"},{"name":"SystemProperties","type":{"type":"map",'
    '"values":["long","double","string","bytes"]}},{"name":"Properties","type":{"type":"map",'
    '"values":["long","double","string","bytes","null"]}},{"name":"Body","type":["null","bytes"]}]}'
)
CAPTURE_SCHEMA = fastavro.parse_schema(json.loads(CAPTURE_SCHEMA_TEXT))

#: The four bytes every Avro object container file starts with.
AVRO_MAGIC = b"Obj\x01"

#: The application property every event emitted through a workspace carries: when the user
#: emitted it, epoch milliseconds as decimal text (set before the outbox, so a retry keeps it;
#: text because the Event Hubs SDK cannot send a Python int past 2**31). History
#: orders writes of one aspect by it (see ``history.questions``), so a late retry never wins.
EMITTED_TIME_PROPERTY = "metaverse-emitted-time"
_PATH = re.compile(
    r"(?:^|/)(?P<namespace>[^/]+)/(?P<eventhub>[^/]+)/(?P<partition>[^/]+)/"
    r"(?P<Y>\d{4})/(?P<M>\d{2})/(?P<D>\d{2})/(?P<h>\d{2})/(?P<m>\d{2})/(?P<s>\d{2})\.avro$"
)


def format_enqueued_time(when: datetime) -> str:
    """Capture's ``EnqueuedTimeUtc`` text: ``M/d/yyyy h:mm:ss AM/PM`` in UTC, whole seconds."""
    when = when.astimezone(UTC)
    hour = when.hour % 12 or 12
    half = "AM" if when.hour < 12 else "PM"
    return f"{when.month}/{when.day}/{when.year} {hour}:{when.minute:02d}:{when.second:02d} {half}"


def parse_enqueued_time(text: str) -> datetime:
    """Parse Capture's ``EnqueuedTimeUtc`` text into an aware UTC datetime.

    Raises ``ValueError`` when the text is not in Capture's format.
    """
    return datetime.strptime(text.strip(), "%m/%d/%Y %I:%M:%S %p").replace(tzinfo=UTC)


@dataclass(frozen=True)
class CaptureFile:
    """A Capture archive in a lake: its path, what its path tells, and what changes when it does."""

    path: str
    size: int
    version: str
    namespace: str | None = None
    eventhub: str | None = None
    partition: str | None = None
    window_start: datetime | None = None


@dataclass(frozen=True)
class CapturePath:
    """What a Capture file's path says: where it came from and when its time window started."""

    namespace: str
    eventhub: str
    partition: str
    window_start: datetime


def capture_path(namespace: str, eventhub: str, partition: str, window_start: datetime) -> str:
    """The default Capture path of a file, relative to the container (forward slashes)."""
    t = window_start.astimezone(UTC)
    return (
        f"{namespace}/{eventhub}/{partition}/{t.year:04d}/{t.month:02d}/{t.day:02d}/"
        f"{t.hour:02d}/{t.minute:02d}/{t.second:02d}.avro"
    )


def parse_capture_path(path: str) -> CapturePath | None:
    """Read namespace, event hub, partition and window start from the tail of a path.

    Returns None for files that do not follow the default path format (they are still read,
    but cannot be pruned by their path).
    """
    m = _PATH.search(path.replace(os.sep, "/"))
    if not m:
        return None
    try:
        start = datetime(
            int(m["Y"]), int(m["M"]), int(m["D"]), int(m["h"]), int(m["m"]), int(m["s"]), tzinfo=UTC
        )
    except ValueError:
        return None
    return CapturePath(m["namespace"], m["eventhub"], m["partition"], start)


def window_overlaps(
    window_start: datetime, *, window: timedelta, start: datetime | None, end: datetime | None
) -> bool:
    """True when a file whose window starts at ``window_start`` may hold events in [start, end].

    Capture names a file after the window it opened in; its events are enqueued at or after
    that time, and before the next window (``window``, the longest time window to allow for).
    """
    if end is not None and window_start > end:
        return False
    return not (start is not None and window_start + window <= start)


# -- listing ---

#: Capture's longest time window; a file never holds events enqueued later than this after the
#: time in its path, which is what lets us prune by path before opening anything.
CAPTURE_MAX_WINDOW = timedelta(minutes=15)


def select_files(
    files: list[CaptureFile],
    *,
    partitions: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
    lake_partitions: Iterable[str] | None = None,
) -> list[CaptureFile]:
    """Keep the files that may hold events of ``partitions`` in [start, end], in replay order.

    Files whose path does not follow the Capture format cannot be pruned and are kept.
    ``lake_partitions`` are the partitions the whole lake has files of (default: those of
    ``files``); a wanted partition not among them gets a :class:`MissingPartitionWarning`.
    """
    wanted = None if partitions is None else {str(p) for p in partitions}
    if wanted is not None:
        _warn_missing(
            wanted,
            {f.partition for f in files if f.partition is not None}
            if lake_partitions is None
            else set(lake_partitions),
        )
    kept = []
    for f in files:
        if wanted is not None and f.partition is not None and f.partition not in wanted:
            continue
        if f.window_start is not None and not window_overlaps(
            f.window_start, window=CAPTURE_MAX_WINDOW, start=start, end=end
        ):
            continue
        kept.append(f)
    return sorted(
        kept,
        key=lambda f: (
            f.namespace or "",
            f.eventhub or "",
            _partition_order(f.partition),
            f.window_start.timestamp() if f.window_start else float("-inf"),
            f.path,
        ),
    )


def _warn_missing(wanted: set[str], present: set[str]) -> None:
    # NOTE: a warning, not an error: Capture set to skip empty windows writes no folder for a
    # partition that never had an event. Without a single partition (not a Capture tree)
    # nothing can be said. A workspace replay asks its hub and raises for unknown ids.
    missing = sorted(wanted - present, key=_partition_order)
    if missing and present:
        one = len(missing) == 1
        warn(
            MissingPartitionWarning(
                f"No Capture file of partition{'' if one else 's'} "
                f"{', '.join(repr(p) for p in missing)} is in the lake: the replay holds none of "
                f"{'its' if one else 'their'} events (the lake's partitions: "
                f"{', '.join(sorted(present, key=_partition_order))})"
            )
        )


def _partition_order(partition: str | None) -> tuple[int, int, str]:
    if partition is None:
        return (2, 0, "")
    return (0, int(partition), "") if partition.isdigit() else (1, 0, partition)


# -- writing --------------------------------------------------------------------------------


def zigzag(n: int) -> bytes:
    """``n`` as an Avro ``long``: a zig-zag varint."""
    n = (n << 1) ^ (n >> 63)
    # PERF: unrolled up to six bytes (epoch milliseconds until 2109): the event writers call
    # this for every sequence number, size and timestamp, and the loop took twice as long.
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x200000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if n < 0x10000000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    if n < 0x800000000:
        return bytes(
            (
                n & 0x7F | 0x80,
                n >> 7 & 0x7F | 0x80,
                n >> 14 & 0x7F | 0x80,
                n >> 21 & 0x7F | 0x80,
                n >> 28,
            )
        )
    if n < 0x40000000000:
        return bytes(
            (
                n & 0x7F | 0x80,
                n >> 7 & 0x7F | 0x80,
                n >> 14 & 0x7F | 0x80,
                n >> 21 & 0x7F | 0x80,
                n >> 28 & 0x7F | 0x80,
                n >> 35,
            )
        )
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _header(codec: str, sync: bytes) -> bytes:
    meta: list[tuple[bytes, bytes]] = [
        (b"avro.codec", codec.encode()),
        (b"avro.schema", CAPTURE_SCHEMA_TEXT.encode()),
    ]
    out = bytearray(AVRO_MAGIC)
    out += zigzag(len(meta))
    for key, value in meta:
        out += zigzag(len(key)) + key + zigzag(len(value)) + value
    out += zigzag(0) + sync
    return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The zig-zag varint (Avro ``long``) at ``pos`` in ``data``, and the position after it."""
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def read_header(data: bytes, *, where: str = "the file") -> tuple[dict[str, bytes], bytes, int]:
    """Parse an Avro container header: its metadata, its sync marker and where blocks start.

    Raises :class:`CaptureFileError` naming ``where`` when the bytes are not an Avro container.
    """
    if data[:4] != AVRO_MAGIC:
        raise CaptureFileError(f"{where} is not an Avro container file (no 'Obj\\x01' magic)")
    meta: dict[str, bytes] = {}
    try:
        pos = 4
        while True:
            count, pos = read_varint(data, pos)
            if count == 0:
                break
            if count < 0:
                _, pos = read_varint(data, pos)
                count = -count
            for _ in range(count):
                klen, pos = read_varint(data, pos)
                key = data[pos : pos + klen].decode()
                pos += klen
                vlen, pos = read_varint(data, pos)
                meta[key] = data[pos : pos + vlen]
                pos += vlen
        sync = data[pos : pos + 16]
    except (IndexError, UnicodeDecodeError) as exc:
        raise CaptureFileError(f"{where} has a truncated or corrupt Avro header") from exc
    if len(sync) != 16:
        raise CaptureFileError(f"{where} has a truncated Avro header")
    return meta, sync, pos + 16


def check_appendable(data: bytes, where: str) -> tuple[bytes, str]:
    """The sync marker and codec of an existing Capture file, checked to be ours to append to.

    Raises :class:`CaptureFileError` naming ``where`` when it is not an Avro container or was
    written with another schema than Capture's.
    """
    meta, sync, _ = read_header(data, where=where)
    if meta.get("avro.schema", b"").decode() != CAPTURE_SCHEMA_TEXT:
        raise CaptureFileError(f"{where} was not written with the Capture schema; not appending")
    return sync, meta.get("avro.codec", b"null").decode()


def new_header(codec: str = "null") -> tuple[bytes, bytes]:
    """The header of a new Capture file (as Azure writes it) and its fresh random sync marker."""
    if codec not in ("null", "deflate"):
        raise CaptureFileError(f"Unsupported codec {codec!r}: use 'null' or 'deflate'")
    sync = os.urandom(16)
    return _header(codec, sync), sync


# -- encoding records -------------------------------------------------------------------------

_SMALL_LONGS = [zigzag(i) for i in range(1024)]
_NULL_TAG = b"\x08"  # the fifth branch of Properties' value union


def _long(n: int) -> bytes:
    return _SMALL_LONGS[n] if 0 <= n < 1024 else zigzag(n)


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _long(len(raw)) + raw


class _Unusual(Exception):
    """A value the fast encoder leaves to fastavro (which says what is wrong with it)."""


_MESSAGE_ID = _string("message-id") + b"\x04"
_PARTITION_KEY = _string("x-opt-partition-key") + b"\x04"


def event_record(
    event: Any, *, sequence: int, offset: str, enqueued_ms: int, enqueued_text: str
) -> dict[str, Any]:
    """The EventData record the hub archives for an outgoing event, as a dict of the schema.

    The system properties are those Event Hubs sets (enqueued time, content type, message id,
    partition key when there is one); the application properties are the event's plus the
    content type and message id unless already there. :meth:`EventDataEncoder.blocks` writes
    the same bytes without building it.
    """
    system = {
        "x-opt-enqueued-time": enqueued_ms,
        "content-type": event.content_type,
        "message-id": event.message_id,
    }
    if event.partition_key:
        system["x-opt-partition-key"] = event.partition_key
    app = dict(event.properties)
    app.setdefault("content-type", event.content_type)
    app.setdefault("message-id", event.message_id)
    return {
        "SequenceNumber": sequence,
        "Offset": offset,
        "EnqueuedTimeUtc": enqueued_text,
        "SystemProperties": system,
        "Properties": app,
        "Body": event.body,
    }


#: Records per block the hub writes at most: a batch bigger than this becomes several blocks
#: (still one write), so every block fits one read of the native replay decoder.
BLOCK_RECORDS = 4096

_ABSENT = object()


class EventDataEncoder:
    """Encodes EventData records to the exact bytes ``fastavro.schemaless_writer`` gives.

    PERF: fastavro resolves the union of every map value by trying each branch in turn, about
    40 us a record; map entries repeat across a batch (the content type, the enqueued time,
    property names), so each distinct (key, value) is encoded once: about 6 us a record with
    :meth:`encode`. :meth:`blocks` writes what the events of a send share (the enqueued time,
    the system properties but the message id and partition key, the application properties)
    once per distinct properties mapping, and joins each block's pieces once: 4 us an event
    of a 100,000-event send, where encoding one record at a time took 6.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, type, object], bytes] = {}
        self._heads: dict[tuple[object, ...], tuple[bytes, bytes, bytes] | None] = {}
        self._keys: dict[str, bytes] = {}

    def _entry(self, key: str, value: object, *, nullable: bool) -> bytes:
        kind = type(value)
        memo = (key, kind, value)
        found = self._entries.get(memo)
        if found is not None:
            return found
        if value is None:
            if not nullable:
                raise _Unusual
            out = _string(key) + _NULL_TAG
        elif kind is int:
            out = _string(key) + b"\x00" + zigzag(cast(int, value))
        elif kind is str:
            out = _string(key) + b"\x04" + _string(cast(str, value))
        elif kind is float:
            out = _string(key) + b"\x02" + struct.pack("<d", cast(float, value))
        elif kind is bytes:
            raw = cast(bytes, value)
            out = _string(key) + b"\x06" + _long(len(raw)) + raw
        else:
            raise _Unusual
        if len(self._entries) < 4096 and len(out) < 512:
            self._entries[memo] = out
        return out

    def _shared(
        self, properties: Mapping[str, Any], content_type: str, enqueued_ms: int, enqueued_text: str
    ) -> tuple[bytes, bytes, bytes] | None:
        """What events with these properties and content type share, None for unusual ones.

        The enqueued time's text and the system map up to its content type (3 entries, then 4
        when there is a partition key), and the application map up to its message id.
        """
        try:
            memo = (
                content_type,
                enqueued_ms,
                enqueued_text,
                *((k, type(v), v) for k, v in properties.items()),
            )
            found = self._heads.get(memo, _ABSENT)
        except TypeError:  # a value that is no dict key: fastavro says what it makes of it
            return None
        if found is not _ABSENT:
            return cast("tuple[bytes, bytes, bytes] | None", found)
        try:
            if "content-type" in properties or "message-id" in properties:
                raise _Unusual
            app = _long(len(properties) + 2) + b"".join(
                self._entry(k, v, nullable=True)
                for k, v in (*properties.items(), ("content-type", content_type))
            )
            system = self._entry("x-opt-enqueued-time", enqueued_ms, nullable=False) + self._entry(
                "content-type", content_type, nullable=False
            )
            text = _string(enqueued_text)
            found = (text + _long(3) + system, text + _long(4) + system, app)
        except (_Unusual, TypeError, AttributeError, UnicodeEncodeError):
            found = None
        if len(self._heads) < 256:
            self._heads[memo] = found
        return found

    def blocks(
        self,
        events: Sequence[Any],
        *,
        first_sequence: int,
        offsets: Sequence[str],
        enqueued_ms: int,
        enqueued_text: str,
        codec: str,
        sync: bytes,
        block_records: int = BLOCK_RECORDS,
    ) -> bytes:
        """Events as the hub archives them, framed as container blocks (count, size, data, sync).

        ``events`` have the attributes of the hub's outgoing events (``body``,
        ``content_type``, ``message_id``, ``partition_key``, ``properties``); the i-th gets
        sequence number ``first_sequence + i`` and offset ``offsets[i]``; its record is
        :func:`event_record`'s. At most ``block_records`` records a block.
        """
        if codec not in ("null", "deflate"):
            raise CaptureFileError(f"Unsupported codec {codec!r}: use 'null' or 'deflate'")
        out: list[bytes] = []
        pieces: list[bytes] = []
        small, keys, shared = _SMALL_LONGS, self._keys, self._shared
        heads: tuple[bytes, bytes, bytes] | None = None
        last_properties: object = _ABSENT
        last_type: object = _ABSENT
        count = 0
        for i, event in enumerate(events):
            properties, content_type = event.properties, event.content_type
            # PERF: the events of an emit share one properties mapping; look it up once.
            if properties is not last_properties or content_type is not last_type:
                heads = shared(properties, content_type, enqueued_ms, enqueued_text)
                last_properties, last_type = properties, content_type
            body, key, message_id = event.body, event.partition_key, event.message_id
            offset, sequence = offsets[i], first_sequence + i
            if heads is None or not (type(body) is bytes and type(key) is type(message_id) is str):
                pieces.append(self._unusual(event, sequence, offset, enqueued_ms, enqueued_text))
            else:
                raw = message_id.encode("utf-8")
                mid = _MESSAGE_ID + _long(len(raw)) + raw
                if key:
                    entry = keys.get(key)
                    if entry is None:
                        entry = _PARTITION_KEY + _string(key)
                        if len(keys) < 65536:
                            keys[key] = entry
                    system = heads[1]
                else:
                    entry, system = b"", heads[0]
                size = len(body)
                pieces += (
                    small[sequence] if sequence < 1024 else zigzag(sequence),
                    small[len(offset)],
                    offset.encode("ascii"),
                    system,
                    mid,
                    entry,
                    b"\x00",
                    heads[2],
                    mid,
                    b"\x00\x02",
                    small[size] if size < 1024 else zigzag(size),
                    body,
                )
            count += 1
            if count == block_records:
                out += _frame(count, pieces, codec, sync)
                pieces, count = [], 0
        if count:
            out += _frame(count, pieces, codec, sync)
        return b"".join(out)

    def _unusual(
        self, event: Any, sequence: int, offset: str, enqueued_ms: int, enqueued_text: str
    ) -> bytes:
        """One event whose properties the fast path does not write (see :meth:`encode`)."""
        return self.encode(
            event_record(
                event,
                sequence=sequence,
                offset=offset,
                enqueued_ms=enqueued_ms,
                enqueued_text=enqueued_text,
            )
        )

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Any EventData record (a dict of the Capture schema's fields)."""
        try:
            system: Mapping[str, Any] = record["SystemProperties"]
            properties: Mapping[str, Any] = record["Properties"]
            body = record["Body"]
            parts = [
                _long(record["SequenceNumber"]),
                _string(record["Offset"]),
                _string(record["EnqueuedTimeUtc"]),
            ]
            if system:
                parts.append(_long(len(system)))
                parts.extend(self._entry(k, v, nullable=False) for k, v in system.items())
            parts.append(b"\x00")
            if properties:
                parts.append(_long(len(properties)))
                parts.extend(self._entry(k, v, nullable=True) for k, v in properties.items())
            parts.append(b"\x00")
            if body is None:
                parts.append(b"\x00")
            elif type(body) is bytes:
                parts.extend((b"\x02", _long(len(body)), body))
            else:
                raise _Unusual
            return b"".join(parts)
        except (_Unusual, KeyError, TypeError, AttributeError):
            out = io.BytesIO()
            fastavro.schemaless_writer(out, CAPTURE_SCHEMA, dict(record))
            return out.getvalue()


def encode_blocks(
    records: Iterable[Mapping[str, Any]],
    *,
    codec: str,
    sync: bytes,
    block_records: int = BLOCK_RECORDS,
) -> tuple[bytes, int]:
    """``records`` as Avro container blocks (count, size, data, sync), and how many records.

    Each block holds at most ``block_records`` records, as Capture writes a block per batch it
    receives. Nothing is written: the caller appends the bytes after the file's last block.
    """
    encoder = EventDataEncoder()
    encoded = [encoder.encode(record) for record in records]
    return frame_blocks(encoded, codec=codec, sync=sync, block_records=block_records), len(encoded)


def frame_blocks(
    encoded: Sequence[bytes], *, codec: str, sync: bytes, block_records: int = BLOCK_RECORDS
) -> bytes:
    """Encoded records framed as container blocks (count, size, data compressed, sync)."""
    if codec not in ("null", "deflate"):
        raise CaptureFileError(f"Unsupported codec {codec!r}: use 'null' or 'deflate'")
    out: list[bytes] = []
    for first in range(0, len(encoded), block_records):
        chunk = encoded[first : first + block_records]
        out += _frame(len(chunk), chunk, codec, sync)
    return b"".join(out)


def _frame(count: int, records: Sequence[bytes], codec: str, sync: bytes) -> tuple[bytes, ...]:
    """One container block of ``count`` encoded records: count, size, data, sync marker."""
    data = b"".join(records)
    if codec == "deflate":
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        data = compressor.compress(data) + compressor.flush()
    return zigzag(count), zigzag(len(data)), data, sync


def append_events(
    existing: bytes | None,
    records: Iterable[Mapping[str, Any]],
    *,
    codec: str = "null",
    where: str = "the file",
) -> bytes:
    """Return the bytes of a Capture file holding ``existing``'s events and then ``records``.

    The records become one new block, as Capture writes a block per batch it receives (the
    hub appends such blocks in place; this whole-file form serves tests and benchmarks).
    """
    if existing:
        sync, codec = check_appendable(existing, where)
        head = existing
    else:
        head, sync = new_header(codec)
    blocks, _ = encode_blocks(records, codec=codec, sync=sync, block_records=1 << 62)
    return head + blocks


# -- reading blocks back ------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One complete block of a container: where it starts and ends, and its record count."""

    start: int
    end: int
    count: int


@dataclass(frozen=True)
class BlockScan:
    """What walking a container's blocks found.

    ``blocks`` are complete, each closed by the file's sync marker; ``end`` is where the last
    of them ends (the length a reader may use). ``tail`` says what follows ``end``: ``""``
    nothing, ``"torn"`` the beginning of a block cut short (a write in progress or killed), or
    ``"damaged"`` bytes that are no block. With ``resync=True`` the walk goes on after damage
    from the next sync marker, and ``damaged`` lists the (start, end) ranges skipped, with
    ``reasons`` saying, for each, what was wrong at its start.
    """

    blocks: list[Block]
    end: int
    tail: str
    damaged: list[tuple[int, int]]
    reasons: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        """How many records the complete blocks hold."""
        return sum(b.count for b in self.blocks)


def frame_block(data: bytes, pos: int, sync: bytes) -> tuple[Block | None, str, str, int | None]:
    """The block framed at ``pos``: ``(block, "", "", end)``, or ``(None, problem, reason,
    end)`` with ``problem`` ``"torn"`` (the bytes stop inside it) or ``"damaged"`` (they are no
    block), ``reason`` saying so for a person, and ``end`` where its bytes end when its size
    is sane (None otherwise).

    The one reading of Avro block framing, for the hub, the doctor and the replay's scan.
    """
    n = len(data)
    try:
        count, at = read_varint(data, pos)
        size, at = read_varint(data, at)
    except IndexError:
        return None, "torn", "the file ends inside a block header (truncated)", None
    end = at + size
    if count < 0 or size < 0:
        return None, "damaged", f"a block header says {count} records in {size} bytes", None
    if end + 16 > n:
        return (
            None,
            "torn",
            f"a block of {size} bytes is cut short: the file ends {end + 16 - n} bytes "
            "early (truncated)",
            None,
        )
    if data[end : end + 16] != sync:
        return None, "damaged", "the block does not end with the file's sync marker", end
    return Block(pos, end + 16, count), "", "", end


def scan_blocks(data: bytes, pos: int, sync: bytes, *, resync: bool = False) -> BlockScan:
    """Walk the blocks of ``data`` from ``pos`` (where a block starts) to its end.

    Reads only block headers (two varints each) and sync markers: a file of 20,000 blocks takes
    a few milliseconds. Never raises for bad bytes: it says where they are. After damage
    (``resync=True``) the walk resynchronises as Avro's own readers do
    (``DataFileReader.sync``): right after the block when only its sync marker is wrong and a
    block follows, otherwise after the next sync marker.
    """
    blocks: list[Block] = []
    damaged: list[tuple[int, int]] = []
    reasons: list[str] = []
    kinds: list[str] = []
    n = len(data)
    tail = ""
    end = pos
    while pos < n:
        block, problem, reason, block_end = frame_block(data, pos, sync)
        if block is not None:
            blocks.append(block)
            end = pos = block.end
            continue
        if not resync:
            tail = problem
            break
        after = -1 if block_end is None else block_end + 16
        if 0 < after < n and frame_block(data, after, sync)[0] is not None:
            nxt = after
        else:
            found = data.find(sync, pos + 1)
            if found < 0:
                damaged.append((pos, n))
                reasons.append(reason)
                kinds.append(problem)
                break
            nxt = found + 16
        damaged.append((pos, nxt))
        reasons.append(reason)
        kinds.append("damaged")
        pos = nxt
    if resync and damaged:
        tail = "torn" if kinds == ["torn"] and damaged[0][1] == n else "damaged"
    return BlockScan(blocks, end, tail, damaged, reasons)


def complete_length(data: bytes) -> int:
    """How many leading bytes of a Capture file a reader should use: up to its last whole block.

    A file being appended to may end in a block cut short; readers stop before it, so they
    never see a torn block. A header cut short gives 0 (a file being created). Bytes that are
    not a block at all are left in, for the decoder to report the damage by the file's name.
    """
    if len(data) >= 16:
        try:
            _, sync, start = read_header(data)
        except CaptureFileError:
            return 0 if AVRO_MAGIC.startswith(data[:4]) and len(data) < 4096 else len(data)
        if data.endswith(sync):
            return len(data)
        scan = scan_blocks(data, start, sync)
        return scan.end if scan.tail == "torn" else len(data)
    return 0 if AVRO_MAGIC.startswith(data[:4]) else len(data)


def decode_block(data: bytes, block: Block, *, codec: str, schema: Any) -> list[dict[str, Any]]:
    """The records of one complete block, read with ``schema`` (a parsed fastavro schema).

    Raises :class:`CaptureFileError` when its bytes do not decode to exactly ``count`` records.
    """
    try:
        count, at = read_varint(data, block.start)
        size, at = read_varint(data, at)
        payload = data[at : at + size]
        if codec == "deflate":
            payload = zlib.decompress(payload, -15)
        elif codec != "null":
            raise CaptureFileError(f"unsupported codec {codec!r}")
        buf = io.BytesIO(payload)
        records = [fastavro.schemaless_reader(buf, schema, None) for _ in range(count)]
        if buf.tell() != len(payload):
            raise CaptureFileError(f"{len(payload) - buf.tell()} bytes after its last record")
    except CaptureFileError:
        raise
    except Exception as exc:  # fastavro and zlib raise many types for bad bytes
        raise CaptureFileError(f"the block at byte {block.start} does not decode: {exc}") from exc
    return records  # type: ignore[return-value]


def enqueued_ms(when: datetime) -> int:
    """Epoch milliseconds, the unit of ``x-opt-enqueued-time``."""
    return round(when.timestamp() * 1000)
