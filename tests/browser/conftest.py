"""Fixtures of the real-browser tests: JupyterLab servers, Debian's Chromium, ``run_notebook``.

The machinery (server start, notebook run, error collection, screenshots) is in ``lab_driver.py``.
Every test here is marked ``browser`` and is skipped, with the reason, when /usr/bin/chromium is
missing (``make chromium`` installs it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from lab_driver import CHROMIUM, THEMES, LabServer, NotebookRun, open_and_run, start_lab
from playwright.sync_api import Browser, sync_playwright


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing; `make chromium` installs Debian's chromium")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], LabServer]]:
    """A function ``lab(theme)`` returning the session's JupyterLab server in that theme.

    Servers start on first use (about 2 s) and are stopped at the end of the session.
    """
    _require_chromium()
    servers: dict[str, LabServer] = {}

    def get(theme: str = "light") -> LabServer:
        if theme not in THEMES:
            raise ValueError(f"unknown theme {theme!r}; use one of {sorted(THEMES)}")
        if theme not in servers:
            servers[theme] = start_lab(tmp_path_factory.mktemp(f"lab-{theme}"), theme)
        return servers[theme]

    try:
        yield get
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (which never downloads a browser here)."""
    _require_chromium()
    # Chromium writes caches and crash reports under HOME: keep them in the session's folder.
    home = tmp_path_factory.mktemp("chromium-home")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            env={**os.environ, "HOME": str(home), "TMPDIR": str(home)},
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def run_notebook(
    lab: Callable[[str], LabServer], chromium: Browser
) -> Iterator[Callable[..., NotebookRun]]:
    """A function ``run_notebook(name, theme="light")``: open, run all, check, screenshot.

    It fails with the traceback text when a cell or a widget callback raised. Pages and kernels are
    closed when the test ends.
    """
    runs: list[NotebookRun] = []

    def run(name: str, *, theme: str = "light") -> NotebookRun:
        result = open_and_run(chromium, lab(theme), name)
        runs.append(result)
        try:
            result.check()
        finally:
            result.screenshot()
        return result

    try:
        yield run
    finally:
        for result in runs:
            result.page.context.close()
            result.server.shutdown_kernels()
