"""Small builders for the aspects stewards set, and for the MetadataChangeEvent that carries them.

Everything here returns plain data in the form fastavro reads and writes with
``return_record_name=True``:

* a record that is a branch of a union (an aspect in a snapshot, the snapshot in the MCE, a
  nullable record such as ``systemMetadata``) is a ``("full.Name", {...})`` tuple;
* every record dict carries all of its fields, with DataHub's defaults filled in;
* a nullable primitive is the plain value or ``None``.

So what a builder returns is exactly what reading the encoded event back gives.

Names or URNs: wherever a user, group, tag or glossary term is expected, a plain name is turned into
a URN with the ``make_*_urn`` builders of :mod:`metaverse_kit.events.urns`, and a URN of the right
type is taken as it is. Builders raise :class:`~metaverse_kit.errors.ValidationError` listing every
bad argument, each with its field path (``owners[1].type``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from types import MappingProxyType
from typing import Any

from metaverse_kit.errors import FieldProblem, MetaverseError, ValidationError
from metaverse_kit.events.builtin import mce_schema
from metaverse_kit.events.urns import (
    InvalidUrnError,
    make_data_platform_urn,
    make_glossary_node_urn,
    make_group_urn,
    make_tag_urn,
    make_term_urn,
    make_user_urn,
    parse_dataset_urn,
    parse_urn,
    snapshot_for_urn,
)

__all__ = [
    "ASPECT_NAMES",
    "DEFAULT_ACTOR",
    "DEFAULT_OWNERSHIP_TYPE",
    "DEPRECATED_OWNERSHIP_TYPES",
    "FIELD_TYPES",
    "LINEAGE_TYPES",
    "OWNERSHIP_TYPES",
    "STATUS_TYPE",
    "UNKNOWN_STAMP",
    "Aspect",
    "UnknownAspectError",
    "allowed_aspects",
    "aspect_name",
    "corp_group_info",
    "corp_user_info",
    "dataset_deprecation",
    "dataset_properties",
    "editable_dataset_properties",
    "editable_schema_metadata",
    "example_mce",
    "global_tags",
    "glossary_term_info",
    "glossary_terms",
    "group_membership",
    "institutional_memory",
    "mce",
    "ownership",
    "schema_field",
    "schema_metadata",
    "status",
    "system_metadata",
    "tag_properties",
    "upstream_lineage",
    "view_properties",
]

#: An aspect as it sits in a snapshot's ``aspects`` union: ``("full.Name", {...all fields...})``.
Aspect = tuple[str, dict[str, Any]]

_P = "com.linkedin.pegasus2avro."

#: The Avro full name of the Status aspect, whose ``removed=True`` is a soft delete.
STATUS_TYPE = _P + "common.Status"

#: Aspect record full name -> DataHub's aspect name, for every aspect the built-in MCE schema has.
ASPECT_NAMES: Mapping[str, str] = MappingProxyType(
    {
        _P + "metadata.key.DatasetKey": "datasetKey",
        _P + "dataset.DatasetProperties": "datasetProperties",
        _P + "dataset.EditableDatasetProperties": "editableDatasetProperties",
        _P + "dataset.DatasetDeprecation": "datasetDeprecation",
        _P + "common.InstitutionalMemory": "institutionalMemory",
        _P + "common.Ownership": "ownership",
        _P + "common.Status": "status",
        _P + "common.GlobalTags": "globalTags",
        _P + "common.GlossaryTerms": "glossaryTerms",
        _P + "metadata.key.CorpUserKey": "corpUserKey",
        _P + "identity.CorpUserInfo": "corpUserInfo",
        _P + "identity.CorpUserEditableInfo": "corpUserEditableInfo",
        _P + "identity.GroupMembership": "groupMembership",
        _P + "metadata.key.CorpGroupKey": "corpGroupKey",
        _P + "identity.CorpGroupInfo": "corpGroupInfo",
        _P + "metadata.key.TagKey": "tagKey",
        _P + "tag.TagProperties": "tagProperties",
        _P + "metadata.key.GlossaryTermKey": "glossaryTermKey",
        _P + "glossary.GlossaryTermInfo": "glossaryTermInfo",
        _P + "dataset.UpstreamLineage": "upstreamLineage",
        _P + "schema.SchemaMetadata": "schemaMetadata",
        _P + "schema.EditableSchemaMetadata": "editableSchemaMetadata",
        _P + "dataset.ViewProperties": "viewProperties",
    }
)

#: DataHub's field types (``SchemaFieldDataType.type``), by the short name the builders take.
FIELD_TYPES = (
    "BooleanType",
    "FixedType",
    "StringType",
    "BytesType",
    "NumberType",
    "DateType",
    "TimeType",
    "EnumType",
    "NullType",
    "MapType",
    "ArrayType",
    "UnionType",
    "RecordType",
)

#: The symbols of DataHub's ``DatasetLineageType``.
LINEAGE_TYPES = ("COPY", "TRANSFORMED", "VIEW")

#: The symbols of DataHub's ``OwnershipType`` enum, in its order.
OWNERSHIP_TYPES = (
    "CUSTOM",
    "TECHNICAL_OWNER",
    "BUSINESS_OWNER",
    "DATA_STEWARD",
    "NONE",
    "DEVELOPER",
    "DATAOWNER",
    "DELEGATE",
    "PRODUCER",
    "CONSUMER",
    "STAKEHOLDER",
)
#: Symbols DataHub marks deprecated; still accepted, as DataHub still reads them.
DEPRECATED_OWNERSHIP_TYPES = frozenset(
    {"DEVELOPER", "DATAOWNER", "DELEGATE", "PRODUCER", "CONSUMER", "STAKEHOLDER"}
)
#: DataHub's SDK default; the older ``DATAOWNER`` default of ``mce_builder`` is deprecated.
DEFAULT_OWNERSHIP_TYPE = "TECHNICAL_OWNER"

DEFAULT_ACTOR = "urn:li:corpuser:datahub"

_TERM_SOURCES = ("INTERNAL", "EXTERNAL")
_NO_RUN_ID = "no-run-id-provided"
_SYSTEM_METADATA = _P + "mxe.SystemMetadata"


class UnknownAspectError(MetaverseError, LookupError):
    """A name is not the full name of an aspect record in the built-in MCE schema."""


class _Problems:
    """Collects every problem in a builder's arguments, so the error lists them all at once."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.items: list[FieldProblem] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(FieldProblem(path, message))

    def urn(self, path: str, make: Callable[[str], str], value: Any) -> str:
        try:
            return make(value)
        except InvalidUrnError as exc:
            self.add(path, str(exc))
            return value

    def text(self, path: str, value: Any, *, optional: bool = True) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            self.add(path, f"expected text{' or None' if optional else ''}, got {value!r}")
        return value

    def millis(self, path: str, value: Any, *, now: bool) -> int | None:
        if value is None:
            return int(time.time() * 1000) if now else None
        # NOTE: bool is an int subclass; True as a timestamp is always a mistake.
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(path, f"expected epoch milliseconds as an int, got {value!r}")
        return value

    def string_map(self, path: str, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(path, f"expected a mapping of text to text, got {value!r}")
            return {}
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str):
                self.add(f"{path}[{key!r}]", f"keys and values must be text, got {item!r}")
        return dict(value)

    def items_of(self, path: str, value: Any) -> list[Any]:
        # A lone string is one item, not a sequence of characters.
        if isinstance(value, str):
            return [value]
        if not isinstance(value, Iterable):
            self.add(path, f"expected a list, got {value!r}")
            return []
        return list(value)

    def check(self) -> None:
        if self.items:
            raise ValidationError(self.items, what=self.what)


