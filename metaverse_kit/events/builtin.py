"""The Avro schemas that ship with metaverse-kit, read from the package's ``schemas/`` folder.

Today there is one schema, the MetadataChangeEvent, in two versions: a trimmed copy of DataHub's
MCE schema that keeps the snapshots and aspects stewards set (datasets, users, groups, tags,
glossary terms) and, from version 2 on, what sources report about datasets (SchemaMetadata,
EditableSchemaMetadata, UpstreamLineage, ViewProperties). Every record is
DataHub's own, field for field (see ``schemas/trim_datahub.py``, which writes the files from
DataHub's wheel, for the one deliberate difference), so DataHub's schema can read what we write.
Each version can read what the previous one wrote (the registry's Backward compatibility).
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from metaverse_kit.errors import SchemaNotFoundError

__all__ = [
    "MCE_FULL_NAME",
    "builtin_schema_definitions",
    "mce_definition",
    "mce_schema",
    "mce_versions",
]

MCE_FULL_NAME = "com.linkedin.pegasus2avro.mxe.MetadataChangeEvent"

#: Per built-in schema, its files oldest version first; the last one is the current version.
_SCHEMA_FILES = {MCE_FULL_NAME: ("MetadataChangeEvent.v1.avsc", "MetadataChangeEvent.avsc")}


@cache
def _definitions() -> dict[str, tuple[str, ...]]:
    folder = files("metaverse_kit.events").joinpath("schemas")
    out = {}
    for full_name, file_names in _SCHEMA_FILES.items():
        versions = []
        for file_name in file_names:
            parsed = json.loads(folder.joinpath(file_name).read_text(encoding="utf-8"))
            # NOTE: the files are pretty-printed for review; the registry stores the compact form.
            versions.append(json.dumps(parsed, separators=(",", ":")))
        out[full_name] = tuple(versions)
    return out


def builtin_schema_definitions() -> dict[str, str]:
    """Return the current version of every built-in schema as ``{full name: compact JSON}``.

    The files are read once; the returned dict is a fresh copy, so changing it changes nothing else.
    """
    return {name: versions[-1] for name, versions in _definitions().items()}


def mce_versions() -> tuple[int, ...]:
    """The versions of the built-in MetadataChangeEvent schema, oldest first (``(1, 2)``)."""
    return tuple(range(1, len(_definitions()[MCE_FULL_NAME]) + 1))


def mce_definition(version: int | None = None) -> str:
    """Return the built-in MetadataChangeEvent schema as compact JSON text.

    ``version`` (1, 2, ...; default: the current one) picks an earlier version, for instance
    to check that events written with it still replay. Raises :class:`SchemaNotFoundError` for
    a version that does not exist.
    """
    versions = _definitions()[MCE_FULL_NAME]
    if version is None:
        return versions[-1]
    if (
        isinstance(version, bool)
        or not isinstance(version, int)
        or not 1 <= version <= len(versions)
    ):
        raise SchemaNotFoundError(
            f"The built-in MetadataChangeEvent schema has versions 1 to {len(versions)}, "
            f"not {version!r}"
        )
    return versions[version - 1]


def mce_schema(version: int | None = None) -> dict[str, Any]:
    """Return the built-in MetadataChangeEvent schema, parsed (``version`` as in mce_definition).

    Each call returns a new structure, so a caller that edits it cannot corrupt later calls.
    """
    # PERF: parsing the cached text is faster than copy.deepcopy of the parsed tree.
    return json.loads(mce_definition(version))
