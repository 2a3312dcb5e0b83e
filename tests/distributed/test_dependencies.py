"""Engines are optional: importing the toolkit loads neither, and a missing one says which extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )


def test_importing_the_toolkit_imports_no_engine() -> None:
    result = _run(
        "import sys, metaverse_kit, metaverse_kit.distributed, metaverse_kit.history.export\n"
        "loaded = sorted(m for m in ('pyspark', 'dask', 'distributed') if m in sys.modules)\n"
        "print(loaded)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("blocked", "call", "extra"),
    [
        ("pyspark", "spark_replay(None, '.')", "spark"),
        ("pyspark", "spark_export(None, '.', 'out')", "spark"),
        ("dask", "dask_replay('.')", "dask"),
        ("dask", "dask_export('.', 'out')", "dask"),
    ],
)
def test_a_missing_engine_names_its_extra(blocked: str, call: str, extra: str) -> None:
    # NOTE: a None entry in sys.modules makes `import pyspark` fail as if it were not installed.
    result = _run(
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from metaverse_kit.distributed import *\n"
        "from metaverse_kit.errors import MissingDependencyError\n"
        f"try:\n    {call}\nexcept MissingDependencyError as exc:\n    print(exc)\n"
    )
    assert result.returncode == 0, result.stderr
    assert f'pip install "metaverse-kit[{extra}]"' in result.stdout