def _stamp(problems: _Problems, path: str, actor: Any, time_ms: Any) -> dict[str, Any]:
    return {
        "time": problems.millis(f"{path}.time", time_ms, now=True),
        "actor": problems.urn(f"{path}.actor", make_user_urn, actor),
        "impersonator": None,
        "message": None,
    }


def _owner_urn(value: Any) -> str:
    if isinstance(value, str) and value.startswith("urn:li:"):
        entity_type = parse_urn(value).entity_type
        if entity_type == "corpGroup":
            return make_group_urn(value)
        if entity_type != "corpuser":
            raise InvalidUrnError(
                f"An owner is a user or a group ('urn:li:corpuser:...' or 'urn:li:corpGroup:...'), "
                f"got a {entity_type!r} URN: {value!r}."
            )
    return make_user_urn(value)


def _ownership_type(problems: _Problems, path: str, value: Any) -> tuple[str, str | None]:
    if isinstance(value, str) and value.startswith("urn:li:"):
        # A custom ownership type entity: DataHub stores it as CUSTOM plus the type's URN.
        try:
            parsed = parse_urn(value)
        except InvalidUrnError as exc:
            problems.add(path, str(exc))
            return value, None
        if parsed.entity_type != "ownershipType" or len(parsed.parts) != 1:
            problems.add(
                path,
                f"expected an ownership type or an 'urn:li:ownershipType:...' URN, got {value!r}",
            )
        return "CUSTOM", value
    symbol = value.upper() if isinstance(value, str) else value
    if symbol not in OWNERSHIP_TYPES:
        current = [t for t in OWNERSHIP_TYPES if t not in DEPRECATED_OWNERSHIP_TYPES]
        deprecated = [t for t in OWNERSHIP_TYPES if t in DEPRECATED_OWNERSHIP_TYPES]
        problems.add(
            path,
            f"{value!r} is not an ownership type; use one of {', '.join(current)} "
            f"(deprecated but accepted: {', '.join(deprecated)}) or an 'urn:li:ownershipType:...'",
        )
    return symbol, None


