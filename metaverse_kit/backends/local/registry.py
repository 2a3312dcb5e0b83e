"""The local schema registry: Azure Schema Registry's model in a workspace folder.

Layout::

    <workspace>/registry/index.json          groups, schema names, versions, ids (replaced whole)
    <workspace>/registry/schemas/<id>.avsc   each definition as registered (write once)
    <workspace>/registry/.lock               held while a writer changes the index

Definitions are written before the index that names them, and the index is replaced in one
step under a process lock, so two processes registering at once leave a consistent registry and
a reader never sees an id whose definition is missing.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from metaverse_kit._files import atomic_write, locked
from metaverse_kit.backends.protocols import (
    COMPATIBILITY_MODES,
    Schema,
    SchemaGroup,
    SchemaProperties,
)
from metaverse_kit.errors import (
    ConfigurationError,
    IncompatibleSchemaError,
    SchemaNotFoundError,
)
from metaverse_kit.events.compatibility import breaking_changes
from metaverse_kit.events.strict import schema_name
from metaverse_kit.names import check_schema_group_name, inside

__all__ = ["LocalSchemaRegistry", "SdkClientAdapter"]


def _fingerprint(definition: str) -> str:
    """A form of the definition that ignores whitespace and key order, to spot re-registrations."""
    return json.dumps(json.loads(definition), sort_keys=True, separators=(",", ":"))


class LocalSchemaRegistry:
    """A schema registry kept in ``<workspace>/registry`` (layout: see the module docstring)."""

    #: True: the index lists every schema of every group.
    lists_all_schemas = True
    #: Nothing to say: the listing is complete.
    listing_note = ""
    #: True: :meth:`create_group` creates groups.
    can_create_groups = True

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._index_path = self.root / "index.json"
        self._lock_path = self.root / ".lock"
        self._definitions: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"LocalSchemaRegistry({str(self.root)!r})"

    def __enter__(self) -> LocalSchemaRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing stays open between calls; kept for the protocol."""

    # -- the index ------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self._index_path.read_text("utf-8"))
        except FileNotFoundError:
            return {"groups": {}, "ids": {}}
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f"The registry index {self._index_path} is corrupt ({exc}); restore it from a "
                "backup or re-create the workspace"
            ) from exc
        return data

    def _write(self, index: dict[str, Any]) -> None:
        atomic_write(self._index_path, json.dumps(index, indent=1, sort_keys=True).encode())

    def _group(self, index: dict[str, Any], group_name: str) -> dict[str, Any]:
        check_schema_group_name(group_name)
        try:
            return index["groups"][group_name]
        except KeyError:
            known = ", ".join(sorted(index["groups"])) or "none yet"
            raise SchemaNotFoundError(
                f"Schema group {group_name!r} does not exist (groups: {known}); create it with "
                f"registry.create_group({group_name!r}, compatibility='Backward')"
            ) from None

    # -- groups ---------------------------------------------------------------------------------

    def create_group(
        self, group_name: str, *, compatibility: str = "Backward", exist_ok: bool = True
    ) -> SchemaGroup:
        """Create a schema group (Azure creates them in the portal or with ARM; here, with this).

        Raises :class:`ConfigurationError` for an unknown compatibility mode, or when the group
        exists and ``exist_ok`` is false.
        """
        if compatibility not in COMPATIBILITY_MODES:
            raise ConfigurationError(
                f"Unknown compatibility mode {compatibility!r}: use one of "
                f"{', '.join(COMPATIBILITY_MODES)}"
            )
        check_schema_group_name(group_name)
        with locked(self._lock_path):
            index = self._read()
            group = index["groups"].get(group_name)
            if group is not None:
                if not exist_ok:
                    raise ConfigurationError(f"Schema group {group_name!r} already exists")
                return SchemaGroup(group_name, group["compatibility"], group["format"])
            index["groups"][group_name] = {
                "compatibility": compatibility,
                "format": "Avro",
                "schemas": {},
            }
            self._write(index)
        return SchemaGroup(group_name, compatibility, "Avro")

    def set_compatibility(self, group_name: str, compatibility: str) -> SchemaGroup:
        """Change the compatibility mode that later versions in the group are held to."""
        if compatibility not in COMPATIBILITY_MODES:
            raise ConfigurationError(
                f"Unknown compatibility mode {compatibility!r}: use one of "
                f"{', '.join(COMPATIBILITY_MODES)}"
            )
        with locked(self._lock_path):
            index = self._read()
            self._group(index, group_name)["compatibility"] = compatibility
            self._write(index)
        return SchemaGroup(group_name, compatibility, "Avro")

    def list_groups(self) -> list[str]:
        """The names of the schema groups, sorted."""
        return sorted(self._read()["groups"])

    def get_group(self, group_name: str) -> SchemaGroup:
        """A group's properties. Raises :class:`SchemaNotFoundError`."""
        group = self._group(self._read(), group_name)
        return SchemaGroup(group_name, group["compatibility"], group["format"])

    def list_schemas(self, group_name: str) -> list[str]:
        """The schema names in a group, sorted."""
        return sorted(self._group(self._read(), group_name)["schemas"])

    def list_versions(self, group_name: str, name: str) -> list[int]:
        """The version numbers of a schema, oldest first (empty for an unknown name)."""
        versions = self._group(self._read(), group_name)["schemas"].get(name, [])
        return list(range(1, len(versions) + 1))

    # -- schemas --------------------------------------------------------------------------------

    @staticmethod
    def _check_definition(definition: str, name: str | None, format: str) -> tuple[str, str]:
        if format.lower() != "avro":
            raise ConfigurationError(f"Only Avro schemas are supported, not {format!r}")
        return schema_name(definition, name), _fingerprint(definition)

    def register_schema(
        self, group_name: str, definition: str, *, name: str | None = None, format: str = "Avro"
    ) -> SchemaProperties:
        """Register ``definition`` as the next version of schema ``name`` (default: its full name).

        Returns the existing properties when the same definition is registered again. Raises
        :class:`IncompatibleSchemaError` naming the breaking fields when the new version
        breaks the group's compatibility mode, and :class:`SchemaNotFoundError` for an unknown
        group.
        """
        name, fingerprint = self._check_definition(definition, name, format)
        with locked(self._lock_path):
            index = self._read()
            group = self._group(index, group_name)
            versions: list[str] = group["schemas"].get(name, [])
            for number, schema_id in enumerate(versions, start=1):
                if _fingerprint(self._definition(schema_id)) == fingerprint:
                    return SchemaProperties(schema_id, "Avro", group_name, name, number)
            if versions:
                previous = self._definition(versions[-1])
                breaking = breaking_changes(definition, previous, group["compatibility"])
                if breaking:
                    raise IncompatibleSchemaError(
                        f"Version {len(versions) + 1} of {name!r} breaks the "
                        f"{group['compatibility']} compatibility of group {group_name!r} with "
                        f"version {len(versions)}: "
                        + "; ".join(breaking)
                        + ". Give new fields defaults, or register under another name.",
                        breaking=breaking,
                    )
            schema_id = uuid.uuid4().hex
            atomic_write(
                inside(self.root / "schemas", f"{schema_id}.avsc"), definition.encode("utf-8")
            )
            group["schemas"][name] = [*versions, schema_id]
            index["ids"][schema_id] = {
                "group": group_name,
                "name": name,
                "version": len(versions) + 1,
            }
            self._write(index)
        return SchemaProperties(schema_id, "Avro", group_name, name, len(versions) + 1)

    def _definition(self, schema_id: str) -> str:
        cached = self._definitions.get(schema_id)
        if cached is None:
            try:
                path = inside(self.root / "schemas", f"{schema_id}.avsc")
                cached = path.read_text("utf-8")
            except FileNotFoundError:
                raise SchemaNotFoundError(f"No schema with id {schema_id!r}") from None
            self._definitions[schema_id] = cached
        return cached

    def get_schema(
        self,
        schema_id: str | None = None,
        *,
        group_name: str | None = None,
        name: str | None = None,
        version: int | None = None,
    ) -> Schema:
        """A schema by id, or by group, name and version. Raises :class:`SchemaNotFoundError`."""
        index = self._read()
        if schema_id is not None:
            entry = index["ids"].get(schema_id)
            if entry is None:
                raise SchemaNotFoundError(f"No schema with id {schema_id!r} in {self.root}")
            props = SchemaProperties(
                schema_id, "Avro", entry["group"], entry["name"], entry["version"]
            )
            return Schema(self._definition(schema_id), props)
        if group_name is None or name is None or version is None:
            raise ConfigurationError(
                "get_schema needs a schema id, or group_name, name and version together"
            )
        versions = self._group(index, group_name)["schemas"].get(name)
        if not versions:
            raise SchemaNotFoundError(f"No schema named {name!r} in group {group_name!r}")
        if not 1 <= version <= len(versions):
            raise SchemaNotFoundError(
                f"Schema {name!r} in group {group_name!r} has versions 1 to {len(versions)}, "
                f"not {version}"
            )
        schema_id = versions[version - 1]
        return Schema(
            self._definition(schema_id),
            SchemaProperties(schema_id, "Avro", group_name, name, version),
        )

    def get_schema_properties(
        self, group_name: str, definition: str, *, name: str | None = None, format: str = "Avro"
    ) -> SchemaProperties:
        """The properties of a registered definition. Raises :class:`SchemaNotFoundError`."""
        name, fingerprint = self._check_definition(definition, name, format)
        group = self._group(self._read(), group_name)
        for number, schema_id in enumerate(group["schemas"].get(name, []), start=1):
            if _fingerprint(self._definition(schema_id)) == fingerprint:
                return SchemaProperties(schema_id, "Avro", group_name, name, number)
        raise SchemaNotFoundError(
            f"This definition of {name!r} is not registered in group {group_name!r}; "
            "register it first"
        )

    def sdk_client(self) -> SdkClientAdapter:
        """This registry under ``azure.schemaregistry.SchemaRegistryClient``'s signatures.

        Lets Azure's own ``AvroEncoder`` encode and decode against the local workspace.
        """
        return SdkClientAdapter(self)


class SdkClientAdapter:
    """Exposes a metaverse-kit registry under the Azure SDK client's method signatures."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def register_schema(
        self, group_name: str, name: str, definition: str, format: str, **kwargs: Any
    ) -> Any:
        """``SchemaRegistryClient.register_schema``."""
        return self._registry.register_schema(group_name, definition, name=name, format=str(format))

    def get_schema(self, *args: Any, **kwargs: Any) -> Any:
        """``SchemaRegistryClient.get_schema`` (by id, or group_name, name and version)."""
        kwargs.pop("logging_enable", None)
        return self._registry.get_schema(*args, **kwargs)

    def get_schema_properties(
        self, group_name: str, name: str, definition: str, format: str, **kwargs: Any
    ) -> Any:
        """``SchemaRegistryClient.get_schema_properties``."""
        return self._registry.get_schema_properties(
            group_name, definition, name=name, format=str(format)
        )

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> SdkClientAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
