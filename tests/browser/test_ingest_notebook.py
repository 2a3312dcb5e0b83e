"""The ingestion notebook in a real browser: the IngestionRunner's Preview and Emit, clicked."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from lab_driver import NotebookRun
from playwright.sync_api import Locator

import metaverse_kit as mk

pytestmark = pytest.mark.browser

NOTEBOOK = "05_ingest.ipynb"


def _wait_for(run: NotebookRun, text: Callable[[], str], pattern: str, what: str) -> str:
    deadline = time.monotonic() + 20
    while not re.search(pattern, shown := text()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not appear within 20 s; the widget says:\n{shown}")
        run.page.wait_for_timeout(100)
    return shown


def test_ingestion_runner_previews_and_emits(run_notebook: Callable[..., NotebookRun]) -> None:
    run = run_notebook(NOTEBOOK)
    outputs = run.page.locator(".jp-NotebookPanel .jp-OutputArea-output")
    preview = outputs.locator("button.widget-button").filter(
        has_text=re.compile(r"^\s*Preview\s*$")
    )
    preview.first.evaluate("b => b.closest('.widget-vbox').dataset.mkRunner = 'ingest'")
    runner: Locator = run.page.locator('[data-mk-runner="ingest"]')
    emit = runner.locator("button.widget-button").filter(has_text=re.compile(r"^\s*Emit\s*$"))

    # The form generated from the files source's config, filled by the notebook.
    source = runner.get_by_label("Source", exact=True)
    assert source.input_value() == "files"
    path = runner.get_by_label("path", exact=True)
    assert path.input_value().endswith("ingest-demo/lake-files")
    assert runner.get_by_label("row_counts", exact=True).is_checked()

    def text() -> str:
        return "\n".join(runner.locator(".widget-html").all_inner_texts())

    # Add a file the notebook did not ingest, so the Preview has something to show.
    folder = run.server.root / "ingest-demo" / "lake-files" / "reference"
    (folder / "currencies.csv").write_text("code,name\nNOK,Norwegian krone\n")
    preview.first.click()
    shown = _wait_for(run, text, r"(?s)Preview: .*1 added.*currencies\.csv", "the preview")
    assert "lake-files/reference/currencies.csv" in shown
    assert "added schemaMetadata" in shown
    run.screenshot("preview", element=runner)
    with mk.connect(path=run.server.workspace) as ws:
        urn = mk.make_dataset_urn("file", "lake-files/reference/currencies.csv")
        events = ws.replay(progress=False)
        assert mk.history.latest_aspect(events, urn, "schemaMetadata") is None  # a preview only

    emit.first.click()
    _wait_for(run, text, r"Run files-.*1 added.*1 events emitted", "the run's report")
    progress = runner.locator(".widget-hprogress, .widget-progress").first
    assert progress.is_visible()
    run.check()
    run.screenshot("emitted", element=runner)
    with mk.connect(path=run.server.workspace) as ws:
        schema = mk.history.latest_aspect(ws.replay(progress=False), urn, "schemaMetadata")
    assert [f["fieldPath"] for f in schema["fields"]] == ["code", "name"]
