"""What a steward sees when Azure says no: wrong keys, SAS tokens without a permission, expired
tokens, missing roles, throttling, misspelt hosts, events too large for the hub. Each message
names the resource and what to do, and never the secret."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError

import metaverse_kit as mk
from metaverse_kit.backends.azure._errors import translate_http_error
from metaverse_kit.backends.azure.hub import AzureEventHub
from metaverse_kit.backends.azure.lake import AzureLake, storage_retry_policy
from metaverse_kit.backends.azure.registry import AzureSchemaRegistry
from metaverse_kit.backends.protocols import OutgoingEvent
from metaverse_kit.outbox import Outbox
from tests.backends.azure._amqp_endpoint import LoopbackEventHubs
from tests.backends.azure._registry_service import (
    FakeCredential,
    FakeTransport,
    RegistryService,
    RegistryTransport,
)
from tests.backends.azure.conftest import AZURITE_ACCOUNT, AZURITE_KEY, Azurite

# NOTE: as in test_azure_hub.py: the SDK leaves a dropped connection's socket to the collector.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)

PING = {
    "type": "record",
    "name": "Ping",
    "namespace": "ops",
    "fields": [{"name": "urn", "type": "string"}],
}
NAMESPACE = "ehns-test.servicebus.windows.net"


# -- the lake ------------------------------------------------------------------------------------


@pytest.fixture
def lake_container(azurite: Azurite) -> str:
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = client.get_container_client("failures")
    if not container.exists():
        container.create_container()
        container.upload_blob("ns/eh/0/2026/01/01/00/00/00.avro", b"x")
    return "failures"


@pytest.mark.azurite
def test_a_wrong_account_key_or_an_expired_sas_says_so_without_the_secret(
    azurite: Azurite, lake_container: str
) -> None:
    from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

    wrong = "W" * 86 + "=="
    conn = azurite.connection_string.replace(AZURITE_KEY, wrong)
    with pytest.raises(mk.ServiceError) as info:
        AzureLake.from_connection_string(conn, f"abfs://{lake_container}/").list_files()
    message = str(info.value)
    assert "account key is wrong" in message and "SAS token expired" in message
    # No role assignment helps with a wrong key: the message must not send the steward there.
    assert "Storage Blob Data Reader" not in message
    assert wrong not in message and AZURITE_KEY not in message
    assert not isinstance(info.value, mk.TransientError)

    sas = generate_container_sas(
        AZURITE_ACCOUNT,
        lake_container,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) - timedelta(hours=1),
    )
    client = ContainerClient(
        f"http://127.0.0.1:{azurite.port}/{AZURITE_ACCOUNT}", lake_container, credential=sas
    )
    with pytest.raises(mk.ServiceError, match="SAS token expired") as info:
        AzureLake(client).list_files()
    signature = sas.split("sig=")[1].split("&")[0]
    assert signature not in str(info.value)


@pytest.mark.azurite
def test_a_sas_without_list_permission_names_the_permission_and_the_container(
    azurite: Azurite, lake_container: str
) -> None:
    from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

    sas = generate_container_sas(
        AZURITE_ACCOUNT,
        lake_container,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    client = ContainerClient(
        f"http://127.0.0.1:{azurite.port}/{AZURITE_ACCOUNT}", lake_container, credential=sas
    )
    with pytest.raises(mk.ServiceError) as info:
        AzureLake(client).list_files()
    message = str(info.value)
    assert "list (l)" in message
    assert f"the container {lake_container} of the storage account {AZURITE_ACCOUNT}" in message
    assert sas.split("sig=")[1].split("&")[0] not in message


def test_a_host_that_does_not_resolve_points_at_a_typo() -> None:
    exc = ServiceRequestError(
        "HTTPSConnection(host='lakke.blob.core.windows.net', port=443): Failed to resolve "
        "'lakke.blob.core.windows.net' ([Errno -2] Name or service not known)"
    )
    error = translate_http_error(
        exc, what="Listing abfss://c@lakke.dfs.core.windows.net/", role="R"
    )
    assert isinstance(error, mk.TransientError)
    assert "could not be resolved" in str(error) and "typo" in str(error)
    assert "lakke.blob.core.windows.net" in str(error)


class _NoSuchHost(FakeTransport):
    """A transport whose name server says the account's host does not exist."""

    def __init__(self) -> None:
        self.calls = 0

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise ServiceRequestError(
            "HTTPSConnection(host='lakke.blob.core.windows.net', port=443): Failed to resolve "
            "'lakke.blob.core.windows.net' ([Errno -2] Name or service not known)"
        )


def test_a_misspelt_account_is_not_retried_for_a_minute() -> None:
    from azure.storage.blob import ContainerClient

    transport = _NoSuchHost()
    # NOTE: no backoff, so that the retries a misspelt name must not get cost no time here.
    policy = storage_retry_policy(
        retry_total=3, initial_backoff=0, increment_base=0, random_jitter_range=0
    )
    client = ContainerClient(
        "https://lakke.blob.core.windows.net",
        "lake",
        credential="W" * 86 + "==",
        transport=transport,
        retry_policy=policy,
    )
    with pytest.raises(mk.TransientServiceError, match=r"could not be resolved.*typo"):
        AzureLake(client).list_files()
    assert transport.calls == 1


# -- the registry --------------------------------------------------------------------------------


@pytest.fixture
def registry(
    credential: FakeCredential, registry_transport: RegistryTransport
) -> AzureSchemaRegistry:
    return AzureSchemaRegistry(NAMESPACE, credential, transport=registry_transport, retry_total=0)


