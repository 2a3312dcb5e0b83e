"""The files source on CSV and JSON lines files with no value to type a column by, or no column.

A column of CSV or JSON lines with no value in the rows read (a header with no row, an empty
column, a key always null) was typed null, which DataHub shows as NullType (a column that only
ever holds null); it is now string, its description saying why. Files with no column, and
columns with no name, fail their dataset naming the file and the columns.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import metaverse_kit as mk

P = "com.linkedin.pegasus2avro.schema."
UNTYPED = (
    "No value in the rows read (the first MiB of each file) tells this column's type: "
    "given as string."
)


def _ingest(workspace: mk.Workspace, root: Path) -> mk.ingest.IngestReport:
    recipe = {"source": {"type": "files", "config": {"path": str(root)}}, "pipeline_name": "f"}
    return mk.ingest(workspace, recipe, progress=False)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    root = tmp_path / "files"
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)
    return root


def _fields(report: mk.ingest.IngestReport, name: str) -> list[tuple[str, str, str, Any]]:
    """(path, DataHub type, native type, description) of each field of the dataset ``name``."""
    urn = mk.make_dataset_urn("file", f"files/{name}")
    (event,) = [e for e in report.events if e["proposedSnapshot"][1]["urn"] == urn]
    aspects = dict(event["proposedSnapshot"][1]["aspects"])
    return [
        (
            f["fieldPath"],
            f["type"]["type"][0].removeprefix(P),
            f["nativeDataType"],
            f.get("description"),
        )
        for f in aspects[P + "SchemaMetadata"]["fields"]
    ]


def _failure(report: mk.ingest.IngestReport) -> str:
    (failure,) = list(report.failures)
    assert report.events_emitted == 0
    return failure.message


@pytest.mark.parametrize(
    "data",
    [
        b"id,city\n",
        b"id,city",
        codecs.BOM_UTF8 + b"id,city\r\n",
        "id,city\n".encode("utf-16"),
    ],
    ids=["utf-8", "no line end", "byte order mark", "utf-16"],
)
def test_a_header_without_rows_gives_string_columns_saying_why(
    workspace: mk.Workspace, tmp_path: Path, data: bytes
) -> None:
    report = _ingest(workspace, _write(tmp_path, "data.csv", data))
    assert report.exit_status == 0, report.summary()
    assert _fields(report, "data.csv") == [
        ("id", "StringType", "string", UNTYPED),
        ("city", "StringType", "string", UNTYPED),
    ]


def test_an_empty_column_of_a_file_with_rows_is_typed_alike(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    report = _ingest(workspace, _write(tmp_path, "data.csv", b"id,note\n1,\n2,\n"))
    assert _fields(report, "data.csv") == [
        ("id", "NumberType", "int64", None),
        ("note", "StringType", "string", UNTYPED),
    ]


def test_another_file_with_values_gives_the_column_its_type(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    """A partition with a header only, another with rows: the rows' types, no description."""
    root = _write(tmp_path, "orders/day=1/part-0.csv", b"id,note\n")
    (root / "orders" / "day=2").mkdir()
    (root / "orders" / "day=2" / "part-0.csv").write_bytes(b"id,note\n7,\n")
    report = _ingest(workspace, root)
    assert report.exit_status == 0, report.summary()
    assert _fields(report, "orders") == [
        ("id", "NumberType", "int64", None),
        ("note", "StringType", "string", UNTYPED),
        ("day", "NumberType", "int64", None),
    ]


