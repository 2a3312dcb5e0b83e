"""The ``schema-registry`` source: the registry's own schemas as datasets in the catalogue.

One dataset per schema of a group (platform ``schema-registry``, name ``<group>.<full name>``);
each version's fields become a SchemaMetadata (``version`` = the registry's version number,
``platformSchema`` the definition), emitted oldest first, so the catalogue's schema history is
the registry's. A rerun emits only versions newer than the one the lake holds. Fields are the
record's leaves as dotted paths; union branches by short name
(``proposedSnapshot.DatasetSnapshot.urn``), recursion cut where a type contains itself.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from metaverse_kit.errors import MetaverseError
from metaverse_kit.events import aspects as A
from metaverse_kit.events.avro import AvroSchema
from metaverse_kit.events.urns import make_dataset_urn
from metaverse_kit.ingest.source import Source, SourceUnreachableError, WorkUnit

__all__ = ["SchemaRegistryConfig", "SchemaRegistrySource", "avro_fields"]

_VERSION = "schema-registry/1"
_SCHEMA_METADATA = "com.linkedin.pegasus2avro.schema.SchemaMetadata"
_PRIMITIVE = {
    "null": "NullType",
    "boolean": "BooleanType",
    "int": "NumberType",
    "long": "NumberType",
    "float": "NumberType",
    "double": "NumberType",
    "bytes": "BytesType",
    "string": "StringType",
}


@dataclass
class SchemaRegistryConfig:
    """Config of the ``schema-registry`` source."""

    groups: list[str] = field(
        default_factory=list, metadata={"help": "schema groups (default: the workspace's group)"}
    )
    platform: str = field(default="schema-registry", metadata={"help": "DataHub platform"})
    env: str = field(default="PROD", metadata={"help": "DataHub environment of the datasets"})


def _short(name: str) -> str:
    return name.rpartition(".")[2]


def avro_fields(definition: str) -> list[dict[str, Any]]:
    """SchemaFields of an Avro record schema: every field, nested ones as dotted paths."""
    avro = AvroSchema(definition)
    out: list[dict[str, Any]] = []

    def kind(t: Any) -> tuple[str, str, list[str] | None, bool]:
        """(DataHub type, native text, nested, nullable) of an Avro type."""
        r = avro.resolve(t)
        if isinstance(r, list):
            others = [b for b in r if b != "null"]
            nullable = len(others) < len(r)
            if len(others) == 1:
                k, text, nested, _ = kind(others[0])
                return k, text, nested, nullable
            names = [_short(avro.branch_name(avro.resolve(b))) for b in others]
            return "UnionType", f"union[{', '.join(names)}]", names, nullable
        if isinstance(r, str):
            return _PRIMITIVE.get(r, "NullType"), r, None, False
        t_kind = r["type"]
        logical = r.get("logicalType")
        if logical in ("timestamp-millis", "timestamp-micros", "time-millis", "time-micros"):
            return "TimeType", logical, None, False
        if logical == "date":
            return "DateType", logical, None, False
        if t_kind in ("record", "error"):
            return "RecordType", _short(r["name"]), None, False
        if t_kind == "enum":
            return "EnumType", _short(r["name"]), None, False
        if t_kind == "fixed":
            return "FixedType", _short(r["name"]), None, False
        if t_kind == "array":
            item = kind(r["items"])
            return "ArrayType", f"array<{item[1]}>", [item[0].removesuffix("Type").lower()], False
        if t_kind == "map":
            value = kind(r["values"])
            return (
                "MapType",
                f"map<{value[1]}>",
                ["string", value[0].removesuffix("Type").lower()],
                False,
            )
        return _PRIMITIVE.get(t_kind, "NullType"), t_kind, None, False

    def walk(t: Any, path: str, stack: tuple[str, ...]) -> None:
        r = avro.resolve(t)
        if isinstance(r, list):
            for b in r:
                if b == "null":
                    continue
                rb = avro.resolve(b)
                if isinstance(rb, dict) and rb.get("type") in ("record", "error"):
                    others = [x for x in r if x != "null"]
                    walk(b, path if len(others) == 1 else f"{path}.{_short(rb['name'])}", stack)
            return
        if isinstance(r, dict) and r.get("type") == "array":
            walk(r["items"], path, stack)
            return
        if isinstance(r, dict) and r.get("type") == "map":
            walk(r["values"], path, stack)
            return
        if not (isinstance(r, dict) and r.get("type") in ("record", "error")):
            return
        name = avro.branch_name(r)
        if name in stack:
            return
        for f in r.get("fields", []):
            child = f"{path}.{f['name']}" if path else f["name"]
            k, text, nested, nullable = kind(f["type"])
            out.append(
                A.schema_field(
                    child,
                    k,
                    native_type=text,
                    nullable=nullable,
                    description=f.get("doc"),
                    nested=nested,
                )
            )
            walk(f["type"], child, (*stack, name))

    walk(avro.root, "", ())
    # NOTE: union branches of the same short name at one place would repeat a path; keep the first.
    unique: dict[str, dict[str, Any]] = {}
    for f in out:
        unique.setdefault(f["fieldPath"], f)
    return list(unique.values())


class SchemaRegistrySource(Source):
    """Reads the workspace's schema registry (see the module docstring)."""

    config_class = SchemaRegistryConfig
    description = "The schema registry's own schemas, one dataset per schema"

    def identity(self) -> str:
        groups = self.config.groups or [self.context.workspace.schema_group]
        return ",".join(groups)

    def open(self) -> None:
        registry = self.context.workspace.registry
        self.groups = self.config.groups or [self.context.workspace.schema_group]
        try:
            known = set(registry.list_groups())
        except MetaverseError as exc:
            raise SourceUnreachableError(f"cannot list the registry's groups: {exc}") from exc
        missing = [g for g in self.groups if g not in known]
        if missing:
            raise SourceUnreachableError(
                f"no schema group {', '.join(map(repr, missing))} in the registry; "
                f"it has {', '.join(sorted(known)) or 'none'}"
            )

    def work_units(self) -> Iterator[WorkUnit]:
        registry = self.context.workspace.registry
        for group in self.groups:
            for name in registry.list_schemas(group):
                versions = list(registry.list_versions(group, name))
                urn = make_dataset_urn(self.config.platform, f"{group}.{name}", self.config.env)
                held = self.context.latest(urn, _SCHEMA_METADATA)
                newer = [v for v in versions if held is None or v > held["version"]] or versions[
                    -1:
                ]
                fingerprint = hashlib.sha256(
                    json.dumps([_VERSION, group, name, versions]).encode()
                ).hexdigest()[:24]
                for version in newer:
                    # NOTE: the last version carries the fingerprint: a rerun skips all of them.
                    yield WorkUnit(
                        urn,
                        functools.partial(self._aspects, group, name, version),
                        fingerprint if version == newer[-1] else None,
                        f"schema {group}/{name} v{version}",
                    )

    def _aspects(self, group: str, name: str, version: int) -> list[A.Aspect]:
        schema = self.context.workspace.registry.get_schema(
            group_name=group, name=name, version=version
        )
        definition = schema.definition
        parsed = json.loads(definition)
        return [
            A.dataset_properties(
                name=_short(name),
                qualified_name=f"{group}.{name}",
                description=parsed.get("doc") if isinstance(parsed, dict) else None,
                custom_properties={
                    "schema_id": schema.properties.id,
                    "group": group,
                    "version": str(version),
                },
            ),
            A.schema_metadata(
                f"{group}.{name}",
                avro_fields(definition),
                platform=self.config.platform,
                version=version,
                raw_schema=definition,
            ),
        ]
