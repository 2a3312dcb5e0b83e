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

__all__ = ["translate_eventhub_error", "translate_http_error"]

_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return redact(text.splitlines()[0])


def translate_http_error(
    exc: Exception, *, what: str, role: str, credential_option: str = "credential=..."
) -> MetaverseError:
    """A metaverse-kit error for an azure-core exception raised while doing ``what``.

    ``role`` names the Azure role that grants the operation (said when access is denied);
    ``credential_option`` how the caller passes a credential (said when none gets a token).
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
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return TransientServiceError(f"{what}: the connection failed ({detail}); try again")
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        if status in (401, 403):
            return ServiceError(
                f"{what}: access denied (HTTP {status}). Your identity needs the {role} role "
                f"on the resource; see docs/azure.md ({detail})"
            )
        if status in _TRANSIENT_STATUS:
            return TransientServiceError(
                f"{what}: the service is busy or failing (HTTP {status}); try again later "
                f"({detail})"
            )
        return ServiceError(f"{what}: HTTP {status} ({detail})")
    return ServiceError(f"{what}: {detail}")


def translate_eventhub_error(exc: Exception, *, what: str) -> MetaverseError:
    """A metaverse-kit error for an azure-eventhub (or credential) exception."""
    from azure.core.exceptions import ClientAuthenticationError
    from azure.eventhub.exceptions import (
        AuthenticationError,
        ConnectError,
        ConnectionLostError,
        EventDataSendError,
        OperationTimeoutError,
    )

    detail = _first_line(exc)
    if isinstance(exc, AuthenticationError):
        return ServiceError(
            f"{what}: the event hub refused the credentials ({detail}). The identity needs the "
            "Azure Event Hubs Data Sender role, or the connection string's policy the Send claim"
        )
    if isinstance(exc, ClientAuthenticationError):
        return ServiceError(
            f"{what}: no Azure credential could get a token ({detail}). Run `az login`, or "
            "pass credential=..."
        )
    if isinstance(exc, (ConnectError, ConnectionLostError, OperationTimeoutError)):
        return TransientServiceError(
            f"{what}: lost or could not open the connection ({detail}); try again"
        )
    if isinstance(exc, EventDataSendError):
        lowered = detail.lower()
        if any(word in lowered for word in ("busy", "throttl", "timeout", "timed out")):
            return TransientServiceError(f"{what}: the service is busy ({detail}); try again")
        return ServiceError(f"{what}: the service refused the events ({detail})")
    return ServiceError(f"{what}: {detail}")
