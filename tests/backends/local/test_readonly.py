"""A workspace the user cannot write: every read works, every write fails with one line.

The tests run as root here, whom ``chmod`` does not stop. So the reading process runs with the
capabilities that let root ignore file modes dropped (``setpriv``, util-linux): the kernel then
refuses its writes to the ``chmod a-w`` workspace exactly as it refuses another user's. As any
other user, ``chmod`` alone does it.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.demo import emit_sample_history
from tests.conftest import python_as_other_user

# Runs in the unprivileged process; prints one JSON object with what it saw.
_READER = r"""
import contextlib, io, json, sys, warnings
from pathlib import Path
warnings.simplefilter("error")
import metaverse_kit as mk
from metaverse_kit.cli import main
from metaverse_kit.widgets import HistoryExplorer, SchemaBrowser

root, out_dir = sys.argv[1], Path(sys.argv[2])
seen = {}

def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--workspace", root, *argv])
    return [code, out.getvalue(), err.getvalue()]

with open(out_dir / "probe", "w") as f:
    f.write("the output folder is writable")
try:
    open(Path(root) / "probe", "w")
    seen["root_can_write"] = True
except PermissionError:
    seen["root_can_write"] = False

seen["schemas_list"] = cli("schemas", "list")
seen["schemas_show"] = cli("schemas", "show", "com.linkedin.pegasus2avro.mxe.MetadataChangeEvent")
seen["replay"] = cli("replay", "--out", str(out_dir / "history.parquet"))
seen["doctor"] = cli("doctor")
with mk.connect(path=root) as ws:
    table = ws.replay(progress=False)
    seen["rows"] = table.num_rows
    seen["cached"] = sorted(p.name for p in (out_dir / "xdg" / "metaverse-kit").rglob("*"))
    props = ws.registry.get_schema_properties(ws.schema_group, ws.schema_definition())
    seen["registry"] = [
        ws.registry.get_schema(props.id).properties.name,
        ws.registry.get_group(ws.schema_group).compatibility,
        ws.registry.list_schemas(ws.schema_group),
        ws.registry.list_versions(ws.schema_group, props.name),
    ]
    browser = SchemaBrowser(ws)
    browser.select(ws.schema_group, props.name)
    seen["browser_fields"] = len(browser.fields())
    explorer = HistoryExplorer(ws)
    explorer.refresh(block=True)
    explorer.select_entity(table["partition_key"][0].as_py())
    seen["explorer"] = [explorer.events.num_rows, explorer.state.num_rows,
                        explorer.entity_trail.num_rows]
    try:
        ws.emit(mk.example_mce())
        seen["emit"] = "sent"
    except mk.errors.ReadOnlyWorkspaceError as exc:
        seen["emit"] = str(exc)
    try:
        ws.registry.register_schema(ws.schema_group, '{"type":"record","name":"X","fields":[]}')
        seen["register"] = "registered"
    except mk.errors.ReadOnlyWorkspaceError as exc:
        seen["register"] = str(exc)
