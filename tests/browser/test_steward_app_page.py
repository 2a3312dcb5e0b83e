"""The steward app in a real browser: ``metaverse app`` (Voila) on a free port, with a token.

One server for the module (a kernel per page visit, as visitors get). The page is driven as a
steward would: compose and emit an MCE from a template entity, upload a CSV of 20 rows with 2
bad ones, emit the 18 valid rows, and see the emitted events in Activity. The Bulk edit tab
has the default row planner (DataHub csv-enricher's columns); the sheet is the one of
``tests/widgets/row_planner.py``.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pytest
from lab_driver import ARTIFACTS
from playwright.sync_api import Browser, Page

import metaverse_kit as mk
from metaverse_kit.demo import emit_sample_history
from tests.conftest import serving_app
from tests.widgets.row_planner import sheet

pytestmark = pytest.mark.browser

START_TIMEOUT = 60.0
UI_TIMEOUT = 60_000  # ms: a kernel starts and the whole notebook runs before widgets show


@dataclass
class App:
    """A running ``metaverse app``."""

    port: int
    token: str
    workspace: Path
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, **query: str) -> str:
        params = "&".join(f"{k}={v}" for k, v in {"token": self.token, **query}.items())
        return f"http://127.0.0.1:{self.port}/?{params}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    base = tmp_path_factory.mktemp("steward-app")
    workspace = base / "workspace"
    with mk.connect(path=workspace) as ws:
        emit_sample_history(ws)
    folders = {name: base / name for name in ("home", "tmp", "jupyter")}
    for folder in folders.values():
        folder.mkdir()
    env = dict(os.environ)
    env.update(
        HOME=str(folders["home"]),
        TMPDIR=str(folders["tmp"]),
        JUPYTER_CONFIG_DIR=str(folders["jupyter"] / "config"),
        JUPYTER_RUNTIME_DIR=str(folders["jupyter"] / "runtime"),
        JUPYTER_DATA_DIR=str(folders["jupyter"] / "data"),
        JUPYTER_PLATFORM_DIRS="1",
        IPYTHONDIR=str(folders["jupyter"] / "ipython"),
    )
    env.pop("PYTHONSTARTUP", None)
    port, token, log = _free_port(), secrets.token_hex(16), base / "app.log"
    command = [sys.executable, "-m", "metaverse_kit.cli", "app", "--workspace", str(workspace)]
    command += ["--port", str(port), "--token", token]
    with serving_app(command, port=port, log=log, timeout=START_TIMEOUT, cwd=base, env=env) as p:
        yield App(port, token, workspace, p, log)


def _open(chromium: Browser, app: App, *, theme: str = "light") -> Page:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(app.url(**({"theme": "dark"} if theme == "dark" else {})))
    page.get_by_text("Metadata steward", exact=True).wait_for(timeout=UI_TIMEOUT)
    page.locator(".lm-TabBar-tab", has_text="Compose").wait_for(timeout=UI_TIMEOUT)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def _tab(page: Page, title: str) -> None:
    page.locator(".lm-TabBar-tab", has_text=title).first.click()
    page.wait_for_timeout(300)


def _shot(page: Page, name: str) -> Path:
    path = ARTIFACTS / f"steward_app-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def _wait_text(page: Page, pattern: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = page.locator("body").inner_text()
        if re.search(pattern, text):
            return text
        page.wait_for_timeout(200)
    pytest.fail(f"{pattern!r} did not show within {timeout:.0f} s; the page says:\n{text[-3000:]}")


def test_a_steward_composes_bulk_edits_and_sees_the_activity(
    app: App, chromium: Browser, tmp_path: Path
) -> None:
    page = _open(chromium, app)
    try:
        # No code: Voila strips the cell's source; only the widgets are on the page.
        html = page.content()
        assert "StewardApp.from_environment" not in html
        code = page.locator(".jp-CodeCell .jp-InputArea, .jp-CodeMirrorEditor, .cm-editor")
        assert code.count() == 0, code.first.evaluate("e => e.outerHTML.slice(0, 300)")
        assert "A local workspace on the server" in page.locator("body").inner_text()
        _shot(page, "light-browse")

        # Compose: the first entity of the catalogue as the template, its latest value, Emit.
        _tab(page, "Compose")
        page.get_by_role("button", name=re.compile("Load latest value")).click()
        _wait_text(page, r"Loaded the latest \w+ of urn:li:")
        emit = page.locator("button.widget-button").filter(has_text=re.compile(r"^\s*Emit\s*$"))
        emit.first.click()
        text = _wait_text(page, r"MCE Published: partition \d+, sequence number \d+")
        partition, sequence = re.search(
            r"MCE Published: partition (\d+), sequence number (\d+)", text
        ).groups()  # type: ignore[union-attr]
        _shot(page, "light-compose")

        # Bulk edit: 20 rows, 2 of them bad.
        _tab(page, "Bulk edit")
        csv_file = tmp_path / "edits.csv"
        csv_file.write_text(sheet())
        # NOTE: the upload widget's file input is not in the page; the button opens a chooser.
        with page.expect_file_chooser() as chooser:
            page.get_by_role("button", name=re.compile("Upload CSV or Excel")).click()
        chooser.value.set_files(str(csv_file))
        _wait_text(page, r"edits\.csv: 20 rows, 18 valid, 2 refused")
        page.get_by_role("button", name=re.compile("Emit 18 valid rows")).click()
        text = _wait_text(page, r"18 emitted, 2 refused")
        assert "resource: Invalid URN 'not-a-urn-4'" in text
        assert "the row sets nothing" in text
        assert page.locator("a[download='edits-results.csv']").count() == 1
        _shot(page, "light-bulk-edit")

        # Activity: what the hub received, the compose and the bulk rows among it.
        _tab(page, "Activity")
        text = _wait_text(page, re.escape(mk.make_dataset_urn("hive", "bulk.t20")))
        assert "Recent history of the entities touched here" in text
        assert "captured" in text
        _shot(page, "light-activity")
        assert page.errors == []  # type: ignore[attr-defined]
    finally:
        page.context.close()

    # Not only words on a page: the events are in the workspace's lake.
    with mk.connect(path=app.workspace) as ws:
        events = ws.replay(progress=False)
    composed = events.filter(
        pc.and_(
            pc.equal(events["partition"], partition),
            pc.equal(events["sequence_number"], int(sequence)),
        )
    )
    assert composed.num_rows == 1
    bulk = pc.match_substring(events["partition_key"], "bulk.t")
    assert pc.sum(bulk).as_py() == 18


def test_dark_theme_and_a_request_without_the_token_is_refused(app: App, chromium: Browser) -> None:
    page = _open(chromium, app, theme="dark")
    try:
        background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        channels = [int(c) for c in re.findall(r"\d+", background)[:3]]
        assert sum(channels) < 3 * 100, background  # a dark page
        _shot(page, "dark-browse")
        _tab(page, "Bulk edit")
        _shot(page, "dark-bulk-edit")
    finally:
        page.context.close()
    # Without the token, or with a wrong one, the app is not served: a login form asks for it.
    for path in ("/", "/?token=wrong", "/?theme=dark"):
        url = f"http://127.0.0.1:{app.port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
            assert response.url.startswith(f"http://127.0.0.1:{app.port}/login"), path
        assert "StewardApp" not in body and "Metadata steward" not in body
