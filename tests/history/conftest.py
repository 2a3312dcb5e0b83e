"""Fixtures of the history tests: a lake that tells which Capture files a replay opened."""

from __future__ import annotations

import pytest

import metaverse_kit as mk
from metaverse_kit.backends.local.lake import LocalLake
from metaverse_kit.backends.protocols import CaptureFile


class CountingLake:
    """A lake that records which files replay opened: pruning happens before reading, and a
    cache hit opens nothing."""

    def __init__(self, inner: LocalLake) -> None:
        self.inner = inner
        self.root = inner.root
        self.opened: list[str] = []

    def list_files(self, **kw: object) -> list[CaptureFile]:
        return self.inner.list_files(**kw)  # type: ignore[arg-type]

    def read_bytes(self, file: CaptureFile) -> bytes:
        self.opened.append(file.path)
        return self.inner.read_bytes(file)

    def close(self) -> None:
        pass


@pytest.fixture
def counting_lake(workspace: mk.Workspace) -> CountingLake:
    """The workspace's lake, counting the files it is asked to read."""
    return CountingLake(workspace.lake)  # type: ignore[arg-type]
