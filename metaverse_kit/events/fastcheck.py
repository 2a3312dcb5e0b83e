"""A schema compiled once into a fast yes/no check of records that are already explicit.

Emitting a batch checks every event against its schema and against the text and URN rules of
:mod:`metaverse_kit.events.semantics`. Walking the schema anew for each event (what
:mod:`metaverse_kit.events.validation` does, to explain problems) costs twice the encoding
itself, so :func:`acceptor` compiles a schema into nested closures, once, that answer one
question per record: is it valid *and already in the form the encoder writes* (every field
present, every union record a ``("full.Name", {...})`` tuple, every plain union value fitting
exactly one branch)? Anything else, including every invalid record, gets "no", and the caller
falls back to :func:`~metaverse_kit.events.validation.normalize`, which settles union branches,
fills defaults and reports every problem with its path. So this module never decides what is
valid on its own: it only recognises, quickly, records the full check would return unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from metaverse_kit.events.avro import PRIMITIVES, AvroSchema
from metaverse_kit.events.semantics import UrnRule, urn_rule

__all__ = ["acceptor"]

Check = Callable[[Any], None]


class _No(Exception):
    """Raised inside a compiled check: the record is not valid-and-explicit."""


_NO = _No()
_INT = (-(2**31), 2**31 - 1)
_LONG = (-(2**63), 2**63 - 1)
_FLOAT_MAX = 3.4028235e38
#: For a plain value in a union, the Avro kinds the full check could write it as.
_KINDS_OF_TYPE: dict[type, tuple[str, ...]] = {
    bool: ("boolean",),
    int: ("int", "long", "float", "double"),
    float: ("float", "double"),
    str: ("string", "enum"),
    bytes: ("bytes", "fixed"),
    list: ("array",),
}


@lru_cache(maxsize=64)
def acceptor(definition: str) -> Callable[[Any], bool]:
    """A function telling whether a record is valid and explicit for ``definition``.

    True means :func:`~metaverse_kit.events.validation.normalize` would return the record
    unchanged and report nothing; False means "ask it". Compiled once per definition.
    """
    avro = AvroSchema(definition)
    root = _Compiler(avro).node(avro.root, None)

    def accepts(record: Any) -> bool:
        try:
            root(record)
        except (_No, KeyError, TypeError):
            return False
        return True

    return accepts


def _fail(_: Any = None) -> None:
    raise _NO


class _Compiler:
    def __init__(self, avro: AvroSchema) -> None:
        self.avro = avro
        self.named: dict[str, list[Check]] = {}

    def node(self, t: Any, rule: UrnRule | None) -> Check:
        if isinstance(t, str) and t not in PRIMITIVES:
            # NOTE: named types are records, enums and fixed: URN rules never reach inside
            # them, so one compiled check per name serves every use (and recursion).
            cell = self.named.get(t)
            if cell is None:
                cell = self.named[t] = []
                cell.append(self.build(self.avro.resolve(t), None))
            if cell:
                return cell[0]
            return lambda v: cell[0](v)
        return self.build(self.avro.resolve(t), rule)

    def build(self, t: Any, rule: UrnRule | None) -> Check:
        if isinstance(t, list):
            return self.union(t, rule)
        kind = t if isinstance(t, str) else t["type"]
        if kind in ("record", "error"):
            return self.record(t)
        if kind == "enum":
            symbols = frozenset(t["symbols"])

            def enum(v: Any) -> None:
                if type(v) is not str or v not in symbols:
                    raise _NO

            return enum
        if kind == "array":
            item = self.node(t["items"], rule)

            def array(v: Any) -> None:
                if type(v) is not list:
                    raise _NO
                for x in v:
                    item(x)

            return array
        if kind == "map":
            value = self.node(t["values"], None)

            def mapping(v: Any) -> None:
                if type(v) is not dict:
                    raise _NO
                for k, x in v.items():
                    if type(k) is not str:
                        raise _NO
                    _text(k)
                    value(x)

            return mapping
        if kind == "fixed":
            size = t["size"]

            def fixed(v: Any) -> None:
                if type(v) is not bytes or len(v) != size:
                    raise _NO

            return fixed
        return self.primitive(kind, rule)

    def primitive(self, kind: str, rule: UrnRule | None) -> Check:
        if kind == "string":
            if rule is None:
                return _string
            problem = rule.problem
            # PERF: a dict per rule beats the shared LRU cache's hashing of the rule each time.
            known: dict[str, bool] = {}

            def urn(v: Any) -> None:
                ok = known.get(v)
                if ok is None:
                    _string(v)
                    ok = problem(v) is None
                    if len(known) < 65536:
                        known[v] = ok
                if not ok:
                    raise _NO

            return urn
        if kind == "null":

            def null(v: Any) -> None:
                if v is not None:
                    raise _NO

            return null
        if kind == "boolean":

            def boolean(v: Any) -> None:
                if type(v) is not bool:
                    raise _NO

            return boolean
        if kind in ("int", "long"):
            lo, hi = _INT if kind == "int" else _LONG

            def integer(v: Any) -> None:
                if type(v) is not int or not lo <= v <= hi:
                    raise _NO

            return integer
        if kind in ("float", "double"):
            limit = _FLOAT_MAX if kind == "float" else math.inf

            def number(v: Any) -> None:
                tv = type(v)
                if tv is float:
                    if math.isfinite(v) and abs(v) > limit:
                        raise _NO
                elif tv is not int:
                    raise _NO

            return number
        if kind == "bytes":

            def raw(v: Any) -> None:
                if type(v) is not bytes and type(v) is not bytearray:
                    raise _NO

            return raw
        return _fail

    def record(self, t: dict) -> Check:
        fields = [(f["name"], self.node(f["type"], urn_rule(f, t["name"]))) for f in t["fields"]]
        count = len(fields)

        def record(v: Any) -> None:
            if type(v) is not dict or len(v) != count:
                raise _NO
            for name, check in fields:
                check(v[name])

        return record

    def union(self, branches: list, rule: UrnRule | None) -> Check:
        avro = self.avro
        has_null = "null" in branches
        records: dict[str, Check] = {}
        by_kind: dict[str, list[Any]] = {}
        for b in branches:
            kind = avro.kind(b)
            by_kind.setdefault(kind, []).append(b)
            if kind == "record":
                records[avro.branch_name(avro.resolve(b))] = self.node(b, None)
        plain: dict[type, Check] = {}
        for py_type, kinds in _KINDS_OF_TYPE.items():
            fits = [b for k in kinds for b in by_kind.get(k, [])]
            if len(fits) == 1:
                plain[py_type] = self.node(fits[0], rule)
        if len(by_kind.get("map", [])) == 1 and not records:
            plain[dict] = self.node(by_kind["map"][0], None)

        def union(v: Any) -> None:
            if v is None:
                if not has_null:
                    raise _NO
                return
            tv = type(v)
            if tv is tuple:
                if len(v) != 2:
                    raise _NO
                records[v[0]](v[1])
                return
            plain[tv](v)

        return union


def _text(v: str) -> None:
    if "\x00" in v:
        raise _NO
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise _NO from None


def _string(v: Any) -> None:
    if type(v) is not str:
        raise _NO
    _text(v)
