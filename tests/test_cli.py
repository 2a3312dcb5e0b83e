"""The ``metaverse`` command: each subcommand, exit codes, and one-line user errors."""

from __future__ import annotations

import json
import os
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
    # A partition of the hub that captured nothing: an empty answer, and a warning line.
    [empty, *_] = sorted({"0", "1", "2", "3"} - set(table["partition"].to_pylist()))
    args = ["--workspace", str(home), "replay", "--partition", empty, "--out", str(target)]
    code, out, err = run(capsys, *args)
    assert code == 0 and "Wrote 0 events" in out
    assert err.startswith(f"metaverse replay: warning: No Capture file of partition '{empty}'")
    assert len(err.splitlines()) == 1


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


# -- every user error: exit 2, one line, no traceback ---------------------------------------------

_MCE = "com.linkedin.pegasus2avro.metadata.snapshot."


def _user_mce(urn: str, aspect: dict | None = None, snapshot: str = "CorpUserSnapshot") -> dict:
    aspect = aspect or {"com.linkedin.pegasus2avro.identity.CorpUserInfo": {"active": True}}
    return {
        "auditHeader": None,
        "proposedSnapshot": {_MCE + snapshot: {"urn": urn, "aspects": [aspect]}},
    }


def _schema(**changes: object) -> dict:
    return {"type": "record", "name": "P", "namespace": "x", **changes}


