"""On Azure, invalid names and definitions are refused before any request is sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.backends.azure.registry import AzureSchemaRegistry
from tests.backends.azure._registry_service import (
    FakeCredential,
    RegistryService,
    RegistryTransport,
)


@pytest.fixture
def registry(
    credential: FakeCredential, registry_transport: RegistryTransport, tmp_path: Path
) -> AzureSchemaRegistry:
    return AzureSchemaRegistry(
        "ehns-test.servicebus.windows.net",
        credential,
        state_dir=tmp_path / "state",
        transport=registry_transport,
        retry_total=0,
    )


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
