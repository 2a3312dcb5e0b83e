"""Aspect and MCE builders: complete records, DataHub's enums and names, clear errors."""

from __future__ import annotations

import time
from typing import Any

import pytest

from metaverse_kit.errors import ValidationError
from metaverse_kit.events import aspects as A
from metaverse_kit.events.urns import InvalidUrnError, make_dataset_urn

P = "com.linkedin.pegasus2avro."
SNAPSHOT = P + "metadata.snapshot."
T = 1_700_000_000_000
DATASET = make_dataset_urn("hive", "db.orders")


def _builders() -> dict[str, A.Aspect]:
    return {
        "ownership": A.ownership(["jdoe"], time_ms=T),
        "global_tags": A.global_tags(["pii"]),
        "glossary_terms": A.glossary_terms(["Revenue"], time_ms=T),
        "editable_dataset_properties": A.editable_dataset_properties("d", time_ms=T),
        "status": A.status(True),
        "institutional_memory": A.institutional_memory([("https://x", "doc")], time_ms=T),
        "dataset_deprecation": A.dataset_deprecation(True, note="n", decommission_time=T),
        "dataset_properties": A.dataset_properties(description="d", created_ms=T),
        "corp_user_info": A.corp_user_info(display_name="J", manager="ann"),
        "group_membership": A.group_membership(["g"]),
        "corp_group_info": A.corp_group_info(display_name="G"),
        "tag_properties": A.tag_properties("PII"),
        "glossary_term_info": A.glossary_term_info("def", parent_node="Finance"),
        "system_metadata": A.system_metadata(last_observed_ms=T),
    }


def _check_complete(value: Any, t: Any, types: dict, path: str) -> None:
    """Assert that every record dict has exactly its schema's fields, in order, recursively."""
    if isinstance(t, str) and t in types:
        t = types[t]
    if isinstance(t, list):
        if value is None:
            assert "null" in t, path
            return
        records = [b for b in t if isinstance(b, str) and types.get(b, {}).get("type") == "record"]
        if isinstance(value, tuple):
            assert value[0] in records, f"{path}: {value[0]} is not a branch"
            _check_complete(value[1], value[0], types, path)
        else:
            # Only non-record branches (a map, say) may be given as plain values.
            maps = [b for b in t if isinstance(b, dict) and b["type"] == "map"]
            assert maps or not isinstance(value, dict), f"{path}: a union's record must be a tuple"
        return
    if isinstance(t, dict) and t["type"] == "record":
        assert isinstance(value, dict), path
        assert list(value) == [f["name"] for f in t["fields"]], path
        for f in t["fields"]:
            _check_complete(value[f["name"]], f["type"], types, f"{path}.{f['name']}")
    elif isinstance(t, dict) and t["type"] == "array":
        for i, item in enumerate(value):
            _check_complete(item, t["items"], types, f"{path}[{i}]")
    elif isinstance(t, dict) and t["type"] == "map":
        for k, item in value.items():
            _check_complete(item, t["values"], types, f"{path}[{k!r}]")


@pytest.mark.parametrize("builder", list(_builders()))
def test_builders_fill_every_field(builder, our_types):
    name, value = _builders()[builder]
    assert name in our_types
    _check_complete(value, name, our_types, name.rpartition(".")[2])


def test_example_mce_is_complete(our_types):
    _check_complete(A.example_mce(), P + "mxe.MetadataChangeEvent", our_types, "mce")


# -- ownership -----------------------------------------------------------------------------------


def test_ownership_defaults():
    name, value = A.ownership(["jdoe"], time_ms=T)
    assert name == P + "common.Ownership"
    assert value == {
        "owners": [
            {
                "owner": "urn:li:corpuser:jdoe",
                "type": "TECHNICAL_OWNER",
                "typeUrn": None,
                "source": None,
                "attribution": None,
            }
        ],
        "ownerTypes": {},
        "lastModified": {
            "time": T,
            "actor": "urn:li:corpuser:datahub",
            "impersonator": None,
            "message": None,
        },
    }


