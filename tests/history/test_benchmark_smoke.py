"""The replay benchmark runs end to end (timing is not checked: it belongs in `make bench`)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_the_benchmark_runs_and_prints_its_ratios() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "replay.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0].startswith("history: 2,000 events in ")
    rows = lines[2:14]
    kinds = [line.split()[0] for line in rows]
    assert kinds == [
        "baseline",
        "cold-nocache",
        "cold-nocache*",
        "cold",
        "warm",
        "stream@2,000",
        "stream@8,000",
        "evolved",
        "evolved-fields",
        "older",
        "quiet-baseline",
        "quiet",
    ]
    assert all(line.split()[1] in ("2,000", "8,000") for line in rows[:10])
    # 200 files of 0-2 events: a fifth empty, the rest one or two events each.
    assert [line.split()[1] for line in rows[10:]] == ["240", "240"]
    assert "x without the cache" in out and "(target 30x)" in out and "(target 10x)" in out
    assert "when fields must be resolved" in out and "(target 0.8x)" in out
    assert "quiet hub (200 files of 0-2 events) / its baseline: " in out
    assert "were not decoded" not in out
