"""The emit benchmark runs end to end (timing is not checked: it belongs in the benchmark)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_the_emit_benchmark_runs_and_prints_its_ratios() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "emit.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0].startswith("one-event emits: 300 into one window, first and last 30 timed")
    assert [line.split()[0] for line in lines[2:4]] == ["append", "rewrite"]
    assert "(target <= 1.2x)" in lines[4] and "faster than with the whole-file rewrite" in lines[4]
    assert lines[5].startswith("batch emit of 300 built-in MCEs")
    assert [line.split()[0] for line in lines[6:9]] == ["baseline", "checks+encode", "ws.emit"]
    assert all(line.split()[-3].endswith("x") for line in lines[6:9])
    assert "local hub send" in lines[9] and "target ws.emit >= 0.5x" in lines[10]
