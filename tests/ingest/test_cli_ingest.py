"""``metaverse ingest RECIPE.yml [--dry-run] [--replace]``: output and exit status 0 / 1 / 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from ingest_helpers import run_sql, sqlite_url

import metaverse_kit as mk
from metaverse_kit.cli import main


def _recipe(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "recipe.yml"
    path.write_text(body)
    return path


def test_ingest_dry_run_then_for_real(tmp_path, shop_db, capsys):
    ws = tmp_path / "ws"
    recipe = _recipe(
        tmp_path,
        f"pipeline_name: shop\nsource:\n  type: sql\n  config:\n    url: {sqlite_url(shop_db)}\n",
    )
    assert main(["--workspace", str(ws), "ingest", str(recipe), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "+ urn:li:dataset:(urn:li:dataPlatform:sqlite,shop.orders,PROD)" in out
    assert "added   schemaMetadata" in out
    assert "[dry run]" in out and "events: 4 would emit" in out
    with mk.connect(path=ws) as workspace:
        assert workspace.replay(progress=False).num_rows == 0

    assert main(["--workspace", str(ws), "ingest", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "entities: 4 seen, 4 added" in out and "events: 4 emitted" in out
    run_sql(shop_db, "ALTER TABLE refunds ADD COLUMN reason TEXT;")
    assert main(["--workspace", str(ws), "ingest", str(recipe), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "~ urn:li:dataset:(urn:li:dataPlatform:sqlite,shop.refunds,PROD)" in out
    assert "fields[fieldPath=reason]" in out


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("source:\n  type: sql\n  config:\n    url: sqlite:///nowhere.db\n", "no SQLite database"),
        ("source:\n  type: sql\n  config:\n    urll: x\n", "did you mean 'url'?"),
        ("source:\n  type: warp-drive\n", "unknown source 'warp-drive'"),
        ("sink: {}\n", "source: required"),
    ],
)
def test_bad_recipes_and_unreachable_sources_exit_2_with_the_reason(
    tmp_path, capsys, body, message
):
    recipe = _recipe(tmp_path, body)
    assert main(["--workspace", str(tmp_path / "ws"), "ingest", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metaverse ingest: error: ") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_failed_rows_exit_1_and_replace_is_for_csv_only(tmp_path, shop_db, capsys):
    edits = tmp_path / "edits.csv"
    edits.write_text("resource,tags\nnot-a-urn,[x]\n")
    recipe = _recipe(tmp_path, f"source:\n  type: csv\n  config:\n    path: {edits}\n")
    assert main(["--workspace", str(tmp_path / "ws"), "ingest", str(recipe), "--replace"]) == 1
    assert "edits.csv line 2: resource: Invalid URN" in capsys.readouterr().out
    sql = _recipe(tmp_path, f"source:\n  type: sql\n  config:\n    url: {sqlite_url(shop_db)}\n")
    assert main(["--workspace", str(tmp_path / "ws"), "ingest", str(sql), "--replace"]) == 2
    assert "--replace applies to the csv source" in capsys.readouterr().err
