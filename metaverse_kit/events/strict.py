"""Is a schema definition valid Avro? Asked of two real Avro parsers, in their strict modes.

A registry stores a definition only when it passes :func:`check_definition`:

* the ``avro`` package (the Apache implementation the compatibility checker already uses) parses
  it with ``validate_names`` and ``validate_enum_symbols``: names, namespaces and enum symbols,
  duplicate field names, a record without ``fields``, nested or duplicate union branches,
  ``order`` values; its own name rule (``avro.name.validate_basename``) is applied to field names,
  which its parser leaves unchecked;
* fastavro (the encoder that will write every event with it) parses it too: undefined or
  redefined named types, and defaults of the wrong primitive type;
* every field default whose JSON form is its datum form (no ``bytes``/``fixed``/records inside)
  is validated against its field's type with ``avro.io.validate``: an enum default that is not a
  symbol, a map default with values of the wrong type.

Problems come back as one :class:`SchemaParseError` whose message is the parser's own, prefixed
with what was being checked.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from metaverse_kit.errors import ConfigurationError, SchemaParseError
from metaverse_kit.events.avro import AvroSchema, parse_definition
from metaverse_kit.names import check_schema_name

__all__ = ["check_definition", "schema_name"]


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


@lru_cache(maxsize=256)
def _check(definition: str) -> None:
    import avro.errors
    import avro.name
    import avro.schema
    import fastavro

    parsed = parse_definition(definition)
    try:
        schema = avro.schema.parse(
            json.dumps(parsed), validate_enum_symbols=True, validate_names=True
        )
    except (avro.errors.AvroException, avro.errors.SchemaParseException) as exc:
        raise SchemaParseError(f"Not a valid Avro schema: {_reason(exc)}") from None
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        # NOTE: the avro package lets some malformed shapes escape as Python errors.
        raise SchemaParseError(f"Not a valid Avro schema: {type(exc).__name__}: {exc}") from None
    try:
        fastavro.parse_schema(parsed, _write_hint=False)
    except (fastavro.schema.SchemaParseException, fastavro.schema.UnknownType) as exc:
        raise SchemaParseError(f"Not a valid Avro schema: {exc}") from None
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise SchemaParseError(f"Not a valid Avro schema: {type(exc).__name__}: {exc}") from None
    for record in _records(schema):
        for field in record.fields:
            where = f"field {field.name!r} of {record.fullname}"
            try:
                avro.name.validate_basename(field.name)
            except avro.errors.InvalidName as exc:
                raise SchemaParseError(f"Not a valid Avro schema: {where}: {exc}") from None
            if field.has_default and _json_is_datum(field.type):
                import avro.io

                if not avro.io.validate(field.type, field.default):
                    raise SchemaParseError(
                        f"Not a valid Avro schema: the default {field.default!r} of {where} "
                        f"is not a {_type_text(field.type)}"
                    )


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


def _json_is_datum(schema: Any) -> bool:
    """True when a default's JSON form is also its Python datum (no bytes, fixed or records)."""
    import avro.schema

    if isinstance(schema, avro.schema.UnionSchema):
        return all(_json_is_datum(s) for s in schema.schemas)
    if isinstance(schema, avro.schema.ArraySchema):
        return _json_is_datum(schema.items)
    if isinstance(schema, avro.schema.MapSchema):
        return _json_is_datum(schema.values)
    return schema.type not in ("bytes", "fixed", "record", "error")


def _type_text(schema: Any) -> str:
    text = json.dumps(schema.to_json())
    return text if len(text) <= 80 else text[:77] + "..."
