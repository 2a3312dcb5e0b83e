"""Numbers are written as they are given, or refused naming their field: never altered.

Avro's float and double hold NaN and the infinities, but DataHub's JSON holds neither, and a NaN
in a record is almost always a missing value (pandas reads an empty cell of a number column as
NaN): such a value was emitted without a word. An integer past a double's range failed the
emit with a bare OverflowError, one past a float's was written as infinity, a number too close
to 0 for a float was written as 0.0, and an integer of more digits than Python writes as text
made the check itself raise ValueError. The full check and the compiled writer give one
verdict on every one of them.
"""

from __future__ import annotations

import io
import json
import math
import struct
import sys
from typing import Any

import fastavro
import numpy as np
import pytest

import metaverse_kit as mk
from metaverse_kit.errors import SchemaParseError
from metaverse_kit.events import aspects as a
from metaverse_kit.events.avro import whole_number_text
from metaverse_kit.events.codec import decode_body, encode_bodies, encode_body
from metaverse_kit.events.fastcheck import writer
from metaverse_kit.events.strict import check_definition
from metaverse_kit.events.validation import normalize, validate

NUMBERS = json.dumps(
    {
        "type": "record",
        "name": "Numbers",
        "namespace": "t",
        "fields": [
            {"name": "i", "type": "int", "default": 0},
            {"name": "l", "type": "long", "default": 0},
            {"name": "f", "type": "float", "default": 0.0},
            {"name": "d", "type": "double", "default": 0.0},
            {"name": "nf", "type": ["null", "float"], "default": None},
            {"name": "nd", "type": ["null", "double"], "default": None},
            {"name": "mixed", "type": ["null", "long", "double"], "default": None},
        ],
    }
)
ZERO: dict[str, Any] = {"i": 0, "l": 0, "f": 0.0, "d": 0.0, "nf": None, "nd": None, "mixed": None}
NAN, INF = math.nan, math.inf
FLOAT_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]  # the largest finite float32
DOUBLE_MAX = sys.float_info.max

# (field, value, words the problem says): each refused, by both checks, naming the field.
REFUSED = [
    ("d", NAN, ["NaN", "missing value", "may not be null"]),
    ("f", NAN, ["NaN", "float field"]),
    ("nd", NAN, ["NaN", "give None for a missing value", "may be null"]),
    ("nf", NAN, ["NaN", "give None"]),
    ("mixed", NAN, ["NaN", "double field", "give None"]),
    ("d", INF, ["inf", "infinity", "finite"]),
    ("d", -INF, ["-inf", "infinity"]),
    ("f", INF, ["inf", "float field"]),
    ("nd", -INF, ["-inf", "None for a missing value"]),
    # Past a double: fastavro raised OverflowError from the emit.
    ("d", 10**400, ["an integer of 401 digits", "out of the double range"]),
    ("nd", -(10**400), ["out of the double range"]),
    ("mixed", 10**400, ["out of the double range"]),
    # An int a double rounds to its largest value is still past its range.
    ("d", int(DOUBLE_MAX) + 2**960, ["out of the double range"]),
    # Past a float: an int was written as infinity; a float was refused already.
    ("f", 10**39, ["out of the float range"]),
    ("nf", 10**39, ["out of the float range"]),
    ("f", 1e39, ["out of the float range"]),
    ("f", -3.5e38, ["out of the float range"]),
    # Written as 0.0 by a float: refused rather than altered.
    ("f", 1e-50, ["too close to 0", "0.0"]),
    ("nf", -(2.0**-150), ["too close to 0"]),
    # Integers of more digits than Python writes as text: the check raised ValueError.
    ("i", 10**5000, ["an integer of 5001 digits", "out of the int range"]),
    ("l", -(10**5000), ["-100000000000... (an integer of 5001 digits)"]),
    ("d", 10**5000, ["an integer of 5001 digits"]),
    # A missing value where none may be: said so.
    ("d", None, ["got NoneType None", "a missing value", "may not be null"]),
    # A whole number held as a float, as pandas holds a column of integers with an empty cell.
    ("i", 3.0, ["got float 3.0", "'Int64'"]),
    ("l", True, ["got bool True"]),
    ("d", True, ["got bool True"]),
]

# Values written as given (or as the float or double nearest them): both checks take them, and
# the compiled writer writes fastavro's bytes.
TAKEN = [
    ("d", -0.0),
    ("f", -0.0),
    ("d", 5e-324),
    ("d", DOUBLE_MAX),
    ("d", -DOUBLE_MAX),
    ("f", 1e-40),  # below a float's normal numbers, above its smallest: a float holds it
    ("f", 2.0**-149),
    ("f", FLOAT_MAX),
    ("f", 3.4028235e38),  # rounds to FLOAT_MAX
    ("f", 16_777_217),
    ("nf", 0.5),
    ("nd", 2**53 + 1),
    ("mixed", 2**63),  # past a long: the double branch takes it
    ("mixed", 1.5),
    ("i", 2**31 - 1),
]


def _id(value: Any) -> str:
    return whole_number_text(value, 12) if isinstance(value, int) else repr(value)


@pytest.mark.parametrize(
    ("field", "value", "words"), REFUSED, ids=[f"{f}={_id(v)}" for f, v, _ in REFUSED]
)
def test_a_number_its_field_cannot_hold_as_given_is_refused_naming_the_field(
    field: str, value: Any, words: list[str]
) -> None:
    record = {**ZERO, field: value}
    (problem,) = validate(record, NUMBERS)
    assert problem.path == field
    for word in words:
        assert word in problem.message, problem.message
    assert len(problem.message) < 400
    # The compiled writer agrees, and so does every way in: nothing is written.
    out = bytearray(b"x")
    assert not writer(NUMBERS)(record, out) and out == b"x"
    with pytest.raises(mk.ValidationError) as caught:
        encode_bodies([ZERO, record], NUMBERS)
    assert [p.path for p in caught.value.problems] == [f"events[1].{field}"]
    with pytest.raises(mk.ValidationError):
        encode_body(record, NUMBERS)


