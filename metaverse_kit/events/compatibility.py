"""Whether a new schema version may follow the previous one under a group's compatibility mode.

The rules are Avro schema resolution, checked by the ``avro`` package's maintained checker
rather than written again here. Azure Schema Registry's modes mean:

- ``Backward``: readers on the new version can read what the previous version wrote;
- ``Forward``: readers still on the previous version can read what the new version writes;
- ``None``: anything goes.
"""

from __future__ import annotations

import json
from typing import Any

from metaverse_kit.errors import ConfigurationError, SchemaParseError
from metaverse_kit.events.avro import AvroSchema

__all__ = ["breaking_changes"]


def _parse(definition: str) -> Any:
    import avro.errors

    from metaverse_kit.events.strict import parse_with_avro_package

    try:
        # NOTE: without the logical types, which the checker does not compare: the avro package
        # warned of one it ignores (an error under ``-W error``), see events/strict.py.
        return parse_with_avro_package(json.loads(definition))
    except (avro.errors.AvroException, json.JSONDecodeError, TypeError, KeyError) as exc:
        raise SchemaParseError(f"Not a valid Avro schema: {exc}") from exc


def _pointer_to_path(schema: AvroSchema, pointer: str) -> str:
    """Turn the checker's JSON pointer (``/fields/2/type/fields/0``) into ``owners.type``."""
    parts = [p for p in pointer.split("/") if p]
    node: Any = schema.root
    names: list[str] = []
    i = 0
    while i < len(parts):
        node = schema.resolve(node)
        key = parts[i]
        if key == "fields" and i + 1 < len(parts) and isinstance(node, dict):
            field = node["fields"][int(parts[i + 1])]
            names.append(field["name"])
            node = field["type"]
            i += 2
            continue
        if isinstance(node, list) and key.isdigit():
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        elif key == "type":
            pass
        else:
            break
        i += 1
    return ".".join(names) or "<schema>"


def breaking_changes(new_definition: str, old_definition: str, mode: str) -> list[str]:
    """What stops ``new_definition`` from following ``old_definition`` under ``mode``.

    Returns one readable line per breaking field (empty when compatible). Raises
    :class:`ConfigurationError` for an unknown mode.
    """
    from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

    if mode == "None":
        return []
    if mode == "Backward":
        reader_text, writer_text = new_definition, old_definition
    elif mode == "Forward":
        reader_text, writer_text = old_definition, new_definition
    else:
        raise ConfigurationError(
            f"Unknown compatibility mode {mode!r}: use None, Backward or Forward"
        )
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        _parse(reader_text), _parse(writer_text)
    )
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    reader = AvroSchema(reader_text)
    paths = sorted({_pointer_to_path(reader, p) for p in result.locations})
    kinds = sorted({i.value for i in result.incompatibilities})
    details = sorted(result.messages)
    lines = [f"field {p}" for p in paths]
    lines.append(f"why: {', '.join(kinds)} ({'; '.join(str(d) for d in details)})")
    return lines
