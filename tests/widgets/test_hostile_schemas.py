"""The steward widgets against unusual schemas a user may register, and hostile typed values."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

import metaverse_kit as mk
from metaverse_kit.errors import SchemaParseError, ValidationError
from metaverse_kit.widgets import BatchEmitter, EventComposer, SchemaBrowser
from metaverse_kit.widgets._form import FIELDS_PAGE, AvroForm
from tests.events.test_jsonform import SAME_SHORT_NAME

MARKUP = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def _record(name: str, fields: list[dict]) -> dict:
    return {"type": "record", "name": name, "namespace": "t", "fields": fields}


def test_a_record_holding_itself_with_no_way_out_is_refused_with_the_cycle() -> None:
    # Loop.me is a Loop, whose me is a Loop...: no record of it can ever be written.
    loop = _record("Loop", [{"name": "x", "type": "int"}, {"name": "me", "type": "Loop"}])
    with pytest.raises(ValidationError) as caught:
        AvroForm(loop)
    assert "t.Loop -> t.Loop" in str(caught.value)
    assert "nullable" in str(caught.value)
    # Through another record too.
    pair = _record(
        "A",
        [{"name": "b", "type": _record("B", [{"name": "a", "type": "A"}])}],
    )
    with pytest.raises(ValidationError, match=r"t\.A -> t\.B -> t\.A"):
        AvroForm(pair)


def test_recursive_records_with_a_way_out_are_filled_and_emitted(workspace: mk.Workspace) -> None:
    linked = _record(
        "Node",
        [{"name": "value", "type": "long"}, {"name": "next", "type": ["null", "Node"]}],
    )
    composer = EventComposer(workspace, linked)
    assert composer.value == {"value": 0, "next": None}
    composer.form.node("next").toggle.value = True
    composer.form.node("next.next").toggle.value = True
    composer.form.node("next.next.value").text.value = "3"
    assert composer.value == {
        "value": 0,
        "next": ("t.Node", {"value": 0, "next": ("t.Node", {"value": 3, "next": None})}),
    }
    composer.emit_button.click()
    assert composer.receipts


def test_a_huge_value_typed_into_a_number_or_bytes_input_is_not_echoed_whole(
    workspace: mk.Workspace,
) -> None:
    schema = _record("W", [{"name": "l", "type": "long"}, {"name": "b", "type": "bytes"}])
    composer = EventComposer(workspace, schema)
    composer.form.node("l").text.value = "x" * 10_000_000
    composer.form.node("b").text.value = "z" * 10_000_000
    problems = composer.validate()
    assert {p.path for p in problems} == {"l", "b"}
    for p in problems:
        assert len(p.message) < 200, p.message[:300]
        assert "10000000 characters" in p.message
    assert len(composer.problems_box.value) < 1000
    assert len(composer.form.node("l").error.value) < 500
    assert composer.emit_button.disabled


def test_a_number_with_too_many_digits_is_out_of_range_not_not_a_number(
    workspace: mk.Workspace,
) -> None:
    composer = EventComposer(workspace, _record("W", [{"name": "l", "type": "long"}]))
    # NOTE: more digits than int() reads (sys.get_int_max_str_digits(), 4300 by default).
    composer.form.node("l").text.value = "1" * 5000
    (problem,) = composer.validate()
    assert "out of the long range" in problem.message
    assert "not a whole number" not in problem.message
    composer.form.node("l").text.value = "12a"
    (problem,) = composer.validate()
    assert problem.message == "'12a' is not a whole number (long)"


def test_a_definition_the_registry_refuses_is_refused_before_a_form_is_filled(
    workspace: mk.Workspace,
) -> None:
    # Markup in a record name: not a valid Avro name, so it could only fail at Emit.
    bad = _record("R" + MARKUP, [{"name": "s", "type": "string"}])
    with pytest.raises(SchemaParseError, match="not a valid Avro name"):
        EventComposer(workspace, bad)
    with pytest.raises(SchemaParseError, match="not a valid Avro name"):
        BatchEmitter(workspace, [{"s": "x"}], schema=bad)
    assert not [n for n in workspace.registry.list_schemas(workspace.schema_group) if "t." in n]


def test_a_union_of_records_sharing_a_short_name_emits_the_branch_picked(
    workspace: mk.Workspace,
) -> None:
    composer = EventComposer(workspace, SAME_SHORT_NAME)
    union = composer.form.node("u")
    assert [label for label, _ in union.selector.options] == ["a.X", "b.X"]
    union.selector.value = 1
    composer.form.node("u.p").text.value = "4"
    assert composer.value == {"u": ("b.X", {"p": 4})}
    composer.emit_button.click()
    assert composer.receipts
    # The JSON text with only the short name is not put in either record.
    composer.json_text.value = json.dumps({"u": {"X": {"p": 9}}})
    composer.json_button.click()
    assert "Not loaded" in composer.load_message.value
    assert composer.value == {"u": ("b.X", {"p": 4})}


def test_docs_and_names_with_markup_are_shown_escaped(workspace: mk.Workspace) -> None:
    schema = {
        "type": "record",
        "name": "Doc",
        "namespace": "t",
        "doc": MARKUP,
        "fields": [
            {"name": "s", "type": "string", "doc": MARKUP, "default": MARKUP},
            {"name": "m", "type": {"type": "map", "values": "int"}},
        ],
    }
    workspace.registry.register_schema(workspace.schema_group, json.dumps(schema))
    browser = SchemaBrowser(workspace)
    browser.select(workspace.schema_group, "t.Doc")
    composer = browser.open_in_composer()
    composer.form.node("m").add(MARKUP)[1].text.value = MARKUP
    composer.validate()
    browser.details.selected_index = 1
    shown = [
        browser.fields_table.value,
        browser.definition.value,
        composer.problems_box.value,
        composer.preview.value,
        composer.form.node(f"m[{MARKUP!r}]").error.value,
    ]
    for value in shown:
        assert "&lt;img" in value or "&lt;script" in value, value[:200]
        assert "<img" not in value and "<script" not in value


def test_the_browser_says_when_its_composer_is_for_another_version(
    workspace: mk.Workspace,
) -> None:
    v1 = _record("V", [{"name": "a", "type": "int"}])
    v2 = _record("V", [*v1["fields"], {"name": "b", "type": "string", "default": ""}])
    for definition in (v1, v2):
        workspace.registry.register_schema(workspace.schema_group, json.dumps(definition))
    browser = SchemaBrowser(workspace)
    browser.select(workspace.schema_group, "t.V")
    browser.open_button.click()
    assert browser.message.value == ""
    browser.versions.value = 1
    assert "still for version 2 of t.V" in browser.message.value
    assert "version 1" in browser.message.value
    browser.versions.value = 2
    assert browser.message.value == ""
    browser.versions.value = 1
    browser.open_button.click()
    assert browser.message.value == ""
    assert [f["name"] for f in browser.composer.avro.fields(browser.composer.avro.root)] == ["a"]


def test_a_record_of_5000_fields_shows_a_page_of_inputs_and_keeps_the_rest(
    workspace: mk.Workspace, count_widgets: Callable[[], int]
) -> None:
    kinds = ["string", "long", "double", "boolean"]
    fields = [{"name": f"f{i}", "type": kinds[i % 4]} for i in range(5000)]
    big = _record("Big", [*fields, {"name": "ownerUrn", "type": "string"}])
    before = count_widgets()
    composer = EventComposer(workspace, big)
    # Without paging: about 13 widgets per field, 65,000 for the form, seconds to build.
    assert count_widgets() - before < 5_000
    root = composer.form.root
    assert len(root.nodes) == FIELDS_PAGE
    assert root.body.children[-1] is root.more_button
    # A field not shown yet still holds its value, is checked, and is counted on the button.
    record = composer.value
    record.update(f4001="abc", f4002=2.5, ownerUrn="bad")
    composer.value = record
    problems = {p.path for p in composer.validate()}
    assert problems == {"f4001", "ownerUrn"}
    assert "⚠ 2 problems" in root.more_button.description
    assert composer.value["f4002"] == 2.5
    root.more_button.click()
    assert len(root.nodes) == 2 * FIELDS_PAGE
    assert "4801 not shown yet" in root.more_button.description
    # Reaching a field makes its input alone, filled with what was loaded.
    assert composer.form.node("f4001").text.value == "abc"
    composer.form.node("f4001").text.value = "7"
    composer.form.node("ownerUrn").text.value = "urn:li:corpuser:jdoe"
    assert len(root.nodes) == 2 * FIELDS_PAGE + 2
    assert composer.validate() == []
    assert composer.value["f4001"] == 7 and composer.value["f4002"] == 2.5
    assert list(composer.value) == [f["name"] for f in big["fields"]]
    assert "⚠" not in root.more_button.description
    composer.emit_button.click()
    assert composer.receipts
