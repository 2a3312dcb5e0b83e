"""Fixtures of the Azure backend's tests: an in-process Schema Registry, Azurite, live settings.

- ``registry_service`` / ``registry_transport``: the REST service of ``_registry_service.py``
  behind azure-core's ``transport=`` (fails the test if the SDK sent anything unexpected).
- ``azurite``: one Azurite blob emulator per session on a free 127.0.0.1 port, from
  ``.cache/node/node_modules/.bin/azurite-blob`` (``make test-deps`` installs it) or ``PATH``;
  skipped with the reason when neither exists.
- ``loopback``: the AMQP 1.0 endpoint of ``_amqp_endpoint.py`` the real producer talks to.
- ``live``: the settings of a real namespace from ``METAVERSE_LIVE_*``; skipped when unset.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.backends.azure._amqp_endpoint import LoopbackEventHubs
from tests.backends.azure._registry_service import (
    FakeCredential,
    RegistryService,
    RegistryTransport,
)

REPO = Path(__file__).resolve().parents[3]
AZURITE_LOCAL = REPO / ".cache" / "node" / "node_modules" / ".bin" / "azurite-blob"
# The well-known development account of Azurite (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
LIVE_VARIABLES = (
    "METAVERSE_LIVE_NAMESPACE",
    "METAVERSE_LIVE_EVENTHUB",
    "METAVERSE_LIVE_SCHEMA_GROUP",
    "METAVERSE_LIVE_LAKE",
)


@pytest.fixture
def credential() -> FakeCredential:
    """A credential issuing one known opaque token."""
    return FakeCredential()


@pytest.fixture
def registry_service(credential: FakeCredential) -> Iterator[RegistryService]:
    """The in-process Schema Registry with one group, ``metadata`` (Backward)."""
    service = RegistryService(credential)
    service.add_group("metadata")
    yield service
    assert not service.violations, service.violations


@pytest.fixture
def registry_transport(registry_service: RegistryService) -> RegistryTransport:
    """azure-core transport answering from ``registry_service``."""
    return RegistryTransport(registry_service)


@pytest.fixture
def loopback() -> Iterator[LoopbackEventHubs]:
    """A loopback AMQP endpoint playing an Event Hubs namespace (hub ``eh-loopback``)."""
    with LoopbackEventHubs() as endpoint:
        yield endpoint
        assert not endpoint.errors, endpoint.errors
    # NOTE: sockets the SDK abandoned after a dropped connection are collected here, inside the
    # test, where the test module's warning filter for that SDK leak applies.
    gc.collect()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Azurite:
    """A running Azurite blob endpoint."""

    port: int

    @property
    def connection_string(self) -> str:
        """The development account's connection string for this port."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};"
        )


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite's blob service on a free port, for the whole session."""
    exe = str(AZURITE_LOCAL) if AZURITE_LOCAL.exists() else shutil.which("azurite-blob")
    if exe is None:
        pytest.skip(
            "Azurite is not installed: `make test-deps` installs it into .cache/node "
            "(npm install --prefix .cache/node azurite@3.35.0), or put azurite-blob on PATH"
        )
    port = _free_port()
    workdir = tmp_path_factory.mktemp("azurite")
    log = open(workdir / "azurite.log", "wb")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(
        [
            exe,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
        ],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"Azurite exited: {(workdir / 'azurite.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("Azurite did not start listening within 30 s")
                time.sleep(0.1)
        yield Azurite(port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def live() -> dict[str, str]:
    """The live settings (``METAVERSE_LIVE_*``); skips the test when any is missing."""
    missing = [v for v in LIVE_VARIABLES if not os.environ.get(v)]
    if missing:
        pytest.skip(f"live Azure tests need {', '.join(missing)}")
    return {v: os.environ[v] for v in LIVE_VARIABLES}


def upload_lake(azurite: Azurite, lake: Path, container: str) -> Any:
    """A new ``container`` holding a local Capture tree, with the folder markers an HNS account
    shows (blobs that are no Capture file)."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    client = service.get_container_client(container)
    if client.exists():
        client.delete_container()
    client.create_container()
    folders: set[str] = set()
    for path in sorted(lake.rglob("*.avro")):
        name = path.relative_to(lake).as_posix()
        client.upload_blob(name, path.read_bytes())
        parts = name.split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    for folder in folders:
        client.upload_blob(folder, b"", metadata={"hdi_isfolder": "true"})
    return client
