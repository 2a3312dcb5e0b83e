"""``metaverse doctor`` on Azure: 401/403 answers per service through the SDKs' own seams.

The registry and the lake answer through azure-core's ``transport=``; the event hub is the
loopback AMQP endpoint (CBS answering 401 refuses the token). Each refusal must name the role
and print the ``az role assignment create`` command with the right scope, and no secret.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.rest._requests_basic import RestRequestsTransportResponse

import metaverse_kit as mk
from metaverse_kit import cli
from metaverse_kit.backends.azure.doctor import (
    PROBE_PROPERTY,
    Finding,
    diagnose,
    format_findings,
    grant_command,
)
from metaverse_kit.backends.azure.hub import AzureEventHub
from metaverse_kit.backends.azure.lake import AzureLake
from metaverse_kit.backends.azure.registry import AzureSchemaRegistry
from tests.backends.azure._amqp_endpoint import LoopbackEventHubs
from tests.backends.azure._registry_service import (
    FakeCredential,
    FakeTransport,
    RegistryService,
    RegistryTransport,
)
from tests.backends.azure.conftest import Azurite

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
LAKE = "abfss://main@stlake.dfs.core.windows.net/"


class DenyingTransport(FakeTransport):
    """azure-core transport answering every request with ``status`` (401 or 403)."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[str] = []

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.requests.append(f"{request.method} {request.url}")
        code = "AuthorizationPermissionMismatch" if self.status == 403 else "InvalidAuthInfo"
        body = json.dumps({"error": {"code": code, "message": "This request is not authorized"}})
        raw = requests.Response()
        raw.status_code = self.status
        raw.headers.update({"Content-Type": "application/json", "x-ms-error-code": code})
        raw.raw = io.BytesIO(body.encode())
        raw.url = request.url
        raw.reason = "Forbidden" if self.status == 403 else "Unauthorized"
        return RestRequestsTransportResponse(request=request, internal_response=raw)


