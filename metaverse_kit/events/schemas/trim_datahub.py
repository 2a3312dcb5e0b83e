"""Write the built-in MCE schema files from DataHub's own, so they stay DataHub's record for record.

Run by hand when the built-in schema grows (the tests check that the files are what it writes)::

    python metaverse_kit/events/schemas/trim_datahub.py \
        .cache/acryl_datahub-1.7.0.17-py3-none-any.whl

Each version keeps some snapshots of DataHub's ``MetadataChangeEvent.avsc`` and some aspects of
each, in DataHub's order, with DataHub's definitions (docs and annotations included); a named
type whose first definition was trimmed away is defined where it is first used instead. Only
aspects DataHub's MCE carries are kept: ``SubTypes`` and ``Domains``, which DataHub sends only in
proposals (MCPs), are left out, so that DataHub's full MCE schema stays a Backward-compatible
next version of ours (a group can move to it, and it reads every event we write).

One deliberate difference, from version 2 on: a record without fields (``BooleanType``,
``Schemaless``...) gets one field, ``_present`` (boolean, default true). DataFusion's Avro reader,
which replay uses, cannot build a struct without fields and would send every event of the schema
to the slow path; DataHub's schema still reads our events (Avro resolution skips a field the
reader lacks) and ours reads DataHub's (the default fills it in).
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

_P = "com.linkedin.pegasus2avro."
_S = _P + "metadata.snapshot."
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_NAMED = {"record", "error", "enum", "fixed"}

#: The field a record without fields gets (see the module docstring).
PRESENT_FIELD = {
    "name": "_present",
    "type": "boolean",
    "default": True,
    "doc": "Not in DataHub's schema: DataFusion's Avro reader cannot read a record without "
    "fields. DataHub's schema skips it when reading; it defaults to true when this schema "
    "reads DataHub's bytes.",
}

_V1 = {
    _S + "CorpGroupSnapshot": ["metadata.key.CorpGroupKey", "identity.CorpGroupInfo"],
    _S + "CorpUserSnapshot": [
        "metadata.key.CorpUserKey",
        "identity.CorpUserInfo",
        "identity.CorpUserEditableInfo",
        "identity.GroupMembership",
    ],
    _S + "DatasetSnapshot": [
        "metadata.key.DatasetKey",
        "dataset.DatasetProperties",
        "dataset.EditableDatasetProperties",
        "dataset.DatasetDeprecation",
        "common.InstitutionalMemory",
        "common.Ownership",
    ],
    _S + "TagSnapshot": ["metadata.key.TagKey", "common.Ownership", "tag.TagProperties"],
    _S + "GlossaryTermSnapshot": [
        "metadata.key.GlossaryTermKey",
        "glossary.GlossaryTermInfo",
        "common.Ownership",
    ],
}
_COMMON = {
    _S + "CorpGroupSnapshot": ["common.GlobalTags", "common.Status"],
    _S + "CorpUserSnapshot": ["common.GlobalTags", "common.Status"],
    _S + "DatasetSnapshot": ["common.Status", "common.GlobalTags", "common.GlossaryTerms"],
    _S + "TagSnapshot": ["common.Status"],
    _S + "GlossaryTermSnapshot": ["common.Status"],
}

#: Per version: the aspects kept per snapshot (DataHub's order is kept whatever the order here),
#: the aspects appended from their own .avsc files, and whether empty records get a field.
VERSIONS: dict[int, dict[str, Any]] = {
    1: {
        "keep": {s: _V1[s] + _COMMON[s] for s in _V1},
        "append": {},
        "present_field": False,
        "file": "MetadataChangeEvent.v1.avsc",
    },
    2: {
        "keep": {
            **{s: _V1[s] + _COMMON[s] for s in _V1},
            _S + "DatasetSnapshot": _V1[_S + "DatasetSnapshot"]
            + _COMMON[_S + "DatasetSnapshot"]
            + [
                "dataset.UpstreamLineage",
                "schema.SchemaMetadata",
                "schema.EditableSchemaMetadata",
                "dataset.ViewProperties",
            ],
        },
        "append": {},
        "present_field": True,
        "file": "MetadataChangeEvent.avsc",
    },
}


def _full(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _index(t: Any, namespace: str | None, out: dict[str, dict]) -> None:
    """Every named type's first definition in ``t``, by full name."""
    if isinstance(t, list):
        for branch in t:
            _index(branch, namespace, out)
    elif isinstance(t, dict):
        kind = t.get("type")
        if kind in _NAMED:
            name = _full(t["name"], t.get("namespace", namespace))
            out.setdefault(name, t)
            for f in t.get("fields", []):
                _index(f["type"], name.rpartition(".")[0], out)
        elif kind == "array":
            _index(t["items"], namespace, out)
        elif kind == "map":
            _index(t["values"], namespace, out)


