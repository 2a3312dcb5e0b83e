"""The batch emit benchmark runs end to end (timing is not checked: it belongs in the benchmark)."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO


def test_the_emit_benchmark_runs_and_prints_its_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import emit_batch

    assert emit_batch.main(["--events", "500", "--repeat", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("batch emit of 500 built-in MCEs")
    assert [line.split()[0] for line in lines[2:5]] == ["baseline", "checks+encode", "ws.emit"]
    assert all(line.split()[-3].endswith("x") for line in lines[2:5])
    assert "local hub send" in lines[5] and "target ws.emit >= 0.5x" in lines[6]
