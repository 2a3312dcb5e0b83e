"""Builds the Azure backend: Schema Registry, Event Hubs and the Capture lake, with one credential.

``mk.connect("azure", ...)`` calls :func:`create`. What is not given is read by
:mod:`metaverse_kit.config` from the environment and config files. The default credential is
``DefaultAzureCredential`` (``az login``, managed identity, environment ...), created on first
use. A connection string in ``$CONNECTION_STRING`` is used for sending (the registry still
signs in with the credential, as the service requires) and ``$AZURE_STORAGE_CONNECTION_STRING``
for the lake.

Local state (the outbox of unsent events, the names of known schemas) is kept in
``<path or $METAVERSE_HOME or ./.metaverse>/azure/<namespace>/``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from metaverse_kit.backends import declared_options
from metaverse_kit.backends.azure.consumer import consumer_opener
from metaverse_kit.backends.azure.hub import AzureEventHub
from metaverse_kit.backends.azure.lake import AzureLake
from metaverse_kit.backends.azure.registry import AzureSchemaRegistry
from metaverse_kit.backends.protocols import BackendParts, CaptureFile
from metaverse_kit.config import azure_settings, default_workspace_path
from metaverse_kit.errors import ConfigurationError
from metaverse_kit.names import (
    check_eventhub_name,
    check_schema_group_name,
    namespace_of_host,
    path_segment,
)
from metaverse_kit.redact import redact

__all__ = ["DEFAULT_SCHEMA_GROUP", "OPTIONS", "LazyDefaultCredential", "create", "lake_from_url"]

#: The schema group used when neither an argument nor the configuration names one.
DEFAULT_SCHEMA_GROUP = "metadata"
_STORAGE_OPTIONS = {"connection_string", "account_name", "account_key", "sas_token", "credential"}


class LazyDefaultCredential:
    """``azure.identity.DefaultAzureCredential``, created when the first token is asked for.

    Connecting stays fast and offline; a missing ``az login`` shows up at the first call,
    translated into an error that says to run it.
    """

    def __init__(self) -> None:
        self._credential: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "LazyDefaultCredential()"

    def _get(self) -> Any:
        with self._lock:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            return self._credential

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        """``TokenCredential.get_token`` of the default credential."""
        return self._get().get_token(*scopes, **kwargs)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        """``SupportsTokenInfo.get_token_info`` of the default credential."""
        return self._get().get_token_info(*scopes, options=options)

    def close(self) -> None:
        """Close the default credential if it was created."""
        if self._credential is not None:
            self._credential.close()


def _folder_name(text: str) -> str:
    return path_segment(re.sub(r"[^A-Za-z0-9._-]", "_", text), what="local state folder name")


class _NoLake:
    """The lake of a workspace configured without one: every use says how to configure it."""

    root = ""

    def _explain(self) -> ConfigurationError:
        return ConfigurationError(
            "No Capture lake is configured: pass lake='abfss://<file system>@<account>.dfs."
            "core.windows.net/' to connect(), or set $METAVERSE_LAKE"
        )

    def list_files(
        self,
        *,
        partitions: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[CaptureFile]:
        """Raises :class:`ConfigurationError` (no lake configured)."""
        raise self._explain()

    def read_bytes(self, file: CaptureFile) -> bytes:
        """Raises :class:`ConfigurationError` (no lake configured)."""
        raise self._explain()

    def close(self) -> None:
        """Nothing to close."""


def lake_from_url(url: str, *, storage_options: dict[str, Any] | None = None) -> AzureLake:
    """An :class:`AzureLake` for an ``abfss://`` / ``abfs://`` URL (used by ``replay_capture``).

    ``storage_options`` follows the fsspec/pandas convention: ``connection_string``, or
    ``account_name`` with ``credential`` (a ``TokenCredential``), ``account_key`` or
    ``sas_token``. Without any, ``DefaultAzureCredential`` is used. Raises
    :class:`ConfigurationError` for unknown options.
    """
    options = dict(storage_options or {})
    unknown = set(options) - _STORAGE_OPTIONS
    if unknown:
        raise ConfigurationError(
            f"Unknown storage_options {', '.join(sorted(unknown))}: use "
            f"{', '.join(sorted(_STORAGE_OPTIONS))}"
        )
    if options.get("connection_string"):
        return AzureLake.from_connection_string(options["connection_string"], url)
    credential = (
        options.get("credential")
        or options.get("account_key")
        or options.get("sas_token")
        or LazyDefaultCredential()
    )
    lake = AzureLake.from_url(url, credential=credential, account_name=options.get("account_name"))
    # NOTE: these callers have no credential= of their own (replay_capture, the engines).
    lake.credential_option = (
        "storage_options={'credential': ...} (or 'account_key', 'sas_token', 'connection_string')"
    )
    return lake


def create(
    path: str | Path | None = None,
    *,
    fully_qualified_namespace: str | None = None,
    eventhub: str | None = None,
    schema_group: str | None = None,
    lake: str | None = None,
    credential: Any = None,
    schemas: Sequence[str] | None = None,
    retry_total: int | None = None,
    retry_backoff_factor: float | None = None,
    send_timeout: float | None = None,
    registry_transport: Any = None,
) -> BackendParts:
    """Connect to an Event Hubs namespace, its Schema Registry and a Capture lake.

    ``fully_qualified_namespace`` (``<name>.servicebus.windows.net``), ``eventhub``,
    ``schema_group`` and ``lake`` (``abfss://<fs>@<account>.dfs.core.windows.net/<prefix>``)
    default to the configuration (see :mod:`metaverse_kit.config`). ``credential`` defaults to
    ``DefaultAzureCredential``. ``schemas`` names schemas the registry browser lists (the
    service cannot list them). ``path`` is the local state folder (outbox, known schemas).
    ``retry_total``, ``retry_backoff_factor`` (seconds) and ``send_timeout`` (seconds per
    batch) tune the SDKs' retries; ``registry_transport`` is azure-core's
    transport for the registry (tests). Raises :class:`ConfigurationError` when the
    namespace or event hub is not known.
    """
    # NOTE: names are checked before anything is created or sent.
    if fully_qualified_namespace is not None:
        namespace_of_host(fully_qualified_namespace)
    if eventhub is not None:
        check_eventhub_name(eventhub)
    if schema_group is not None:
        check_schema_group_name(schema_group)
    settings = azure_settings(workspace=path)
    state_root = Path(path).expanduser() if path is not None else default_workspace_path()
    if state_root.exists() and not state_root.is_dir():
        raise ConfigurationError(f"The workspace path {state_root} is a file, not a folder")
    credential = credential if credential is not None else LazyDefaultCredential()
    hub_options: dict[str, Any] = {}
    if retry_total is not None:
        hub_options["retry_total"] = retry_total
    if retry_backoff_factor is not None:
        hub_options["retry_backoff_factor"] = retry_backoff_factor
    if send_timeout is not None:
        hub_options["send_timeout"] = send_timeout

    explicit_hub = fully_qualified_namespace is not None
    if settings.connection_string and not explicit_hub:
        hub = AzureEventHub.from_connection_string(
            settings.connection_string, eventhub=eventhub or settings.eventhub, **hub_options
        )
        namespace = hub.namespace
    else:
        namespace = fully_qualified_namespace or settings.fully_qualified_namespace or ""
        name = eventhub or settings.eventhub
        if not namespace or not name:
            raise ConfigurationError(
                "The azure backend needs an Event Hubs namespace and event hub: pass "
                "fully_qualified_namespace='<name>.servicebus.windows.net' and eventhub=..., or "
                "set $METAVERSE_NAMESPACE and $METAVERSE_EVENTHUB (or $CONNECTION_STRING and "
                "$EVENTHUB); see docs/azure.md"
            )
        hub = AzureEventHub(namespace, name, credential, **hub_options)
    group = schema_group or settings.schema_group or DEFAULT_SCHEMA_GROUP
    registry_state = state_root / "azure" / _folder_name(namespace)
    registry = AzureSchemaRegistry(
        namespace,
        credential,
        state_dir=registry_state,
        known_schemas={group: list(schemas if schemas is not None else settings.schemas)},
        transport=registry_transport,
        retry_total=retry_total,
    )
    lake_url = lake or settings.lake
    the_lake: Any
    if lake_url and settings.storage_connection_string:
        the_lake = AzureLake.from_connection_string(settings.storage_connection_string, lake_url)
    elif lake_url:
        the_lake = AzureLake.from_url(lake_url, credential=credential)
    else:
        the_lake = _NoLake()
    state = registry_state / _folder_name(hub.name)
    state.mkdir(parents=True, exist_ok=True)
    return BackendParts(
        name="azure",
        registry=registry,
        hub=hub,
        lake=the_lake,
        schema_group=group,
        description={
            "backend": "azure",
            "namespace": namespace,
            "eventhub": hub.name,
            "schema_group": group,
            "lake": redact(the_lake.root) if lake_url else None,
            "state": str(state),
        },
        path=state,
        open_consumer=consumer_opener(
            fully_qualified_namespace=hub.namespace,
            eventhub=hub.name,
            credential=credential,
            connection_string=settings.connection_string if not explicit_hub else None,
            lake_url=lake_url,
            storage_connection_string=settings.storage_connection_string,
            retry_total=retry_total,
            retry_backoff_factor=retry_backoff_factor,
            partition_ids=hub.partition_ids,
        ),
    )


#: The keyword options :func:`create` takes (``connect()`` refuses any other).
OPTIONS = declared_options(create)
