"""The Azure registry over the real SchemaRegistryClient and azure-core pipeline, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.backends.azure.registry import LISTING_NOTE, AzureSchemaRegistry
from tests.backends.azure._registry_service import (
    FakeCredential,
    RegistryService,
    RegistryTransport,
)

PING = {
    "type": "record",
    "name": "Ping",
    "namespace": "ops",
    "fields": [{"name": "urn", "type": "string"}],
}
PING_V2 = {**PING, "fields": [*PING["fields"], {"name": "n", "type": "int", "default": 0}]}
PING_BAD = {**PING, "fields": [*PING["fields"], {"name": "m", "type": "int"}]}


@pytest.fixture
def registry(
    credential: FakeCredential, registry_transport: RegistryTransport, tmp_path: Path
) -> AzureSchemaRegistry:
    return AzureSchemaRegistry(
        "ehns-test.servicebus.windows.net",
        credential,
        state_dir=tmp_path / "state",
        known_schemas={"metadata": ["from.Config"]},
        transport=registry_transport,
        retry_total=0,
    )


def test_register_get_by_id_by_version_and_properties(
    registry: AzureSchemaRegistry, registry_service: RegistryService, credential: FakeCredential
) -> None:
    v1 = registry.register_schema("metadata", json.dumps(PING))
    assert (v1.group_name, v1.name, v1.version, v1.format) == ("metadata", "ops.Ping", 1, "Avro")
    again = registry.register_schema("metadata", json.dumps(PING, indent=2))
    assert again.id == v1.id
    v2 = registry.register_schema("metadata", json.dumps(PING_V2))
    assert v2.version == 2 and v2.id != v1.id
    by_id = registry.get_schema(v1.id)
    assert json.loads(by_id.definition) == PING and by_id.properties == v1
    by_version = registry.get_schema(group_name="metadata", name="ops.Ping", version=2)
    assert by_version.properties.id == v2.id
    assert registry.get_schema_properties("metadata", json.dumps(PING_V2)).id == v2.id
    # The token was asked for Event Hubs' scope; every request carried it (checked by the service).
    assert {s for s in credential.scopes} == {("https://eventhubs.azure.net/.default",)}
    assert ("PUT", "/$schemaGroups/metadata/schemas/ops.Ping") in registry_service.requests
    assert ("POST", "/$schemaGroups/metadata/schemas/ops.Ping:get-id") in registry_service.requests


def test_ids_are_cached_because_schemas_are_immutable(
    registry: AzureSchemaRegistry, registry_service: RegistryService
) -> None:
    v1 = registry.register_schema("metadata", json.dumps(PING))
    registry.get_schema(v1.id)
    registry.get_schema(v1.id)
    gets = [r for r in registry_service.requests if r[1] == f"/$schemaGroups/$schemas/{v1.id}"]
    assert len(gets) == 1


def test_not_found_and_incompatible_are_translated(registry: AzureSchemaRegistry) -> None:
    with pytest.raises(mk.SchemaNotFoundError):
        registry.get_schema("0" * 32)
    with pytest.raises(mk.SchemaNotFoundError):
        registry.get_schema(group_name="metadata", name="ops.Ping", version=1)
    with pytest.raises(mk.SchemaNotFoundError):
        registry.get_schema_properties("metadata", json.dumps(PING))
    with pytest.raises(mk.SchemaNotFoundError):
        registry.register_schema("nogroup", json.dumps(PING))
    registry.register_schema("metadata", json.dumps(PING))
    with pytest.raises(mk.IncompatibleSchemaError, match=r"compatib"):
        registry.register_schema("metadata", json.dumps(PING_BAD))


def test_throttling_is_transient_and_denial_names_the_role(
    registry: AzureSchemaRegistry, registry_service: RegistryService, credential: FakeCredential
) -> None:
    registry_service.fail_next = [503]
    with pytest.raises(mk.ServiceError) as busy:
        registry.list_groups()
    assert isinstance(busy.value, mk.TransientError)
    registry_service.fail_next = [403]
    with pytest.raises(mk.ServiceError, match="Schema Registry Reader") as info:
        registry.get_schema("abc")
    assert not isinstance(info.value, mk.TransientError)


def test_groups_and_versions_use_the_rest_operations_with_paging(
    registry: AzureSchemaRegistry, registry_service: RegistryService
) -> None:
    for name in ("b", "c", "a"):
        registry_service.add_group(name)
    assert registry.list_groups() == ["a", "b", "c", "metadata"]
    assert registry.get_group("metadata").name == "metadata"
    with pytest.raises(mk.SchemaNotFoundError, match="groups: a, b, c, metadata"):
        registry.get_group("missing")
    registry.register_schema("metadata", json.dumps(PING))
    registry.register_schema("metadata", json.dumps(PING_V2))
    assert registry.list_versions("metadata", "ops.Ping") == [1, 2]
    assert registry.list_versions("metadata", "ops.Unknown") == []
    # Two pages of two groups each were fetched through NextLink.
    assert registry_service.requests.count(("GET", "/$schemaGroups")) >= 2


def test_list_schemas_lists_what_is_known_and_says_so(
    registry: AzureSchemaRegistry,
    credential: FakeCredential,
    registry_transport: RegistryTransport,
    registry_service: RegistryService,
    tmp_path: Path,
) -> None:
    assert registry.lists_all_schemas is False and "cannot list" in registry.listing_note
    assert registry.listing_note == LISTING_NOTE
    assert registry.list_schemas("metadata") == ["from.Config"]
    registry.register_schema("metadata", json.dumps(PING))
    # A schema registered by someone else becomes known once its id is seen (in the lake).
    other = RegistryService(credential)
    other.compatibility = registry_service.compatibility
    registry_service.schemas[("metadata", "ops.Other")] = []
    from tests.backends.azure._registry_service import _Version

    v = _Version("f" * 32, "metadata", "ops.Other", 1, json.dumps({**PING, "name": "Other"}))
    registry_service.schemas[("metadata", "ops.Other")].append(v)
    registry_service.ids[v.id] = v
    assert "ops.Other" not in registry.list_schemas("metadata")
    registry.remember_schema_ids([v.id, "unknown-id"])
    assert registry.list_schemas("metadata") == ["from.Config", "ops.Other", "ops.Ping"]
    # Remembered across sessions in the state folder.
    fresh = AzureSchemaRegistry(
        "ehns-test.servicebus.windows.net",
        credential,
        state_dir=tmp_path / "state",
        transport=registry_transport,
    )
    assert fresh.list_schemas("metadata") == ["ops.Other", "ops.Ping"]


def test_azure_avro_encoder_reads_what_the_toolkit_writes(registry: AzureSchemaRegistry) -> None:
    from azure.schemaregistry.encoder.avroencoder import AvroEncoder

    props = registry.register_schema("metadata", mk.mce_definition())
    body = mk.encode_body(mk.example_mce(), mk.mce_definition())
    encoder = AvroEncoder(client=registry.sdk_client(), group_name="metadata")
    decoded = encoder.decode({"content": body, "content_type": f"avro/binary+{props.id}"})
    assert decoded["proposedSnapshot"]["urn"] == "urn:li:corpuser:datahub"


# -- input checks: invalid names and definitions are refused before any request -----------


def test_invalid_definitions_and_names_are_refused_before_a_request(
    registry: AzureSchemaRegistry, registry_service: RegistryService
) -> None:
    dup = {"type": "record", "name": "P", "fields": [{"name": "a", "type": "int"}] * 2}
    with pytest.raises(mk.SchemaParseError, match="already in use"):
        registry.register_schema("metadata", json.dumps(dup))
    ok = json.dumps({"type": "record", "name": "P", "fields": []})
    with pytest.raises(mk.ConfigurationError, match="schema group name"):
        registry.register_schema("..", ok)
    with pytest.raises(mk.ConfigurationError, match="schema name"):
        registry.register_schema("metadata", ok, name="a/b")
    assert registry_service.requests == []


def test_groups_are_not_created_from_the_data_plane(
    registry: AzureSchemaRegistry, registry_service: RegistryService
) -> None:
    assert registry.create_group("metadata").name == "metadata"
    with pytest.raises(mk.ConfigurationError, match="az eventhubs namespace schema-registry"):
        registry.create_group("other")
    with pytest.raises(mk.ConfigurationError, match="already exists"):
        registry.create_group("metadata", exist_ok=False)


@pytest.mark.parametrize(
    ("options", "rule"),
    [
        ({"eventhub": ".."}, "event hub name"),
        ({"schema_group": "a b"}, "schema group name"),
        ({"fully_qualified_namespace": "x.servicebus.windows.net"}, "namespace name"),
    ],
)
def test_connect_refuses_invalid_azure_names_before_anything_is_created(
    tmp_path: Path, options: dict[str, str], rule: str
) -> None:
    settings = {"fully_qualified_namespace": "ehns-test.servicebus.windows.net", "eventhub": "eh"}
    with pytest.raises(mk.ConfigurationError, match=rule):
        mk.connect("azure", path=tmp_path / "state", **{**settings, **options})
    assert not (tmp_path / "state").exists()


def test_an_emulator_host_is_taken_as_it_is(tmp_path: Path) -> None:
    from metaverse_kit.names import namespace_of_host

    assert namespace_of_host("127.0.0.1:5672") is None
    assert namespace_of_host("ehns-test.servicebus.chinacloudapi.cn") == "ehns-test"
