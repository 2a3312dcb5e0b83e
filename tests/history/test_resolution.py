"""Avro schema resolution on both decoder paths, with fastavro's own resolution as the oracle.

Each case writes some events with a writer schema into a Capture archive, decodes it with a
reader schema through :func:`metaverse_kit.history.decode.decode_file` with the native decoder
("auto") and with fastavro, and compares the payload with what
``fastavro.schemaless_reader(buf, writer, reader)`` reads (made Arrow by the reader's mapping).
Where fastavro departs from the specification (a bytes or fixed default given back as text, a
record default not completed with its fields' defaults), the case says what the specification
gives and checks that fastavro indeed differs there.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

import fastavro
import pyarrow as pa
import pytest

from metaverse_kit.capture import append_events
from metaverse_kit.events.avro import AvroSchema, branch_index
from metaverse_kit.events.codec import content_type_for
from metaverse_kit.history import _decoder
from metaverse_kit.history.arrow_types import mapping_for
from metaverse_kit.history.decode import decode_file

WRITER_ID = "0" * 31 + "1"


def R(name: str, fields: list[dict], **extra: Any) -> dict:
    return {"type": "record", "name": name, "fields": fields, **extra}


def F(name: str, t: Any, **extra: Any) -> dict:
    return {"name": name, "type": t, **extra}


A = R("A", [F("a", "int")])
B = R("B", [F("b", "string")])
E3 = {"type": "enum", "name": "E", "symbols": ["X", "Y", "Z"]}


@dataclass
class Case:
    """Events written with ``writer``, read with ``reader``."""

    id: str
    writer: dict
    reader: dict
    datums: list[dict]
    # row -> a fragment of the decode_error the row must get (the oracle fails it too)
    fails: dict[int, str] = field(default_factory=dict)
    # row -> what the specification gives where fastavro's oracle departs from it
    spec: dict[int, dict] = field(default_factory=dict)


CASES = [
    Case(
        "defaults-of-every-type",
        R("ns.R", [F("x", "int")]),
        R(
            "ns.R",
            [
                F("x", "int"),
                F("n", "null", default=None),
                F("active", "boolean", default=True),
                F("i", "int", default=-3),
                F("l", "long", default=2**40),
                F("f", "float", default=1.5),
                F("d", "double", default=2),
                F("s", "string", default="hé"),
                F("tags", {"type": "array", "items": "string"}, default=["new"]),
                F("m", {"type": "map", "values": "long"}, default={"k": 7}),
                F("e", {"type": "enum", "name": "Kind", "symbols": ["P", "Q"]}, default="Q"),
                F("opt", ["null", "string"], default=None),
                F("first", ["string", "null"], default="a"),
            ],
        ),
        [{"x": 1}, {"x": 2}],
    ),
    Case(
        "defaults-where-fastavro-departs",
        R("R", [F("x", "int")]),
        R(
            "R",
            [
                F("x", "int"),
                F("raw", "bytes", default="\u00ff\u0001"),
                F("fx", {"type": "fixed", "name": "Two", "size": 2}, default="\u00ff\u0001"),
                F(
                    "rec",
                    R("S", [F("y", "string"), F("z", "int", default=9)]),
                    default={"y": "s"},
                ),
            ],
        ),
        [{"x": 1}],
        spec={
            0: {"x": 1, "raw": b"\xff\x01", "fx": b"\xff\x01", "rec": {"y": "s", "z": 9}},
        },
    ),
    Case(
        "writer-fields-the-reader-lacks-are-dropped",
        R("R", [F("a", "string"), F("gone", {"type": "array", "items": A}), F("b", "long")]),
        R("R", [F("b", "long"), F("a", "string")]),
        [{"a": "x", "gone": [{"a": 1}], "b": 5}, {"a": "y", "gone": [], "b": -1}],
    ),
    Case(
        "promotions",
        R(
            "R",
            [
                F("il", "int"),
                F("if_", "int"),
                F("id", "int"),
                F("lf", "long"),
                F("ld", "long"),
                F("fd", "float"),
                F("sb", "string"),
                F("bs", "bytes"),
            ],
        ),
        R(
            "R",
            [
                F("il", "long"),
                F("if_", "float"),
                F("id", "double"),
                F("lf", "float"),
                F("ld", "double"),
                F("fd", "double"),
                F("sb", "bytes"),
                F("bs", "string"),
            ],
        ),
        [
            {
                "il": 7,
                "if_": 16777217,
                "id": -2,
                "lf": 2**53 + 1,
                "ld": 3,
                "fd": 0.1,
                "sb": "é",
                "bs": b"ok",
            },
            {
                "il": 0,
                "if_": 0,
                "id": 0,
                "lf": -(2**60) - 1,
                "ld": 0,
                "fd": 1e30,
                "sb": "",
                "bs": b"",
            },
            {"il": 1, "if_": 1, "id": 1, "lf": 1, "ld": 1, "fd": 1.0, "sb": "x", "bs": b"\xff"},
        ],
        fails={2: "bs: the bytes are not UTF-8 text"},
    ),
    Case(
        "enum-symbols-by-name-and-default",
        R("R", [F("e", E3), F("f", "E")]),
        R(
            "R",
            [
                F("e", {"type": "enum", "name": "E", "symbols": ["Z", "X"], "default": "X"}),
                F("f", "E"),
            ],
        ),
        [{"e": "Z", "f": "X"}, {"e": "Y", "f": "Y"}],
    ),
    Case(
        "enum-symbol-without-default-fails",
        R("R", [F("e", E3)]),
        R("R", [F("e", {"type": "enum", "name": "E", "symbols": ["X", "Y"]})]),
        [{"e": "X"}, {"e": "Z"}],
        fails={1: "e: symbol 'Z' is not in the reader's enum E"},
    ),
    Case(
        "union-branches-by-name",
        R("R", [F("u", ["null", A, B, "int"])]),
        R(
            "R",
            [
                F(
                    "u",
                    [
                        "null",
                        R("C", [F("c", "long")]),
                        R("B", [F("b", "bytes"), F("extra", "int", default=4)]),
                        "long",
                        R("A", [F("a", "long")]),
                    ],
                )
            ],
        ),
        [{"u": ("A", {"a": 1})}, {"u": ("B", {"b": "x"})}, {"u": None}, {"u": 5}],
    ),
    Case(
        "union-branch-the-reader-lacks-fails-its-rows",
        R("R", [F("u", [A, B])]),
        R("R", [F("u", ["null", A])]),
        [{"u": ("A", {"a": 1})}, {"u": ("B", {"b": "x"})}],
        fails={1: "u: the writer's branch B matches no branch"},
    ),
    Case(
        "non-union-writer-into-a-union-reader",
        R("R", [F("u", B), F("n", "int"), F("s", "string")]),
        R("R", [F("u", [A, B]), F("n", ["null", "string", "long"]), F("s", ["null", "string"])]),
        [{"u": {"b": "q"}, "n": 3, "s": "t"}],
    ),
    Case(
        "union-writer-into-a-non-union-reader",
        R("R", [F("u", ["null", "int"]), F("v", [A, "string"])]),
        R("R", [F("u", "long"), F("v", R("A", [F("a", "int")]))]),
        [{"u": 4, "v": ("A", {"a": 1})}, {"u": None, "v": ("A", {"a": 2})}, {"u": 1, "v": "s"}],
        fails={1: "u: null is not a branch", 2: "v: the writer's branch string"},
    ),
    Case(
        "aliases-of-records-and-fields",
        R("old.Rec", [F("name", "string"), F("inner", R("Old", [F("v", "int")]))]),
        R(
            "new.Rec",
            [
                F("title", "string", aliases=["name"]),
                F("inner", R("New", [F("value", "int", aliases=["v"])], aliases=["Old"])),
            ],
            aliases=["old.Rec"],
        ),
        [{"name": "n", "inner": {"v": 3}}],
    ),
    Case(
        "nested-arrays-maps-and-unions",
        R(
            "R",
            [
                F("items", {"type": "array", "items": R("I", [F("k", "string")])}),
                F("m", {"type": "map", "values": ["null", "int"]}),
                F("l", {"type": "array", "items": [A, B]}),
            ],
        ),
        R(
            "R",
            [
                F(
                    "items",
                    {
                        "type": "array",
                        "items": R("I", [F("k", "string"), F("w", "int", default=1)]),
                    },
                ),
                F("m", {"type": "map", "values": ["null", "double"]}),
                F("l", {"type": "array", "items": [B, R("A", [F("a", "long")])]}),
            ],
        ),
        [
            {"items": [{"k": "a"}, {"k": "b"}], "m": {"x": 1, "y": None}, "l": [("B", {"b": "z"})]},
            {"items": [], "m": {}, "l": [("A", {"a": 1}), ("B", {"b": "q"})]},
        ],
    ),
    Case(
        "a-reader-field-without-default-fails-every-event",
        R("R", [F("x", "int"), F("sub", R("S", [F("a", "int")]))]),
        R("R", [F("x", "int"), F("sub", R("S", [F("a", "int"), F("must", "string")]))]),
        [{"x": 1, "sub": {"a": 1}}, {"x": 2, "sub": {"a": 2}}],
        fails={0: "sub.must: the writer has no field must", 1: "sub.must"},
    ),
    Case(
        "types-that-do-not-match-fail",
        R("R", [F("x", "string"), F("r", R("Q", [F("a", "int")]))]),
        R("R", [F("x", "string"), F("r", R("P", [F("a", "int")]))]),
        [{"x": "a", "r": {"a": 1}}],
        fails={0: "r: the writer's record Q is not the reader's P"},
    ),
]


def _bodies(case: Case) -> list[bytes]:
    writer = fastavro.parse_schema(case.writer)
    out = []
    for d in case.datums:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, d)
        out.append(buf.getvalue())
    return out


def _capture(bodies: list[bytes]) -> bytes:
    records = [
        {
            "SequenceNumber": i,
            "Offset": str(i * 100),
            "EnqueuedTimeUtc": "3/2/2026 8:00:00 AM",
            "SystemProperties": {"content-type": content_type_for(WRITER_ID)},
            "Properties": {},
            "Body": b,
        }
        for i, b in enumerate(bodies)
    ]
    return append_events(None, records)


def _oracle(case: Case, body: bytes) -> Any:
    """What fastavro reads with the reader schema, or the exception it raises."""
    writer = fastavro.parse_schema(case.writer)
    reader = fastavro.parse_schema(case.reader)
    try:
        return fastavro.schemaless_reader(io.BytesIO(body), writer, reader, return_record_name=True)
    except Exception as exc:
        return exc


def _plain(avro: AvroSchema, value: Any, t: Any) -> Any:
    """fastavro names a record read from a writer's union even where the reader has no union."""
    r = avro.resolve(t)
    if isinstance(r, list):
        if isinstance(value, tuple):
            i = branch_index(avro, r, value[0])
            return (value[0], _plain(avro, value[1], r[i] if i is not None else r[0]))
        fits = [b for b in r if b != "null"]
        return _plain(avro, value, fits[0]) if len(fits) == 1 else value
    if isinstance(value, tuple):
        value = value[1]
    kind = avro.kind(r)
    if kind == "record" and isinstance(value, dict):
        types = {f["name"]: f["type"] for f in r["fields"]}
        return {k: _plain(avro, v, types[k]) if k in types else v for k, v in value.items()}
    if kind == "array" and isinstance(value, list):
        return [_plain(avro, v, r["items"]) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: _plain(avro, v, r["values"]) for k, v in value.items()}
    return value


