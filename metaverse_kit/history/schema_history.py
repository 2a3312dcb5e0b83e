"""The column-level history of a dataset: fields added, removed and changed, version by version.

Like the technical-schema category of DataHub's timeline API: every write of a dataset's
``schemaMetadata`` that changed its fields is one version; each field change is an operation
(``ADD``, ``REMOVE``, ``MODIFY``) with a semantic-version effect: removing a field or changing
its type is ``MAJOR`` (readers break), adding one is ``MINOR``, a description is ``PATCH``.
The first schema is version ``0.0.0``; each later version bumps the largest effect among its
changes.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from metaverse_kit.history.questions import aspect_record, audit_trail

__all__ = ["SCHEMA_CHANGE_KINDS", "schema_changes"]

#: The kinds in the ``change`` column of :func:`schema_changes`, with their operation and effect.
SCHEMA_CHANGE_KINDS = {
    "added": ("ADD", "MINOR"),
    "removed": ("REMOVE", "MAJOR"),
    "type_changed": ("MODIFY", "MAJOR"),
    "nullability_changed": ("MODIFY", "MINOR"),
    "key_changed": ("MODIFY", "MAJOR"),
    "description_changed": ("MODIFY", "PATCH"),
}
_ORDER = {"NONE": 0, "PATCH": 1, "MINOR": 2, "MAJOR": 3}

_COLUMNS = [
    pa.field("urn", pa.string()),
    pa.field("version", pa.string()),
    pa.field("change_number", pa.int32()),
    pa.field("enqueued_time", pa.timestamp("ms", tz="UTC")),
    pa.field("operation", pa.string()),
    pa.field("change", pa.string()),
    pa.field("semver_change", pa.string()),
    pa.field("field_path", pa.string()),
    pa.field("before", pa.string()),
    pa.field("after", pa.string()),
    pa.field("description", pa.string()),
    pa.field("message_id", pa.string()),
]


def _type_text(field: dict[str, Any]) -> str:
    kind = ((field.get("type") or {}).get("type") or {}).get("branch") or "?"
    return f"{field.get('nativeDataType')} ({kind.rpartition('.')[2]})"


def _fields(value: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    record = aspect_record(value) or {}
    return {f["fieldPath"]: f for f in record.get("fields") or []}


def _diff(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> list[tuple[str, str, str | None, str | None, str]]:
    """(kind, field path, before, after, sentence) for each change from ``before`` to ``after``."""
    out: list[tuple[str, str, str | None, str | None, str]] = []
    for path, f in after.items():
        old = before.get(path)
        if old is None:
            out.append(
                (
                    "added",
                    path,
                    None,
                    _type_text(f),
                    f"A forwards and backwards compatible change: the field {path!r} was added.",
                )
            )
            continue
        if _type_text(old) != _type_text(f):
            out.append(
                (
                    "type_changed",
                    path,
                    _type_text(old),
                    _type_text(f),
                    f"A backwards incompatible change: the type of {path!r} changed.",
                )
            )
        if bool(old.get("nullable")) != bool(f.get("nullable")):
            out.append(
                (
                    "nullability_changed",
                    path,
                    str(bool(old.get("nullable"))),
                    str(bool(f.get("nullable"))),
                    f"The field {path!r} changed its nullability.",
                )
            )
        if bool(old.get("isPartOfKey")) != bool(f.get("isPartOfKey")):
            out.append(
                (
                    "key_changed",
                    path,
                    str(bool(old.get("isPartOfKey"))),
                    str(bool(f.get("isPartOfKey"))),
                    f"The field {path!r} joined or left the key.",
                )
            )
        if (old.get("description") or None) != (f.get("description") or None):
            out.append(
                (
                    "description_changed",
                    path,
                    old.get("description"),
                    f.get("description"),
                    f"The description of {path!r} changed.",
                )
            )
    for path, old in before.items():
        if path not in after:
            out.append(
                (
                    "removed",
                    path,
                    _type_text(old),
                    None,
                    f"A backwards incompatible change: the field {path!r} was removed.",
                )
            )
    return out


def _bump(version: tuple[int, int, int], effect: str) -> tuple[int, int, int]:
    major, minor, patch = version
    if effect == "MAJOR":
        return (major + 1, 0, 0)
    if effect == "MINOR":
        return (major, minor + 1, 0)
    if effect == "PATCH":
        return (major, minor, patch + 1)
    return version


def schema_changes(events: Any, urn: str) -> pa.Table:
    """Every change to the fields of dataset ``urn``'s schema, oldest first.

    ``events`` is what the history questions take (the table of ``ws.replay()``, an aspects
    table, a Parquet path). One row per field change: ``version`` (the semantic version the
    schema had after the write, ``0.0.0`` for the first), ``change_number`` (0 for the first
    schema, then 1, 2, ... for each write that changed fields), ``enqueued_time``,
    ``operation`` (``ADD``/``REMOVE``/``MODIFY``), ``change`` (see
    :data:`SCHEMA_CHANGE_KINDS`), ``semver_change`` (``MAJOR``/``MINOR``/``PATCH``),
    ``field_path``, ``before`` and ``after`` (the native and DataHub type, the flag or the
    description), a one-line ``description`` and the ``message_id`` of the event. Writes
    that changed no field add no row. A dataset without schema history gives an empty table.

    Raises :class:`~metaverse_kit.history.HistoryInputError` for a bad urn or input.
    """
    trail = audit_trail(events, urn, aspect="schemaMetadata")
    rows: list[dict[str, Any]] = []
    previous: dict[str, dict[str, Any]] | None = None
    version = (0, 0, 0)
    number = 0
    for value, when, message_id in zip(
        trail.column("value").to_pylist(),
        trail.column("enqueued_time").to_pylist(),
        trail.column("message_id").to_pylist(),
        strict=True,
    ):
        fields = _fields(value)
        changes = _diff(previous or {}, fields)
        if previous is not None and not changes:
            continue
        if previous is not None:
            effect = max((SCHEMA_CHANGE_KINDS[c[0]][1] for c in changes), key=_ORDER.__getitem__)
            version = _bump(version, effect)
            number += 1
        for kind, path, before, after, sentence in changes:
            operation, effect = SCHEMA_CHANGE_KINDS[kind]
            rows.append(
                {
                    "urn": urn,
                    "version": ".".join(map(str, version)),
                    "change_number": number,
                    "enqueued_time": when,
                    "operation": operation,
                    "change": kind,
                    "semver_change": effect if previous is not None else "NONE",
                    "field_path": path,
                    "before": before,
                    "after": after,
                    "description": sentence,
                    "message_id": message_id,
                }
            )
        previous = fields
    return pa.Table.from_pylist(rows, schema=pa.schema(_COLUMNS))
