"""The files source on an abfss:// container (Azurite): the same datasets as from a folder."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import metaverse_kit as mk
from metaverse_kit.ingest import SourceUnreachableError
from tests.backends.azure.conftest import Azurite

pytestmark = pytest.mark.azurite

ORDERS = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "sku": ["a", "b", "c"]})


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_files_in_a_container_are_read_by_range(workspace, azurite: Azurite):
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    client = service.get_container_client("raw")
    if client.exists():
        client.delete_container()
    client.create_container()
    for day in ("2026-03-01", "2026-03-02"):
        client.upload_blob(f"landing/orders/day={day}/part-0.parquet", _parquet(ORDERS))
    client.upload_blob("landing/orders", b"", metadata={"hdi_isfolder": "true"})
    client.upload_blob("landing/ref/countries.csv", b"code,name\nNO,Norway\n")
    recipe = {
        "source": {
            "type": "files",
            "config": {
                "path": "abfss://raw@devstoreaccount1.dfs.core.windows.net/landing",
                "connection_string": azurite.connection_string,
            },
        },
        "pipeline_name": "landing",
    }
    report = mk.ingest(workspace, recipe, progress=False)
    assert report.exit_status == 0, report.summary()
    by_urn = {e["proposedSnapshot"][1]["urn"]: e for e in report.events}
    orders = mk.make_dataset_urn("abs", "landing/orders")
    assert sorted(by_urn) == sorted(
        [orders, mk.make_dataset_urn("abs", "landing/ref/countries.csv")]
    )
    aspects = {n.rpartition(".")[2]: v for n, v in by_urn[orders]["proposedSnapshot"][1]["aspects"]}
    assert aspects["DatasetProperties"]["customProperties"]["row_count"] == "6"
    assert aspects["DatasetProperties"]["uri"] == (
        "abfss://raw@devstoreaccount1.dfs.core.windows.net/landing/orders"
    )
    assert [f["fieldPath"] for f in aspects["SchemaMetadata"]["fields"]] == ["id", "sku", "day"]
    assert mk.ingest(workspace, recipe, progress=False).events_emitted == 0
    assert "AccountKey" not in str(report.to_dict())

    bad = {
        **recipe["source"]["config"],
        "path": "abfss://missing@devstoreaccount1.dfs.core.windows.net/x",
    }
    with pytest.raises(SourceUnreachableError, match="cannot list") as info:
        mk.ingest(workspace, {"source": {"type": "files", "config": bad}}, progress=False)
    assert "AccountKey=" not in str(info.value)
