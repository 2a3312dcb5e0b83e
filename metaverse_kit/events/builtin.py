"""The Avro schemas that ship with metaverse-kit, read from the package's ``schemas/`` folder.

Today there is one: ``MetadataChangeEvent.avsc``, a trimmed copy of DataHub's MCE schema that keeps
only the snapshots and aspects stewards set (datasets, users, groups, tags, glossary terms). Every
record it keeps is DataHub's own, field for field, so DataHub's schema can read what we write.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

__all__ = ["MCE_FULL_NAME", "builtin_schema_definitions", "mce_definition", "mce_schema"]

MCE_FULL_NAME = "com.linkedin.pegasus2avro.mxe.MetadataChangeEvent"

_SCHEMA_FILES = {MCE_FULL_NAME: "MetadataChangeEvent.avsc"}


@cache
def _definitions() -> dict[str, str]:
    folder = files("metaverse_kit.events").joinpath("schemas")
    out = {}
    for full_name, file_name in _SCHEMA_FILES.items():
        parsed = json.loads(folder.joinpath(file_name).read_text(encoding="utf-8"))
        # NOTE: the file is pretty-printed for review; the registry stores the compact form.
        out[full_name] = json.dumps(parsed, separators=(",", ":"))
    return out


def builtin_schema_definitions() -> dict[str, str]:
    """Return every built-in schema as ``{full name: compact JSON definition}``.

    The files are read once; the returned dict is a fresh copy, so changing it changes nothing else.
    """
    return dict(_definitions())


def mce_definition() -> str:
    """Return the built-in MetadataChangeEvent schema as compact JSON text."""
    return _definitions()[MCE_FULL_NAME]


def mce_schema() -> dict[str, Any]:
    """Return the built-in MetadataChangeEvent schema, parsed.

    Each call returns a new structure, so a caller that edits it cannot corrupt later calls.
    """
    # PERF: parsing the cached text is faster than copy.deepcopy of the parsed tree.
    return json.loads(mce_definition())
