"""Dask workers read ``abfs[s]://`` Capture files through fsspec/adlfs with ``storage_options``.

Against Azurite's blob service: the driver lists the lake with the Azure SDK, each worker
process opens its files with adlfs, and the rows are those of the local replay of that URL.
"""

from __future__ import annotations

from typing import Any

import pytest

import metaverse_kit as mk
from metaverse_kit.distributed import dask_replay
from tests.backends.azure.conftest import Azurite, azurite  # noqa: F401 - the fixture
from tests.distributed.conftest import SORT_KEYS, Lake, assert_same_table

pytestmark = pytest.mark.azurite


def test_workers_read_abfs_with_storage_options(
    azurite: Azurite,  # noqa: F811 - the imported fixture
    dask_client: Any,
    demo_lake: Lake,
) -> None:
    pytest.importorskip("adlfs")
    import pyarrow as pa
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.get_container_client("capture")
    if container.exists():
        container.delete_container()
    container.create_container()
    for path in sorted(demo_lake.root.rglob("*.avro")):
        container.upload_blob(path.relative_to(demo_lake.root).as_posix(), path.read_bytes())
    options = {"connection_string": azurite.connection_string}
    local = mk.replay_capture(
        "abfs://capture/", registry=demo_lake.registry, storage_options=options, cache=False
    )
    assert local.num_rows == 41
    frame = dask_replay(
        "abfs://capture/",
        registry=demo_lake.registry,
        storage_options=options,
        partition_bytes=8_000,
    ).compute()
    got = pa.Table.from_pandas(frame, preserve_index=False).sort_by(SORT_KEYS)
    assert got["capture_file"][0].as_py().startswith("abfss://capture@")
    assert_same_table(local, got)
