"""Avro types as Arrow types, and converters from decoded Avro values to Arrow-ready values.

The mapping: record -> struct; array -> list; map -> map<string, T>; enum -> string; fixed ->
fixed-size binary; a nullable union ``[null, T]`` -> a nullable ``T``; a union of several
branches -> a struct with a ``branch`` field (the branch's full name or primitive type) and
one nullable field per branch, named by the branch's short name. Logical types become their
Arrow counterparts (timestamps in UTC, dates, decimals).

Converters are compiled once per schema into closures, and are ``None`` wherever a decoded value
already has the shape ``pyarrow.array`` takes, so most of a value is never walked in Python.
A decoded value may hold what fastavro makes of a logical type (a ``datetime``, ``date``,
``time``, ``UUID`` or ``Decimal``) or its number or text: both are taken, in a union too.

An Arrow timestamp, date or time holds numbers no Python ``datetime`` can (past year 9999, a time
of day past midnight), which a replay may read from events other producers wrote:
:func:`python_range_problems` names the fields that hold one, so that such an event can be kept
and explained (``decode_error``) rather than crash whoever turns the table into Python objects.

This module is the one home of a union's Arrow shape, both ways: :func:`arrow_mapping` builds it,
:func:`union_branch` and :func:`branch_type` read it, and :func:`from_arrow` turns a value read
from a table back into the fastavro form (the ``branch`` unwrapped into a ``("full.Name", {...})``
tuple), so nothing else needs to know how a union is laid out in a table.

A plain decoded value does not always say which branch it was written in (5 may be an ``int``
or a ``long``, 0.5 a ``float`` or a ``double``, ``"X"`` a string or either of two enums), and the
branch is part of the data: :func:`branch_records` gives a schema that reads the same bytes with
every such branch named, and the converters put each value in the branch it names.
"""

from __future__ import annotations

import functools
import itertools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit.errors import SchemaParseError
from metaverse_kit.events.avro import (
    PRIMITIVES,
    AvroSchema,
    LogicalRange,
    dict_branches,
    kind_branches,
    logical_range,
    repeated_branch_problem,
)

