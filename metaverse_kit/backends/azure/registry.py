"""Azure Schema Registry through the official ``azure-schemaregistry`` client.

Register, get by id, get by version and get properties go through ``SchemaRegistryClient``.
Listing groups and versions uses REST operations the public client does not expose
(``GET /$schemaGroups``, ``GET /$schemaGroups/{group}/schemas/{name}/versions``, api-version
2022-10), sent through an azure-core pipeline with the same credential and token scope.

The service has no operation that lists the schemas of a group. :meth:`list_schemas` therefore
lists the names this toolkit knows: from configuration, from what it registered (remembered in
``<state>/schemas.json``) and from the schema ids it resolved while replaying the lake. The
attribute :attr:`AzureSchemaRegistry.lists_all_schemas` is False and
:data:`LISTING_NOTE` says why, for the UI to show.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from metaverse_kit._files import atomic_write, locked
from metaverse_kit.backends.azure._errors import translate_http_error
from metaverse_kit.backends.protocols import Schema, SchemaGroup, SchemaProperties
from metaverse_kit.errors import (
    ConfigurationError,
    IncompatibleSchemaError,
    MetaverseError,
    SchemaNotFoundError,
)
from metaverse_kit.events.strict import schema_name
from metaverse_kit.names import check_schema_group_name
from metaverse_kit.redact import redact

__all__ = ["API_VERSION", "LISTING_NOTE", "SCOPE", "AzureSchemaRegistry"]

#: The Schema Registry REST API version the listing operations use.
API_VERSION = "2022-10"
#: The token scope of Schema Registry (and Event Hubs) data-plane calls.
SCOPE = "https://eventhubs.azure.net/.default"
#: Why the schema list of a group may be incomplete; widgets show this sentence.
LISTING_NOTE = (
    "Azure Schema Registry cannot list the schemas of a group; shown are the schemas named in "
    "the configuration, those registered from this toolkit, and those seen in the lake's history."
)
_READER_ROLE = "Schema Registry Reader (or Contributor, to register)"
_WRITER_ROLE = "Schema Registry Contributor"


class AzureSchemaRegistry:
    """A schema group's view of an Azure Schema Registry (in an Event Hubs namespace).

    ``credential`` is an ``azure.core.credentials.TokenCredential`` (``DefaultAzureCredential``
    by default in :func:`metaverse_kit.connect`). ``state_dir`` is where the names of schemas
    this toolkit registered or saw are remembered (nothing is remembered when None).
    ``known_schemas`` maps a group to schema names from the configuration. ``transport`` is
    azure-core's transport (tests inject an in-process one).
    """

    #: False: the service cannot list a group's schemas (see :data:`LISTING_NOTE`).
    lists_all_schemas = False
    #: The sentence that says why the schema list may be incomplete.
    listing_note = LISTING_NOTE
    #: False: groups are created in the portal, with ARM or with ``az`` (control plane).
    can_create_groups = False

    def __init__(
        self,
        fully_qualified_namespace: str,
        credential: Any,
        *,
        state_dir: str | Path | None = None,
        known_schemas: dict[str, Iterable[str]] | None = None,
        transport: Any = None,
        retry_total: int | None = None,
    ) -> None:
        from azure.core import PipelineClient
        from azure.core.pipeline import policies
        from azure.schemaregistry import SchemaRegistryClient

        self.fully_qualified_namespace = fully_qualified_namespace
        self._state_path = Path(state_dir) / "schemas.json" if state_dir is not None else None
        self._known = {g: set(names) for g, names in (known_schemas or {}).items()}
        self._seen: dict[str, dict[str, set[str]]] = {}
        self._cache: dict[str, Schema] = {}
        options: dict[str, Any] = {}
        if transport is not None:
            options["transport"] = transport
        if retry_total is not None:
            options["retry_total"] = retry_total
        self._client = SchemaRegistryClient(fully_qualified_namespace, credential, **options)
        retry = policies.RetryPolicy(
            **({"retry_total": retry_total} if retry_total is not None else {})
        )
        self._base_url = f"https://{fully_qualified_namespace}"
        self._pipeline = PipelineClient(
            base_url=self._base_url,
            policies=[
                policies.HeadersPolicy(),
                policies.UserAgentPolicy(sdk_moniker="metaverse-kit"),
                retry,
                policies.BearerTokenCredentialPolicy(credential, SCOPE),
                policies.NetworkTraceLoggingPolicy(),
            ],
            **({"transport": transport} if transport is not None else {}),
        )

    def __repr__(self) -> str:
        return f"AzureSchemaRegistry({self.fully_qualified_namespace!r})"

    def __enter__(self) -> AzureSchemaRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()
        self._pipeline.close()

    def sdk_client(self) -> Any:
        """The underlying ``azure.schemaregistry.SchemaRegistryClient`` (for ``AvroEncoder``)."""
        return self._client

    # -- what this toolkit knows ----------------------------------------------------------------

    def _read_state(self) -> dict[str, dict[str, list[str]]]:
        if self._state_path is None:
            return {}
        try:
            data = json.loads(self._state_path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f"{self._state_path} is corrupt ({exc}); delete it (it only lists known schemas)"
            ) from exc
        return data if isinstance(data, dict) else {}

    def _remember(self, props: SchemaProperties) -> None:
        ids = self._seen.setdefault(props.group_name, {}).setdefault(props.name, set())
        if props.id in ids:
            return
        ids.add(props.id)
        if self._state_path is None:
            return
        with locked(self._state_path.with_name(".schemas.lock")):
            state = self._read_state()
            known = state.setdefault(props.group_name, {}).setdefault(props.name, [])
            if props.id not in known:
                known.append(props.id)
                atomic_write(self._state_path, json.dumps(state, indent=1, sort_keys=True).encode())

    def remember_schema_ids(self, schema_ids: Iterable[str]) -> list[SchemaProperties]:
        """Resolve schema ids seen somewhere (the lake's content types) and remember their names.

        Unknown ids are skipped. Returns the properties of those resolved.
        """
        found = []
        for schema_id in schema_ids:
            try:
                found.append(self.get_schema(schema_id).properties)
            except SchemaNotFoundError:
                continue
        return found

    # -- schemas --------------------------------------------------------------------------------

    @staticmethod
    def _name_of(group_name: str, definition: str, name: str | None, format: str) -> str:
        # NOTE: checked here, before any request: the service's own refusal of an invalid
        # definition or name is a 400 with a far less specific message.
        if format.lower() != "avro":
            raise ConfigurationError(f"Only Avro schemas are supported, not {format!r}")
        check_schema_group_name(group_name)
        return schema_name(definition, name)

    def register_schema(
        self, group_name: str, definition: str, *, name: str | None = None, format: str = "Avro"
    ) -> SchemaProperties:
        """Register ``definition`` as the next version of its schema (default: its Avro full name).

        The service returns the existing version for a definition already registered. Raises
        :class:`IncompatibleSchemaError` when the group's compatibility mode refuses it,
        :class:`SchemaNotFoundError` for an unknown group, :class:`ServiceError` otherwise.
        """
        from azure.core.exceptions import HttpResponseError

        name = self._name_of(group_name, definition, name, format)
        try:
            props = self._client.register_schema(group_name, name, definition, "Avro")
        except HttpResponseError as exc:
            message = str(exc)
            if exc.status_code in (400, 409) and "compatib" in message.lower():
                raise IncompatibleSchemaError(
                    f"Registering a new version of {name!r} in group {group_name!r} was refused "
                    f"by the group's compatibility mode: {redact(message.splitlines()[0])}. "
                    "Give new fields defaults, or register under another name."
                ) from exc
            if exc.status_code == 404:
                raise SchemaNotFoundError(
                    f"Registering {name!r}: the schema group {group_name!r} does not exist in "
                    f"{self.fully_qualified_namespace} (a typo? see list_groups()); create it "
                    "in the portal or with `az eventhubs namespace schema-registry create`"
                ) from exc
            raise translate_http_error(
                exc,
                what=f"Registering {name!r} in group {group_name!r}",
                role=_WRITER_ROLE,
                resource=self._resource,
            ) from exc
        except Exception as exc:  # azure-core's transport errors have no common base here
            raise self._translate(exc, f"Registering {name!r} in group {group_name!r}") from exc
        result = SchemaProperties(props.id, "Avro", props.group_name, props.name, props.version)
        self._remember(result)
        return result

    def _translate(self, exc: Exception, what: str) -> MetaverseError:
        if isinstance(exc, MetaverseError):
            return exc
        return translate_http_error(exc, what=what, role=_READER_ROLE, resource=self._resource)

    @property
    def _resource(self) -> str:
        # NOTE: roles are granted on the namespace (or its schema group), so the message names
        # it: a steward with several namespaces cannot tell which one refused otherwise.
        return f"the Event Hubs namespace {self.fully_qualified_namespace}"

    def get_schema(
        self,
        schema_id: str | None = None,
        *,
        group_name: str | None = None,
        name: str | None = None,
        version: int | None = None,
    ) -> Schema:
        """A schema by id, or by group, name and version. Raises :class:`SchemaNotFoundError`.

        Schemas are immutable, so each id is fetched once per registry object.
        """
        if schema_id is not None:
            cached = self._cache.get(schema_id)
            if cached is not None:
                return cached
            what = f"Getting schema {schema_id}"
            try:
                found = self._client.get_schema(schema_id)
            except Exception as exc:
                raise self._translate(exc, what) from exc
        else:
            if group_name is None or name is None or version is None:
                raise ConfigurationError(
                    "get_schema needs a schema id, or group_name, name and version together"
                )
            what = f"Getting version {version} of {name!r} in group {group_name!r}"
            try:
                found = self._client.get_schema(group_name=group_name, name=name, version=version)
            except Exception as exc:
                raise self._translate(exc, what) from exc
        p = found.properties
        schema = Schema(
            found.definition,
            SchemaProperties(
                p.id, str(getattr(p.format, "value", p.format)), p.group_name, p.name, p.version
            ),
        )
        self._cache[p.id] = schema
        self._remember(schema.properties)
        return schema

    def get_schema_properties(
        self, group_name: str, definition: str, *, name: str | None = None, format: str = "Avro"
    ) -> SchemaProperties:
        """The properties of a registered definition. Raises :class:`SchemaNotFoundError`."""
        name = self._name_of(group_name, definition, name, format)
        try:
            p = self._client.get_schema_properties(group_name, name, definition, "Avro")
        except Exception as exc:
            raise self._translate(exc, f"Looking up {name!r} in group {group_name!r}") from exc
        return SchemaProperties(p.id, "Avro", p.group_name, p.name, p.version)

    # -- listing --------------------------------------------------------------------------------

    def _paged(self, url: str, what: str) -> Iterator[Any]:
        from azure.core.rest import HttpRequest

        next_url: str | None = self._base_url + url
        params: dict[str, str] | None = {"api-version": API_VERSION}
        while next_url:
            request = HttpRequest(
                "GET", next_url, params=params, headers={"Accept": "application/json"}
            )
            try:
                response = self._pipeline.send_request(request)
                response.read()
                response.raise_for_status()
                page = response.json()
            except Exception as exc:
                raise self._translate(exc, what) from exc
            yield from page.get("Value", page.get("value", []))
            link = page.get("NextLink") or page.get("nextLink")
            # NOTE: the service may answer with a relative next link; resolve it on our host.
            next_url = (
                urljoin(f"{self._base_url}{urlsplit(request.url).path}", link) if link else None
            )
            params = None if next_url and "api-version=" in next_url else params

    def list_groups(self) -> list[str]:
        """The names of the schema groups the identity can see, sorted."""
        return sorted(self._paged("/$schemaGroups", "Listing the schema groups"))

    def get_group(self, group_name: str) -> SchemaGroup:
        """A group by name. Raises :class:`SchemaNotFoundError` when the namespace lacks it.

        The data-plane API does not say a group's compatibility mode; it is ``"Unknown"`` here
        (the portal shows it).
        """
        groups = self.list_groups()
        if group_name not in groups:
            raise SchemaNotFoundError(
                f"Schema group {group_name!r} does not exist in {self.fully_qualified_namespace} "
                f"(groups: {', '.join(groups) or 'none visible'}); create it in the portal or "
                "with `az eventhubs namespace schema-registry create`"
            )
        return SchemaGroup(group_name, "Unknown", "Avro")

    def create_group(
        self, group_name: str, *, compatibility: str = "Backward", exist_ok: bool = True
    ) -> SchemaGroup:
        """Return the group when it exists; Azure's data plane cannot create groups.

        Raises :class:`ConfigurationError` saying how to create it (``can_create_groups`` is
        False), or when it exists and ``exist_ok`` is false.
        """
        check_schema_group_name(group_name)
        try:
            group = self.get_group(group_name)
        except SchemaNotFoundError:
            raise ConfigurationError(
                f"Schema group {group_name!r} does not exist and this toolkit cannot create it "
                "(Schema Registry's data plane has no such operation): create it in the portal "
                f"or with `az eventhubs namespace schema-registry create --name {group_name} "
                f"--schema-compatibility {compatibility} --schema-type Avro ...`"
            ) from None
        if not exist_ok:
            raise ConfigurationError(f"Schema group {group_name!r} already exists")
        return group

    def list_schemas(self, group_name: str) -> list[str]:
        """The schema names this toolkit knows in a group, sorted (see :data:`LISTING_NOTE`).

        Azure Schema Registry has no operation to list a group's schemas, so this lists the
        names from the configuration, those registered through this toolkit (remembered in
        the state folder) and those whose ids were resolved while replaying the lake. Other
        schemas may exist; :attr:`lists_all_schemas` is False to say so.
        """
        names = set(self._known.get(group_name, ()))
        names |= set(self._read_state().get(group_name, {}))
        names |= set(self._seen.get(group_name, {}))
        return sorted(names)

    def list_versions(self, group_name: str, name: str) -> list[int]:
        """The version numbers of a schema, oldest first (empty for an unknown name)."""
        from urllib.parse import quote

        url = f"/$schemaGroups/{quote(group_name, safe='')}/schemas/{quote(name, safe='')}/versions"
        try:
            return sorted(int(v) for v in self._paged(url, f"Listing the versions of {name!r}"))
        except SchemaNotFoundError:
            return []
