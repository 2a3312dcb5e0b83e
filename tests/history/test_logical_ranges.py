"""Logical types read back: every decoder gives the same table, and it round-trips.

fastavro reads a uuid as a UUID object and a timestamp as a datetime; the Arrow mapping took
neither in a union of several branches or a uuid column, so a replay of such events crashed
with ``decoder="fastavro"`` (and with ``"auto"``, which falls back to it for a uuid). A timestamp,
date or time no Python object holds is found by :func:`python_range_problems`, with its path.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.capture import capture_path
from metaverse_kit.events.avro import LOGICAL_RANGES, AvroSchema
from metaverse_kit.history.arrow_types import arrow_mapping, from_arrow, python_range_problems
from tests.conftest import capture_of

TS = {"type": "long", "logicalType": "timestamp-millis"}
LOCAL_US = {"type": "long", "logicalType": "local-timestamp-micros"}
DAY = {"type": "int", "logicalType": "date"}
TIME_MS = {"type": "int", "logicalType": "time-millis"}
TIME_US = {"type": "long", "logicalType": "time-micros"}
UUID = {"type": "string", "logicalType": "uuid"}

SCHEMA = {
    "type": "record",
    "name": "Visit",
    "namespace": "ops",
    "fields": [
        {"name": "urn", "type": "string"},
        {"name": "id", "type": UUID},
        {"name": "at", "type": TS},
        {"name": "local", "type": LOCAL_US},
        {"name": "day", "type": DAY},
        {"name": "opens", "type": TIME_MS},
        {"name": "closes", "type": TIME_US},
        # Several branches: a plain value's branch is told by the Python type fastavro gives.
        {"name": "when", "type": ["null", "string", TS, DAY]},
        {"name": "ref", "type": ["null", "long", UUID]},
        {"name": "day_or_text", "type": ["null", "string", DAY]},
        {"name": "clock", "type": ["null", "string", TIME_US]},
        {"name": "stops", "type": {"type": "array", "items": ["null", TS, "string"]}},
        {"name": "times", "type": {"type": "map", "values": TIME_MS}},
    ],
}
_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def _visits() -> list[dict[str, Any]]:
    """Events at both ends of every range (negatives too), and ordinary ones."""
    r = {lt: (v.lowest, v.highest) for (_, lt), v in LOGICAL_RANGES.items()}
    out = []
    for end in (0, 1):
        out.append(
            {
                "urn": "urn:li:corpuser:a",
                "id": _ID.upper() if end else _ID,
                "at": r["timestamp-millis"][end],
                "local": r["local-timestamp-micros"][end],
                "day": r["date"][end],
                "opens": r["time-millis"][end],
                "closes": r["time-micros"][end],
                "when": r["date"][end] if end else r["timestamp-millis"][end],
                "ref": _ID if end else 7,
                "day_or_text": r["date"][end],
                "clock": r["time-micros"][end],
                "stops": [r["timestamp-millis"][end], "x", None],
                "times": {"a": r["time-millis"][end]},
            }
        )
    out.append(
        {
            "urn": "urn:li:corpuser:b",
            "id": _ID,
            "at": -1,
            "local": -86_400_000_001,
            "day": -1,
            "opens": 43_200_000,
            "closes": 1,
            "when": "soon",
            "ref": None,
            "day_or_text": "text",
            "clock": 5,
            "stops": [],
            "times": {},
        }
    )
    return out


@pytest.fixture
def replayed(workspace: mk.Workspace) -> dict[str, pa.Table]:
    workspace.emit(_visits(), schema=SCHEMA)
    definition = json.dumps(SCHEMA)
    return {
        decoder: workspace.replay(schema=definition, decoder=decoder, cache=False)
        for decoder in ("auto", "fastavro")
    }


def test_every_decoder_gives_the_same_table(replayed: dict[str, pa.Table]) -> None:
    auto, alone = replayed["auto"], replayed["fastavro"]
    assert auto.num_rows == 3 and auto["decode_error"].null_count == 3
    assert auto.schema == alone.schema
    for name in auto.column_names:
        assert auto[name].equals(alone[name]), name
    # NOTE: fastavro reads a uuid as a UUID: its text comes back in RFC 4122's lower case.
    assert auto["id"].to_pylist() == [_ID, _ID, _ID]


def test_values_at_the_ends_of_every_range_become_python_objects(
    replayed: dict[str, pa.Table],
) -> None:
    table = replayed["auto"].select([f["name"] for f in SCHEMA["fields"]])
    rows = table.to_pylist()
    assert rows[0]["at"] == datetime(1, 1, 1, tzinfo=UTC)
    assert rows[1]["at"] == datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    assert rows[0]["local"] == datetime(1, 1, 1)
    assert rows[1]["day"] == date(9999, 12, 31) and rows[2]["day"] == date(1969, 12, 31)
    assert rows[1]["opens"] == time(23, 59, 59, 999000) and rows[2]["opens"] == time(12)
    assert rows[1]["times"] == [("a", time(23, 59, 59, 999000))]
    assert rows[0]["day_or_text"] == {"branch": "int", "string": None, "int": date(1, 1, 1)}
    frame = table.to_pandas()
    assert frame["day"].tolist()[1] == date(9999, 12, 31)
    assert python_range_problems(AvroSchema(SCHEMA), table.to_struct_array()) is None


def test_what_a_replay_gives_back_is_emitted_again_unchanged(
    workspace: mk.Workspace, replayed: dict[str, pa.Table]
) -> None:
    """Datetimes, dates and times read back turn into the numbers they were, which pass."""
    avro = AvroSchema(SCHEMA)
    table = replayed["fastavro"].select([f["name"] for f in SCHEMA["fields"]])
    again = [from_arrow(avro, row, avro.root) for row in table.to_pylist()]
    emitted = _visits()
    for got, sent in zip(again, emitted, strict=True):
        for key in (
            "at",
            "local",
            "day",
            "opens",
            "closes",
            "stops",
            "times",
            "day_or_text",
            "clock",
        ):
            assert got[key] == sent[key], key
        assert got["id"] == sent["id"].lower()
    assert again[0]["ref"] == 7 and again[1]["ref"] == _ID
    workspace.check(again, schema=SCHEMA)


# -- values no Python object holds ----------------------------------------------------------------


def _array(schema: dict, rows: list[Any]) -> tuple[AvroSchema, pa.Array]:
    avro = AvroSchema(schema)
    mapping = arrow_mapping(avro)
    converted = [mapping.convert(r) if mapping.convert else r for r in rows]
    return avro, pa.array(converted, mapping.type)


def test_python_range_problems_names_the_first_field_of_each_row() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "at", "type": TS},
            {"name": "when", "type": ["null", "string", TS, DAY]},
            {
                "name": "stops",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "S",
                        "fields": [{"name": "opens", "type": TIME_MS}],
                    },
                },
            },
            {"name": "times", "type": {"type": "map", "values": ["null", TIME_US]}},
        ],
    }
    ok = {"at": 0, "when": None, "stops": [], "times": {}}
    rows = [
        ok,
        {**ok, "at": 10**18},
        {**ok, "when": ("int", 10**9)},
        {**ok, "when": ("long", -(10**18)), "stops": [{"opens": 1}, {"opens": 86_400_000}]},
        {**ok, "stops": [{"opens": 1}, {"opens": -1}]},
        {**ok, "times": {"a": 1, "b": 86_400_000_000}},
        None,
    ]
    avro, values = _array(schema, rows)
    problems = python_range_problems(avro, values)
    assert problems is not None
    assert [p if p is None else p.split(" is out of the range of ")[0] for p in problems] == [
        None,
        "at: 1000000000000000000",
        "when: 1000000000",
        "when: -1000000000000000000",
        "stops[1].opens: -1",
        "times['b']: 86400000000",
        None,
    ]
    assert "expected -719162..2932896, years 1 to 9999" in problems[2]
    assert "of time-micros (microseconds after midnight): expected 0..86399999999" in problems[5]
    # Slices and chunks are read where they start.
    tail = python_range_problems(avro, pa.chunked_array([values.slice(4, 2), values.slice(0, 1)]))
    assert tail is not None and [p is not None for p in tail] == [True, True, False]
    assert python_range_problems(avro, values.slice(0, 1)) is None


def test_a_schema_without_dates_or_times_is_not_walked() -> None:
    schema = {"type": "record", "name": "P", "fields": [{"name": "n", "type": "long"}]}
    avro, values = _array(schema, [{"n": 10**18}])
    assert python_range_problems(avro, values) is None


@pytest.mark.parametrize("first", ["int", DAY], ids=["int", "date"])
def test_a_long_past_the_int_range_is_read_in_the_long_branch(
    workspace: mk.Workspace, first: Any
) -> None:
    """fastavro gives a plain int for ``["null", "int", "long"]``: the mapping put every int in
    the first int-like branch, and a long past the int range crashed the replay."""
    schema = {
        "type": "record",
        "name": "Wide",
        "namespace": "ops",
        "fields": [
            {"name": "urn", "type": "string"},
            {"name": "x", "type": ["null", first, "long"]},
        ],
    }
    workspace.emit(
        [{"urn": "urn:li:corpuser:a", "x": 5}, {"urn": "urn:li:corpuser:b", "x": 10**12}],
        schema=schema,
    )
    auto, alone = (
        workspace.replay(schema=json.dumps(schema), decoder=d, cache=False)
        for d in ("auto", "fastavro")
    )
    assert auto["x"].equals(alone["x"])
    held = auto["x"].to_pylist()
    assert [v["branch"] for v in held] == ["int", "long"] and held[1]["long"] == 10**12


# -- events other producers wrote ----------------------------------------------------------------

FOREIGN = {
    "type": "record",
    "name": "Reading",
    "namespace": "ops",
    "fields": [
        {"name": "urn", "type": "string"},
        {"name": "at", "type": TS},
        {"name": "slots", "type": {"type": "array", "items": ["null", "string", TIME_MS]}},
        {"name": "day", "type": ["null", DAY]},
    ],
}
_FOREIGN_ROWS: list[dict[str, Any]] = [
    {"urn": "urn:li:corpuser:a", "at": 1_700_000_000_000, "slots": [], "day": 19_000},
    {"urn": "urn:li:corpuser:b", "at": 10**18, "slots": [], "day": None},
    {"urn": "urn:li:corpuser:c", "at": -1, "slots": ["x", 86_400_000], "day": None},
    {"urn": "urn:li:corpuser:d", "at": 0, "slots": [], "day": -(10**9)},
]


def _foreign_lake(workspace: mk.Workspace, schema: dict, rows: list[dict]) -> tuple[Path, list]:
    """A Capture file of bodies fastavro wrote with ``schema``, as another producer would:
    nothing of ours checked them."""
    definition = json.dumps(schema)
    registry = workspace.registry
    schema_id = registry.register_schema(workspace.schema_group, definition).id  # type: ignore[attr-defined]
    parsed_schema = fastavro.parse_schema(schema)
    when = datetime(2026, 3, 2, 8, tzinfo=UTC)
    bodies = []
    for row in rows:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed_schema, row)
        bodies.append(out.getvalue())
    root = Path(workspace.path or ".") / "foreign"
    path = root / capture_path("ns", "hub", "0", when)
    path.parent.mkdir(parents=True)
    path.write_bytes(capture_of(bodies, schema_id, when))
    return root, bodies


@pytest.mark.parametrize("decoder", ["auto", "fastavro"])
def test_a_foreign_value_no_datetime_holds_is_kept_raw_and_explained(
    workspace: mk.Workspace, decoder: str
) -> None:
    """The event is not lost and crashes nothing: it keeps its envelope and raw body, its
    decode_error names the field, the number, the logical type and the range, and the table
    (its other events decoded) turns into Python objects and pandas."""
    root, bodies = _foreign_lake(workspace, FOREIGN, _FOREIGN_ROWS)
    table = mk.replay_capture(
        root, registry=workspace.registry, cache=False, decoder=decoder, schema=json.dumps(FOREIGN)
    )
    assert table["message_id"].to_pylist() == ["m0", "m1", "m2", "m3"]
    errors = table["decode_error"].to_pylist()
    assert errors[0] is None
    assert errors[1].startswith(
        "holds a value no Python datetime can: at: 1000000000000000000 is out of the range of "
        "timestamp-millis (milliseconds since 1970-01-01 00:00 UTC): expected "
        "-62135596800000..253402300799999, years 1 to 9999"
    )
    assert "slots[1]: 86400000 is out of the range of time-millis" in errors[2]
    assert "day: -1000000000 is out of the range of date" in errors[3]
    assert "a schema where that field has no logicalType reads the number" in errors[1]
    assert table["body"].to_pylist() == [None, *bodies[1:]]
    assert table["urn"].to_pylist() == ["urn:li:corpuser:a", None, None, None]
    rows = table.to_pylist()
    assert rows[0]["at"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert table.to_pandas()["day"].tolist()[0] == date(2022, 1, 8)


def test_both_decoders_give_the_same_rows_of_foreign_values(workspace: mk.Workspace) -> None:
    root, _ = _foreign_lake(workspace, FOREIGN, _FOREIGN_ROWS)
    auto, alone = (
        mk.replay_capture(
            root, registry=workspace.registry, cache=False, decoder=d, schema=json.dumps(FOREIGN)
        )
        for d in ("auto", "fastavro")
    )
    assert auto.schema == alone.schema
    for name in auto.column_names:
        assert auto[name].equals(alone[name]), name


def test_a_schema_without_the_logical_type_reads_the_number(workspace: mk.Workspace) -> None:
    """What the decode_error says to do: the stored number carries over to a plain long."""
    root, _ = _foreign_lake(workspace, FOREIGN, _FOREIGN_ROWS)
    plain = json.loads(json.dumps(FOREIGN))
    plain["fields"][1]["type"] = "long"
    for decoder in ("auto", "fastavro"):
        table = mk.replay_capture(
            root,
            registry=workspace.registry,
            cache=False,
            decoder=decoder,
            schema=json.dumps(plain),
        )
        assert table["at"].to_pylist() == [1_700_000_000_000, 10**18, None, None]
        assert table["decode_error"].to_pylist()[1] is None


def test_a_cached_replay_keeps_the_explanation(workspace: mk.Workspace) -> None:
    root, _ = _foreign_lake(workspace, FOREIGN, _FOREIGN_ROWS)
    cache = Path(workspace.path or ".") / "replay-cache"
    first, again = (
        mk.replay_capture(
            root, registry=workspace.registry, cache=cache, schema=json.dumps(FOREIGN)
        )
        for _ in range(2)
    )
    assert again.equals(first) and again["decode_error"].null_count == 1


def test_a_date_beside_a_long_out_of_range_is_explained_alike_by_both_decoders(
    workspace: mk.Workspace,
) -> None:
    """A date beside a long in one union: read as a number, a date could not be told from a
    long, and the fastavro decoder gave fastavro's own reason; the branch written is read now,
    so both decoders give the same row and the same decode_error."""
    schema = {
        "type": "record",
        "name": "Either",
        "namespace": "ops",
        "fields": [{"name": "urn", "type": "string"}, {"name": "x", "type": ["null", DAY, "long"]}],
    }
    rows = [{"urn": "urn:li:corpuser:a", "x": 10**9}, {"urn": "urn:li:corpuser:b", "x": 10**12}]
    root, bodies = _foreign_lake(workspace, schema, rows)
    tables = {
        d: mk.replay_capture(
            root, registry=workspace.registry, cache=False, decoder=d, schema=json.dumps(schema)
        )
        for d in ("auto", "fastavro")
    }
    for table in tables.values():
        assert table["body"].to_pylist() == [bodies[0], None]
        assert table["x"].to_pylist() == [None, {"branch": "long", "int": None, "long": 10**12}]
        assert (
            table["decode_error"][0]
            .as_py()
            .startswith(
                "holds a value no Python datetime can: x: 1000000000 is out of the range of date"
            )
        )
    assert tables["auto"].equals(tables["fastavro"])
