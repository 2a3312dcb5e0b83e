"""EventComposer: validate, emit, load JSON, read-modify-write from the history, failures."""

from __future__ import annotations

import html
import json
import warnings
from pathlib import Path
from typing import Any

import pytest

import metaverse_kit as mk
from metaverse_kit.errors import EmitError, SchemaNotFoundError, ValidationError
from metaverse_kit.events import aspects as a
from metaverse_kit.events.builtin import mce_definition
from metaverse_kit.events.jsonform import to_avro_json
from metaverse_kit.events.urns import make_dataset_urn
from metaverse_kit.history import latest_aspect
from metaverse_kit.widgets import EventComposer

ORDERS = make_dataset_urn("hive", "sales.orders")


def _snapshots(ws: mk.Workspace) -> list[Any]:
    """The (snapshot name, snapshot) of every event in the lake, in replay order."""
    table = ws.replay(progress=False)
    return [row["proposedSnapshot"] for row in table.to_pylist()]


def test_blank_mce_is_invalid_and_emit_is_disabled(workspace: mk.Workspace) -> None:
    composer = EventComposer(workspace)
    paths = [p.path for p in composer.validate()]
    assert "proposedSnapshot.urn" in paths
    assert "proposedSnapshot.aspects" in paths
    assert composer.emit_button.disabled
    assert "proposedSnapshot.urn" in composer.problems_box.value
    inline = composer.form.node("proposedSnapshot.urn").error.value
    assert "proposedSnapshot.urn: a URN is required" in inline
    with pytest.raises(ValidationError):
        composer.emit()
    assert workspace.replay(progress=False).num_rows == 0


def test_emit_shows_where_the_event_landed(workspace: mk.Workspace) -> None:
    record = a.mce(ORDERS, [a.global_tags(["PII"])])
    composer = EventComposer(workspace, value=record)
    assert composer.validate() == []
    assert not composer.emit_button.disabled
    composer.emit_button.click()
    assert "MCE Published" in composer.status.value
    (receipt,) = composer.receipts
    for part in (
        f"partition {receipt.partition}",
        f"sequence number {receipt.sequence_number}",
        f"offset {receipt.offset}",
        f"schema id {receipt.schema_id}",
    ):
        assert part in composer.status.value
    (snapshot,) = _snapshots(workspace)
    assert snapshot["branch"].endswith("DatasetSnapshot")
    assert snapshot["DatasetSnapshot"]["urn"] == ORDERS


def test_editing_the_form_updates_preview_and_validity(workspace: mk.Workspace) -> None:
    composer = EventComposer(workspace, value=a.mce(ORDERS, [a.global_tags(["PII"])]))
    tag = composer.form.node("proposedSnapshot.aspects[0].tags[0].tag")
    tag.text.value = "not a urn"
    problems = composer.validate()
    assert [p.path for p in problems] == ["proposedSnapshot.aspects[0].tags[0].tag"]
    assert composer.emit_button.disabled
    assert "not a urn" in tag.error.value or "urn:li:" in tag.error.value
    tag.text.value = "urn:li:tag:Gold"
    assert composer.validate() == []
    assert "urn:li:tag:Gold" in composer.preview.value
    assert not composer.emit_button.disabled


def test_failed_emit_says_why_and_keeps_the_form(flaky_workspace: mk.Workspace) -> None:
    urn = make_dataset_urn("hive", "refuse.me")
    record = a.mce(urn, [a.global_tags(["PII"])])
    composer = EventComposer(flaky_workspace, value=record)
    composer.emit_button.click()
    assert "Not emitted" in composer.status.value
    assert "refused" in composer.status.value
    assert composer.value == record
    with pytest.raises(EmitError):
        composer.emit()


def test_load_pasted_json_in_avros_json_encoding(workspace: mk.Workspace) -> None:
    record = a.mce(ORDERS, [a.ownership(["jdoe"]), a.global_tags(["PII"])])
    composer = EventComposer(workspace)
    composer.json_text.value = json.dumps(to_avro_json(record, mce_definition()))
    composer.json_button.click()
    assert "Loaded" in composer.load_message.value
    assert composer.value == record
    before = composer.value
    composer.json_text.value = "{not json"
    composer.json_button.click()
    assert "not valid JSON" in composer.load_message.value
    assert composer.value == before