def test_ownership_pairs_groups_and_custom_types():
    _, value = A.ownership(
        [
            ("urn:li:corpGroup:stewards", "data_steward"),
            ("ann", "DATAOWNER"),
            ("bob", "urn:li:ownershipType:__system__technical_owner"),
        ],
        actor="ann",
        time_ms=T,
    )
    owners = [(o["owner"], o["type"], o["typeUrn"]) for o in value["owners"]]
    assert owners == [
        ("urn:li:corpGroup:stewards", "DATA_STEWARD", None),
        ("urn:li:corpuser:ann", "DATAOWNER", None),
        ("urn:li:corpuser:bob", "CUSTOM", "urn:li:ownershipType:__system__technical_owner"),
    ]
    assert value["lastModified"]["actor"] == "urn:li:corpuser:ann"


def test_ownership_accepts_a_single_owner_string():
    _, value = A.ownership("jdoe", time_ms=T)
    assert [o["owner"] for o in value["owners"]] == ["urn:li:corpuser:jdoe"]


def test_ownership_time_defaults_to_now():
    before = int(time.time() * 1000)
    _, value = A.ownership(["jdoe"])
    assert before <= value["lastModified"]["time"] <= int(time.time() * 1000)


def test_ownership_reports_every_problem_with_its_path():
    with pytest.raises(ValidationError) as exc:
        A.ownership(
            [("jdoe", "OWNER"), "urn:li:tag:pii", 42, ("ann", "urn:li:tag:x")],
            actor="urn:li:tag:t",
            time_ms="now",
        )
    paths = [p.path for p in exc.value.problems]
    assert paths == [
        "owners[0].type",
        "owners[1].owner",
        "owners[2]",
        "owners[3].type",
        "lastModified.time",
        "lastModified.actor",
    ]
    message = str(exc.value)
    assert "'OWNER' is not an ownership type; use one of CUSTOM, TECHNICAL_OWNER" in message
    assert "deprecated but accepted: DEVELOPER, DATAOWNER" in message
    assert "An owner is a user or a group" in message
    assert "Ownership aspect" in message


def test_ownership_types_are_datahubs(our_types):
    enum = our_types[P + "common.OwnershipType"]
    assert list(A.OWNERSHIP_TYPES) == enum["symbols"]
    assert set(enum["deprecatedSymbols"]) == A.DEPRECATED_OWNERSHIP_TYPES
    assert A.DEFAULT_OWNERSHIP_TYPE not in A.DEPRECATED_OWNERSHIP_TYPES


# -- the other aspects ---------------------------------------------------------------------------


def test_global_tags_encode_names_and_keep_urns():
    name, value = A.global_tags(["pii", "a,b", "urn:li:tag:gold"])
    assert name == P + "common.GlobalTags"
    assert [t["tag"] for t in value["tags"]] == [
        "urn:li:tag:pii",
        "urn:li:tag:a%2Cb",
        "urn:li:tag:gold",
    ]


def test_global_tags_refuse_other_urns():
    with pytest.raises(ValidationError, match=r"tags\[1\]\.tag: Expected a tag name"):
        A.global_tags(["pii", "urn:li:glossaryTerm:x"])


def test_glossary_terms():
    name, value = A.glossary_terms(
        ["Finance.Revenue", "urn:li:glossaryTerm:x"], actor="a", time_ms=T
    )
    assert name == P + "common.GlossaryTerms"
    assert [t["urn"] for t in value["terms"]] == [
        "urn:li:glossaryTerm:Finance.Revenue",
        "urn:li:glossaryTerm:x",
    ]
    assert value["auditStamp"] == {
        "time": T,
        "actor": "urn:li:corpuser:a",
        "impersonator": None,
        "message": None,
    }


def test_editable_dataset_properties():
    name, value = A.editable_dataset_properties("About orders", name="Orders", time_ms=T)
    assert name == P + "dataset.EditableDatasetProperties"
    assert value["description"] == "About orders"
    assert value["name"] == "Orders"
    assert value["created"] == value["lastModified"]
    assert value["created"] is not value["lastModified"]
    assert value["deleted"] is None


def test_status():
    assert A.status(True) == (
        P + "common.Status",
        {"removed": True, "lifecycleStage": None, "lifecycleLastUpdated": None},
    )
    with pytest.raises(ValidationError, match="removed: expected True or False"):
        A.status("yes")  # type: ignore[arg-type]


def test_institutional_memory():
    name, value = A.institutional_memory([("https://wiki/x", "Runbook")], time_ms=T)
    assert name == P + "common.InstitutionalMemory"
    assert value["elements"][0]["url"] == "https://wiki/x"
    assert value["elements"][0]["description"] == "Runbook"
    assert value["elements"][0]["createStamp"]["time"] == T
    with pytest.raises(ValidationError) as exc:
        A.institutional_memory([("", "d"), "https://x", ("https://y", None)], time_ms=T)
    assert [p.path for p in exc.value.problems] == [
        "elements[0].url",
        "elements[1]",
        "elements[2].description",
    ]


