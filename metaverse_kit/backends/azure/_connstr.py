"""Reading the non-secret parts of connection strings (endpoint, entity, account).

Only the SDKs' ``from_connection_string`` constructors receive the whole string; these helpers
read where it points, for reprs and for the registry's namespace, and never echo the string.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from metaverse_kit.errors import ConfigurationError

__all__ = ["parse_connection_string", "parse_eventhub_connection_string"]


def parse_connection_string(conn_str: str, *, what: str) -> dict[str, str]:
    """The ``Key=Value;`` pairs of a connection string, keys lower-cased.

    Raises :class:`ConfigurationError` (without the string) when it is not one.
    """
    pairs: dict[str, str] = {}
    for part in conn_str.strip().split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(
                f"The {what} connection string is malformed: expected Key=Value pairs separated "
                "by ';' (the string itself is not shown, it holds a secret)"
            )
        pairs[key.strip().lower()] = value.strip()
    return pairs


def parse_eventhub_connection_string(conn_str: str) -> tuple[str, str | None]:
    """``(fully qualified namespace, entity path or None)`` of an Event Hubs connection string.

    The namespace keeps an explicit port (``127.0.0.1:5672`` for an emulator).
    """
    pairs = parse_connection_string(conn_str, what="Event Hubs")
    endpoint = pairs.get("endpoint", "")
    host = urlsplit(endpoint).netloc if "://" in endpoint else endpoint.strip("/")
    if not host:
        raise ConfigurationError(
            "The Event Hubs connection string has no Endpoint=sb://<namespace>.servicebus."
            "windows.net/ part"
        )
    if not any(k in pairs for k in ("sharedaccesskey", "sharedaccesssignature")):
        raise ConfigurationError(
            "The Event Hubs connection string has neither SharedAccessKey nor "
            "SharedAccessSignature; copy it from the portal's Shared access policies"
        )
    return host, pairs.get("entitypath") or None