def test_json_lines_keys_with_no_value_are_strings_saying_why(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    data = b'{"a": 1, "b": null, "c": [], "d": {"e": null, "f": "x"}}\n'
    report = _ingest(workspace, _write(tmp_path, "data.jsonl", data))
    assert report.exit_status == 0, report.summary()
    assert _fields(report, "data.jsonl") == [
        ("a", "NumberType", "int64", None),
        ("b", "StringType", "string", UNTYPED),
        ("c", "ArrayType", "list<item: string>", UNTYPED),
        ("d", "RecordType", "struct<e: string, f: string>", None),
        ("d.e", "StringType", "string", UNTYPED),
        ("d.f", "StringType", "string", None),
    ]


def test_a_parquet_column_of_the_null_type_keeps_it(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    """Parquet declares its types: a null column is what the file says it is."""
    root = tmp_path / "files"
    root.mkdir()
    pq.write_table(pa.table({"id": [1], "gone": pa.nulls(1)}), root / "data.parquet")
    report = _ingest(workspace, root)
    assert _fields(report, "data.parquet") == [
        ("id", "NumberType", "int64", None),
        ("gone", "NullType", "null", None),
    ]


# -- no column, or a column with no name -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        (
            "data.csv",
            b"",
            "data.csv is empty (0 bytes): a CSV file's first line is the header naming its columns",
        ),
        (
            "data.csv",
            codecs.BOM_UTF8 + b"\n\r\n",
            "data.csv holds no text (only blank lines): a CSV file's first line is the header "
            "naming its columns",
        ),
        (
            "data.jsonl",
            b"",
            "data.jsonl is empty (0 bytes): no JSON object to read columns from (one per line)",
        ),
        (
            "data.jsonl",
            b"\n\n",
            "data.jsonl holds no text (only blank lines): no JSON object to read columns from "
            "(one per line)",
        ),
    ],
    ids=["empty csv", "blank csv", "empty json lines", "blank json lines"],
)
def test_a_file_with_no_column_fails_saying_so(
    workspace: mk.Workspace, tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    """pyarrow said "Empty CSV file" (or "...: cannot infer number of columns"), and blank
    JSON lines gave a dataset of no column without a word."""
    assert _failure(_ingest(workspace, _write(tmp_path, name, data))) == message


def test_an_empty_part_of_a_dataset_of_many_files_is_passed_over(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    """Spark writes a file of 0 bytes for an empty partition: the others give the columns."""
    root = _write(tmp_path, "orders/day=1/part-0.csv", b"")
    (root / "orders" / "day=2").mkdir()
    (root / "orders" / "day=2" / "part-0.csv").write_bytes(b"id\n7\n")
    report = _ingest(workspace, root)
    assert report.exit_status == 0, report.summary()
    assert [f[:3] for f in _fields(report, "orders")] == [
        ("id", "NumberType", "int64"),
        ("day", "NumberType", "int64"),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b",id,city\n0,1,Oslo\n",
            "data.csv has a column with no name (column 1 of 3); give each column a name "
            "(pandas: to_csv(index=False), or name the index)",
        ),
        (
            b"id,, \n",
            "data.csv has columns with no name (columns 2 and 3 of 3); give each column a name "
            "(pandas: to_csv(index=False), or name the index)",
        ),
    ],
    ids=["a pandas index", "header only"],
)
def test_a_column_with_no_name_fails_naming_it(
    workspace: mk.Workspace, tmp_path: Path, data: bytes, message: str
) -> None:
    """It failed with "The SchemaField record has 1 problem:", naming neither file nor column
    (two of them: "names a column more than once: '' in columns 1 and 2")."""
    assert _failure(_ingest(workspace, _write(tmp_path, "data.csv", data))) == message


def test_json_lines_with_a_key_with_no_name_fail_naming_it(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    root = _write(tmp_path, "data.jsonl", b'{"a": 1, "": 2}\n')
    assert _failure(_ingest(workspace, root)) == (
        "data.jsonl has a column with no name (column 2 of 2); give each column a name"
    )
    (root / "data.jsonl").write_bytes(b'{"a": {"": 2}}\n')
    assert _failure(_ingest(workspace, root)) == (
        "data.jsonl has a field with no name in a; give each field a name"
    )


def test_a_header_alone_naming_a_column_twice_fails_naming_it(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    assert _failure(_ingest(workspace, _write(tmp_path, "data.csv", b"id,city,id\n"))) == (
        "data.csv names a column more than once: 'id' in columns 1 and 3; give each column its "
        "own name"
    )


def test_a_dataset_read_before_is_read_again_for_its_new_types(
    workspace: mk.Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files did not change, but what the source makes of them did: the fingerprint of
    the datasets read by the version that typed such columns null differs, and they are read."""
    from metaverse_kit.ingest.sources import files

    root = _write(tmp_path, "data.csv", b"id,city\n")
    with monkeypatch.context() as before:
        before.setattr(files, "_VERSION", "files/1")
        before.setattr(files, "_untyped_as_text", lambda t, path, found: t)
        first = _ingest(workspace, root)
    assert [f[1] for f in _fields(first, "data.csv")] == ["NullType", "NullType"]
    again = _ingest(workspace, root)
    assert [f[1] for f in _fields(again, "data.csv")] == ["StringType", "StringType"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "data.parquet",
            "data.parquet is empty (0 bytes): no Parquet footer to read its columns from",
        ),
        ("data.avro", "data.avro is empty (0 bytes): no Avro header to read its columns from"),
    ],
)
def test_an_empty_parquet_or_avro_file_fails_naming_it(
    workspace: mk.Workspace, tmp_path: Path, name: str, message: str
) -> None:
    """pyarrow said "Parquet file size is 0 bytes" and fastavro "cannot read header - is it an
    avro file?", naming no file."""
    assert _failure(_ingest(workspace, _write(tmp_path, name, b""))) == message
