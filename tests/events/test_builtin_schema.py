"""The built-in MCE schema: it parses, it is DataHub's model, and DataHub reads our events."""

from __future__ import annotations

import importlib.util
import io
import json
from importlib.resources import files
from pathlib import Path

import avro.schema
import fastavro
import pytest

import metaverse_kit as mk
from metaverse_kit.errors import SchemaNotFoundError
from metaverse_kit.events import aspects as A
from metaverse_kit.events.builtin import (
    MCE_FULL_NAME,
    builtin_schema_definitions,
    mce_definition,
    mce_schema,
    mce_versions,
)
from metaverse_kit.events.compatibility import breaking_changes
from metaverse_kit.events.urns import make_dataset_urn

_TRIM = (
    Path(__file__).resolve().parents[2] / "metaverse_kit" / "events" / "schemas" / "trim_datahub.py"
)
_spec = importlib.util.spec_from_file_location("trim_datahub", _TRIM)
trim_datahub = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trim_datahub)
PRESENT_FIELD = trim_datahub.PRESENT_FIELD

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
        # Version 2: what sources report.
        "schema.SchemaMetadata",
        "schema.EditableSchemaMetadata",
        "dataset.UpstreamLineage",
        "dataset.ViewProperties",
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
    assert not missing, f"not in DataHub's schemas: {missing}"


def _without_present_field(name: str, ours: dict, theirs: dict) -> dict:
    """Our record less the one field DataHub's fieldless records get (see trim_datahub.py)."""
    if theirs.get("fields") == [] and ours.get("fields") != []:
        assert ours["fields"] == [PRESENT_FIELD], name
        return {**ours, "fields": []}
    return ours


def test_records_match_datahub_field_by_field(our_types, datahub_types):
    trimmed = {MCE_FULL_NAME, *REQUIRED}
    for name, ours in our_types.items():
        theirs = datahub_types[name]
        ours = _without_present_field(name, ours, theirs)
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
        # Only DataHub's own aspects, in DataHub's order: DataHub's full MCE schema can follow
        # ours in a Backward group and reads every event we write.
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


# -- versions: the file is DataHub's, and version 2 reads what version 1 wrote ----------------


def test_schema_files_are_what_trim_datahub_writes(datahub_wheel):
    folder = files("metaverse_kit.events").joinpath("schemas")
    written = trim_datahub.schema_texts(datahub_wheel)
    assert sorted(written) == ["MetadataChangeEvent.avsc", "MetadataChangeEvent.v1.avsc"]
    for name, text in written.items():
        assert folder.joinpath(name).read_text(encoding="utf-8") == text, name


def test_versions_oldest_first_the_current_one_last():
    assert mce_versions() == (1, 2)
    v1 = files("metaverse_kit.events").joinpath("schemas", "MetadataChangeEvent.v1.avsc")
    assert mce_definition(1) == json.dumps(json.loads(v1.read_text("utf-8")), separators=(",", ":"))
    assert mce_definition(2) == mce_definition() == builtin_schema_definitions()[MCE_FULL_NAME]
    assert mce_schema(1) != mce_schema()
    for bad in (0, 3, "2", True):
        with pytest.raises(SchemaNotFoundError, match="versions 1 to 2"):
            mce_definition(bad)


def test_version_2_follows_version_1_under_backward_compatibility(tmp_path):
    assert breaking_changes(mce_definition(2), mce_definition(1), "Backward") == []
    with mk.connect(path=tmp_path / "ws") as ws:
        # A workspace made before version 2: the group holds version 1 only.
        group = ws.registry.create_group("older", compatibility="Backward")
        first = ws.registry.register_schema(group.name, mce_definition(1))
        second = ws.registry.register_schema(group.name, mce_definition(2))
    assert (first.version, second.version) == (1, 2)
    assert first.name == second.name == MCE_FULL_NAME


@pytest.mark.parametrize("kind", list(_events()))
def test_events_written_with_version_1_read_under_version_2(kind, strip_names):
    event = _events()[kind]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(mce_schema(1)), event)
    buf.seek(0)
    read = fastavro.schemaless_reader(
        buf,
        fastavro.parse_schema(mce_schema(1)),
        fastavro.parse_schema(mce_schema(2)),
        return_record_name=False,
    )
    assert read == strip_names(event)


def _source_event() -> dict:
    view = make_dataset_urn("postgres", "shop.public.big_orders")
    table = make_dataset_urn("postgres", "shop.public.orders")
    fields = [
        A.schema_field(
            "id", "NumberType", native_type="INTEGER", nullable=False, is_part_of_key=True
        ),
        A.schema_field("tags", "ArrayType", native_type="TEXT[]", nested=["string"]),
        A.schema_field(
            "attrs",
            "MapType",
            native_type="JSONB",
            nested=["string", "string"],
            description="free-form",
            tags=["pii"],
        ),
        A.schema_field("paid", "boolean", native_type="BOOLEAN"),
    ]
    return A.mce(
        view,
        [
            A.dataset_properties(name="big_orders", description="Orders over 100"),
            A.schema_metadata(
                "big_orders",
                fields,
                platform="postgres",
                primary_keys=["id"],
                raw_schema="CREATE VIEW ...",
                schema_kind="MySqlDDL",
            ),
            A.editable_schema_metadata(
                {"id": {"description": "Key", "tags": ["pk"], "terms": ["Finance.Id"]}}, **STAMP
            ),
            A.view_properties("SELECT * FROM orders WHERE total > 100"),
            A.upstream_lineage([(table, "VIEW")]),
            A.status(False),
        ],
        system_metadata=A.system_metadata(run_id="sql-1", pipeline_name="shop"),
    )


def test_datahub_schema_reads_what_sources_report(avro_roundtrip, datahub_parsed, strip_names):
    event = _source_event()
    read = avro_roundtrip(event, reader=datahub_parsed, return_record_name=False)
    expected = strip_names(event)
    # DataHub's fieldless type records have no _present: Avro resolution skips it.
    for f in expected["proposedSnapshot"]["aspects"][1]["fields"]:
        f["type"]["type"].pop("_present", None)
    assert read == expected
    assert avro_roundtrip(event) == event


def test_our_schema_reads_datahubs_fieldless_records(our_parsed, datahub_parsed):
    event = _source_event()
    for f in event["proposedSnapshot"][1]["aspects"][1][1]["fields"]:
        f["type"]["type"][1].pop("_present", None)  # DataHub's records have no field
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, datahub_parsed, event)
    buf.seek(0)
    read = fastavro.schemaless_reader(buf, datahub_parsed, our_parsed, return_record_name=False)
    types = [f["type"]["type"] for f in read["proposedSnapshot"]["aspects"][1]["fields"]]
    assert types[0] == {"_present": True}  # the default fills in what DataHub's bytes lack
    assert types[1] == {"nestedType": ["string"]}


def mce_record_fields(full_name: str) -> list:
    """The fields of one record of our schema, with its named types written out in full."""
    from metaverse_kit.events.avro import AvroSchema

    avro = AvroSchema(mce_definition())

    def expand(t):
        r = avro.resolve(t)
        if isinstance(r, list):
            return [expand(b) for b in r]
        if isinstance(r, dict) and r.get("type") == "record":
            return {**r, "fields": [{**f, "type": expand(f["type"])} for f in r["fields"]]}
        if isinstance(r, dict) and r.get("type") == "array":
            return {**r, "items": expand(r["items"])}
        if isinstance(r, dict) and r.get("type") == "map":
            return {**r, "values": expand(r["values"])}
        return r

    return expand(full_name)["fields"]
