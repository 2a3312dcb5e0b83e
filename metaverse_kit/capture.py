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
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro

from metaverse_kit.errors import CaptureFileError

__all__ = [
    "CAPTURE_MAX_WINDOW",
    "CAPTURE_SCHEMA",
    "CAPTURE_SCHEMA_TEXT",
    "CaptureFile",
    "CapturePath",
    "append_events",
    "capture_path",
    "format_enqueued_time",
    "parse_capture_path",
    "parse_enqueued_time",
    "read_header",
    "read_varint",
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

_MAGIC = b"Obj\x01"
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
) -> list[CaptureFile]:
    """Keep the files that may hold events of ``partitions`` in [start, end], in replay order.

    Files whose path does not follow the Capture format cannot be pruned and are kept.
    """
    wanted = None if partitions is None else {str(p) for p in partitions}
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


def _partition_order(partition: str | None) -> tuple[int, int, str]:
    if partition is None:
        return (2, 0, "")
    return (0, int(partition), "") if partition.isdigit() else (1, 0, partition)


# -- writing --------------------------------------------------------------------------------


def zigzag(n: int) -> bytes:
    """``n`` as an Avro ``long``: a zig-zag varint."""
    n = (n << 1) ^ (n >> 63)
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
    out = bytearray(_MAGIC)
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
    if data[:4] != _MAGIC:
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


def _existing_sync(data: bytes, where: str) -> tuple[bytes, str]:
    """The sync marker and codec of an existing Capture file, checked to be ours to append to."""
    meta, sync, _ = read_header(data, where=where)
    if meta.get("avro.schema", b"").decode() != CAPTURE_SCHEMA_TEXT:
        raise CaptureFileError(f"{where} was not written with the Capture schema; not appending")
    return sync, meta.get("avro.codec", b"null").decode()


def append_events(
    existing: bytes | None,
    records: Iterable[Mapping[str, Any]],
    *,
    codec: str = "null",
    where: str = "the file",
) -> bytes:
    """Return the bytes of a Capture file holding ``existing``'s events and then ``records``.

    The records become one new block, as Capture writes a block per batch it receives. The
    caller writes the result atomically; nothing is changed in place.
    """
    if existing:
        sync, codec = _existing_sync(existing, where)
        out = bytearray(existing)
    else:
        sync = os.urandom(16)
        out = bytearray(_header(codec, sync))
    block = io.BytesIO()
    count = 0
    for record in records:
        fastavro.schemaless_writer(block, CAPTURE_SCHEMA, dict(record))
        count += 1
    if count == 0:
        return bytes(out)
    data = block.getvalue()
    if codec == "deflate":
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        data = compressor.compress(data) + compressor.flush()
    elif codec != "null":
        raise CaptureFileError(f"Unsupported codec {codec!r} for {where}: use 'null' or 'deflate'")
    out += zigzag(count) + zigzag(len(data)) + data + sync
    return bytes(out)


def enqueued_ms(when: datetime) -> int:
    """Epoch milliseconds, the unit of ``x-opt-enqueued-time``."""
    return round(when.timestamp() * 1000)
