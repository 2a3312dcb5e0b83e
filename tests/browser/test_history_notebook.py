"""The history notebook in a real browser: the HistoryExplorer's event table and timeline chart."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lab_driver import NotebookRun

pytestmark = pytest.mark.browser

NOTEBOOK = "03_history.ipynb"

# How many bar marks the timeline has: SVG rects, or on a canvas the coloured pixels (axes, grid
# and labels are grey in both themes, the bars take the categorical palette's colours).
_JS_CHART_BARS = """(embed) => {
  const marks = embed.querySelectorAll("svg .mark-rect path, svg .mark-rect rect");
  if (marks.length) return marks.length;
  const canvas = embed.querySelector("canvas");
  if (!canvas || !canvas.width || !canvas.height) return 0;
  const px = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let coloured = 0;
  for (let i = 0; i < px.length; i += 4) {
    const spread = Math.max(px[i], px[i + 1], px[i + 2]) - Math.min(px[i], px[i + 1], px[i + 2]);
    if (px[i + 3] > 0 && spread > 60) coloured += 1;
  }
  return coloured;
}"""


def test_history_explorer_shows_events_and_timeline(
    run_notebook: Callable[..., NotebookRun],
) -> None:
    run = run_notebook(NOTEBOOK)
    outputs = run.page.locator(".jp-NotebookPanel .jp-OutputArea-output")

    # The notebook ends on the Entity tab (select_entity): go back to Events as a user would.
    events_tab = outputs.get_by_role("tab", name="Events", exact=True)
    assert events_tab.count() == 1, "no single Events tab in the notebook's output"
    events_tab.click()
    # The replay runs in a background thread: the table may arrive after the cells are done.
    table = outputs.locator(".widget-html table").filter(
        has=run.page.locator("th", has_text="Change"), visible=True
    )
    table.first.wait_for(timeout=20_000)
    headers = table.first.locator("th").all_inner_texts()
    for column in ("URN", "Aspect", "Change"):
        assert column in headers, headers
    rows = table.first.locator("tbody tr")
    assert rows.count() > 0, "the event table has no rows"
    assert "urn:li:" in rows.first.inner_text()

    chart = outputs.locator(".vega-embed").first
    chart.wait_for(timeout=20_000)
    box = chart.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 100, box
    # Vega draws after the embed element exists: give it a moment to paint the bars.
    run.page.wait_for_function(
        f"() => ({_JS_CHART_BARS})(document.querySelector('.vega-embed')) > 0", timeout=10_000
    )
    run.check()
    run.screenshot()
    explorer = events_tab.locator("xpath=ancestor::div[contains(@class, 'widget-vbox')][1]")
    run.screenshot("explorer", element=explorer)
