"""The one place where metaverse-kit reads the environment and its configuration files.

Explicit arguments to :func:`metaverse_kit.connect` always win; then the environment; then the
workspace's ``config.toml``; then the user's ``~/.config/metaverse/config.toml``. Nothing else
in metaverse-kit reads ``os.environ``.

Environment variables
---------------------

====================================  ===========================================================
``METAVERSE_BACKEND``                 ``local`` (the default) or ``azure``
``METAVERSE_HOME``                    the local workspace folder (default ``./.metaverse``); on
                                      Azure, where the outbox and the known schemas are kept
``METAVERSE_CONFIG``                  a config file to read instead of the two default ones
``METAVERSE_NAMESPACE``               the Event Hubs namespace, ``<name>.servicebus.windows.net``
``METAVERSE_EVENTHUB``                the event hub (``EVENTHUB`` is read too, as the original
                                      framework named it)
``METAVERSE_SCHEMA_GROUP``            the Schema Registry group (default ``metadata``)
``METAVERSE_LAKE``                    the Capture lake, ``abfss://<fs>@<account>.dfs.core.windows.net/``
``METAVERSE_SCHEMAS``                 schema names the registry browser lists (comma-separated)
``CONNECTION_STRING``                 an Event Hubs connection string (the original framework's);
                                      used instead of a credential for sending only
``AZURE_STORAGE_CONNECTION_STRING``   a storage connection string for the lake
``METAVERSE_PLANNER``                 the steward app's row planner, ``package.module:function``
                                      (``metaverse app --planner`` sets it for its kernels)
====================================  ===========================================================

Config file
-----------

TOML, at ``<workspace>/config.toml`` or ``~/.config/metaverse/config.toml`` (``$XDG_CONFIG_HOME``
is honoured), or the file ``$METAVERSE_CONFIG`` names::

    backend = "azure"

    [azure]
    fully_qualified_namespace = "ehns-metaverse.servicebus.windows.net"
    eventhub = "eh-metaverse"
    schema_group = "metadata"
    lake = "abfss://main@<account>.dfs.core.windows.net/"
    schemas = ["com.linkedin.pegasus2avro.mxe.MetadataChangeEvent"]

Secrets (connection strings, keys) are refused in config files: they belong in the environment
or, better, nowhere (use ``az login`` and the default credential).

Workspace settings
------------------

A local workspace's ``workspace.json`` holds the settings it was created with (see
:data:`WORKSPACE_SETTINGS`); :func:`check_workspace_settings` holds each one to the range Azure
gives the resource it stands for, naming the file, the key, the value and what was expected.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaverse_kit.errors import ConfigurationError
from metaverse_kit.names import (
    check_eventhub_name,
    check_namespace_name,
    check_schema_group_name,
    namespace_of_host,
)

__all__ = [
    "CAPTURE_WINDOW_SECONDS",
    "DEFAULT_WORKSPACE",
    "MAX_PARTITIONS",
    "WORKSPACE_SETTINGS",
    "AzureSettings",
    "app_planner",
    "azure_settings",
    "check_workspace_settings",
    "config_files",
    "default_backend",
    "default_workspace_path",
    "read_config_file",
    "workspace_setting_problems",
]

DEFAULT_WORKSPACE = ".metaverse"

_AZURE_KEYS = {"fully_qualified_namespace", "eventhub", "schema_group", "lake", "schemas"}
_SECRET_HINTS = ("connection_string", "key", "secret", "password", "token", "sas")


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def default_workspace_path(environ: Mapping[str, str] | None = None) -> Path:
    """The local workspace folder: ``$METAVERSE_HOME``, else ``./.metaverse``."""
    home = _env(environ).get("METAVERSE_HOME", "").strip()
    return Path(home).expanduser() if home else Path(DEFAULT_WORKSPACE)


def config_files(
    environ: Mapping[str, str] | None = None, *, workspace: str | Path | None = None
) -> list[Path]:
    """The config files that are read, most important first (missing ones are skipped later).

    ``$METAVERSE_CONFIG`` alone when set; else the workspace's ``config.toml`` and the user's
    ``$XDG_CONFIG_HOME/metaverse/config.toml`` (``~/.config/...`` by default).
    """
    env = _env(environ)
    explicit = env.get("METAVERSE_CONFIG", "").strip()
    if explicit:
        return [Path(explicit).expanduser()]
    folder = Path(workspace).expanduser() if workspace is not None else default_workspace_path(env)
    xdg = env.get("XDG_CONFIG_HOME", "").strip()
    user_root = (
        Path(xdg).expanduser() if xdg else Path(env.get("HOME", "~")).expanduser() / ".config"
    )
    return [folder / "config.toml", user_root / "metaverse" / "config.toml"]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings of one config file ({} when it does not exist).

    Raises :class:`ConfigurationError` for invalid TOML, unknown keys, or secrets in the file.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"The config file {path} is not valid TOML: {exc}") from exc
    unknown = set(data) - {"backend", "azure"}
    azure = data.get("azure", {})
    if not isinstance(azure, dict):
        raise ConfigurationError(f"In {path}, [azure] must be a table")
    secrets = sorted(k for k in azure if any(h in k.lower() for h in _SECRET_HINTS))
    if secrets:
        raise ConfigurationError(
            f"{path} holds {', '.join(secrets)}: secrets do not belong in config files; "
            "use `az login` (the default credential) or the environment variables "
            "CONNECTION_STRING / AZURE_STORAGE_CONNECTION_STRING"
        )
    unknown |= {f"azure.{k}" for k in set(azure) - _AZURE_KEYS}
    if unknown:
        raise ConfigurationError(
            f"Unknown settings in {path}: {', '.join(sorted(unknown))}; the file takes backend "
            f"and [azure] {', '.join(sorted(_AZURE_KEYS))}"
        )
    schemas = azure.get("schemas", [])
    if not isinstance(schemas, list) or not all(isinstance(s, str) for s in schemas):
        raise ConfigurationError(f"In {path}, azure.schemas must be a list of schema names")
    return data


def _file_settings(env: Mapping[str, str], workspace: str | Path | None) -> dict[str, Any]:
    merged: dict[str, Any] = {"azure": {}}
    for path in reversed(config_files(env, workspace=workspace)):
        data = read_config_file(path)
        if "backend" in data:
            merged["backend"] = data["backend"]
        merged["azure"].update(data.get("azure", {}))
    return merged


def default_backend(
    environ: Mapping[str, str] | None = None, *, workspace: str | Path | None = None
) -> str:
    """The backend ``connect()`` uses when none is named.

    ``$METAVERSE_BACKEND``, else ``backend`` in a config file, else ``local``.
    """
    env = _env(environ)
    name = env.get("METAVERSE_BACKEND", "").strip()
    if name:
        return name
    backend = _file_settings(env, workspace).get("backend")
    return str(backend).strip() if backend else "local"


@dataclass(frozen=True)
class AzureSettings:
    """The Azure backend's settings as found in the environment and config files.

    Connection strings are kept out of the repr; pass them on only to ``from_connection_string``
    constructors.
    """

    fully_qualified_namespace: str | None = None
    eventhub: str | None = None
    schema_group: str | None = None
    lake: str | None = None
    schemas: tuple[str, ...] = ()
    connection_string: str | None = field(default=None, repr=False)
    storage_connection_string: str | None = field(default=None, repr=False)


def _host(value: str, *, what: str) -> str:
    """A fully qualified namespace whose namespace name (if it is a Service Bus host) is valid."""
    try:
        namespace_of_host(value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{what}: {exc}") from None
    return value


def azure_settings(
    environ: Mapping[str, str] | None = None, *, workspace: str | Path | None = None
) -> AzureSettings:
    """The Azure settings: environment variables over the workspace's and the user's config file.

    Raises :class:`ConfigurationError` for an invalid config file, or a namespace, event hub
    or schema group name that breaks Azure's naming rules (naming the variable or file).
    """
    env = _env(environ)
    file = _file_settings(env, workspace)["azure"]
    files = " or ".join(str(p) for p in config_files(env, workspace=workspace))

    def pick(*names: str, key: str, check: Callable[..., str] | None = None) -> str | None:
        for name in names:
            value = env.get(name, "").strip()
            if value:
                return check(value, what=f"${name}") if check else value
        value = file.get(key)
        if not value:
            return None
        return check(str(value), what=f"azure.{key} (in {files})") if check else str(value)

    schemas_text = env.get("METAVERSE_SCHEMAS", "").strip()
    schemas = (
        tuple(s.strip() for s in schemas_text.split(",") if s.strip())
        if schemas_text
        else tuple(file.get("schemas", ()))
    )
    return AzureSettings(
        fully_qualified_namespace=pick(
            "METAVERSE_NAMESPACE", key="fully_qualified_namespace", check=_host
        ),
        eventhub=pick("METAVERSE_EVENTHUB", "EVENTHUB", key="eventhub", check=check_eventhub_name),
        schema_group=pick(
            "METAVERSE_SCHEMA_GROUP", key="schema_group", check=check_schema_group_name
        ),
        lake=pick("METAVERSE_LAKE", key="lake"),
        schemas=schemas,
        connection_string=env.get("CONNECTION_STRING", "").strip() or None,
        storage_connection_string=env.get("AZURE_STORAGE_CONNECTION_STRING", "").strip() or None,
    )


def app_planner(environ: Mapping[str, str] | None = None) -> str | None:
    """The steward app's row planner, ``package.module:function`` (``$METAVERSE_PLANNER``)."""
    return _env(environ).get("METAVERSE_PLANNER", "").strip() or None


