"""IngestionRunner without a browser: the generated form, Preview, Emit, and problems shown."""

from __future__ import annotations

import html
import sqlite3
import warnings

from metaverse_kit.errors import DamagedFileWarning
from metaverse_kit.widgets import IngestionRunner


def _db(tmp_path):
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.executescript("CREATE TABLE a (id INTEGER PRIMARY KEY); CREATE TABLE b (x TEXT);")
    conn.close()
    return path


def test_the_form_follows_the_sources_config(workspace, tmp_path):
    runner = IngestionRunner(workspace, source="sql", config={"url": "sqlite:///x.db"})
    assert list(runner.inputs)[:3] == ["url", "platform", "database"]
    assert runner.inputs["include_views"].value is True
    runner.inputs["schemas"].value = "main, other"
    runner.inputs["include_views"].value = False
    config = runner.config
    assert config["url"] == "sqlite:///x.db" and config["env"] == "PROD"
    assert config["schemas"] == ["main", "other"] and config["include_views"] is False
    assert "platform" not in config  # an empty optional input is left out
    runner.source_picker.value = "files"
    assert "path" in runner.inputs and "url" not in runner.inputs
    assert type(runner.inputs["connection_string"]).__name__ == "Password"
    assert runner.widget is not None


def test_preview_then_emit(workspace, tmp_path):
    db = _db(tmp_path)
    runner = IngestionRunner(
        workspace, source="sql", config={"url": f"sqlite:///{db}"}, pipeline_name="shop"
    )
    runner.preview_button.click()
    assert runner.report is not None and runner.report.dry_run
    assert "Preview: 2 entities: 2 added" in runner.message.value
    assert "shop.a" in runner.changes.value and "schemaMetadata" in runner.changes.value
    assert workspace.replay(progress=False).num_rows == 0
    runner.emit_button.click()
    assert "2 events emitted" in runner.message.value
    assert runner.progress.value == 2 and runner.progress.bar_style == "success"
    assert workspace.replay(progress=False).num_rows == 2
    runner.emit()
    assert "Nothing to emit" in runner.changes.value


def test_problems_are_shown_not_raised(workspace, tmp_path):
    runner = IngestionRunner(workspace, source="sql", config={"url": "sqlite:///nowhere.db"})
    assert runner.preview() is None
    assert "no SQLite database" in runner.message.value
    assert runner.progress.bar_style == "danger"
    runner.inputs["url"].value = ""
    runner.emit()
    assert "source.config.url: required" in runner.message.value


def test_a_warning_of_the_run_is_shown_under_its_report(torn_workspace, tmp_path):
    db = _db(tmp_path)
    runner = IngestionRunner(torn_workspace, source="sql", config={"url": f"sqlite:///{db}"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none is given as a Python warning
        runner.emit_button.click()
    assert "2 events emitted" in runner.message.value
    assert runner.warnings
    assert all(isinstance(w, DamagedFileWarning) for w in runner.warnings)
    for w in runner.warnings:
        assert f"⚠ {html.escape(str(w))}" in runner.message.value


def test_events_for_unchanged_entities_are_explained(workspace, tmp_path):
    """A lake that held what the source reports, written by no pipeline of it: the run emits
    an event per entity to own them, which "Nothing to emit" beside "2 events" contradicted."""
    import metaverse_kit as mk

    db = _db(tmp_path)
    recipe = {"source": {"type": "sql", "config": {"url": f"sqlite:///{db}"}}}
    preview = mk.ingest(workspace, {**recipe, "pipeline_name": "shop"}, dry_run=True)
    workspace.emit([{**e, "systemMetadata": None} for e in preview.events])
    runner = IngestionRunner(
        workspace, source="sql", config={"url": f"sqlite:///{db}"}, pipeline_name="shop"
    )
    runner.emit()
    assert "2 unchanged" in runner.message.value and "2 events emitted" in runner.message.value
    assert "Nothing changed" in runner.changes.value
    assert "emitted 2 events all the same" in html.unescape(runner.changes.value)
    runner.emit()
    assert "Nothing to emit" in runner.changes.value
