"""The hub's Capture record encoder writes exactly the bytes fastavro writes for the records."""

from __future__ import annotations

import io
import random
from typing import Any

import fastavro
import pytest

from metaverse_kit.backends.protocols import OutgoingEvent
from metaverse_kit.capture import (
    CAPTURE_SCHEMA,
    EventDataEncoder,
    event_record,
    frame_blocks,
    new_header,
    zigzag,
)

_VALUES: list[Any] = [
    "text",
    "",
    "é中文\U0001f600",
    "x" * 700,
    0,
    -1,
    2**40,
    -(2**63),
    2**63 - 1,
    1.5,
    float("inf"),
    -0.0,
    b"",
    b"\x00\xff" * 300,
    None,
]


def _fastavro(record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, CAPTURE_SCHEMA, record)
    return buf.getvalue()


def _events(rng: random.Random, count: int) -> list[OutgoingEvent]:
    shared = {"metaverse-emitted-time": "1772438401000", "origin": "notebook"}
    events = []
    for i in range(count):
        kind = rng.randrange(4)
        if kind == 0:
            properties: dict[str, Any] = shared  # one mapping for many events, as emit does
        elif kind == 1:
            properties = {f"p{j}": rng.choice(_VALUES) for j in range(rng.randrange(4))}
        elif kind == 2:
            properties = {rng.choice(["content-type", "message-id"]): "theirs", "a": 1}
        else:
            properties = {}
        events.append(
            OutgoingEvent(
                body=bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 200, 1500]))),
                content_type=rng.choice(["avro/binary+" + "a" * 32, "avro/binary+é"]),
                partition_key=rng.choice(["", "urn:li:dataset:(x,y,PROD)", "clé", f"k{i % 3}"]),
                message_id=rng.choice([f"{i:032x}", f"mid-é-{i}"]),
                properties=properties,
            )
        )
    return events


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_the_hubs_blocks_are_fastavros_records_framed(codec: str) -> None:
    rng = random.Random(10)
    events = _events(rng, 700)
    _, sync = new_header(codec)
    first, ms, text = 1_048_570, 1_772_438_401_000, "3/2/2026 8:00:01 AM"
    offsets = [str(rng.randrange(10**12)) for _ in events]
    # NOTE: the sequence numbers cross the boundary of 3-byte varints.
    expected = [
        _fastavro(
            event_record(
                e, sequence=first + i, offset=offsets[i], enqueued_ms=ms, enqueued_text=text
            )
        )
        for i, e in enumerate(events)
    ]
    ours = EventDataEncoder().blocks(
        events,
        first_sequence=first,
        offsets=offsets,
        enqueued_ms=ms,
        enqueued_text=text,
        codec=codec,
        sync=sync,
        block_records=256,
    )
    assert ours == frame_blocks(expected, codec=codec, sync=sync, block_records=256)
    header, _ = new_header(codec)
    header = header[:-16] + sync
    records = list(fastavro.reader(io.BytesIO(header + ours)))
    assert [r["SequenceNumber"] for r in records] == list(range(first, first + len(events)))
    assert [r["Body"] for r in records] == [e.body for e in events]


def test_any_record_encodes_as_fastavro_writes_it() -> None:
    rng = random.Random(11)
    encoder = EventDataEncoder()
    for i in range(500):
        record = {
            "SequenceNumber": rng.choice([0, 5, 2**33, i]),
            "Offset": str(i),
            "EnqueuedTimeUtc": "1/1/2026 12:00:00 AM",
            "SystemProperties": {
                f"s{j}": rng.choice([v for v in _VALUES if v is not None])
                for j in range(rng.randrange(3))
            },
            "Properties": {f"p{j}": rng.choice(_VALUES) for j in range(rng.randrange(4))},
            "Body": rng.choice([None, b"", b"body" * i]),
        }
        assert encoder.encode(record) == _fastavro(record)


def test_zigzag_is_avros_long() -> None:
    numbers = [*range(-20_000, 20_000, 7), 2**20, 2**21 - 1, 2**21, -(2**21), 2**62, -(2**63)]
    numbers += [2**63 - 1, 1_048_575, 1_048_576, -1_048_577, 8191, 8192, -8193]
    for n in numbers:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, "long", n)
        assert zigzag(n) == buf.getvalue(), n