#: The most partitions an event hub can have (on a Dedicated cluster; Basic and Standard
#: allow 32, Premium 100).
MAX_PARTITIONS = 1024
#: The shortest and the longest time window of Event Hubs Capture, in seconds.
CAPTURE_WINDOW_SECONDS = (60, 900)
_CODECS = ("null", "deflate")
#: Schema Registry's compatibility modes (as ``backends.protocols.COMPATIBILITY_MODES``).
_COMPATIBILITY = ("None", "Backward", "Forward")

#: The settings of a local workspace's ``workspace.json``, each with what it must be.
WORKSPACE_SETTINGS: dict[str, str] = {
    "namespace": "an Event Hubs namespace name",
    "eventhub": "an event hub name",
    "partition_count": (
        f"a whole number from 1 to {MAX_PARTITIONS} (the partitions of an event hub: "
        "32 at most on Basic and Standard, 100 on Premium)"
    ),
    "window_seconds": (
        f"a whole number from {CAPTURE_WINDOW_SECONDS[0]} to {CAPTURE_WINDOW_SECONDS[1]} "
        "(Capture's time window, in seconds)"
    ),
    "codec": f"one of {', '.join(map(repr, _CODECS))} (Capture's Avro codecs)",
    "schema_group": "a schema group name",
    "compatibility": f"one of {', '.join(map(repr, _COMPATIBILITY))} (Schema Registry's modes)",
}