def trim(
    datahub_mce: dict,
    keep: dict[str, list[str]],
    append: dict[str, list[dict]],
    *,
    present_field: bool,
) -> dict:
    """DataHub's MCE schema with only the snapshots in ``keep`` and, in each, only its aspects.

    ``keep`` maps a snapshot's full name to aspect names relative to ``com.linkedin.pegasus2avro``;
    ``append`` maps a snapshot to aspect schemas added after DataHub's own.
    """
    definitions: dict[str, dict] = {}
    _index(datahub_mce, None, definitions)
    for extra in append.values():
        for schema in extra:
            _index(schema, None, definitions)
    kept = {s: {_P + a for a in aspects} for s, aspects in keep.items()}
    emitted: set[str] = set()

    def named(t: Any, namespace: str | None) -> str:
        return t if isinstance(t, str) else _full(t["name"], t.get("namespace", namespace))

    def emit(t: Any, namespace: str | None) -> Any:
        if isinstance(t, list):
            return [emit(b, namespace) for b in t]
        if isinstance(t, str):
            if t in _PRIMITIVES:
                return t
            name = _full(t, namespace)
            return t if name in emitted else emit(definitions[name], namespace)
        kind = t.get("type")
        if kind == "array":
            return {**t, "items": emit(t["items"], namespace)}
        if kind == "map":
            return {**t, "values": emit(t["values"], namespace)}
        if kind not in _NAMED:
            return t
        name = _full(t["name"], t.get("namespace", namespace))
        if name in emitted:
            return name
        emitted.add(name)
        if "fields" not in t:
            return dict(t)
        inner = name.rpartition(".")[0]
        fields = []
        for f in t["fields"]:
            ft = f["type"]
            if name.endswith(".mxe.MetadataChangeEvent") and f["name"] == "proposedSnapshot":
                ft = [emit(b, inner) for b in ft if named(b, inner) in kept]
            elif name in kept and f["name"] == "aspects":
                items = [emit(b, inner) for b in ft["items"] if named(b, inner) in kept[name]]
                items += [emit(b, inner) for b in append.get(name, [])]
                ft = {**ft, "items": items}
            else:
                ft = emit(ft, inner)
            fields.append({**f, "type": ft})
        if not fields and present_field:
            fields = [dict(PRESENT_FIELD)]
        return {**t, "fields": fields}

    return emit(datahub_mce, None)


def schema_texts(wheel: str | Path) -> dict[str, str]:
    """The text of every built-in MCE schema file, by file name, written from DataHub's wheel."""
    with zipfile.ZipFile(wheel) as zf:

        def load(name: str) -> Any:
            return json.loads(zf.read(f"datahub/metadata/schemas/{name}.avsc"))

        mce = load("MetadataChangeEvent")
        out = {}
        for spec in VERSIONS.values():
            append = {s: [load(n) for n in names] for s, names in spec["append"].items()}
            schema = trim(mce, spec["keep"], append, present_field=spec["present_field"])
            out[spec["file"]] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
        return out


def main(argv: list[str] | None = None) -> int:
    """Write the schema files next to this script from the DataHub wheel named in ``argv``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    folder = Path(__file__).resolve().parent
    for name, text in schema_texts(args[0]).items():
        (folder / name).write_text(text, encoding="utf-8")
        print(f"wrote {folder / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