class JwtCredential(FakeCredential):
    """A credential whose token carries an object id, as Entra ID tokens do (unsigned here)."""

    oid = "0b7d1c6e-7a57-4d2b-9a55-2f1c3c1d9e01"

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)

        def part(data: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

        claims = {"oid": self.oid, "upn": "steward@contoso.example", "idtyp": "user"}
        self.token = f"{part({'alg': 'none'})}.{part(claims)}.c2lnbmF0dXJl"
        return AccessToken(self.token, int(time.time()) + 3600)


def _hub(loopback: LoopbackEventHubs) -> AzureEventHub:
    return AzureEventHub.from_connection_string(
        loopback.connection_string, retry_total=0, retry_backoff_factor=0.01, send_timeout=5
    )


def _by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


@pytest.mark.parametrize("status", [401, 403])
def test_every_refusal_names_its_role_and_the_command_that_grants_it(
    loopback: LoopbackEventHubs, status: int
) -> None:
    credential = JwtCredential()
    loopback.cbs_status = 401  # the hub refuses the token: AMQP AuthenticationError
    registry = AzureSchemaRegistry(
        "ehns-metaverse.servicebus.windows.net",
        credential,
        transport=DenyingTransport(status),
        retry_total=0,
    )
    lake = AzureLake.from_url(LAKE, credential=credential, transport=DenyingTransport(status))
    with registry, _hub(loopback) as hub, lake:
        findings = diagnose(
            registry=registry,
            hub=hub,
            lake=lake,
            schema_group="metadata",
            credential=credential,
            write=True,
        )
    got = _by_check(findings)
    assert got["sign-in"].severity == "ok"
    ns = (
        "$(az resource list --name 127 --resource-type Microsoft.EventHub/namespaces "
        "--query '[0].id' -o tsv)"
    )
    storage = "$(az storage account show --name stlake --query id -o tsv)"
    expected = {
        "schema groups": ("Schema Registry Reader", ns),
        "register schemas": ("Schema Registry Contributor", ns),
        "event hub": ("Azure Event Hubs Data Receiver", f"{ns}/eventhubs/eh-loopback"),
        "send": ("Azure Event Hubs Data Sender", f"{ns}/eventhubs/eh-loopback"),
        "Capture container": (
            "Storage Blob Data Reader",
            f"{storage}/blobServices/default/containers/main",
        ),
    }
    for check, (role, scope) in expected.items():
        finding = got[check]
        assert finding.severity == "error", finding
        assert finding.role == role
        assert role in finding.message
        assert finding.fix == (
            f"az role assignment create --assignee-object-id {JwtCredential.oid} "
            f'--assignee-principal-type User --role "{role}" --scope "{scope}"'
        )
    # The registry's namespace is its own (the hub's is the loopback's): the scope follows the
    # hub's namespace, which is the one both live in on Azure.
    assert got["read schemas"].severity == "info"
    text = format_findings(findings)
    assert "missing role: Storage Blob Data Reader" in text
    assert text.count("az role assignment create") == 5
    assert "5 problem(s) found" in text
    for secret in (loopback.secret, credential.token, "c2lnbmF0dXJl"):
        assert secret not in text


def test_without_write_nothing_is_sent_and_a_failed_sign_in_says_az_login(
    loopback: LoopbackEventHubs,
) -> None:
    class NoSignIn:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            from azure.core.exceptions import ClientAuthenticationError

            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")

    credential = NoSignIn()
    registry = AzureSchemaRegistry(
        "ehns-metaverse.servicebus.windows.net", credential, retry_total=0
    )
    lake = AzureLake.from_url(LAKE, credential=credential, transport=DenyingTransport(403))
    with registry, _hub(loopback) as hub, lake:
        findings = diagnose(
            registry=registry, hub=hub, lake=lake, schema_group="metadata", credential=credential
        )
    got = _by_check(findings)
    assert got["sign-in"].severity == "error" and got["sign-in"].fix.startswith("az login")
    assert got["schema groups"].severity == "error"
    assert got["schema groups"].fix.startswith("az login")
    register = got["register schemas"]
    assert register.severity == "info" and "--write" in register.message
    assert got["send"].severity == "info" and "--write" in got["send"].message
    assert got["event hub"].severity == "ok"  # the connection string's key signs the hub in
    assert got["Capture container"].severity == "info"
    assert loopback.events == []  # without --write nothing was sent


@pytest.mark.azurite
def test_an_identity_with_every_role_passes_and_write_sends_one_marked_probe(
    loopback: LoopbackEventHubs,
    azurite: Azurite,
    credential: FakeCredential,
    registry_service: RegistryService,
    registry_transport: RegistryTransport,
) -> None:
    from azure.storage.blob import ContainerClient

    container = ContainerClient.from_connection_string(azurite.connection_string, "doctor")
    if not container.exists():
        container.create_container()
    container.upload_blob(
        "ns/eh/0/2026/03/02/08/00/00.avro", mk.capture.append_events(None, []), overwrite=True
    )
    registry = AzureSchemaRegistry(
        "ehns-metaverse.servicebus.windows.net", credential, transport=registry_transport
    )
    lake = AzureLake.from_connection_string(azurite.connection_string, "abfs://doctor/")
    with registry, _hub(loopback) as hub, lake:
        findings = diagnose(
            registry=registry,
            hub=hub,
            lake=lake,
            schema_group="metadata",
            credential=credential,
            write=True,
        )
    container.close()
    assert [f.severity for f in findings] == ["ok"] * 7, format_findings(findings)
    text = format_findings(findings)
    assert "Everything checked works" in text and "az role" not in text
    assert credential.token not in text
    (probe,) = loopback.events
    key, value = PROBE_PROPERTY
    assert probe.application_properties[key] == value.encode()
    assert probe.content_type == "application/json"
    assert json.loads(probe.body)[key] == value
    # Registering the built-in schema twice adds no version.
    assert [v.version for v in next(iter(registry_service.schemas.values()))] == [1]


def test_the_command_without_a_known_identity_uses_the_signed_in_user() -> None:
    command = grant_command("Schema Registry Reader", "$(scope)")
    assert command == (
        'az role assignment create --assignee "$(az ad signed-in-user show --query id -o tsv)" '
        '--role "Schema Registry Reader" --scope "$(scope)"'
    )


def test_the_cli_refuses_write_on_a_local_workspace_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ.pop("METAVERSE_BACKEND", None)
    status = cli.main(["--workspace", str(tmp_path / "ws"), "doctor", "--write"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("metaverse doctor: error: --write checks an Azure workspace")
    assert len(err.strip().splitlines()) == 1
