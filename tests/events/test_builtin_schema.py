"""The built-in MCE schema: it parses, it is DataHub's model, and DataHub reads our events."""

from __future__ import annotations

import json
from importlib.resources import files

import avro.schema
import fastavro
import pytest

from metaverse_kit.events import aspects as A
from metaverse_kit.events.builtin import (
    MCE_FULL_NAME,
    builtin_schema_definitions,
    mce_definition,
    mce_schema,
)
from metaverse_kit.events.urns import make_dataset_urn

P = "com.linkedin.pegasus2avro."
SNAPSHOT = P + "metadata.snapshot."

# What stewards set, per snapshot (the brief of the schema); the file may hold more.
REQUIRED = {
    SNAPSHOT + "DatasetSnapshot": {
        "common.Ownership",
        "common.GlobalTags",
        "common.GlossaryTerms",
        "dataset.EditableDatasetProperties",
        "common.Status",
        "common.InstitutionalMemory",
        "dataset.DatasetDeprecation",
        "dataset.DatasetProperties",
        "metadata.key.DatasetKey",
    },
    SNAPSHOT + "CorpUserSnapshot": {
        "identity.CorpUserInfo",
        "identity.CorpUserEditableInfo",
        "common.GlobalTags",
        "common.Status",
        "identity.GroupMembership",
    },
    # NOTE: DataHub's CorpGroupSnapshot has no Ownership; group owners need an MCP.
    SNAPSHOT + "CorpGroupSnapshot": {
        "identity.CorpGroupInfo",
        "common.Status",
        "common.GlobalTags",
    },
    SNAPSHOT + "TagSnapshot": {"tag.TagProperties", "common.Ownership", "common.Status"},
    SNAPSHOT + "GlossaryTermSnapshot": {
        "glossary.GlossaryTermInfo",
        "common.Ownership",
        "common.Status",
    },
}


def _schema_text() -> str:
    path = files("metaverse_kit.events").joinpath("schemas", "MetadataChangeEvent.avsc")
    return path.read_text(encoding="utf-8")


def _field(record: dict, name: str) -> dict:
    return next(f for f in record["fields"] if f["name"] == name)


def _aspect_union(types: dict, snapshot: str) -> list[str]:
    return _field(types[snapshot], "aspects")["type"]["items"]


def _is_subsequence(small: list, big: list) -> bool:
    it = iter(big)
    return all(x in it for x in small)


# -- the file and its loader ---------------------------------------------------------------------


def test_file_is_pretty_printed_deterministically():
    text = _schema_text()
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def test_definitions_are_compact_json_of_the_file():
    compact = json.dumps(json.loads(_schema_text()), separators=(",", ":"))
    assert builtin_schema_definitions() == {MCE_FULL_NAME: compact}
    assert mce_definition() == compact


def test_callers_cannot_corrupt_the_cache():
    schema = mce_schema()
    schema["fields"].clear()
    builtin_schema_definitions().clear()
    assert mce_schema()["fields"]
    assert MCE_FULL_NAME in builtin_schema_definitions()
    assert mce_schema() is not mce_schema()


def test_parses_with_fastavro_and_avro(ours):
    assert fastavro.parse_schema(ours)["name"] == MCE_FULL_NAME
    assert avro.schema.parse(mce_definition()).fullname == MCE_FULL_NAME


def test_top_level_fields(ours, our_types):
    assert ours["name"] == "MetadataChangeEvent"
    assert ours["namespace"] == P + "mxe"
    assert [f["name"] for f in ours["fields"]] == [
        "auditHeader",
        "proposedSnapshot",
        "proposedDelta",
        "systemMetadata",
    ]
    mce = our_types[MCE_FULL_NAME]
    assert _field(mce, "auditHeader")["type"] == ["null", "com.linkedin.events.KafkaAuditHeader"]
    assert _field(mce, "proposedDelta")["type"] == ["null"]
    assert _field(mce, "systemMetadata")["type"] == ["null", P + "mxe.SystemMetadata"]
    assert set(_field(mce, "proposedSnapshot")["type"]) == set(REQUIRED)


@pytest.mark.parametrize("snapshot", sorted(REQUIRED))
def test_snapshot_holds_what_stewards_set(our_types, snapshot):
    assert [f["name"] for f in our_types[snapshot]["fields"]] == ["urn", "aspects"]
    assert {P + a for a in REQUIRED[snapshot]} <= set(_aspect_union(our_types, snapshot))


def test_named_types_are_defined_once_at_first_use(our_types):
    # index_named_types asserts it while indexing; here only check that it found them all.
    assert MCE_FULL_NAME in our_types
    assert P + "common.Ownership" in our_types


# -- fidelity to DataHub's model -----------------------------------------------------------------


def test_every_named_type_is_datahubs(our_types, datahub_types):
    missing = sorted(set(our_types) - set(datahub_types))
    assert not missing, f"not in DataHub's schema: {missing}"


