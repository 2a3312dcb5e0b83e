"""SchemaBrowser: groups, filtered and paged schema lists, fields, versions, compare, composer."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

import metaverse_kit as mk
from metaverse_kit.errors import SchemaNotFoundError
from metaverse_kit.events.builtin import MCE_FULL_NAME
from metaverse_kit.widgets import EventComposer, SchemaBrowser


def _record(name: str, fields: list[dict]) -> str:
    return json.dumps({"type": "record", "name": name, "namespace": "shop", "fields": fields})


V1 = _record("Order", [{"name": "id", "type": "string"}, {"name": "qty", "type": "int"}])
V2 = _record(
    "Order",
    [
        {"name": "id", "type": "string"},
        {"name": "qty", "type": "long"},
        {"name": "note", "type": ["null", "string"], "default": None, "doc": "Free text"},
    ],
)


class CountingRegistry:
    """A registry wrapper counting calls, and optionally saying it cannot list every schema."""

    def __init__(self, inner: Any, *, lists_all: bool = True) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}
        if not lists_all:
            self.lists_all_schemas = False
            self.listing_note = "Azure cannot list a group's schemas; names you use appear here."

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted


class MemoryRegistry:
    """A registry in memory holding many one-version schemas, counting the calls it gets."""

    lists_all_schemas = True

    def __init__(self, group: str, definitions: list[str]) -> None:
        from metaverse_kit.backends.protocols import Schema, SchemaGroup, SchemaProperties
        from metaverse_kit.events.avro import AvroSchema

        self.group = SchemaGroup(group, "None")
        self.schemas = {}
        for i, d in enumerate(definitions):
            name = AvroSchema(d).name
            props = SchemaProperties(f"id-{i}", "Avro", group, name, 1)
            self.schemas[name] = Schema(d, props)
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def list_groups(self) -> list[str]:
        self._count("list_groups")
        return [self.group.name]

    def get_group(self, group_name: str) -> Any:
        self._count("get_group")
        return self.group

    def list_schemas(self, group_name: str) -> list[str]:
        self._count("list_schemas")
        return sorted(self.schemas)

    def list_versions(self, group_name: str, name: str) -> list[int]:
        self._count("list_versions")
        return [1] if name in self.schemas else []

    def get_schema(self, schema_id: str | None = None, **kw: Any) -> Any:
        self._count("get_schema")
        return self.schemas[kw["name"]]


def _view(ws: mk.Workspace, registry: Any) -> Any:
    """What the browser uses of a workspace, with another registry."""
    return SimpleNamespace(
        registry=registry, schema_group=ws.schema_group, backend=ws.backend, emit=ws.emit
    )


@pytest.fixture
def shop(workspace: mk.Workspace) -> mk.Workspace:
    workspace.registry.create_group("shop", compatibility="Backward")
    workspace.registry.register_schema("shop", V1)
    workspace.registry.register_schema("shop", V2)
    workspace.registry.register_schema(
        "shop", _record("Customer", [{"name": "email", "type": "string"}])
    )
    return workspace


def test_groups_schemas_and_versions(shop: mk.Workspace) -> None:
    browser = SchemaBrowser(shop)
    assert set(browser.group.options) == {"metadata", "shop"}
    assert browser.group.value == shop.schema_group
    assert browser.schemas.options == (MCE_FULL_NAME,)
    browser.group.value = "shop"
    assert browser.schemas.options == ("shop.Customer", "shop.Order")
    assert "Backward" in browser.group_info.value
    browser.schemas.value = "shop.Order"
    assert browser.versions.options == (1, 2)
    assert browser.selected.version == 2
    browser.versions.value = 1
    assert browser.selected.version == 1
    assert browser.selected.id in browser.info.value


def test_select_shows_fields_definition_id_and_mode(shop: mk.Workspace) -> None:
    browser = SchemaBrowser(shop)
    props = browser.select("shop", "shop.Order")
    assert (
        props
        == shop.registry.get_schema(group_name="shop", name="shop.Order", version=2).properties
    )
    table = browser.fields_table.value
    for text in ("<td style='text-align:left'>note</td>", "string | null", "Free text", "null"):
        assert text.replace("string | null", "null | string") in table or text in table
    assert props.id in browser.info.value and "Backward" in browser.info.value
    browser.details.selected_index = 1
    assert "&quot;note&quot;" in browser.definition.value
    assert browser.select("shop", "shop.Order", version=1).version == 1
    with pytest.raises(SchemaNotFoundError, match="no version 9"):
        browser.select("shop", "shop.Order", version=9)
    with pytest.raises(SchemaNotFoundError):
        browser.select("nope", "shop.Order")


def test_nested_fields_of_the_mce_are_listed(workspace: mk.Workspace) -> None:
    browser = SchemaBrowser(workspace)
    browser.select(workspace.schema_group, MCE_FULL_NAME)
    paths = [f.path for f in browser.fields()]
    assert "proposedSnapshot.<DatasetSnapshot>.aspects[].<Ownership>.owners[].owner" in paths
    browser.filter.value = "owners"
    shown = browser.fields()
    assert shown and all("owners" in (f.path + f.doc).lower() for f in shown)


def test_filter_by_schema_name_and_field_name(shop: mk.Workspace) -> None:
    browser = SchemaBrowser(shop)
    browser.group.value = "shop"
    browser.filter.value = "cust"
    assert browser.matches == ["shop.Customer"]
    browser.filter.value = "email"
    assert browser.matches == []
    browser.fields_too.value = True
    assert browser.matches == ["shop.Customer"]
    assert browser.schemas.options == ("shop.Customer",)


def test_compare_versions_and_their_compatibility(shop: mk.Workspace) -> None:
    browser = SchemaBrowser(shop)
    browser.select("shop", "shop.Order")
    result = browser.compare(1, 2)
    assert result.added == ["note"]
    assert result.removed == []
    assert [c[0] for c in result.changed] == ["qty"]
    assert result.compatible  # int -> long and an optional field: Backward holds
    assert "compatible under the group's mode (Backward)" in html.unescape(
        browser.compare_box.value
    )


def test_compare_reports_what_breaks_the_mode(workspace: mk.Workspace) -> None:
    registry = workspace.registry
    registry.create_group("loose", compatibility="None")
    registry.register_schema("loose", V1)
    registry.register_schema(
        "loose",
        _record("Order", [{"name": "id", "type": "string"}, {"name": "sku", "type": "string"}]),
    )
    registry.set_compatibility("loose", "Backward")
    browser = SchemaBrowser(workspace)
    browser.select("loose", "shop.Order")
    browser.compare_old.value, browser.compare_new.value = 1, 2
    browser.compare_button.click()
    result = browser.comparison
    assert result is not None and not result.compatible
    assert result.added == ["sku"] and result.removed == ["qty"]
    assert any("sku" in line for line in result.breaking)
    assert "breaks the group's mode (Backward)" in html.unescape(browser.compare_box.value)


def test_open_in_composer(shop: mk.Workspace) -> None:
    browser = SchemaBrowser(shop)
    browser.select("shop", "shop.Order", version=1)
    browser.open_button.click()
    composer = browser.composer
    assert isinstance(composer, EventComposer)
    assert browser.composer_box.children == (composer.widget,)
    assert composer.value == {"id": "", "qty": 0}
    composer.form.node("id").text.value = "o-1"
    (receipt,) = composer.emit()
    assert "MCE Published" in str(receipt)


def test_a_thousand_schemas_stay_cheap(
    workspace: mk.Workspace, count_widgets: Callable[[], int]
) -> None:
    registry = MemoryRegistry(
        "many", [_record(f"S{i:04d}", [{"name": f"f{i}", "type": "int"}]) for i in range(1000)]
    )
    before = count_widgets()
    browser = SchemaBrowser(_view(workspace, registry), page_size=50)
    browser.widget  # noqa: B018 - building the view is what is measured
    made = count_widgets() - before
    # PERF: one widget per schema name would be thousands; the list is one Select, paged.
    assert made < 150, made
    assert registry.calls.get("get_schema", 0) == 0  # no definition read before one is chosen
    assert len(browser.schemas.options) == 50
    assert browser.page_label.value == "1–50 of 1000"
    browser.next_page.click()
    assert browser.schemas.options[0] == "shop.S0050"
    assert browser.prev_page.disabled is False
    browser.filter.value = "S09"
    assert len(browser.matches) == 100
    browser.select("many", "shop.S0999")
    assert browser.schemas.value == "shop.S0999"
    assert browser.page_label.value == "51–100 of 100"
    assert registry.calls["get_schema"] == 1
    assert count_widgets() - before < 150


def test_datahub_full_mce_schema_browses_and_composes(
    workspace: mk.Workspace, datahub_mce: dict, count_widgets: Callable[[], int]
) -> None:
    workspace.registry.create_group("datahub", compatibility="Backward")
    workspace.registry.register_schema("datahub", json.dumps(datahub_mce))
    before = count_widgets()
    browser = SchemaBrowser(workspace, max_field_rows=200)
    browser.select("datahub", MCE_FULL_NAME)
    assert len(browser.fields()) > 1000
    assert browser.fields_table.value.count("<tr>") == 201  # header + one page of rows
    assert "more fields" in browser.fields_table.value
    composer = browser.open_in_composer()
    assert len(composer.form.node("proposedSnapshot").selector.options) >= 20
    assert count_widgets() - before < 500


def test_a_registry_that_cannot_list_schemas_says_so(workspace: mk.Workspace) -> None:
    counting = CountingRegistry(workspace.registry, lists_all=False)
    browser = SchemaBrowser(_view(workspace, counting))
    assert "Azure cannot list" in browser.group_info.value


def test_schemas_a_registry_cannot_list_can_still_be_selected(workspace: mk.Workspace) -> None:
    class Unlisting(MemoryRegistry):
        lists_all_schemas = False
        listing_note = "This registry lists only the schemas this machine has used."

        def list_schemas(self, group_name: str) -> list[str]:
            return []

    registry = Unlisting("hidden", [V1])
    browser = SchemaBrowser(_view(workspace, registry))
    assert browser.schemas.options == ()
    assert "lists only the schemas" in browser.group_info.value
    assert browser.select("hidden", "shop.Order").id == "id-0"
    assert browser.schemas.options == ("shop.Order",)
