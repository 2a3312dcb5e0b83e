"""Union values keep the branch they were written in, whichever decoder reads them.

fastavro reads a union's value as the plain value: 5 written in the ``long`` branch of
``["int", "long"]``, 0.5 in the ``double`` branch of ``["float", "double"]``, ``"X"`` in the second
of two enums came back as values of the first branch that holds them (and 0.1 written as a double
was rounded to a float), while the native decoder kept the branch written. The bodies here are
written byte by byte with the branch chosen (:func:`_encode`), as another producer may write them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fastavro
import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.capture import append_events, capture_path, format_enqueued_time
from metaverse_kit.errors import SchemaParseError
from metaverse_kit.events.codec import content_type_for
from metaverse_kit.history.arrow_types import branch_records
from metaverse_kit.history.decode import decode_file
from tests.conftest import capture_of


@dataclass(frozen=True)
class Branch:
    """A union value written in the branch of this index."""

    index: int
    value: Any


def _long(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _named(t: Any, found: dict[str, Any]) -> dict[str, Any]:
    if isinstance(t, list):
        for b in t:
            _named(b, found)
    elif isinstance(t, dict):
        if t.get("type") in ("record", "error", "enum", "fixed"):
            found[t["name"]] = t
        for key in ("type", "items", "values"):
            if isinstance(t.get(key), (dict, list)):
                _named(t[key], found)
        for f in t.get("fields", []):
            _named(f["type"], found)
    return found


def _encode(schema: Any, value: Any, named: dict[str, Any] | None = None) -> bytes:
    """Avro's binary encoding of ``value``; every union value is a :class:`Branch`."""
    named = _named(schema, {}) if named is None else named
    if isinstance(schema, list):
        assert isinstance(value, Branch), value
        return _long(value.index) + _encode(schema[value.index], value.value, named)
    t = named.get(schema, {"type": schema}) if isinstance(schema, str) else schema
    kind = t["type"]
    if isinstance(kind, (dict, list)):
        return _encode(kind, value, named)
    if kind == "null":
        return b""
    if kind == "boolean":
        return b"\x01" if value else b"\x00"
    if kind in ("int", "long"):
        return _long(value)
    if kind in ("float", "double"):
        return struct.pack("<f" if kind == "float" else "<d", value)
    if kind in ("bytes", "string"):
        data = value.encode() if isinstance(value, str) else value
        return _long(len(data)) + data
    if kind == "fixed":
        return bytes(value)
    if kind == "enum":
        return _long(t["symbols"].index(value))
    if kind in ("record", "error"):
        return b"".join(_encode(f["type"], value[f["name"]], named) for f in t["fields"])
    if kind == "array":
        items = [_encode(t["items"], v, named) for v in value]
        return (_long(len(items)) + b"".join(items) if items else b"") + b"\x00"
    assert kind == "map"
    pairs = [_encode("string", k, named) + _encode(t["values"], v, named) for k, v in value.items()]
    return (_long(len(pairs)) + b"".join(pairs) if pairs else b"") + b"\x00"


def _capture(bodies: list[bytes], schema_id: str = "s1") -> bytes:
    return capture_of(bodies, schema_id, datetime(2026, 3, 2, 8, tzinfo=UTC))


def _both(schema: dict, rows: list[dict], reader: dict | None = None) -> dict[str, pa.RecordBatch]:
    """The rows written with ``schema``, decoded (as ``reader``) by each decoder."""
    data = _capture([_encode(schema, r) for r in rows])
    definition = json.dumps(schema)
    return {
        decoder: decode_file(
            data,
            path="ops.avro",
            reader=json.dumps(reader) if reader else definition,
            schemas={"s1": definition},
            decoder=decoder,
        ).batch
        for decoder in ("auto", "fastavro")
    }


def _record(*fields: tuple[str, Any]) -> dict:
    return {
        "type": "record",
        "name": "U",
        "namespace": "ops",
        "fields": [{"name": n, "type": t} for n, t in fields],
    }


def _branches(batch: pa.RecordBatch, column: str) -> list[str | None]:
    return [None if v is None else v["branch"] for v in batch.column(column).to_pylist()]


