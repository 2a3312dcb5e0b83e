"""Builds the local backend: a workspace folder that plays Schema Registry, Event Hubs and Capture.

Layout::

    <workspace>/workspace.json   the settings below, fixed when the workspace is created
    <workspace>/registry/        the schema registry (see ``registry.py``)
    <workspace>/hub/             partition state, lock and journal of the event hub
    <workspace>/checkpoints/     named checkpoints of consumers (``ws.tail(checkpoint=...)``)
    <workspace>/lake/<namespace>/<eventhub>/<partition>/<YYYY>/<MM>/<DD>/<HH>/<mm>/<ss>.avro
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from metaverse_kit._files import atomic_write, locked
from metaverse_kit.backends.local.consumer import LocalEventConsumer
from metaverse_kit.backends.local.hub import LocalEventHub
from metaverse_kit.backends.local.lake import LocalLake
from metaverse_kit.backends.local.registry import LocalSchemaRegistry
from metaverse_kit.backends.protocols import BackendParts
from metaverse_kit.config import default_workspace_path
from metaverse_kit.errors import ConfigurationError, SchemaNotFoundError

__all__ = ["DEFAULTS", "create"]

#: Settings of a new workspace; the names mirror the Azure resources they stand for.
DEFAULTS: dict[str, Any] = {
    "namespace": "metaverse-local",
    "eventhub": "metaverse",
    "partition_count": 4,
    "window_seconds": 300,
    "codec": "null",
    "schema_group": "metadata",
    "compatibility": "Backward",
}


def _settings(path: Path, given: dict[str, Any]) -> dict[str, Any]:
    settings_path = path / "workspace.json"
    with locked(path / ".workspace.lock"):
        if settings_path.exists():
            try:
                saved = json.loads(settings_path.read_text("utf-8"))
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"{settings_path} is not valid JSON: {exc}") from exc
            clash = {
                k: (saved.get(k), v)
                for k, v in given.items()
                if v is not None and saved.get(k) != v
            }
            if clash:
                details = ", ".join(
                    f"{k}={new!r} (workspace has {old!r})" for k, (old, new) in clash.items()
                )
                raise ConfigurationError(
                    f"The workspace at {path} was created with other settings: {details}"
                )
            return {**DEFAULTS, **saved}
        settings = {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
        atomic_write(settings_path, json.dumps(settings, indent=2, sort_keys=True).encode())
        return settings


def create(
    path: str | Path | None = None,
    *,
    namespace: str | None = None,
    eventhub: str | None = None,
    partition_count: int | None = None,
    window_seconds: int | None = None,
    codec: str | None = None,
    schema_group: str | None = None,
    compatibility: str | None = None,
    clock: Callable[[], datetime] | None = None,
) -> BackendParts:
    """Open the local workspace at ``path`` (default ``$METAVERSE_HOME`` or ``./.metaverse``).

    A missing workspace is created with the built-in schemas registered in ``schema_group``.
    ``clock`` stamps enqueued times (tests and the demo use it to simulate a history).
    Raises :class:`ConfigurationError` when the options contradict an existing workspace.
    """
    root = Path(path).expanduser() if path is not None else default_workspace_path()
    if root.exists() and not root.is_dir():
        raise ConfigurationError(f"The workspace path {root} is a file, not a folder")
    root.mkdir(parents=True, exist_ok=True)
    settings = _settings(
        root,
        {
            "namespace": namespace,
            "eventhub": eventhub,
            "partition_count": partition_count,
            "window_seconds": window_seconds,
            "codec": codec,
            "schema_group": schema_group,
            "compatibility": compatibility,
        },
    )
    registry = LocalSchemaRegistry(root / "registry")
    group = settings["schema_group"]
    try:
        registry.get_group(group)
    except SchemaNotFoundError:
        registry.create_group(group, compatibility=settings["compatibility"])
        from metaverse_kit.events.builtin import builtin_schema_definitions

        for definition in builtin_schema_definitions().values():
            registry.register_schema(group, definition)
    hub = LocalEventHub(
        root / "lake",
        root / "hub",
        namespace=settings["namespace"],
        eventhub=settings["eventhub"],
        partition_count=settings["partition_count"],
        window_seconds=settings["window_seconds"],
        codec=settings["codec"],
        clock=clock,
    )
    # NOTE: made up front so that replaying a workspace with no events yet gives an empty table.
    (root / "lake").mkdir(exist_ok=True)
    lake = LocalLake(root / "lake")
    return BackendParts(
        name="local",
        registry=registry,
        hub=hub,
        lake=lake,
        schema_group=group,
        description={
            "backend": "local",
            "path": str(root),
            "namespace": settings["namespace"],
            "eventhub": settings["eventhub"],
            "schema_group": group,
            "partitions": settings["partition_count"],
        },
        path=root,
        open_consumer=functools.partial(
            LocalEventConsumer,
            root / "lake",
            root / "hub",
            namespace=settings["namespace"],
            eventhub=settings["eventhub"],
            checkpoint_root=root / "checkpoints",
        ),
    )
