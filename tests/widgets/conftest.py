"""Fixtures for the widget tests: workspaces with history or a failing hub, DataHub's schema.

Widgets are driven without a browser: set ``.value``, call ``button.click()``, read traits, and
replay the lake to see what was emitted.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import ipywidgets.widgets.widget as widget_module
import pytest

import metaverse_kit as mk
from metaverse_kit.backends import load_backend
from metaverse_kit.backends.protocols import OutgoingEvent, Receipt
from metaverse_kit.errors import EmitError, ServiceError

DATAHUB_WHEEL = "acryl_datahub-1.7.0.17-py3-none-any.whl"


@pytest.fixture
def count_widgets() -> Callable[[], int]:
    """How many ipywidgets objects exist now (layouts and styles included)."""
    # NOTE: ipywidgets keeps every live widget in this registry; there is no public counter.
    return lambda: len(widget_module._instances)


class FlakyHub:
    """Wraps a hub and refuses every event whose partition key contains ``refuse``."""

    def __init__(self, hub: Any, refuse: str) -> None:
        self.hub = hub
        self.refuse = refuse
        self.namespace = hub.namespace
        self.name = hub.name

    def partition_ids(self) -> list[str]:
        return self.hub.partition_ids()

    def send(self, events: Sequence[OutgoingEvent], *, schema_ids: Sequence[str]) -> list[Receipt]:
        ok = [i for i, e in enumerate(events) if self.refuse not in e.partition_key]
        receipts = (
            self.hub.send([events[i] for i in ok], schema_ids=[schema_ids[i] for i in ok])
            if ok
            else []
        )
        failures: list[tuple[int, BaseException]] = [
            (i, ServiceError(f"the hub refused {events[i].partition_key}"))
            for i in range(len(events))
            if i not in ok
        ]
        if failures:
            raise EmitError("some events were refused", failures=failures, receipts=receipts)
        return receipts

    def close(self) -> None:
        self.hub.close()


@pytest.fixture
def flaky_workspace(tmp_path: Path, clock: Any) -> Iterator[mk.Workspace]:
    """A local workspace whose hub refuses events of entities whose urn contains ``refuse``."""
    parts = load_backend("local").create(path=tmp_path / "flaky", clock=clock)
    with mk.Workspace(dataclasses.replace(parts, hub=FlakyHub(parts.hub, "refuse"))) as ws:
        yield ws


@pytest.fixture(scope="session")
def datahub_mce(pytestconfig: pytest.Config) -> dict:
    """DataHub's full MetadataChangeEvent schema (about 440 KB), read from its wheel in .cache/."""
    path = pytestconfig.rootpath / ".cache" / DATAHUB_WHEEL
    if not path.is_file():
        pytest.skip(
            f"DataHub's wheel is not at {path}; download it with "
            f"`pip download --no-deps acryl-datahub==1.7.0.17 -d .cache`"
        )
    with zipfile.ZipFile(path) as wheel:
        return json.loads(wheel.read("datahub/metadata/schemas/MetadataChangeEvent.avsc"))


@pytest.fixture
def torn_workspace(workspace: mk.Workspace) -> mk.Workspace:
    """A workspace whose every partition's Capture file has a torn tail (an append cut short).

    Readers stop at the hub's committed length, so replays are whole; the hub appends to none
    of them and warns (``DamagedFileWarning``) as it writes the next events elsewhere.
    """
    for i in range(16):
        workspace.emit(mk.mce(mk.make_dataset_urn("hive", f"seed{i}"), [mk.aspects.status(False)]))
    lake = Path(str(workspace.lake.root))
    files = sorted(lake.rglob("*.avro"))
    assert {f.relative_to(lake).parts[2] for f in files} == set(workspace.hub.partition_ids())
    for f in files:
        f.write_bytes(f.read_bytes() + b"\x02\x40torn")
    return workspace