#: name -> (argv after "--workspace WS", files to write {name: text or bytes}, words in the error)
BAD_INPUTS: dict[str, tuple[list[str], dict[str, object], tuple[str, ...]]] = {
    "no command": ([], {}, ("required",)),
    "unknown command": (["bogus"], {}, ("invalid choice",)),
    "emit without a source": (["emit"], {}, ("--file", "--example")),
    "emit a missing file": (["emit", "--file", "{d}/none.json"], {}, ("no such file",)),
    "emit a folder": (["emit", "--file", "{d}"], {}, ("folder, not a file",)),
    "emit []": (["emit", "--file", "{d}/e.json"], {"e.json": "[]"}, ("empty list",)),
    "emit 42": (["emit", "--file", "{d}/n.json"], {"n.json": "42"}, ("JSON number", "not an MCE")),
    "emit a string": (["emit", "--file", "{d}/s.json"], {"s.json": '"x"'}, ("JSON string",)),
    "emit null": (["emit", "--file", "{d}/z.json"], {"z.json": "null"}, ("JSON null",)),
    "emit [1, 2]": (["emit", "--file", "{d}/l.json"], {"l.json": "[1, 2]"}, ("item 0",)),
    "emit non-UTF-8": (["emit", "--file", "{d}/b.json"], {"b.json": b"\xff\xfe{}"}, ("UTF-8",)),
    "emit a lone surrogate": (
        ["emit", "--file", "{d}/u.json"],
        {"u.json": '"\\ud800"'},
        ("JSON string",),
    ),
    "emit bad JSON": (["emit", "--file", "{d}/j.json"], {"j.json": "{"}, ("not valid JSON",)),
    "emit a key given twice": (
        ["emit", "--file", "{d}/k.json"],
        {"k.json": '{"auditHeader": null, "auditHeader": null}'},
        ("gives the key 'auditHeader' twice",),
    ),
    "an empty --workspace": (
        ["emit", "--example", "--workspace", ""],
        {},
        ("--workspace is empty",),
    ),
    "replay a partition the hub does not have": (
        ["replay", "--partition", "99", "--out", "{d}/x.parquet"],
        {},
        ("no partition 99",),
    ),
    "a lone surrogate in a urn": (
        ["emit", "--file", "{d}/su.json"],
        {"su.json": json.dumps(_user_mce("urn:li:corpuser:\ud800"))},
        ("proposedSnapshot.urn", "lone surrogate"),
    ),
    "a NUL in a name": (
        ["emit", "--file", "{d}/nul.json"],
        {"nul.json": json.dumps(_user_mce("urn:li:corpuser:a\x00b"))},
        ("proposedSnapshot.urn", "NUL"),
    ),
    "not a urn at all": (
        ["emit", "--file", "{d}/nu.json"],
        {"nu.json": json.dumps(_user_mce("not a urn at all"))},
        ("proposedSnapshot.urn", "urn:li:"),
    ),
    "a dataset snapshot with a corpuser urn": (
        ["emit", "--file", "{d}/du.json"],
        {
            "du.json": json.dumps(
                _user_mce(
                    "urn:li:corpuser:x",
                    {"com.linkedin.pegasus2avro.common.Status": {"removed": False}},
                    "DatasetSnapshot",
                )
            )
        },
        ("proposedSnapshot.urn", "urn:li:dataset:"),
    ),
    "a field that does not exist": (
        ["emit", "--file", "{d}/f.json"],
        {
            "f.json": json.dumps(
                _user_mce(
                    "urn:li:corpuser:x",
                    {"com.linkedin.pegasus2avro.identity.CorpUserInfo": {"active": 1}},
                )
            )
        },
        ("proposedSnapshot.aspects[0].active",),
    ),
    "register a missing file": (
        ["schemas", "register", "{d}/none.avsc"],
        {},
        ("Cannot read", "no such file"),
    ),
    "register non-UTF-8": (["schemas", "register", "{d}/b.avsc"], {"b.avsc": b"\xff"}, ("UTF-8",)),
    "register duplicate fields": (
        ["schemas", "register", "{d}/dup.avsc"],
        {"dup.avsc": json.dumps(_schema(fields=[{"name": "a", "type": "int"}] * 2))},
        ("already in use",),
    ),
    "register the name 1bad-name": (
        ["schemas", "register", "{d}/bn.avsc"],
        {"bn.avsc": json.dumps(_schema(name="1bad-name", fields=[]))},
        ("1bad-name", "not a valid Avro name"),
    ),
    "register a record without fields": (
        ["schemas", "register", "{d}/nf.avsc"],
        {"nf.avsc": json.dumps(_schema())},
        ("fields",),
    ),
    "register a bad default": (
        ["schemas", "register", "{d}/bd.avsc"],
        {"bd.avsc": json.dumps(_schema(fields=[{"name": "a", "type": "int", "default": "x"}]))},
        ("Default value",),
    ),
    "register text that is not JSON": (
        ["schemas", "register", "{d}/t.avsc"],
        {"t.avsc": "record P"},
        ("not valid JSON",),
    ),
    "register into the group ..": (
        ["schemas", "register", "{d}/ok.avsc", "--group", ".."],
        {"ok.avsc": json.dumps(_schema(fields=[]))},
        ("schema group name", "starts with a letter or digit"),
    ),
    "register into a group with a space": (
        ["schemas", "register", "{d}/ok.avsc", "--group", "my group"],
        {"ok.avsc": json.dumps(_schema(fields=[]))},
        ("schema group name",),
    ),
    "show an unknown schema": (["schemas", "show", "nope"], {}, ("nope",)),
    "show a version that does not exist": (
        ["schemas", "show", "com.linkedin.pegasus2avro.mxe.MetadataChangeEvent", "--version", "9"],
        {},
        ("versions 1 to 1",),
    ),
    "show a version that is not a number": (
        ["schemas", "show", "x", "--version", "latest"],
        {},
        ("invalid int",),
    ),
    "list an unknown group": (["schemas", "list", "--group", "nope"], {}, ("does not exist",)),
    "replay to a CSV file": (["replay", "--out", "{d}/x.csv"], {}, (".parquet",)),
    "replay since soon": (
        ["replay", "--since", "soon", "--out", "{d}/x.parquet"],
        {},
        ("ISO 8601",),
    ),
    "replay without --out": (["replay"], {}, ("--out",)),
    "replay to a folder named .parquet": (
        ["replay", "--out", "{d}/spark-output.parquet"],
        {"spark-output.parquet/part-00000.parquet": "x"},
        ("spark-output.parquet is a folder", "without the .parquet suffix"),
    ),
    "replay a partition no hub has": (
        ["replay", "--partition", "x", "--out", "{d}/x.parquet"],
        {},
        ("--partition names partition 'x'", "whole numbers 0 to n-1"),
    ),
    "a workspace that is a file": (
        ["--workspace", "{d}/afile", "schemas", "list"],
        {"afile": "x"},
        ("is a file, not a folder",),
    ),
    "a workspace under a file": (
        ["init", "--workspace", "{d}/afile2/ws"],
        {"afile2": "x"},
        ("afile2", "not a folder"),
    ),
    "a demo into a folder with files": (
        ["demo", "--path", "{d}"],
        {"keep.txt": "x"},
        ("new or empty folder",),
    ),
}