def ownership(
    owners: Iterable[str | tuple[str, str]] | str,
    *,
    actor: str = DEFAULT_ACTOR,
    time_ms: int | None = None,
) -> Aspect:
    """Build an Ownership aspect.

    Each owner is a user name, a ``urn:li:corpuser:``/``urn:li:corpGroup:`` URN, or an
    ``(owner, type)`` pair. ``type`` is an ``OwnershipType`` symbol (case-insensitive; default
    :data:`DEFAULT_OWNERSHIP_TYPE`) or an ``urn:li:ownershipType:...`` URN, which DataHub stores as
    ``CUSTOM`` with ``typeUrn`` set. ``actor`` and ``time_ms`` (default: now) stamp
    ``lastModified``. Raises :class:`ValidationError` listing every bad owner.
    """
    problems = _Problems("Ownership aspect")
    entries = []
    for i, item in enumerate(problems.items_of("owners", owners)):
        path = f"owners[{i}]"
        if isinstance(item, str):
            who, kind = item, DEFAULT_OWNERSHIP_TYPE
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            who, kind = item
        else:
            problems.add(
                path, f"expected an owner (name or URN) or an (owner, type) pair, got {item!r}"
            )
            continue
        owner = problems.urn(f"{path}.owner", _owner_urn, who)
        symbol, type_urn = _ownership_type(problems, f"{path}.type", kind)
        entries.append(
            {
                "owner": owner,
                "type": symbol,
                "typeUrn": type_urn,
                "source": None,
                "attribution": None,
            }
        )
    stamp = _stamp(problems, "lastModified", actor, time_ms)
    problems.check()
    return (_P + "common.Ownership", {"owners": entries, "ownerTypes": {}, "lastModified": stamp})


def global_tags(tags: Iterable[str] | str) -> Aspect:
    """Build a GlobalTags aspect from tag names or ``urn:li:tag:`` URNs.

    Raises :class:`ValidationError` listing every value that is not a tag.
    """
    problems = _Problems("GlobalTags aspect")
    entries = [
        {
            "tag": problems.urn(f"tags[{i}].tag", make_tag_urn, tag),
            "context": None,
            "attribution": None,
        }
        for i, tag in enumerate(problems.items_of("tags", tags))
    ]
    problems.check()
    return (_P + "common.GlobalTags", {"tags": entries})


def glossary_terms(
    terms: Iterable[str] | str, *, actor: str = DEFAULT_ACTOR, time_ms: int | None = None
) -> Aspect:
    """Build a GlossaryTerms aspect from term names or ``urn:li:glossaryTerm:`` URNs.

    ``actor`` and ``time_ms`` (default: now) stamp ``auditStamp``. Raises
    :class:`ValidationError` listing every bad value.
    """
    problems = _Problems("GlossaryTerms aspect")
    entries = [
        {
            "urn": problems.urn(f"terms[{i}].urn", make_term_urn, term),
            "actor": None,
            "context": None,
            "attribution": None,
        }
        for i, term in enumerate(problems.items_of("terms", terms))
    ]
    stamp = _stamp(problems, "auditStamp", actor, time_ms)
    problems.check()
    return (_P + "common.GlossaryTerms", {"terms": entries, "auditStamp": stamp})


def editable_dataset_properties(
    description: str | None,
    *,
    name: str | None = None,
    actor: str = DEFAULT_ACTOR,
    time_ms: int | None = None,
) -> Aspect:
    """Build an EditableDatasetProperties aspect: the description (and display name) set in the UI.

    ``actor`` and ``time_ms`` (default: now) stamp both ``created`` and ``lastModified``.
    Raises :class:`ValidationError` listing every bad argument.
    """
    problems = _Problems("EditableDatasetProperties aspect")
    stamp = _stamp(problems, "lastModified", actor, time_ms)
    value = {
        "created": dict(stamp),
        "lastModified": stamp,
        "deleted": None,
        "description": problems.text("description", description),
        "name": problems.text("name", name),
    }
    problems.check()
    return (_P + "dataset.EditableDatasetProperties", value)


def status(removed: bool) -> Aspect:
    """Build a Status aspect; ``removed=True`` soft-deletes the entity."""
    problems = _Problems("Status aspect")
    if not isinstance(removed, bool):
        problems.add("removed", f"expected True or False, got {removed!r}")
    problems.check()
    value = {"removed": removed, "lifecycleStage": None, "lifecycleLastUpdated": None}
    return (STATUS_TYPE, value)


def institutional_memory(
    links: Iterable[tuple[str, str]],
    *,
    actor: str = DEFAULT_ACTOR,
    time_ms: int | None = None,
) -> Aspect:
    """Build an InstitutionalMemory aspect from ``(url, description)`` pairs (the "Documents" tab).

    ``actor`` and ``time_ms`` (default: now) stamp each link's ``createStamp``. Raises
    :class:`ValidationError` listing every bad link.
    """
    problems = _Problems("InstitutionalMemory aspect")
    elements = []
    for i, link in enumerate(problems.items_of("elements", links)):
        path = f"elements[{i}]"
        if isinstance(link, str) or not isinstance(link, (tuple, list)) or len(link) != 2:
            problems.add(path, f"expected a (url, description) pair, got {link!r}")
            continue
        url, description = link
        if not isinstance(url, str) or not url:
            problems.add(f"{path}.url", f"expected a non-empty URL, got {url!r}")
        elements.append(
            {
                "url": url,
                "description": problems.text(f"{path}.description", description, optional=False),
                "createStamp": _stamp(problems, f"{path}.createStamp", actor, time_ms),
                "updateStamp": None,
                "settings": None,
            }
        )
    problems.check()
    return (_P + "common.InstitutionalMemory", {"elements": elements})