def test_upload_a_json_file(workspace: mk.Workspace) -> None:
    record = a.mce(ORDERS, [a.global_tags(["Raw"])])
    composer = EventComposer(workspace)
    content = json.dumps(to_avro_json(record, mce_definition())).encode()
    composer._uploaded({"new": ({"name": "mce.json", "content": memoryview(content)},)})
    assert composer.value == record


def test_read_modify_write_keeps_the_other_tags(workspace: mk.Workspace) -> None:
    workspace.emit(a.mce(ORDERS, [a.global_tags(["PII", "Raw"])]))
    composer = EventComposer(workspace)
    composer.history_urn.value = ORDERS
    composer.history_aspect.value = "globalTags"
    composer.history_button.click()
    assert "Loaded the latest globalTags" in composer.load_message.value
    tags = composer.form.node("proposedSnapshot.aspects[0].tags")
    assert [n.get()["tag"] for n in tags.items] == ["urn:li:tag:PII", "urn:li:tag:Raw"]
    tags.add_button.click()
    composer.form.node("proposedSnapshot.aspects[0].tags[2].tag").text.value = "urn:li:tag:Gold"
    composer.emit()
    latest = latest_aspect(workspace.replay(progress=False), ORDERS, "globalTags")
    assert [t["tag"] for t in latest["tags"]] == [
        "urn:li:tag:PII",
        "urn:li:tag:Raw",
        "urn:li:tag:Gold",
    ]


def test_read_modify_write_keeps_the_other_owners(workspace: mk.Workspace) -> None:
    workspace.emit(
        a.mce(ORDERS, [a.ownership(["jdoe", ("urn:li:corpGroup:analytics", "DATA_STEWARD")])])
    )
    composer = EventComposer(workspace)
    composer.load_latest(ORDERS, "ownership")
    owners = composer.form.node("proposedSnapshot.aspects[0].owners")
    owners.add_button.click()
    new = composer.form.node("proposedSnapshot.aspects[0].owners[2]")
    new.child("owner").text.value = "urn:li:corpuser:mchen"
    new.child("type").dropdown.value = "BUSINESS_OWNER"
    composer.emit()
    latest = latest_aspect(workspace.replay(progress=False), ORDERS, "ownership")
    assert [(o["owner"], o["type"]) for o in latest["owners"]] == [
        ("urn:li:corpuser:jdoe", "TECHNICAL_OWNER"),
        ("urn:li:corpGroup:analytics", "DATA_STEWARD"),
        ("urn:li:corpuser:mchen", "BUSINESS_OWNER"),
    ]


def test_history_values_with_maps_and_records_load_back(workspace: mk.Workspace) -> None:
    props = a.dataset_properties(
        description="Orders", custom_properties={"team": "sales"}, name="orders"
    )
    workspace.emit(a.mce(ORDERS, [props]))
    composer = EventComposer(workspace)
    composer.load_latest(ORDERS, "datasetProperties")
    aspect = composer.value["proposedSnapshot"][1]["aspects"][0]
    assert aspect == props
    assert composer.validate() == []


def test_no_history_starts_from_an_empty_aspect(workspace: mk.Workspace) -> None:
    composer = EventComposer(workspace)
    composer.load_latest(ORDERS, "globalTags")
    assert "No globalTags" in composer.load_message.value
    assert composer.value["proposedSnapshot"][1]["aspects"] == [
        ("com.linkedin.pegasus2avro.common.GlobalTags", {"tags": []})
    ]


def test_an_aspect_the_entity_cannot_hold_is_refused(workspace: mk.Workspace) -> None:
    composer = EventComposer(workspace)
    composer.history_urn.value = "urn:li:corpuser:jdoe"
    composer.history_aspect.value = "datasetProperties"
    composer.history_button.click()
    assert "Not loaded" in composer.load_message.value
    assert "corpUserInfo" in composer.load_message.value


def test_value_setter_chooses_named_branches(workspace: mk.Workspace) -> None:
    composer = EventComposer(workspace)
    composer.value = a.mce("urn:li:corpuser:jdoe", [a.status(False)])
    assert composer.form.node("proposedSnapshot").branch.endswith("CorpUserSnapshot")
    aspect = composer.form.node("proposedSnapshot.aspects[0]")
    assert aspect.branch.endswith("Status")


