"""Avro schema resolution in bulk: a writer version's decoded column read as the reader's.

A replay types its payload columns by one reader schema; the bodies of each writer version are
decoded with their own schema (natively or with fastavro) into the writer's Arrow type
(:mod:`metaverse_kit.history.arrow_types`), then resolved here column by column, as Avro's
specification says a reader resolves a writer's data:

- a reader field the writer lacks takes the reader's default (the same value for every row,
  built once); a writer field the reader lacks is dropped; fields are matched by name, then by
  the reader field's ``aliases``;
- ``int -> long -> float -> double`` and ``string <-> bytes`` are promotions (Arrow casts);
- an enum symbol the reader lacks becomes the reader enum's default;
- a writer union branch is read as the first reader branch it matches (named types by name or
  alias, see :func:`metaverse_kit.events.avro.types_match`), a non-union writer as the reader
  union's matching branch, a union writer read by a non-union reader branch by branch;
- named types match by unqualified name or by the reader's ``aliases``.

Nothing here runs per event: a union's rows move between branches by gathers over the branch
column, and a subtree whose writer and reader types are the same is passed through untouched.

What cannot be resolved fails the rows that reach it, never silently: an enum symbol with no
reader default, a writer branch no reader branch matches, a reader field with no default that
the writer lacks, types that do not match. Each failing row gets one message, naming the first
field path that failed (``proposedSnapshot.<DatasetSnapshot>.aspects[].<Ownership>.owners[].type``)
and why; the caller keeps those events' bodies. A subtree that fails only where data reaches it
(an array's items, a union branch) fails only the rows that have such data, as a reader that
decodes event by event would.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit.events.avro import (
    PRIMITIVES,
    PROMOTIONS,
    AvroSchema,
    names_match,
    reader_branch,
    types_match,
    unqualified,
)
from metaverse_kit.history.arrow_types import arrow_mapping, mapping_for, parsed

__all__ = ["Resolution", "ResolutionUnsupported", "resolution"]

# Positions in an array -> the top-level rows they belong to (those under a null are dropped).
_Up = Callable[[np.ndarray], np.ndarray]


class ResolutionUnsupported(Exception):
    """A resolution these Arrow kernels do not perform; decode event by event instead."""


class _Failures:
    """The first failure of each top-level row, as a message."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.failed = np.zeros(n, dtype=bool)
        self.messages = np.full(n, None, dtype=object)

    def add(self, rows: np.ndarray, path: str, why: str) -> None:
        if not len(rows):
            return
        rows = np.unique(rows)
        new = rows[~self.failed[rows]]
        if len(new):
            self.failed[new] = True
            self.messages[new] = f"{path or '(the record)'}: {why}"


def _root(idx: np.ndarray) -> np.ndarray:
    return idx


