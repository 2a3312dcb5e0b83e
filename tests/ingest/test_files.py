"""The files source on real Parquet, CSV, JSON lines and Avro files, Hive partitions included."""

from __future__ import annotations

import os
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import metaverse_kit as mk
from metaverse_kit.ingest import SourceUnreachableError

P = "com.linkedin.pegasus2avro."
ORDERS = pa.table(
    {
        "id": pa.array([1, 2], pa.int64()),
        "total": pa.array([1.5, 2.5]),
        "tags": pa.array([["a"], []], pa.list_(pa.string())),
        "address": pa.array([{"city": "Oslo"}, None], pa.struct([("city", pa.string())])),
    }
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "lake-files"
    for day in ("2026-03-01", "2026-03-02"):
        (root / "sales" / "orders" / f"day={day}").mkdir(parents=True)
        pq.write_table(ORDERS, root / "sales" / "orders" / f"day={day}" / "part-0.parquet")
    (root / "ref").mkdir()
    (root / "ref" / "countries.csv").write_text("code,name,population\nDE,Germany,83\n")
    (root / "ref" / "clicks.jsonl").write_text('{"page": "/", "ms": 12}\n{"page": "/a", "ms": 9}\n')
    schema = {
        "type": "record",
        "name": "User",
        "fields": [{"name": "id", "type": "long"}, {"name": "email", "type": ["null", "string"]}],
    }
    with (root / "ref" / "users.avro").open("wb") as f:
        fastavro.writer(f, schema, [{"id": 1, "email": None}, {"id": 2, "email": "a@b"}])
    (root / "README.txt").write_text("not data")
    return root


def _recipe(root: Path, **config) -> dict:
    return {
        "source": {"type": "files", "config": {"path": str(root), **config}},
        "pipeline_name": "lake-files",
    }


def _urn(name: str) -> str:
    return mk.make_dataset_urn("file", f"lake-files/{name}")


def _aspects(report, urn: str) -> dict:
    (event,) = [e for e in report.events if e["proposedSnapshot"][1]["urn"] == urn]
    return {n.rpartition(".")[2]: v for n, v in event["proposedSnapshot"][1]["aspects"]}


def _columns(aspects: dict) -> dict[str, dict]:
    return {f["fieldPath"]: f for f in aspects["SchemaMetadata"]["fields"]}


def test_files_and_partitioned_folders_become_datasets(workspace, folder, datahub_reads):
    report = mk.ingest(workspace, _recipe(folder), progress=False)
    assert report.exit_status == 0, report.summary()
    urns = sorted(e["proposedSnapshot"][1]["urn"] for e in report.events)
    assert urns == sorted(
        _urn(n) for n in ("sales/orders", "ref/countries.csv", "ref/clicks.jsonl", "ref/users.avro")
    )

    orders = _aspects(report, _urn("sales/orders"))
    props = orders["DatasetProperties"]
    assert props["customProperties"] == {
        "format": "parquet",
        "size_in_bytes": str(sum(f.stat().st_size for f in folder.glob("sales/orders/*/*"))),
        "number_of_files": "2",
        "row_count": "4",
        "partition_keys": "day",
    }
    newest = max(f.stat().st_mtime_ns for f in folder.glob("sales/orders/*/*")) // 1_000_000
    assert props["lastModified"][1]["time"] == newest
    assert props["uri"] == (folder / "sales" / "orders").as_uri()
    columns = _columns(orders)
    assert list(columns) == ["id", "total", "tags", "address", "address.city", "day"]
    assert columns["id"]["type"]["type"][0] == P + "schema.NumberType"
    assert columns["tags"]["type"]["type"] == (P + "schema.ArrayType", {"nestedType": ["string"]})
    assert columns["address"]["type"]["type"][0] == P + "schema.RecordType"
    assert columns["day"]["isPartitioningKey"] is True
    assert columns["day"]["nativeDataType"] == "string"

    csv_columns = _columns(_aspects(report, _urn("ref/countries.csv")))
    assert [(c, f["nativeDataType"]) for c, f in csv_columns.items()] == [
        ("code", "string"),
        ("name", "string"),
        ("population", "int64"),
    ]
    assert (
        "row_count"
        not in _aspects(report, _urn("ref/countries.csv"))["DatasetProperties"]["customProperties"]
    )
    json_columns = _columns(_aspects(report, _urn("ref/clicks.jsonl")))
    assert list(json_columns) == ["page", "ms"]
    avro_columns = _columns(_aspects(report, _urn("ref/users.avro")))
    assert (avro_columns["id"]["nativeDataType"], avro_columns["id"]["nullable"]) == ("long", False)
    assert avro_columns["email"]["nullable"] is True
    assert datahub_reads(report.events) == 4


def test_rerun_new_partition_and_deleted_file(workspace, folder):
    recipe = _recipe(folder)
    mk.ingest(workspace, recipe, progress=False)
    assert mk.ingest(workspace, recipe, progress=False).events_emitted == 0
    # A new partition whose files have one more column; a file removed.
    wider = ORDERS.append_column("currency", pa.array(["EUR", "NOK"]))
    (folder / "sales" / "orders" / "day=2026-03-03").mkdir()
    pq.write_table(wider, folder / "sales" / "orders" / "day=2026-03-03" / "part-0.parquet")
    (folder / "ref" / "clicks.jsonl").unlink()
    report = mk.ingest(workspace, recipe, progress=False)
    assert {c.urn: c.kind for c in report.changes} == {
        _urn("sales/orders"): "changed",
        _urn("ref/clicks.jsonl"): "removed",
    }
    history = mk.history.schema_changes(workspace.replay(progress=False), _urn("sales/orders"))
    added = history.filter(pc.equal(history["change_number"], 1))
    assert added["field_path"].to_pylist() == ["currency"]


def test_a_missing_folder_or_an_unknown_format(workspace, tmp_path, folder):
    with pytest.raises(SourceUnreachableError, match="no folder at"):
        mk.ingest(workspace, _recipe(tmp_path / "nope"), progress=False)
    with pytest.raises(SourceUnreachableError, match="unknown \\['xlsx'\\]"):
        mk.ingest(workspace, _recipe(folder, formats=["xlsx"]), progress=False)


def test_a_damaged_file_fails_alone(workspace, folder):
    (folder / "ref" / "broken.parquet").write_bytes(b"PAR1 not really")
    report = mk.ingest(workspace, _recipe(folder, exclude=["sales/*"]), progress=False)
    assert report.exit_status == 1 and report.failures.total == 1
    (problem,) = report.failures
    assert problem.where == "parquet ref/broken.parquet"
    assert report.entities_added == 3  # the others are in
    # A failed run removes nothing, and the failed dataset is not removed later either.
    os.remove(folder / "ref" / "broken.parquet")
    again = mk.ingest(workspace, _recipe(folder, exclude=["sales/*"]), progress=False)
    assert again.entities_removed == 0 and again.exit_status == 0


def test_a_csv_naming_a_column_twice_fails_alone_naming_the_column(workspace, folder):
    (folder / "ref" / "dup.csv").write_text("code,name,code\nDE,Germany,DE\n")
    report = mk.ingest(workspace, _recipe(folder, exclude=["sales/*"]), progress=False)
    (problem,) = report.failures
    assert problem.where == "csv ref/dup.csv"
    assert problem.message == (
        "ref/dup.csv names a column more than once: 'code' in columns 1 and 3; "
        "give each column its own name"
    )
    assert report.entities_added == 3  # the others are in
