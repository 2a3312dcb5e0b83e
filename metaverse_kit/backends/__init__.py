"""Backends, found by name: ``"local"``, ``"azure"``, or the dotted path of a module of your own.

A backend is a module (its ``factory``) with ``create(**options) -> BackendParts`` and
``OPTIONS``, the names of the keyword options ``create`` takes (see
:class:`~metaverse_kit.backends.protocols.BackendFactory`; :func:`declared_options` reads them
off ``create``'s signature). A backend whose packages are not installed stays listed by
:func:`available_backends` with the reason, and loading it raises
:class:`MissingDependencyError` with the ``pip install`` line.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

from metaverse_kit.backends.protocols import Lake
from metaverse_kit.errors import ConfigurationError, MissingDependencyError

__all__ = ["available_backends", "check_options", "declared_options", "load_backend", "open_lake"]

_BUILTIN = {
    "local": ("metaverse_kit.backends.local.factory", ()),
    "azure": (
        "metaverse_kit.backends.azure.factory",
        (
            "azure.eventhub",
            "azure.schemaregistry",
            "azure.schemaregistry.encoder.avroencoder",
            "azure.storage.filedatalake",
            "azure.identity",
        ),
    ),
}
_PIP_NAMES = {
    "azure.eventhub": "azure-eventhub",
    "azure.schemaregistry": "azure-schemaregistry",
    "azure.schemaregistry.encoder.avroencoder": "azure-schemaregistry-avroencoder",
    "azure.storage.filedatalake": "azure-storage-file-datalake",
    "azure.identity": "azure-identity",
}


def _missing(modules: tuple[str, ...]) -> list[str]:
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(_PIP_NAMES.get(name, name))
    return missing


def available_backends() -> dict[str, str | None]:
    """Every built-in backend with None when it can be used, or why it cannot."""
    out: dict[str, str | None] = {}
    for name, (_, needs) in _BUILTIN.items():
        missing = _missing(needs)
        out[name] = f"missing {', '.join(missing)}" if missing else None
    return out


def load_backend(name: str) -> ModuleType:
    """The factory module of a backend. Raises :class:`ConfigurationError` or
    :class:`MissingDependencyError` (with the ``pip install`` line)."""
    if name in _BUILTIN:
        module, needs = _BUILTIN[name]
        missing = _missing(needs)
        if missing:
            raise MissingDependencyError(f"The {name} backend", missing)
        return importlib.import_module(module)
    if "." in name:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"Cannot import the backend module {name!r}: {exc}") from exc
    raise ConfigurationError(
        f"Unknown backend {name!r}: use 'local', 'azure' or the dotted path of a module "
        "with a create() function"
    )


def declared_options(create: Callable[..., Any]) -> tuple[str, ...]:
    """The keyword options a factory's ``create`` takes, in order: a factory's ``OPTIONS``."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in inspect.signature(create).parameters.values() if p.kind in kinds)


def check_options(name: str, factory: ModuleType, options: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigurationError` naming every option ``factory`` does not declare.

    A factory without ``OPTIONS`` (a backend of one's own) is asked through its signature.
    """
    declared = getattr(factory, "OPTIONS", None)  # NOTE: optional for backends of one's own
    if declared is None:
        declared = declared_options(factory.create)
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise ConfigurationError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for the "
            f"{name} backend; it takes {', '.join(declared)}"
        )


def open_lake(location: Any, *, storage_options: dict[str, Any] | None = None) -> Lake:
    """The lake a location names: a :class:`Lake` as it is; an ``abfss://``, ``abfs://`` or
    ``az://`` URL the Azure backend's (``storage_options`` as fsspec takes them); a folder, a
    file or a list of files the local backend's, each as a path or a ``file:`` URI (Spark's
    spelling of a local path).

    Raises :class:`ConfigurationError` for anything else, and for ``storage_options`` with a
    local location.
    """
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise ConfigurationError(
            "storage_options= takes a dict of the options adlfs takes, such as "
            f"{{'account_name': ..., 'credential': ...}}; got {type(storage_options).__name__}"
        )
    if isinstance(location, Lake):
        return location
    location = _file_uri_paths(location)
    if isinstance(location, str) and location.startswith(("abfs://", "abfss://", "az://")):
        factory = load_backend("azure")
        return factory.lake_from_url(location, storage_options=storage_options or {})
    if storage_options:
        raise ConfigurationError("storage_options apply only to abfs:// and abfss:// locations")
    from metaverse_kit.backends.local.lake import LocalLake

    if isinstance(location, (str, os.PathLike)):
        if not os.fspath(location).strip():
            # NOTE: Path("") is the working folder: an empty setting would replay whatever
            # Capture files lie below it (usually none) instead of saying it is empty.
            raise ConfigurationError(
                "The Capture location is empty; give a folder, a file, a list of files or an "
                "abfss:// URL"
            )
        return LocalLake(location)
    if isinstance(location, Iterable) and not isinstance(location, (bytes, bytearray, Mapping)):
        return LocalLake(list(location))
    raise ConfigurationError(
        "A Capture location is a folder, a file, a list of files, an abfss:// URL or a Lake; "
        f"got {type(location).__name__}"
    )


def _file_uri_path(location: Any) -> Any:
    """A ``file:`` URI as the local path it names (Spark's spelling of a path on this machine:
    ``file:/dbfs/...``, ``file:///data/lake/``); anything else as it is. Raises
    :class:`ConfigurationError` for a ``file:`` URI of another host.

    NOTE: read as Spark reads it (Hadoop's paths): the characters as they are, not %-decoded,
    and a ``?`` or ``#`` is part of the name.
    """
    if not (isinstance(location, str) and location.startswith("file:")):
        return location
    path = location[len("file:") :]
    if path.startswith("//"):
        host, _, rest = path[2:].partition("/")
        if host not in ("", "localhost"):
            raise ConfigurationError(
                f"{location} is not a path on this machine; give the local path of the folder "
                f"(where this machine mounts it) or an abfss:// URL"
            )
        path = "/" + rest
    return path


def _file_uri_paths(location: Any) -> Any:
    """``location`` with its ``file:`` URIs as local paths (see :func:`_file_uri_path`), also in a
    list of files."""
    if isinstance(location, (list, tuple)):
        return [_file_uri_path(item) for item in location]
    return _file_uri_path(location)
