"""connect() and the Workspace: where it opens, what it says about itself, emit with any schema."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.workspace import partition_key_of


def test_connect_uses_metaverse_home_then_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.environ["METAVERSE_HOME"] = str(tmp_path / "home")
    with mk.connect() as ws:
        assert ws.path == tmp_path / "home" and ws.backend == "local"
    del os.environ["METAVERSE_HOME"]
    monkeypatch.chdir(tmp_path)
    with mk.connect() as ws:
        assert ws.path is not None and ws.path.resolve() == (tmp_path / ".metaverse").resolve()
    assert (tmp_path / ".metaverse" / "workspace.json").is_file()


def test_a_new_workspace_replays_to_an_empty_table(workspace: mk.Workspace) -> None:
    table = workspace.replay()
    assert table.num_rows == 0 and "proposedSnapshot" in table.column_names


def test_repr_says_backend_namespace_and_eventhub(workspace: mk.Workspace) -> None:
    text = repr(workspace)
    assert text.startswith("<Workspace local:")
    assert "namespace='metaverse-local'" in text and "eventhub='metaverse'" in text


def test_settings_are_fixed_at_creation(tmp_path: Path) -> None:
    mk.connect(path=tmp_path / "w", partition_count=2).close()
    with mk.connect(path=tmp_path / "w") as ws:
        assert ws.hub.partition_ids() == ["0", "1"]
    with pytest.raises(mk.ConfigurationError, match="partition_count=8"):
        mk.connect(path=tmp_path / "w", partition_count=8)


def test_unknown_backends_and_options_are_explained(tmp_path: Path) -> None:
    with pytest.raises(mk.ConfigurationError, match="Unknown backend 'cloud'"):
        mk.connect("cloud")
    with pytest.raises(mk.ConfigurationError, match="takes path, namespace"):
        mk.connect(path=tmp_path / "w", colour="blue")
    assert mk.available_backends()["local"] is None


def test_emit_with_a_schema_of_ones_own(workspace: mk.Workspace) -> None:
    schema = {
        "type": "record",
        "name": "Ping",
        "namespace": "ops",
        "fields": [{"name": "urn", "type": "string"}, {"name": "n", "type": "int"}],
    }
    receipts = workspace.emit(
        [{"urn": "urn:li:corpuser:a", "n": i} for i in range(3)], schema=schema
    )
    assert {r.partition_key for r in receipts} == {"urn:li:corpuser:a"}
    assert workspace.registry.list_schemas("metadata") == [mk.MCE_FULL_NAME, "ops.Ping"]
    table = workspace.replay(schema=json.dumps(schema))
    assert table["n"].to_pylist() == [0, 1, 2]
    # Read with the MCE schema, the same events are kept and say why they were not decoded.
    mce_view = workspace.replay()
    assert mce_view.num_rows == 3
    assert "written with schema ops.Ping" in mce_view["decode_error"][0].as_py()
    by_id = workspace.emit({"urn": "u", "n": 9}, schema=receipts[0].schema_id)
    assert by_id[0].schema_id == receipts[0].schema_id


def test_partition_key_of_mces_mcps_and_plain_records() -> None:
    assert partition_key_of(mk.example_mce()) == "urn:li:corpuser:datahub"
    assert partition_key_of({"entityUrn": "urn:li:tag:x"}) == "urn:li:tag:x"
    assert partition_key_of({"n": 1}) is None
