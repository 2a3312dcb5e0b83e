"""Fixtures of the history tests: a lake that tells which Capture files a replay opened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import metaverse_kit as mk
from metaverse_kit.backends.local.lake import LocalLake
from metaverse_kit.backends.protocols import CaptureFile


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the per-user replay cache of the history tests in their temporary folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))


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


# -- schema versions of the built-in MCE ---------------------------------------------------------


def _named(t: Any, short: str) -> dict:
    """The inline definition of the named type ``short`` in a parsed schema."""
    if isinstance(t, dict):
        if t.get("name") == short and t.get("type") in ("record", "enum", "fixed"):
            return t
        for v in t.values():
            if isinstance(v, (dict, list)):
                try:
                    return _named(v, short)
                except KeyError:
                    pass
    if isinstance(t, list):
        for v in t:
            try:
                return _named(v, short)
            except KeyError:
                pass
    raise KeyError(short)


def _dataset_aspects(schema: dict) -> list:
    snapshot = _named(schema, "DatasetSnapshot")
    return next(f for f in snapshot["fields"] if f["name"] == "aspects")["type"]["items"]


def mce_versions() -> tuple[str, str, str]:
    """Three versions of the built-in MCE schema, each Backward compatible with the one before.

    v1: the built-in (a new workspace registers it). v2: GlobalTags gains ``origin`` (default
    ``"steward"``), OwnershipType the symbol ``AUDITOR``, datasets the aspect
    ``com.example.Quality`` (``score``: float). v3: Quality's ``score`` is a double and it gains
    ``checked`` (default false).
    """
    v1 = mk.mce_schema()
    v2 = mk.mce_schema()
    _named(v2, "GlobalTags")["fields"].append(
        {"name": "origin", "type": "string", "default": "steward"}
    )
    _named(v2, "OwnershipType")["symbols"].append("AUDITOR")
    quality = {
        "type": "record",
        "name": "Quality",
        "namespace": "com.example",
        "fields": [{"name": "score", "type": "float"}],
    }
    _dataset_aspects(v2).append(quality)
    v3 = json.loads(json.dumps(v2))
    _named(v3, "Quality")["fields"] = [
        {"name": "score", "type": "double"},
        {"name": "checked", "type": "boolean", "default": False},
    ]
    return tuple(json.dumps(v, separators=(",", ":")) for v in (v1, v2, v3))  # type: ignore[return-value]