def test_dataset_deprecation():
    name, value = A.dataset_deprecation(True, note="Use v2", decommission_time=T)
    assert name == P + "dataset.DatasetDeprecation"
    assert value == {
        "deprecated": True,
        "decommissionTime": T,
        "note": "Use v2",
        "actor": "urn:li:corpuser:datahub",
    }
    assert A.dataset_deprecation(False, actor=None)[1]["actor"] is None


def test_dataset_properties():
    name, value = A.dataset_properties(
        name="orders", custom_properties={"team": "sales"}, created_ms=T, tags=["x"]
    )
    assert name == P + "dataset.DatasetProperties"
    assert value["customProperties"] == {"team": "sales"}
    assert value["created"] == (P + "common.TimeStamp", {"time": T, "actor": None})
    assert value["lastModified"] is None
    assert value["tags"] == ["x"]
    with pytest.raises(ValidationError, match=r"customProperties\['n'\]"):
        A.dataset_properties(custom_properties={"n": 1})  # type: ignore[dict-item]


def test_corp_user_info():
    name, value = A.corp_user_info(display_name="John", email="j@x", manager="ann", active=False)
    assert name == P + "identity.CorpUserInfo"
    assert value["active"] is False
    assert value["managerUrn"] == "urn:li:corpuser:ann"
    assert value["system"] is False
    with pytest.raises(ValidationError) as exc:
        A.corp_user_info(active="yes", department_id=True, email=3)  # type: ignore[arg-type]
    assert [p.path for p in exc.value.problems] == ["active", "departmentId", "email"]


def test_corp_group_info_leaves_deprecated_lists_empty():
    name, value = A.corp_group_info(display_name="Stewards", description="d")
    assert name == P + "identity.CorpGroupInfo"
    assert (value["admins"], value["members"], value["groups"]) == ([], [], [])


def test_group_membership():
    assert A.group_membership(["a(b)"])[1] == {"groups": ["urn:li:corpGroup:a%28b%29"]}


def test_tag_properties():
    assert A.tag_properties("PII", color_hex="#FF0000") == (
        P + "tag.TagProperties",
        {"name": "PII", "description": None, "colorHex": "#FF0000"},
    )
    with pytest.raises(ValidationError, match="name: expected a non-empty display name"):
        A.tag_properties("")


def test_glossary_term_info():
    name, value = A.glossary_term_info("Money in", name="Revenue", parent_node="Finance")
    assert name == P + "glossary.GlossaryTermInfo"
    assert value["termSource"] == "INTERNAL"
    assert value["parentNode"] == "urn:li:glossaryNode:Finance"
    with pytest.raises(ValidationError, match="termSource: expected one of INTERNAL, EXTERNAL"):
        A.glossary_term_info("d", term_source="internal")


def test_system_metadata():
    name, value = A.system_metadata(last_observed_ms=T)
    assert name == P + "mxe.SystemMetadata"
    assert value["runId"] == value["lastRunId"] == "no-run-id-provided"
    assert value["lastObserved"] == T


# -- aspect names --------------------------------------------------------------------------------


def test_aspect_names_match_the_schemas_annotations(our_types):
    annotated = {
        name: t["Aspect"]["name"]
        for name, t in our_types.items()
        if "Aspect" in t and name != P + "mxe.SystemMetadata"
    }
    assert dict(A.ASPECT_NAMES) == annotated


def test_aspect_name():
    assert A.aspect_name(P + "common.Ownership") == "ownership"
    assert A.aspect_name(P + "identity.CorpUserInfo") == "corpUserInfo"
    with pytest.raises(A.UnknownAspectError, match="known aspects: corpGroupInfo"):
        A.aspect_name("Ownership")
    with pytest.raises(LookupError):
        A.aspect_name(P + "dataset.DatasetUpstreamLineage")  # DataHub has it; ours does not


def test_aspect_names_cannot_be_changed():
    with pytest.raises(TypeError):
        A.ASPECT_NAMES["x"] = "y"  # type: ignore[index]


