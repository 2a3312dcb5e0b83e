"""Schemas are valid Avro before they are stored; events are valid DataHub MCEs before sending.

Strict parsing is the avro package's and fastavro's; URN rules come from DataHub's annotations in
the schema; the compiled fast check only ever says yes to records the full check returns as they
are.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

import metaverse_kit as mk
from metaverse_kit.backends.local.registry import LocalSchemaRegistry
from metaverse_kit.events.codec import encode_bodies, encode_body
from metaverse_kit.events.fastcheck import acceptor
from metaverse_kit.events.semantics import UrnRule, urn_rule
from metaverse_kit.events.strict import check_definition
from metaverse_kit.events.validation import normalize

a = mk.aspects


def _record(**changes: Any) -> str:
    return json.dumps({"type": "record", "name": "P", "namespace": "x", **changes})


INVALID_SCHEMAS = {
    "duplicate field names": (
        _record(fields=[{"name": "a", "type": "int"}, {"name": "a", "type": "string"}]),
        "already in use",
    ),
    "a name that is not an Avro name": (_record(name="1bad-name", fields=[]), "1bad-name"),
    "a record without fields": (_record(), "fields"),
    "fields that are not a list": (_record(fields={}), "list"),
    "a field name that is not an Avro name": (
        _record(fields=[{"name": "a-b", "type": "int"}]),
        "a-b",
    ),
    "a default of the wrong type": (
        _record(fields=[{"name": "a", "type": "int", "default": "x"}]),
        "Default value",
    ),
    "an enum default that is not a symbol": (
        _record(
            fields=[
                {
                    "name": "e",
                    "type": {"type": "enum", "name": "E", "symbols": ["A"]},
                    "default": "B",
                }
            ]
        ),
        'default "B"',
    ),
    "a union default that is not of the union's first branch": (
        _record(fields=[{"name": "u", "type": ["null", "int"], "default": 3}]),
        "first branch",
    ),
    "an undefined type": (_record(fields=[{"name": "a", "type": "Nope"}]), "Nope"),
    "a union inside a union": (_record(fields=[{"name": "a", "type": ["null", ["int"]]}]), "nion"),
    "a duplicate union branch": (_record(fields=[{"name": "a", "type": ["int", "int"]}]), "nion"),
    "duplicate enum symbols": (
        json.dumps({"type": "enum", "name": "E", "symbols": ["A", "A"]}),
        "Duplicate symbol",
    ),
    "a fixed without size": (json.dumps({"type": "fixed", "name": "F"}), "size"),
    "text that is not JSON": ("{", "JSON"),
}


@pytest.mark.parametrize("case", sorted(INVALID_SCHEMAS))
def test_invalid_avro_is_refused_and_nothing_is_stored(case: str, tmp_path: Path) -> None:
    definition, words = INVALID_SCHEMAS[case]
    with pytest.raises(mk.SchemaParseError, match=words):
        check_definition(definition)
    registry = LocalSchemaRegistry(tmp_path / "registry")
    registry.create_group("g")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    index = (tmp_path / "registry" / "index.json").read_bytes()
    with pytest.raises(mk.SchemaParseError):
        registry.register_schema("g", definition, name="x.P")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "registry" / "index.json").read_bytes() == index


def test_valid_schemas_pass_the_strict_parsers() -> None:
    check_definition(mk.mce_definition())
    check_definition(
        _record(
            fields=[
                {"name": "n", "type": ["null", "string"], "default": None},
                {"name": "b", "type": "bytes", "default": "\u00ff"},
                {"name": "m", "type": {"type": "map", "values": "long"}, "default": {"a": 1}},
                {
                    "name": "e",
                    "type": {"type": "enum", "name": "E", "symbols": ["A"]},
                    "default": "A",
                },
            ]
        )
    )


def test_a_union_default_must_be_of_the_unions_first_branch_at_any_depth(
    workspace: mk.Workspace,
) -> None:
    """Avro before 1.12 takes a union's default as its first branch (Java 1.9-1.11 refuses the
    schema): one whose ``["null", "int"]`` field defaults to 3 is refused, not registered, and
    emitting with it is refused too (readers of older events saw u=3 here, null elsewhere)."""

    def problem(field: dict) -> str:
        with pytest.raises(mk.SchemaParseError) as refused:
            check_definition(_record(fields=[{"name": "x", "type": "int"}, field]))
        return str(refused.value)

    assert problem({"name": "u", "type": ["null", "int"], "default": 3}) == (
        "Not a valid Avro schema: the default 3 of field 'u' of x.P is not null, the first "
        'branch of the union ["null", "int"]: readers on Avro before 1.12 require a union\'s '
        'default to be of its first branch (put "int" first in the union, or change the default)'
    )
    assert problem({"name": "u", "type": ["string", "null"], "default": None}).endswith(
        "the default null of field 'u' of x.P is not a string, the first branch of the union "
        '["string", "null"]: readers on Avro before 1.12 require a union\'s default to be of its '
        'first branch (put "null" first in the union, or change the default)'
    )
    inner = {
        "type": "record",
        "name": "In",
        "fields": [{"name": "k", "type": "string"}, {"name": "u", "type": ["null", "long"]}],
    }
    nested = problem({"name": "a", "type": inner, "default": {"k": "z", "u": 4}})
    assert nested.startswith(
        'Not a valid Avro schema: the default {"k": "z", "u": 4} of field \'a\' of x.P '
        "(at u) is not null, the first branch of the union"
    )
    listed = {"name": "l", "type": {"type": "array", "items": ["null", "string"]}}
    assert "(at [1]) is not null" in problem({**listed, "default": [None, "s"]})
    assert "lacks the field 'k'" in problem({"name": "a", "type": inner, "default": {"u": None}})
    for fine in (
        {"name": "u", "type": ["int", "null"], "default": 3},
        {"name": "a", "type": inner, "default": {"k": "z", "u": None}},
        {"name": "r", "type": [inner, "null"], "default": {"k": "z", "u": None}},
        {**listed, "default": [None, None]},
    ):
        check_definition(_record(fields=[{"name": "x", "type": "int"}, fine]))

    v1 = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "int"}]}
    v2 = {**v1, "fields": [*v1["fields"], {"name": "u", "type": ["null", "int"], "default": 3}]}
    assert workspace.registry.register_schema("metadata", json.dumps(v1)).version == 1
    with pytest.raises(mk.SchemaParseError, match="first branch"):
        workspace.registry.register_schema("metadata", json.dumps(v2))
    with pytest.raises(mk.SchemaParseError, match="first branch"):
        workspace.emit({"x": 2}, schema=json.dumps(v2))
    assert workspace.registry.list_versions("metadata", "R") == [1]


def test_schema_and_group_names_follow_azure_rules(tmp_path: Path) -> None:
    registry = LocalSchemaRegistry(tmp_path / "registry")
    for bad in ("..", "a b", "a\x00b", "", "a/b", "$x"):
        with pytest.raises(mk.ConfigurationError, match="schema group name"):
            registry.create_group(bad)
    registry.create_group("g-1.ok_2")
    with pytest.raises(mk.ConfigurationError, match="schema name"):
        registry.register_schema("g-1.ok_2", _record(fields=[]), name="a/b")
    long_name = "com.example." + "a" * 45
    with pytest.raises(mk.ConfigurationError, match="shorter name="):
        registry.register_schema(
            "g-1.ok_2", json.dumps({**json.loads(_record(fields=[])), "name": long_name})
        )
    assert registry.list_schemas("g-1.ok_2") == []


# -- DataHub's rules -------------------------------------------------------------------------

DATASET = mk.make_dataset_urn("hive", "db.orders")
_SNAP = "com.linkedin.pegasus2avro.metadata.snapshot."


def _problems(event: Any) -> list[str]:
    return [str(p) for p in mk.validate(event, mk.mce_definition())]


def test_urn_rules_come_from_datahubs_annotations() -> None:
    assert urn_rule({"name": "x", "type": "string"}) is None
    assert urn_rule({"Urn": "Urn"}) == UrnRule(None)
    assert urn_rule({"Urn": "DatasetUrn"}) == UrnRule(frozenset({"dataset"}))
    assert urn_rule({"Urn": "CorpuserUrn"}) == UrnRule(frozenset({"corpuser"}))
    owner = {"Urn": "Urn", "Relationship": {"entityTypes": ["corpuser", "corpGroup"]}}
    assert urn_rule(owner) == UrnRule(frozenset({"corpuser", "corpGroup"}))
    groups = {
        "Urn": "Urn",
        "urn_is_array": True,
        "Relationship": {"/*": {"entityTypes": ["corpGroup"]}},
    }
    assert urn_rule(groups) == UrnRule(frozenset({"corpGroup"}))


def test_a_snapshots_urn_is_of_its_entity_even_with_a_generic_annotation() -> None:
    snapshot = "com.linkedin.pegasus2avro.metadata.snapshot.DataHubPolicySnapshot"
    assert urn_rule({"name": "urn", "Urn": "Urn"}, snapshot) == UrnRule(
        frozenset({"dataHubPolicy"})
    )
    assert urn_rule({"name": "urn"}, _SNAP + "CorpUserSnapshot") == UrnRule(frozenset({"corpuser"}))
    assert urn_rule({"name": "urn"}, "x.Other") is None


def test_the_snapshot_urn_must_be_of_the_snapshots_entity_type() -> None:
    good = mk.mce(DATASET, [a.status(False)])
    assert _problems(good) == []
    wrong = copy.deepcopy(good)
    wrong["proposedSnapshot"] = (
        _SNAP + "DatasetSnapshot",
        {**good["proposedSnapshot"][1], "urn": "urn:li:corpuser:x"},
    )
    (problem,) = _problems(wrong)
    assert problem.startswith("proposedSnapshot.urn: expected a 'urn:li:dataset:...' URN")
    wrong["proposedSnapshot"][1]["urn"] = "not a urn at all"
    (problem,) = _problems(wrong)
    assert "proposedSnapshot.urn: Invalid URN 'not a urn at all'" in problem
    wrong["proposedSnapshot"][1]["urn"] = "urn:li:dataset:(urn:li:dataPlatform:hive,t,NOWHERE)"
    (problem,) = _problems(wrong)
    assert "FabricType" in problem


def test_aspect_urns_must_be_of_their_entity_types() -> None:
    event = mk.mce(
        DATASET,
        [
            a.ownership(["jdoe"]),
            a.global_tags(["PII"]),
            a.glossary_terms(["Revenue"]),
        ],
    )
    aspects = event["proposedSnapshot"][1]["aspects"]
    aspects[0][1]["owners"][0]["owner"] = "urn:li:tag:PII"
    aspects[1][1]["tags"][0]["tag"] = "urn:li:corpuser:jdoe"
    aspects[2][1]["terms"][0]["urn"] = "urn:li:tag:Revenue"
    aspects[2][1]["auditStamp"]["actor"] = "nobody"
    found = _problems(event)
    assert len(found) == 4, found
    assert found[0].startswith(
        "proposedSnapshot.aspects[0].owners[0].owner: expected a 'urn:li:corpGroup:...' or "
        "'urn:li:corpuser:...' URN"
    )
    assert found[1].startswith(
        "proposedSnapshot.aspects[1].tags[0].tag: expected a 'urn:li:tag:...' URN"
    )
    assert found[2].startswith(
        "proposedSnapshot.aspects[2].terms[0].urn: expected a 'urn:li:glossaryTerm:...'"
    )
    assert found[3].startswith("proposedSnapshot.aspects[2].auditStamp.actor: Invalid URN 'nobody'")
    user = mk.mce(mk.make_user_urn("jdoe"), [a.group_membership(["stewards"])])
    user["proposedSnapshot"][1]["aspects"][0][1]["groups"].append("urn:li:corpuser:x")
    (problem,) = _problems(user)
    assert problem.startswith(
        "proposedSnapshot.aspects[0].groups[1]: expected a 'urn:li:corpGroup:...' URN"
    )


def test_no_nul_or_lone_surrogate_in_any_string_or_map_key() -> None:
    event = mk.mce(
        DATASET, [a.dataset_properties(name="t", description="ok", custom_properties={"k": "v"})]
    )
    props = event["proposedSnapshot"][1]["aspects"][0][1]
    props["description"] = "a\x00b"
    props["name"] = "caf\udce9"
    props["customProperties"] = {"k\x00": "v"}
    found = _problems(event)
    assert any(
        p.startswith("proposedSnapshot.aspects[0].description: contains a NUL") for p in found
    ), found
    assert any(
        p.startswith("proposedSnapshot.aspects[0].name: contains a lone surrogate") for p in found
    ), found
    assert any("the key 'k\\x00' contains a NUL" in p for p in found), found
    with pytest.raises(mk.ValidationError) as info:
        encode_body(event, mk.mce_definition())
    assert len(info.value.problems) == 3


# -- the compiled fast check agrees with the full one ----------------------------------------------


def _variants(rng: random.Random, event: dict) -> list[Any]:
    """The event, and copies with one thing changed: some still valid, most not."""
    out: list[Any] = [event]
    snapshot = event["proposedSnapshot"][1]
    aspect = snapshot["aspects"][0][1]
    key = rng.choice(sorted(aspect))
    for change in (
        lambda e: e.pop("systemMetadata"),  # a field with a default left out: valid, not explicit
        lambda e: e.update(extra=1),
        lambda e: e["proposedSnapshot"][1].update(urn="urn:li:corpuser:x"),
        lambda e: e["proposedSnapshot"][1]["aspects"][0][1].update({key: 3.5}),
        lambda e: e["proposedSnapshot"][1]["aspects"][0][1].pop(key),
        lambda e: e["proposedSnapshot"][1]["aspects"].append(("no.Such", {})),
        lambda e: e.update(proposedSnapshot=e["proposedSnapshot"][1]),  # plain dict in a union
        lambda e: e["proposedSnapshot"][1].update(urn=e["proposedSnapshot"][1]["urn"] + "\x00"),
        lambda e: e.update(auditHeader=True),
    ):
        copy_ = copy.deepcopy(event)
        change(copy_)
        out.append(copy_)
    return out


def test_the_fast_check_only_accepts_what_the_full_check_returns_unchanged() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from replay import _aspects

    rng = random.Random(3)
    definition = mk.mce_definition()
    accepts = acceptor(definition)
    events = [mk.mce(DATASET, _aspects(rng, i)) for i in range(60)]
    events += [mk.example_mce(), mk.mce(mk.make_group_urn("g"), [a.corp_group_info(email="g@x")])]
    accepted = rejected = 0
    for event in events:
        for variant in _variants(rng, event):
            if accepts(variant):
                accepted += 1
                assert normalize(variant, definition) == variant
            else:
                rejected += 1
                try:
                    normalize(variant, definition)
                except mk.ValidationError:
                    continue
    assert accepted >= 62 and rejected >= 62 * 8
    bodies = encode_bodies(events, definition)
    assert bodies == [encode_body(e, definition) for e in events]


def test_encode_bodies_reports_every_problem_of_every_event_with_its_index() -> None:
    good = mk.example_mce()
    bad = copy.deepcopy(good)
    bad["proposedSnapshot"][1]["urn"] = "nope"
    with pytest.raises(mk.ValidationError) as info:
        encode_bodies([good, bad, bad], mk.mce_definition())
    assert [p.path for p in info.value.problems] == [
        "events[1].proposedSnapshot.urn",
        "events[2].proposedSnapshot.urn",
    ]


KINDS = {
    "type": "record",
    "name": "Node",
    "namespace": "t",
    "fields": [
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "b", "type": "boolean"},
        {"name": "s", "type": "string"},
        {"name": "raw", "type": "bytes"},
        {"name": "fx", "type": {"type": "fixed", "name": "F", "size": 2}},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
        {"name": "m", "type": {"type": "map", "values": ["null", "long"]}},
        {"name": "u", "type": ["null", "string", "long", {"type": "array", "items": "E"}]},
        {"name": "amb", "type": ["null", "int", "long"]},
        {"name": "owner", "type": "string", "Urn": "Urn"},
        {"name": "next", "type": ["null", "Node"]},
    ],
}


def _node(rng: random.Random, depth: int = 0) -> dict:
    return {
        "i": rng.randrange(-5, 5),
        "l": rng.randrange(-(2**40), 2**40),
        "f": rng.random(),
        "d": rng.choice([1, 2.5]),
        "b": rng.random() < 0.5,
        "s": rng.choice(["x", "é", "日本"]),
        "raw": b"\x00\xff",
        "fx": b"ab",
        "e": rng.choice(["A", "B"]),
        "m": {"k": rng.choice([None, 3])},
        "u": rng.choice([None, "s", 7, ["A", "B"]]),
        "amb": None,
        "owner": "urn:li:corpuser:x",
        "next": ("t.Node", _node(rng, depth + 1)) if depth < 2 and rng.random() < 0.5 else None,
    }


_BREAK = [
    ("i", 2**31),
    ("i", True),
    ("l", 1.0),
    ("f", 1e39),
    ("f", "1"),
    ("d", None),
    ("b", 1),
    ("s", "a\x00"),
    ("s", "\ud800"),
    ("raw", "x"),
    ("fx", b"abc"),
    ("e", "C"),
    ("m", {"k\x00": 1}),
    ("m", {"k": "v"}),
    ("u", ["C"]),
    ("u", 1.5),
    ("amb", 3),  # fits int and long: the full check settles it, the fast one says "ask"
    ("owner", "nobody"),
    ("next", {"i": 1}),
    ("next", ("t.Other", {})),
]


def test_the_fast_check_agrees_with_the_full_one_on_every_avro_kind() -> None:
    definition = json.dumps(KINDS)
    accepts = acceptor(definition)
    rng = random.Random(5)
    for _ in range(40):
        node = _node(rng)
        assert accepts(node) and normalize(node, definition) == node
        for key, value in _BREAK:
            broken = {**node, key: value}
            assert not accepts(broken), (key, value)
            try:
                normalize(broken, definition)
            except mk.ValidationError:
                continue
            assert key == "amb"


def test_schemas_whose_root_is_not_a_record_compile_too() -> None:
    array = acceptor(json.dumps({"type": "array", "items": "int"}))
    assert array([1, 2]) and not array(["x"]) and not array("12")
    union = acceptor(json.dumps(["null", "string"]))
    assert union(None) and union("x") and not union(1) and not union("a\x00")
