"""A schema compiled once into a fast writer of records that are already valid and explicit.

Emitting a batch checks every event against its schema and against the text and URN rules of
:mod:`metaverse_kit.events.semantics`, then writes it in Avro's binary encoding. Walking the
schema anew for each event (what :mod:`metaverse_kit.events.validation` does, to explain
problems) costs twice the encoding itself, so :func:`writer` compiles a schema, once, into
Python functions (one per named type, with the checks and the encoding of its fields written out
inline) that answer one question per record: is it valid *and already in the form the encoder
writes* (every field present, every union record a ``("full.Name", {...})`` tuple, every plain
union value fitting exactly one branch)? When it is, they have appended its encoding to a buffer
on the way; anything else, including every invalid record, gets "no", the buffer is cut back,
and the caller falls back to :func:`~metaverse_kit.events.validation.normalize`, which settles
union branches, fills defaults and reports every problem with its path. So this module never
decides what is valid on its own: it only recognises, quickly, records the full check would
return unchanged, and writes them byte for byte as ``fastavro.schemaless_writer`` does (which
resolves every union by trying its branches in turn: three quarters of its time on DataHub's
MCEs).

The generated source is built from the schema only through :func:`repr` of names and constants
passed in the functions' namespace, so a schema's text never becomes code.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

from metaverse_kit.capture import zigzag
from metaverse_kit.events.avro import (
    FLOAT_MAX,
    FLOAT_TINY,
    PRIMITIVES,
    AvroSchema,
    logical_problem,
    logical_range,
)
from metaverse_kit.events.semantics import UrnRule, urn_rule

__all__ = ["acceptor", "writer"]


class _No(Exception):
    """Raised inside a compiled check: the record is not valid-and-explicit."""


_NO = _No()
_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_DOUBLE_MAX = sys.float_info.max
#: For a plain value in a union, the Avro kinds the full check could write it as.
_KINDS_OF_TYPE: dict[type, tuple[str, ...]] = {
    bool: ("boolean",),
    int: ("int", "long", "float", "double"),
    float: ("float", "double"),
    str: ("string", "enum"),
    bytes: ("bytes", "fixed"),
    list: ("array",),
}


#: What a compiled writer raises for a record it does not take (then written by no one).
_REFUSED = (_No, KeyError, TypeError, ValueError, OverflowError, struct.error)


@lru_cache(maxsize=64)
def writer(definition: str) -> Callable[[Any, bytearray], bool]:
    """A function that appends a record's Avro encoding to a buffer when it is valid and explicit.

    ``write(record, out)`` returns True when
    :func:`~metaverse_kit.events.validation.normalize` would return the record unchanged and
    report nothing, having appended to ``out`` the bytes ``fastavro.schemaless_writer`` writes
    for it; False means "ask the full check", and ``out`` is as it was. Compiled once per
    definition.
    """
    root = _Compiler(AvroSchema(definition)).compile()

    def write(record: Any, out: bytearray) -> bool:
        start = len(out)
        try:
            root(record, out)
        except _REFUSED:
            del out[start:]
            return False
        return True

    return write


def acceptor(definition: str) -> Callable[[Any], bool]:
    """A function telling whether a record is valid and explicit for ``definition``.

    True means :func:`~metaverse_kit.events.validation.normalize` would return the record
    unchanged and report nothing; False means "ask it". See :func:`writer`.
    """
    write = writer(definition)

    def accepts(record: Any) -> bool:
        return write(record, bytearray())

    return accepts


def _utf8(v: str) -> bool:
    """True when ``v`` (known not to be ASCII) can be written as UTF-8: no lone surrogate."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _urn_check(rule: UrnRule) -> tuple[dict[str, bool], Callable[[Any], None]]:
    """A cache of URN verdicts for one rule, and the check that fills it."""
    # PERF: a dict per rule; a batch repeats the same actors, owners and tags many times.
    known: dict[str, bool] = {}
    problem = rule.problem

    def check(v: Any) -> None:
        if type(v) is not str or "\x00" in v or (not v.isascii() and not _utf8(v)):
            raise _NO
        ok = problem(v) is None
        if len(known) < 65536:
            known[v] = ok
        if not ok:
            raise _NO

    return known, check


_SMALL = [zigzag(n) for n in range(1024)]


