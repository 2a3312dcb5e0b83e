"""Azure's naming rules for the names a workspace is configured with, and paths kept inside it.

Every name a user gives (an Event Hubs namespace, an event hub, a schema group, a schema name) is
checked here, by the rule Azure applies to it, before anything is written; the local backend uses
the same rules so that a workspace that works offline also works on Azure. A name that breaks a
rule raises :class:`ConfigurationError` naming the rule.

Sources: Azure's resource naming rules and the ``Microsoft.EventHub`` ARM specification
(namespaces 6-50, event hubs and schema groups 1-256 characters) and the Schema Registry
data-plane specification (schema names at most 50 characters, pattern
``^[A-Za-z0-9][^\\\\/$:]*$``). ARM documents no character set for schema groups; they go into
the same URL paths as schema names, so they follow the schema-name pattern, with ARM's length.

Event Hubs names a hub's n partitions "0" to "n-1"; :func:`partition_ids` checks the ids a
replay or a tail is limited to.

:func:`inside` is the one check that a path built from such names (or read from a workspace file)
stays inside the folder it is meant for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from metaverse_kit.errors import ConfigurationError

__all__ = [
    "check_eventhub_name",
    "check_namespace_name",
    "check_schema_group_name",
    "check_schema_name",
    "inside",
    "namespace_of_host",
    "no_such_partitions",
    "partition_ids",
    "path_segment",
]

_NAMESPACE = re.compile(r"[A-Za-z][A-Za-z0-9-]{4,48}[A-Za-z0-9]")
_EVENTHUB = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,254}[A-Za-z0-9])?")
# NOTE: the registry's own pattern, plus no control characters or whitespace, which no URL path
# segment carries unencoded and which only ever arrive by mistake.
_REGISTRY_NAME = re.compile(r"[A-Za-z0-9][^\\/$:#?%\s\x00-\x1f\x7f]*")

_PARTITION = re.compile(r"0|[1-9][0-9]{0,5}")

_NAMESPACE_RULE = (
    "an Event Hubs namespace name has 6 to 50 characters: letters, digits and hyphens, "
    "starting with a letter and ending with a letter or digit"
)
_EVENTHUB_RULE = (
    "an event hub name has 1 to 256 characters: letters, digits, '.', '-' and '_', "
    "starting and ending with a letter or digit"
)
_GROUP_RULE = (
    "a schema group name has 1 to 256 characters, starts with a letter or digit, and has no "
    "'/', '\\', '$', ':', '#', '?', '%', spaces or control characters"
)
_SCHEMA_RULE = (
    "a schema name has 1 to 50 characters, starts with a letter or digit, and has no "
    "'/', '\\', '$', ':', '#', '?', '%', spaces or control characters"
)


def _fail(what: str, value: object, rule: str) -> ConfigurationError:
    return ConfigurationError(f"Invalid {what} {value!r}: {rule}")


def _check(value: object, pattern: re.Pattern[str], max_len: int, what: str, rule: str) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"The {what} must be text, got {type(value).__name__}")
    if len(value) > max_len or not pattern.fullmatch(value):
        raise _fail(what, value, rule)
    return value


def check_namespace_name(name: object, *, what: str = "namespace name") -> str:
    """Return ``name`` when it is a valid Event Hubs namespace name; else ConfigurationError.

    Also refuses the suffixes ``-sb`` and ``-mgmt``, which Azure reserves.
    """
    value = _check(name, _NAMESPACE, 50, what, _NAMESPACE_RULE)
    if value.lower().endswith(("-sb", "-mgmt")):
        raise _fail(what, value, _NAMESPACE_RULE + "; it may not end in '-sb' or '-mgmt'")
    return value


def check_eventhub_name(name: object, *, what: str = "event hub name") -> str:
    """Return ``name`` when it is a valid event hub name; else :class:`ConfigurationError`."""
    return _check(name, _EVENTHUB, 256, what, _EVENTHUB_RULE)


def check_schema_group_name(name: object, *, what: str = "schema group name") -> str:
    """Return ``name`` when it is a valid schema group name; else :class:`ConfigurationError`."""
    return _check(name, _REGISTRY_NAME, 256, what, _GROUP_RULE)


def check_schema_name(name: object, *, what: str = "schema name") -> str:
    """Return ``name`` when Azure Schema Registry takes it as a schema name.

    Raises :class:`ConfigurationError`; a longer Avro full name can be registered under a
    shorter ``name=``.
    """
    value = _check(name, _REGISTRY_NAME, 50, what, _SCHEMA_RULE)
    return value


def partition_ids(partitions: object, *, what: str = "partitions=") -> tuple[str, ...] | None:
    """``partitions`` (ids as text or numbers) as Event Hubs names them: ``"0"`` to ``"n-1"``.

    None stays None (every partition). Raises :class:`ConfigurationError` for an id that no
    event hub has (not a whole number from 0: ``"x"``, ``-1``, ``"01"``, ``True``) and for a lone
    id or string where a list belongs (``partitions="12"`` would otherwise mean 1 and 2).
    """
    if partitions is None:
        return None
    if isinstance(partitions, (str, bytes, int)) or not isinstance(partitions, Iterable):
        raise ConfigurationError(
            f"{what} takes a list of partition ids such as ['0', '1'], not {partitions!r}"
        )
    ids = []
    for p in partitions:
        text = str(p) if isinstance(p, int) and not isinstance(p, bool) else p
        if not isinstance(text, str) or not _PARTITION.fullmatch(text):
            raise ConfigurationError(
                f"{what} names partition {p!r}; Event Hubs partition ids are the whole "
                "numbers 0 to n-1 of a hub's n partitions, as text ('0') or numbers (0)"
            )
        ids.append(text)
    return tuple(ids)


def no_such_partitions(unknown: Sequence[str], known: Sequence[str]) -> ConfigurationError:
    """The error for partition ids the event hub does not have (``known`` are its ids)."""
    return ConfigurationError(
        f"The event hub has no partition {', '.join(unknown)}; it has {', '.join(known)}"
    )


def namespace_of_host(host: str) -> str | None:
    """The namespace name in ``<name>.servicebus.<cloud suffix>``; None for other hosts.

    Other hosts (an emulator on ``127.0.0.1:5672``, a private endpoint) are taken as they are.
    Raises :class:`ConfigurationError` when the host is a Service Bus host with an invalid name.
    """
    first, dot, rest = host.partition(".")
    if not dot or not rest.lower().startswith("servicebus."):
        return None
    return check_namespace_name(first, what=f"namespace name (in {host!r})")


def path_segment(value: object, *, what: str) -> str:
    """Return ``value`` when it can be one folder or file name; else ConfigurationError.

    The check where a path is built from a name (the naming rules above are checked where
    settings come in): no separator, no NUL, not empty, not ``.`` or ``..``.
    """
    if (
        not isinstance(value, str)
        or value in ("", ".", "..")
        or any(c in value for c in ("/", "\\", "\x00"))
    ):
        raise ConfigurationError(
            f"Invalid {what} {value!r}: it becomes a folder name in the workspace, so it cannot "
            "be empty, '.' or '..', or hold '/', '\\' or NUL"
        )
    return value


def inside(root: str | os.PathLike[str], *parts: str) -> Path:
    """``root`` joined with ``parts``, refused when the result would leave ``root``.

    Parts are names, not paths: an absolute part, ``..``, or a part that resolves (through
    symbolic links too) outside ``root`` raises :class:`ConfigurationError`.
    """
    base = Path(root)
    path = base.joinpath(*parts)
    resolved_base = base.resolve()
    resolved = path.resolve()
    if resolved != resolved_base and resolved_base not in resolved.parents:
        raise ConfigurationError(
            f"Refusing to write {path}: it is outside the workspace folder {base}"
        )
    return path
