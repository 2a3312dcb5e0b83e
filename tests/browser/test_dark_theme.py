"""The widgets follow JupyterLab's dark theme: no text colour of theirs is hard-coded.

Each widget notebook runs under JupyterLab Dark (set by the server's settings overrides) and is
screenshot; then Lab switches to Light in place, and every visible text element of the widgets must
change colour, and be lighter in the dark theme than in the light one. A colour that stays put in
both themes was set by hand somewhere (an inline style, a ``style=`` trait, a hex in the HTML).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lab_driver import NotebookRun, colours_of, luminance, switched_theme, widget_text_colours

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("notebook", ["02_steward.ipynb", "03_history.ipynb"])
def test_widget_text_follows_the_theme(
    run_notebook: Callable[..., NotebookRun], notebook: str
) -> None:
    run = run_notebook(notebook, theme="dark")
    dark = widget_text_colours(run.page)
    # NOTE: a floor, so that a notebook whose widgets failed to render cannot pass vacuously.
    assert len(dark) >= 20, f"only {len(dark)} text elements found in the widgets: {dark}"

    with switched_theme(run.page, "light"):
        light = colours_of(run.page, [item["id"] for item in dark])

    fixed = [
        f"{item['tag']} {item['text']!r}: {item['color']}"
        for item, colour in zip(dark, light, strict=True)
        if colour == item["color"]
    ]
    assert not fixed, "text keeps its colour in both themes (hard-coded?):\n" + "\n".join(fixed)
    # Styled buttons (primary, success, ...) are the exception: dark text on a light fill in Dark.
    darker = [
        f"{item['tag']} {item['text']!r}: dark {item['color']}, light {colour}"
        for item, colour in zip(dark, light, strict=True)
        if colour and not item["styledButton"] and luminance(item["color"]) <= luminance(colour)
    ]
    assert not darker, "text is not lighter in the dark theme:\n" + "\n".join(darker)
