"""Walking Avro schemas: named types, full names, and a readable label for every type.

Everything that looks inside a schema (validation, the JSON forms, the Arrow type mapping, the
schema browser's field table, the composer's form) goes through :class:`AvroSchema`, so that
named-type references and namespace inheritance are resolved in exactly one place.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any

from metaverse_kit.errors import SchemaParseError

__all__ = [
    "FLOAT_MAX",
    "FLOAT_TINY",
    "LOGICAL_RANGES",
    "PRIMITIVES",
    "PROMOTIONS",
    "AvroSchema",
    "FieldInfo",
    "LogicalRange",
    "branch_index",
    "decimal_problem",
    "dict_branches",
    "first_repeated_branch",
    "kind_branches",
    "logical_problem",
    "logical_range",
    "names_match",
    "number_problem",
    "parse_definition",
    "python_kinds",
    "reader_branch",
    "repeated_branch_problem",
    "types_match",
    "unqualified",
    "uuid_problem",
    "whole_number_text",
]

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})

#: What a writer's primitive may be read as besides itself (Avro's schema resolution).
PROMOTIONS: dict[str, tuple[str, ...]] = {
    "int": ("long", "float", "double"),
    "long": ("float", "double"),
    "float": ("double",),
    "string": ("bytes",),
    "bytes": ("string",),
}


# -- values of logical types -------------------------------------------------------------------
#
# The one home of which numbers (and texts, and bytes) a logical type's value may be. Avro lets a
# timestamp-millis be any long, but every reader in this toolkit turns it into a Python datetime
# (fastavro when it decodes, pyarrow's to_pylist and to_pandas, the history questions, the
# widgets), and a datetime holds years 1 to 9999 only: a value past that range is refused when
# it is emitted, and :func:`metaverse_kit.history.arrow_types.python_range_problems` names the
# field of an event another producer wrote that holds one.


@dataclass(frozen=True)
class LogicalRange:
    """The values of one logical type that Python's datetime module can hold."""

    logical: str
    lowest: int
    highest: int
    unit: str
    what: str

    def problem(self, value: int) -> str | None:
        """Why ``value`` (an integer of the underlying type) is not one, or None when it is."""
        if self.lowest <= value <= self.highest:
            return None
        return (
            f"{value} is out of the range of {self.logical} ({self.unit}): expected "
            f"{self.lowest}..{self.highest}, {self.what}"
        )


_EPOCH = datetime(1970, 1, 1)
_DATETIMES = "years 1 to 9999, as Python's datetime holds"


def _ticks(moment: datetime, unit: timedelta) -> int:
    return (moment - _EPOCH) // unit


def _timestamps(logical: str, unit: timedelta, name: str) -> LogicalRange:
    local = logical.startswith("local-")
    since = "1970-01-01 00:00 local time" if local else "1970-01-01 00:00 UTC"
    return LogicalRange(
        logical,
        _ticks(datetime.min, unit),
        _ticks(datetime.max, unit),
        f"{name} since {since}",
        _DATETIMES,
    )


_MS, _US = timedelta(milliseconds=1), timedelta(microseconds=1)
_DAY = timedelta(days=1)

#: The range of every logical type whose values become Python dates and times, by
#: (underlying type, logical type); a logical type on another underlying type is ignored, as
#: the specification says (and as fastavro and the Arrow mapping do).
LOGICAL_RANGES: dict[tuple[str, str], LogicalRange] = {
    ("long", "timestamp-millis"): _timestamps("timestamp-millis", _MS, "milliseconds"),
    ("long", "timestamp-micros"): _timestamps("timestamp-micros", _US, "microseconds"),
    ("long", "local-timestamp-millis"): _timestamps("local-timestamp-millis", _MS, "milliseconds"),
    ("long", "local-timestamp-micros"): _timestamps("local-timestamp-micros", _US, "microseconds"),
    ("int", "date"): LogicalRange(
        "date",
        (date.min - _EPOCH.date()).days,
        (date.max - _EPOCH.date()).days,
        "days since 1970-01-01",
        _DATETIMES,
    ),
    ("int", "time-millis"): LogicalRange(
        "time-millis", 0, _DAY // _MS - 1, "milliseconds after midnight", "a time of day"
    ),
    ("long", "time-micros"): LogicalRange(
        "time-micros", 0, _DAY // _US - 1, "microseconds after midnight", "a time of day"
    ),
}