class _Compiler:
    """Writes the source of one function per named type, then executes it once.

    Each function takes a value and the output buffer ``o``: it raises NO (or KeyError,
    TypeError) unless the value is valid-and-explicit, appending its encoding as it goes.
    """

    def __init__(self, avro: AvroSchema) -> None:
        self.avro = avro
        self.env: dict[str, Any] = {
            "NO": _NO,
            "utf8": _utf8,
            "S": _SMALL,
            "Z": zigzag,
            "pack_float": struct.Struct("<f").pack,
            "pack_double": struct.Struct("<d").pack,
        }
        self.functions: dict[str, str] = {}
        self.sources: list[str] = []
        self.dispatch: list[dict[str, Any]] = []
        self.vars = 0

    def compile(self) -> Callable[[Any, bytearray], None]:
        root = self.avro.root
        if isinstance(root, str) and root not in PRIMITIVES:
            name = self.named(root)
        else:
            name = "root"
            lines: list[str] = []
            self.check(lines, "v", root, None, 1)
            self.sources.append(self.function(name, lines))
        # NOTE: names enter the source only as repr() literals; everything else is a constant.
        exec("\n\n".join(self.sources), self.env)
        for table in self.dispatch:
            for branch, (tag, function) in table.items():
                table[branch] = (tag, self.env[function])
        return self.env[name]

    def const(self, value: Any) -> str:
        name = f"c{len(self.env)}"
        self.env[name] = value
        return name

    def var(self) -> str:
        self.vars += 1
        return f"x{self.vars}"

    @staticmethod
    def function(name: str, lines: list[str]) -> str:
        return "\n".join([f"def {name}(v, o):", *lines, "    return None"])

    def named(self, full: str) -> str:
        """The name of the function checking the named type ``full`` (written on first use)."""
        function = self.functions.get(full)
        if function is None:
            function = self.functions[full] = f"f{len(self.functions)}"
            t = self.avro.resolve(full)
            kind = self.avro.kind(t)
            lines: list[str] = []
            if kind == "record":
                fields = t["fields"]
                lines.append(f"    if type(v) is not dict or len(v) != {len(fields)}: raise NO")
                for f in fields:
                    x = self.var()
                    lines.append(f"    {x} = v[{f['name']!r}]")
                    self.check(lines, x, f["type"], urn_rule(f, full), 1)
            elif kind == "enum":
                # NOTE: an unknown symbol is a KeyError: refused like the rest.
                index = self.const({s: zigzag(i) for i, s in enumerate(t["symbols"])})
                lines.append("    if type(v) is not str: raise NO")
                lines.append(f"    o += {index}[v]")
            elif kind == "fixed":
                lines.append(f"    if type(v) is not bytes or len(v) != {int(t['size'])}: raise NO")
                self.logical(lines, "v", t, 1)
                lines.append("    o += v")
            else:
                lines.append("    raise NO")
            self.sources.append(self.function(function, lines))
        return function

    def check(self, out: list[str], x: str, t: Any, rule: UrnRule | None, depth: int) -> None:
        """Append the lines that raise NO unless variable ``x`` is valid-and-explicit for ``t``
        and that append its encoding to ``o``."""
        pad = "    " * depth
        if isinstance(t, str) and t not in PRIMITIVES:
            # NOTE: URN rules never reach inside named types (records, enums, fixed).
            out.append(f"{pad}{self.named(t)}({x}, o)")
            return
        if isinstance(t, list):
            self.union(out, x, t, rule, depth)
            return
        kind = t if isinstance(t, str) else t["type"]
        # NOTE: fastavro writes an int, str or bytes datum of a logical type as its underlying
        # type (only datetime, Decimal, UUID are converted, and the full check refuses those);
        # a logical type only narrows the values taken (avro.logical_problem).
        if kind == "array":
            y = self.var()
            out.append(f"{pad}if type({x}) is not list: raise NO")
            self.count(out, x, depth)
            out.append(f"{pad}for {y} in {x}:")
            self.check(out, y, t["items"], rule, depth + 1)
            out.append(f"{pad}o += b'\\x00'")
        elif kind == "map":
            k, y = self.var(), self.var()
            out.append(f"{pad}if type({x}) is not dict: raise NO")
            self.count(out, x, depth)
            out.append(f"{pad}for {k}, {y} in {x}.items():")
            out.append(
                f"{pad}    if type({k}) is not str or '\\x00' in {k} or "
                f"(not {k}.isascii() and not utf8({k})): raise NO"
            )
            self.text(out, k, depth + 1)
            self.check(out, y, t["values"], None, depth + 1)
            out.append(f"{pad}o += b'\\x00'")
        elif kind == "string" and rule is not None:
            known, slow = _urn_check(rule)
            out.append(f"{pad}if {self.const(known)}.get({x}) is not True: {self.const(slow)}({x})")
            self.logical(out, x, t, depth)
            self.text(out, x, depth)
        elif kind == "string":
            out.append(
                f"{pad}if type({x}) is not str or '\\x00' in {x} or "
                f"(not {x}.isascii() and not utf8({x})): raise NO"
            )
            self.logical(out, x, t, depth)
            self.text(out, x, depth)
        elif kind == "null":
            out.append(f"{pad}if {x} is not None: raise NO")
        elif kind == "boolean":
            out.append(f"{pad}if type({x}) is not bool: raise NO")
            out.append(f"{pad}o += b'\\x01' if {x} else b'\\x00'")
        elif kind in _RANGES:
            lo, hi = _RANGES[kind]
            limits = logical_range(t)
            if limits is not None:
                lo, hi = limits.lowest, limits.highest
            out.append(f"{pad}if type({x}) is not int or not {lo} <= {x} <= {hi}: raise NO")
            out.append(f"{pad}o += S[{x}] if 0 <= {x} < 1024 else Z({x})")
        elif kind == "double":
            # NOTE: one comparison refuses NaN, the infinities and an int past a double
            # (avro.number_problem); an int a double rounds is written as fastavro does.
            out.append(
                f"{pad}if (type({x}) is not float and type({x}) is not int) or "
                f"not {-_DOUBLE_MAX!r} <= {x} <= {_DOUBLE_MAX!r}: raise NO"
            )
            out.append(f"{pad}o += pack_double({x})")
        elif kind == "float":
            # NOTE: and a number a float writes as 0.0 (avro.number_problem).
            out.append(
                f"{pad}if (type({x}) is not float and type({x}) is not int) or "
                f"not {-FLOAT_MAX!r} <= {x} <= {FLOAT_MAX!r} or "
                f"({x} and {-FLOAT_TINY!r} <= {x} <= {FLOAT_TINY!r}): raise NO"
            )
            out.append(f"{pad}o += pack_float({x})")
        elif kind == "bytes":
            out.append(f"{pad}if type({x}) is not bytes and type({x}) is not bytearray: raise NO")
            self.logical(out, x, t, depth)
            out.append(f"{pad}o += S[n] if (n := len({x})) < 1024 else Z(n)")
            out.append(f"{pad}o += {x}")
        else:
            out.append(f"{pad}raise NO")

    def logical(self, out: list[str], x: str, t: Any, depth: int) -> None:
        """Append the line refusing ``x`` (of ``t``'s underlying type) when ``t``'s logical type
        refuses it: a uuid's text, a decimal's digits. Date and time ranges are inline bounds."""
        if not isinstance(t, dict) or "logicalType" not in t or logical_range(t) is not None:
            return
        check = self.const(partial(logical_problem, t))
        out.append(f"{'    ' * depth}if {check}({x}) is not None: raise NO")

    def count(self, out: list[str], x: str, depth: int) -> None:
        """Append the line writing the item count of ``x`` (a list or dict), if it has items."""
        pad = "    " * depth
        out.append(f"{pad}if {x}: o += S[n] if (n := len({x})) < 1024 else Z(n)")

    def text(self, out: list[str], x: str, depth: int) -> None:
        """Append the lines writing ``x``, a str known to be valid text, as an Avro string."""
        pad = "    " * depth
        y = self.var()
        out.append(f"{pad}{y} = {x}.encode()")
        out.append(f"{pad}o += S[n] if (n := len({y})) < 1024 else Z(n)")
        out.append(f"{pad}o += {y}")

    def union(
        self, out: list[str], x: str, branches: list, rule: UrnRule | None, depth: int
    ) -> None:
        avro = self.avro
        pad = "    " * depth
        # NOTE: the branch's position, written before the value (tag literals are our bytes).
        tags = [repr(zigzag(i)) for i in range(len(branches))]
        by_kind: dict[str, list[int]] = {}
        for i, b in enumerate(branches):
            by_kind.setdefault(avro.kind(b), []).append(i)
        records = {
            avro.branch_name(avro.resolve(branches[i])): (zigzag(i), self.named(branches[i]))
            for i in by_kind.get("record", [])
        }
        others = [i for i, b in enumerate(branches) if b != "null"]
        null = tags[branches.index("null")] if "null" in branches else None
        if null is not None and len(others) == 1 and not records:
            # NOTE: the common ["null", T]: a plain value has one branch it can be in.
            out.append(f"{pad}if {x} is None:")
            out.append(f"{pad}    o += {null}")
            out.append(f"{pad}else:")
            out.append(f"{pad}    o += {tags[others[0]]}")
            self.check(out, x, branches[others[0]], rule, depth + 1)
            return
        out.append(f"{pad}if {x} is None:")
        out.append(f"{pad}    {'raise NO' if null is None else f'o += {null}'}")
        if records:
            table: dict[str, Any] = dict(records)
            self.dispatch.append(table)
            t = self.var()
            out.append(f"{pad}elif type({x}) is tuple:")
            out.append(f"{pad}    if len({x}) != 2: raise NO")
            out.append(f"{pad}    {t} = {self.const(table)}[{x}[0]]")
            out.append(f"{pad}    o += {t}[0]")
            out.append(f"{pad}    {t}[1]({x}[1], o)")
        plain: dict[type, int] = {}
        for py_type, kinds in _KINDS_OF_TYPE.items():
            fits = [i for k in kinds for i in by_kind.get(k, [])]
            if len(fits) == 1:
                plain[py_type] = fits[0]
        if len(by_kind.get("map", [])) == 1 and not records:
            plain[dict] = by_kind["map"][0]
        for py_type, i in plain.items():
            out.append(f"{pad}elif type({x}) is {py_type.__name__}:")
            out.append(f"{pad}    o += {tags[i]}")
            self.check(out, x, branches[i], rule, depth + 1)
        out.append(f"{pad}else:")
        out.append(f"{pad}    raise NO")
