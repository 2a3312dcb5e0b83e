"""The ``metaverse`` command: each subcommand, exit codes, and one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import metaverse_kit as mk
from metaverse_kit.cli import main


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "ws"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_emit_example_and_schemas(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--workspace", str(home), "init")
    assert code == 0 and "Workspace ready" in out
    code, out, _ = run(capsys, "--workspace", str(home), "emit", "--example")
    assert code == 0
    (line,) = out.splitlines()
    assert line.startswith("MCE Published: partition ")
    assert "sequence number 0, offset 0, schema id " in line
    code, out, _ = run(capsys, "--workspace", str(home), "schemas", "list")
    assert code == 0 and mk.MCE_FULL_NAME in out and "compatibility Backward" in out
    code, out, _ = run(capsys, "--workspace", str(home), "schemas", "show", mk.MCE_FULL_NAME)
    assert code == 0 and out.startswith(f"# {mk.MCE_FULL_NAME} v1")


def test_schemas_register_and_incompatible_versions(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v1 = tmp_path / "p1.avsc"
    v1.write_text(
        json.dumps(
            {
                "type": "record",
                "name": "P",
                "namespace": "x",
                "fields": [{"name": "a", "type": "int"}],
            }
        )
    )
    v2 = tmp_path / "p2.avsc"
    v2.write_text(
        json.dumps(
            {
                "type": "record",
                "name": "P",
                "namespace": "x",
                "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "string"}],
            }
        )
    )
    code, out, _ = run(capsys, "--workspace", str(home), "schemas", "register", str(v1))
    assert code == 0 and "Registered x.P v1" in out
    code, out, err = run(capsys, "--workspace", str(home), "schemas", "register", str(v2))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "field b" in err


def test_emit_file_in_avro_json_and_replay_to_parquet(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [
        mk.to_avro_json(
            mk.mce(mk.make_dataset_urn("hive", f"db.t{i}"), [mk.aspects.global_tags(["PII"])]),
            mk.mce_definition(),
        )
        for i in range(3)
    ]
    source = tmp_path / "events.json"
    source.write_text(json.dumps(events))
    code, out, _ = run(capsys, "--workspace", str(home), "emit", "--file", str(source))
    assert code == 0 and len(out.splitlines()) == 3
    target = tmp_path / "out.parquet"
    code, out, _ = run(
        capsys,
        "--workspace",
        str(home),
        "replay",
        "--since",
        "2000-01-01T00:00:00Z",
        "--out",
        str(target),
    )
    assert code == 0 and "Wrote 3 events" in out
    table = pq.read_table(target)
    assert table.num_rows == 3 and "proposedSnapshot" in table.column_names
    assert table["decode_error"].null_count == 3


def test_user_errors_exit_2_with_one_line(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "auditHeader": None,
                "proposedSnapshot": {
                    "com.linkedin.pegasus2avro.metadata.snapshot.CorpUserSnapshot": {
                        "urn": "urn:li:corpuser:x",
                        "aspects": [
                            {"com.linkedin.pegasus2avro.identity.CorpUserInfo": {"active": "yes"}}
                        ],
                    }
                },
            }
        )
    )
    code, _, err = run(capsys, "--workspace", str(home), "emit", "--file", str(bad))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "proposedSnapshot.aspects[0].active" in err
    code, _, err = run(capsys, "--workspace", str(home), "emit", "--file", str(tmp_path / "no"))
    assert code == 2 and "Cannot read" in err
    code, _, err = run(
        capsys,
        "--workspace",
        str(home),
        "replay",
        "--since",
        "soon",
        "--out",
        str(tmp_path / "x.parquet"),
    )
    assert code == 2 and "ISO 8601" in err
    code, _, _ = run(capsys, "bogus")
    assert code == 2
    assert not (tmp_path / "x.parquet").exists()


def test_demo_runs_headless_as_a_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("metaverse")
    result = subprocess.run(
        [str(script), "demo", "--path", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "events replayed" in result.stdout
    assert "events per partition: 0:" in result.stdout
    assert "aspects written: " in result.stdout and "status 1" in result.stdout
    assert "current state of urn:li:dataset:" in result.stdout
    again = subprocess.run(
        [str(script), "demo", "--path", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 2 and "new or empty folder" in again.stderr
