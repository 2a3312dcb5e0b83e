"""The form generated from Avro schemas: every kind of type, unions, lazy sections, URN helper."""

from __future__ import annotations

import base64
from collections.abc import Callable

import ipywidgets as W
import pytest

from metaverse_kit.errors import ValidationError
from metaverse_kit.events import aspects as a
from metaverse_kit.events.builtin import MCE_FULL_NAME, mce_definition
from metaverse_kit.events.urns import make_dataset_urn
from metaverse_kit.events.validation import validate
from metaverse_kit.widgets._form import AvroForm, split_path

ADDRESS = {
    "type": "record",
    "name": "Address",
    "doc": "Where someone lives",
    "fields": [
        {"name": "city", "type": "string", "doc": "The city"},
        {"name": "zip", "type": ["null", "string"], "default": None},
    ],
}

EVERYTHING = {
    "type": "record",
    "name": "Everything",
    "namespace": "test.forms",
    "fields": [
        {"name": "title", "type": "string", "default": "untitled", "doc": "A short title"},
        {"name": "count", "type": "int"},
        {"name": "big", "type": "long", "default": 5},
        {"name": "ratio", "type": "double"},
        {"name": "small", "type": "float", "default": 1.5},
        {"name": "on", "type": "boolean", "default": True},
        {"name": "blob", "type": "bytes"},
        {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 2}},
        {
            "name": "color",
            "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]},
            "default": "GREEN",
        },
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "home", "type": ADDRESS},
        {"name": "work", "type": ["null", "Address"], "default": None},
        {
            "name": "pet",
            "type": [
                {"type": "record", "name": "Cat", "fields": [{"name": "name", "type": "string"}]},
                {"type": "record", "name": "Dog", "fields": [{"name": "name", "type": "string"}]},
                "string",
            ],
        },
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "props", "type": {"type": "map", "values": "long"}, "default": {}},
        {"name": "ownerUrn", "type": "string", "doc": "Who owns it"},
    ],
}


def test_blank_form_holds_defaults_and_names_record_branches() -> None:
    form = AvroForm(EVERYTHING)
    value = form.value
    assert value["title"] == "untitled"
    assert value["big"] == 5
    assert value["small"] == 1.5
    assert value["on"] is True
    assert value["color"] == "GREEN"
    assert value["note"] is None and value["work"] is None
    assert value["home"] == {"city": "", "zip": None}
    assert value["pet"] == ("test.forms.Cat", {"name": ""})
    assert value["tags"] == [] and value["props"] == {}
    assert value["hash"] == b"\x00\x00"
    # Defaults are shown in the inputs themselves, not only in the value.
    assert form.node("title").text.value == "untitled"
    assert form.node("color").dropdown.value == "GREEN"
    assert form.node("on").checkbox.value is True


def test_inputs_are_the_widgets_each_type_asks_for() -> None:
    form = AvroForm(EVERYTHING)
    assert form.node("color").dropdown.options == ("RED", "GREEN", "BLUE")
    assert isinstance(form.node("ratio").number, W.FloatText)
    assert isinstance(form.node("on").checkbox, W.Checkbox)
    assert form.node("blob").encoding.options == ("hex", "base64")
    assert isinstance(form.node("note").toggle, W.Checkbox)
    pet = form.node("pet")
    assert [label for label, _ in pet.selector.options] == ["Cat", "Dog", "string"]
    assert form.node("ownerUrn").urn is True
    assert form.node("home.city").urn is False


def test_docs_are_tooltips_of_the_field_labels() -> None:
    form = AvroForm(EVERYTHING)
    labels = [
        child
        for row in form.root.body.children
        for child in getattr(row, "children", ())
        if isinstance(child, W.Label)
    ]
    tips = {label.value.rstrip(" *"): label.tooltip for label in labels}
    assert "A short title" in tips["title"]
    assert "int" in tips["count"] and "(required)" in tips["count"]


def _with_owner() -> AvroForm:
    form = AvroForm(EVERYTHING)
    form.node("ownerUrn").text.value = "urn:li:corpuser:jdoe"
    return form


def test_int_and_long_ranges_are_checked() -> None:
    form = _with_owner()
    form.node("count").text.value = str(2**31)
    form.node("big").text.value = str(2**40)
    problems = {p.path: p.message for p in validate(form.value, EVERYTHING)}
    assert "out of the int range" in problems["count"]
    assert "big" not in problems
    form.node("count").text.value = "twelve"
    assert [p.path for p in form.form_problems()] == ["count"]
    assert "not a whole number" in form.form_problems()[0].message


