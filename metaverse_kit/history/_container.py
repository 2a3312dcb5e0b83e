"""Avro object container files as blocks: which are intact, which are damaged, and where.

A Capture archive is a header (magic, metadata, a 16-byte sync marker) followed by blocks, each
``<record count><byte size><bytes><sync marker>``. A copy of a lake can hold files cut short
(an upload in progress, a full disk), with flipped bits, or that are not archives at all. The
scan here checks the header is a Capture archive's and walks the blocks without decoding them
(:func:`metaverse_kit.capture.scan_blocks`, the one reading of block framing, which the hub
and the doctor use too); a block whose framing is wrong (a count or size that cannot be, bytes
missing, no sync marker where it must be) is a damaged part, and the walk resynchronises on
the next sync marker after it, as Avro's own readers do, so every intact block after the
damage is kept.

Damage inside a block's bytes that leaves its framing whole (a flipped bit in a record) is found
when the block is decoded (see :func:`blocks_that_decode`).
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from metaverse_kit.capture import AVRO_MAGIC, Block, read_header, read_varint, scan_blocks
from metaverse_kit.errors import CaptureFileError

__all__ = ["Block", "Damage", "Scan", "blocks_that_decode", "joined", "scan", "spliced"]

_SYNC_SIZE = 16
_CAPTURE_FIELDS = frozenset({"SequenceNumber", "EnqueuedTimeUtc", "Body"})


@dataclass(frozen=True)
class Damage:
    """A part of a file that cannot be read: where it starts (None: the whole file) and why."""

    offset: int | None
    reason: str


@dataclass
class Scan:
    """A container's header and blocks, split into intact blocks and damaged parts."""

    data: bytes
    header_end: int = 0
    codec: str = "null"
    blocks: list[Block] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)

    @property
    def whole(self) -> bool:
        """True when nothing was damaged."""
        return not self.damage

    @property
    def events(self) -> int:
        """How many records the intact blocks hold."""
        return sum(b.count for b in self.blocks)

    @property
    def header_key(self) -> bytes:
        """The header less its sync marker (magic, schema, codec): archives with the same
        key can be :func:`spliced` into one."""
        return self.data[: self.header_end - _SYNC_SIZE]

    def intact(self, blocks: list[Block] | None = None) -> bytes | list[Any]:
        """The file made of its header and ``blocks`` (default: the intact ones).

        The file itself when nothing was left out; otherwise the parts to write one after
        another (memoryviews into the original bytes: nothing is copied).
        """
        chosen = self.blocks if blocks is None else blocks
        if self.whole and blocks is None:
            return self.data
        view = memoryview(self.data)
        return [view[: self.header_end], *(view[b.start : b.end] for b in chosen)]


def spliced(scans: Sequence[Scan]) -> bytes:
    """One container of the intact blocks of ``scans`` (archives of one :attr:`Scan.header_key`),
    in order, behind the first one's header, each block closed by that header's sync marker."""
    first = scans[0]
    sync = first.data[first.header_end - _SYNC_SIZE : first.header_end]
    parts: list[Any] = [first.data[: first.header_end]]
    for found in scans:
        view = memoryview(found.data)
        for b in found.blocks:
            parts += [view[b.start : b.end - _SYNC_SIZE], sync]
    return b"".join(parts)


def joined(parts: bytes | list[Any]) -> bytes:
    """The bytes of :meth:`Scan.intact`'s parts, end to end."""
    return parts if isinstance(parts, bytes) else b"".join(parts)


def scan(data: bytes, *, where: str) -> Scan:
    """Walk ``data``'s blocks. A file that is not an Avro container, or not a Capture archive
    (its records lack ``SequenceNumber``, ``EnqueuedTimeUtc`` or ``Body``), is one damaged
    part covering the whole file. Zero bytes are an empty archive (nothing damaged)."""
    out = Scan(data)
    if not data:
        return out
    if not data.startswith(AVRO_MAGIC):
        out.damage.append(Damage(None, "not an Avro container file (no 'Obj\\x01' at its start)"))
        return out
    try:
        meta, sync, pos = read_header(data, where=where)
    except CaptureFileError:
        out.damage.append(Damage(None, "the Avro header is truncated or corrupt"))
        return out
    problem = _not_capture(meta)
    if problem:
        out.damage.append(Damage(None, problem))
        return out
    out.header_end = pos
    out.codec = meta.get("avro.codec", b"null").decode("utf-8", "replace") or "null"
    walked = scan_blocks(data, pos, sync, resync=True)
    out.blocks = walked.blocks
    out.damage = [
        Damage(start, reason)
        for (start, _), reason in zip(walked.damaged, walked.reasons, strict=True)
    ]
    return out


def _not_capture(meta: dict[str, bytes]) -> str | None:
    """Why a container is not a Capture archive, or None when it is one."""
    try:
        schema = json.loads(meta.get("avro.schema", b"").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "the Avro header's schema is not readable JSON"
    fields = (
        {f.get("name") for f in schema.get("fields", []) if isinstance(f, dict)}
        if isinstance(schema, dict)
        else set()
    )
    missing = _CAPTURE_FIELDS - fields
    if missing:
        name = schema.get("name", "?") if isinstance(schema, dict) else "?"
        return (
            f"an Avro file of {name} records, not a Capture archive "
            f"(no {', '.join(sorted(missing))})"
        )
    return None


def blocks_that_decode(found: Scan) -> tuple[list[Block], list[Damage]]:
    """Which intact-looking blocks really decode (with fastavro, block by block).

    Used only once a whole-file read has failed: finds the blocks whose bytes are damaged
    while their framing is whole (a deflate stream that does not inflate, records that do
    not fill their block exactly).
    """
    import fastavro

    good: list[Block] = []
    damage: list[Damage] = []
    view = memoryview(found.data)
    header = bytes(view[: found.header_end])
    for block in found.blocks:
        one = header + bytes(view[block.start : block.end])
        try:
            if found.codec == "deflate":
                _inflates(one[len(header) :])
            records = sum(1 for _ in fastavro.reader(io.BytesIO(one)))
        except Exception as exc:  # fastavro raises many types for damaged input
            damage.append(Damage(block.start, f"the block's records do not decode: {exc}"))
            continue
        if records != block.count:
            damage.append(
                Damage(
                    block.start, f"the block holds {records} records, its header says {block.count}"
                )
            )
            continue
        good.append(block)
    return good, damage


def _inflates(block: bytes) -> None:
    _, at = read_varint(block, 0)
    size, at = read_varint(block, at)
    zlib.decompress(block[at : at + size], -15)
