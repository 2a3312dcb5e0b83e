"""The csv source on files that are not clean UTF-8 CSV: other encodings, NULs, bad quoting.

Each is refused with the file, the line and (for bytes) the byte offset, and none is applied in
part; UTF-8 with a byte order mark and UTF-16 with one are read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.ingest import SourceUnreachableError
from metaverse_kit.ingest.source import TEXT_ENCODINGS, text_problem

CUSTOMERS = mk.make_dataset_urn("hive", "sales.customers")


def _recipe(path: Path) -> dict:
    return {"source": {"type": "csv", "config": {"path": str(path)}}, "pipeline_name": "edits"}


def _edits(last: int, special: str = "café") -> str:
    """A header and rows 2..``last``; row ``last`` describes the table as ``special``."""
    rows = "".join(f'"{CUSTOMERS}",row {n}\n' for n in range(2, last))
    return f'resource,description\n{rows}"{CUSTOMERS}",{special}\n'


def _offset(text: str, line: int) -> int:
    """The byte offset (in Latin-1) of 'é' in the text's ``line``."""
    start = sum(len(x) for x in text.splitlines(keepends=True)[: line - 1])
    return start + text.splitlines()[line - 1].index("é")


@pytest.mark.parametrize("line", [57, 2000])
def test_a_latin1_file_is_refused_with_the_line_and_byte_and_nothing_applied(
    workspace: mk.Workspace, tmp_path: Path, line: int
) -> None:
    """Excel's plain "CSV" is Windows-1252. The error named no line; with the byte past the
    first block of 8 KiB (line 2000), the rows before it were applied."""
    text = _edits(line)
    path = tmp_path / "edits.csv"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(SourceUnreachableError) as refused:
        mk.ingest(workspace, _recipe(path), progress=False)
    said = str(refused.value)
    assert said.startswith(f"{path} line {line} (byte offset {_offset(text, line)}, after '")
    assert """PROD)",caf'): byte 0xe9 is not UTF-8 ('é' in Windows-1252""" in said
    assert f"expected {TEXT_ENCODINGS}" in said
    assert workspace.replay(progress=False).num_rows == 0


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be-bom"])
def test_utf8_and_utf16_with_a_byte_order_mark_are_read(
    workspace: mk.Workspace, tmp_path: Path, encoding: str
) -> None:
    text = _edits(57).replace("\n", "\r\n")
    path = tmp_path / "edits.csv"
    data = (
        b"\xfe\xff" + text.encode("utf-16-be")
        if encoding == "utf-16-be-bom"
        else text.encode(encoding)
    )
    path.write_bytes(data)
    report = mk.ingest(workspace, _recipe(path), progress=False)
    assert report.exit_status == 0 and report.events_emitted == 1, report.summary()
    latest = mk.history.latest_aspect(
        workspace.replay(progress=False), CUSTOMERS, "editableDatasetProperties"
    )
    assert latest["description"] == "café"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # UTF-16 without a byte order mark: every other byte of the header is NUL.
        (
            _edits(5).encode("utf-16-le"),
            "line 1 (byte offset 1): a NUL character in the header, "
            "as in UTF-16 without a byte order mark",
        ),
        # A NUL in the header made its column one of the "ignored" ones, with an invisible NUL.
        (
            b"resource,description\x00\n" + f'"{CUSTOMERS}",x\n'.encode(),
            "line 1 (byte offset 20): a NUL character in the header, which no CSV file has",
        ),
        (bytes(range(256)) * 4, "line 1 (byte offset 0): a NUL character in the header"),
        (b"\x89PNG\r\n\x1a\n", "line 1 (byte offset 0): byte 0x89 is not UTF-8"),
        (
            b"\xff\xfer\x00,\x00\x00\xd8\n\x00",
            "line 1 (byte offset 6, after 'r,'): the bytes are "
            "not UTF-16, as the file's byte order mark says (illegal UTF-16 surrogate)",
        ),
    ],
    ids=["utf16-without-bom", "nul-in-header", "binary", "png", "bad-utf16"],
)
def test_a_file_that_is_not_csv_text_is_refused_naming_where(
    workspace: mk.Workspace, tmp_path: Path, data: bytes, expected: str
) -> None:
    path = tmp_path / "edits.csv"
    path.write_bytes(data)
    with pytest.raises(SourceUnreachableError) as refused:
        mk.ingest(workspace, _recipe(path), progress=False)
    assert str(refused.value).startswith(f"{path} {expected}")


