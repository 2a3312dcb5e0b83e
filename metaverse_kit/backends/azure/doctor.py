"""``metaverse doctor`` on an Azure workspace: can the credential in use do what the toolkit does?

Each check calls the service the way the toolkit does, with the workspace's own clients:

- sign-in: a token for Event Hubs from the credential (else: ``az login``);
- schema groups: list the namespace's groups, find the workspace's (Schema Registry Reader);
- read schemas: look up the built-in MCE schema's id and read it (Schema Registry Reader);
- register, with ``--write``: register the built-in MCE schema, which adds no version when it
  is there already (Schema Registry Contributor);
- event hub: read the hub's properties, its partition ids (Azure Event Hubs Data Receiver);
- send, with ``--write``: one probe event, a JSON body marked with the application property
  ``metaverse-doctor=probe`` (Azure Event Hubs Data Sender);
- Capture container: list the Capture files and read the newest (Storage Blob Data Reader).

A refused call (HTTP 401/403, an AMQP authentication error) becomes a finding naming the role
and the ``az role assignment create`` command that grants it, with the scope (the namespace,
the event hub, the Capture container) found by ``az`` itself and the assignee read from the
credential's token (its object id) when it has one. Nothing secret is printed: every message
goes through :func:`~metaverse_kit.redact.redact`, and tokens are never shown.

Findings have the shape of the local workspace's doctor: a severity, a message and a fix.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metaverse_kit.backends.protocols import EventHub, Lake, OutgoingEvent, SchemaRegistry
from metaverse_kit.errors import EmitError, MetaverseError, SchemaNotFoundError
from metaverse_kit.redact import redact

__all__ = [
    "PROBE_PROPERTY",
    "ROLES",
    "SEVERITIES",
    "Finding",
    "diagnose",
    "format_findings",
    "grant_command",
]

#: Severities, mildest first: passed, skipped or said for information, worth a look, broken.
SEVERITIES = ("ok", "info", "warning", "error")
#: The application property (and value) marking the probe event ``--write`` sends.
PROBE_PROPERTY = ("metaverse-doctor", "probe")
#: The data-plane roles, by what they let the toolkit do.
ROLES = {
    "read schemas": "Schema Registry Reader",
    "register schemas": "Schema Registry Contributor",
    "follow the hub": "Azure Event Hubs Data Receiver",
    "emit": "Azure Event Hubs Data Sender",
    "replay the lake": "Storage Blob Data Reader",
}
_SCOPE = "https://eventhubs.azure.net/.default"


@dataclass(frozen=True)
class Finding:
    """One check's outcome: what was checked, how bad, what was seen, and how to fix it.

    ``role`` names the Azure role that was missing (None when the check passed or failed for
    another reason); ``fix`` is the command or step that repairs it ("" when nothing to do).
    """

    check: str
    severity: str
    message: str
    fix: str = ""
    role: str | None = None


@dataclass(frozen=True)
class _Scopes:
    """Shell expressions that print the resource ids of the role assignments' scopes."""

    namespace: str
    eventhub: str
    container: str


def _scopes(namespace: str, eventhub: str, lake_root: str) -> _Scopes:
    short = namespace.split(".", 1)[0]
    ns = (
        f"$(az resource list --name {short} --resource-type Microsoft.EventHub/namespaces "
        "--query '[0].id' -o tsv)"
    )
    account, container = "<storage account>", "<container>"
    if lake_root.startswith(("abfs://", "abfss://")):
        from metaverse_kit.backends.azure.lake import parse_lake_url

        try:
            found, container, _ = parse_lake_url(lake_root)
            account = found or account
        except MetaverseError:
            pass
    storage = f"$(az storage account show --name {account} --query id -o tsv)"
    return _Scopes(
        namespace=ns,
        eventhub=f"{ns}/eventhubs/{eventhub}",
        container=f"{storage}/blobServices/default/containers/{container}",
    )