def test_bytes_in_hex_or_base64() -> None:
    form = _with_owner()
    blob = form.node("blob")
    blob.text.value = "00ff10"
    assert form.value["blob"] == b"\x00\xff\x10"
    blob.encoding.value = "base64"
    assert blob.text.value == base64.b64encode(b"\x00\xff\x10").decode()
    assert form.value["blob"] == b"\x00\xff\x10"
    blob.text.value = "not base64!"
    assert [p.path for p in form.form_problems()] == ["blob"]
    form.node("hash").text.value = "01"
    assert any(p.path == "hash" and "2 bytes" in p.message for p in form.form_problems())


def test_nullable_union_is_an_on_off_toggle() -> None:
    form = AvroForm(EVERYTHING)
    note = form.node("note")
    assert note.inner is None  # nothing built while off
    note.toggle.value = True
    note.inner.text.value = "hello"
    assert form.value["note"] == "hello"
    note.toggle.value = False
    assert form.value["note"] is None
    work = form.node("work")
    work.toggle.value = True
    assert form.value["work"] == ("test.forms.Address", {"city": "", "zip": None})


def test_branch_picked_is_what_the_value_names_never_guessed() -> None:
    form = AvroForm(EVERYTHING)
    pet = form.node("pet")
    dog = pet.pick("Dog")
    dog.nodes["name"].text.value = "Rex"
    # Cat and Dog have the same fields: only the form's choice can tell them apart.
    assert form.value["pet"] == ("test.forms.Dog", {"name": "Rex"})
    pet.selector.value = 2
    pet.nodes[2].text.value = "a goldfish"
    assert form.value["pet"] == "a goldfish"


def test_loading_a_value_picks_the_branches_it_names() -> None:
    form = AvroForm(EVERYTHING)
    value = form.value
    value["pet"] = ("test.forms.Dog", {"name": "Rex"})
    value["work"] = ("test.forms.Address", {"city": "Oslo", "zip": "0150"})
    value["note"] = "hi"
    form.value = value
    assert form.node("pet").branch == "test.forms.Dog"
    assert form.node("note").toggle.value is True
    assert form.value == value
    # A short name names the branch too.
    form.value = {**value, "pet": ("Cat", {"name": "Tom"})}
    assert form.value["pet"] == ("test.forms.Cat", {"name": "Tom"})


def test_a_plain_dict_that_fits_several_branches_is_refused_with_its_path() -> None:
    form = AvroForm(EVERYTHING)
    before = form.value
    with pytest.raises(ValidationError) as info:
        form.value = {**before, "pet": {"name": "Rex"}}
    assert info.value.problems[0].path == "pet"
    assert "several branches" in info.value.problems[0].message
    assert form.value == before  # nothing half-loaded


def test_a_wrong_shape_is_refused_before_anything_changes() -> None:
    form = AvroForm(EVERYTHING)
    before = form.value
    with pytest.raises(ValidationError) as info:
        form.value = {**before, "title": "new", "home": ["not", "a", "record"]}
    assert info.value.problems[0].path == "home"
    assert form.value == before


def test_arrays_add_remove_and_reorder() -> None:
    form = AvroForm(EVERYTHING)
    tags = form.node("tags")
    for text in ("a", "b", "c"):
        tags.add_button.click()
        tags.items[-1].text.value = text
    assert form.value["tags"] == ["a", "b", "c"]
    up = tags.box.children[2].children[1]  # the row of "c": its "move up" button
    up.click()
    assert form.value["tags"] == ["a", "c", "b"]
    tags.move(0, -1)  # the first item stays first
    assert form.value["tags"] == ["a", "c", "b"]
    remove = tags.box.children[0].children[3]
    remove.click()
    assert form.value["tags"] == ["c", "b"]


def test_maps_are_key_value_rows_and_duplicate_keys_are_reported() -> None:
    form = _with_owner()
    props = form.node("props")
    props.add_button.click()
    key, node = props.entries[0][0], props.entries[0][1]
    key.value = "rows"
    node.text.value = "12"
    props.add("rows", 3, blank=False)
    assert [p.message for p in form.form_problems()] == ["the key 'rows' appears twice"]
    props.entries[1][0].value = "bytes"
    assert form.value["props"] == {"rows": 12, "bytes": 3}
    assert form.node("props['bytes']").get() == 3


def test_nested_records_are_collapsed_sections_built_when_opened() -> None:
    form = AvroForm(EVERYTHING)
    home = form.root.nodes["home"]
    assert isinstance(home.widget, W.Accordion)
    assert home.widget.selected_index is None
    assert not home.built
    form.value = {**form.value, "home": {"city": "Oslo", "zip": None}}
    assert not home.built and form.value["home"]["city"] == "Oslo"
    home.widget.selected_index = 0
    assert home.built
    assert home.nodes["city"].text.value == "Oslo"


