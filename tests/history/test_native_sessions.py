"""The native decoder's DataFusion session keeps nothing per read: a notebook replays for hours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import metaverse_kit as mk

# Run in a process of its own: the memory other tests of this process free and take again
# would hide a few MiB either way.
_READS = """
import sys
from metaverse_kit.history import _decoder

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

data = open(sys.argv[1], "rb").read()
for _ in range(1000):
    _decoder.read_envelope(data)
grown = []
for _ in range(3):
    before = rss_mib()
    for _ in range(1500):
        _decoder.read_envelope(data)
    grown.append(rss_mib() - before)
# A leak grows every round alike; memory the allocator takes once grows one. Three rounds:
# with two, the allocator took 4 MiB in both about one run in eight (at this commit and before).
print(min(grown))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc/self/statm")
def test_native_reads_do_not_grow_the_session(workspace: mk.Workspace) -> None:
    """Every read is of a new temporary file; DataFusion's file statistics cache kept each one
    for the session's life: ~5-20 KB a read for a DataHub-sized schema (more columns, more)."""
    workspace.emit(
        [
            mk.mce(mk.make_dataset_urn("hive", f"db.t{i}"), [mk.aspects.ownership(["u"])])
            for i in range(3)
        ]
    )
    path = next(Path(workspace.lake.root).rglob("*.avro"))  # type: ignore[attr-defined]
    out = subprocess.run(
        [sys.executable, "-c", _READS, str(path)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    grown = float(out.stdout.strip().splitlines()[-1])
    # Measured here: 0.0 MiB a round with the cache off, +8 MiB with DataFusion's default.
    assert grown < 3, grown
