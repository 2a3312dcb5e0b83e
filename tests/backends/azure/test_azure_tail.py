"""The live tail on Azure: the real ``EventHubConsumerClient`` on the loopback AMQP endpoint.

Receive links with their starting positions and consumer group, the replay's columns for what
is received, checkpoints stored in Azurite's blob service and resumed after a restart, and a
close that leaves no thread behind.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pytest

import metaverse_kit as mk
from metaverse_kit.capture import append_events, capture_path, format_enqueued_time
from metaverse_kit.history.replay import PayloadSchema
from metaverse_kit.widgets import HistoryExplorer
from tests.backends.azure._amqp_endpoint import LoopbackEventHubs
from tests.backends.azure._registry_service import FakeCredential, RegistryTransport
from tests.backends.azure.conftest import Azurite
from tests.conftest import read_until

ARRIVAL_TIMEOUT = 60.0
# NOTE: see test_azure_hub.py: the SDK leaves sockets of dropped connections to the collector.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


# Read until the events came, within ARRIVAL_TIMEOUT.
_read_until = functools.partial(read_until, timeout=ARRIVAL_TIMEOUT)


@pytest.fixture
def azure_ws(
    loopback: LoopbackEventHubs,
    credential: FakeCredential,
    registry_transport: RegistryTransport,
    tmp_path: Path,
) -> Iterator[mk.Workspace]:
    os.environ["CONNECTION_STRING"] = loopback.connection_string
    with mk.connect(
        "azure",
        path=tmp_path / "state",
        credential=credential,
        registry_transport=registry_transport,
        retry_total=0,
        retry_backoff_factor=0.01,
        send_timeout=5,
    ) as ws:
        yield ws


def _urn(i: int) -> str:
    return mk.make_dataset_urn("hive", f"db.t{i}")


def test_the_tail_receives_emits_with_the_replay_columns_and_closes_cleanly(
    azure_ws: mk.Workspace, loopback: LoopbackEventHubs
) -> None:
    azure_ws.emit([mk.mce(_urn(i), [mk.aspects.status(False)]) for i in range(3)])
    threads = set(threading.enumerate())
    with azure_ws.tail(start="earliest") as tail:
        first = _read_until(tail, 3)
        azure_ws.emit(mk.mce(_urn(7), [mk.aspects.global_tags(["PII"])]))
        later = _read_until(tail, 1)
    assert set(threading.enumerate()) == threads  # ours and the SDK's threads all ended
    assert first.schema.remove_metadata() == PayloadSchema(mk.mce_definition()).arrow_schema()
    rows = first.to_pylist() + later.to_pylist()
    stored = {e.message_id: e for e in loopback.events}
    for row in rows:
        event = stored[row["message_id"]]
        assert row["partition"] == event.partition
        assert row["sequence_number"] == event.sequence_number
        assert row["offset"] == str(event.offset)
        assert row["enqueued_time"] == datetime.fromtimestamp(event.enqueued_ms / 1000, UTC)
        assert row["partition_key"] == event.partition_key
        assert row["eventhub"] == "eh-loopback"
        assert row["capture_file"] is None  # received live, not yet written by Capture
        assert row["decode_error"] is None
    assert rows[-1]["proposedSnapshot"]["DatasetSnapshot"]["urn"] == _urn(7)
    # Every partition was read from the start, on the default consumer group.
    assert sorted(loopback.receivers[:2]) == [
        ("$Default", p, "amqp.annotation.x-opt-offset > '-1'") for p in ("0", "1")
    ]


def test_start_positions_become_the_receivers_filters(
    azure_ws: mk.Workspace, loopback: LoopbackEventHubs
) -> None:
    base = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    for i in range(6):
        loopback.publish("0", b"p0-%d" % i, enqueued_ms=base + i * 60_000, content_type="text")
        loopback.publish("1", b"p1-%d" % i, enqueued_ms=base + i * 60_000, content_type="text")

    since = datetime.fromtimestamp((base + 4 * 60_000) / 1000, UTC)
    with azure_ws.tail(start=since) as tail:
        got = _read_until(tail, 4)
    assert sorted(got["body"].to_pylist()) == [b"p0-4", b"p0-5", b"p1-4", b"p1-5"]
    assert set(got["decode_error"].to_pylist()) == {
        "not registry Avro (no avro/binary+<schema id> content type)"
    }
    assert (
        "$Default",
        "0",
        f"amqp.annotation.x-opt-enqueued-time >= '{base + 4 * 60_000}'",
    ) in loopback.receivers

    loopback.consumer_groups.add("stewards")
    with azure_ws.tail(start={"0": 3}, partitions=["0"], consumer_group="stewards") as tail:
        got = _read_until(tail, 3)
        assert tail.read(0.5) == []
        loopback.publish("1", b"not followed")
        loopback.publish("0", b"p0-new")
        new = _read_until(tail, 1)
    assert got["sequence_number"].to_pylist() == [3, 4, 5]
    assert new["body"].to_pylist() == [b"p0-new"]
    assert loopback.receivers[-1] == (
        "stewards",
        "0",
        "amqp.annotation.x-opt-sequence-number >= '3'",
    )

    with azure_ws.tail() as tail:  # "latest"
        assert tail.read(1.0) == []
        loopback.publish("1", b"fresh")
        assert _read_until(tail, 1)["body"].to_pylist() == [b"fresh"]


def test_an_unknown_consumer_group_is_an_error_that_says_so(azure_ws: mk.Workspace) -> None:
    threads = set(threading.enumerate())
    with (
        pytest.raises(mk.ServiceError, match=r"not found.*consumer group"),
        azure_ws.tail(consumer_group="nobody") as tail,
    ):
        _read_until(tail, 1)
    assert set(threading.enumerate()) == threads


@pytest.mark.azurite
def test_checkpoints_in_blob_storage_resume_after_a_restart(
    azure_ws: mk.Workspace,
    loopback: LoopbackEventHubs,
    azurite: Azurite,
    credential: FakeCredential,
    registry_transport: RegistryTransport,
    tmp_path: Path,
) -> None:
    from azure.storage.blob import ContainerClient

    with _lake_workspace(azurite, credential, registry_transport, tmp_path / "state") as ws:
        ws.emit([mk.mce(_urn(i), [mk.aspects.status(False)]) for i in range(4)])
        with ws.tail(start="earliest", checkpoint="tail-checkpoints") as tail:
            assert _read_until(tail, 4).num_rows == 4
        ws.emit(mk.mce(_urn(9), [mk.aspects.status(True)]))
        # A new tail (a restarted app) with the same container resumes after what was seen.
        with ws.tail(start="earliest", checkpoint="tail-checkpoints") as tail:
            resumed = _read_until(tail, 1)
            assert tail.read(1.0) == []
    assert resumed["partition_key"].to_pylist() == [_urn(9)]
    container = ContainerClient.from_connection_string(
        azurite.connection_string, "tail-checkpoints"
    )
    with container:
        names = [b.name for b in container.list_blobs()]
    assert any("/$default/checkpoint/" in n for n in names), names
    assert loopback.secret not in " ".join(names)


def _lake_workspace(
    azurite: Azurite,
    credential: FakeCredential,
    registry_transport: RegistryTransport,
    state: Path,
) -> mk.Workspace:
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string
    return mk.connect(
        "azure",
        path=state,
        credential=credential,
        registry_transport=registry_transport,
        lake="abfs://main/",
        retry_total=0,
        retry_backoff_factor=0.01,
        send_timeout=5,
    )


@pytest.mark.azurite
def test_a_live_row_is_replaced_by_its_captured_copy(
    azure_ws: mk.Workspace,
    loopback: LoopbackEventHubs,
    azurite: Azurite,
    credential: FakeCredential,
    registry_transport: RegistryTransport,
    tmp_path: Path,
) -> None:
    from azure.storage.blob import ContainerClient

    container = ContainerClient.from_connection_string(azurite.connection_string, "main")
    if container.exists():
        container.delete_container()
    container.create_container()
    ws = _lake_workspace(azurite, credential, registry_transport, tmp_path / "lake-state")
    explorer = HistoryExplorer(ws, live=True)
    try:
        explorer.refresh(block=True)
        assert explorer.events.num_rows == 0
        urn = _urn(42)
        ws.emit(mk.mce(urn, [mk.aspects.ownership(["jdoe"])]))
        deadline = time.monotonic() + ARRIVAL_TIMEOUT
        while explorer.events.num_rows == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert explorer.events["source"].to_pylist() == ["live"]
        assert "not yet captured" in explorer.live_status.value
        # Capture closes its window and writes the event into the lake...
        (event,) = loopback.events
        when = datetime.fromtimestamp(event.enqueued_ms / 1000, UTC)
        record = {
            "SequenceNumber": event.sequence_number,
            "Offset": str(event.offset),
            "EnqueuedTimeUtc": format_enqueued_time(when),
            "SystemProperties": {
                "x-opt-enqueued-time": event.enqueued_ms,
                "x-opt-partition-key": event.partition_key,
                "content-type": event.content_type,
                "message-id": event.message_id,
            },
            "Properties": {},
            "Body": event.body,
        }
        path = capture_path("ehns", "eh-loopback", event.partition, when.replace(second=0))
        container.upload_blob(path, append_events(None, [record]))
        # ...and the feed's next look at the lake swaps the live row for the captured one.
        explorer.live.recheck = 0.2
        deadline = time.monotonic() + ARRIVAL_TIMEOUT
        while explorer.events["source"].to_pylist() != ["captured"]:
            assert time.monotonic() < deadline, explorer.events["source"].to_pylist()
            time.sleep(0.05)
        row = explorer.events.to_pylist()[0]
        assert (row["urn"], row["message_id"]) == (urn, event.message_id)
        assert (
            explorer.live.rows.filter(pc.equal(explorer.live.rows["source"], "live")).num_rows == 0
        )
    finally:
        explorer.close()
        ws.close()
        container.close()