def dataset_deprecation(
    deprecated: bool,
    *,
    note: str = "",
    decommission_time: int | None = None,
    actor: str | None = DEFAULT_ACTOR,
) -> Aspect:
    """Build a DatasetDeprecation aspect.

    ``decommission_time`` is the planned decommission time in epoch milliseconds; ``actor`` (a
    user name or URN, or None) is credited with the change. Raises :class:`ValidationError`.
    """
    problems = _Problems("DatasetDeprecation aspect")
    if not isinstance(deprecated, bool):
        problems.add("deprecated", f"expected True or False, got {deprecated!r}")
    value = {
        "deprecated": deprecated,
        "decommissionTime": problems.millis("decommissionTime", decommission_time, now=False),
        "note": problems.text("note", note, optional=False),
        "actor": None if actor is None else problems.urn("actor", make_user_urn, actor),
    }
    problems.check()
    return (_P + "dataset.DatasetDeprecation", value)


def _time_stamp(problems: _Problems, path: str, time_ms: int | None) -> Aspect | None:
    if time_ms is None:
        return None
    value = {"time": problems.millis(f"{path}.time", time_ms, now=False), "actor": None}
    return (_P + "common.TimeStamp", value)


def dataset_properties(
    *,
    name: str | None = None,
    description: str | None = None,
    custom_properties: Mapping[str, str] | None = None,
    external_url: str | None = None,
    qualified_name: str | None = None,
    uri: str | None = None,
    created_ms: int | None = None,
    last_modified_ms: int | None = None,
    tags: Iterable[str] = (),
) -> Aspect:
    """Build a DatasetProperties aspect (the properties a source system reports).

    ``created_ms``/``last_modified_ms`` are epoch milliseconds; ``tags`` is DataHub's legacy list
    of free-text tags (use :func:`global_tags` for real tags). Raises :class:`ValidationError`.
    """
    problems = _Problems("DatasetProperties aspect")
    value = {
        "customProperties": problems.string_map("customProperties", custom_properties),
        "externalUrl": problems.text("externalUrl", external_url),
        "name": problems.text("name", name),
        "qualifiedName": problems.text("qualifiedName", qualified_name),
        "description": problems.text("description", description),
        "uri": problems.text("uri", uri),
        "created": _time_stamp(problems, "created", created_ms),
        "lastModified": _time_stamp(problems, "lastModified", last_modified_ms),
        "tags": [
            problems.text(f"tags[{i}]", t, optional=False)
            for i, t in enumerate(problems.items_of("tags", tags))
        ],
    }
    problems.check()
    return (_P + "dataset.DatasetProperties", value)


# -- schema, lineage, views (what sources report) ----------------------------------------------

#: DataHub's default audit stamp (``created`` of SchemaMetadata, ``auditStamp`` of Upstream):
#: sources keep it, so what they report does not change from one run to the next by itself.
UNKNOWN_STAMP: Mapping[str, Any] = MappingProxyType(
    {"time": 0, "actor": "urn:li:corpuser:unknown", "impersonator": None, "message": None}
)
_FIELD_TYPE_ALIASES = {t.removesuffix("Type").lower(): t for t in FIELD_TYPES}


def _field_type(
    problems: _Problems, path: str, value: Any, nested: Sequence[str] | None
) -> dict[str, Any]:
    name = value if value in FIELD_TYPES else _FIELD_TYPE_ALIASES.get(str(value).lower())
    if name is None:
        problems.add(
            path,
            f"{value!r} is not a DataHub field type; use one of {', '.join(FIELD_TYPES)} "
            f"(or the same without 'Type', any case)",
        )
        name = "NullType"
    items = [str(n) for n in nested] if nested is not None else None
    if name == "ArrayType":
        record: dict[str, Any] = {"nestedType": items}
    elif name == "UnionType":
        record = {"nestedTypes": items}
    elif name == "MapType":
        key, val = ([*items, None, None])[:2] if items else (None, None)
        record = {"keyType": key, "valueType": val}
    else:
        record = {"_present": True}
    return {"type": (_P + "schema." + name, record)}


def schema_field(
    field_path: str,
    field_type: str,
    *,
    native_type: str,
    nullable: bool = True,
    description: str | None = None,
    is_part_of_key: bool = False,
    is_partitioning_key: bool | None = None,
    nested: Sequence[str] | None = None,
    tags: Iterable[str] = (),
    json_props: str | None = None,
) -> dict[str, Any]:
    """Build one SchemaField record (a column) for :func:`schema_metadata`.

    ``field_type`` is one of :data:`FIELD_TYPES` (``"NumberType"``, or ``"number"``);
    ``native_type`` is the type as the source names it (``"VARCHAR(20)"``, ``"int64"``).
    ``nested`` names the item types of an ``ArrayType`` or ``UnionType`` and the key and value
    types of a ``MapType``. ``tags`` (names or ``urn:li:tag:`` URNs) become the field's
    ``globalTags``. Raises :class:`ValidationError` listing every bad argument.
    """
    problems = _Problems("SchemaField record")
    if not isinstance(field_path, str) or not field_path:
        problems.add("fieldPath", f"expected a non-empty field path, got {field_path!r}")
    for key, flag in (("nullable", nullable), ("isPartOfKey", is_part_of_key)):
        if not isinstance(flag, bool):
            problems.add(key, f"expected True or False, got {flag!r}")
    if is_partitioning_key is not None and not isinstance(is_partitioning_key, bool):
        problems.add(
            "isPartitioningKey", f"expected True, False or None, got {is_partitioning_key!r}"
        )
    tag_list = [
        {
            "tag": problems.urn(f"globalTags.tags[{i}].tag", make_tag_urn, t),
            "context": None,
            "attribution": None,
        }
        for i, t in enumerate(problems.items_of("globalTags.tags", tags))
    ]
    value = {
        "fieldPath": field_path,
        "jsonPath": None,
        "nullable": nullable,
        "description": problems.text("description", description),
        "label": None,
        "created": None,
        "lastModified": None,
        "type": _field_type(problems, "type", field_type, nested),
        "nativeDataType": problems.text("nativeDataType", native_type, optional=False),
        "recursive": False,
        "globalTags": (_P + "common.GlobalTags", {"tags": tag_list}) if tag_list else None,
        "glossaryTerms": None,
        "isPartOfKey": is_part_of_key,
        "isPartitioningKey": is_partitioning_key,
        "jsonProps": problems.text("jsonProps", json_props),
    }
    problems.check()
    return value