@pytest.mark.parametrize(("field", "value"), TAKEN, ids=[f"{f}={_id(v)}" for f, v in TAKEN])
def test_a_number_its_field_holds_is_written_as_fastavro_writes_it(field: str, value: Any) -> None:
    record = {**ZERO, field: value}
    assert validate(record, NUMBERS) == []
    buf = io.BytesIO()
    fastavro.schemaless_writer(
        buf, fastavro.parse_schema(json.loads(NUMBERS)), normalize(record, NUMBERS)
    )
    (body,) = encode_bodies([record], NUMBERS)
    assert body == buf.getvalue()
    out = bytearray()
    # NOTE: an int in "mixed" fits its long and its double: the full check settles which.
    assert writer(NUMBERS)(record, out) or (field == "mixed" and isinstance(value, int))
    assert not out or bytes(out) == body
    back = decode_body(body, NUMBERS)[field]
    if field in ("f", "nf"):
        assert back == struct.unpack("<f", struct.pack("<f", value))[0]
    else:
        assert back == value or back == float(value)
    assert math.copysign(1, back) == math.copysign(1, value)


def test_the_fast_and_the_full_check_give_one_verdict_on_every_hostile_number() -> None:
    values: list[Any] = [
        *{v for _, v, _ in REFUSED if not isinstance(v, int) or v.bit_length() < 2000},
        *(v for _, v in TAKEN),
        0,
        -1,
        1.5,
        2.0**-1074,
        -(2.0**-150),
        2.0**-149,
        1e308,
        10**308,
        2**1024,
        None,
        "1",
    ]
    accepts = writer(NUMBERS)
    for field in ZERO:
        for value in values:
            record = {**ZERO, field: value}
            if accepts(record, bytearray()):
                assert normalize(record, NUMBERS) == record, (field, value)
            elif field != "mixed" or (value is not None and not isinstance(value, (int, float))):
                # NOTE: outside "mixed" a plain value has one branch; the full check refuses
                # whatever the fast one does not take.
                assert validate(record, NUMBERS), (field, value)


def test_a_nan_in_the_built_in_mces_float_field_is_refused_at_emit(
    workspace: mk.Workspace,
) -> None:
    # NOTE: the built-in MCE's one float: FineGrainedLineage.confidenceScore.
    urn = mk.make_dataset_urn("hive", "db.t")
    name, lineage = a.upstream_lineage([mk.make_dataset_urn("hive", "db.s")])
    lineage["fineGrainedLineages"] = [
        {"upstreamType": "DATASET", "downstreamType": "FIELD", "confidenceScore": NAN}
    ]
    with pytest.raises(mk.ValidationError) as caught:
        workspace.emit(mk.mce(urn, [(name, lineage)]))
    (problem,) = caught.value.problems
    assert problem.path == ("proposedSnapshot.aspects[0].fineGrainedLineages[0].confidenceScore")
    assert "NaN" in problem.message
    assert not list(workspace.replay(progress=False).column("partition_key").to_pylist())
    lineage["fineGrainedLineages"][0]["confidenceScore"] = 0.25
    assert workspace.emit(mk.mce(urn, [(name, lineage)]))


def test_a_decimal_of_more_digits_than_python_writes_as_text_is_a_problem() -> None:
    schema = json.dumps(
        {
            "type": "record",
            "name": "Dec",
            "fields": [
                {
                    "name": "amount",
                    "type": {"type": "bytes", "logicalType": "decimal", "precision": 9},
                }
            ],
        }
    )
    (problem,) = validate({"amount": b"\x7f" * 2000}, schema)
    assert problem.path == "amount"
    assert "digits, more than its precision of 9" in problem.message
    assert len(problem.message) < 200


@pytest.mark.parametrize(
    ("definition", "words"),
    [
        (
            '{"type": "record", "name": "A", "fields": [{"name": "x", "type": "double", '
            '"default": NaN}]}',
            "holds NaN",
        ),
        (
            '{"type": "record", "name": "A", "fields": [{"name": "x", "type": "double", '
            '"default": -Infinity}]}',
            "holds -Infinity",
        ),
        (
            '{"type": "record", "name": "A", "fields": [{"name": "x", "type": "float", '
            '"default": 1e39}]}',
            "out of the float range",
        ),
        (
            '{"type": "record", "name": "A", "fields": [{"name": "x", "type": ["null", "double"], '
            '"default": null, "scale": NaN}]}',
            "holds NaN",
        ),
    ],
)
def test_a_definition_holding_nan_or_a_float_default_past_its_range_is_refused(
    definition: str, words: str
) -> None:
    with pytest.raises(SchemaParseError, match=words):
        check_definition(definition)


@pytest.mark.parametrize(
    ("field", "value"),
    [("l", np.int64(5)), ("i", np.int32(5)), ("f", np.float32(0.5)), ("mixed", np.int64(7))],
    ids=["long=int64", "int=int32", "float=float32", "union=int64"],
)
def test_a_numpy_scalar_is_refused_saying_to_pass_the_python_value(field: str, value: Any) -> None:
    # A pandas row's cell is a numpy scalar: the message said "got int64 5" and no more.
    (problem,) = validate({**ZERO, field: value}, NUMBERS)
    assert problem.path == field
    assert f"a numpy {type(value).__name__}" in problem.message and ".item()" in problem.message
