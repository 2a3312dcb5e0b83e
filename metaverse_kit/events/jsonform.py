"""JSON forms of records: what stewards paste, load from files, and see in previews.

:func:`from_json` accepts, at every union in the schema, any of:

- Avro's JSON encoding, a branch wrapped by its type name: ``{"com.linkedin...DatasetSnapshot":
  {...}}``, ``{"string": "x"}`` (the form of DataHub's ``examples/mce_files/*.json``);
- a two-item list naming a record branch: ``["com.linkedin...DatasetSnapshot", {...}]``, the JSON
  spelling of fastavro's ``("full.Name", {...})`` tuple;
- a plain value or dict, settled later by validation (a dict only where one branch fits).

It returns the fastavro form that :meth:`Workspace.emit` takes. :func:`to_avro_json` writes
Avro's JSON encoding, which reads back through :func:`from_json` unchanged.
"""

from __future__ import annotations

from typing import Any

from metaverse_kit.events.avro import AvroSchema, dict_branches
from metaverse_kit.events.validation import check_type

__all__ = ["from_json", "to_avro_json"]


def _branch_names(avro: AvroSchema, branches: list) -> dict[str, Any]:
    """The branches of a union by full name, and by short name where only one has it."""
    fulls = {avro.branch_name(avro.resolve(b)): b for b in branches}
    shorts: dict[str, list[Any]] = {}
    for full, b in fulls.items():
        shorts.setdefault(full.rpartition(".")[2], []).append(b)
    # NOTE: a short name two branches share (a.X and b.X) names neither: picking the first
    # would put the value in a record of another namespace without a word.
    names = {short: bs[0] for short, bs in shorts.items() if len(bs) == 1}
    names.update(fulls)
    return names


def from_json(obj: Any, schema: AvroSchema | str | dict) -> Any:
    """Turn JSON data (parsed) into the fastavro form of a record of ``schema``.

    Nothing is validated here; call :func:`metaverse_kit.validate` (``emit`` does) for that.
    """
    avro = AvroSchema.of(schema)
    return _from(avro, obj, avro.root)


def _from(avro: AvroSchema, v: Any, t: Any) -> Any:
    t = avro.resolve(t)
    if isinstance(t, list):
        if v is None:
            return None
        names = _branch_names(avro, t)
        if isinstance(v, dict) and len(v) == 1:
            ((key, inner),) = v.items()
            if key in names:
                branch = names[key]
                value = _from(avro, inner, branch)
                if avro.kind(branch) == "record":
                    return (avro.branch_name(avro.resolve(branch)), value)
                return value
        if (
            isinstance(v, list)
            and len(v) == 2
            and isinstance(v[0], str)
            and v[0] in names
            and isinstance(v[1], dict)
            and avro.kind(names[v[0]]) == "record"
        ):
            branch = names[v[0]]
            return (avro.branch_name(avro.resolve(branch)), _from(avro, v[1], branch))
        if isinstance(v, dict):
            fits = [t[i] for i in dict_branches(avro, t, v)]
            if len(fits) == 1:
                value = _from(avro, v, fits[0])
                if avro.kind(fits[0]) == "record":
                    return (avro.branch_name(avro.resolve(fits[0])), value)
                return value
            return v
        for b in t:
            kind = avro.kind(b)
            if kind in ("bytes", "fixed") and isinstance(v, str) and "string" not in t:
                return _from(avro, v, b)
            if kind == "array" and isinstance(v, list):
                return _from(avro, v, b)
        return v
    kind = t if isinstance(t, str) else t["type"]
    if kind in ("record", "error") and isinstance(v, dict):
        fields = {f["name"]: f["type"] for f in t["fields"]}
        return {k: _from(avro, x, fields[k]) if k in fields else x for k, x in v.items()}
    if kind == "array" and isinstance(v, list):
        return [_from(avro, x, t["items"]) for x in v]
    if kind == "map" and isinstance(v, dict):
        return {k: _from(avro, x, t["values"]) for k, x in v.items()}
    if kind in ("bytes", "fixed") and isinstance(v, str):
        try:
            return v.encode("latin-1")
        except UnicodeEncodeError:
            return v  # validation reports it as not bytes
    return v


def to_avro_json(value: Any, schema: AvroSchema | str | dict) -> Any:
    """Write a record in Avro's JSON encoding (union branches wrapped by type name).

    Works on invalid records too, as far as they go, so a form can preview what it holds.
    """
    avro = AvroSchema.of(schema)
    explicit, _ = check_type(avro, value)
    return _to(avro, explicit, avro.root)


def _to(avro: AvroSchema, v: Any, t: Any) -> Any:
    t = avro.resolve(t)
    if isinstance(t, list):
        if v is None:
            return None
        if isinstance(v, tuple) and len(v) == 2:
            names = _branch_names(avro, t)
            branch = names.get(v[0])
            return {v[0]: _to(avro, v[1], branch) if branch is not None else v[1]}
        for b in t:
            if b == "null":
                continue
            if not check_type(avro, v, b)[1]:
                return {avro.branch_name(avro.resolve(b)): _to(avro, v, b)}
        return v
    kind = t if isinstance(t, str) else t["type"]
    if kind in ("record", "error") and isinstance(v, dict):
        fields = {f["name"]: f["type"] for f in t["fields"]}
        return {k: _to(avro, x, fields[k]) if k in fields else x for k, x in v.items()}
    if kind == "array" and isinstance(v, list):
        return [_to(avro, x, t["items"]) for x in v]
    if kind == "map" and isinstance(v, dict):
        return {k: _to(avro, x, t["values"]) for k, x in v.items()}
    if kind in ("bytes", "fixed") and isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("latin-1")
    return v