@pytest.mark.parametrize(
    ("last", "reason"),
    [
        ('"never closed\n', "unexpected end of data"),
        ('"Gold"en\n', "',' expected after '\"'"),
    ],
    ids=["quote-never-closed", "text-after-a-closing-quote"],
)
def test_a_row_with_broken_quotes_is_a_failure_with_its_line_not_applied(
    workspace: mk.Workspace, tmp_path: Path, last: str, reason: str
) -> None:
    """The csv module, not strict, took a quote left open up to the end of the file as a cell
    (here applied as the description), and '"Gold"en' as 'Golden'."""
    path = tmp_path / "edits.csv"
    path.write_text(f'resource,description\n"{CUSTOMERS}",first\n\n"{CUSTOMERS}",{last}')
    report = mk.ingest(workspace, _recipe(path), progress=False)
    (failure,) = list(report.failures)
    assert failure.where == "edits.csv line 4"
    assert failure.message.startswith(
        f"the file stops being readable CSV in the record that starts here: {reason}; "
    )
    latest = mk.history.latest_aspect(
        workspace.replay(progress=False), CUSTOMERS, "editableDatasetProperties"
    )
    assert latest["description"] == "first"


def test_lines_ending_in_a_carriage_return_alone_are_read(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    path = tmp_path / "edits.csv"
    path.write_bytes(_edits(4, "last").replace("\n", "\r").encode())
    report = mk.ingest(workspace, _recipe(path), progress=False)
    assert report.exit_status == 0 and report.events_emitted == 1, report.summary()


def test_a_file_changed_to_another_encoding_while_read_is_a_failure_with_its_line(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    """open() decodes the whole file; one rewritten after it still fails with a line."""
    from metaverse_kit.ingest.report import IngestReport
    from metaverse_kit.ingest.source import SourceContext
    from metaverse_kit.ingest.sources.csv_enricher import CsvConfig, CsvSource

    path = tmp_path / "edits.csv"
    path.write_text(_edits(2000, "plain"))
    report = IngestReport("csv", "edits", "run", False, started=datetime.now(UTC))
    context = SourceContext(workspace, report, "edits", lambda urn, aspect: None, 0)
    source = CsvSource(CsvConfig(path=str(path)), context)
    source.open()
    text = _edits(2000)
    path.write_bytes(text.encode("latin-1"))
    units = list(source.work_units())
    (failure,) = list(report.failures)
    assert failure.where == str(path)
    assert failure.message.startswith(
        f"the file changed while it was read: line 2000 (byte offset {_offset(text, 2000)}, "
    )
    # The rows of the blocks decoded before the byte's block are planned (one entity).
    (unit,) = units
    assert unit.where.startswith("edits.csv lines 2-")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 4096, 1 << 20])
def test_text_problem_says_the_same_whatever_the_chunks(size: int) -> None:
    """The line and byte offset do not depend on where the chunks end (a character, a \\r\\n
    or a byte order mark cut in two)."""
    text = _edits(57).replace("\n", "\r\n")
    for encoding, data in (
        ("latin-1", text.encode("latin-1")),
        ("utf-8-bom", b"\xef\xbb\xbf" + text.encode("latin-1")),
    ):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        bom = 3 if encoding == "utf-8-bom" else 0
        said = text_problem(chunks)
        assert said is not None
        assert said.startswith(f"line 57 (byte offset {bom + _offset(text, 57)}, after '"), said
    for good in (text.encode(), text.encode("utf-8-sig"), text.encode("utf-16")):
        assert text_problem([good[i : i + size] for i in range(0, len(good), size)]) is None
    # A head cut inside a character: that is no problem; the end of a whole file is.
    cut = "é".encode()[:1]
    assert text_problem([b"a,b\n", cut], complete=False) is None
    assert text_problem([b"a,b\n", cut]) == (
        "line 2 (byte offset 4): byte 0xc3 is not UTF-8 ('Ã' in Windows-1252, Excel's plain "
        f'"CSV"); expected {TEXT_ENCODINGS}: save the file as "CSV UTF-8"'
    )


def test_a_blank_first_line_is_named_as_the_header_without_columns(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    path = tmp_path / "edits.csv"
    path.write_text(f"\n{_edits(3)}")
    with pytest.raises(SourceUnreachableError) as refused:
        mk.ingest(workspace, _recipe(path), progress=False)
    assert str(refused.value).startswith(
        f"{path} has no 'resource' column in its header, line 1 (empty); "
    )
