"""Every tutorial notebook runs top to bottom, on a fresh local workspace with the sample history.

``04_azure.ipynb`` needs a real Azure subscription and runs only when the live variables are set.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import metaverse_kit as mk
from metaverse_kit.demo import emit_sample_history

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LIVE = (
    "METAVERSE_LIVE_NAMESPACE",
    "METAVERSE_LIVE_EVENTHUB",
    "METAVERSE_LIVE_SCHEMA_GROUP",
    "METAVERSE_LIVE_LAKE",
)


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    if "azure" in path.name and not all(os.environ.get(v) for v in LIVE):
        pytest.skip(f"{path.name} talks to Azure; set {', '.join(LIVE)} to run it")
    home = tmp_path / "workspace"
    with mk.connect(path=home) as ws:
        emit_sample_history(ws)
    os.environ["METAVERSE_HOME"] = str(home)
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
