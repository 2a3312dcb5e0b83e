"""The Azure lake against Azurite: a Capture tree from the local hub replays to the same table."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.backends.azure.factory import lake_from_url
from metaverse_kit.backends.azure.lake import AzureLake, parse_lake_url, time_prefixes
from metaverse_kit.capture import append_events, capture_path
from tests.backends.azure._registry_service import (
    FakeCredential,
    RegistryService,
    RegistryTransport,
    _Version,
)
from tests.backends.azure.conftest import Azurite, upload_lake
from tests.conftest import SimClock

pytestmark = pytest.mark.azurite


def _without_file_column(table: pa.Table) -> pa.Table:
    return table.drop_columns(["capture_file"])


@pytest.fixture
def history(workspace: mk.Workspace, clock: SimClock) -> mk.Workspace:
    """Events over two days and a few hours, on several partitions."""
    urns = [mk.make_dataset_urn("hive", f"db.t{i}") for i in range(6)]
    for step in range(5):
        workspace.emit([mk.mce(u, [mk.aspects.status(step % 2 == 0)]) for u in urns])
        clock.advance(hours=7)
    return workspace


def test_replay_through_abfs_gives_the_local_table(
    history: mk.Workspace, azurite: Azurite, clock: SimClock
) -> None:
    lake = history.path / "lake"
    # A Capture file with no events (Capture writes these for idle windows).
    empty = lake / capture_path("metaverse-local", "metaverse", "3", clock.now + timedelta(days=1))
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_bytes(append_events(None, []))
    client = upload_lake(azurite, lake, "main")
    # A zero-byte blob (an upload in progress) is skipped, not read.
    client.upload_blob("metaverse-local/metaverse/0/2026/03/02/08/00/01.avro", b"")
    options = {"connection_string": azurite.connection_string}
    local = mk.replay_capture(lake, registry=history.registry)
    remote = mk.replay_capture("abfs://main/", registry=history.registry, storage_options=options)
    assert local.num_rows == 30 and remote.num_rows == 30
    assert _without_file_column(remote).equals(_without_file_column(local))
    # The history questions give the same answers on both lakes.
    urn = mk.make_dataset_urn("hive", "db.t3")
    when = datetime(2026, 3, 3, tzinfo=UTC)
    for question in (
        lambda t: mk.history.state_as_of(t, when, include_removed=True),
        lambda t: mk.history.audit_trail(t, urn),
        lambda t: mk.history.changes(
            t, datetime(2026, 3, 2, 12, tzinfo=UTC), when - timedelta(hours=8)
        ),
    ):
        here, there = question(local), question(remote)
        assert here.num_rows > 0
        drop = [c for c in ("capture_file",) if c in here.column_names]
        assert there.drop_columns(drop).equals(here.drop_columns(drop))
    assert (
        remote["capture_file"][0]
        .as_py()
        .startswith("abfss://main@devstoreaccount1.dfs.core.windows.net/metaverse-local/metaverse/")
    )
    # Same pruning by partition and time, and the same rows.
    start, end = datetime(2026, 3, 2, 14, tzinfo=UTC), datetime(2026, 3, 3, 2, tzinfo=UTC)
    for kwargs in (
        {"start": start, "end": end},
        {"partitions": ["1", "3"]},
        {"start": start},
        {"end": end, "partitions": [2]},
    ):
        a = mk.replay_capture(lake, registry=history.registry, **kwargs)
        b = mk.replay_capture(
            "abfss://main@devstoreaccount1.dfs.core.windows.net/",
            registry=history.registry,
            storage_options=options,
            **kwargs,
        )
        assert _without_file_column(b).equals(_without_file_column(a)), kwargs
    # A prefix below the container (the namespace folder) works too.
    deeper = mk.replay_capture(
        "abfs://main/metaverse-local", registry=history.registry, storage_options=options
    )
    assert deeper.num_rows == 30


def test_listing_is_one_flat_listing_per_partition_and_time_prefix(
    history: mk.Workspace, azurite: Azurite
) -> None:
    upload_lake(azurite, history.path / "lake", "listing")
    seen: list[str] = []

    def hook(request: Any) -> None:
        seen.append(request.http_request.url)

    lake = AzureLake.from_connection_string(
        azurite.connection_string, "abfs://listing/", raw_request_hook=hook
    )
    with lake:
        start = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
        files = lake.list_files(partitions=["0", "1"], start=start, end=start + timedelta(hours=1))
        local = mk.replay_capture(history.path / "lake").num_rows
        assert local == 30
    flat = [u for u in seen if "delimiter" not in u]
    walks = [u for u in seen if "delimiter" in u]
    # One-level listings only down to the partition folders (root, namespace, event hub, and
    # each of the 4 partitions, whose year folders mark them as such), never below.
    assert len(walks) == 3 + 4
    assert not any("2026" in u for u in walks)
    # Then one listing per partition and hour prefix: 14:15 to 15:30 covers hours 14 and 15.
    prefixes = sorted(u.split("prefix=")[1].split("&")[0] for u in flat)
    assert prefixes == sorted(
        f"metaverse-local%2Fmetaverse%2F{p}%2F2026%2F03%2F02%2F{h}%2F"
        for p in ("0", "1")
        for h in ("14", "15")
    )
    assert {f.partition for f in files} <= {"0", "1"}
    assert all(f.window_start and f.window_start.hour in (14, 15) for f in files)
    # A partition with no folder is said from the walk's folders: nothing more is listed.
    seen.clear()
    with lake, pytest.warns(mk.MissingPartitionWarning, match=r"'9'.*partitions: 0, 1, 2, 3\)"):
        assert lake.list_files(partitions=["9"]) == []
    assert not [u for u in seen if "delimiter" not in u]


def test_downloads_are_ranged_and_prefetched(history: mk.Workspace, azurite: Azurite) -> None:
    upload_lake(azurite, history.path / "lake", "ranged")
    ranges: list[str] = []

    def hook(request: Any) -> None:
        header = request.http_request.headers.get("x-ms-range")
        if header:
            ranges.append(header)

    lake = AzureLake.from_connection_string(
        azurite.connection_string, "abfs://ranged/", chunk_size=512, raw_request_hook=hook
    )
    with lake:
        files = lake.list_files()
        biggest = max(files, key=lambda f: f.size)
        assert biggest.size > 1024
        local = (history.path / "lake" / biggest.path.split("/", 3)[3]).read_bytes()
        for f in files:
            data = lake.read_bytes(f)
            if f == biggest:
                assert data == local
    assert len(ranges) > len(files)
    assert "bytes=512-1023" in ranges


def test_workspace_replay_on_azure_with_the_configured_lake(
    history: mk.Workspace,
    azurite: Azurite,
    credential: FakeCredential,
    registry_service: RegistryService,
    registry_transport: RegistryTransport,
    tmp_path: Path,
) -> None:
    upload_lake(azurite, history.path / "lake", "wslake")
    # The schemas the local workspace wrote with, known to the (in-process) service by id.
    for name in history.registry.list_schemas("metadata"):
        local = history.registry.get_schema(group_name="metadata", name=name, version=1)
        version = _Version(local.properties.id, "metadata", name, 1, local.definition)
        registry_service.schemas[("metadata", name)] = [version]
        registry_service.ids[version.id] = version
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string
    with mk.connect(
        "azure",
        path=tmp_path / "state",
        fully_qualified_namespace="ehns-test.servicebus.windows.net",
        eventhub="eh-test",
        lake="abfs://wslake/",
        credential=credential,
        registry_transport=registry_transport,
    ) as ws:
        remote = ws.replay()
        assert "AccountKey" not in repr(ws) and "Eby8" not in repr(ws)
        # Schemas seen in the lake's history are listed from then on.
        assert mk.MCE_FULL_NAME in ws.registry.list_schemas("metadata")
    local = history.replay()
    assert _without_file_column(remote).equals(_without_file_column(local))


def test_lake_urls_and_storage_options() -> None:
    assert parse_lake_url("abfss://main@acct.dfs.core.windows.net/a/b") == ("acct", "main", "a/b/")
    assert parse_lake_url("abfs://main/x", account_name="acct") == ("acct", "main", "x/")
    with pytest.raises(mk.ConfigurationError, match="abfss://"):
        parse_lake_url("https://acct.blob.core.windows.net/main")
    with pytest.raises(mk.ConfigurationError, match="no storage account"):
        lake_from_url("abfs://main/", storage_options={"credential": FakeCredential()})
    with pytest.raises(mk.ConfigurationError, match="Unknown storage_options colour"):
        lake_from_url("abfs://main/", storage_options={"colour": "blue"})
    lake = lake_from_url(
        "abfs://main/p", storage_options={"account_name": "acct", "credential": FakeCredential()}
    )
    assert lake.root == "abfss://main@acct.dfs.core.windows.net/p/"


def test_a_failed_sign_in_says_where_a_url_lake_takes_its_credential() -> None:
    """A replay of a URL has no ``credential=``: the advice names ``storage_options``. The
    credential is asked once: Storage's own retry policy would ask 4 times, 78 s of backoff."""
    asked: list[str] = []

    class NoSignIn:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            from azure.core.exceptions import ClientAuthenticationError

            asked.extend(scopes)
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")

    url = "abfss://main@acct.dfs.core.windows.net/p"
    with pytest.raises(mk.ServiceError, match=r"az login.*pass storage_options=\{'credential'"):
        mk.replay_capture(url, storage_options={"credential": NoSignIn()}, cache=False)
    assert asked == ["https://storage.azure.com/.default"]
    # A lake built with its own retry options keeps them, and stops at the sign-in all the same.
    lake = AzureLake.from_url(url, credential=NoSignIn(), retry_total=2)
    with lake, pytest.raises(mk.ServiceError, match=r"pass credential=\.\.\.$"):
        lake.list_files()
    assert len(asked) == 2
    assert lake._container._config.retry_policy.total_retries == 2


def test_time_prefixes_pick_the_finest_level_with_few_listings() -> None:
    t = datetime(2026, 3, 2, 8, 20, tzinfo=UTC)
    assert time_prefixes(t, t + timedelta(minutes=30)) == ["2026/03/02/08/"]
    assert time_prefixes(t, t + timedelta(hours=1)) == ["2026/03/02/08/", "2026/03/02/09/"]
    assert time_prefixes(t - timedelta(minutes=10), t) == ["2026/03/02/07/", "2026/03/02/08/"]
    days = time_prefixes(t, t + timedelta(days=3))
    assert days == ["2026/03/02/", "2026/03/03/", "2026/03/04/", "2026/03/05/"]
    assert time_prefixes(t, t + timedelta(days=100))[:2] == ["2026/03/", "2026/04/"]
    assert time_prefixes(t, t + timedelta(days=800)) == ["2026/", "2027/", "2028/"]
    assert time_prefixes(None, t) == [""]
    assert time_prefixes(t, t - timedelta(days=1)) == []
