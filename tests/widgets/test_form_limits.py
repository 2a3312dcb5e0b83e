"""What the schema-driven widgets cannot offer, they say in the widget; hostile numbers are shown
as problems, never altered.

A nullable field, a union branch, a list or a map of a record that can never be written (it
holds itself with no null on the way, or an enum without symbols) raised inside the widget's
click handler when the user picked it, where nobody sees it: the list's Add button did nothing.
A required union whose first branch was such a record refused the whole form. NaN, infinity and
integers a double cannot hold went into the number input (or raised OverflowError); an integer
of more digits than Python writes as text raised ValueError from the form and the preview. A
batch's missing value became None or NaN depending on the other columns of its frame.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.errors import ValidationError
from metaverse_kit.widgets import BatchEmitter, EventComposer
from metaverse_kit.widgets._form import AvroForm


def _record(name: str, fields: list[dict]) -> dict:
    return {"type": "record", "name": name, "namespace": "t", "fields": fields}


LOOP = _record("Loop", [{"name": "x", "type": "int"}, {"name": "me", "type": "Loop"}])
NO_SYMBOLS = {"type": "enum", "name": "Nothing", "symbols": []}
CYCLE = "t.Loop can never be written: it contains itself through t.Loop -> t.Loop"


def _top(field_type: Any, name: str = "f") -> str:
    return json.dumps(
        _record("Top", [{"name": "keep", "type": "long"}, {"name": name, "type": field_type}])
    )


def test_a_nullable_field_of_a_record_never_written_stays_null_and_says_why(
    workspace: mk.Workspace,
) -> None:
    composer = EventComposer(workspace, _top(["null", LOOP]))
    node = composer.form.node("f")
    assert node.toggle.disabled
    assert CYCLE in html.unescape(node.note.value) and "stays null" in html.unescape(
        node.note.value
    )
    node.toggle.value = True  # what the click did: it raised inside the handler
    assert not node.toggle.value
    assert composer.value == {"keep": 0, "f": None}
    composer.form.node("keep").text.value = "7"
    composer.emit_button.click()
    assert composer.receipts
    with pytest.raises(KeyError, match=r"no field f\.x"):
        composer.form.node("f.x")


def test_a_union_branch_never_written_is_left_out_of_the_choice(workspace: mk.Workspace) -> None:
    composer = EventComposer(workspace, _top(["null", "int", LOOP]))
    node = composer.form.node("f")
    assert [label for label, _ in node.selector.options] == ["— none —", "int"]
    assert "Left out of the choice" in html.unescape(node.note.value) and CYCLE in html.unescape(
        node.note.value
    )
    with pytest.raises(KeyError, match="cannot be picked"):
        node.pick("Loop")
    node.pick("int")
    composer.form.node("f").nodes[1].text.value = "5"
    assert composer.value == {"keep": 0, "f": 5}
    assert composer.validate() == []


def test_a_required_union_whose_first_branch_is_never_written_opens_on_the_next(
    workspace: mk.Workspace,
) -> None:
    # It refused the whole form, saying no record of the schema could be written.
    composer = EventComposer(workspace, _top([LOOP, "int"]))
    assert composer.value == {"keep": 0, "f": 0}
    composer.emit_button.click()
    assert composer.receipts


@pytest.mark.parametrize(
    ("field_type", "says"),
    [
        ({"type": "array", "items": LOOP}, "This list stays empty"),
        ({"type": "map", "values": LOOP}, "This map stays empty"),
    ],
)
def test_a_list_or_map_of_records_never_written_cannot_be_added_to(
    workspace: mk.Workspace, field_type: dict, says: str
) -> None:
    composer = EventComposer(workspace, _top(field_type))
    node = composer.form.node("f")
    assert node.add_button.disabled
    assert says in html.unescape(node.note.value) and CYCLE in html.unescape(node.note.value)
    node.add_button.click()
    assert composer.value["f"] in ([], {})
    with pytest.raises(ValidationError, match="stays empty"):
        node.add()


def test_an_enum_without_symbols_is_never_written_either() -> None:
    form = AvroForm(_top(["null", NO_SYMBOLS]))
    node = form.node("f")
    assert node.toggle.disabled and "t.Nothing has no symbols" in html.unescape(node.note.value)
    # A required one: no record of the schema can be written, which the form says at once.
    with pytest.raises(ValidationError) as caught:
        AvroForm(_top(NO_SYMBOLS, name="kind"))
    text = str(caught.value)
    assert "field 'kind' is the enum t.Nothing, which has no symbols" in text
    # Held by a record two levels down.
    inner = _record("Inner", [{"name": "e", "type": NO_SYMBOLS}])
    outer = _record("Outer", [{"name": "inner", "type": inner}])
    node = AvroForm(_top(["null", outer])).node("f")
    assert "t.Outer -> t.Inner, whose field 'e' is the enum t.Nothing" in html.unescape(
        node.note.value
    )


def test_a_text_in_a_union_of_an_enum_without_symbols_and_a_string_is_the_strings(
    workspace: mk.Workspace,
) -> None:
    # NOTE: a text may be an enum's or a string's: the enum's, picked first, made the form's
    # choice of branch one it does not offer.
    composer = EventComposer(workspace, _top(["null", NO_SYMBOLS, "string"]))
    composer.value = {"keep": 1, "f": "x"}
    assert composer.form.node("f").branch == "string"
    assert composer.validate() == []
    with pytest.raises(ValidationError, match=r"t\.Nothing has no symbols"):
        composer.value = {"keep": 1, "f": ("t.Nothing", "x")}
    composer.emit_button.click()
    assert composer.receipts


def test_loading_a_value_of_a_record_never_written_is_refused_naming_its_field() -> None:
    form = AvroForm(_top(["null", LOOP]))
    with pytest.raises(ValidationError) as caught:
        form.value = {"keep": 1, "f": ("t.Loop", {"x": 1, "me": {"x": 2}})}
    (problem,) = caught.value.problems
    assert problem.path == "f" and "can never be written" in problem.message
    assert form.value == {"keep": 0, "f": None}  # unchanged


# -- hostile numbers in the composer ------------------------------------------------------------

NUMBERS = json.dumps(
    _record(
        "N",
        [
            {"name": "d", "type": "double", "default": 0.0},
            {"name": "nd", "type": ["null", "double"], "default": None},
            {"name": "i", "type": "int", "default": 0},
            {"name": "s", "type": "string", "default": ""},
        ],
    )
)


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ('{"d": NaN}', "d", "NaN (not a number)"),
        ('{"nd": {"double": NaN}}', "nd", "give None for a missing value"),
        ('{"d": -Infinity}', "d", "-inf is refused"),
        ('{"d": 1e999}', "d", "inf is refused"),
        ('{"d": ' + "9" * 400 + "}", "d", "(an integer of 400 digits) is out of the double range"),
        ('{"i": 3.0}', "i", "'Int64'"),
    ],
)
def test_a_number_pasted_that_its_field_cannot_hold_is_a_problem_beside_it(
    workspace: mk.Workspace, text: str, field: str, says: str
) -> None:
    composer = EventComposer(workspace, NUMBERS)
    composer.load_json(text)
    (problem,) = composer.problems
    assert problem.path == field and says in problem.message
    number = composer.form.node(field)
    number = getattr(number, "inner", None) or number  # a nullable field's input
    assert says in html.unescape(number.error.value)
    assert composer.emit_button.disabled
    if hasattr(number, "number"):
        # NOTE: the browser's number input never gets NaN (Jupyter sends it as the text 'nan').
        assert math.isfinite(number.number.value)


@pytest.mark.parametrize("field", ["d", "i", "s"])
def test_an_integer_too_long_to_write_as_text_is_a_problem_not_a_crash(
    workspace: mk.Workspace, field: str
) -> None:
    composer = EventComposer(workspace, NUMBERS)
    composer.value = {"d": 0.0, "nd": None, "i": 0, "s": "", field: 10**5000}
    (problem,) = composer.problems
    assert problem.path == field and "an integer of 5001 digits" in problem.message
    assert "No preview" in composer.preview.value
    assert composer.value[field] == 10**5000  # kept as it is, never altered
    composer.value = {"d": 0.5, "nd": None, "i": 0, "s": ""}
    assert composer.problems == [] and '"d": 0.5' in html.unescape(composer.preview.value)


# -- missing values of a batch ------------------------------------------------------------------

ROWS = json.dumps(
    _record(
        "Row",
        [
            {"name": "name", "type": "string"},
            {"name": "score", "type": ["null", "double"], "default": None},
            {"name": "count", "type": ["null", "int"], "default": None},
        ],
    )
)


def _stored(ws: mk.Workspace) -> list[dict]:
    from metaverse_kit.events.codec import decode_body

    table = ws.replay(progress=False)
    return [decode_body(body, ROWS) for body in table.column("body").to_pylist()]


@pytest.mark.parametrize("mixed", [False, True], ids=["typed columns", "a mixed column too"])
def test_a_missing_cell_of_a_dataframe_is_null_whatever_its_other_columns(
    workspace: mk.Workspace, mixed: bool
) -> None:
    frame = pd.DataFrame(
        {
            "name": ["a", "b", "c"],
            "score": [1.5, np.nan, None],
            "count": pd.array([1, None, 3], dtype="Int64"),
        }
    )
    if mixed:
        # NOTE: a column Arrow cannot type made every column pandas' own values: NaN.
        frame["note"] = [["x"], "y", 3]

    def build(row: dict) -> dict:
        return {"name": row["name"], "score": row["score"], "count": row["count"]}

    results = BatchEmitter(workspace, frame, build=build, schema=ROWS).emit()
    assert [r.status for r in results] == ["sent"] * 3, [r.error for r in results]
    stored = sorted(_stored(workspace), key=lambda r: r["name"])
    assert [(r["score"], r["count"]) for r in stored] == [(1.5, 1), (None, None), (None, 3)]


def test_a_nan_of_an_arrow_table_is_refused_naming_its_field(workspace: mk.Workspace) -> None:
    # NOTE: Arrow has nulls for missing values; a NaN in one is a number, which is refused.
    table = pa.table({"name": ["a", "b"], "score": pa.array([0.5, float("nan")]), "count": [1, 2]})
    results = BatchEmitter(workspace, table, schema=ROWS).emit()
    assert [r.status for r in results] == ["sent", "invalid"]
    assert results[1].error.startswith("score: NaN (not a number)")
    assert "give None for a missing value" in results[1].error


def test_whole_numbers_with_an_empty_cell_say_how_to_keep_them_whole(
    workspace: mk.Workspace,
) -> None:
    # NOTE: pandas holds [1, None] as floats: 1.0 for an int field is refused, not altered.
    frame = pd.DataFrame({"name": ["a", "b"], "count": [1, None]})
    results = BatchEmitter(workspace, frame, schema=ROWS).emit()
    assert [r.status for r in results] == ["invalid", "sent"]
    assert "got float 1.0" in results[0].error and "'Int64'" in results[0].error
    frame["count"] = frame["count"].astype("Int64")
    results = BatchEmitter(workspace, frame, schema=ROWS).emit()
    assert [r.status for r in results] == ["sent", "sent"]


@pytest.mark.parametrize("text", ['{"d": NaN}', '{"nd": {"double": -Infinity}}'])
def test_the_preview_of_a_refused_number_stays_json(workspace: mk.Workspace, text: str) -> None:
    # JSON has no NaN: a preview a steward copies must parse, and say what the value is.
    composer = EventComposer(workspace, NUMBERS)
    composer.load_json(text)
    shown = html.unescape(composer.preview.value.removeprefix("<pre style='margin:0'>"))
    parsed = json.loads(shown.removesuffix("</pre>"))
    assert "not a number an event can carry" in json.dumps(parsed)