def test_composer_for_a_registry_schema_by_name(workspace: mk.Workspace) -> None:
    definition = json.dumps(
        {
            "type": "record",
            "name": "Ping",
            "namespace": "test",
            "fields": [{"name": "n", "type": "int"}],
        }
    )
    workspace.registry.register_schema(workspace.schema_group, definition)
    composer = EventComposer(workspace, "test.Ping")
    assert not composer.is_mce
    composer.form.node("n").text.value = "7"
    (receipt,) = composer.emit()
    assert receipt.schema_id == workspace.schema_properties(definition).id
    with pytest.raises(SchemaNotFoundError, match=r"test\.Nope"):
        EventComposer(workspace, "test.Nope")


def test_emit_batch_from_the_composer(workspace: mk.Workspace) -> None:
    pd = pytest.importorskip("pandas")
    composer = EventComposer(workspace)
    frame = pd.DataFrame({"name": ["a.one", "a.two"], "tag": ["PII", "Gold"]})
    results = composer.emit_batch(
        frame,
        build=lambda row: a.mce(
            make_dataset_urn("hive", row["name"]), [a.global_tags([row["tag"]])]
        ),
    )
    assert [r.status for r in results] == ["sent", "sent"]
    assert composer.batch_box.children == (composer.batch.widget,)
    assert len(_snapshots(workspace)) == 2


def test_from_arrow_undoes_the_arrow_shapes_of_replayed_values() -> None:
    from datetime import UTC, datetime

    from metaverse_kit.events.avro import AvroSchema
    from metaverse_kit.widgets.event_composer import from_arrow

    schema = AvroSchema(
        {
            "type": "record",
            "name": "R",
            "namespace": "t",
            "fields": [
                {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "props", "type": {"type": "map", "values": "string"}},
                {
                    "name": "either",
                    "type": [
                        {"type": "record", "name": "A", "fields": [{"name": "x", "type": "int"}]},
                        {"type": "record", "name": "B", "fields": [{"name": "x", "type": "int"}]},
                    ],
                },
                {"name": "maybe", "type": ["null", "t.A"], "default": None},
            ],
        }
    )
    arrow_row = {
        "at": datetime(2026, 1, 5, 9, 0, 0, 123000, tzinfo=UTC),
        "props": [("team", "sales")],
        "either": {"branch": "t.B", "A": None, "B": {"x": 2}},
        "maybe": {"x": 1},
    }
    assert from_arrow(schema, arrow_row, schema.root) == {
        "at": 1767603600123,
        "props": {"team": "sales"},
        "either": ("t.B", {"x": 2}),
        "maybe": ("t.A", {"x": 1}),
    }


def test_a_warning_of_the_emit_is_shown_under_it(torn_workspace: mk.Workspace) -> None:
    """From the Emit button a Python warning would reach only JupyterLab's log console."""
    composer = EventComposer(torn_workspace, value=a.mce(ORDERS, [a.global_tags(["PII"])]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none is given as a Python warning
        composer.emit_button.click()
    (receipt,) = composer.receipts
    [warning] = composer.warnings
    assert isinstance(warning, mk.DamagedFileWarning)
    assert "MCE Published" in composer.status.value
    assert f"⚠ {html.escape(str(warning))}" in composer.status.value
    assert receipt.location in str(warning) and "metaverse doctor --repair" in str(warning)
    composer.emit()  # the next event goes to the same new file, and nothing is said
    assert composer.warnings == [] and "⚠" not in composer.status.value


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"x": ' + "9" * 5000 + "}", "more than 4300 digits"),
    ],
)
def test_json_too_deep_or_with_a_huge_number_is_refused_with_a_message(
    workspace: mk.Workspace, text: str, said: str
) -> None:
    composer = EventComposer(workspace)
    composer._load_clicked(text)  # the button's and the upload's handler
    assert "Not loaded" in composer.load_message.value and said in composer.load_message.value
    with pytest.raises(ValidationError, match=said):
        composer.load_json(text)


def test_load_latest_reads_around_a_damaged_capture_file(workspace: mk.Workspace) -> None:
    workspace.emit(a.mce(ORDERS, [a.global_tags(["PII"])]))
    folder = sorted(Path(str(workspace.lake.root)).rglob("*.avro"))[0].parent
    (folder / "99.avro").write_bytes(b"not avro at all" * 10)
    composer = EventComposer(workspace)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # listed in the widget, not given as a Python warning
        composer.load_latest(ORDERS, "globalTags")
    tags = composer.form.node("proposedSnapshot.aspects[0].tags")
    assert [n.get()["tag"] for n in tags.items] == ["urn:li:tag:PII"]
    message = composer.load_message.value
    assert "Loaded the latest globalTags" in message
    assert "99.avro" in message and "metaverse doctor" in message
    assert "on_bad_file" not in message
