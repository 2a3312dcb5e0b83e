"""Dask workers read ``abfs[s]://`` Capture files through fsspec/adlfs with ``storage_options``.

Against Azurite's blob service: the driver lists the lake with the Azure SDK, each worker
process opens its files with adlfs, and the rows are those of the local replay of that URL.
"""

from __future__ import annotations

from typing import Any

import pytest

import metaverse_kit as mk
from metaverse_kit.distributed import dask_replay
from tests.backends.azure.conftest import (  # noqa: F401 - the fixture
    Azurite,
    azurite,
    upload_lake,
)
from tests.distributed.conftest import SORT_KEYS, Lake, assert_same_table

pytestmark = pytest.mark.azurite


def test_workers_read_abfs_with_storage_options(
    azurite: Azurite,  # noqa: F811 - the imported fixture
    dask_client: Any,
    demo_lake: Lake,
) -> None:
    pytest.importorskip("adlfs")
    import pyarrow as pa

    upload_lake(azurite, demo_lake.root, "capture")
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


def test_a_nightly_export_of_an_abfs_lake(
    azurite: Azurite,  # noqa: F811 - the imported fixture
    dask_client: Any,
    demo_lake: Lake,
    tmp_path: Any,
) -> None:
    """The local export and the Dask one read the lake through its URL into one local folder,
    record its files below the container, and know a local copy of it as the same lake."""
    pytest.importorskip("adlfs")
    from metaverse_kit.distributed import dask_export
    from metaverse_kit.history.export import export_parquet, read_export

    container = upload_lake(azurite, demo_lake.root, "nightly")
    options = {"connection_string": azurite.connection_string}
    out = tmp_path / "history"
    first = export_parquet(
        "abfs://nightly/", out, registry=demo_lake.registry, storage_options=options
    )
    assert (first.files, first.rows) == (35, 41)
    records = [p.read_text() for p in (out / "_metaverse" / "runs").glob("*.json")]
    assert '"metaverse-local/metaverse/0/2026/01/05/09/00/00.avro"' in records[0]
    # A new Capture file arrives; the Dask run reads it alone.
    late = sorted(demo_lake.root.rglob("*.avro"))[-1]
    container.upload_blob("metaverse-local/metaverse/3/2026/03/01/00/00/00.avro", late.read_bytes())
    second = dask_export(
        "abfs://nightly/", out, registry=demo_lake.registry, storage_options=options
    )
    assert (second.files, second.rows) == (1, 0)  # its events are copies the dataset holds
    assert read_export(out).num_rows == 41
    # The same lake copied to a local folder: nothing new, and not another lake.
    assert export_parquet(demo_lake.root, out, registry=demo_lake.registry).run is None
