"""The bulk editor's CSV upload on files that are not clean UTF-8 CSV.

A file in another encoding is refused with its line and byte offset, as the csv ingestion
source refuses it; UTF-8 with a byte order mark, UTF-16 with one and lines ending in a
carriage return alone are read; broken quotes are refused with the line of their record.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import metaverse_kit as mk
from metaverse_kit.widgets.bulk_editor import BulkEditor, read_sheet

URN = mk.make_dataset_urn("hive", "bulk.t1")


def _sheet(last: int = 57, special: str = "café") -> str:
    rows = "".join(f'"{URN}",row {n}\n' for n in range(2, last))
    return f'resource,description\n{rows}"{URN}",{special}\n'


def _upload(editor: BulkEditor, name: str, data: bytes) -> None:
    item = {"name": name, "type": "", "size": len(data), "content": memoryview(data)}
    item["last_modified"] = datetime(2026, 3, 2, tzinfo=UTC)
    editor.upload.value = (item,)


def test_a_latin1_sheet_is_refused_with_its_line_and_byte(workspace: mk.Workspace) -> None:
    """The message gave the byte's offset alone, which no spreadsheet shows."""
    text = _sheet()
    data = text.encode("latin-1")
    offset = data.index(b"\xe9")
    with pytest.raises(mk.ConfigurationError) as refused:
        read_sheet("edits.csv", data)
    said = str(refused.value)
    assert said.startswith(f"edits.csv line 57 (byte offset {offset}, after '")
    assert "byte 0xe9 is not UTF-8 ('é' in Windows-1252" in said
    assert said.endswith('save the file as "CSV UTF-8"')
    editor = BulkEditor(workspace)
    editor.widget  # noqa: B018 - built as the app shows it
    _upload(editor, "edits.csv", data)
    assert "Not loaded: edits.csv line 57 (byte offset" in editor.summary.value
    assert editor.plans == [] and editor.emit_button.disabled


@pytest.mark.parametrize(
    ("encoding", "ends"),
    [("utf-8-sig", "\r\n"), ("utf-16", "\r\n"), ("utf-8", "\r")],
    ids=["utf8-bom", "utf16-bom", "cr-line-ends"],
)
def test_utf16_with_a_byte_order_mark_and_lines_ending_in_cr_are_read(
    workspace: mk.Workspace, encoding: str, ends: str
) -> None:
    """UTF-16 was refused as not UTF-8; lines ending in \\r alone (a Mac's CSV) as "new-line
    character seen in unquoted field"."""
    data = _sheet(5).replace("\n", ends).encode(encoding)
    rows = read_sheet("edits.csv", data)
    assert [r["description"] for r in rows] == ["row 2", "row 3", "row 4", "café"]
    plans = BulkEditor(workspace).load("edits.csv", data)
    assert [p.valid for p in plans] == [True] * 4


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            _sheet(5).encode("utf-16-le"),
            "edits.csv line 1 (byte offset 1): a NUL character in "
            "the header, as in UTF-16 without a byte order mark",
        ),
        # The header's column read as "description\x00": every row "set nothing".
        (
            f'resource,description\x00\n"{URN}",x\n'.encode(),
            "edits.csv line 1 (byte offset 20): "
            "a NUL character in the header, which no CSV file has",
        ),
        (
            f'resource,description\n"{URN}",one\n"{URN}","never closed\n'.encode(),
            "edits.csv line 3: the file stops being readable CSV in the record that starts here: "
            "unexpected end of data",
        ),
        (
            f'resource,description\n"{URN}","Gold"en\n'.encode(),
            "edits.csv line 2: the file "
            "stops being readable CSV in the record that starts here: ',' expected after '\"'",
        ),
    ],
    ids=["utf16-without-bom", "nul-in-header", "quote-never-closed", "text-after-quote"],
)
def test_a_sheet_that_is_not_csv_text_is_refused_naming_where(
    workspace: mk.Workspace, data: bytes, expected: str
) -> None:
    """A quote never closed was read to the end of the file as one cell, and '"Gold"en' as
    'Golden', without a word."""
    with pytest.raises(mk.ConfigurationError) as refused:
        read_sheet("edits.csv", data)
    assert str(refused.value).startswith(expected)
    with pytest.raises(mk.ConfigurationError):
        BulkEditor(workspace).load("edits.csv", data)


def test_blank_lines_above_the_header_are_not_called_an_empty_file() -> None:
    with pytest.raises(mk.ConfigurationError) as refused:
        read_sheet("edits.csv", f'\n\nresource,tags\n"{URN}",Gold\n'.encode())
    assert str(refused.value) == (
        "edits.csv line 1 names no column: the first row must name the columns"
    )
    with pytest.raises(mk.ConfigurationError, match=r"^edits\.csv is empty: "):
        read_sheet("edits.csv", b"\xef\xbb\xbf")