_NAME_CHECKS: dict[str, Callable[..., str]] = {
    "namespace": check_namespace_name,
    "eventhub": check_eventhub_name,
    "schema_group": check_schema_group_name,
}


def _setting_problem(key: str, value: Any) -> str | None:
    """What ``value`` should have been as the setting ``key`` (``"expected ..."``), or None."""
    if key in _NAME_CHECKS:
        if not isinstance(value, str):
            return f"expected text ({WORKSPACE_SETTINGS[key]})"
        try:
            _NAME_CHECKS[key](value, what=key)
        except ConfigurationError as exc:
            # NOTE: the names module says "Invalid <key> <value>: <rule>"; the rule is kept.
            said = str(exc)
            prefix = f"Invalid {key} {value!r}: "
            rule = said[len(prefix) :] if said.startswith(prefix) else said
            return f"expected {WORKSPACE_SETTINGS[key]} ({rule})"
        return None
    if key in ("partition_count", "window_seconds"):
        low, high = (1, MAX_PARTITIONS) if key == "partition_count" else CAPTURE_WINDOW_SECONDS
        # NOTE: bool is an int to Python; JSON's true is no count.
        fine = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if fine else f"expected {WORKSPACE_SETTINGS[key]}"
    allowed = _CODECS if key == "codec" else _COMPATIBILITY
    if isinstance(value, str) and value in allowed:
        return None
    return f"expected {WORKSPACE_SETTINGS[key]}"


def workspace_setting_problems(settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, what was expected)`` for each setting of ``settings`` that a local workspace
    cannot open with, in the order of :data:`WORKSPACE_SETTINGS`, then each key that is no
    setting of a workspace (a typo that would otherwise be ignored). ``[]`` when all are fine.
    """
    import difflib

    problems = [
        (key, problem)
        for key in WORKSPACE_SETTINGS
        if key in settings and (problem := _setting_problem(key, settings[key])) is not None
    ]
    for key in settings:
        if key not in WORKSPACE_SETTINGS:
            close = difflib.get_close_matches(str(key), WORKSPACE_SETTINGS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            known = ", ".join(WORKSPACE_SETTINGS)
            problems.append((key, f"no setting has that name ({hint}the settings: {known})"))
    return problems


def check_workspace_settings(settings: Mapping[str, Any], *, path: str | Path | None) -> None:
    """Raise :class:`ConfigurationError` when a setting of a local workspace is of the wrong
    type or out of Azure's range, or is no setting at all; settings left out are not checked.

    ``path`` is the ``workspace.json`` the settings were read from, named in the message with
    every bad key, its value and what was expected; None for options given to ``connect()``.
    """
    problems = workspace_setting_problems(settings)
    if not problems:
        return
    if path is None:
        said = [f"{key}={settings[key]!r:.60} is refused: {what}" for key, what in problems]
        if len(said) == 1:
            raise ConfigurationError(f"The option {said[0]}")
        listed = "\n".join(f"  - {s}" for s in said)
        raise ConfigurationError(f"{len(said)} options are refused:\n{listed}")
    # NOTE: a workspace's events are already partitioned and windowed by what it was created
    # with; another value, even a valid one, would misplace the events to come.
    said = [f"gives {key} as {settings[key]!r:.60}; {what}" for key, what in problems]
    if len(said) == 1:
        key = problems[0][0]
        advice = (
            "put back the value the workspace was created with"
            if key in WORKSPACE_SETTINGS
            else "remove the key, or correct its name"
        )
        raise ConfigurationError(f"{path} {said[0]}: {advice}")
    listed = "\n".join(f"  - {s}" for s in said)
    raise ConfigurationError(
        f"{path} has {len(said)} settings the workspace cannot open with (put back the values "
        f"it was created with):\n{listed}"
    )