#: The records ``schema_metadata(platform_schema=...)`` takes by short name, with their field.
_PLATFORM_SCHEMAS = {
    "OtherSchema": "rawSchema",
    "MySqlDDL": "tableSchema",
    "OracleDDL": "tableSchema",
    "PrestoDDL": "rawSchema",
    "OrcSchema": "schema",
    "BinaryJsonSchema": "schema",
}


def schema_metadata(
    schema_name: str,
    fields: Iterable[Mapping[str, Any]],
    *,
    platform: str,
    version: int = 0,
    primary_keys: Sequence[str] | None = None,
    raw_schema: str = "",
    schema_kind: str = "OtherSchema",
    hash: str = "",
) -> Aspect:
    """Build a SchemaMetadata aspect: the columns of a dataset, as its source reports them.

    ``fields`` are :func:`schema_field` records; ``platform`` a platform name or URN;
    ``raw_schema`` the schema's text as the platform has it (a DDL statement, an Avro or
    Arrow schema), kept in a ``schema_kind`` record (``OtherSchema``, ``MySqlDDL``, ...).
    ``created`` and ``lastModified`` keep DataHub's default stamp, so the same columns give
    the same aspect. Raises :class:`ValidationError` listing every bad argument (a field path
    used twice, a primary key that is not a field).
    """
    problems = _Problems("SchemaMetadata aspect")
    if not isinstance(schema_name, str) or not schema_name:
        problems.add("schemaName", f"expected a non-empty schema name, got {schema_name!r}")
    items = []
    seen: set[str] = set()
    for i, f in enumerate(problems.items_of("fields", fields)):
        if not isinstance(f, Mapping) or "fieldPath" not in f:
            problems.add(f"fields[{i}]", f"expected a schema_field(...) record, got {f!r:.60}")
            continue
        if f["fieldPath"] in seen:
            problems.add(f"fields[{i}].fieldPath", f"{f['fieldPath']!r} appears more than once")
        seen.add(f["fieldPath"])
        items.append(dict(f))
    keys = None if primary_keys is None else problems.items_of("primaryKeys", primary_keys)
    for i, key in enumerate(keys or []):
        if key not in seen:
            problems.add(f"primaryKeys[{i}]", f"{key!r} is not one of the fields")
    if isinstance(version, bool) or not isinstance(version, int):
        problems.add("version", f"expected an int, got {version!r}")
    if schema_kind not in _PLATFORM_SCHEMAS:
        problems.add(
            "platformSchema", f"expected one of {', '.join(_PLATFORM_SCHEMAS)}, got {schema_kind!r}"
        )
        schema_kind = "OtherSchema"
    value = {
        "schemaName": schema_name,
        "platform": problems.urn("platform", make_data_platform_urn, platform),
        "version": version,
        "created": dict(UNKNOWN_STAMP),
        "lastModified": dict(UNKNOWN_STAMP),
        "deleted": None,
        "dataset": None,
        "cluster": None,
        "hash": problems.text("hash", hash, optional=False),
        "platformSchema": (
            _P + "schema." + schema_kind,
            {
                _PLATFORM_SCHEMAS[schema_kind]: problems.text(
                    "rawSchema", raw_schema, optional=False
                )
            },
        ),
        "fields": items,
        "primaryKeys": None if keys is None else list(keys),
        "foreignKeysSpecs": None,
        "foreignKeys": None,
    }
    problems.check()
    return (_P + "schema.SchemaMetadata", value)


