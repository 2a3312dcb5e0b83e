"""Translation of Azure SDK exceptions into metaverse-kit's errors, at the backend boundary.

Every message is redacted (no keys, signatures or tokens) and says what to do: which role is
missing, that ``az login`` is needed, or that trying again later may work.
"""

from __future__ import annotations

from metaverse_kit.errors import (
    MetaverseError,
    SchemaNotFoundError,
    ServiceError,
    TransientServiceError,
)
from metaverse_kit.redact import redact

__all__ = ["no_such_host", "translate_eventhub_error", "translate_http_error"]

_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return redact(text.splitlines()[0])


# Storage's error codes for a key or SAS that the account does not accept (a wrong or
# rotated key, an expired or tampered SAS): no role assignment helps with these.
_BAD_SIGNATURE_CODES = {"AuthenticationFailed"}
# Storage's error code for a request that is authenticated but not permitted: a role missing
# for a token, or a SAS without the permission (``l`` to list, ``r`` to read).
_PERMISSION_CODES = {"AuthorizationPermissionMismatch", "AuthorizationFailure"}
# What resolvers say when the name server answered that the host does not exist (not that it
# could not be asked: "Temporary failure in name resolution" is left to the retries).
_NO_SUCH_HOST = (
    "name or service not known",
    "nodename nor servname",
    "[errno 11001]",  # Windows' WSAHOST_NOT_FOUND (11002, try again, says "getaddrinfo" too)
    "no address associated",
)
# What resolvers say when a host name could not be resolved: it does not exist (a typo in an
# account or namespace name), or no name server answered.
_UNRESOLVED = (
    "failed to resolve",
    "getaddrinfo failed",
    "temporary failure in name resolution",
    *_NO_SUCH_HOST,
)


def no_such_host(exc: BaseException) -> bool:
    """Whether ``exc`` says a host name does not exist: no retry will make it resolve."""
    text = " ".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None)
    return any(word in text.lower() for word in _NO_SUCH_HOST)


def _unresolved_host(exc: BaseException) -> bool:
    text = " ".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None)
    return any(word in text.lower() for word in _UNRESOLVED)


def translate_http_error(
    exc: Exception,
    *,
    what: str,
    role: str,
    credential_option: str = "credential=...",
    resource: str | None = None,
) -> MetaverseError:
    """A metaverse-kit error for an azure-core exception raised while doing ``what``.

    ``role`` names the Azure role that grants the operation (said when access is denied);
    ``credential_option`` how the caller passes a credential (said when none gets a token);
    ``resource`` the resource the role must be granted on (a namespace, an account), when
    ``what`` does not name it already.
    """
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    detail = _first_line(exc)
    if isinstance(exc, ResourceNotFoundError) or (
        isinstance(exc, HttpResponseError) and exc.status_code == 404
    ):
        return SchemaNotFoundError(f"{what}: not found ({detail})")
    if isinstance(exc, ClientAuthenticationError) and getattr(exc, "status_code", None) is None:
        return ServiceError(
            f"{what}: no Azure credential could get a token ({detail}). Run `az login` (and "
            f"`az account set --subscription ...`), or pass {credential_option}"
        )
    on = f" on {resource}" if resource else " on the resource"
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        if _unresolved_host(exc):
            # NOTE: still transient (a laptop offline cannot resolve anything either), but the
            # likelier cause is a misspelt account or namespace, which no retry mends.
            return TransientServiceError(
                f"{what}: the host name could not be resolved ({detail}). Check the account "
                "or namespace name for a typo, and the network connection"
            )
        return TransientServiceError(f"{what}: the connection failed ({detail}); try again")
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        code = getattr(exc, "error_code", None) or ""
        code = str(getattr(code, "value", code))
        # NOTE: Azurite says AuthorizationFailure where Azure says AuthenticationFailed; both
        # word the message alike.
        bad_signature = code in _BAD_SIGNATURE_CODES or "failed to authenticate" in detail.lower()
        if status in (401, 403) and bad_signature:
            return ServiceError(
                f"{what}: the storage account did not accept the credential (HTTP {status} "
                f"{code}): the account key is wrong or was rotated, or the SAS token expired "
                f"or is for another account. Copy a current key or SAS from the portal "
                f"({detail})"
            )
        if status in (401, 403) and code in _PERMISSION_CODES:
            return ServiceError(
                f"{what}: access denied (HTTP {status} {code}). A signed-in identity needs "
                f"the {role} role{on}; a SAS token needs the list (l) and read (r) "
                f"permissions; see docs/azure.md ({detail})"
            )
        if status == 401:
            return ServiceError(
                f"{what}: the service refused the token (HTTP 401): it expired, or is for "
                "another tenant. Run `az login` again (or renew the credential), then "
                f"retry (the identity also needs the {role} role{on}) ({detail})"
            )
        if status == 403:
            return ServiceError(
                f"{what}: access denied (HTTP 403). Your identity needs the {role} role{on}; "
                f"see docs/azure.md ({detail})"
            )
        if status in _TRANSIENT_STATUS:
            response = getattr(exc, "response", None)
            wait = getattr(response, "headers", {}).get("Retry-After") if response else None
            later = f"try again in {wait} s" if wait and str(wait).isdigit() else "try again later"
            return TransientServiceError(
                f"{what}: the service is busy or failing (HTTP {status}); {later} ({detail})"
            )
        return ServiceError(f"{what}: HTTP {status} ({detail})")
    return ServiceError(f"{what}: {detail}")


def translate_eventhub_error(
    exc: Exception,
    *,
    what: str,
    resource: str | None = None,
    role: str = "Azure Event Hubs Data Sender",
    claim: str = "Send",
) -> MetaverseError:
    """A metaverse-kit error for an azure-eventhub (or credential) exception.

    ``resource`` names where ``role`` (or a policy's ``claim``) must be granted.
    """
    from azure.core.exceptions import ClientAuthenticationError
    from azure.eventhub.exceptions import (
        AuthenticationError,
        ConnectError,
        ConnectionLostError,
        EventDataSendError,
        OperationTimeoutError,
    )

    detail = _first_line(exc)
    on = f" on {resource}" if resource else ""
    if isinstance(exc, AuthenticationError):
        return ServiceError(
            f"{what}: the event hub refused the credentials ({detail}). The identity needs the "
            f"{role} role{on}, or the connection string's policy the {claim} claim"
        )
    if isinstance(exc, ClientAuthenticationError):
        return ServiceError(
            f"{what}: no Azure credential could get a token ({detail}). Run `az login`, or "
            "pass credential=..."
        )
    if isinstance(exc, (ConnectError, ConnectionLostError, OperationTimeoutError)):
        if _unresolved_host(exc):
            return TransientServiceError(
                f"{what}: the namespace's host name could not be resolved ({detail}). Check the "
                "namespace name (or the connection string's Endpoint) for a typo, and the "
                "network connection"
            )
        return TransientServiceError(
            f"{what}: lost or could not open the connection ({detail}); try again"
        )
    if isinstance(exc, EventDataSendError):
        lowered = detail.lower()
        if any(word in lowered for word in ("busy", "throttl", "timeout", "timed out")):
            return TransientServiceError(f"{what}: the service is busy ({detail}); try again")
        return ServiceError(f"{what}: the service refused the events ({detail})")
    return ServiceError(f"{what}: {detail}")