# -- the MCE -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("urn", "aspect", "snapshot"),
    [
        (DATASET, A.status(False), "DatasetSnapshot"),
        ("urn:li:corpuser:jdoe", A.status(False), "CorpUserSnapshot"),
        ("urn:li:corpGroup:g", A.status(False), "CorpGroupSnapshot"),
        ("urn:li:tag:pii", A.tag_properties("PII"), "TagSnapshot"),
        ("urn:li:glossaryTerm:t", A.glossary_term_info("d"), "GlossaryTermSnapshot"),
    ],
)
def test_mce_picks_the_snapshot_from_the_urn(urn, aspect, snapshot):
    event = A.mce(urn, [aspect])
    assert event == {
        "auditHeader": None,
        "proposedSnapshot": (SNAPSHOT + snapshot, {"urn": urn, "aspects": [aspect]}),
        "proposedDelta": None,
        "systemMetadata": None,
    }


def test_allowed_aspects_follow_datahub(datahub_types):
    allowed = A.allowed_aspects("urn:li:corpGroup:g")
    theirs = datahub_types[SNAPSHOT + "CorpGroupSnapshot"]["fields"][1]["type"]["items"]
    assert set(allowed) <= set(theirs)
    assert P + "common.Ownership" not in allowed


def test_mce_rejects_aspects_the_snapshot_does_not_hold():
    with pytest.raises(ValidationError) as exc:
        A.mce("urn:li:corpGroup:g", [A.corp_group_info(), A.ownership(["jdoe"], time_ms=T)])
    [problem] = exc.value.problems
    assert problem.path == "proposedSnapshot.aspects[1]"
    assert problem.message == (
        "Ownership cannot be set on a corpGroup in an MCE: the CorpGroupSnapshot holds only "
        "CorpGroupKey, CorpGroupInfo, GlobalTags, Status"
    )


def test_mce_reports_malformed_repeated_and_missing_aspects():
    with pytest.raises(ValidationError) as exc:
        A.mce("urn:li:tag:pii", [A.status(False), {"removed": True}, A.status(True)])
    assert [(p.path, p.message.split(" ")[0]) for p in exc.value.problems] == [
        ("proposedSnapshot.aspects[1]", "expected"),
        ("proposedSnapshot.aspects[2]", "Status"),
    ]
    with pytest.raises(ValidationError, match="at least one aspect"):
        A.mce("urn:li:tag:pii", [])


@pytest.mark.parametrize(
    ("urn", "message"),
    [
        ("urn:li:chart:(looker,x)", "no snapshot for 'chart' entities"),
        ("urn:li:dataset:(urn:li:dataPlatform:hive,t,PRODUCTION)", "not a DataHub environment"),
        ("urn:li:tag:(a,b)", "its key has one part"),
        ("pii", "a URN starts with 'urn:li:'"),
    ],
)
def test_mce_rejects_bad_urns(urn, message):
    with pytest.raises(InvalidUrnError, match=message):
        A.mce(urn, [A.status(False)])


def test_mce_system_metadata():
    built = A.system_metadata(run_id="r", last_observed_ms=T)
    assert A.mce(DATASET, [A.status(False)], system_metadata=built)["systemMetadata"] == built
    partial = A.mce(DATASET, [A.status(False)], system_metadata={"runId": "r"})["systemMetadata"]
    assert partial[0] == P + "mxe.SystemMetadata"
    assert partial[1]["runId"] == "r"
    assert partial[1]["lastObserved"] == 0
    with pytest.raises(ValidationError, match="unknown fields 'run_id'"):
        A.mce(DATASET, [A.status(False)], system_metadata={"run_id": "r"})


def test_example_mce():
    assert A.example_mce() == {
        "auditHeader": None,
        "proposedSnapshot": (
            SNAPSHOT + "CorpUserSnapshot",
            {
                "urn": "urn:li:corpuser:datahub",
                "aspects": [
                    (
                        P + "identity.CorpUserInfo",
                        {
                            "customProperties": {},
                            "active": True,
                            "displayName": "Data Hub",
                            "email": "datahub@linkedin.com",
                            "title": "CEO",
                            "managerUrn": None,
                            "departmentId": None,
                            "departmentName": None,
                            "firstName": None,
                            "lastName": None,
                            "fullName": "Data Hub",
                            "countryCode": None,
                            "system": False,
                            "isSupportUser": None,
                        },
                    )
                ],
            },
        ),
        "proposedDelta": None,
        "systemMetadata": None,
    }
