"""The quickstart notebook runs cleanly in JupyterLab in a real browser."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lab_driver import NotebookRun

pytestmark = pytest.mark.browser


def test_quickstart_runs_in_the_browser(run_notebook: Callable[..., NotebookRun]) -> None:
    run = run_notebook("01_quickstart.ipynb")
    page = run.page
    outputs = page.locator(".jp-NotebookPanel .jp-OutputArea-output")
    # The registry cell prints the built-in group; the emit cell prints where each event landed.
    assert outputs.filter(has_text="metadata").count() > 0
    assert outputs.filter(has_text="landed in").count() > 0