def _arrow_row(case: Case, value: Any) -> dict:
    avro = AvroSchema(case.reader)
    value = _plain(avro, value, avro.root)
    mapping = mapping_for(json.dumps(case.reader))
    if mapping.convert is not None:
        value = mapping.convert(value)
    return pa.array([value], mapping.type).to_pylist()[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resolution_matches_fastavro_on_both_decoder_paths(case: Case) -> None:
    bodies = _bodies(case)
    data = _capture(bodies)
    reader = json.dumps(case.reader)
    schemas = {WRITER_ID: json.dumps(case.writer)}
    tables = {}
    for decoder in ("auto", "fastavro"):
        done = decode_file(data, path="case.avro", reader=reader, schemas=schemas, decoder=decoder)
        tables[decoder] = pa.Table.from_batches([done.batch])
    assert tables["auto"].equals(tables["fastavro"])
    table = tables["auto"]
    payload = [f["name"] for f in case.reader["fields"]]
    rows = table.select(payload).to_pylist()
    for i, body in enumerate(bodies):
        error = table["decode_error"][i].as_py()
        oracle = _oracle(case, body)
        if i in case.fails:
            assert isinstance(oracle, Exception), f"fastavro reads row {i}: {oracle}"
            assert error is not None and case.fails[i] in error, error
            assert error.startswith(f"written with schema {WRITER_ID}, which cannot be read")
            assert table["body"][i].as_py() == body  # the raw body is kept
            assert all(v is None for v in rows[i].values())
            continue
        assert not isinstance(oracle, Exception), oracle
        assert error is None, error
        assert table["body"][i].as_py() is None
        if i in case.spec:
            # fastavro hands back the JSON default as it is; the specification decodes it.
            # (a text default does not even fit a fixed column)
            with contextlib.suppress(pa.ArrowInvalid):
                assert _arrow_row(case, oracle) != case.spec[i]
            assert rows[i] == case.spec[i], (i, rows[i], case.spec[i])
            continue
        expected = _arrow_row(case, oracle)
        assert rows[i] == expected, (i, rows[i], expected)


def test_the_native_reader_decodes_every_writer_of_the_table() -> None:
    """The "auto" path above is the native one: DataFusion reads each writer's bodies."""
    for case in CASES:
        definition = json.dumps(case.writer)
        bodies = pa.array(_bodies(case), pa.binary())
        values = _decoder.decode_bodies(bodies, definition, mapping_for(definition).type)
        assert len(values) == len(case.datums), case.id