# NOTE: RFC 4122's 8-4-4-4-12 text, the form the specification names; fastavro reads any form
# uuid.UUID takes (braces, no hyphens, a urn:uuid: prefix), which other readers may not.
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def _logical_of(t: Any) -> tuple[str, str] | None:
    """(underlying type, logical type) of a primitive or fixed type with a logicalType."""
    if not isinstance(t, dict):
        return None
    logical = t.get("logicalType")
    kind = t.get("type")
    if not isinstance(logical, str) or not isinstance(kind, str):
        return None
    return kind, logical


def logical_range(t: Any) -> LogicalRange | None:
    """The range of a (resolved) type's logical date or time values, None for other types."""
    key = _logical_of(t)
    return None if key is None else LOGICAL_RANGES.get(key)


def uuid_problem(value: str) -> str | None:
    """Why a string is not a uuid logical value (RFC 4122's canonical text), or None."""
    if _UUID_TEXT.fullmatch(value):
        return None
    shown = repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    return (
        f"{shown} is not a uuid: expected RFC 4122's text form, "
        "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hexadecimal digits)"
    )


def whole_number_text(value: int, limit: int = 60) -> str:
    """An integer as a message shows it: its digits, or its first digits and how many it has.

    NOTE: ``str()`` of an integer of more than ``sys.get_int_max_str_digits()`` digits raises
    ValueError; a message about such a value must not.
    """
    digits = _digit_count(value)
    if digits <= limit:
        return str(value)
    sign = "-" if value < 0 else ""
    return f"{sign}{_leading_digits(value)}... (an integer of {digits} digits)"


def _digit_count(value: int) -> int:
    """How many decimal digits ``abs(value)`` has, without ``str()`` (see whole_number_text)."""
    n = abs(value)
    if n == 0:
        return 1
    # NOTE: the estimate from the bit length is the count or one more; one power of ten says.
    guess = int(n.bit_length() * math.log10(2)) + 1
    return guess if n >= 10 ** (guess - 1) else guess - 1