def test_denials_name_the_role_and_the_namespace_and_a_refused_token_says_sign_in(
    registry: AzureSchemaRegistry, registry_service: RegistryService
) -> None:
    registry_service.fail_next = [403]
    with pytest.raises(mk.ServiceError) as info:
        registry.register_schema("metadata", json.dumps(PING))
    assert f"Schema Registry Contributor role on the Event Hubs namespace {NAMESPACE}" in str(
        info.value
    )
    registry_service.fail_next = [403]
    with pytest.raises(mk.ServiceError, match=f"Schema Registry Reader.*{NAMESPACE}"):
        registry.get_schema("abc")
    # A token the service no longer takes (expired mid-session, another tenant) is not a role.
    registry_service.fail_next = [401]
    with pytest.raises(mk.ServiceError) as info:
        registry.list_groups()
    assert "refused the token" in str(info.value) and "az login" in str(info.value)
    assert not isinstance(info.value, mk.TransientError)


def test_throttling_says_how_long_the_service_asks_to_wait(
    registry: AzureSchemaRegistry, registry_service: RegistryService
) -> None:
    registry_service.fail_next = [429]
    registry_service.fail_headers = {"Retry-After": "7"}
    with pytest.raises(mk.TransientServiceError, match=r"HTTP 429.*try again in 7 s"):
        registry.list_groups()


def test_registering_in_a_missing_group_names_the_group_and_how_to_create_it(
    registry: AzureSchemaRegistry,
) -> None:
    with pytest.raises(mk.SchemaNotFoundError) as info:
        registry.register_schema("metadta", json.dumps(PING))
    message = str(info.value)
    assert "schema group 'metadta' does not exist in " + NAMESPACE in message
    assert "schema-registry create" in message


# -- the hub -------------------------------------------------------------------------------------


def _hub(loopback: LoopbackEventHubs) -> AzureEventHub:
    return AzureEventHub.from_connection_string(
        loopback.connection_string, retry_total=0, retry_backoff_factor=0.01, send_timeout=5
    )


def _event(i: int, key: str, size: int = 10) -> OutgoingEvent:
    return OutgoingEvent(b"x" * size, "avro/binary+s1", key, f"m{i}", {})


def test_an_event_too_large_holds_back_only_the_later_events_of_its_key(tmp_path: Path) -> None:
    with LoopbackEventHubs(max_message_size=2000) as loopback, _hub(loopback) as hub:
        outbox = Outbox(tmp_path / "outbox", hub)
        events = [_event(0, "a"), _event(1, "a", 5000), _event(2, "a"), _event(3, "b")]
        with pytest.raises(mk.EmitError) as info:
            outbox.send(events, schema_ids=["s1"] * 4)
        # The event before the large one goes; the one after waits, to keep the key's order.
        assert [e.message_id for e in loopback.events] == ["m0", "m3"]
        assert [i for i, _ in info.value.failures] == [1, 2]
        too_large, held = (str(e) for _, e in info.value.failures)
        assert "Event m1 (5000 bytes)" in too_large and "discard(['m1'])" in too_large
        assert "earlier event m1" in held
        waiting = outbox.list()
        assert [e.message_id for e in waiting] == ["m1", "m2"]
        assert "m1" in (waiting[0].last_error or "") and "m1" in (waiting[1].last_error or "")
        # Once the large one is dropped, the rest goes, in order.
        assert outbox.discard(["m1"]) == 1
        assert [r.message_id for r in outbox.retry()] == ["m2"]
        assert [e.message_id for e in loopback.events] == ["m0", "m3", "m2"]
        assert not loopback.errors, loopback.errors


def test_a_refused_credential_names_the_hub_and_its_namespace(loopback: LoopbackEventHubs) -> None:
    loopback.cbs_status = 401
    with _hub(loopback) as hub, pytest.raises(mk.EmitError) as info:
        hub.send([_event(0, "a")], schema_ids=["s1"])
    message = str(info.value.failures[0][1])
    assert f"Data Sender role on the event hub eh-loopback in 127.0.0.1:{loopback.port}" in message
    assert loopback.secret not in message


def test_a_misspelt_namespace_says_to_check_the_name_without_the_key() -> None:
    conn = (
        "Endpoint=sb://ehns-tpyo.invalid/;SharedAccessKeyName=send;"
        "SharedAccessKey=c2VjcmV0LWtleQ==;EntityPath=eh"
    )
    with (
        AzureEventHub.from_connection_string(conn, retry_total=0, send_timeout=5) as hub,
        pytest.raises(mk.EmitError) as info,
    ):
        hub.send([_event(0, "a")], schema_ids=["s1"])
    error = info.value.failures[0][1]
    assert "could not be resolved" in str(error) and "typo" in str(error)
    assert "c2VjcmV0LWtleQ" not in str(info.value)


def test_a_send_whose_answer_was_lost_says_the_hub_may_have_the_events(
    loopback: LoopbackEventHubs,
) -> None:
    loopback.drop_after_accept = 100  # stored, then the connection drops before the settlement
    with _hub(loopback) as hub, pytest.raises(mk.EmitError) as info:
        hub.send([_event(0, "a"), _event(1, "b")], schema_ids=["s1"] * 2)
    (tried, tried_error), (untried, untried_error) = info.value.failures
    assert (tried, untried) == (0, 1)
    assert "m0" in {e.message_id for e in loopback.events}  # it did reach the hub
    assert "may have taken these events" in str(tried_error)
    assert isinstance(tried_error, mk.TransientError)
    # The batch after the lost connection was never tried: it is surely not in the hub.
    assert "m1" not in {e.message_id for e in loopback.events}
    assert "may have taken" not in str(untried_error)
