"""The files source on CSV files that are not clean UTF-8: encodings, line ends, long rows.

A schema is read from UTF-8 (with or without a byte order mark) and UTF-16 with one; another
encoding fails its dataset with the file, line and byte offset; nothing is typed wrongly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import metaverse_kit as mk

HEAD = 1 << 20  # the bytes of a CSV the source reads a schema from


def _ingest(workspace: mk.Workspace, root: Path) -> mk.ingest.IngestReport:
    recipe = {"source": {"type": "files", "config": {"path": str(root)}}, "pipeline_name": "f"}
    return mk.ingest(workspace, recipe, progress=False)


def _fields(report, name: str = "data.csv") -> list[tuple[str, str]]:
    urn = mk.make_dataset_urn("file", f"files/{name}")
    (event,) = [e for e in report.events if e["proposedSnapshot"][1]["urn"] == urn]
    aspects = dict(event["proposedSnapshot"][1]["aspects"])
    fields = aspects["com.linkedin.pegasus2avro.schema.SchemaMetadata"]["fields"]
    return [(f["fieldPath"], f["nativeDataType"]) for f in fields]


def _write(tmp_path: Path, data: bytes) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    (root / "data.csv").write_bytes(data)
    return root


def _text(last: int = 57) -> str:
    rows = "".join(f"{n},row {n}\n" for n in range(2, last))
    return f"id,city\n{rows}{last},Orléans\n"


def test_a_latin1_csv_fails_with_its_line_and_byte_not_typed_as_bytes(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    """pyarrow took the column of Latin-1 text for bytes (BytesType), without a word."""
    text = _text()
    root = _write(tmp_path, text.encode("latin-1"))
    report = _ingest(workspace, root)
    (failure,) = list(report.failures)
    offset = text.encode("latin-1").index(b"\xe9")
    assert failure.where == "csv data.csv"
    assert failure.message.startswith(
        f"data.csv line 57 (byte offset {offset}, after '57,Orl'): byte 0xe9 is not UTF-8"
    )
    assert report.events_emitted == 0


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_utf8_and_utf16_with_a_byte_order_mark_give_text_columns(
    workspace: mk.Workspace, tmp_path: Path, encoding: str
) -> None:
    """UTF-16 (Excel's "Unicode Text") failed with a parse error over a jumble of columns."""
    root = _write(tmp_path, _text().encode(encoding))
    report = _ingest(workspace, root)
    assert report.exit_status == 0, report.summary()
    assert _fields(report) == [("id", "int64"), ("city", "string")]


def test_utf16_without_a_byte_order_mark_fails_saying_so(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    root = _write(tmp_path, _text().encode("utf-16-le"))
    (failure,) = list(_ingest(workspace, root).failures)
    assert failure.message.startswith(
        "data.csv line 1 (byte offset 1): a NUL character in the header, as in UTF-16 without "
        "a byte order mark"
    )


def test_a_long_file_is_read_whatever_its_line_ends_and_where_its_head_is_cut(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    """Lines ending in \\r alone (a Mac's CSV) left nothing of a file over 1 MiB to read
    ("Empty CSV file"). The head is cut inside a character here: no problem either."""
    row = "1,Zürich\r"  # 10 bytes, the first of "ü" at 3
    first = "0," + "a" * ((HEAD - len("id,city\r0,\r1,Z") - 1) % 10) + "\r"
    data = ("id,city\r" + first + row * (HEAD // 10 + 10)).encode()
    assert data[HEAD - 1 : HEAD + 1] == "ü".encode()
    root = _write(tmp_path, data)
    report = _ingest(workspace, root)
    assert report.exit_status == 0, report.summary()
    assert _fields(report) == [("id", "int64"), ("city", "string")]


def test_a_header_alone_without_a_line_end_gives_its_columns(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    """pyarrow found no columns in it ("Empty CSV file or block"). With no row to type them
    by, the columns are strings (see test_files_columns.py)."""
    report = _ingest(workspace, _write(tmp_path, b"id,city"))
    assert report.exit_status == 0, report.summary()
    assert _fields(report) == [("id", "string"), ("city", "string")]


def test_a_first_row_longer_than_the_head_fails_instead_of_typing_every_column_null(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    root = _write(tmp_path, b"id,city\n1," + b"x" * HEAD + b"\n")
    (failure,) = list(_ingest(workspace, root).failures)
    assert failure.message.startswith(
        "data.csv has no whole row in its first 1 MiB, from which the schema is read"
    )


def test_a_row_that_does_not_parse_is_named_by_its_line(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    """pyarrow numbers records, not lines, and did not say which (it reads on threads)."""
    data = b'id,city\n1,"two\nlines"\n\n3,Oslo,extra\n'
    (failure,) = list(_ingest(workspace, _write(tmp_path, data)).failures)
    assert failure.message.startswith(
        "data.csv line 5: Expected 2 columns, got 3: 3,Oslo,extra (a quote never closed, or "
    )


def _json_lines(last: int = 57) -> str:
    rows = "".join(f'{{"id": {n}, "city": "row {n}"}}\n' for n in range(1, last))
    return f'{rows}{{"id": {last}, "city": "Orléans"}}\n'


def test_json_lines_not_in_utf8_fail_with_their_line_and_byte(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    """A Latin-1 JSON lines file was read without a word; UTF-16 failed with pyarrow's
    'JSON parse error: Invalid value. in row 0'."""
    root = tmp_path / "files"
    root.mkdir()
    text = _json_lines()
    (root / "data.jsonl").write_bytes(text.encode("latin-1"))
    report = _ingest(workspace, root)
    (failure,) = list(report.failures)
    offset = text.encode("latin-1").index(b"\xe9")
    assert failure.message.startswith(f"data.jsonl line 57 (byte offset {offset}")
    assert "byte 0xe9 is not UTF-8" in failure.message
    assert report.events_emitted == 0


def test_json_lines_in_utf16_with_a_byte_order_mark_give_their_columns(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "data.jsonl").write_bytes(_json_lines().encode("utf-16"))
    report = _ingest(workspace, root)
    assert not list(report.failures)
    assert [name for name, _ in _fields(report, "data.jsonl")] == ["id", "city"]
