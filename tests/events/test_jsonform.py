"""JSON forms: Avro's JSON encoding (DataHub's example files), list-named branches, plain JSON."""

from __future__ import annotations

import json

import metaverse_kit as mk

DATAHUB_STYLE = """
{
  "auditHeader": null,
  "proposedSnapshot": {
    "com.linkedin.pegasus2avro.metadata.snapshot.DatasetSnapshot": {
      "urn": "urn:li:dataset:(urn:li:dataPlatform:hive,SampleHiveDataset,PROD)",
      "aspects": [
        {"com.linkedin.pegasus2avro.common.Ownership": {
          "owners": [{"owner": "urn:li:corpuser:jdoe", "type": "DATAOWNER", "source": null}],
          "lastModified": {"time": 1581407189000, "actor": "urn:li:corpuser:jdoe",
                           "impersonator": null}
        }},
        {"com.linkedin.pegasus2avro.common.Status": {"removed": false}},
        {"com.linkedin.pegasus2avro.dataset.EditableDatasetProperties": {
          "created": {"time": 0, "actor": "urn:li:corpuser:unknown", "impersonator": null},
          "lastModified": {"time": 0, "actor": "urn:li:corpuser:unknown", "impersonator": null},
          "deleted": null,
          "description": {"string": "A sample"}
        }}
      ]
    }
  },
  "proposedDelta": null
}
"""


def test_datahub_example_files_load_and_emit(workspace: mk.Workspace) -> None:
    record = mk.from_json(json.loads(DATAHUB_STYLE), mk.mce_definition())
    assert record["proposedSnapshot"][0].endswith("DatasetSnapshot")
    aspects = record["proposedSnapshot"][1]["aspects"]
    assert [a[0].rpartition(".")[2] for a in aspects] == [
        "Ownership",
        "Status",
        "EditableDatasetProperties",
    ]
    assert aspects[2][1]["description"] == "A sample"
    (receipt,) = workspace.emit(record)
    table = workspace.replay()
    assert table.num_rows == 1 and table["decode_error"][0].as_py() is None
    assert (
        receipt.partition_key == "urn:li:dataset:(urn:li:dataPlatform:hive,SampleHiveDataset,PROD)"
    )


def test_avro_json_round_trips_through_our_form() -> None:
    record = mk.mce(
        mk.make_dataset_urn("hive", "db.t"),
        [
            mk.aspects.ownership(["jdoe"], time_ms=5),
            mk.aspects.global_tags(["PII"]),
            mk.aspects.editable_dataset_properties("hello", time_ms=5),
        ],
    )
    text = json.dumps(mk.to_avro_json(record, mk.mce_definition()))
    assert mk.from_json(json.loads(text), mk.mce_definition()) == record


def test_list_named_branches_and_plain_json() -> None:
    record = mk.example_mce()
    name, snapshot = record["proposedSnapshot"]
    as_json = json.loads(
        json.dumps(
            {
                **record,
                "proposedSnapshot": [
                    name,
                    {"urn": snapshot["urn"], "aspects": [a[1] for a in snapshot["aspects"]]},
                ],
            }
        )
    )
    assert mk.from_json(as_json, mk.mce_definition()) == record


SAME_SHORT_NAME = {
    "type": "record",
    "name": "Same",
    "namespace": "t",
    "fields": [
        {
            "name": "u",
            "type": [
                {
                    "type": "record",
                    "name": "X",
                    "namespace": "a",
                    "fields": [{"name": "p", "type": "int"}],
                },
                {
                    "type": "record",
                    "name": "X",
                    "namespace": "b",
                    "fields": [{"name": "p", "type": "int"}],
                },
            ],
        }
    ],
}


def test_a_short_name_two_branches_share_picks_neither() -> None:
    # a.X and b.X: the short name X is not enough to know which record the steward meant.
    for obj in ({"u": {"X": {"p": 9}}}, {"u": ["X", {"p": 9}]}):
        record = mk.from_json(obj, SAME_SHORT_NAME)
        assert not isinstance(record["u"], tuple), record
        problems = mk.validate(record, SAME_SHORT_NAME)
        assert [p.path for p in problems] == ["u"]
    # The full names still pick their branch, the second as well as the first.
    assert mk.from_json({"u": {"b.X": {"p": 9}}}, SAME_SHORT_NAME) == {"u": ("b.X", {"p": 9})}
    assert mk.from_json({"u": ["a.X", {"p": 9}]}, SAME_SHORT_NAME) == {"u": ("a.X", {"p": 9})}
    # A short name only one branch has still names it.
    single = json.loads(json.dumps(SAME_SHORT_NAME))
    single["fields"][0]["type"][1]["name"] = "Y"
    assert mk.from_json({"u": {"Y": {"p": 1}}}, single) == {"u": ("b.Y", {"p": 1})}