def _valid(a: pa.Array) -> np.ndarray:
    if not a.null_count:
        return np.ones(len(a), dtype=bool)
    return np.asarray(a.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _under(a: pa.Array, up: _Up) -> _Up:
    """Positions of ``a``'s children (one per element of ``a``), through ``a``'s validity."""
    if not a.null_count:
        return up

    def through(idx: np.ndarray) -> np.ndarray:
        return up(idx[_valid(a)[idx]])

    return through


def _items_up(a: pa.Array, up: _Up) -> _Up:
    """Positions in a list's (or map's) values -> the list's elements -> the rows."""

    def through(idx: np.ndarray) -> np.ndarray:
        offsets = np.asarray(a.offsets)
        row = np.searchsorted(offsets, idx, side="right") - 1
        inside = (row >= 0) & (row < len(a)) & (idx < offsets[-1])
        row = row[inside]
        return up(row[_valid(a)[row]])

    return through


def _nulls(n: int, t: pa.DataType) -> pa.Array:
    from metaverse_kit.history._decoder import compact_nulls

    return compact_nulls(n, t)


def _dense(a: pa.Array) -> pa.Array:
    """``a`` without a slice offset (list and map children are then read as they are)."""
    return pa.concat_arrays([a]) if a.offset else a


# -- the plan ---------------------------------------------------------------------------------


class _Node:
    """How one writer type becomes one reader type; ``apply`` works on a whole column."""

    identity = False

    def apply(self, a: pa.Array, fails: _Failures, up: _Up, path: str) -> pa.Array:
        raise NotImplementedError


class _Identity(_Node):
    identity = True

    def apply(self, a: pa.Array, fails: _Failures, up: _Up, path: str) -> pa.Array:
        return a


@dataclass
class _Fail(_Node):
    """Every element that reaches this type fails its row."""

    why: str
    target: pa.DataType

    def apply(self, a: pa.Array, fails: _Failures, up: _Up, path: str) -> pa.Array:
        fails.add(up(np.flatnonzero(_valid(a))), path, self.why)
        return _nulls(len(a), self.target)


def _storage(t: pa.DataType) -> pa.DataType | None:
    for check, storage in (
        (pa.types.is_date32, pa.int32()),
        (pa.types.is_time32, pa.int32()),
        (pa.types.is_time64, pa.int64()),
        (pa.types.is_timestamp, pa.int64()),
    ):
        if check(t):
            return storage
    return None


@dataclass
class _Primitive(_Node):
    """A promotion (int -> long -> float -> double, string <-> bytes), or the same primitive
    under another logical type (the stored number carries over, as the specification says)."""

    writer: str
    reader: str
    target: pa.DataType

    def apply(self, a: pa.Array, fails: _Failures, up: _Up, path: str) -> pa.Array:
        storage = _storage(a.type)
        if storage is not None:
            a = a.view(storage)
        if self.writer == "long" and self.reader == "float":
            # NOTE: through a double, as a reader that promotes long to a double first would.
            a = a.cast(pa.float64(), safe=False)
        if self.writer == "bytes" and self.reader == "string":
            a = self._text(a, fails, up, path)
        target_storage = _storage(self.target)
        try:
            if target_storage is not None:
                return a.cast(target_storage, safe=False).view(self.target)
            return a.cast(self.target, safe=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ResolutionUnsupported(f"{path}: {exc}") from exc

    @staticmethod
    def _text(a: pa.Array, fails: _Failures, up: _Up, path: str) -> pa.Array:
        try:
            return a.cast(pa.string())
        except pa.ArrowInvalid:
            pass
        # PERF: only reached when some bytes are not UTF-8; found one by one, then nulled.
        values = a.to_pylist()
        bad = []
        for i, v in enumerate(values):
            if v is not None:
                try:
                    v.decode("utf-8")
                except UnicodeDecodeError:
                    bad.append(i)
                    values[i] = None
        fails.add(up(np.asarray(bad, dtype=np.int64)), path, "the bytes are not UTF-8 text")
        return pa.array([None if v is None else v.decode("utf-8") for v in values], pa.string())


@dataclass
class _Enum(_Node):
    """Writer symbols the reader lacks become the reader's default, or fail their rows."""

    unknown: list[str]
    default: str | None
    name: str

    def apply(self, a: pa.Array, fails: _Failures, up: _Up, path: str) -> pa.Array:
        if pa.types.is_dictionary(a.type):
            a = a.dictionary_decode()
        hit = pc.fill_null(pc.is_in(a, value_set=pa.array(self.unknown, pa.string())), False)
        if not pc.any(hit).as_py():
            return a
        if self.default is not None:
            return pc.if_else(hit, pa.scalar(self.default, pa.string()), a)
        rows = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
        symbols = sorted(set(pc.take(a, pa.array(rows)).to_pylist()))
        fails.add(
            up(rows),
            path,
            f"symbol {', '.join(map(repr, symbols))} is not in the reader's enum {self.name}, "
            "which has no default",
        )
        return pc.if_else(hit, pa.scalar(None, pa.string()), a)


@dataclass
class _Default:
    """A reader field the writer lacks: the field's default, one value for every row."""

    value: pa.Array  # the default, once

    def column(self, n: int) -> pa.Array:
        return pc.take(self.value, pa.array(np.zeros(n, dtype=np.int64)))


@dataclass
class _Record(_Node):
    """Reader fields from the writer's (by name or alias), from defaults, or failing."""

    # per reader field, in reader order: (writer field index, node) or a default
    sources: list[tuple[int, _Node] | _Default]
    # the order a reader meets the fields in: the writer's, then the defaults
    order: list[int]
    names: list[str]
    target: pa.StructType

    def apply(self, a: pa.Array, fails: _Failures, up: _Up, path: str) -> pa.Array:
        if not pa.types.is_struct(a.type):
            raise ResolutionUnsupported(f"{path}: a record read as {a.type}")
        below = _under(a, up)
        children: list[pa.Array | None] = [None] * len(self.sources)
        for i in self.order:
            source = self.sources[i]
            child_path = f"{path}.{self.names[i]}" if path else self.names[i]
            if isinstance(source, _Default):
                children[i] = source.column(len(a))
            else:
                index, node = source
                # A reader field with neither a writer field nor a default fails every record.
                column = a if index < 0 else a.field(index)
                children[i] = node.apply(column, fails, below if index >= 0 else up, child_path)
        return pa.StructArray.from_arrays(
            children,
            fields=list(self.target),
            mask=a.is_null() if a.null_count else None,
        )


@dataclass
class _List(_Node):
    items: _Node
    target: pa.DataType

    def apply(self, a: pa.Array, fails: _Failures, up: _Up, path: str) -> pa.Array:
        a = _dense(a)
        values = self.items.apply(a.values, fails, _items_up(a, up), f"{path}[]")
        return pa.ListArray.from_arrays(
            a.offsets, values, type=self.target, mask=a.is_null() if a.null_count else None
        )


@dataclass
class _Map(_Node):
    values: _Node
    target: pa.DataType

    def apply(self, a: pa.Array, fails: _Failures, up: _Up, path: str) -> pa.Array:
        a = _dense(a)
        items = self.values.apply(a.items, fails, _items_up(a, up), f"{path}{{}}")
        return pa.MapArray.from_arrays(
            a.offsets, a.keys, items, type=self.target, mask=a.is_null() if a.null_count else None
        )


@dataclass
class _Side:
    """One side of a union resolution: its branches as the Arrow mapping lays them out."""

    branches: list[Any]  # the non-null branches
    names: list[str]  # their branch names (full names or primitive types)
    nullable: bool  # a union with a null branch
    union: bool  # a union at all
    shape: str  # "null" (no value branch), "one" (a value or null), "struct" (several)


def _side(avro: AvroSchema, t: Any) -> _Side:
    r = avro.resolve(t)
    if not isinstance(r, list):
        return _Side([t], [avro.branch_name(r)], False, False, "one")
    others = [b for b in r if b != "null"]
    names = [avro.branch_name(avro.resolve(b)) for b in others]
    shape = "null" if not others else "one" if len(others) == 1 else "struct"
    return _Side(others, names, "null" in r, True, shape)


@dataclass
class _Union(_Node):
    """Writer branches moved to the reader branches they resolve to (or failing their rows)."""

    writer: _Side
    reader: _Side
    # per writer branch: (reader branch index, node), or None when none matches
    moves: list[tuple[int, _Node] | None]
    target: pa.DataType

    def _labels(self, i: int) -> str:
        return unqualified(self.writer.names[i])

    def apply(self, a: pa.Array, fails: _Failures, up: _Up, path: str) -> pa.Array:
        n = len(a)
        w = self.writer
        if w.shape == "null":
            taken = np.full(n, -1, dtype=np.int64)
            children: list[pa.Array] = []
            nulls = np.ones(n, dtype=bool)
        elif w.shape == "one":
            valid = _valid(a)
            taken = np.where(valid, 0, -1)
            children = [a]
            nulls = ~valid
        else:
            if not pa.types.is_struct(a.type):
                raise ResolutionUnsupported(f"{path}: a union read as {a.type}")
            codes = pc.index_in(a.field(0), value_set=pa.array(w.names, pa.string()))
            taken = np.asarray(pc.fill_null(codes, -1).to_numpy(zero_copy_only=False))
            taken = taken.astype(np.int64)
            children = [a.field(1 + i) for i in range(len(w.branches))]
            nulls = taken < 0
        if w.nullable and not self.reader.nullable and nulls.any():
            # NOTE: a null under a null parent is no value at all; ``up`` drops those rows.
            fails.add(up(np.flatnonzero(nulls)), path, "null is not a branch of the reader's type")
        resolved: list[pa.Array | None] = [None] * len(self.reader.branches)
        target_of = np.full(len(w.branches) + 1, -1, dtype=np.int64)
        below = _under(a, up) if w.shape == "struct" else up
        for i, move in enumerate(self.moves):
            here = taken == i
            if not here.any():
                continue
            label = f"{path}.<{self._labels(i)}>" if w.shape == "struct" else path
            if move is None:
                fails.add(
                    up(np.flatnonzero(here)),
                    path,
                    f"the writer's branch {w.names[i]} matches no branch of the reader's "
                    f"{' | '.join(unqualified(n) for n in self.reader.names) or 'null'}",
                )
                continue
            j, node = move
            value = node.apply(children[i], fails, below, label)
            if resolved[j] is not None:
                # Two writer branches read as one reader branch (int and long as long).
                try:
                    value = pc.coalesce(resolved[j], value)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise ResolutionUnsupported(f"{path}: {exc}") from exc
            resolved[j] = value
            target_of[i] = j
        r = self.reader
        if r.shape == "null":
            return _nulls(n, self.target)
        if r.shape == "one":
            if resolved[0] is None:
                return _nulls(n, self.target)
            return resolved[0]
        into = np.where(taken >= 0, target_of[np.maximum(taken, 0)], -1)
        missing = into < 0
        branch = pc.take(
            pa.array(r.names, pa.string()),
            pa.array(np.where(missing, 0, into), mask=missing),
        )
        fields = [
            value if value is not None else _nulls(n, self.target.field(1 + j).type)
            for j, value in enumerate(resolved)
        ]
        return pa.StructArray.from_arrays(
            [branch, *fields],
            fields=list(self.target),
            mask=pa.array(missing) if missing.any() else None,
        )


# -- compiling a plan ---------------------------------------------------------------------------


class _Compiler:
    def __init__(self, writer: AvroSchema, reader: AvroSchema) -> None:
        self.w = writer
        self.r = reader
        self.records: dict[tuple[str, str], _Node] = {}
        self.w_shapes: dict[str, Any] = {}
        self.r_shapes: dict[str, Any] = {}

    def node(self, wt: Any, rt: Any, w_arrow: pa.DataType, r_arrow: pa.DataType) -> _Node:
        if w_arrow == r_arrow and _shape(self.w, wt, self.w_shapes) == _shape(
            self.r, rt, self.r_shapes
        ):
            return _Identity()
        w, r = self.w.resolve(wt), self.r.resolve(rt)
        if isinstance(w, list) or isinstance(r, list):
            return self.union(wt, rt, w_arrow, r_arrow)
        wk, rk = self.w.kind(w), self.r.kind(r)
        if wk in PRIMITIVES or rk in PRIMITIVES:
            w_base = _primitive(self.w, w)
            r_base = _primitive(self.r, r)
            if w_base is None or r_base is None:
                return _Fail(
                    f"the writer's {self.w.label(w)} cannot be read as a {self.r.label(r)}", r_arrow
                )
            if w_base != r_base and r_base not in PROMOTIONS.get(w_base, ()):
                return _Fail(f"the writer's {w_base} cannot be read as a {r_base}", r_arrow)
            if pa.types.is_decimal(w_arrow) or pa.types.is_decimal(r_arrow):
                if w_arrow != r_arrow:
                    raise ResolutionUnsupported(f"decimal {w_arrow} read as {r_arrow}")
                return _Identity()
            return _Primitive(w_base, r_base, r_arrow)
        if wk != rk:
            return _Fail(f"the writer's {wk} cannot be read as a {rk}", r_arrow)
        if wk in ("record", "enum", "fixed") and not names_match(w, r):
            return _Fail(
                f"the writer's {wk} {w['name']} is not the reader's {r['name']} "
                "(another name, and not among its aliases)",
                r_arrow,
            )
        if wk == "record":
            key = (w["name"], r["name"])
            if key not in self.records:
                self.records[key] = _Identity()  # a placeholder; recursive types have no Arrow type
                self.records[key] = self.record(w, r, w_arrow, r_arrow)
            return self.records[key]
        if wk == "array":
            items = self.node(w["items"], r["items"], w_arrow.value_type, r_arrow.value_type)
            return _Identity() if items.identity else _List(items, r_arrow)
        if wk == "map":
            values = self.node(w["values"], r["values"], w_arrow.item_type, r_arrow.item_type)
            return _Identity() if values.identity else _Map(values, r_arrow)
        if wk == "enum":
            unknown = [s for s in w["symbols"] if s not in set(r["symbols"])]
            if not unknown:
                return _Identity()
            return _Enum(unknown, r.get("default"), r["name"])
        if wk == "fixed":
            if w.get("size") != r.get("size"):
                return _Fail(
                    f"fixed {w['name']} has {w.get('size')} bytes, the reader's {r.get('size')}",
                    r_arrow,
                )
            return _Identity()
        raise ResolutionUnsupported(f"{wk} read as {rk}")

    def record(self, w: dict, r: dict, w_arrow: pa.DataType, r_arrow: pa.DataType) -> _Node:
        if not (pa.types.is_struct(w_arrow) and pa.types.is_struct(r_arrow)):
            raise ResolutionUnsupported(f"record {r['name']} as {r_arrow}")
        w_fields = {f["name"]: i for i, f in enumerate(w["fields"])}
        sources: list[tuple[int, _Node] | _Default] = []
        order_writer: list[tuple[int, int]] = []
        order_defaults: list[int] = []
        names = []
        for j, f in enumerate(r["fields"]):
            names.append(f["name"])
            index = w_fields.get(f["name"])
            if index is None:
                index = next((w_fields[a] for a in f.get("aliases") or [] if a in w_fields), None)
            if index is not None:
                node = self.node(
                    w["fields"][index]["type"],
                    f["type"],
                    w_arrow.field(index).type,
                    r_arrow.field(j).type,
                )
                sources.append((index, node))
                order_writer.append((index, j))
            elif "default" in f:
                sources.append(_Default(self.default(f, r_arrow.field(j).type)))
                order_defaults.append(j)
            else:
                sources.append(
                    (
                        -1,
                        _Fail(
                            f"the writer has no field {f['name']} and the reader's {r['name']} "
                            "gives it no default",
                            r_arrow.field(j).type,
                        ),
                    )
                )
                order_defaults.append(j)
        if (
            len(sources) == len(w["fields"])
            and all(
                isinstance(s, tuple) and s[0] == j and s[1].identity for j, s in enumerate(sources)
            )
            and [f.name for f in w_arrow] == [f.name for f in r_arrow]
        ):
            return _Identity()
        order = [j for _, j in sorted(order_writer)] + order_defaults
        return _Record(sources, order, names, r_arrow)

    def default(self, field: dict, target: pa.DataType) -> pa.Array:
        value = self.r.default_value(field["type"], field["default"])
        mapping = arrow_mapping(self.r, field["type"])
        if mapping.convert is not None:
            value = mapping.convert(value)
        try:
            return pa.array([value], target)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ResolutionUnsupported(
                f"the default of {field['name']} ({field['default']!r:.60}) is not a {target}"
            ) from exc

    def union(self, wt: Any, rt: Any, w_arrow: pa.DataType, r_arrow: pa.DataType) -> _Node:
        w, r = _side(self.w, wt), _side(self.r, rt)
        moves: list[tuple[int, _Node] | None] = []
        for i, b in enumerate(w.branches):
            j = (
                reader_branch(self.w, b, self.r, r.branches)
                if r.union
                else (0 if types_match(self.w, b, self.r, r.branches[0]) else None)
            )
            if j is None:
                moves.append(None)
                continue
            moves.append(
                (
                    j,
                    self.node(
                        b, r.branches[j], _branch_arrow(w, w_arrow, i), _branch_arrow(r, r_arrow, j)
                    ),
                )
            )
        return _Union(w, r, moves, r_arrow)


def _branch_arrow(side: _Side, t: pa.DataType, i: int) -> pa.DataType:
    """The Arrow type of branch ``i`` inside its union's Arrow type."""
    return t.field(1 + i).type if side.shape == "struct" else t


def _primitive(avro: AvroSchema, r: Any) -> str | None:
    """The primitive a type is stored as (``long`` for a timestamp), None for complex types."""
    if isinstance(r, str):
        return r if r in PRIMITIVES else None
    if isinstance(r, dict) and r.get("type") in PRIMITIVES:
        return str(r["type"])
    return None


def _shape(avro: AvroSchema, t: Any, memo: dict[str, Any]) -> Any:
    """What of a type decides how its data is read (no docs, defaults or aliases)."""
    if isinstance(t, list):
        return ("union", tuple(_shape(avro, b, memo) for b in t))
    if isinstance(t, str):
        if t in PRIMITIVES:
            return t
        if t not in memo:
            memo[t] = ("...", t)  # a recursive reference compares by name
            memo[t] = _shape(avro, avro.resolve(t), memo)
        return memo[t]
    kind = t.get("type")
    if kind in ("record", "error"):
        return (
            "record",
            t["name"],
            tuple((f["name"], _shape(avro, f["type"], memo)) for f in t["fields"]),
        )
    if kind == "enum":
        return ("enum", t["name"], tuple(t["symbols"]))
    if kind == "fixed":
        return ("fixed", t["name"], t.get("size"), t.get("logicalType"))
    if kind == "array":
        return ("array", _shape(avro, t["items"], memo))
    if kind == "map":
        return ("map", _shape(avro, t["values"], memo))
    return (kind, t.get("logicalType"), t.get("precision"), t.get("scale"))


def _same_bytes(w: AvroSchema, wt: Any, r: AvroSchema, rt: Any, seen: set[tuple[str, str]]) -> bool:
    """Whether every datum the writer's type encodes decodes, with the reader's type itself, to
    what resolving it gives: the reader only appends union branches and enum symbols, widens
    ``int`` to ``long`` or swaps ``string`` and ``bytes`` (same encodings), or renames through
    aliases. Such writers' bodies are read natively with the reader schema, with no resolution."""
    wr, rr = w.resolve(wt), r.resolve(rt)
    if isinstance(wr, list) or isinstance(rr, list):
        if not (isinstance(wr, list) and isinstance(rr, list)) or len(wr) > len(rr):
            return False
        return all(
            reader_branch(w, b, r, rr) == i and _same_bytes(w, b, r, rr[i], seen)
            for i, b in enumerate(wr)
        )
    wp, rp = _primitive(w, wr), _primitive(r, rr)
    if wp is not None or rp is not None:
        if wp is None or rp is None:
            return False
        if wp != rp and (wp, rp) not in _SAME_ENCODING:
            return False
        decimal = [x.get("logicalType") == "decimal" for x in (wr, rr) if isinstance(x, dict)]
        if any(decimal):
            return (
                isinstance(wr, dict)
                and isinstance(rr, dict)
                and all(wr.get(k) == rr.get(k) for k in ("logicalType", "precision", "scale"))
            )
        return True
    kind = w.kind(wr)
    if kind != r.kind(rr):
        return False
    if kind in ("record", "enum", "fixed") and not names_match(wr, rr):
        return False
    if kind == "record":
        key = (wr["name"], rr["name"])
        if key in seen:
            return True
        seen.add(key)
        names = {f["name"] for f in rr["fields"]}
        return len(wr["fields"]) == len(rr["fields"]) and all(
            _same_field(wf, rf, names) and _same_bytes(w, wf["type"], r, rf["type"], seen)
            for wf, rf in zip(wr["fields"], rr["fields"], strict=True)
        )
    if kind == "enum":
        return list(rr["symbols"][: len(wr["symbols"])]) == list(wr["symbols"])
    if kind == "fixed":
        return bool(wr.get("size") == rr.get("size"))
    if kind == "array":
        return _same_bytes(w, wr["items"], r, rr["items"], seen)
    if kind == "map":
        return _same_bytes(w, wr["values"], r, rr["values"], seen)
    return False


# Promotions whose two types share one binary encoding (a varint; a length and bytes).
_SAME_ENCODING = (("int", "long"), ("string", "bytes"), ("bytes", "string"))


def _same_field(wf: dict, rf: dict, reader_names: set[str]) -> bool:
    """Whether the writer's field at a position is the reader's at the same position."""
    if rf["name"] == wf["name"]:
        return True
    return wf["name"] in (rf.get("aliases") or []) and wf["name"] not in reader_names


@dataclass
class Resolution:
    """How bodies of one writer schema are read as the reader's (see the module docstring)."""

    writer: str
    reader: str
    root: _Node
    #: True when the writer's bodies read with the reader's schema itself give the resolved
    #: values (see :func:`_same_bytes`): they are decoded together with the reader's own.
    same_bytes: bool = False

    @property
    def identity(self) -> bool:
        """True when the writer's data reads as it is (same shape as the reader)."""
        return self.root.identity

    def apply(self, values: pa.Array) -> tuple[pa.Array, np.ndarray | None]:
        """``values`` (the writer's root type, one element per event) as the reader's type.

        Returns the resolved column, null where an event failed, and the failures (an object
        array of messages, None where an event resolved) or None when none failed. Raises
        :class:`ResolutionUnsupported` for a resolution these kernels do not perform.
        """
        if self.root.identity:
            return values, None
        fails = _Failures(len(values))
        out = self.root.apply(values, fails, _root, "")
        if not fails.failed.any():
            return out, None
        if pa.types.is_struct(out.type):
            out = pa.StructArray.from_arrays(
                [out.field(i) for i in range(out.type.num_fields)],
                fields=list(out.type),
                mask=pa.array(fails.failed | ~_valid(out)),
            )
        return out, fails.messages


@functools.lru_cache(maxsize=32)
def resolution(writer_definition: str, reader_definition: str) -> Resolution:
    """The plan that reads data written with ``writer_definition`` as ``reader_definition``.

    Computed once per pair (a walk of both schemas). Raises :class:`ResolutionUnsupported`
    when a part of it is not done by these kernels.
    """
    writer, reader = parsed(writer_definition), parsed(reader_definition)
    compiler = _Compiler(writer, reader)
    w_root, r_root = writer.root, reader.root
    w_arrow = mapping_for(writer_definition).type
    r_arrow = mapping_for(reader_definition).type
    return Resolution(
        writer_definition,
        reader_definition,
        compiler.node(w_root, r_root, w_arrow, r_arrow),
        same_bytes=_same_bytes(writer, w_root, reader, r_root, set()),
    )
