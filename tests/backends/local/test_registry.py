"""The local schema registry: Azure Schema Registry's model, compatibility, atomic writes."""

from __future__ import annotations

import json
import multiprocessing
import re
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.backends.local.registry import LocalSchemaRegistry


def _person(*fields: dict) -> str:
    return json.dumps(
        {
            "type": "record",
            "name": "Person",
            "namespace": "demo",
            "fields": [{"name": "name", "type": "string"}, *fields],
        }
    )


@pytest.fixture
def registry(tmp_path: Path) -> LocalSchemaRegistry:
    reg = LocalSchemaRegistry(tmp_path / "registry")
    reg.create_group("people")
    return reg


def test_register_names_by_full_name_and_versions_from_one(registry: LocalSchemaRegistry) -> None:
    v1 = registry.register_schema("people", _person())
    v2 = registry.register_schema(
        "people", _person({"name": "age", "type": ["null", "int"], "default": None})
    )
    assert (v1.name, v1.version, v1.group_name, v1.format) == ("demo.Person", 1, "people", "Avro")
    assert v2.version == 2
    assert re.fullmatch(r"[0-9a-f]{32}", v1.id) and v1.id != v2.id
    assert registry.list_groups() == ["people"]
    assert registry.list_schemas("people") == ["demo.Person"]
    assert registry.list_versions("people", "demo.Person") == [1, 2]
    assert registry.get_schema(v1.id).definition == _person()
    got = registry.get_schema(group_name="people", name="demo.Person", version=2)
    assert got.properties == v2


def test_registering_the_same_definition_again_returns_the_existing_id(
    registry: LocalSchemaRegistry,
) -> None:
    first = registry.register_schema("people", _person())
    spaced = json.dumps(json.loads(_person()), indent=4)
    again = registry.register_schema("people", spaced)
    assert again == first
    assert registry.get_schema_properties("people", spaced) == first
    assert registry.list_versions("people", "demo.Person") == [1]


def test_backward_incompatible_version_names_the_breaking_field(
    registry: LocalSchemaRegistry,
) -> None:
    registry.register_schema("people", _person())
    with pytest.raises(mk.IncompatibleSchemaError) as info:
        registry.register_schema("people", _person({"name": "age", "type": "int"}))
    assert "age" in str(info.value)
    assert any("age" in line for line in info.value.breaking)
    assert "Backward" in str(info.value)
    assert registry.list_versions("people", "demo.Person") == [1]


def test_forward_and_none_modes(tmp_path: Path) -> None:
    reg = LocalSchemaRegistry(tmp_path / "r")
    reg.create_group("fwd", compatibility="Forward")
    reg.create_group("free", compatibility="None")
    with_age = _person({"name": "age", "type": "int"})
    # Forward: old readers must read new data; adding a field is fine, removing a
    # field without a default is not.
    reg.register_schema("fwd", _person())
    assert reg.register_schema("fwd", with_age).version == 2
    with pytest.raises(mk.IncompatibleSchemaError, match="age"):
        reg.register_schema("fwd", _person({"name": "email", "type": "string"}))
    reg.register_schema("free", _person())
    assert (
        reg.register_schema(
            "free",
            json.dumps(
                {
                    "type": "record",
                    "name": "Person",
                    "namespace": "demo",
                    "fields": [{"name": "id", "type": "long"}],
                }
            ),
        ).version
        == 2
    )
    assert reg.get_group("fwd").compatibility == "Forward"


def test_errors_say_what_to_do(registry: LocalSchemaRegistry) -> None:
    with pytest.raises(mk.SchemaNotFoundError, match="create_group"):
        registry.register_schema("nope", _person())
    with pytest.raises(mk.SchemaNotFoundError, match="versions 1 to 1"):
        registry.register_schema("people", _person())
        registry.get_schema(group_name="people", name="demo.Person", version=5)
    with pytest.raises(mk.SchemaNotFoundError):
        registry.get_schema("0" * 32)
    with pytest.raises(mk.SchemaParseError, match="not valid JSON"):
        registry.register_schema("people", "{not json")
    with pytest.raises(mk.SchemaParseError):
        registry.register_schema(
            "people",
            json.dumps({"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}),
        )
    with pytest.raises(mk.ConfigurationError, match="Backward"):
        registry.create_group("x", compatibility="Sideways")
    with pytest.raises(mk.SchemaNotFoundError, match="register it first"):
        registry.get_schema_properties("people", _person({"name": "b", "type": "int"}))


def _register_many(root: str, worker: int, count: int) -> list[str]:
    reg = LocalSchemaRegistry(root)
    ids = []
    for i in range(count):
        definition = json.dumps(
            {
                "type": "record",
                "name": f"S{worker}_{i}",
                "namespace": "p",
                "fields": [{"name": "a", "type": "int"}],
            }
        )
        ids.append(reg.register_schema("g", definition).id)
        # Both workers also register the same shared versions: they must agree on ids.
        shared = json.dumps(
            {
                "type": "record",
                "name": "Shared",
                "namespace": "p",
                "fields": [{"name": "a", "type": "int"}]
                + [{"name": f"f{j}", "type": "int", "default": 0} for j in range(i % 3)],
            }
        )
        ids.append(reg.register_schema("g", shared).id)
    return ids


def test_two_processes_registering_at_once_leave_a_consistent_registry(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    LocalSchemaRegistry(root).create_group("g", compatibility="None")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_register_many, [(str(root), 0, 15), (str(root), 1, 15)])
    reg = LocalSchemaRegistry(root)
    names = reg.list_schemas("g")
    assert len([n for n in names if n.startswith(("p.S0_", "p.S1_"))]) == 30
    for ids in results:
        for schema_id in ids:
            assert reg.get_schema(schema_id).properties.id == schema_id
    # Shared definitions were registered by both: never twice under two versions.
    shared = [
        reg.get_schema(group_name="g", name="p.Shared", version=v).definition
        for v in reg.list_versions("g", "p.Shared")
    ]
    assert len(shared) == len({json.dumps(json.loads(d), sort_keys=True) for d in shared})


def test_workspace_starts_with_the_builtin_mce(workspace: mk.Workspace) -> None:
    group = workspace.registry.get_group("metadata")
    assert group.compatibility == "Backward"
    assert workspace.registry.list_schemas("metadata") == [mk.MCE_FULL_NAME]
