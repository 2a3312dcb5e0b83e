"""On Spark Connect (Databricks serverless and shared clusters) the replay, the questions and
the export give what they give on a classic session.

A real Connect server: pyspark's own, started by ``SparkSession.builder.remote("local[2]")`` in
the client's process (:mod:`tests.distributed.connect_client`), reached over gRPC. The client
runs everything once; each test checks one part of what it wrote against the local answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import metaverse_kit as mk
from metaverse_kit.history.export import EVENT_DATE, committed_files
from tests.distributed import connect_client
from tests.distributed.conftest import SORT_KEYS, Lake, assert_same_table

ROOT = Path(__file__).resolve().parents[2]


def _urn_with_most_aspects(table: pa.Table) -> str:
    rows = mk.history.aspects(table)
    counts = rows.group_by("urn").aggregate([("aspect", "count")])
    return counts.sort_by([("aspect_count", "descending")])["urn"][0].as_py()


@pytest.fixture(scope="module")
def connect(
    tmp_path_factory: pytest.TempPathFactory,
    demo_lake: Lake,
    evolved_lake: Lake,
    damaged_lake: Lake,
    request: pytest.FixtureRequest,
) -> tuple[Path, dict[str, Any]]:
    """Run the Connect client once; (the folder it wrote, its results.json)."""
    pyspark = pytest.importorskip("pyspark")
    if int(pyspark.__version__.split(".")[0]) < 4:
        pytest.skip("pyspark 3.5 has no Connect server of its own (it is fetched from Maven)")
    pytest.importorskip("grpc", reason="Spark Connect needs pyspark[connect]")
    out = tmp_path_factory.mktemp("connect")
    demo = mk.replay_capture(demo_lake.root, registry=demo_lake.registry, cache=False)
    lakes: dict[str, Any] = {
        "demo": {"root": str(demo_lake.root), "schemas": demo_lake.schemas},
        "evolved": {"root": str(evolved_lake.root), "schemas": evolved_lake.schemas},
        "damaged": {"root": str(damaged_lake.root), "schemas": damaged_lake.schemas},
    }
    lakes["demo"]["urn"] = _urn_with_most_aspects(demo)
    real = request.getfixturevalue("real_capture")
    lakes["real"] = {"root": str(real), "schemas": {}}
    job = out / "job.json"
    job.write_text(json.dumps({"lakes": lakes, "export": str(out / "history")}))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.distributed.connect_client", str(job), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out, json.loads((out / "results.json").read_text())


def _table(out: Path, name: str) -> pa.Table:
    with pa.memory_map(str(out / f"{name}.arrow")) as source:
        table = pa.ipc.open_file(source).read_all()
    return table.sort_by(SORT_KEYS) if "capture_file" in table.column_names else table


def test_the_session_is_a_connect_session(connect: tuple[Path, dict[str, Any]]) -> None:
    _, results = connect
    assert results["session"] == "pyspark.sql.connect.session.SparkSession"


@pytest.mark.parametrize("name", ["demo", "evolved", "real"])
def test_replays_equal_the_local_replay(
    connect: tuple[Path, dict[str, Any]], name: str, request: pytest.FixtureRequest
) -> None:
    out, results = connect
    if name == "real":
        local = mk.replay_capture(request.getfixturevalue("real_capture"), cache=False)
    else:
        lake = request.getfixturevalue(f"{name}_lake")
        local = mk.replay_capture(lake.root, registry=lake.registry, cache=False)
    assert local.num_rows > 0
    assert_same_table(local, _table(out, f"replay_{name}"))
    assert results[f"duplicates_{name}"] == mk.duplicates_dropped(local)


def test_damaged_files_are_skipped_or_raise_as_locally(
    connect: tuple[Path, dict[str, Any]], damaged_lake: Lake
) -> None:
    out, results = connect
    with pytest.warns(mk.CaptureFileWarning) as caught:
        local = mk.replay_capture(
            damaged_lake.root, registry=damaged_lake.registry, cache=False, on_bad_file="skip"
        )
    assert results["warnings"] == [str(w.message) for w in caught]
    assert_same_table(local, _table(out, "replay_damaged"))
    assert results["skipped"] == connect_client._parts(mk.skipped_files(local))
    assert results["skipped"]
    assert results["duplicates_damaged"] == mk.duplicates_dropped(local) > 0
    with pytest.raises(mk.CaptureFileError) as raised:
        mk.replay_capture(damaged_lake.root, registry=damaged_lake.registry, cache=False)
    assert results["raised"] == ["CaptureFileError", str(raised.value)]


def test_history_questions_equal_the_local_answers(
    connect: tuple[Path, dict[str, Any]], demo_lake: Lake
) -> None:
    out, _ = connect
    local = mk.replay_capture(demo_lake.root, registry=demo_lake.registry, cache=False)
    expected = {
        "state_as_of": mk.history.state_as_of(local, connect_client.WHEN),
        "changes": mk.history.changes(local, connect_client.START, connect_client.END),
        "audit_trail": mk.history.audit_trail(local, _urn_with_most_aspects(local)),
    }
    for name, answer in expected.items():
        assert answer.num_rows > 0, name
        if "event_index" in answer.column_names:
            answer = answer.drop_columns(["event_index"])
        got = _table(out, name)
        assert got.column_names == answer.column_names, name
        assert got.equals(answer.cast(got.schema)), name


def test_the_export_appends_and_then_finds_nothing_new(
    connect: tuple[Path, dict[str, Any]], evolved_lake: Lake
) -> None:
    out, results = connect
    local = mk.replay_capture(evolved_lake.root, registry=evolved_lake.registry, cache=False)
    files = len(list(evolved_lake.root.rglob("*.avro")))
    (run, *counts), (again, *nothing) = results["export"]
    assert run is not None and again is None
    assert counts == [files, local.num_rows, mk.duplicates_dropped(local)]
    assert nothing == [0, 0, 0]
    history = out / "history"
    written = committed_files(history)
    assert written and sorted(written) == sorted(map(str, history.rglob("*.parquet")))
    dataset = pq.read_table(history)
    assert_same_table(local, dataset.drop_columns([EVENT_DATE]).sort_by(SORT_KEYS))