def _principal(token: str) -> tuple[str, str] | None:
    """``(object id, principal type)`` from an access token's claims, None when it has none.

    The token's claims are read, never checked or shown: the service checks it, and only the
    object id (not a secret) goes into the command.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    oid = claims.get("oid") if isinstance(claims, dict) else None
    if not isinstance(oid, str) or not oid:
        return None
    user = claims.get("idtyp", "user") == "user" and "upn" in claims
    kind = "User" if user else "ServicePrincipal"
    return oid, kind


def grant_command(role: str, scope: str, principal: tuple[str, str] | None = None) -> str:
    """The ``az role assignment create`` command granting ``role`` on ``scope``.

    ``principal`` is ``(object id, "User" | "ServicePrincipal")``; without it the command
    grants the role to the user signed in to ``az``.
    """
    if principal is None:
        who = '--assignee "$(az ad signed-in-user show --query id -o tsv)"'
    else:
        who = f"--assignee-object-id {principal[0]} --assignee-principal-type {principal[1]}"
    return f'az role assignment create {who} --role "{role}" --scope "{scope}"'


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, what it was raised from, and the per-event failures of an EmitError."""
    out: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop()
        if e in out:
            continue
        out.append(e)
        todo.extend(c for c in (e.__cause__, e.__context__) if c is not None)
        if isinstance(e, EmitError):
            todo.extend(f for _, f in e.failures)
    return out


def _refusal(exc: BaseException) -> str | None:
    """``"denied"`` (401/403, AMQP auth), ``"sign-in"`` (no token at all) or None (other)."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    from azure.eventhub.exceptions import AuthenticationError

    for e in _causes(exc):
        if isinstance(e, AuthenticationError):
            return "denied"
        if isinstance(e, HttpResponseError) and e.status_code in (401, 403):
            return "denied"
        if isinstance(e, ClientAuthenticationError) and getattr(e, "status_code", None) is None:
            return "sign-in"
    return None


def _text(exc: BaseException, limit: int = 240) -> str:
    """The first line of an error's message, redacted and cut to ``limit`` characters."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    text = redact(" ".join(lines[0].split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Doctor:
    def __init__(self, scopes: _Scopes, principal: tuple[str, str] | None) -> None:
        self.scopes = scopes
        self.principal = principal
        self.findings: list[Finding] = []

    def run(
        self,
        check: str,
        call: Callable[[], str],
        *,
        role: str,
        scope: str,
        what: str,
        claim: str | None = None,
    ) -> bool:
        """Run ``call`` (which returns what it saw); record the finding; True when it passed."""
        try:
            seen = call()
        except (MetaverseError, OSError) as exc:
            refusal = _refusal(exc)
            if refusal == "denied":
                policy = (
                    f" (with $CONNECTION_STRING: its policy lacks the {claim} claim)"
                    if claim
                    else ""
                )
                self.findings.append(
                    Finding(
                        check,
                        "error",
                        f"{what} was refused: the identity lacks the {role} role{policy}",
                        grant_command(role, scope, self.principal),
                        role,
                    )
                )
            elif refusal == "sign-in":
                self.findings.append(
                    Finding(
                        check,
                        "error",
                        f"{what} failed: no Azure credential could get a token",
                        "az login (on a server: az login --use-device-code)",
                    )
                )
            else:
                self.findings.append(Finding(check, "error", _text(exc), "see the message"))
            return False
        self.findings.append(Finding(check, "ok", redact(seen)))
        return True

    def skip(self, check: str, message: str) -> None:
        self.findings.append(Finding(check, "info", message))