seen["cli_emit"] = cli("emit", "--example")
seen["cli_repair"] = cli("doctor", "--repair")
print(json.dumps(seen))
"""


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def _chmod_tree(root: Path, *, write: bool) -> None:
    for p in [root, *root.rglob("*")]:
        mode = p.stat().st_mode
        bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        p.chmod(mode | stat.S_IWUSR if write else mode & ~bits)


@pytest.fixture
def readonly(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "ws"
    with mk.connect(path=root) as ws:
        emit_sample_history(ws)
        ws.replay(progress=False)  # its own cache is filled (and read-only too, afterwards)
    _chmod_tree(root, write=False)
    yield root
    _chmod_tree(root, write=True)


def test_a_read_only_workspace_reads_and_refuses_writes_in_one_line(
    readonly: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    (out / "xdg").mkdir(parents=True)
    before = _tree(readonly)
    done = python_as_other_user(_READER, str(readonly), str(out), cache=out / "xdg")
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["root_can_write"] is False  # the kernel refuses, as for any other user

    code, text, _ = seen["schemas_list"]
    assert code == 0 and "metadata (compatibility Backward)" in text
    code, text, _ = seen["schemas_show"]
    assert code == 0 and '"name": "MetadataChangeEvent"' in text
    code, text, _ = seen["replay"]
    assert code == 0 and text.startswith("Wrote 41 events to ")
    assert (out / "history.parquet").is_file()
    code, text, _ = seen["doctor"]
    assert code == 0 and text.endswith("is healthy.\n")
    assert seen["rows"] == 41
    assert seen["cached"]  # the replay cache went to the per-user folder
    assert seen["registry"][1:] == ["Backward", [seen["registry"][0]], [1]]
    assert seen["browser_fields"] > 50
    assert seen["explorer"][0] > 41 and seen["explorer"][1] > 0 and seen["explorer"][2] > 0

    folder = f"Cannot write in {readonly / 'outbox'} (permission denied): this workspace is "
    assert seen["emit"].startswith(folder) and "\n" not in seen["emit"]
    assert seen["register"].startswith(f"Cannot write in {readonly / 'registry'} ")
    for code, _, err in (seen["cli_emit"], seen["cli_repair"]):
        assert code == 2
        assert len(err.splitlines()) == 1 and "Cannot write in " in err and "Traceback" not in err
    assert _tree(readonly) == before  # nothing was written, not even a lock file


@pytest.mark.parametrize("umask", [0o027, 0o077])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    """A workspace on a shared drive is readable by whom the umask lets read it: files are not
    left with the 0o600 of the temporary files they are written through."""
    from metaverse_kit.cli import main
    from metaverse_kit.history.export import export_parquet

    before = os.umask(umask)
    try:
        root = tmp_path / "ws"
        with mk.connect(path=root) as ws:
            emit_sample_history(ws)
            ws.replay(progress=False)  # fills the replay cache
            export_parquet(ws.lake, tmp_path / "history", registry=ws.registry)
        assert main(["--workspace", str(root), "replay", "--out", str(tmp_path / "x.parquet")]) == 0
    finally:
        os.umask(before)
    written = [
        root / "workspace.json",
        root / "registry" / "index.json",
        next((root / "registry" / "schemas").iterdir()),
        root / "hub" / "partitions.json",
        next((root / "lake").rglob("*.avro")),
        next((root / "cache" / "replay").rglob("*.arrow*")),
        next((tmp_path / "history" / "_metaverse" / "runs").iterdir()),
        next((tmp_path / "history").rglob("*.parquet")),
        tmp_path / "x.parquet",
    ]
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in written}
    assert modes == dict.fromkeys(modes, oct(0o666 & ~umask))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_doctor_opens_the_files_older_versions_left_owner_only(
    tmp_path: Path, umask: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Versions before 2026-12-03 wrote every file 0o600 whatever the umask: the doctor names
    them and ``--repair`` gives them the umask's mode; under ``umask 077``, which asks for
    0o600, there is nothing to report."""
    from metaverse_kit.cli import main

    before = os.umask(umask)
    try:
        root = tmp_path / "ws"
        with mk.connect(path=root) as ws:
            emit_sample_history(ws)
            ws.replay(progress=False)
        old = [
            root / "workspace.json",
            root / "hub" / "partitions.json",
            *sorted((root / "lake").rglob("*.avro"))[:3],
            next((root / "cache" / "replay").rglob("*.arrow*")),
        ]
        for path in old:
            path.chmod(0o600)
        assert main(["--workspace", str(root), "doctor"]) == (2 if umask == 0o022 else 0)
        out = capsys.readouterr().out
        if umask == 0o077:
            assert "owner-only" not in out and "0600" not in out
            return
        assert f"{len(old)} file(s) in {root} can be read by their owner alone" in out
        assert main(["--workspace", str(root), "doctor", "--repair"]) == 0
        assert f"set {len(old)} owner-only file(s) to mode 0644" in capsys.readouterr().out
        assert main(["--workspace", str(root), "doctor"]) == 0
    finally:
        os.umask(before)
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in old} == {"0o644"}
    with mk.connect(path=root) as ws:  # the workspace reads as before
        assert ws.replay(progress=False).num_rows == 41
