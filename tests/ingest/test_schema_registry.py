"""The schema-registry source: the workspace registry's schemas as datasets, versions as history."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest

import metaverse_kit as mk
from metaverse_kit.ingest import SourceUnreachableError

RECIPE = {"source": {"type": "schema-registry", "config": {}}, "pipeline_name": "registry"}
ORDER = mk.make_dataset_urn("schema-registry", "metadata.shop.Order")


def _order(*extra: dict) -> str:
    fields = [{"name": "id", "type": "long", "doc": "The order number"}, *extra]
    return json.dumps({"type": "record", "name": "Order", "namespace": "shop", "fields": fields})


NOTE = {"name": "note", "type": ["null", "string"], "default": None}


def test_schemas_and_their_versions_become_datasets(workspace, datahub_reads):
    workspace.registry.register_schema("metadata", _order())
    workspace.registry.register_schema("metadata", _order(NOTE))
    report = mk.ingest(workspace, RECIPE, progress=False)
    assert report.exit_status == 0, report.summary()
    assert report.entities_seen == 2  # shop.Order and the built-in MCE schema
    events = workspace.replay(progress=False)
    latest = mk.history.latest_aspect(events, ORDER, "schemaMetadata")
    assert latest["version"] == 2
    assert [f["fieldPath"] for f in latest["fields"]] == ["id", "note"]
    assert latest["fields"][0]["description"] == "The order number"
    history = mk.history.schema_changes(events, ORDER)
    assert history.select(["version", "operation", "field_path"]).to_pylist() == [
        {"version": "0.0.0", "operation": "ADD", "field_path": "id"},
        {"version": "0.1.0", "operation": "ADD", "field_path": "note"},
    ]
    mce = mk.history.latest_aspect(
        events,
        mk.make_dataset_urn("schema-registry", f"metadata.{mk.MCE_FULL_NAME}"),
        "schemaMetadata",
    )
    paths = {f["fieldPath"] for f in mce["fields"]}
    assert "proposedSnapshot.DatasetSnapshot.aspects.SchemaMetadata.fields.fieldPath" in paths
    assert datahub_reads(report.events) == report.events_emitted

    assert mk.ingest(workspace, RECIPE, progress=False).events_emitted == 0
    workspace.registry.register_schema(
        "metadata", _order(NOTE, {"name": "qty", "type": "int", "default": 1})
    )
    third = mk.ingest(workspace, RECIPE, progress=False)
    assert [c.urn for c in third.changes] == [ORDER]
    history = mk.history.schema_changes(workspace.replay(progress=False), ORDER)
    assert history.filter(pc.equal(history["change_number"], 2))["field_path"].to_pylist() == [
        "qty"
    ]


def test_an_unknown_group_is_named(workspace):
    recipe = {"source": {"type": "schema-registry", "config": {"groups": ["nope"]}}}
    with pytest.raises(SourceUnreachableError, match=r"no schema group 'nope'.*it has metadata"):
        mk.ingest(workspace, recipe, progress=False)
