"""URN builders and parsers, with DataHub's encoding of reserved characters."""

from __future__ import annotations

import dataclasses

import pytest

from metaverse_kit.errors import MetaverseError
from metaverse_kit.events.urns import (
    FABRIC_TYPES,
    SNAPSHOT_NAMES,
    DatasetUrn,
    InvalidUrnError,
    Urn,
    decode_urn_part,
    encode_urn_part,
    entity_type_of,
    make_data_platform_urn,
    make_dataset_urn,
    make_glossary_node_urn,
    make_group_urn,
    make_tag_urn,
    make_term_urn,
    make_user_urn,
    parse_dataset_urn,
    parse_urn,
    snapshot_for_urn,
)

# name -> how DataHub writes it inside a URN
ENCODED = {
    "orders": "orders",
    "sales.orders,eu": "sales.orders%2Ceu",
    "f(x)": "f%28x%29",
    "a␟b": "a%E2%90%9Fb",
    "100% done": "100% done",  # % is not reserved, so DataHub leaves it alone
    "s3://bucket/key:v 1": "s3://bucket/key:v 1",
    "(a,(b))": "%28a%2C%28b%29%29",
}


def test_invalid_urn_error_is_ours_and_a_value_error():
    assert issubclass(InvalidUrnError, MetaverseError)
    assert issubclass(InvalidUrnError, ValueError)


# -- encoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "encoded"), ENCODED.items())
def test_encoding_of_reserved_characters(name, encoded):
    assert encode_urn_part(name) == encoded
    assert decode_urn_part(encoded) == name


@pytest.mark.parametrize("name", [*ENCODED, "x%2Cy%zz", "%", "é,ü"])
def test_encoding_matches_datahubs_urn_encoder(name, datahub_encode):
    assert encode_urn_part(name) == datahub_encode(name)


def test_decoding_accepts_lower_case_escapes():
    assert decode_urn_part("a%2cb%28%29") == "a,b()"


def test_literal_escape_in_a_name_collides_as_in_datahub():
    # DataHub does not encode '%', so these two names give the same URN.
    assert make_dataset_urn("hive", "a%2Cb") == make_dataset_urn("hive", "a,b")
    assert parse_dataset_urn(make_dataset_urn("hive", "a%2Cb")).name == "a,b"


# -- builders ------------------------------------------------------------------------------------


def test_make_data_platform_urn():
    assert make_data_platform_urn("hive") == "urn:li:dataPlatform:hive"
    assert make_data_platform_urn("urn:li:dataPlatform:hive") == "urn:li:dataPlatform:hive"


@pytest.mark.parametrize(
    ("build", "entity_type"),
    [
        (make_user_urn, "corpuser"),
        (make_group_urn, "corpGroup"),
        (make_tag_urn, "tag"),
        (make_term_urn, "glossaryTerm"),
        (make_glossary_node_urn, "glossaryNode"),
        (make_data_platform_urn, "dataPlatform"),
    ],
)
@pytest.mark.parametrize(("name", "encoded"), ENCODED.items())
def test_single_part_builders_encode_and_roundtrip(build, entity_type, name, encoded):
    urn = build(name)
    assert urn == f"urn:li:{entity_type}:{encoded}"
    assert build(urn) == urn
    parsed = parse_urn(urn)
    assert parsed == Urn(entity_type, (encoded,))
    assert decode_urn_part(parsed.parts[0]) == name
    assert parsed.urn == str(parsed) == urn


def test_make_dataset_urn():
    assert (
        make_dataset_urn("hive", "db.orders")
        == "urn:li:dataset:(urn:li:dataPlatform:hive,db.orders,PROD)"
    )
    assert (
        make_dataset_urn("urn:li:dataPlatform:kafka", "topic", "dev")
        == "urn:li:dataset:(urn:li:dataPlatform:kafka,topic,DEV)"
    )


@pytest.mark.parametrize(("name", "encoded"), ENCODED.items())
@pytest.mark.parametrize("env", ["PROD", "DEV", "NON_PROD", "sandbox"])
def test_dataset_urn_roundtrip(name, encoded, env):
    urn = make_dataset_urn("hive", name, env)
    assert urn == f"urn:li:dataset:(urn:li:dataPlatform:hive,{encoded},{env.upper()})"
    parsed = parse_dataset_urn(urn)
    assert parsed == DatasetUrn("hive", name, env.upper())
    assert parsed.urn == str(parsed) == urn
    assert parsed.platform_urn == "urn:li:dataPlatform:hive"
    assert make_dataset_urn(parsed.platform, parsed.name, parsed.env) == urn


def test_bad_env_lists_the_fabric_types():
    with pytest.raises(InvalidUrnError, match="'PRODUCTION' is not a DataHub environment") as exc:
        make_dataset_urn("hive", "t", "PRODUCTION")
    assert ", ".join(FABRIC_TYPES) in str(exc.value)


@pytest.mark.parametrize(
    ("build", "value", "message"),
    [
        (make_user_urn, "", "cannot be empty"),
        (make_user_urn, None, "must be a string"),
        (make_user_urn, "urn:li:corpGroup:g", "got a 'corpGroup' URN"),
        (make_group_urn, "urn:li:corpuser:u", "got a 'corpuser' URN"),
        (make_tag_urn, "urn:li:glossaryTerm:t", "Expected a tag name or an 'urn:li:tag:...'"),
        (make_term_urn, "urn:li:tag:t", "got a 'tag' URN"),
        (make_tag_urn, "urn:li:tag:(a,b)", "its key has one part"),
        (make_tag_urn, "urn:li:tag:a,b", "reserved character"),
        (make_data_platform_urn, "urn:li:corpuser:x", "got a 'corpuser' URN"),
        (make_data_platform_urn, "", "cannot be empty"),
    ],
)
def test_builders_refuse_bad_input(build, value, message):
    with pytest.raises(InvalidUrnError, match=message):
        build(value)


