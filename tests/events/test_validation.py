"""Validation: every problem with its path, and union branches that are never guessed wrong."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

import metaverse_kit as mk
from metaverse_kit.events.validation import normalize

SNAPSHOT = "com.linkedin.pegasus2avro.metadata.snapshot."
COMMON = "com.linkedin.pegasus2avro.common."


def test_the_issue_example_path_and_message() -> None:
    record = mk.mce(
        mk.make_dataset_urn("hive", "db.t"),
        [mk.aspects.status(False), mk.aspects.ownership(["jdoe"], time_ms=1)],
    )
    record["proposedSnapshot"][1]["aspects"][1][1]["owners"][0]["type"] = "OWNERX"
    (problem,) = mk.validate(record, mk.mce_definition())
    assert problem.path == "proposedSnapshot.aspects[1].owners[0].type"
    assert problem.message.startswith("'OWNERX' is not one of 'CUSTOM', 'TECHNICAL_OWNER'")


def test_every_problem_is_reported() -> None:
    record = mk.example_mce()
    info = record["proposedSnapshot"][1]["aspects"][0][1]
    info["active"] = "yes"
    info["email"] = 42
    info["bogus"] = 1
    problems = mk.validate(record, mk.mce_definition())
    assert {p.path for p in problems} == {
        "proposedSnapshot.aspects[0]",
        "proposedSnapshot.aspects[0].active",
        "proposedSnapshot.aspects[0].email",
    }
    assert any("unknown field 'bogus'" in p.message for p in problems)


def test_plain_dict_takes_the_one_branch_that_holds_all_its_fields() -> None:
    record = mk.example_mce()
    name, snapshot = record["proposedSnapshot"]
    plain = {
        **record,
        "proposedSnapshot": {"urn": snapshot["urn"], "aspects": [snapshot["aspects"][0][1]]},
    }
    # CorpUserSnapshot and four other snapshots all have exactly {urn, aspects}: ambiguous.
    (problem,) = mk.validate(plain, mk.mce_definition())
    assert problem.path == "proposedSnapshot"
    assert "fits several branches" in problem.message and SNAPSHOT + "CorpUserSnapshot" in (
        problem.message
    )
    # With the snapshot named, the aspect dict fits only CorpUserInfo among its branches.
    named = {**plain, "proposedSnapshot": (name, plain["proposedSnapshot"])}
    assert mk.validate(named, mk.mce_definition()) == []
    explicit = normalize(named, mk.mce_definition())
    assert explicit["proposedSnapshot"][1]["aspects"][0][0] == (
        "com.linkedin.pegasus2avro.identity.CorpUserInfo"
    )


def test_unknown_branch_names_the_branches() -> None:
    record = mk.example_mce()
    record["proposedSnapshot"] = (SNAPSHOT + "ChartSnapshot", record["proposedSnapshot"][1])
    (problem,) = mk.validate(record, mk.mce_definition())
    assert "is not a branch" in problem.message and "CorpUserSnapshot" in problem.message


def test_never_writes_a_branch_that_drops_fields(datahub_schema: Any) -> None:
    """fastavro alone writes this DataHub CorpUser snapshot as a ChartSnapshot and loses it."""
    snapshot = {
        "urn": "urn:li:corpuser:x",
        "aspects": [
            {
                "active": True,
                "displayName": "X",
                "email": "x@y",
                "title": None,
                "managerUrn": None,
                "departmentId": None,
                "departmentName": None,
                "firstName": None,
                "lastName": None,
                "fullName": "X",
                "countryCode": None,
                "customProperties": {},
                "system": False,
            }
        ],
    }
    record = {
        "auditHeader": None,
        "proposedSnapshot": snapshot,
        "proposedDelta": None,
        "systemMetadata": None,
    }
    parsed = fastavro.parse_schema(datahub_schema)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    buf.seek(0)
    lost = fastavro.schemaless_reader(buf, parsed, None, return_record_name=True)
    assert lost["proposedSnapshot"][0] != SNAPSHOT + "CorpUserSnapshot"  # the trap is real
    problems = mk.validate(record, datahub_schema)
    assert problems and "fits several branches" in problems[0].message


@pytest.mark.parametrize(
    ("value", "kind", "fragment"),
    [
        (2**31, "int", "out of the int range"),
        (True, "long", "expected an integer"),
        ("1", "double", "expected a number"),
        ("x", "bytes", "expected bytes"),
        (None, "string", "expected a string"),
    ],
)
def test_primitive_messages(value: Any, kind: str, fragment: str) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": kind}]}
    (problem,) = mk.validate({"f": value}, schema)
    assert problem.path == "f" and fragment in problem.message
