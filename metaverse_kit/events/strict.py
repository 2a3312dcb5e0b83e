"""Is a schema definition valid Avro? Asked of two real Avro parsers, in their strict modes.

A registry stores a definition only when it passes :func:`check_definition`:

* the ``avro`` package (the Apache implementation the compatibility checker already uses) parses
  it with ``validate_names`` and ``validate_enum_symbols``: names, namespaces and enum symbols,
  duplicate field names, a record without ``fields``, nested or duplicate union branches,
  ``order`` values; its own name rule (``avro.name.validate_basename``) is applied to field names,
  which its parser leaves unchecked;
* fastavro (the encoder that will write every event with it) parses it too: undefined or
  redefined named types, and defaults of the wrong primitive type;
* every field default is checked against its field's type by :func:`_default_problem`, the one
  home of that rule: an enum default that is not a symbol, a map default with values of the
  wrong type, a record default that lacks a field without a default, and a union's default that
  is not of the union's FIRST branch (``["null", "int"]`` with ``"default": 3``), at any depth;
* every decimal has a precision its readers can use (:func:`_decimal_problems`).

The verdict does not depend on the caller's warning filters, and the check does not touch
them: the avro package *warns* about a logical type it ignores (an unknown one such as
``local-timestamp-millis``, which it does not know, or one on another underlying type), which
the specification allows, and such a warning turned into an error (``python -W error``,
pytest's ``filterwarnings = error``) used to refuse a definition that is accepted everywhere
else. The avro package is given the definition without its logical types
(:func:`parse_with_avro_package`): it never refuses a definition for one, so its verdict is the
same, and it has nothing to warn about. (Silencing the warning with
``warnings.catch_warnings`` swapped the process's filters while the check ran: a filter another
thread set meanwhile was lost, and that thread's warnings were filtered by ours.)

A definition is JSON: ``NaN`` and ``Infinity``, which Python's JSON reader takes but strict
ones refuse, are refused wherever they are; a float or double default must be a finite number
of its type's range (:func:`~metaverse_kit.events.avro.number_problem`).

Problems come back as one :class:`SchemaParseError` whose message is the parser's own, prefixed
with what was being checked.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from metaverse_kit.errors import ConfigurationError, SchemaParseError
from metaverse_kit.events.avro import (
    AvroSchema,
    first_repeated_branch,
    number_problem,
    parse_definition,
)
from metaverse_kit.names import check_schema_name

__all__ = ["check_definition", "parse_with_avro_package", "schema_name"]


def check_definition(definition: str) -> None:
    """Raise :class:`SchemaParseError` unless ``definition`` (JSON text) is a valid Avro schema."""
    if not isinstance(definition, str):
        raise SchemaParseError(
            f"A schema definition is JSON text (a str), got {type(definition).__name__}; "
            "use json.dumps(...)"
        )
    _check(definition)


def schema_name(definition: str, name: str | None = None) -> str:
    """The name ``definition`` is registered under: ``name``, else its Avro full name.

    Checks the definition (:func:`check_definition`) and the name (Azure Schema Registry's rule).
    Raises :class:`SchemaParseError` or :class:`ConfigurationError`.
    """
    check_definition(definition)
    if name is None:
        name = AvroSchema(definition).name
        if name is None:
            raise SchemaParseError(
                "The definition has no name (not a record, enum or fixed); pass name=..."
            )
        if len(name) > 50:
            raise ConfigurationError(
                f"The schema's full name {name!r} is longer than the 50 characters Azure Schema "
                "Registry takes as a schema name; register it with a shorter name=..."
            )
    return check_schema_name(name)


def _reason(exc: Exception) -> str:
    """The avro package's message without the schema text it quotes (a DataHub-sized schema
    made a one-line error hundreds of kilobytes long): its last clause says what is wrong."""
    text = str(exc)
    if len(text) <= 300:
        return text
    # NOTE: nested messages read "... not a valid Avro schema: <inner reason> (known names: ...)".
    text = text.split(" (known names:")[0]
    inner = text.rpartition("not a valid Avro schema: ")[2]
    return inner if len(inner) <= 300 else inner[:297] + "..."


def _repeated_branch(parsed: Any) -> str | None:
    """The union of ``parsed`` with two branches of one type, with its field, or None (also
    when ``parsed`` is too malformed to tell)."""
    try:
        return first_repeated_branch(AvroSchema(parsed))
    except (SchemaParseError, TypeError, KeyError, AttributeError, ValueError):
        return None


def parse_with_avro_package(parsed: Any) -> Any:
    """The ``avro`` package's schema for a parsed definition, read without its logical types,
    so that it warns of nothing (see the module's notes).

    NOTE: the avro package ignores a logical type it cannot use (the specification says to),
    and warns; it never refuses a definition for one, and its compatibility checker does not
    compare them: its verdicts are the same without them. Decimals it would ignore are
    refused by :func:`check_definition` itself. Names and enum symbols are checked. Raises
    what ``avro.schema.parse`` raises.
    """
    import avro.schema

    return avro.schema.parse(
        json.dumps(_without_logical_types(parsed)),
        validate_enum_symbols=True,
        validate_names=True,
    )


def _without_logical_types(t: Any) -> Any:
    """A copy of a type with no ``logicalType`` key in any type of it (defaults untouched)."""
    if isinstance(t, list):
        return [_without_logical_types(b) for b in t]
    if not isinstance(t, dict):
        return t
    out = {k: v for k, v in t.items() if k != "logicalType"}
    for key in ("type", "items", "values"):
        if isinstance(out.get(key), (dict, list)):
            out[key] = _without_logical_types(out[key])
    if isinstance(out.get("fields"), list):
        out["fields"] = [
            {**f, "type": _without_logical_types(f["type"])}
            if isinstance(f, dict) and "type" in f
            else f
            for f in out["fields"]
        ]
    return out


def _refuse_constant(name: str) -> Any:
    raise SchemaParseError(
        f"The schema definition is not valid JSON: it holds {name}, which is not JSON "
        "(Python's JSON reader takes it; strict ones, such as the one Avro's Java library "
        "uses, refuse it); write a number"
    )


@lru_cache(maxsize=256)
def _check(definition: str) -> None:
    import avro.errors
    import avro.name
    import fastavro

    try:
        parsed = json.loads(definition, parse_constant=_refuse_constant)
    except json.JSONDecodeError:
        parsed = parse_definition(definition)  # raises, saying where the text is not JSON
    try:
        schema = parse_with_avro_package(parsed)
    except (avro.errors.AvroException, avro.errors.SchemaParseException) as exc:
        # NOTE: the avro package names the union ("long type already in Union"), not its field.
        raise SchemaParseError(
            f"Not a valid Avro schema: {_repeated_branch(parsed) or _reason(exc)}"
        ) from None
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        # NOTE: the avro package lets some malformed shapes escape as Python errors.
        raise SchemaParseError(f"Not a valid Avro schema: {type(exc).__name__}: {exc}") from None
    try:
        fastavro.parse_schema(parsed, _write_hint=False)
    except (fastavro.schema.SchemaParseException, fastavro.schema.UnknownType) as exc:
        raise SchemaParseError(f"Not a valid Avro schema: {exc}") from None
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise SchemaParseError(f"Not a valid Avro schema: {type(exc).__name__}: {exc}") from None
    decimals = _decimal_problems(AvroSchema(parsed))
    if decimals:
        raise SchemaParseError(f"Not a valid Avro schema: {'; '.join(decimals)}")
    problems = []
    for record in _records(schema):
        for field in record.fields:
            where = f"field {field.name!r} of {record.fullname}"
            try:
                avro.name.validate_basename(field.name)
            except avro.errors.InvalidName as exc:
                raise SchemaParseError(f"Not a valid Avro schema: {where}: {exc}") from None
            if field.has_default:
                problem = _default_problem(field.type, field.default, "")
                if problem is not None:
                    at, what = problem
                    inside = f" (at {at})" if at else ""
                    problems.append(
                        f"the default {_value_text(field.default)} of {where}{inside} {what}"
                    )
    if len(problems) == 1:
        raise SchemaParseError(f"Not a valid Avro schema: {problems[0]}")
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise SchemaParseError(
            f"Not a valid Avro schema ({len(problems)} defaults do not fit their fields):\n{listed}"
        )


#: The most digits an Arrow decimal (decimal256) holds.
_MAX_DECIMAL_PRECISION = 76


def _decimal_problems(avro: AvroSchema) -> list[str]:
    """What is wrong with each decimal whose precision its readers cannot use.

    NOTE: the specification says such a logical type is ignored (the value read as its bytes),
    which the avro package does, but fastavro (which decodes every replayed event) reads it as a
    decimal anyway and fails, and no Arrow decimal has precision 0: refused here, the one place
    that sees the definition before any event is written with it.
    """
    problems: list[str] = []

    def check(t: dict, where: str) -> None:
        # NOTE: fastavro's parser refuses a bad scale, and a precision its fixed cannot hold.
        precision = t.get("precision")
        if not isinstance(precision, int) or isinstance(precision, bool) or precision < 1:
            problems.append(
                f"the decimal {where} has precision {json.dumps(precision)}; "
                "a decimal needs a precision, a whole number of at least 1"
            )
        elif precision > _MAX_DECIMAL_PRECISION:
            # NOTE: the replay's Arrow column is decimal256, which holds 76 digits at most.
            problems.append(
                f"the decimal {where} has precision {precision}; the replay's Arrow decimals "
                f"hold at most {_MAX_DECIMAL_PRECISION} digits"
            )

    def walk(t: Any, where: str) -> None:
        if isinstance(t, list):
            for branch in t:
                walk(branch, where)
        elif isinstance(t, dict):
            kind = t["type"]
            if kind == "array":
                walk(t["items"], where)
            elif kind == "map":
                walk(t["values"], where)
            elif kind == "bytes" and t.get("logicalType") == "decimal":
                check(t, where)

    for name, t in avro.named.items():
        if t["type"] == "fixed" and t.get("logicalType") == "decimal":
            check(t, f"{name} (a fixed)")
        for f in t.get("fields", []) if t["type"] in ("record", "error") else []:
            walk(f["type"], f"in field {f['name']!r} of {name}")
    if not isinstance(avro.root, str):
        walk(avro.root, "at the schema's root")
    return problems


def _records(schema: Any) -> list[Any]:
    """Every record schema inside ``schema``, each once."""
    import avro.schema

    out: list[Any] = []
    seen: set[int] = set()
    stack = [schema]
    while stack:
        s = stack.pop()
        if id(s) in seen:
            continue
        seen.add(id(s))
        if isinstance(s, avro.schema.RecordSchema):
            out.append(s)
            stack.extend(f.type for f in s.fields)
        elif isinstance(s, avro.schema.ArraySchema):
            stack.append(s.items)
        elif isinstance(s, avro.schema.MapSchema):
            stack.append(s.values)
        elif isinstance(s, avro.schema.UnionSchema):
            stack.extend(s.schemas)
    return out


_INT_RANGES = {"int": 2**31, "long": 2**63}


def _default_problem(schema: Any, value: Any, at: str) -> tuple[str, str] | None:
    """Where inside a default ``value`` (Avro's JSON form) it does not fit ``schema`` (``""``:
    the value itself, else a path such as ``owner.type`` or ``items[2]``) and what is wrong
    there, a sentence from its verb on; None when it fits.

    NOTE: a union's default is checked against the union's FIRST branch only. The Avro
    specification up to 1.11 requires it and Apache Avro's Java parser 1.9 to 1.11 refuses a
    schema that breaks it; 1.12 relaxed the rule to any branch, but a schema relying on that is
    refused by readers on earlier versions (and older resolvers read another value), while a
    first-branch default means the same to every reader. A record's default may leave out a
    field that has a default of its own.
    """
    import avro.schema

    if isinstance(schema, avro.schema.UnionSchema):
        first = schema.schemas[0]
        problem = _default_problem(first, value, at)
        if problem is None:
            return None
        where, what = problem
        if where == at:
            what += (
                f", the first branch of the union {_type_text(schema)}: readers on Avro before "
                "1.12 require a union's default to be of its first branch"
            )
        fits = next((b for b in schema.schemas[1:] if _default_problem(b, value, at) is None), None)
        if fits is not None:
            what += f" (put {_type_text(fits)} first in the union, or change the default)"
        return where, what
    kind = schema.type
    if kind in ("record", "error"):
        if not isinstance(value, dict):
            return at, f"is not a {schema.name} record (a JSON object)"
        for f in schema.fields:
            inner = f"{at}.{f.name}" if at else f.name
            if f.name in value:
                problem = _default_problem(f.type, value[f.name], inner)
                if problem is not None:
                    return problem
            elif not f.has_default:
                return at, f"lacks the field {f.name!r}, which has no default of its own"
        return None
    if kind in ("array", "map"):
        items = schema.items if kind == "array" else schema.values
        if kind == "array" and isinstance(value, list):
            pairs = [(f"{at}[{i}]", v) for i, v in enumerate(value)]
        elif kind == "map" and isinstance(value, dict):
            pairs = [(f"{at}[{k!r}]", v) for k, v in value.items()]
        else:
            shape = "a JSON list" if kind == "array" else "a JSON object"
            return at, f"is not {_type_text(schema)} ({shape})"
        for inner, item in pairs:
            problem = _default_problem(items, item, inner)
            if problem is not None:
                return problem
        return None
    if kind == "enum":
        if isinstance(value, str) and value in schema.symbols:
            return None
        return at, f"is not a symbol of {schema.name} ({', '.join(schema.symbols)})"
    if kind in ("bytes", "fixed"):
        # NOTE: Avro writes bytes and fixed defaults as text of code points 0-255, one per byte.
        size = schema.size if kind == "fixed" else None
        if (
            isinstance(value, str)
            and all(ord(c) < 256 for c in value)
            and (size is None or len(value) == size)
        ):
            return None
        what = f"{size} bytes" if size is not None else "bytes"
        return at, f"is not {what} (a JSON string of code points 0-255)"
    if kind in _INT_RANGES:
        limit = _INT_RANGES[kind]
        if isinstance(value, int) and not isinstance(value, bool) and -limit <= value < limit:
            return None
        return at, f"is not an {kind}"
    if kind in ("float", "double"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            why = number_problem(value, kind)
            return None if why is None else (at, f"is not a {kind}: {why}")
        return at, f"is not a {kind}"
    expected = {"null": type(None), "boolean": bool, "string": str}.get(kind)
    if expected is None or isinstance(value, expected):
        return None
    return at, "is not null" if kind == "null" else f"is not a {kind}"


def _value_text(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_text(schema: Any) -> str:
    """A type as a message shows it: its JSON form with named types by their full names."""
    import avro.schema

    def short(s: Any) -> Any:
        if isinstance(s, avro.schema.UnionSchema):
            return [short(b) for b in s.schemas]
        if isinstance(s, avro.schema.NamedSchema):
            return s.fullname
        if isinstance(s, avro.schema.ArraySchema):
            return {"type": "array", "items": short(s.items)}
        if isinstance(s, avro.schema.MapSchema):
            return {"type": "map", "values": short(s.values)}
        return s.to_json()

    text = json.dumps(short(schema))
    return text if len(text) <= 80 else text[:77] + "..."