def test_numbers_are_in_the_branch_written_with_both_decoders() -> None:
    schema = _record(
        ("a", ["null", "int", "long"]), ("b", ["int", "long"]), ("c", ["float", "double"])
    )
    rows = [
        {"a": Branch(2, 5), "b": Branch(1, 7), "c": Branch(1, 0.5)},
        {"a": Branch(1, 5), "b": Branch(0, 7), "c": Branch(0, 0.5)},
        {"a": Branch(0, None), "b": Branch(1, 2**40), "c": Branch(1, 0.1)},
    ]
    tables = _both(schema, rows)
    assert tables["auto"].equals(tables["fastavro"])
    for batch in tables.values():
        assert _branches(batch, "a") == ["long", "int", None]
        assert _branches(batch, "b") == ["long", "int", "long"]
        assert _branches(batch, "c") == ["double", "float", "double"]
        # NOTE: 0.1 as a float would be 0.10000000149011612.
        assert batch.column("c").to_pylist()[2] == {
            "branch": "double",
            "float": None,
            "double": 0.1,
        }
        assert batch.column("decode_error").null_count == 3


E = {"type": "enum", "name": "E", "symbols": ["X", "Y"]}
F = {"type": "enum", "name": "F", "symbols": ["Y", "X"]}
A = {"type": "record", "name": "A", "fields": [{"name": "x", "type": "int"}]}
B = {"type": "record", "name": "B", "fields": [{"name": "x", "type": "int"}]}
TS = {"type": "long", "logicalType": "timestamp-millis"}