def test_records_match_datahub_field_by_field(our_types, datahub_types):
    trimmed = {MCE_FULL_NAME, *REQUIRED}
    for name, ours in our_types.items():
        theirs = datahub_types[name]
        assert ours["type"] == theirs["type"], name
        if ours["type"] == "enum":
            assert ours["symbols"] == theirs["symbols"], name
        if ours["type"] == "fixed":
            assert ours["size"] == theirs["size"], name
        if "fields" not in ours:
            assert ours == theirs, name
            continue
        # Field names and order, defaults, and (outside the trimmed unions) types.
        assert [f["name"] for f in ours["fields"]] == [f["name"] for f in theirs["fields"]], name
        for mine, dh in zip(ours["fields"], theirs["fields"], strict=True):
            where = f"{name}.{mine['name']}"
            assert ("default" in mine) == ("default" in dh), where
            assert mine.get("default") == dh.get("default"), where
            assert mine.get("doc") == dh.get("doc"), where
            if name not in trimmed:
                assert mine["type"] == dh["type"], where
        if name not in trimmed:
            # Everything else too: docs, annotations, key order of nothing but the same content.
            assert ours == theirs, name


def test_trimmed_unions_keep_datahubs_order(our_types, datahub_types):
    mce_ours = _field(our_types[MCE_FULL_NAME], "proposedSnapshot")["type"]
    mce_theirs = _field(datahub_types[MCE_FULL_NAME], "proposedSnapshot")["type"]
    assert _is_subsequence(mce_ours, mce_theirs)
    for snapshot in REQUIRED:
        assert _is_subsequence(
            _aspect_union(our_types, snapshot), _aspect_union(datahub_types, snapshot)
        ), snapshot
        # Apart from the trimmed union, the snapshot record is DataHub's.
        mine = {k: v for k, v in our_types[snapshot].items() if k != "fields"}
        theirs = {k: v for k, v in datahub_types[snapshot].items() if k != "fields"}
        assert mine == theirs
        assert _field(our_types[snapshot], "urn") == _field(datahub_types[snapshot], "urn")


# -- DataHub's schema reads what we write --------------------------------------------------------

STAMP = {"actor": "jdoe", "time_ms": 1_700_000_000_000}


def _events() -> dict[str, dict]:
    dataset = make_dataset_urn("hive", "sales.orders(v2),eu", "DEV")
    return {
        "dataset": A.mce(
            dataset,
            [
                A.dataset_properties(
                    name="orders",
                    description="All orders",
                    custom_properties={"team": "sales"},
                    created_ms=1,
                    tags=["legacy"],
                ),
                A.editable_dataset_properties("Orders, by day", **STAMP),
                A.ownership(["jdoe", ("urn:li:corpGroup:stewards", "DATA_STEWARD")], **STAMP),
                A.global_tags(["pii", "urn:li:tag:gold"]),
                A.glossary_terms(["Finance.Revenue"], **STAMP),
                A.institutional_memory([("https://wiki/orders", "Runbook")], **STAMP),
                A.dataset_deprecation(True, note="Use orders_v3", decommission_time=5),
                A.status(False),
            ],
            system_metadata=A.system_metadata(run_id="run-1", last_observed_ms=7),
        ),
        "corpuser": A.mce(
            "urn:li:corpuser:jdoe",
            [
                A.corp_user_info(display_name="John Doe", email="jdoe@example.com", manager="ann"),
                A.group_membership(["stewards"]),
                A.global_tags(["pii"]),
                A.status(False),
            ],
        ),
        "corpGroup": A.mce(
            "urn:li:corpGroup:stewards",
            [A.corp_group_info(display_name="Stewards", slack="#stewards"), A.status(False)],
        ),
        "tag": A.mce(
            "urn:li:tag:pii",
            [A.tag_properties("PII", color_hex="#FF0000"), A.ownership(["jdoe"], **STAMP)],
        ),
        "glossaryTerm": A.mce(
            "urn:li:glossaryTerm:Finance.Revenue",
            [
                A.glossary_term_info("Money in", name="Revenue", parent_node="Finance"),
                A.ownership(["jdoe"], **STAMP),
                A.status(False),
            ],
        ),
        "example": A.example_mce(),
    }


@pytest.mark.parametrize("kind", list(_events()))
def test_datahub_schema_reads_our_events(kind, avro_roundtrip, datahub_parsed, strip_names):
    event = _events()[kind]
    # NOTE: fastavro 1.13.1 raises TypeError with return_record_name=True when the reader schema
    # names types by reference, so the branch names are dropped and the values compared.
    read = avro_roundtrip(event, reader=datahub_parsed, return_record_name=False)
    assert read == strip_names(event)


@pytest.mark.parametrize("kind", list(_events()))
def test_our_events_roundtrip_unchanged(kind, avro_roundtrip):
    event = _events()[kind]
    assert avro_roundtrip(event) == event