def editable_schema_metadata(
    fields: Mapping[str, Mapping[str, Any]],
    *,
    actor: str = DEFAULT_ACTOR,
    time_ms: int | None = None,
) -> Aspect:
    """Build an EditableSchemaMetadata aspect: what stewards say about columns.

    ``fields`` maps a field path to ``{"description": ..., "tags": [...], "terms": [...]}``
    (each key optional). ``actor`` and ``time_ms`` (default: now) stamp the aspect and each
    field's terms. Raises :class:`ValidationError` listing every bad argument.
    """
    problems = _Problems("EditableSchemaMetadata aspect")
    stamp = _stamp(problems, "lastModified", actor, time_ms)
    infos = []
    if not isinstance(fields, Mapping):
        problems.add(
            "editableSchemaFieldInfo", f"expected a mapping of field paths, got {fields!r}"
        )
        fields = {}
    for i, (path, spec) in enumerate(fields.items()):
        where = f"editableSchemaFieldInfo[{i}]"
        if not isinstance(path, str) or not path:
            problems.add(f"{where}.fieldPath", f"expected a field path, got {path!r}")
        spec = spec if isinstance(spec, Mapping) else {}
        unknown = sorted(set(spec) - {"description", "tags", "terms"})
        if unknown:
            problems.add(where, f"unknown keys {unknown}; use description, tags, terms")
        tags = [
            {
                "tag": problems.urn(f"{where}.globalTags.tags[{j}].tag", make_tag_urn, t),
                "context": None,
                "attribution": None,
            }
            for j, t in enumerate(problems.items_of(f"{where}.globalTags", spec.get("tags", ())))
        ]
        terms = [
            {
                "urn": problems.urn(f"{where}.glossaryTerms.terms[{j}].urn", make_term_urn, t),
                "actor": None,
                "context": None,
                "attribution": None,
            }
            for j, t in enumerate(
                problems.items_of(f"{where}.glossaryTerms", spec.get("terms", ()))
            )
        ]
        infos.append(
            {
                "fieldPath": path,
                "description": problems.text(f"{where}.description", spec.get("description")),
                "globalTags": (_P + "common.GlobalTags", {"tags": tags}) if tags else None,
                "glossaryTerms": (
                    (_P + "common.GlossaryTerms", {"terms": terms, "auditStamp": dict(stamp)})
                    if terms
                    else None
                ),
            }
        )
    problems.check()
    value = {
        "created": dict(stamp),
        "lastModified": stamp,
        "deleted": None,
        "editableSchemaFieldInfo": infos,
    }
    return (_P + "schema.EditableSchemaMetadata", value)


def upstream_lineage(upstreams: Iterable[str | tuple[str, str]]) -> Aspect:
    """Build an UpstreamLineage aspect: the datasets this one is made from.

    Each upstream is a dataset URN or a ``(urn, type)`` pair with ``type`` one of
    :data:`LINEAGE_TYPES` (default ``TRANSFORMED``; a view's tables are ``VIEW``). The audit
    stamps keep DataHub's default. Raises :class:`ValidationError` listing every bad upstream.
    """
    problems = _Problems("UpstreamLineage aspect")
    items = []
    for i, item in enumerate(problems.items_of("upstreams", upstreams)):
        urn, kind = (item, "TRANSFORMED") if isinstance(item, str) else ((*tuple(item), ""))[:2]
        problems.urn(f"upstreams[{i}].dataset", lambda u: parse_dataset_urn(u).urn, urn)
        if kind not in LINEAGE_TYPES:
            problems.add(f"upstreams[{i}].type", f"expected one of {LINEAGE_TYPES}, got {kind!r}")
        items.append(
            {
                "auditStamp": dict(UNKNOWN_STAMP),
                "created": None,
                "dataset": urn,
                "type": kind,
                "properties": None,
                "query": None,
                "matchType": None,
            }
        )
    problems.check()
    return (_P + "dataset.UpstreamLineage", {"upstreams": items, "fineGrainedLineages": None})


def view_properties(
    view_logic: str, *, materialized: bool = False, language: str = "SQL"
) -> Aspect:
    """Build a ViewProperties aspect: a view's definition and whether it is materialized.

    Raises :class:`ValidationError` listing every bad argument.
    """
    problems = _Problems("ViewProperties aspect")
    if not isinstance(materialized, bool):
        problems.add("materialized", f"expected True or False, got {materialized!r}")
    value = {
        "materialized": materialized,
        "viewLogic": problems.text("viewLogic", view_logic, optional=False),
        "formattedViewLogic": None,
        "viewLanguage": problems.text("viewLanguage", language, optional=False),
    }
    problems.check()
    return (_P + "dataset.ViewProperties", value)


def corp_user_info(
    *,
    display_name: str | None = None,
    email: str | None = None,
    title: str | None = None,
    full_name: str | None = None,
    active: bool = True,
    first_name: str | None = None,
    last_name: str | None = None,
    manager: str | None = None,
    department_id: int | None = None,
    department_name: str | None = None,
    country_code: str | None = None,
    custom_properties: Mapping[str, str] | None = None,
) -> Aspect:
    """Build a CorpUserInfo aspect. ``manager`` is a user name or ``urn:li:corpuser:`` URN.

    Raises :class:`ValidationError` listing every bad argument.
    """
    problems = _Problems("CorpUserInfo aspect")
    if not isinstance(active, bool):
        problems.add("active", f"expected True or False, got {active!r}")
    if department_id is not None and (
        isinstance(department_id, bool) or not isinstance(department_id, int)
    ):
        problems.add("departmentId", f"expected an int or None, got {department_id!r}")
    value = {
        "customProperties": problems.string_map("customProperties", custom_properties),
        "active": active,
        "displayName": problems.text("displayName", display_name),
        "email": problems.text("email", email),
        "title": problems.text("title", title),
        "managerUrn": None
        if manager is None
        else problems.urn("managerUrn", make_user_urn, manager),
        "departmentId": department_id,
        "departmentName": problems.text("departmentName", department_name),
        "firstName": problems.text("firstName", first_name),
        "lastName": problems.text("lastName", last_name),
        "fullName": problems.text("fullName", full_name),
        "countryCode": problems.text("countryCode", country_code),
        "system": False,
        "isSupportUser": None,
    }
    problems.check()
    return (_P + "identity.CorpUserInfo", value)