KINDS: dict[str, tuple[Any, list[Any], list[str | None]]] = {
    "records of one shape": (
        [A, B],
        [Branch(1, {"x": 1}), Branch(0, {"x": 1})],
        ["ops.B", "ops.A"],
    ),
    "string and bytes": (
        ["bytes", "string"],
        [Branch(1, "hi"), Branch(0, b"hi")],
        ["string", "bytes"],
    ),
    "enum and string": (["string", E], [Branch(1, "X"), Branch(0, "X")], ["ops.E", "string"]),
    "two enums": ([E, F], [Branch(1, "X"), Branch(0, "X")], ["ops.F", "ops.E"]),
    "fixed and bytes": (
        ["bytes", {"type": "fixed", "name": "F4", "size": 4}],
        [Branch(1, b"abcd"), Branch(0, b"abcd")],
        ["ops.F4", "bytes"],
    ),
    "two fixed": (
        [{"type": "fixed", "name": "G4", "size": 4}, {"type": "fixed", "name": "F4", "size": 4}],
        [Branch(1, b"abcd"), Branch(0, b"abcd")],
        ["ops.F4", "ops.G4"],
    ),
    "map and array": (
        ["null", {"type": "map", "values": "long"}, {"type": "array", "items": "int"}],
        [Branch(1, {"k": 1}), Branch(2, [1]), Branch(0, None), Branch(1, {}), Branch(2, [])],
        ["map", "array", None, "map", "array"],
    ),
    "null not first": (
        ["long", "null", "double"],
        [Branch(1, None), Branch(0, 3), Branch(2, 3.0)],
        [None, "long", "double"],
    ),
    "a timestamp beside a string and an int": (
        ["null", TS, "string", "int"],
        [Branch(1, 1_700_000_000_000), Branch(3, 5), Branch(2, "s")],
        ["long", "int", "string"],
    ),
    "arrays and maps of unions": (
        [
            {"type": "array", "items": ["int", "long"]},
            {"type": "map", "values": ["null", "float", "double"]},
        ],
        [Branch(0, [Branch(1, 1), Branch(0, 1)]), Branch(1, {"k": Branch(2, 0.1)})],
        ["array", "map"],
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_of_union_is_read_alike_by_both_decoders(kind: str) -> None:
    union, values, expected = KINDS[kind]
    tables = _both(_record(("u", union)), [{"u": v} for v in values])
    assert tables["auto"].equals(tables["fastavro"])
    for batch in tables.values():
        assert _branches(batch, "u") == expected
        assert batch.column("decode_error").null_count == len(values)


def test_nested_unions_keep_their_branches() -> None:
    rows = [
        {"u": Branch(0, [Branch(1, 1), Branch(0, 1)])},
        {"u": Branch(1, {"k": Branch(2, 0.1), "n": Branch(0, None)})},
    ]
    tables = _both(_record(("u", KINDS["arrays and maps of unions"][0])), rows)
    for batch in tables.values():
        held = batch.column("u").to_pylist()
        assert [v["branch"] for v in held[0]["array"]] == ["long", "int"]
        assert dict(held[1]["map"]) == {
            "k": {"branch": "double", "float": None, "double": 0.1},
            "n": None,
        }


def test_a_union_of_a_hundred_branches() -> None:
    union: list[Any] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]
    values: list[Any] = [None, True, 1, 1, 0.5, 0.5, b"ab", "A"]
    expected: list[str | None] = [None, *union[1:]]
    while len(union) < 100:
        i = len(union)
        if i % 3 == 0:
            union.append(
                {"type": "record", "name": f"R{i}", "fields": [{"name": "x", "type": "int"}]}
            )
            values.append({"x": i})
        elif i % 3 == 1:
            union.append({"type": "enum", "name": f"E{i}", "symbols": ["A", "B"]})
            values.append("B")
        else:
            union.append({"type": "fixed", "name": f"F{i}", "size": 2})
            values.append(b"ab")
        expected.append(f"ops.{union[-1]['name']}")
    rows = [{"u": Branch(i, v)} for i, v in enumerate(values)]
    tables = _both(_record(("u", union)), rows)
    assert tables["auto"].equals(tables["fastavro"])
    for batch in tables.values():
        assert _branches(batch, "u") == expected
        assert batch.column("decode_error").null_count == 100


def test_types_of_no_namespace_inside_a_named_branch() -> None:
    """Every named type keeps its full name inside the records that name the branches."""
    plain = {"type": "enum", "name": "Plain", "symbols": ["P", "Q"]}
    inner = {"type": "record", "name": "Inner", "fields": [{"name": "p", "type": "Plain"}]}
    schema = {
        "type": "record",
        "name": "Top",
        "fields": [
            {"name": "e", "type": plain},
            {"name": "u", "type": ["string", {"type": "array", "items": "Plain"}]},
            {"name": "w", "type": [{"type": "map", "values": inner}, "string"]},
            {"name": "z", "type": ["null", "Inner", "string"]},
        ],
    }
    rows = [
        {
            "e": "P",
            "u": Branch(1, ["Q"]),
            "w": Branch(0, {"k": {"p": "Q"}}),
            "z": Branch(1, {"p": "P"}),
        },
        {"e": "Q", "u": Branch(0, "s"), "w": Branch(1, "t"), "z": Branch(2, "x")},
    ]
    tables = _both(schema, rows)
    assert tables["auto"].equals(tables["fastavro"])
    batch = tables["fastavro"]
    assert _branches(batch, "z") == ["Inner", "string"]
    assert batch.column("w").to_pylist()[0]["map"] == [("k", {"p": "Q"})]


def test_a_type_named_as_a_branch_record_is_not_taken_for_one() -> None:
    """The records naming branches are never named as a type of the schema is."""
    own = {"type": "record", "name": "metaverse_kit_written_branch_0_0", "fields": []}
    schema = {
        "type": "record",
        "name": "Top",
        "fields": [
            {"name": "u", "type": ["int", own, "long"]},
            {"name": "v", "type": ["int", "long"]},
        ],
    }
    fastavro.parse_schema(branch_records(json.dumps(schema)))  # no name defined twice
    rows = [{"u": Branch(1, {}), "v": Branch(1, 2)}, {"u": Branch(2, 2), "v": Branch(0, 2)}]
    tables = _both(schema, rows)
    assert tables["auto"].equals(tables["fastavro"])
    assert _branches(tables["fastavro"], "u") == ["metaverse_kit_written_branch_0_0", "long"]
    assert _branches(tables["fastavro"], "v") == ["long", "int"]


def test_resolved_to_another_version_the_branches_stay() -> None:
    """A writer version resolved to the reader's (a field added) keeps its branches."""
    writer = _record(("u", ["int", "long"]), ("c", ["float", "double"]), ("e", [E, F]))
    reader = json.loads(json.dumps(writer))
    reader["fields"].append({"name": "n", "type": "int", "default": 3})
    rows = [{"u": Branch(1, 5), "c": Branch(1, 0.1), "e": Branch(1, "X")}]
    tables = _both(writer, rows, reader)
    assert tables["auto"].equals(tables["fastavro"])
    for batch in tables.values():
        assert batch.column("decode_error").to_pylist() == [None]
        row = batch.select(["u", "c", "e", "n"]).to_pylist()[0]
        assert row == {
            "u": {"branch": "long", "int": None, "long": 5},
            "c": {"branch": "double", "float": None, "double": 0.1},
            "e": {"branch": "ops.F", "E": None, "F": "X"},
            "n": 3,
        }


def test_the_replay_reads_the_branch_written(workspace: mk.Workspace) -> None:
    """Through the replay, on a lake another producer wrote."""
    schema = _record(("urn", "string"), ("b", ["int", "long"]))
    definition = json.dumps(schema)
    schema_id = workspace.registry.register_schema(workspace.schema_group, definition).id  # type: ignore[attr-defined]
    root = workspace.path / "foreign"  # type: ignore[operator]
    path = root / capture_path("ns", "hub", "0", datetime(2026, 3, 2, 8, tzinfo=UTC))
    path.parent.mkdir(parents=True)
    rows = [
        {"urn": "urn:li:corpuser:a", "b": Branch(1, 7)},
        {"urn": "urn:li:corpuser:b", "b": Branch(0, 7)},
    ]
    path.write_bytes(_capture([_encode(schema, r) for r in rows], schema_id))
    tables = [
        mk.replay_capture(
            root, registry=workspace.registry, cache=False, decoder=d, schema=definition
        )
        for d in ("auto", "fastavro")
    ]
    assert tables[0].equals(tables[1])
    assert [v["branch"] for v in tables[1]["b"].to_pylist()] == ["long", "int"]


# -- unions Avro does not allow --------------------------------------------------------------------


def test_a_reader_union_of_two_longs_is_refused_naming_the_field() -> None:
    """``["long", timestamp-millis]`` is two longs: its bytes cannot say which (the replay crashed
    with an ArrowInvalid naming no field)."""
    schema = _record(("k", "string"), ("u", ["long", TS]))
    data = _capture([_encode(schema, {"k": "a", "u": Branch(1, 3)})])
    definition = json.dumps(schema)
    for decoder in ("auto", "fastavro"):
        with pytest.raises(SchemaParseError, match=r"field u in record ops\.U has two branches"):
            decode_file(data, reader=definition, schemas={"s1": definition}, decoder=decoder)


def test_a_writer_union_of_two_ints_leaves_its_events_explained() -> None:
    """Events of such a writer version keep their raw bodies and say why; the others decode."""
    writer = _record(("k", "string"), ("u", [{"type": "int", "logicalType": "date"}, "int"]))
    reader = _record(("k", "string"))
    bodies = [_encode(writer, {"k": "a", "u": Branch(1, 3)})]
    ok = _encode(reader, {"k": "b"})
    definitions = {"s1": json.dumps(writer), "s2": json.dumps(reader)}
    mixed = append_events(
        None,
        [
            {
                "SequenceNumber": i,
                "Offset": str(i),
                "EnqueuedTimeUtc": format_enqueued_time(datetime(2026, 3, 2, 8, tzinfo=UTC)),
                "SystemProperties": {
                    "content-type": content_type_for(sid),
                    "x-opt-enqueued-time": i,
                },
                "Properties": {},
                "Body": body,
            }
            for i, (sid, body) in enumerate([("s1", bodies[0]), ("s2", ok)])
        ],
    )
    for decoder in ("auto", "fastavro"):
        batch = decode_file(
            mixed, reader=json.dumps(reader), schemas=definitions, decoder=decoder
        ).batch
        assert batch.column("k").to_pylist() == [None, "b"]
        assert batch.column("body").to_pylist() == [bodies[0], None]
        error = batch.column("decode_error").to_pylist()[0]
        assert error.startswith("written with schema s1, which cannot be decoded: The union")
        assert "field u in record ops.U has two branches of one type" in error