def test_problems_are_shown_beside_their_fields_and_counted_on_closed_sections() -> None:
    form = AvroForm(EVERYTHING)
    value = form.value
    value["home"] = {"city": 12, "zip": None}
    form.value = value
    problems = validate(form.value, EVERYTHING)
    form.show_problems(problems)
    home = form.root.nodes["home"]
    assert not home.built
    assert "1 problem" in home.widget.titles[0]
    home.widget.selected_index = 0
    assert "expected a string" in home.nodes["city"].error.value


def test_urn_helper_builds_urns_with_the_make_urn_builders() -> None:
    form = AvroForm(EVERYTHING)
    owner = form.node("ownerUrn")
    assert owner.helper is None  # built when asked for
    owner.helper_button.value = True
    helper = owner.helper
    helper.kind.value = "dataset"
    helper.platform.value = "hive"
    helper.name.value = "sales.orders"
    helper.env.value = "DEV"
    helper.build_button.click()
    assert form.value["ownerUrn"] == make_dataset_urn("hive", "sales.orders", "DEV")
    helper.kind.value = "corpuser"
    assert helper.platform.layout.display == "none"
    helper.name.value = ""
    helper.build_button.click()
    assert "cannot be empty" in helper.message.value
    assert form.value["ownerUrn"] == make_dataset_urn("hive", "sales.orders", "DEV")


def test_urn_fields_are_checked_by_the_form() -> None:
    form = AvroForm(EVERYTHING)
    assert [p.path for p in form.form_problems()] == ["ownerUrn"]
    form.node("ownerUrn").text.value = "jdoe"
    assert "urn:li:" in form.form_problems()[0].message
    form.node("ownerUrn").text.value = "urn:li:corpuser:jdoe"
    assert form.form_problems() == []


def test_datahub_marks_urn_fields_and_their_entity_types() -> None:
    form = AvroForm(mce_definition())
    form.value = a.mce(make_dataset_urn("hive", "t"), [a.ownership(["jdoe"])])
    owner = form.node("proposedSnapshot.aspects[0].owners[0].owner")
    assert owner.urn is True
    owner.helper_button.value = True
    assert owner.helper.kind.value == "corpuser"  # from the field's entityTypes


def test_builtin_mce_round_trips_through_the_form() -> None:
    record = a.mce(
        make_dataset_urn("hive", "sales.orders"),
        [
            a.ownership(["jdoe", ("urn:li:corpGroup:analytics", "DATA_STEWARD")]),
            a.global_tags(["PII", "Gold"]),
            a.editable_dataset_properties(description="Orders"),
        ],
    )
    form = AvroForm(mce_definition())
    form.value = record
    assert form.value == record
    assert validate(form.value, mce_definition()) == []
    snapshot = form.node("proposedSnapshot")
    assert snapshot.branch.endswith("DatasetSnapshot")


def test_recursive_schemas_have_finite_forms() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "label", "type": "string"},
            {"name": "next", "type": ["null", "Node"], "default": None},
        ],
    }
    form = AvroForm(node)
    form.value = {"label": "a", "next": ("Node", {"label": "b", "next": None})}
    assert form.node("next.label").text.value == "b"
    assert form.value == {"label": "a", "next": ("Node", {"label": "b", "next": None})}


def test_datahub_full_mce_form_stays_small(
    datahub_mce: dict, count_widgets: Callable[[], int]
) -> None:
    before = count_widgets()
    form = AvroForm(datahub_mce)
    made = count_widgets() - before
    # PERF: a form that built every snapshot and aspect would make tens of thousands.
    assert made < 300, made
    snapshots = form.node("proposedSnapshot").selector.options
    assert len(snapshots) >= 20
    record = a.mce(make_dataset_urn("hive", "t"), [a.global_tags(["PII"])])
    form.value = record
    assert validate(form.value, datahub_mce) == []
    assert form.value["proposedSnapshot"][0].endswith("DatasetSnapshot")
    assert count_widgets() - before < 600


def test_not_a_record_schema_is_refused() -> None:
    with pytest.raises(ValidationError, match="record schema"):
        AvroForm({"type": "array", "items": "string"})


def test_a_path_the_form_does_not_hold_says_where_it_stops() -> None:
    form = AvroForm(EVERYTHING)
    with pytest.raises(KeyError, match="nothing named nope under home"):
        form.node("home.nope")
    with pytest.raises(KeyError, match=r"nothing named 3 under tags"):
        form.node("tags[3]")


def test_field_paths_split_like_validation_paths() -> None:
    assert split_path("a.b[0].c['k.x']") == ["a", "b", 0, "c", "k.x"]
    assert split_path("proposedSnapshot.aspects[2]") == ["proposedSnapshot", "aspects", 2]


def test_mce_full_name_is_the_forms_root() -> None:
    assert AvroForm(mce_definition()).avro.name == MCE_FULL_NAME
