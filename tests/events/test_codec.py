"""Bodies as azure-schemaregistry-avroencoder writes them, checked both ways with its encoder."""

from __future__ import annotations

import json

import pytest
from azure.schemaregistry.encoder.avroencoder import AvroEncoder

import metaverse_kit as mk
from metaverse_kit.events.codec import content_type_for, schema_id_from_content_type

ORDER = json.dumps(
    {
        "type": "record",
        "name": "Order",
        "namespace": "shop",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "customer", "type": ["null", "string"], "default": None},
            {
                "name": "status",
                "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "SHIPPED"]},
            },
            {
                "name": "lines",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "Line",
                        "fields": [
                            {"name": "sku", "type": "string"},
                            {"name": "qty", "type": "int"},
                        ],
                    },
                },
            },
            {"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}},
            {"name": "payload", "type": "bytes", "default": ""},
        ],
    }
)


@pytest.fixture
def encoder(workspace: mk.Workspace) -> AvroEncoder:
    return AvroEncoder(
        client=workspace.registry.sdk_client(), group_name="metadata", auto_register=True
    )


def _order(i: int) -> dict:
    return {
        "id": i,
        "customer": None if i % 2 else f"c{i}",
        "status": "PAID",
        "lines": [{"sku": "a", "qty": i}],
        "tags": {"k": str(i)},
        "payload": bytes([i]),
    }


def test_avroencoder_decodes_what_we_write(workspace: mk.Workspace, encoder: AvroEncoder) -> None:
    props = workspace.schema_properties(ORDER)
    for i in range(3):
        body = mk.encode_body(_order(i), ORDER)
        decoded = encoder.decode({"content": body, "content_type": content_type_for(props.id)})
        assert decoded == _order(i)


def test_we_decode_what_avroencoder_writes(workspace: mk.Workspace, encoder: AvroEncoder) -> None:
    for i in range(3):
        message = encoder.encode(_order(i), schema=ORDER)
        schema_id = schema_id_from_content_type(message["content_type"])
        definition = workspace.registry.get_schema(schema_id).definition
        assert mk.decode_body(message["content"], definition) == _order(i)
        # Same bytes both ways: our encoding is the encoder's encoding.
        assert mk.encode_body(_order(i), definition) == message["content"]


def test_avroencoder_reads_our_mces(workspace: mk.Workspace, encoder: AvroEncoder) -> None:
    props = workspace.schema_properties()
    for record in [
        mk.example_mce(),
        mk.mce(
            mk.make_dataset_urn("hive", "db.t"),
            [mk.aspects.ownership(["jdoe"], time_ms=1), mk.aspects.global_tags(["PII"])],
        ),
    ]:
        body = mk.encode_body(record, mk.mce_definition())
        decoded = encoder.decode({"content": body, "content_type": content_type_for(props.id)})
        # The avro library returns plain dicts for union branches; compare the values.
        snapshot = record["proposedSnapshot"][1]
        assert decoded["proposedSnapshot"]["urn"] == snapshot["urn"]
        assert [a for a in decoded["proposedSnapshot"]["aspects"]] == [
            a[1] for a in snapshot["aspects"]
        ]


def test_content_type_round_trip() -> None:
    assert schema_id_from_content_type(content_type_for("ab" * 16)) == "ab" * 16
    assert schema_id_from_content_type(b"avro/binary+" + b"0" * 32) == "0" * 32
    assert schema_id_from_content_type("application/json") is None
    assert schema_id_from_content_type(None) is None


def test_decode_errors_are_specific() -> None:
    with pytest.raises(mk.DecodeError, match="left over"):
        mk.decode_body(mk.encode_body(_order(1), ORDER) + b"\x00\x00", ORDER)
    with pytest.raises(mk.DecodeError):
        mk.decode_body(b"\xff", ORDER)


def test_encode_refuses_invalid_records_with_every_problem() -> None:
    bad = _order(1)
    bad["status"] = "LOST"
    bad["lines"][0]["qty"] = 2**40
    del bad["id"]
    with pytest.raises(mk.ValidationError) as info:
        mk.encode_body(bad, ORDER)
    assert [str(p) for p in info.value.problems] == [
        "id: required field is missing (type long)",
        "status: 'LOST' is not one of 'NEW', 'PAID', 'SHIPPED'",
        f"lines[0].qty: {2**40} is out of the int range -2147483648..2147483647",
    ]
