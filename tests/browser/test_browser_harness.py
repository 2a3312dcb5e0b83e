"""The browser harness itself: it must fail loudly when a cell or a widget callback raises.

Without these, a harness that silently ran nothing would let every notebook test pass.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from lab_driver import LabServer, NotebookRun, NotebookRunError

pytestmark = pytest.mark.browser


def _write_notebook(folder: Path, name: str, *sources: str) -> str:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, folder / name)
    return name


def test_a_failing_cell_fails_the_run_with_its_traceback(
    lab: Callable[[str], LabServer], run_notebook: Callable[..., NotebookRun]
) -> None:
    name = _write_notebook(
        lab("light").root,
        "harness_cell_error.ipynb",
        "x = 1",
        "raise ValueError('boom from a cell')",
        "print('never printed')",
    )
    with pytest.raises(NotebookRunError, match="boom from a cell"):
        run_notebook(name)


def test_a_failing_widget_callback_is_reported(
    lab: Callable[[str], LabServer], run_notebook: Callable[..., NotebookRun]
) -> None:
    name = _write_notebook(
        lab("light").root,
        "harness_callback_error.ipynb",
        "import ipywidgets as W\n"
        "button = W.Button(description='Explode')\n"
        "def explode(_):\n"
        "    raise ValueError('boom from a callback')\n"
        "button.on_click(explode)\n"
        "button",
    )
    run = run_notebook(name)  # the run itself is clean
    page = run.page
    page.get_by_role("button", name="Explode").click()
    # The traceback reaches Lab's log console, not the cell: the harness listens to the kernel.
    page.wait_for_function("() => window.__mkErrors.length > 0", timeout=10_000)
    with pytest.raises(NotebookRunError, match="boom from a callback"):
        run.check()
