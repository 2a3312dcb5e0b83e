"""Export folders a careless user names: one whose name is not UTF-8, one that is (or is in, or
holds) the lake it exports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import metaverse_kit as mk
from metaverse_kit.demo import emit_sample_history
from metaverse_kit.history.export import committed_files, export_parquet, read_export
from tests.conftest import REPO

NOT_UTF8 = os.fsdecode(b"out\xff")
CLI = [sys.executable, "-m", "metaverse_kit.cli"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A local workspace holding the sample history."""
    with mk.connect(path=tmp_path / "ws") as ws:
        emit_sample_history(ws)
    return tmp_path / "ws"


def _dask_export(location: Any, out: Any) -> Any:
    pytest.importorskip("dask")
    from metaverse_kit.distributed import dask_export

    return dask_export(location, out)


@pytest.mark.parametrize("export", [export_parquet, _dask_export], ids=["local", "dask"])
def test_an_export_folder_whose_name_is_not_utf8_is_refused_before_anything_is_written(
    home: Path, tmp_path: Path, export: Any
) -> None:
    """pyarrow's dataset writer failed on it after the whole replay, with a UnicodeEncodeError
    naming no path (the CLI printed a traceback and exited 1)."""
    with pytest.raises(mk.ConfigurationError) as refused:
        export(home / "lake", tmp_path / NOT_UTF8)
    assert str(refused.value) == (
        f"The export folder {tmp_path}/out\\xff is not UTF-8 text: Parquet datasets are written "
        "and read through UTF-8 paths (pyarrow, Spark, DuckDB); rename the folder, or use one "
        "whose name is UTF-8"
    )
    assert not (tmp_path / NOT_UTF8).exists()


def test_the_command_line_says_so_in_one_line(home: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "--workspace", str(home), "replay", "--out", str(tmp_path / NOT_UTF8)],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        cwd=REPO,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"metaverse replay: error: The export folder {tmp_path}/out\\xff is not UTF-8 text: "
        "Parquet datasets are written and read through UTF-8 paths (pyarrow, Spark, DuckDB); "
        "rename the folder, or use one whose name is UTF-8\n"
    )
    assert not (tmp_path / NOT_UTF8).exists()


def test_an_export_renamed_to_a_name_that_is_not_utf8_is_named_when_read(
    home: Path, tmp_path: Path
) -> None:
    """read_export (and the history questions, which read exports) failed in pyarrow with a
    UnicodeEncodeError naming no path."""
    export_parquet(home / "lake", tmp_path / "history")
    renamed = tmp_path / NOT_UTF8
    (tmp_path / "history").rename(renamed)
    for read in (read_export, committed_files):
        with pytest.raises(mk.ConfigurationError, match=r"The export folder .*out\\xff is not"):
            read(renamed)
    with pytest.raises(mk.ConfigurationError, match=r"The export folder .*out\\xff is not"):
        mk.history.state_as_of(renamed, "2027-01-01T00:00:00Z")


@pytest.mark.parametrize("where", [".", "exp", "metaverse-local"])
def test_an_export_into_the_lake_is_refused_and_the_lake_left_as_it_was(
    tmp_path: Path, where: str
) -> None:
    """``metaverse replay --out <workspace>/lake`` of a new workspace was taken: Capture then
    wrote its Avro files among the export's, and pandas, pyarrow and Spark failed on them
    ("Parquet magic bytes not found")."""
    home = tmp_path / "ws"
    mk.connect(path=home).close()
    lake = home / "lake"
    before = sorted(lake.rglob("*"))
    with pytest.raises(mk.ConfigurationError) as refused:
        export_parquet(lake, lake / where)
    kind = "the" if where == "." else "inside the"
    assert str(refused.value) == (
        f"The export folder {lake / where} is {kind} lake's folder {lake}: Capture writes its "
        "Avro files in the lake's folders, where Parquet readers of the export (pandas, "
        "pyarrow, Spark) would take them for Parquet files and fail, and every replay would "
        "walk the export's files. Export into a folder outside the lake"
    )
    assert sorted(lake.rglob("*")) == before
    # The command line says the same, in one line.
    done = subprocess.run(
        [*CLI, "--workspace", str(home), "replay", "--out", str(lake / where)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"metaverse replay: error: The export folder {lake / where} is")
    assert sorted(lake.rglob("*")) == before


def test_an_export_that_holds_its_lake_where_readers_see_it_is_refused(
    home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "history"
    export_parquet(home / "lake", out)
    lake = out / "copy" / "lake"
    lake.parent.mkdir()
    (home / "lake").rename(lake)
    with pytest.raises(mk.ConfigurationError, match=r"history holds the lake .*copy/lake: Parquet"):
        export_parquet(lake, out)
    pq.read_table(committed_files(out))  # NOTE: the export as it was, readable


def test_a_lake_in_a_hidden_folder_of_the_export_is_not_refused(tmp_path: Path) -> None:
    """``metaverse replay --out .`` beside the default workspace ``./.metaverse``: readers skip
    folders starting with "." or "_", as the lake's listing does."""
    with mk.connect(path=tmp_path / ".metaverse") as ws:
        emit_sample_history(ws)
    report = export_parquet(tmp_path / ".metaverse" / "lake", tmp_path)
    assert report.rows == 41
    assert pq.read_table(tmp_path).num_rows == 41