def _leading_digits(value: int, count: int = 12) -> str:
    n = abs(value)
    return str(n // 10 ** max(_digit_count(n) - count, 0))


def decimal_problem(value: bytes | bytearray, precision: int) -> str | None:
    """Why the bytes of a decimal (a big-endian two's-complement unscaled number) have more
    digits than ``precision``, or None."""
    unscaled = int.from_bytes(value, "big", signed=True)
    if abs(unscaled) < 10**precision:
        return None
    return (
        f"the decimal's unscaled value {whole_number_text(unscaled)} has "
        f"{_digit_count(unscaled)} digits, more than its precision of {precision}"
    )


#: The largest magnitude an Avro ``float`` (IEEE 754 single precision) holds; a Python float up
#: to 3.4028235e38 rounds to it.
FLOAT_MAX = 3.4028235e38
#: The largest magnitude an Avro ``float`` writes as 0.0: half its smallest number above zero
#: (2**-149); anything closer to zero rounds to it.
FLOAT_TINY = 2.0**-150
_DOUBLE_MAX = sys.float_info.max


def number_problem(value: int | float, kind: str, *, nullable: bool = False) -> str | None:
    """Why ``value`` (a Python int or float, not a bool) is not written as it is in a field of
    Avro type ``kind`` (``"float"`` or ``"double"``); None when it is.

    NaN and infinity are refused although Avro holds them: DataHub's JSON has neither, and a NaN
    is almost always a missing value (pandas gives one for an empty cell of a number column).
    A number past the type's range is refused (fastavro writes infinity for one past a
    float's, and fails on an integer past a double's), and so is a number a ``float`` would
    write as 0.0. ``nullable``: whether the field also takes null, which the advice names.
    """
    if isinstance(value, float):
        if value != value:
            missing = (
                "give None for a missing value (this field may be null), or a number"
                if nullable
                else "give a number (this field may not be null: a missing value needs a "
                "nullable field, a union with null)"
            )
            return (
                f"NaN (not a number) is refused in a {kind} field: DataHub's JSON has no NaN, "
                "and one is most often a missing value (pandas reads an empty cell of a number "
                f"column as NaN); {missing}"
            )
        if value in (math.inf, -math.inf):
            return (
                f"{value} is refused in a {kind} field: DataHub's JSON has no infinity; give a "
                "finite number" + (" (or None for a missing value)" if nullable else "")
            )
    limit = FLOAT_MAX if kind == "float" else _DOUBLE_MAX
    # NOTE: exact for ints too: Python compares an int and a float by their values.
    if not -limit <= value <= limit:
        shown = whole_number_text(value) if isinstance(value, int) else repr(value)
        return f"{shown} is out of the {kind} range -{limit!r}..{limit!r}"
    if kind == "float" and value and -FLOAT_TINY <= value <= FLOAT_TINY:
        return (
            f"{value!r} is too close to 0 for a float, which writes it as 0.0 (its smallest "
            "number above zero is about 1.4e-45); give 0.0 if zero is meant"
        )
    return None


def logical_problem(t: Any, value: Any) -> str | None:
    """Why ``value``, which fits the underlying type of ``t`` (a resolved type), is not a value
    of its logical type; None when it is, or when ``t`` has no logical type checked here."""
    key = _logical_of(t)
    if key is None:
        return None
    kind, logical = key
    limits = LOGICAL_RANGES.get(key)
    if limits is not None:
        return limits.problem(value)
    if key == ("string", "uuid"):
        return uuid_problem(value)
    if logical == "decimal" and kind in ("bytes", "fixed"):
        precision = t.get("precision")
        # NOTE: a decimal without a usable precision is refused when it is registered
        # (metaverse_kit.events.strict); one that slipped in is not ours to judge here.
        if isinstance(precision, int) and not isinstance(precision, bool) and precision > 0:
            return decimal_problem(value, precision)
    return None


def parse_definition(definition: str | dict | list) -> Any:
    """Parse a schema definition given as JSON text (or already parsed) into plain JSON data.

    Raises :class:`SchemaParseError` when the text is not JSON.
    """
    if isinstance(definition, str):
        try:
            return json.loads(definition)
        except json.JSONDecodeError as exc:
            raise SchemaParseError(
                f"The schema definition is not valid JSON (line {exc.lineno}, column {exc.colno}): "
                f"{exc.msg}"
            ) from exc
    return definition


def _full_name(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def python_kinds(value: Any) -> tuple[str, ...]:
    """The Avro kinds a plain Python value (not a named-record tuple) can be a datum of.

    Used to pick a union's branch for values that do not name it. A dict may be a map or a
    record; which record is the caller's question.
    """
    if isinstance(value, bool):
        return ("boolean",)
    if isinstance(value, int):
        return ("long", "int")
    if isinstance(value, float):
        return ("double", "float")
    if isinstance(value, str):
        return ("string", "enum")
    if isinstance(value, (bytes, bytearray)):
        return ("bytes", "fixed")
    if isinstance(value, list):
        return ("array",)
    if isinstance(value, dict):
        return ("map", "record")
    return (type(value).__name__,)


@dataclass(frozen=True)
class FieldInfo:
    """One field of a (possibly nested) record, as the schema browser lists it."""

    path: str
    type: str
    default: Any
    has_default: bool
    nullable: bool
    doc: str


class AvroSchema:
    """A parsed Avro schema with every named type indexed by its full name.

    Types handed out by :meth:`resolve` are the schema's own JSON dicts with ``name`` replaced by
    the full name, so callers never need to track namespaces themselves.
    """

    def __init__(self, definition: str | dict | list) -> None:
        self.definition = parse_definition(definition)
        self.named: dict[str, dict] = {}
        self.root = self._index(self.definition, None)

    @classmethod
    def of(cls, schema: AvroSchema | str | dict | list) -> AvroSchema:
        """Return ``schema`` itself when it is already an :class:`AvroSchema`, else parse it."""
        return schema if isinstance(schema, AvroSchema) else cls(schema)

    # -- indexing -----------------------------------------------------------------------------

    def _index(self, t: Any, namespace: str | None) -> Any:
        if isinstance(t, list):
            return [self._index(b, namespace) for b in t]
        if isinstance(t, str):
            return t if t in PRIMITIVES else _full_name(t, namespace)
        if not isinstance(t, dict) or "type" not in t:
            raise SchemaParseError(f"Not an Avro type: {json.dumps(t)[:200]}")
        kind = t["type"]
        if kind in _NAMED:
            if "name" not in t:
                raise SchemaParseError(f"A {kind} needs a name: {json.dumps(t)[:200]}")
            full = _full_name(t["name"], t.get("namespace", namespace))
            node = dict(t, name=full)
            self.named[full] = node
            inner_ns = full.rpartition(".")[0] or None
            if kind in ("record", "error"):
                fields = []
                for f in t.get("fields", []):
                    if "name" not in f or "type" not in f:
                        raise SchemaParseError(f"A field of {full} needs a name and a type")
                    fields.append(dict(f, type=self._index(f["type"], inner_ns)))
                node["fields"] = fields
            return full
        if kind == "array":
            return dict(t, items=self._index(t["items"], namespace))
        if kind == "map":
            return dict(t, values=self._index(t["values"], namespace))
        if kind in PRIMITIVES:
            return dict(t)  # a primitive with attributes such as logicalType
        if isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in PRIMITIVES):
            return self._index(kind, namespace)
        raise SchemaParseError(f"Unknown Avro type {kind!r}")

    # -- navigation -----------------------------------------------------------------------------

    def resolve(self, t: Any) -> Any:
        """Follow a named-type reference to its definition; other types come back unchanged."""
        if isinstance(t, str) and t not in PRIMITIVES:
            try:
                return self.named[t]
            except KeyError:
                raise SchemaParseError(f"The schema refers to an undefined type {t!r}") from None
        return t

    @property
    def root_type(self) -> Any:
        """The resolved top-level type (usually a record)."""
        return self.resolve(self.root)

    @property
    def name(self) -> str | None:
        """The full name of the top-level named type, if it has one."""
        root = self.root_type
        return root["name"] if isinstance(root, dict) and "name" in root else None

    @cached_property
    def canonical_text(self) -> str:
        """The definition as compact JSON, the form a registry stores and compares."""
        return json.dumps(self.definition, separators=(",", ":"))

    def kind(self, t: Any) -> str:
        """The Avro kind of a type: a primitive name, ``record``, ``enum``, ``union``, ..."""
        t = self.resolve(t)
        if isinstance(t, list):
            return "union"
        if isinstance(t, str):
            return t
        return "record" if t["type"] == "error" else t["type"]

    def label(self, t: Any) -> str:
        """A short readable name for a type: ``string``, ``array<Owner>``, ``OwnershipType``, ..."""
        if isinstance(t, list):
            return " | ".join(self.label(b) for b in t)
        if isinstance(t, str):
            return t if t in PRIMITIVES else t.rpartition(".")[2]
        kind = t["type"]
        if kind == "array":
            return f"array<{self.label(t['items'])}>"
        if kind == "map":
            return f"map<{self.label(t['values'])}>"
        if kind in PRIMITIVES:
            logical = t.get("logicalType")
            return f"{kind} ({logical})" if logical else kind
        return str(t.get("name", kind)).rpartition(".")[2]

    def branch_name(self, t: Any) -> str:
        """The name a union branch goes by in Avro's JSON encoding (full name or primitive)."""
        if isinstance(t, str):
            return t
        if t.get("type") in PRIMITIVES:
            return str(t["type"])
        return str(t.get("name", t["type"]))

    def default_value(self, t: Any, default: Any) -> Any:
        """A field's ``default`` (Avro's JSON form) as the value of type ``t`` fastavro reads.

        Bytes and fixed defaults are strings of code points 0-255 (one byte each); a record's
        default is completed with its fields' own defaults; a union's default belongs to its
        first branch (a ``null`` default to its ``null`` branch), and a record branch is named
        as a ``("full.Name", {...})`` tuple, as ``return_record_name=True`` reads it.
        """
        r = self.resolve(t)
        if isinstance(r, list):
            if default is None or not r:
                return None
            first = next((b for b in r if b != "null"), r[0])
            value = self.default_value(first, default)
            return (
                (self.branch_name(self.resolve(first)), value)
                if self.kind(first) == "record"
                else value
            )
        kind = self.kind(r)
        if kind == "record" and isinstance(default, dict):
            out = {}
            for f in r["fields"]:
                if f["name"] in default:
                    out[f["name"]] = self.default_value(f["type"], default[f["name"]])
                elif "default" in f:
                    out[f["name"]] = self.default_value(f["type"], f["default"])
            return out
        if kind == "array" and isinstance(default, list):
            return [self.default_value(r["items"], d) for d in default]
        if kind == "map" and isinstance(default, dict):
            return {k: self.default_value(r["values"], d) for k, d in default.items()}
        if kind in ("bytes", "fixed") and isinstance(default, str):
            return default.encode("latin-1", errors="replace")
        if (
            kind in ("float", "double")
            and isinstance(default, int)
            and not isinstance(default, bool)
        ):
            return float(default)
        return default

    @cached_property
    def unwritable(self) -> dict[str, str]:
        """The records of this schema of which no value can ever be written, each with why.

        Such a record holds itself (directly or through other records) with no null, array or
        map on the way, so every value of it would hold another one, for ever; or it has a
        field (at any depth) of an enum without symbols. Avro accepts such a definition; a form
        can only leave such a record out (a nullable field of it stays null, a list of it empty).
        """
        named = self.named
        records = {n: t for n, t in named.items() if self.kind(t) == "record"}
        writable: set[str] = set()

        def can(t: Any) -> bool:
            if isinstance(t, list):
                return any(can(b) for b in t)
            if not isinstance(t, str) or t in PRIMITIVES:
                return True
            if t in records:
                return t in writable
            return not (named[t]["type"] == "enum" and not named[t].get("symbols"))

        # NOTE: the least fixpoint: a record is writable once all its fields are; a pass over
        # the records in the order of their definitions settles most schemas at once.
        changed = True
        while changed:
            changed = False
            for name, r in records.items():
                if name not in writable and all(can(f["type"]) for f in r["fields"]):
                    writable.add(name)
                    changed = True
        out: dict[str, str] = {}
        for name in [n for n in records if n not in writable]:
            chain = [name]
            while True:
                # The first field that cannot be written leads to a record that cannot be, or
                # is an enum without symbols.
                f = next(f for f in records[chain[-1]]["fields"] if not can(f["type"]))
                branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
                nxt = next((b for b in branches if b in records), None)
                if nxt is None:
                    held = f"holds {' -> '.join(chain)}, whose" if len(chain) > 1 else "has a"
                    out[name] = (
                        f"it {held} field {f['name']!r} is the enum {branches[0]}, which has no "
                        "symbols (an enum needs one)"
                    )
                    break
                if nxt in chain:
                    loop = [*chain[chain.index(nxt) :], nxt]
                    way = (
                        f"{' -> '.join(loop)} with no null, array or map on the way (one of "
                        "those fields must be nullable, a union with null)"
                    )
                    out[name] = (
                        f"it contains itself through {way}"
                        if nxt == name
                        else f"it holds {' -> '.join(chain[: chain.index(nxt) + 1])}, which "
                        f"contains itself through {way}"
                    )
                    break
                chain.append(nxt)
        return out

    def never_written(self, t: Any) -> str | None:
        """Why no value of type ``t`` can ever be written, or None: a record of
        :attr:`unwritable`, an enum without symbols, a union of nothing but such types."""
        r = self.resolve(t)
        if isinstance(r, list):
            reasons = [self.never_written(b) for b in r]
            if r and all(reasons):
                return "; ".join(str(why) for why in reasons)
            return None
        if not isinstance(r, dict):
            return None
        kind = self.kind(r)
        if kind == "record" and r["name"] in self.unwritable:
            return f"{r['name']} can never be written: {self.unwritable[r['name']]}"
        if kind == "enum" and not r.get("symbols"):
            return f"the enum {r['name']} has no symbols, so no value of it can be written"
        return None

    def nullable(self, t: Any) -> bool:
        """True when the type is a union with a ``null`` branch."""
        return isinstance(t, list) and any(b == "null" for b in t)

    def fields(self, record: Any) -> list[dict]:
        """The fields of a record type (given by name or definition)."""
        r = self.resolve(record)
        return list(r.get("fields", []))

    def walk_fields(
        self, t: Any = None, *, prefix: str = "", _seen: tuple[str, ...] = ()
    ) -> Iterator[FieldInfo]:
        """Every field of the nested schema, depth first, with dotted paths.

        Union branches that are records show as ``field.<BranchName>.sub``; array items as
        ``field[]``; map values as ``field{}``. A recursive type is listed once.
        """
        t = self.root if t is None else t
        resolved = self.resolve(t)
        if isinstance(resolved, dict) and resolved.get("type") in ("record", "error"):
            name = resolved["name"]
            if name in _seen:
                return
            for f in resolved.get("fields", []):
                path = f"{prefix}.{f['name']}" if prefix else f["name"]
                yield FieldInfo(
                    path=path,
                    type=self.label(f["type"]),
                    default=f.get("default"),
                    has_default="default" in f,
                    nullable=self.nullable(f["type"]),
                    doc=str(f.get("doc", "")),
                )
                yield from self._walk_inner(f["type"], path, (*_seen, name))

    def _walk_inner(self, t: Any, path: str, seen: tuple[str, ...]) -> Iterator[FieldInfo]:
        resolved = self.resolve(t)
        if isinstance(resolved, list):
            records = [b for b in resolved if self.kind(b) in ("record", "array", "map")]
            for b in records:
                rb = self.resolve(b)
                if self.kind(rb) == "record" and len(records) > 1:
                    yield from self.walk_fields(b, prefix=f"{path}.<{self.label(b)}>", _seen=seen)
                else:
                    yield from self._walk_inner(b, path, seen)
        elif isinstance(resolved, dict):
            kind = resolved["type"]
            if kind in ("record", "error"):
                yield from self.walk_fields(resolved["name"], prefix=path, _seen=seen)
            elif kind == "array":
                yield from self._walk_inner(resolved["items"], f"{path}[]", seen)
            elif kind == "map":
                yield from self._walk_inner(resolved["values"], f"{path}{{}}", seen)


# -- unions and schema resolution ---------------------------------------------------------------
#
# The one home of "which branch of a union": by the name a value carries, by what a plain value
# can be, and, when a writer's data is read with another (reader) schema, which reader branch a
# writer's type resolves to. Validation, the forms, the JSON forms and the replay all ask here.


def unqualified(name: str) -> str:
    """The last part of a full name (``com.linkedin.Ownership`` -> ``Ownership``)."""
    return name.rpartition(".")[2]


def branch_index(avro: AvroSchema, branches: list, name: str) -> int | None:
    """The position of the union branch called ``name`` (its full name, short name or type)."""
    names = [avro.branch_name(avro.resolve(b)) for b in branches]
    if name in names:
        return names.index(name)
    shorts = [unqualified(n) for n in names]
    return shorts.index(name) if shorts.count(name) == 1 else None


def dict_branches(avro: AvroSchema, branches: list, value: dict) -> list[int]:
    """The branches a plain dict can be: maps, and records it gives every required field of
    and no unknown one. Several means the dict alone does not say which record it is."""
    fits = []
    for i, b in enumerate(branches):
        r = avro.resolve(b)
        kind = avro.kind(r)
        if kind == "map":
            fits.append(i)
        elif kind == "record":
            fields = {f["name"] for f in r["fields"]}
            required = {f["name"] for f in r["fields"] if "default" not in f}
            if set(value) <= fields and required <= set(value):
                fits.append(i)
    return fits


def kind_branches(avro: AvroSchema, branches: list, value: Any) -> list[int]:
    """The branches a plain, non-dict value can be a datum of: its own kinds first (a Python
    int is a long or an int), then the wider ones it is promoted to (an int to float/double)."""
    kinds = python_kinds(value)
    exact = [i for i, b in enumerate(branches) if avro.kind(b) in kinds]
    wider = (
        [i for i, b in enumerate(branches) if avro.kind(b) in ("float", "double")]
        if "long" in kinds
        else []
    )
    return exact + [i for i in wider if i not in exact]


def names_match(writer: dict, reader: dict) -> bool:
    """True when a writer's named type resolves to a reader's of the same kind: their
    unqualified names are equal, or the reader lists the writer's name among its aliases."""
    if _kind_of(writer) != _kind_of(reader):
        return False
    w_name, r_name = writer["name"], reader["name"]
    aliases = reader.get("aliases") or []
    return (
        unqualified(w_name) == unqualified(r_name)
        or w_name in aliases
        or unqualified(w_name) in aliases
    )


def _kind_of(t: dict) -> str:
    return "record" if t["type"] == "error" else str(t["type"])


def _base_kind(avro: AvroSchema, t: Any) -> str:
    """The kind of a type with a logical type's annotation ignored (``long`` for timestamps)."""
    kind = avro.kind(t)
    r = avro.resolve(t)
    if isinstance(r, dict) and r.get("type") in PRIMITIVES:
        return str(r["type"])
    return kind


def types_match(writer: AvroSchema, wt: Any, reader: AvroSchema, rt: Any) -> bool:
    """Whether a writer's (non-union) type "matches" a reader's, as Avro's union resolution
    picks a reader branch: equal or promotable primitives, arrays and maps whose items match,
    named types whose names match (see :func:`names_match`), fixed of the same size."""
    w, r = writer.resolve(wt), reader.resolve(rt)
    if isinstance(w, list) or isinstance(r, list):
        return True
    wk, rk = _base_kind(writer, w), _base_kind(reader, r)
    if wk in PRIMITIVES or rk in PRIMITIVES:
        return wk == rk or rk in PROMOTIONS.get(wk, ())
    if wk != rk:
        return False
    if wk == "array":
        return types_match(writer, w["items"], reader, r["items"])
    if wk == "map":
        return types_match(writer, w["values"], reader, r["values"])
    if wk == "fixed" and w.get("size") != r.get("size"):
        return False
    return names_match(w, r)


def reader_branch(writer: AvroSchema, wt: Any, reader: AvroSchema, branches: list) -> int | None:
    """The reader union branch a writer's type resolves to: the first one it matches."""
    for i, b in enumerate(branches):
        if types_match(writer, wt, reader, b):
            return i
    return None


def repeated_branch_problem(
    avro: AvroSchema, branches: list, *, field: str | None = None, record: str | None = None
) -> str | None:
    """Why a union has two branches of one type or name, or None when it has not.

    NOTE: Avro allows one branch of each type besides named types, which go by their names
    (``["long", {"type": "long", "logicalType": "timestamp-millis"}]`` is two longs); such a
    union's bytes say only "a long", and no column can tell its branches apart.
    """
    others = [b for b in branches if b != "null"]
    seen: dict[str, Any] = {}
    for b in others:
        name = avro.branch_name(avro.resolve(b))
        if name in seen:
            where = f" of field {field}" if field else ""
            where += f" in record {record}" if record else ""
            return (
                f"The union [{', '.join(avro.label(x) for x in others)}]{where} has two "
                f"branches of one type ({avro.label(seen[name])} and {avro.label(b)}): Avro "
                "allows one branch of each type besides records, enums and fixed types of "
                "different names; give the schema one of them"
            )
        seen[name] = avro.resolve(b)
    return None


def first_repeated_branch(avro: AvroSchema) -> str | None:
    """:func:`repeated_branch_problem` of the first such union of the schema, naming its field
    and record, or None."""
    todo: list[tuple[Any, str | None, str | None]] = [(avro.root, None, None)]
    done: set[str] = set()
    while todo:
        t, field, record = todo.pop()
        if isinstance(t, str) and t not in PRIMITIVES:
            if t in done:
                continue
            done.add(t)
        r = avro.resolve(t)
        if isinstance(r, list):
            problem = repeated_branch_problem(avro, r, field=field, record=record)
            if problem is not None:
                return problem
            todo.extend((b, field, record) for b in r)
        elif isinstance(r, dict):
            if r["type"] in ("record", "error"):
                todo.extend((f["type"], f["name"], r["name"]) for f in r.get("fields", []))
            elif r["type"] == "array":
                todo.append((r["items"], field, record))
            elif r["type"] == "map":
                todo.append((r["values"], field, record))
    return None
