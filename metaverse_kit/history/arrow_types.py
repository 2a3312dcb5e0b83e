"""Avro types as Arrow types, and converters from decoded Avro values to Arrow-ready values.

The mapping: record -> struct; array -> list; map -> map<string, T>; enum -> string; fixed ->
fixed-size binary; a nullable union ``[null, T]`` -> a nullable ``T``; a union of several
branches -> a struct with a ``branch`` field (the branch's full name or primitive type) and
one nullable field per branch, named by the branch's short name. Logical types become their
Arrow counterparts (timestamps in UTC, dates, decimals).

Converters are compiled once per schema into closures, and are ``None`` wherever a decoded value
already has the shape ``pyarrow.array`` takes, so most of a value is never walked in Python.

This module is the one home of a union's Arrow shape, both ways: :func:`arrow_mapping` builds it,
:func:`union_branch` and :func:`branch_type` read it, and :func:`from_arrow` turns a value read
from a table back into the fastavro form (the ``branch`` unwrapped into a ``("full.Name", {...})``
tuple), so nothing else needs to know how a union is laid out in a table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa

from metaverse_kit.errors import SchemaParseError
from metaverse_kit.events.avro import AvroSchema, dict_branches, kind_branches

__all__ = [
    "BRANCH_FIELD",
    "ArrowMapping",
    "arrow_mapping",
    "branch_type",
    "from_arrow",
    "mapping_for",
    "parsed",
    "union_branch",
]

Converter = Callable[[Any], Any] | None

_PRIMITIVE_TYPES: dict[str, pa.DataType] = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}

_LOGICAL: dict[tuple[str, str], pa.DataType] = {
    ("long", "timestamp-millis"): pa.timestamp("ms", tz="UTC"),
    ("long", "timestamp-micros"): pa.timestamp("us", tz="UTC"),
    ("long", "local-timestamp-millis"): pa.timestamp("ms"),
    ("long", "local-timestamp-micros"): pa.timestamp("us"),
    ("int", "date"): pa.date32(),
    ("int", "time-millis"): pa.time32("ms"),
    ("long", "time-micros"): pa.time64("us"),
    ("string", "uuid"): pa.string(),
}

#: The field of a union's struct that names the branch a row holds (full name or primitive type).
BRANCH_FIELD = "branch"


@dataclass(frozen=True)
class ArrowMapping:
    """The Arrow type of an Avro type and the converter that shapes decoded values for it."""

    type: pa.DataType
    convert: Converter


def arrow_mapping(avro: AvroSchema, t: Any = None) -> ArrowMapping:
    """Map an Avro type (default: the schema's root) to Arrow.

    Raises :class:`SchemaParseError` for a recursive type, which no Arrow type can hold.
    """
    return _Mapper(avro).map(avro.root if t is None else t, ())


# PERF: DataHub-sized schemas take tens of milliseconds to parse and map; once per definition.
@functools.lru_cache(maxsize=64)
def parsed(definition: str) -> AvroSchema:
    """The parsed schema of a definition (JSON text), parsed once per process."""
    return AvroSchema(definition)


@functools.lru_cache(maxsize=64)
def mapping_for(definition: str) -> ArrowMapping:
    """:func:`arrow_mapping` of a definition's root, computed once per process."""
    return arrow_mapping(parsed(definition))


class _Mapper:
    def __init__(self, avro: AvroSchema) -> None:
        self.avro = avro

    def map(self, t: Any, stack: tuple[str, ...]) -> ArrowMapping:
        avro = self.avro
        resolved = avro.resolve(t)
        if isinstance(resolved, list):
            return self.union(resolved, stack)
        if isinstance(resolved, str):
            return ArrowMapping(_PRIMITIVE_TYPES[resolved], None)
        kind = resolved["type"]
        if kind in ("record", "error"):
            name = resolved["name"]
            if name in stack:
                raise SchemaParseError(
                    f"{name} contains itself; a recursive Avro type has no Arrow column type"
                )
            children = [
                (f["name"], self.map(f["type"], (*stack, name))) for f in resolved["fields"]
            ]
            struct = pa.struct([pa.field(n, m.type) for n, m in children])
            converters = [(n, m.convert) for n, m in children if m.convert is not None]
            if not converters:
                return ArrowMapping(struct, None)

            def convert_record(v: Any, _c: list = converters) -> Any:
                if v is None:
                    return None
                v = dict(v)
                for n, c in _c:
                    v[n] = c(v.get(n))
                return v

            return ArrowMapping(struct, convert_record)
        if kind == "array":
            item = self.map(resolved["items"], stack)
            if item.convert is None:
                return ArrowMapping(pa.list_(item.type), None)
            ci = item.convert
            return ArrowMapping(
                pa.list_(item.type), lambda v: None if v is None else [ci(x) for x in v]
            )
        if kind == "map":
            value = self.map(resolved["values"], stack)
            if value.convert is None:
                return ArrowMapping(pa.map_(pa.string(), value.type), None)
            cv = value.convert
            return ArrowMapping(
                pa.map_(pa.string(), value.type),
                lambda v: None if v is None else {k: cv(x) for k, x in v.items()},
            )
        if kind == "enum":
            return ArrowMapping(pa.string(), None)
        if kind == "fixed":
            return ArrowMapping(pa.binary(resolved["size"]), None)
        logical = resolved.get("logicalType")
        if logical == "decimal":
            precision = int(resolved.get("precision", 38))
            scale = int(resolved.get("scale", 0))
            return ArrowMapping(
                pa.decimal128(precision, scale)
                if precision <= 38
                else pa.decimal256(precision, scale),
                None,
            )
        if (kind, logical) in _LOGICAL:
            return ArrowMapping(_LOGICAL[(kind, logical)], None)
        return ArrowMapping(_PRIMITIVE_TYPES[kind], None)

    def union(self, branches: list, stack: tuple[str, ...]) -> ArrowMapping:
        avro = self.avro
        others = [b for b in branches if b != "null"]
        if not others:
            return ArrowMapping(pa.null(), None)
        if len(others) == 1:
            inner = self.map(others[0], stack)
            ci = inner.convert
            if avro.kind(others[0]) != "record":
                return inner

            # fastavro names the record even in a one-record union; Arrow wants the value.
            def strip_name(v: Any) -> Any:
                if isinstance(v, tuple):
                    v = v[1]
                return v if ci is None or v is None else ci(v)

            return ArrowMapping(inner.type, strip_name)
        names = [avro.branch_name(avro.resolve(b)) for b in others]
        shorts = [n.rpartition(".")[2] for n in names]
        if len(set(shorts)) != len(shorts):
            shorts = names
        mapped = [self.map(b, stack) for b in others]
        struct = pa.struct(
            [pa.field(BRANCH_FIELD, pa.string())]
            + [pa.field(s, m.type) for s, m in zip(shorts, mapped, strict=True)]
        )
        by_name = {n: (s, m.convert) for n, s, m in zip(names, shorts, mapped, strict=True)}
        kinds = [
            (avro.kind(b), n, s, m.convert)
            for b, n, s, m in zip(others, names, shorts, mapped, strict=True)
        ]

        def convert_union(v: Any) -> Any:
            if v is None:
                return None
            if isinstance(v, tuple):
                name, inner = v
                short, c = by_name[name]
                return {BRANCH_FIELD: name, short: inner if c is None else c(inner)}
            fits = (
                dict_branches(avro, others, v)
                if isinstance(v, dict)
                else kind_branches(avro, others, v)
            )
            if not fits:
                raise SchemaParseError(f"A decoded value {v!r:.60} fits no branch of {names}")
            _, name, short, c = kinds[fits[0]]
            return {BRANCH_FIELD: name, short: v if c is None else c(v)}

        return ArrowMapping(struct, convert_union)


# -- reading the union shape back ----------------------------------------------------------------


def union_branch(value: Mapping[str, Any] | None) -> tuple[str, Any] | None:
    """The branch a union value read from a table holds, and the value inside it.

    ``{"branch": "com.linkedin...Ownership", "Ownership": {...}, ...}`` gives
    ``("com.linkedin...Ownership", {...})``; None (or a value without a branch) gives None.
    """
    if not value:
        return None
    name = value.get(BRANCH_FIELD)
    if name is None:
        return None
    short = name.rpartition(".")[2]
    return name, value.get(short, value.get(name))


def branch_type(union: pa.StructType, name: str) -> pa.DataType:
    """The Arrow type of the branch called ``name`` (full or short name) in a union's struct.

    Raises ``KeyError`` when the union has no such branch.
    """
    for candidate in (name.rpartition(".")[2], name):
        index = union.get_field_index(candidate)
        if index >= 0 and candidate != BRANCH_FIELD:
            return union.field(index).type
    raise KeyError(name)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ticks(value: Any, per_second: int) -> Any:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return (moment - _EPOCH) // timedelta(microseconds=1_000_000 // per_second)
    return value


def from_arrow(avro: AvroSchema, value: Any, t: Any) -> Any:
    """Turn a value read from a replayed Arrow table back into the fastavro form of type ``t``.

    Undoes what the mapping does: a union of several branches (``{"branch": "full.Name",
    "Name": {...}}``) becomes ``("full.Name", {...})`` for a record branch and the plain value
    otherwise; a map's list of ``(key, value)`` pairs a dict; timestamps and dates their
    numbers. The result can be validated and emitted again unchanged.
    """
    r = avro.resolve(t)
    if isinstance(r, list):
        if value is None or isinstance(value, tuple):
            return value
        others = [b for b in r if b != "null"]
        if len(others) == 1:
            inner = from_arrow(avro, value, others[0])
            if avro.kind(others[0]) == "record":
                return (avro.branch_name(avro.resolve(others[0])), inner)
            return inner
        names = {avro.branch_name(avro.resolve(b)): b for b in others}
        held = union_branch(value) if isinstance(value, Mapping) else None
        if held is not None and held[0] in names:
            name, inner = held
            branch = names[name]
            converted = from_arrow(avro, inner, branch)
            return (name, converted) if avro.kind(branch) == "record" else converted
        return value
    kind = avro.kind(r)
    if kind == "record" and isinstance(value, Mapping):
        types = {f["name"]: f["type"] for f in r["fields"]}
        return {k: from_arrow(avro, v, types[k]) if k in types else v for k, v in value.items()}
    if kind == "array" and isinstance(value, list):
        return [from_arrow(avro, v, r["items"]) for v in value]
    if kind == "map":
        pairs = value.items() if isinstance(value, Mapping) else value
        if isinstance(pairs, list) or isinstance(value, Mapping):
            return {k: from_arrow(avro, v, r["values"]) for k, v in pairs}
        return value
    logical = r.get("logicalType") if isinstance(r, dict) else None
    if logical == "timestamp-millis":
        return _ticks(value, 1000)
    if logical == "timestamp-micros":
        return _ticks(value, 1_000_000)
    if logical == "date" and isinstance(value, date):
        return (value - date(1970, 1, 1)).days
    return value