def group_membership(groups: Iterable[str] | str) -> Aspect:
    """Build a GroupMembership aspect (set on a user) from group names or ``corpGroup`` URNs.

    Raises :class:`ValidationError` listing every value that is not a group.
    """
    problems = _Problems("GroupMembership aspect")
    urns = [
        problems.urn(f"groups[{i}]", make_group_urn, g)
        for i, g in enumerate(problems.items_of("groups", groups))
    ]
    problems.check()
    return (_P + "identity.GroupMembership", {"groups": urns})


def corp_group_info(
    *,
    display_name: str | None = None,
    email: str | None = None,
    description: str | None = None,
    slack: str | None = None,
) -> Aspect:
    """Build a CorpGroupInfo aspect.

    Its ``admins``, ``members`` and ``groups`` lists are deprecated in DataHub and left empty: set
    members with :func:`group_membership` on each user. Raises :class:`ValidationError`.
    """
    problems = _Problems("CorpGroupInfo aspect")
    value = {
        "displayName": problems.text("displayName", display_name),
        "email": problems.text("email", email),
        "admins": [],
        "members": [],
        "groups": [],
        "description": problems.text("description", description),
        "slack": problems.text("slack", slack),
        "created": None,
    }
    problems.check()
    return (_P + "identity.CorpGroupInfo", value)


def tag_properties(
    name: str, *, description: str | None = None, color_hex: str | None = None
) -> Aspect:
    """Build a TagProperties aspect; ``color_hex`` looks like ``"#FF0000"``.

    Raises :class:`ValidationError` listing every bad argument.
    """
    problems = _Problems("TagProperties aspect")
    if not isinstance(name, str) or not name:
        problems.add("name", f"expected a non-empty display name, got {name!r}")
    value = {
        "name": name,
        "description": problems.text("description", description),
        "colorHex": problems.text("colorHex", color_hex),
    }
    problems.check()
    return (_P + "tag.TagProperties", value)


def glossary_term_info(
    definition: str,
    *,
    name: str | None = None,
    term_source: str = "INTERNAL",
    parent_node: str | None = None,
    source_ref: str | None = None,
    source_url: str | None = None,
    custom_properties: Mapping[str, str] | None = None,
) -> Aspect:
    """Build a GlossaryTermInfo aspect.

    ``term_source`` is ``"INTERNAL"`` or ``"EXTERNAL"``; ``parent_node`` is a glossary node name or
    ``urn:li:glossaryNode:`` URN. Raises :class:`ValidationError` listing every bad argument.
    """
    problems = _Problems("GlossaryTermInfo aspect")
    if term_source not in _TERM_SOURCES:
        problems.add(
            "termSource", f"expected one of {', '.join(_TERM_SOURCES)}, got {term_source!r}"
        )
    value = {
        "customProperties": problems.string_map("customProperties", custom_properties),
        "id": None,
        "name": problems.text("name", name),
        "definition": problems.text("definition", definition, optional=False),
        "parentNode": (
            None
            if parent_node is None
            else problems.urn("parentNode", make_glossary_node_urn, parent_node)
        ),
        "termSource": term_source,
        "sourceRef": problems.text("sourceRef", source_ref),
        "sourceUrl": problems.text("sourceUrl", source_url),
        "rawSchema": None,
    }
    problems.check()
    return (_P + "glossary.GlossaryTermInfo", value)


def system_metadata(
    *,
    run_id: str | None = None,
    last_observed_ms: int | None = None,
    pipeline_name: str | None = None,
    properties: Mapping[str, str] | None = None,
) -> Aspect:
    """Build the MCE's ``systemMetadata`` record (who and when, for DataHub's bookkeeping).

    ``last_observed_ms`` defaults to now and ``run_id`` to DataHub's ``"no-run-id-provided"``.
    Raises :class:`ValidationError` listing every bad argument.
    """
    problems = _Problems("SystemMetadata record")
    run = _NO_RUN_ID if run_id is None else problems.text("runId", run_id, optional=False)
    value = {
        "lastObserved": problems.millis("lastObserved", last_observed_ms, now=True),
        "runId": run,
        "lastRunId": run,
        "pipelineName": problems.text("pipelineName", pipeline_name),
        "registryName": None,
        "registryVersion": None,
        "properties": None if properties is None else problems.string_map("properties", properties),
        "version": None,
        "schemaVersion": None,
        "aspectCreated": None,
        "aspectModified": None,
    }
    problems.check()
    return (_SYSTEM_METADATA, value)


def _short_name(full_name: str) -> str:
    return full_name.rpartition(".")[2]


