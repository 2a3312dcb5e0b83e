"""Values of logical types: only what their readers can hold is emitted.

A timestamp-millis is any long to Avro, but every reader here makes a Python datetime of it, and
a datetime holds years 1 to 9999: 10**18 ms was emitted, and reading it back broke to_pylist,
to_pandas, the history questions and the widgets. The full check and the compiled writer refuse
the same values, with the field path, the value, the logical type and the range expected.
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, date, datetime
from typing import Any

import pytest

import metaverse_kit as mk
from metaverse_kit.events.avro import LOGICAL_RANGES
from metaverse_kit.events.codec import encode_bodies
from metaverse_kit.events.fastcheck import writer
from metaverse_kit.events.strict import check_definition

# (logical type, underlying type, lowest, highest): Python's own limits, computed anew.
_MS = 1000
_DAY_MS = 86_400_000
_FIRST_MS = int((datetime(1, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
_LAST_MS = int(
    (
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    ).total_seconds()
)
RANGES = [
    ("timestamp-millis", "long", _FIRST_MS * _MS, _LAST_MS * _MS + 999),
    ("timestamp-micros", "long", _FIRST_MS * 10**6, _LAST_MS * 10**6 + 999_999),
    ("local-timestamp-millis", "long", _FIRST_MS * _MS, _LAST_MS * _MS + 999),
    ("local-timestamp-micros", "long", _FIRST_MS * 10**6, _LAST_MS * 10**6 + 999_999),
    (
        "date",
        "int",
        (date(1, 1, 1) - date(1970, 1, 1)).days,
        (date(9999, 12, 31) - date(1970, 1, 1)).days,
    ),
    ("time-millis", "int", 0, _DAY_MS - 1),
    ("time-micros", "long", 0, _DAY_MS * 1000 - 1),
]
IDS = [r[0] for r in RANGES]


def _schema(logical: str, base: str) -> dict:
    t = {"type": base, "logicalType": logical}
    return {
        "type": "record",
        "name": "Stamp",
        "namespace": "ops",
        "fields": [
            {"name": "urn", "type": "string"},
            {"name": "at", "type": t},
            {"name": "maybe", "type": ["null", t], "default": None},
            {
                "name": "stops",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "Stop",
                        "fields": [{"name": "at", "type": t}],
                    },
                },
                "default": [],
            },
        ],
    }


def _event(at: Any, **more: Any) -> dict:
    """An event with every field given, as the compiled writer takes them."""
    return {"urn": "urn:li:corpuser:a", "at": at, "maybe": None, "stops": [], **more}


def test_the_ranges_are_pythons_own() -> None:
    table = {(base, logical): (lo, hi) for logical, base, lo, hi in RANGES}
    assert {k: (v.lowest, v.highest) for k, v in LOGICAL_RANGES.items()} == table


@pytest.mark.parametrize(("logical", "base", "lowest", "highest"), RANGES, ids=IDS)
def test_values_past_the_range_are_refused_naming_field_value_type_and_range(
    logical: str, base: str, lowest: int, highest: int
) -> None:
    schema = _schema(logical, base)
    definition = json.dumps(schema)
    for bad in (lowest - 1, highest + 1):
        events = [
            _event(bad),
            _event(0, maybe=bad),
            _event(0, stops=[{"at": 1}, {"at": bad}]),
        ]
        # Neither the compiled writer nor the full check lets one through.
        for event in events:
            out = bytearray(b"x")
            assert not writer(definition)(event, out) and out == b"x"
        with pytest.raises(mk.ValidationError) as caught:
            encode_bodies(events, definition)
        problems = caught.value.problems
        assert [p.path for p in problems] == [
            "events[0].at",
            "events[1].maybe",
            "events[2].stops[1].at",
        ]
        for p in problems:
            assert p.message.startswith(f"{bad} is out of the range of {logical} (")
            assert f"expected {lowest}..{highest}" in p.message
        expected = "a time of day" if logical.startswith("time-") else "years 1 to 9999"
        assert expected in problems[0].message


@pytest.mark.parametrize(("logical", "base", "lowest", "highest"), RANGES, ids=IDS)
def test_values_inside_the_range_pass_negatives_too(
    logical: str, base: str, lowest: int, highest: int
) -> None:
    definition = json.dumps(_schema(logical, base))
    inside = sorted({lowest, lowest + 1, highest, 0, 1, max(lowest, -1), max(lowest, -86_400_000)})
    events = [_event(v, maybe=v, stops=[{"at": v}]) for v in inside]
    assert all(writer(definition)(e, bytearray()) for e in events)
    assert all(mk.validate(e, definition) == [] for e in events)
    assert len(encode_bodies(events, definition)) == len(events)


def test_a_union_reports_the_logical_type_fastavro_would_write_the_value_in() -> None:
    """fastavro writes an int in the first branch whose underlying type takes it: the range of
    that branch is the problem, not that "it fits none" or a later long branch."""
    date_t = {"type": "int", "logicalType": "date"}
    schema = {
        "type": "record",
        "name": "U",
        "fields": [{"name": "d", "type": ["null", date_t, "long", "string"]}],
    }
    (problem,) = mk.validate({"d": 10**9}, schema)
    assert problem.path == "d"
    assert problem.message.startswith("1000000000 is out of the range of date")
    assert mk.validate({"d": -719_162}, schema) == []
    # Past the int range the date branch cannot hold it at all: the long branch does.
    assert mk.validate({"d": 2**40}, schema) == []


def test_check_and_emit_refuse_it_and_nothing_is_written(workspace: mk.Workspace) -> None:
    schema = _schema("timestamp-millis", "long")
    with pytest.raises(mk.ValidationError, match=r"at: 1000000000000000000 is out of the range"):
        workspace.check(_event(10**18), schema=schema)
    with pytest.raises(mk.ValidationError, match=r"events\[1\]\.at: -62135596800001 is out"):
        workspace.emit([_event(0), _event(-62_135_596_800_001)], schema=schema)
    assert workspace.replay(schema=json.dumps(schema)).num_rows == 0
    receipts = workspace.emit([_event(-1), _event(253_402_300_799_999)], schema=schema)
    assert len(receipts) == 2


def test_datetime_objects_are_refused_as_before() -> None:
    """A datetime for a timestamp field was refused before ranges were checked (the encoder
    takes numbers only); it still is, with the same message."""
    schema = _schema("timestamp-millis", "long")
    (problem,) = mk.validate(_event(datetime(2020, 1, 1, tzinfo=UTC)), schema)
    assert problem.path == "at"
    assert problem.message.startswith("expected an integer (long), got datetime")


def test_a_uuid_is_rfc_4122_text() -> None:
    schema = {
        "type": "record",
        "name": "I",
        "fields": [{"name": "id", "type": {"type": "string", "logicalType": "uuid"}}],
    }
    definition = json.dumps(schema)
    for good in ("0f8fad5b-d9cb-469f-a165-70867728950e", "0F8FAD5B-D9CB-469F-A165-70867728950E"):
        assert writer(definition)({"id": good}, bytearray())
        assert mk.validate({"id": good}, schema) == []
    for bad in (
        "not-a-uuid",
        "0f8fad5bd9cb469fa16570867728950e",
        "{0f8fad5b-d9cb-469f-a165-70867728950e}",
    ):
        assert not writer(definition)({"id": bad}, bytearray())
        (problem,) = mk.validate({"id": bad}, schema)
        assert problem.path == "id" and f"{bad!r} is not a uuid" in problem.message


@pytest.mark.parametrize("where", ["bytes", "fixed"])
def test_a_decimal_has_no_more_digits_than_its_precision(where: str) -> None:
    t: dict = {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}
    if where == "fixed":
        t = {**t, "type": "fixed", "name": "D", "size": 4}
    schema = {"type": "record", "name": "M", "fields": [{"name": "amount", "type": t}]}
    definition = json.dumps(schema)

    def raw(n: int) -> bytes:
        return n.to_bytes(4 if where == "fixed" else 3, "big", signed=True)

    for good in (9999, -9999, 0):
        assert writer(definition)({"amount": raw(good)}, bytearray())
        assert mk.validate({"amount": raw(good)}, schema) == []
    for bad in (10000, -10000):
        assert not writer(definition)({"amount": raw(bad)}, bytearray())
        (problem,) = mk.validate({"amount": raw(bad)}, schema)
        assert problem.path == "amount"
        assert f"unscaled value {bad} has 5 digits, more than its precision of 4" in problem.message


# -- schemas -------------------------------------------------------------------------------------


def _with(t: dict, name: str) -> str:
    return json.dumps(
        {"type": "record", "name": name, "namespace": "lt", "fields": [{"name": "x", "type": t}]}
    )


@pytest.mark.parametrize("mode", ["error", "ignore", "default"])
def test_the_verdict_on_a_schema_does_not_depend_on_warning_filters(mode: str) -> None:
    """The avro package warns about logical types it ignores; under ``-W error`` (pytest's
    ``filterwarnings = error`` here) that refused a schema accepted everywhere else."""
    accepted = [
        {"type": "long", "logicalType": "local-timestamp-millis"},
        {"type": "long", "logicalType": "local-timestamp-micros"},
        {"type": "long", "logicalType": "an-unknown-logical-type"},
        {"type": "string", "logicalType": "date"},
    ]
    refused = [
        ({"type": "bytes", "logicalType": "decimal"}, "precision null"),
        ({"type": "bytes", "logicalType": "decimal", "precision": 0}, "precision 0"),
        (
            {"type": "bytes", "logicalType": "decimal", "precision": 77},
            "precision 77; the replay's Arrow decimals hold at most 76 digits",
        ),
        ({"type": "bytes", "logicalType": "decimal", "precision": 3, "scale": -1}, "scale"),
        (
            {"type": "fixed", "name": "F", "size": 2, "logicalType": "decimal", "precision": 5},
            "precision of 5",
        ),
    ]
    with warnings.catch_warnings(record=True) as shown:
        if mode != "default":
            warnings.simplefilter(mode)
        # NOTE: a name per mode: verdicts are cached per definition.
        for i, t in enumerate(accepted):
            check_definition(_with(t, f"A{i}_{mode}"))
        for i, (t, words) in enumerate(refused):
            with pytest.raises(mk.SchemaParseError, match=words):
                check_definition(_with(t, f"R{i}_{mode}"))
    assert not [w for w in shown if "logical" in str(w.message).lower()]


def test_a_workspace_registers_and_emits_a_local_timestamp(workspace: mk.Workspace) -> None:
    schema = _schema("local-timestamp-millis", "long")
    workspace.emit(_event(1_700_000_000_000), schema=schema)
    table = workspace.replay(schema=json.dumps(schema))
    assert table["at"].to_pylist() == [datetime(2023, 11, 14, 22, 13, 20)]