def test_make_dataset_urn_refuses_empty_names():
    with pytest.raises(InvalidUrnError, match="dataset name must be a non-empty string"):
        make_dataset_urn("hive", "")
    with pytest.raises(InvalidUrnError, match="platform name cannot be empty"):
        make_dataset_urn("", "t")


# -- parsers -------------------------------------------------------------------------------------


def test_parse_urn_keeps_nested_urns_as_strings():
    urn = "urn:li:dataset:(urn:li:dataPlatform:hive,db.t%2Cx,PROD)"
    assert parse_urn(urn) == Urn("dataset", ("urn:li:dataPlatform:hive", "db.t%2Cx", "PROD"))
    nested = "urn:li:schemaField:(urn:li:dataset:(urn:li:dataPlatform:hive,t,PROD),col)"
    assert parse_urn(nested).parts == ("urn:li:dataset:(urn:li:dataPlatform:hive,t,PROD)", "col")
    assert parse_urn(nested).urn == nested


def test_urn_is_frozen():
    urn = parse_urn("urn:li:tag:pii")
    with pytest.raises(dataclasses.FrozenInstanceError):
        urn.entity_type = "corpuser"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("pii", "a URN starts with 'urn:li:'"),
        (" urn:li:tag:pii", "remove the surrounding spaces"),
        ("urn:li:", "expected 'urn:li:<entityType>:<key>'"),
        ("urn:li:tag", "expected 'urn:li:<entityType>:<key>'"),
        ("urn:li:tag:", "expected 'urn:li:<entityType>:<key>'"),
        ("urn:li::x", "expected 'urn:li:<entityType>:<key>'"),
        ("urn:li:dataset:(a,,PROD)", "one of the parts in its key is empty"),
        ("urn:li:dataset:(a,b", "reserved character"),
        ("urn:li:dataset:(a,b))", "parentheses do not match"),
        ("urn:li:dataset:((a,b)", "parentheses do not match"),
        ("urn:li:dataset:(a)(b)", "parentheses do not match"),
        (42, "must be a string"),
    ],
)
def test_parse_urn_refuses_bad_input(value, message):
    with pytest.raises(InvalidUrnError, match=message):
        parse_urn(value)


@pytest.mark.parametrize(
    ("urn", "entity_type"),
    [
        ("urn:li:dataset:(urn:li:dataPlatform:hive,t,PROD)", "dataset"),
        ("urn:li:corpuser:jdoe", "corpuser"),
        ("urn:li:corpGroup:stewards", "corpGroup"),
        ("urn:li:tag:pii", "tag"),
        ("urn:li:glossaryTerm:Finance.Revenue", "glossaryTerm"),
        ("urn:li:chart:(looker,baz)", "chart"),
    ],
)
def test_entity_type_of(urn, entity_type):
    assert entity_type_of(urn) == entity_type


def test_snapshot_for_urn():
    prefix = "com.linkedin.pegasus2avro.metadata.snapshot."
    assert snapshot_for_urn("urn:li:dataset:(urn:li:dataPlatform:hive,t,PROD)") == (
        prefix + "DatasetSnapshot"
    )
    assert snapshot_for_urn("urn:li:corpuser:jdoe") == prefix + "CorpUserSnapshot"
    assert snapshot_for_urn("urn:li:corpGroup:g") == prefix + "CorpGroupSnapshot"
    assert snapshot_for_urn("urn:li:tag:pii") == prefix + "TagSnapshot"
    assert snapshot_for_urn("urn:li:glossaryTerm:t") == prefix + "GlossaryTermSnapshot"


def test_snapshot_for_unsupported_type_names_the_supported_ones():
    with pytest.raises(InvalidUrnError, match="no snapshot for 'chart' entities") as exc:
        snapshot_for_urn("urn:li:chart:(looker,baz)")
    assert ", ".join(SNAPSHOT_NAMES) in str(exc.value)


@pytest.mark.parametrize(
    ("urn", "message"),
    [
        ("urn:li:corpuser:jdoe", "Expected a dataset URN"),
        ("urn:li:dataset:(urn:li:dataPlatform:hive,t)", "expected three parts"),
        ("urn:li:dataset:(hive,t,PROD)", "must be a platform URN"),
        ("urn:li:dataset:(urn:li:corpuser:x,t,PROD)", "must be a platform URN"),
        ("urn:li:dataset:(urn:li:dataPlatform:hive,t,prod)", "'prod' is not a DataHub environment"),
    ],
)
def test_parse_dataset_urn_refuses_bad_input(urn, message):
    with pytest.raises(InvalidUrnError, match=message):
        parse_dataset_urn(urn)


def test_fabric_types_are_datahubs(our_types):
    assert list(FABRIC_TYPES) == our_types["com.linkedin.pegasus2avro.common.FabricType"]["symbols"]


def test_snapshot_names_are_in_the_schema(our_types):
    assert set(SNAPSHOT_NAMES.values()) <= set(our_types)