def _named(t: Any) -> str:
    # Types in the built-in schema are defined inline at first use and referenced by full name.
    return t if isinstance(t, str) else f"{t['namespace']}.{t['name']}"


@cache
def _snapshot_aspects() -> dict[str, tuple[str, ...]]:
    schema = mce_schema()
    snapshots = next(f["type"] for f in schema["fields"] if f["name"] == "proposedSnapshot")
    out: dict[str, tuple[str, ...]] = {}
    for snapshot in snapshots:
        if isinstance(snapshot, dict):
            items = next(f["type"]["items"] for f in snapshot["fields"] if f["name"] == "aspects")
            out[_named(snapshot)] = tuple(_named(a) for a in items)
    return out


def allowed_aspects(urn: str) -> tuple[str, ...]:
    """Return the full names of the aspects the MCE snapshot for ``urn``'s entity type can hold.

    Raises :class:`~metaverse_kit.events.urns.InvalidUrnError` when the built-in schema has no
    snapshot for that entity type.
    """
    return _snapshot_aspects()[snapshot_for_urn(urn)]


def aspect_name(full_name: str) -> str:
    """Return DataHub's aspect name (``"ownership"``) for an aspect record's full name.

    Raises :class:`UnknownAspectError` when the built-in schema has no such aspect.
    """
    try:
        return ASPECT_NAMES[full_name]
    except (KeyError, TypeError):
        raise UnknownAspectError(
            f"{full_name!r} is not an aspect of the built-in MCE schema; known aspects: "
            f"{', '.join(sorted(set(ASPECT_NAMES.values())))}."
        ) from None


_ENTITY_CHECKS: dict[str, Callable[[str], object]] = {
    "dataset": parse_dataset_urn,
    "corpuser": make_user_urn,
    "corpGroup": make_group_urn,
    "tag": make_tag_urn,
    "glossaryTerm": make_term_urn,
}


def _system_metadata(problems: _Problems, value: Any) -> Aspect | None:
    if value is None:
        return None
    if isinstance(value, tuple) and len(value) == 2 and value[0] == _SYSTEM_METADATA:
        value = value[1]
    if not isinstance(value, Mapping):
        problems.add("systemMetadata", f"expected system_metadata(...) or None, got {value!r}")
        return None
    # A partial dict is filled with DataHub's schema defaults, so the record is complete.
    base = system_metadata(last_observed_ms=0)[1]
    unknown = sorted(set(value) - set(base))
    if unknown:
        problems.add(
            "systemMetadata",
            f"unknown fields {', '.join(map(repr, unknown))}; known: {', '.join(base)}",
        )
    return (_SYSTEM_METADATA, {**base, **value})


def mce(
    urn: str, aspects: Sequence[Aspect], *, system_metadata: Aspect | Mapping | None = None
) -> dict[str, Any]:
    """Build a whole MetadataChangeEvent proposing ``aspects`` for the entity ``urn``.

    The snapshot record is chosen from the URN's entity type. ``system_metadata`` is the result
    of :func:`system_metadata`, a dict of some of its fields (the rest get DataHub's defaults),
    or None. Raises :class:`~metaverse_kit.events.urns.InvalidUrnError` when the URN is invalid
    or of an entity type without a snapshot, and :class:`ValidationError` listing every aspect that
    is malformed, repeated, or not allowed in that entity's snapshot (naming the allowed ones).
    """
    snapshot = snapshot_for_urn(urn)
    _ENTITY_CHECKS[parse_urn(urn).entity_type](urn)
    allowed = _snapshot_aspects()[snapshot]
    problems = _Problems("MetadataChangeEvent")
    items = problems.items_of("proposedSnapshot.aspects", aspects)
    if not items:
        problems.add("proposedSnapshot.aspects", "an MCE needs at least one aspect")
    seen: set[str] = set()
    for i, aspect in enumerate(items):
        path = f"proposedSnapshot.aspects[{i}]"
        if not (
            isinstance(aspect, tuple)
            and len(aspect) == 2
            and isinstance(aspect[0], str)
            and isinstance(aspect[1], dict)
        ):
            problems.add(
                path,
                f"expected an aspect from the builders, a ('full.Name', {{...}}) "
                f"tuple, got {aspect!r:.80}",
            )
            continue
        name = aspect[0]
        if name not in allowed:
            problems.add(
                path,
                f"{_short_name(name)} cannot be set on a {parse_urn(urn).entity_type} in an MCE: "
                f"the {_short_name(snapshot)} holds only "
                f"{', '.join(_short_name(a) for a in allowed)}",
            )
        elif name in seen:
            problems.add(path, f"{_short_name(name)} appears more than once; merge the two")
        seen.add(name)
    sm = _system_metadata(problems, system_metadata)
    problems.check()
    return {
        "auditHeader": None,
        "proposedSnapshot": (snapshot, {"urn": urn, "aspects": items}),
        "proposedDelta": None,
        "systemMetadata": sm,
    }


def example_mce() -> dict[str, Any]:
    """Return the example event of DataHub's original MCE tooling: the ``datahub`` user's info."""
    info = corp_user_info(
        active=True,
        display_name="Data Hub",
        email="datahub@linkedin.com",
        title="CEO",
        full_name="Data Hub",
    )
    return mce("urn:li:corpuser:datahub", [info])