def diagnose(
    *,
    registry: SchemaRegistry,
    hub: EventHub,
    lake: Lake,
    schema_group: str,
    credential: Any = None,
    write: bool = False,
) -> list[Finding]:
    """Check each operation the toolkit needs on Azure; one :class:`Finding` per check.

    ``credential`` (a ``TokenCredential``, the one the workspace uses) is asked for a token
    first, and its object id goes into the commands. Without ``write`` nothing is changed:
    registering and sending are skipped (``info``). With it, the built-in MCE schema is
    registered (already there: nothing new) and one probe event is sent, a JSON body with
    the application property ``metaverse-doctor=probe`` (replays keep it as an event that is
    not registry Avro). Never raises for a refused call: that is a finding.
    """
    from metaverse_kit.events.builtin import mce_definition

    scopes = _scopes(hub.namespace, hub.name, getattr(lake, "root", ""))
    principal: tuple[str, str] | None = None
    pre: list[Finding] = []
    if credential is not None:
        try:
            token = credential.get_token(_SCOPE)
        except Exception as exc:
            pre.append(
                Finding(
                    "sign-in",
                    "error",
                    f"no Azure credential could get a token ({_text(exc, 120)})",
                    "az login (on a server: az login --use-device-code), then "
                    "az account set --subscription <subscription>",
                )
            )
        else:
            principal = _principal(getattr(token, "token", ""))
            who = f"object id {principal[0]}" if principal else "an identity"
            pre.append(Finding("sign-in", "ok", f"the credential signs in as {who}"))
    doctor = _Doctor(scopes, principal)
    doctor.findings.extend(pre)
    reader, contributor = ROLES["read schemas"], ROLES["register schemas"]

    def groups() -> str:
        names = registry.list_groups()
        if schema_group not in names:
            raise SchemaNotFoundError(
                f"the namespace has no schema group {schema_group!r} (it has "
                f"{', '.join(names) or 'none'}): create it with az eventhubs namespace "
                "schema-registry create"
            )
        return f"{len(names)} schema group(s), {schema_group!r} among them"

    listed = doctor.run(
        "schema groups",
        groups,
        role=reader,
        scope=scopes.namespace,
        what="Listing the schema groups",
    )
    definition = mce_definition()

    def read() -> str:
        try:
            props = registry.get_schema_properties(schema_group, definition)
        except SchemaNotFoundError:
            return (
                f"the built-in MCE schema is not registered in {schema_group!r} yet; the first "
                "emit registers it (Schema Registry Contributor)"
            )
        registry.get_schema(props.id)
        return f"read the built-in MCE schema (id {props.id}, version {props.version})"

    if listed:
        doctor.run(
            "read schemas",
            read,
            role=reader,
            scope=scopes.namespace,
            what="Reading a schema",
        )
    else:
        doctor.skip("read schemas", "not checked: the schema groups could not be listed")
    if write:

        def register() -> str:
            props = registry.register_schema(schema_group, definition)
            return f"registering works (the built-in MCE schema is version {props.version})"

        doctor.run(
            "register schemas",
            register,
            role=contributor,
            scope=scopes.namespace,
            what="Registering a schema",
        )
    else:
        doctor.skip(
            "register schemas", f"not checked: run with --write to register ({contributor})"
        )

    def properties() -> str:
        ids = hub.partition_ids()
        return f"event hub {hub.name} has {len(ids)} partition(s): {', '.join(ids)}"

    doctor.run(
        "event hub",
        properties,
        role=ROLES["follow the hub"],
        scope=scopes.eventhub,
        what=f"Reading the properties of {hub.name}",
        claim="Listen",
    )
    sender = ROLES["emit"]
    if write:

        def send() -> str:
            key, value = PROBE_PROPERTY
            message_id = f"metaverse-doctor-{uuid.uuid4().hex}"
            body = json.dumps({key: value, "note": "sent by metaverse doctor --write"}).encode()
            event = OutgoingEvent(
                body=body,
                content_type="application/json",
                partition_key="metaverse-doctor-probe",
                message_id=message_id,
                properties={key: value},
            )
            hub.send([event], schema_ids=[""])
            return f"sent one probe event (message id {message_id}, {key}={value})"

        doctor.run("send", send, role=sender, scope=scopes.eventhub, what=f"Sending to {hub.name}")
    else:
        doctor.skip("send", f"not checked: run with --write to send one probe event ({sender})")

    def capture() -> str:
        files = lake.list_files()
        if not files:
            return "the Capture container is readable and holds no Capture file yet"
        data = lake.read_bytes(files[-1])
        return f"{len(files)} Capture file(s); read the newest ({len(data)} bytes)"

    if any(f.check == "sign-in" and f.severity == "error" for f in pre):
        # NOTE: the storage SDK retries a failed sign-in for about a minute and a half.
        doctor.skip("Capture container", "not checked: sign in first (az login)")
    else:
        doctor.run(
            "Capture container",
            capture,
            role=ROLES["replay the lake"],
            scope=scopes.container,
            what="Reading the Capture container",
        )
    return doctor.findings


_SIGNS = {"ok": "✔", "info": "-", "warning": "!", "error": "✖"}


def format_findings(findings: list[Finding]) -> str:
    """The findings as text: one line each, then the missing role and the fix, indented."""
    lines = []
    for f in findings:
        lines.append(f"{_SIGNS.get(f.severity, '?')} {f.check}: {f.message}")
        if f.role:
            lines.append(f"    missing role: {f.role}")
        if f.fix and f.severity in ("warning", "error"):
            lines.append(f"    fix: {f.fix}")
    errors = sum(f.severity == "error" for f in findings)
    lines.append(
        f"{errors} problem(s) found" if errors else "Everything checked works with this identity."
    )
    return "\n".join(redact(line) for line in lines)
