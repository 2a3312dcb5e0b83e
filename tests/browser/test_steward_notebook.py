"""The steward notebook in a real browser: registry groups, a generated form, a click on Emit."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pyarrow.compute as pc
import pytest
from lab_driver import NotebookRun
from playwright.sync_api import Locator

import metaverse_kit as mk

pytestmark = pytest.mark.browser

NOTEBOOK = "02_steward.ipynb"


def _widgets(run: NotebookRun) -> Locator:
    """Everything the notebook's widgets rendered (cell outputs only, not Lab's own UI)."""
    return run.page.locator(".jp-NotebookPanel .jp-OutputArea-output")


def test_steward_notebook_browses_composes_and_emits(
    run_notebook: Callable[..., NotebookRun],
) -> None:
    run = run_notebook(NOTEBOOK)
    outputs = _widgets(run)

    # SchemaBrowser: the group dropdown lists the registry's groups, "metadata" selected.
    group = outputs.get_by_label("Group", exact=True).first
    assert group.input_value() == "metadata"
    assert "metadata" in group.locator("option").all_inner_texts()
    assert outputs.get_by_text("com.linkedin.pegasus2avro.mxe.MetadataChangeEvent").count() > 0

    # EventComposer: a form generated from the MCE schema, with its urn field and branch selectors.
    # NOTE: not get_by_role(name="Emit"): the icon's glyph is part of the button's accessible name.
    emit = outputs.locator("button.widget-button").filter(has_text=re.compile(r"^\s*Emit\s*$"))
    emit = emit.first
    emit.evaluate("button => button.closest('.widget-vbox').dataset.mkComposer = 'emit'")
    composer = run.page.locator('[data-mk-composer="emit"]')
    urn_label = composer.locator(".widget-label", has_text=re.compile(r"^urn\b")).first
    assert urn_label.is_visible()
    urn = urn_label.evaluate("label => label.parentElement.querySelector('input').value")
    assert urn.startswith("urn:li:"), urn
    assert composer.locator(".widget-dropdown select").count() > 0

    # A real click on Emit: the composer reports where the event landed. The notebook may already
    # have emitted from code, so the test waits for a *new* receipt, not just for the words.
    def messages() -> str:
        return "\n".join(composer.locator(".widget-html").all_inner_texts())

    if emit.is_disabled() and "Emit stays off until the form changes" in messages():
        # The notebook emitted this very event from code, and one click is one emit: the button
        # stays off until the form changes. A steward edits it first: here the dataset's name.
        assert urn.endswith(",PROD)"), urn
        urn = urn.removesuffix(",PROD)") + "_copy,PROD)"
        field = urn_label.locator("xpath=..").locator("input").first
        field.fill(urn)
        field.press("Tab")
        deadline = time.monotonic() + 15
        while emit.is_disabled() and time.monotonic() < deadline:
            run.page.wait_for_timeout(100)
    before = messages()
    if emit.is_disabled():
        pytest.fail(f"Emit is disabled after running {NOTEBOOK}; the composer says:\n{before}")
    emit.click()
    deadline = time.monotonic() + 15
    while (after := messages()) == before or "MCE Published" not in after:
        if time.monotonic() > deadline:
            pytest.fail(
                f"no new 'MCE Published' 15 s after clicking Emit; the composer says:\n{after}"
            )
        run.page.wait_for_timeout(100)
    receipt = re.compile(r"partition (\d+), sequence number (\d+)")
    new = set(receipt.findall(after)) - set(receipt.findall(before))
    assert len(new) == 1, f"expected one new receipt after the click, got {new} in:\n{after}"
    ((partition, sequence_number),) = new
    run.check()  # the click's callback raised nothing
    # The message is not just text: the event is in the kernel's workspace lake where it says.
    with mk.connect(path=run.server.workspace) as ws:
        events = ws.replay(progress=False)
    landed = events.filter(
        pc.and_(
            pc.equal(events["partition"], partition),
            pc.equal(events["sequence_number"], int(sequence_number)),
        )
    )
    assert landed.num_rows == 1, f"the composer says {after!r} but the lake has no such event"
    assert landed["partition_key"][0].as_py() == urn
    run.screenshot("emitted", element=composer)