@pytest.fixture(scope="module")
def bad_input_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    home = tmp_path_factory.mktemp("cli-ws") / "ws"
    mk.connect("local", path=home).close()
    return home, tmp_path_factory.mktemp("cli-inputs")


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_no_traceback(
    case: str, bad_input_home: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    home, folder = bad_input_home
    argv, files, words = BAD_INPUTS[case]
    d = folder / case.replace(" ", "_")
    d.mkdir(exist_ok=True)
    for name, content in files.items():
        target = d / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(str(content), "utf-8", errors="surrogatepass")
    before = sorted(p.name for p in home.rglob("*"))
    code, _, err = run(capsys, "--workspace", str(home), *(a.format(d=d) for a in argv))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(word in lines[0] for word in words), lines[0]
    assert sorted(p.name for p in home.rglob("*")) == before  # nothing written


@pytest.mark.parametrize(
    "argv",
    [["replay", "--out", "x.parquet"], ["replay", "--out", "history"], ["tail"]],
    ids=["replay-to-a-file", "replay-to-a-dataset", "tail"],
)
def test_a_reader_does_not_create_the_workspace_it_was_given(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    """Created empty, a mistyped --workspace would answer "0 events" or wait for ever."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "--workspace", "prdo", *argv)
    assert code == 2 and out == ""
    assert err == (
        f"metaverse {argv[0]}: error: No workspace at prdo (no workspace.json); `metaverse init` "
        "creates one, or --workspace (or $METAVERSE_HOME) names another\n"
    )
    assert list(tmp_path.iterdir()) == []  # no workspace, export folder or file was made


def test_the_table_has_at_least_30_cases() -> None:
    assert len(BAD_INPUTS) >= 30


def test_global_options_go_before_or_after_the_subcommand(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(capsys, "init", "--workspace", str(home))
    assert code == 0 and (home / "workspace.json").is_file()
    for argv in (
        ["schemas", "list", "--workspace", str(home)],
        ["schemas", "--workspace", str(home), "list"],
        ["--workspace", "elsewhere", "schemas", "list", "--workspace", str(home)],
    ):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and mk.MCE_FULL_NAME in out, argv
    assert not Path("elsewhere").exists()


_FULL_AND_READ_ONLY = """
set -e
D=$(mktemp -d)
mount -t tmpfs -o size=2m tmpfs "$D"
"$METAVERSE" --workspace "$D/ws" init > /dev/null
dd if=/dev/zero of="$D/fill" bs=4k 2>/dev/null || true
"$METAVERSE" --workspace "$D/ws" emit --example 2> "$OUT/full.err" && exit 10 \
  || echo $? > "$OUT/full.rc"
rm "$D/fill"
mount -o remount,ro "$D"
"$METAVERSE" --workspace "$D/ws" emit --example 2> "$OUT/ro.err" && exit 11 \
  || echo $? > "$OUT/ro.rc"
"""


def test_a_full_disk_and_a_read_only_workspace_are_one_line_each(tmp_path: Path) -> None:
    """Real ENOSPC and EROFS: a tmpfs in a private mount namespace, filled, then made read-only."""
    import shutil

    unshare = shutil.which("unshare")
    probe = (
        subprocess.run([unshare or "unshare", "-m", "true"], capture_output=True, check=False)
        if unshare
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("needs unshare -m (root, mount namespaces) to make a full or read-only disk")
    script = tmp_path / "run.sh"
    script.write_text(_FULL_AND_READ_ONLY)
    env = {
        **os.environ,
        "METAVERSE": str(Path(sys.executable).with_name("metaverse")),
        "OUT": str(tmp_path),
    }
    result = subprocess.run(
        ["unshare", "-m", "sh", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if "mount:" in result.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    for name, words in (("full", "disk is full"), ("ro", "read-only")):
        assert (tmp_path / f"{name}.rc").read_text().strip() == "2"
        err = (tmp_path / f"{name}.err").read_text()
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert words in err, err
