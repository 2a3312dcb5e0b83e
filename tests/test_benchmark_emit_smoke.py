"""The batch emit benchmark runs end to end (timing is not checked: it belongs in the benchmark)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_the_emit_benchmark_runs_and_prints_its_ratios() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "emit_batch.py"),
            "--events",
            "500",
            "--repeat",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[1].startswith("batch emit of 500 built-in MCEs")
    assert [line.split()[0] for line in lines[2:5]] == ["baseline", "checks+encode", "ws.emit"]
    assert all(line.split()[-3].endswith("x") for line in lines[2:5])
    assert "local hub send" in lines[5] and "target ws.emit >= 0.5x" in lines[6]
