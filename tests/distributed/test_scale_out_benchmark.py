"""The scale-out benchmark runs end to end on every engine (timing is not checked: it belongs in
the benchmark)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def test_the_scale_out_benchmark_runs_and_prints_its_ratios() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scale_out.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    # NOTE: what the benchmark said, when it fails: check=True would show only its exit status.
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-4000:]}"
    out = done.stdout
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if re.match(r"(local|local-2|spark-[12]|dask-[12]) +[12] +[\d,]+ ", line)
    }
    assert sorted(rows) == ["dask-1", "dask-2", "local", "local-2", "spark-1", "spark-2"]
    assert {row[2] for row in rows.values()} == {"20,000"}, "every engine replays every event"
    assert "WARNING" not in out
    for engine in ("spark", "dask"):
        (line,) = [x for x in out.splitlines() if x.startswith(f"{engine}: speedup 1 -> 2 cores")]
        assert "(target >= 1.7x; this machine's own: " in line and "(target >= 70%)" in line
    assert re.search(r"this machine: two streaming replays .* [\d.]+x one streaming replay", out)
