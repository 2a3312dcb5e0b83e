"""Builds the local backend: a workspace folder that plays Schema Registry, Event Hubs and Capture.

Layout::

    <workspace>/workspace.json   the settings below, fixed when the workspace is created
    <workspace>/registry/        the schema registry (see ``registry.py``)
    <workspace>/hub/             partition state, lock and journal of the event hub
    <workspace>/checkpoints/     named checkpoints of consumers (``ws.tail(checkpoint=...)``)
    <workspace>/lake/<namespace>/<eventhub>/<partition>/<YYYY>/<MM>/<DD>/<HH>/<mm>/<ss>.avro
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from metaverse_kit._files import (
    atomic_write,
    can_write,
    check_text_path,
    locked,
    remove_leftovers,
    writing,
)
from metaverse_kit.backends import declared_options
from metaverse_kit.backends.local.consumer import LocalEventConsumer
from metaverse_kit.backends.local.hub import LocalEventHub
from metaverse_kit.backends.local.lake import LocalLake
from metaverse_kit.backends.local.registry import LocalSchemaRegistry
from metaverse_kit.backends.protocols import BackendParts
from metaverse_kit.config import check_workspace_settings, default_workspace_path
from metaverse_kit.errors import ConfigurationError, SchemaNotFoundError

__all__ = ["DEFAULTS", "OPTIONS", "create", "read_settings"]

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


def read_settings(root: Path) -> dict[str, Any] | None:
    """The settings of the workspace at ``root`` (defaults filled in), None when it has none.

    Reads only. Raises :class:`ConfigurationError` naming ``workspace.json`` when it is not
    valid JSON, not an object, or gives a setting of the wrong type or out of its range, or a
    key that is no setting (:func:`metaverse_kit.config.check_workspace_settings`).
    """
    saved = _read_settings(root / "workspace.json")
    return None if saved is None else {**DEFAULTS, **saved}


def existing_settings(root: Path) -> dict[str, Any]:
    """:func:`read_settings` of a workspace that must be there already (a command that only
    reads, the doctor); raises :class:`ConfigurationError` naming ``root`` when it is not.

    NOTE: opening a workspace creates it when missing; for a reader that would turn a mistyped
    path into an empty workspace and an answer of "nothing".
    """
    settings = read_settings(root) if root.is_dir() else None
    if settings is None:
        raise ConfigurationError(
            f"No workspace at {root} (no workspace.json); `metaverse init` creates one, or "
            "--workspace (or $METAVERSE_HOME) names another"
        )
    return settings


def _read_settings(settings_path: Path) -> dict[str, Any] | None:
    try:
        saved = json.loads(settings_path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise ConfigurationError(f"{settings_path} is not valid JSON: {exc}") from exc
    # NOTE: checked here, where the file is read: a wrong type surfaced later as a TypeError
    # deep in the hub (a comparison of "4" with 1), naming no file.
    if not isinstance(saved, dict):
        names = {list: "list", str: "string", bool: "boolean", type(None): "null"}
        raise ConfigurationError(
            f"{settings_path} holds a JSON {names.get(type(saved), 'number')}, not the object of a "
            "workspace's settings (namespace, eventhub, partition_count, ...); put back the "
            "settings the workspace was created with"
        )
    # NOTE: every setting, with its range: the hub's own checks named no file, and a
    # compatibility mode was never looked at once the group existed.
    check_workspace_settings(saved, path=settings_path)
    return saved


def _settings(path: Path, given: dict[str, Any]) -> dict[str, Any]:
    settings_path = path / "workspace.json"
    # NOTE: an existing workspace is read without its lock (the file is replaced atomically),
    # so a workspace the user cannot write still opens for reading.
    saved = _read_settings(settings_path)
    if saved is None:
        with locked(path / ".workspace.lock"):
            saved = _read_settings(settings_path)
            if saved is None:
                settings = {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
                atomic_write(settings_path, json.dumps(settings, indent=2, sort_keys=True).encode())
                return settings
    clash = {k: (saved.get(k), v) for k, v in given.items() if v is not None and saved.get(k) != v}
    if clash:
        details = ", ".join(
            f"{k}={new!r} (workspace has {old!r})" for k, (old, new) in clash.items()
        )
        raise ConfigurationError(
            f"The workspace at {path} was created with other settings: {details}"
        )
    return {**DEFAULTS, **saved}


def _tidy(root: Path, hub: LocalEventHub) -> None:
    """Clear what killed processes left in a workspace this process can write.

    Rolls back a send a killed process left half done and removes its temporary files; a
    live writer's are never touched (see :func:`metaverse_kit._files.find_leftovers`). On a
    workspace the user cannot write, nothing is done (``metaverse doctor`` lists them); nor
    with a hub journal or state the hub refuses (see :meth:`LocalEventHub.pending`).
    """
    if not can_write(root):
        return
    # NOTE: a journal or state the hub cannot trust (one naming a file outside the lake, say)
    # is left as it is: nothing it names is touched, the workspace still opens for reading,
    # the next send refuses with the reason, and `metaverse doctor` reports it.
    with contextlib.suppress(ConfigurationError):
        if hub.pending() is not None:
            hub.recover()
    # NOTE: cache/ belongs to the replay cache, which cleans its own temporary files.
    remove_leftovers(root, skip=("cache",))


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
    Opening a workspace rolls back a send a killed process left half done and removes the
    temporary files of dead processes. A workspace the user cannot write opens for reading.
    Raises :class:`ConfigurationError` when the options contradict an existing workspace and
    :class:`ReadOnlyWorkspaceError` when a missing workspace cannot be created.
    """
    given = {
        "namespace": namespace,
        "eventhub": eventhub,
        "partition_count": partition_count,
        "window_seconds": window_seconds,
        "codec": codec,
        "schema_group": schema_group,
        "compatibility": compatibility,
    }
    # NOTE: before the folder is made: a refused setting leaves nothing behind (the hub's own
    # check came after workspace.json was written, which then refused every later open).
    check_workspace_settings({k: v for k, v in given.items() if v is not None}, path=None)
    root = Path(path).expanduser() if path is not None else default_workspace_path()
    check_text_path(root, what="workspace path")
    if root.exists() and not root.is_dir():
        raise ConfigurationError(f"The workspace path {root} is a file, not a folder")
    with writing(root.parent):
        root.mkdir(parents=True, exist_ok=True)
    settings = _settings(root, given)
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
    with contextlib.suppress(OSError):  # a read-only workspace without one
        (root / "lake").mkdir(exist_ok=True)
    _tidy(root, hub)
    lake = LocalLake(root / "lake", appending=hub.appending_files)
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


#: The keyword options :func:`create` takes (``connect()`` refuses any other).
OPTIONS = declared_options(create)