__all__ = [
    "BRANCH_FIELD",
    "ArrowMapping",
    "arrow_mapping",
    "branch_records",
    "branch_type",
    "from_arrow",
    "mapping_for",
    "parsed",
    "python_range_problems",
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

    Raises :class:`SchemaParseError` for a recursive type, which no Arrow type can hold, and for
    a union of two branches of one type (which Avro does not allow), naming the field.
    """
    return _Mapper(avro).map(avro.root if t is None else t, (), None)


# PERF: DataHub-sized schemas take tens of milliseconds to parse and map; once per definition.
@functools.lru_cache(maxsize=64)
def parsed(definition: str) -> AvroSchema:
    """The parsed schema of a definition (JSON text), parsed once per process."""
    return AvroSchema(definition)


@functools.lru_cache(maxsize=64)
def mapping_for(definition: str) -> ArrowMapping:
    """:func:`arrow_mapping` of a definition's root, computed once per process."""
    return arrow_mapping(parsed(definition))


#: How the records :func:`branch_records` puts around union branches are named (``<prefix>_<union>
#: _<branch index>``) and the field that holds the branch's value.
_WRITTEN = "metaverse_kit_written_branch"
_WRITTEN_FIELD = "value"
#: What fastavro needs of a type to read its bytes (defaults, docs and aliases are not read).
_READ_KEYS = ("type", "name", "symbols", "size", "logicalType", "precision", "scale")


def branch_records(definition: str) -> Any:
    """A schema (JSON form, for ``fastavro.parse_schema``) reading the bytes ``definition``
    writes, in which the branch a union value was written in is always named.

    fastavro reads a union's value as the plain value, naming only records
    (``return_record_name=True``): 5 written in the ``long`` branch of ``["int", "long"]``, 0.5 in
    the ``double`` branch of ``["float", "double"]``, ``"X"`` in the second of two enums come
    back as values of the first branch that holds them, and 0.1 written as a double would be
    rounded to a float. Here each branch of a union of several that is not a record is put in a
    record of one field, ``("<prefix>_<union>_<index>", {"value": ...})`` once read, which the
    converters of :func:`arrow_mapping` unwrap into the branch of that index. NOTE: a record's
    bytes are its fields' bytes, so the schema reads exactly what the writer wrote; every named
    type is written with its full name, so no wrapper changes a name or a reference.
    """
    avro = parsed(definition)
    taken = set(avro.named)
    defined: set[str] = set()
    unions = itertools.count()

    def named(full: str) -> Any:
        if full in defined:
            return full
        defined.add(full)
        node = avro.named[full]
        out: dict[str, Any] = {k: node[k] for k in _READ_KEYS if k in node}
        if out["type"] == "error":
            out["type"] = "record"  # NOTE: the same bytes; fastavro names only a "record"
        if "." not in full:
            out["namespace"] = ""  # NOTE: else it would take the namespace of what holds it
        if "fields" in node:
            out["fields"] = [{"name": f["name"], "type": emit(f["type"])} for f in node["fields"]]
        return out

    def wrapper(k: int, i: int, t: Any) -> dict[str, Any]:
        return {
            "type": "record",
            "name": f"{_WRITTEN}_{k}_{i}",
            "namespace": "",
            "fields": [{"name": _WRITTEN_FIELD, "type": emit(t)}],
        }

    def emit(t: Any) -> Any:
        if isinstance(t, list):
            if sum(1 for b in t if avro.kind(b) != "null") < 2:
                return [emit(b) for b in t]
            k = next(unions)
            # NOTE: never a name the schema gives one of its own types.
            while any(f"{_WRITTEN}_{k}_{i}" in taken for i in range(len(t))):
                k = next(unions)
            return [
                wrapper(k, i, b) if avro.kind(b) not in ("null", "record") else emit(b)
                for i, b in enumerate(t)
            ]
        if isinstance(t, str):
            return t if t in PRIMITIVES else named(t)
        out = {k: t[k] for k in _READ_KEYS if k in t}
        if "items" in t:
            out["items"] = emit(t["items"])
        if "values" in t:
            out["values"] = emit(t["values"])
        return out

    return emit(avro.root)


class _Mapper:
    def __init__(self, avro: AvroSchema) -> None:
        self.avro = avro

    def map(self, t: Any, stack: tuple[str, ...], field: str | None) -> ArrowMapping:
        """``t``'s mapping; ``stack`` the records it is inside, ``field`` the nearest field."""
        avro = self.avro
        resolved = avro.resolve(t)
        if isinstance(resolved, list):
            return self.union(resolved, stack, field)
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
                (f["name"], self.map(f["type"], (*stack, name), f["name"]))
                for f in resolved["fields"]
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
            item = self.map(resolved["items"], stack, field)
            if item.convert is None:
                return ArrowMapping(pa.list_(item.type), None)
            ci = item.convert
            return ArrowMapping(
                pa.list_(item.type), lambda v: None if v is None else [ci(x) for x in v]
            )
        if kind == "map":
            value = self.map(resolved["values"], stack, field)
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
        if (kind, logical) == ("string", "uuid"):
            # NOTE: fastavro reads a uuid as a UUID object, which pa.array does not take as text.
            return ArrowMapping(pa.string(), _uuid_text)
        if (kind, logical) in _LOGICAL:
            return ArrowMapping(_LOGICAL[(kind, logical)], None)
        return ArrowMapping(_PRIMITIVE_TYPES[kind], None)

    def union(self, branches: list, stack: tuple[str, ...], field: str | None) -> ArrowMapping:
        avro = self.avro
        others = [b for b in branches if b != "null"]
        if not others:
            return ArrowMapping(pa.null(), None)
        if len(others) == 1:
            inner = self.map(others[0], stack, field)
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
        repeated = repeated_branch_problem(
            avro, others, field=field, record=stack[-1] if stack else None
        )
        if repeated is not None:
            raise SchemaParseError(repeated)
        shorts = [n.rpartition(".")[2] for n in names]
        if len(set(shorts)) != len(shorts):
            shorts = names
        mapped = [self.map(b, stack, field) for b in others]
        struct = pa.struct(
            [pa.field(BRANCH_FIELD, pa.string())]
            + [pa.field(s, m.type) for s, m in zip(shorts, mapped, strict=True)]
        )
        by_name = {n: (s, m.convert) for n, s, m in zip(names, shorts, mapped, strict=True)}
        kinds = [
            (avro.kind(b), n, s, m.convert)
            for b, n, s, m in zip(others, names, shorts, mapped, strict=True)
        ]
        # The branch a record of branch_records names, by its index among all the branches.
        written = dict(zip([i for i, b in enumerate(branches) if b != "null"], kinds, strict=True))

        def convert_union(v: Any) -> Any:
            if v is None:
                return None
            if isinstance(v, tuple):
                name, inner = v
                if name not in by_name and name.startswith(_WRITTEN):
                    _, name, short, c = written[int(name.rpartition("_")[2])]
                    inner = inner[_WRITTEN_FIELD]
                else:
                    short, c = by_name[name]
                return {BRANCH_FIELD: name, short: inner if c is None else c(inner)}
            fits = (
                dict_branches(avro, others, v)
                if isinstance(v, dict)
                else _logical_branches(avro, others, v) or kind_branches(avro, others, v)
            )
            if isinstance(v, int) and not isinstance(v, bool):
                # NOTE: as fastavro writes an int: in the first branch that holds it (a long
                # past the int range in the long branch of ["int", "long"], not the int one).
                fits = [i for i in fits if _holds(kinds[i][0], v)] or fits
            if not fits:
                raise SchemaParseError(f"A decoded value {v!r:.60} fits no branch of {names}")
            _, name, short, c = kinds[fits[0]]
            return {BRANCH_FIELD: name, short: v if c is None else c(v)}

        return ArrowMapping(struct, convert_union)


_WHOLE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def _holds(kind: str, v: int) -> bool:
    """Whether a branch of underlying type ``kind`` holds the integer ``v``."""
    lo, hi = _WHOLE.get(kind, (v, v))
    return lo <= v <= hi


def _uuid_text(v: Any) -> Any:
    return str(v) if isinstance(v, uuid.UUID) else v


def _logical_branches(avro: AvroSchema, branches: list, value: Any) -> list[int]:
    """The branches whose logical type fastavro reads as ``value``'s Python type (a
    ``datetime`` for a timestamp, a ``date`` for a date...); empty for any other value."""
    if isinstance(value, datetime):  # NOTE: before date, of which datetime is a subclass.
        wanted: tuple[str, ...] = (
            "timestamp-millis",
            "timestamp-micros",
            "local-timestamp-millis",
            "local-timestamp-micros",
        )
    elif isinstance(value, date):
        wanted = ("date",)
    elif isinstance(value, time):
        wanted = ("time-millis", "time-micros")
    elif isinstance(value, uuid.UUID):
        wanted = ("uuid",)
    elif isinstance(value, Decimal):
        wanted = ("decimal",)
    else:
        return []
    return [
        i
        for i, b in enumerate(branches)
        if isinstance(r := avro.resolve(b), dict) and r.get("logicalType") in wanted
    ]


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
    if logical in ("timestamp-millis", "local-timestamp-millis"):
        return _ticks(value, 1000)
    if logical in ("timestamp-micros", "local-timestamp-micros"):
        return _ticks(value, 1_000_000)
    if logical == "date" and isinstance(value, date):
        return (value - date(1970, 1, 1)).days
    if logical in ("time-millis", "time-micros") and isinstance(value, time):
        micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000
        micros += value.microsecond
        return micros // 1000 if logical == "time-millis" else micros
    return value


# -- values no Python object holds ---------------------------------------------------------------

#: The storage type of each Arrow type a logical range applies to (what its numbers are).
_STORAGE = {pa.date32(): pa.int32(), pa.time32("ms"): pa.int32(), pa.time64("us"): pa.int64()}


def python_range_problems(
    avro: AvroSchema, values: pa.Array | pa.ChunkedArray, t: Any = None
) -> np.ndarray | None:
    """Per row of ``values`` (of type ``arrow_mapping(avro, t).type``; ``t`` defaults to the
    root), why it holds a timestamp, date or time no Python object can: the first such field,
    named by its path as validation names it (``when``, ``stops[2].at``, ``times['k']``), its
    number, its logical type and the range expected; None for a row without one. Returns None
    when no row has one (at once when the type holds no timestamp, date or time).

    Validation refuses such values when they are emitted (:mod:`metaverse_kit.events.validation`),
    but another producer may write them, and Arrow holds them: ``to_pylist`` or ``to_pandas``
    would then raise an ``OverflowError`` naming no field, and a time of day would come back
    silently wrapped past midnight.
    """
    t = avro.root if t is None else t
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not _holds_times(values.type):
        return None
    problems = np.full(len(values), None, dtype=object)
    _Ranges(avro, problems).walk(t, values, np.arange(len(values)), lambda _: "")
    return problems if problems.astype(bool).any() else None


@functools.lru_cache(maxsize=256)
def _holds_times(t: pa.DataType) -> bool:
    if pa.types.is_timestamp(t) or pa.types.is_date32(t) or pa.types.is_time(t):
        return True
    return any(_holds_times(t.field(i).type) for i in range(t.num_fields))


_Where = Callable[[int], str]


class _Ranges:
    """Walks an Arrow array along its Avro type, reporting values out of their logical range.

    ``rows`` maps each element of the array walked to its row; ``where`` gives the path of
    an element (only ever asked of the few that are out of range).
    """

    def __init__(self, avro: AvroSchema, problems: np.ndarray) -> None:
        self.avro = avro
        self.problems = problems

    def walk(self, t: Any, a: pa.Array, rows: np.ndarray, where: _Where) -> None:
        if not _holds_times(a.type) or len(a) == 0:
            return
        avro = self.avro
        r = avro.resolve(t)
        if isinstance(r, list):
            others = [b for b in r if b != "null"]
            if len(others) == 1:
                self.walk(others[0], a, rows, where)
                return
            # NOTE: a union's struct: the branch held is the field's value, at the field's path.
            children = {
                f.name: child
                for f, child in zip(a.type, a.flatten(), strict=True)
                if f.name != BRANCH_FIELD
            }
            for b in others:
                name = avro.branch_name(avro.resolve(b))
                child = children.get(name.rpartition(".")[2], children.get(name))
                if child is not None:
                    self.walk(b, child, rows, where)
            return
        kind = avro.kind(r)
        if kind == "record":
            for f, child in zip(r["fields"], a.flatten(), strict=True):
                name = f["name"]
                self.walk(f["type"], child, rows, _field(where, name))
        elif kind in ("array", "map"):
            # NOTE: offsets, not pc.list_parent_indices, which aborts the process on a map.
            offsets = np.asarray(a.offsets)
            lengths = np.where(np.asarray(a.is_valid()), np.diff(offsets), 0)
            parents = np.repeat(np.arange(len(a)), lengths)
            within = np.arange(len(parents)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            index = pa.array(offsets[:-1][parents] + within, pa.int64())
            if kind == "array":
                items = a.values.take(index)
                self.walk(r["items"], items, rows[parents], _item(where, parents, within))
            else:
                keys, items = a.keys.take(index), a.items.take(index)
                self.walk(r["values"], items, rows[parents], _key(where, parents, keys))
        else:
            limits = logical_range(r)
            if limits is not None:
                self.leaf(a, limits, rows, where)

    def leaf(self, a: pa.Array, limits: LogicalRange, rows: np.ndarray, where: _Where) -> None:
        numbers = a.view(_STORAGE.get(a.type, pa.int64()))
        out = pc.or_(pc.less(numbers, limits.lowest), pc.greater(numbers, limits.highest))
        for i in np.flatnonzero(np.asarray(pc.fill_null(out, False))).tolist():
            row = int(rows[i])
            if self.problems[row] is None:
                path = where(i) or "the value"
                self.problems[row] = f"{path}: {limits.problem(numbers[i].as_py())}"


def _field(where: _Where, name: str) -> _Where:
    return lambda i: f"{w}.{name}" if (w := where(i)) else name


def _item(where: _Where, parents: np.ndarray, within: np.ndarray) -> _Where:
    return lambda i: f"{where(int(parents[i]))}[{int(within[i])}]"


def _key(where: _Where, parents: np.ndarray, keys: pa.Array) -> _Where:
    return lambda i: f"{where(int(parents[i]))}[{keys[i].as_py()!r}]"
