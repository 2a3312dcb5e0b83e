"""Drive notebooks in a real browser: JupyterLab served on 127.0.0.1, Debian's Chromium.

The fixtures that use this module live in ``conftest.py`` (``lab``, ``chromium``, ``run_notebook``).

A session starts one JupyterLab server per theme ("light", "dark") on first use. Each server owns a
temporary folder with a copy of ``notebooks/``, a local workspace holding the sample history (the
kernel finds it through ``METAVERSE_HOME``), and every Jupyter and IPython folder, so nothing is
written to the home folder or the repository except the screenshots in ``test-artifacts/``.
The notebooks run on one server share its workspace (as they do under ``make lab``), so a test
must not count on an exact number of events.

The ``run_notebook`` fixture opens a notebook, waits for a connected idle kernel, runs all cells,
waits until every cell has run, fails with the traceback text if a cell or a widget callback raised,
and saves a screenshot of the whole notebook. Known-good options and pitfalls:
``../shared/notes/browser-tests.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Locator, Page

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")

#: JupyterLab themes by the short names the tests use.
THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}

#: Seconds to wait for the server, the kernel, and a whole "run all cells".
SERVER_TIMEOUT = 30.0
KERNEL_TIMEOUT = 30.0
RUN_TIMEOUT = 45.0

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _overrides(theme: str) -> dict[str, Any]:
    """Settings that keep a headless run from blocking on a dialog, a toast or a lazy cell."""
    return {
        "@jupyterlab/apputils-extension:themes": {"theme": THEMES[theme]},
        "@jupyterlab/apputils-extension:notification": {
            "fetchNews": "false",
            "checkForUpdates": False,
            "doNotDisturbMode": True,
        },
        "@jupyterlab/apputils-extension:sessionDialogs": {"skipKernelRestartDialog": True},
        "@jupyterlab/notebook-extension:tracker": {
            # Without it a "Select Kernel" dialog waits forever.
            "autoStartDefaultKernel": True,
            # NOTE: the default ("contentVisibility") leaves off-screen cells unrendered, so widgets
            # below the fold would have no size and the screenshot would show blank cells.
            "windowingMode": "none",
            "kernelShutdown": False,
        },
    }


class LabServerError(RuntimeError):
    """JupyterLab did not start: its log's last lines are in the message."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LabServer:
    """A JupyterLab server serving a temporary copy of ``notebooks/`` in one theme."""

    theme: str
    base: Path
    port: int
    token: str
    process: subprocess.Popen[bytes]
    log: Path
    root: Path = field(init=False)
    workspace: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.base / "notebooks"
        self.workspace = self.base / "workspace"

    @property
    def url(self) -> str:
        """The server's base URL (no token)."""
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, name: str) -> str:
        """The URL opening ``name`` alone in a fresh Lab layout (``reset`` drops earlier tabs)."""
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"

    def api(self, method: str, path: str) -> Any:
        """Call the server's REST API; returns the decoded JSON body (``None`` when empty)."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Stop every kernel, so one test's kernel does not compete with the next for the CPUs."""
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for failure messages."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the server (kernels included), then kill it if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_lab(base: Path, theme: str) -> LabServer:
    """Prepare ``base`` (notebooks, sample workspace, Jupyter folders); start JupyterLab on it."""
    import metaverse_kit as mk
    from metaverse_kit.demo import emit_sample_history

    root = base / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    with mk.connect(path=base / "workspace") as ws:
        emit_sample_history(ws)

    jupyter = base / "jupyter"
    settings = jupyter / "app-settings"
    settings.mkdir(parents=True)
    (settings / "overrides.json").write_text(json.dumps(_overrides(theme), indent=2))
    home = base / "home"
    tmp = base / "tmp"
    for folder in (home, tmp):
        folder.mkdir()

    env = dict(os.environ)
    env.update(
        METAVERSE_HOME=str(base / "workspace"),
        JUPYTER_CONFIG_DIR=str(jupyter / "config"),
        JUPYTER_RUNTIME_DIR=str(jupyter / "runtime"),
        JUPYTER_DATA_DIR=str(jupyter / "data"),
        JUPYTER_PLATFORM_DIRS="1",
        IPYTHONDIR=str(jupyter / "ipython"),
        MPLCONFIGDIR=str(jupyter / "matplotlib"),
        HOME=str(home),
        TMPDIR=str(tmp),
    )
    # The kernel inherits this environment; a user's PYTHONSTARTUP must not run in it.
    env.pop("PYTHONSTARTUP", None)
    port = _free_port()
    token = secrets.token_hex(16)
    log = base / "jupyterlab.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.app_settings_dir={settings}",
        f"--LabApp.user_settings_dir={jupyter / 'user-settings'}",
        f"--LabApp.workspaces_dir={jupyter / 'workspaces'}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--ServerApp.terminals_enabled=False",
        "--LanguageServerManager.autodetect=False",
        "--LabApp.expose_app_in_browser=True",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = LabServer(theme=theme, base=base, port=port, token=token, process=process, log=log)
    deadline = time.monotonic() + SERVER_TIMEOUT
    while True:
        if process.poll() is not None:
            raise LabServerError(
                f"JupyterLab exited with code {process.returncode} before it was ready:\n"
                f"{server.log_tail()}"
            )
        try:
            server.api("GET", "/api/status")
            return server
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                server.stop()
                raise LabServerError(
                    f"JupyterLab did not answer on port {port} within {SERVER_TIMEOUT:.0f} s:\n"
                    f"{server.log_tail()}"
                ) from None
            time.sleep(0.2)


class NotebookRunError(AssertionError):
    """A notebook did not run cleanly in the browser: a cell or a callback raised, or it hung."""


# JavaScript run in the page. ``window.jupyterapp`` exists thanks to ``expose_app_in_browser``.
_JS_KERNEL_READY = """async () => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.sessionContext) return "no notebook panel";
  await panel.sessionContext.ready;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  if (!kernel) return "no kernel";
  return kernel.connectionStatus + "/" + kernel.status;
}"""

# Records every error the kernel publishes, including those from widget
# callbacks, which JupyterLab sends to its log console rather than to a cell.
_JS_LISTEN = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  window.__mkErrors = [];
  panel.sessionContext.iopubMessage.connect((_, msg) => {
    if (msg.header.msg_type === "error") {
      window.__mkErrors.push(msg.content.traceback.join("\\n") ||
                             msg.content.ename + ": " + msg.content.evalue);
    }
  });
}"""

_JS_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.model.cells;
  let pending = 0, code = 0;
  const errors = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== "code") continue;
    code += 1;
    if (cell.executionCount === null) pending += 1;
    for (const out of cell.outputs.toJSON()) {
      if (out.output_type === "error") {
        errors.push({cell: i, text: (out.traceback || []).join("\\n")});
      }
    }
  }
  const busyPrompts = Array.from(document.querySelectorAll(".jp-InputPrompt"))
    .filter(p => p.textContent.includes("[*]")).length;
  return {
    kernel: kernel ? kernel.status : "none",
    code, pending, busyPrompts, errors,
    callbackErrors: window.__mkErrors || [],
    broken: Array.from(document.querySelectorAll(".jp-OutputArea-output"))
      .map(o => o.textContent).filter(t => t.includes("Error displaying widget")),
  };
}"""


@dataclass
class NotebookRun:
    """An open, fully run notebook: its Playwright page and the server it runs on."""

    name: str
    theme: str
    page: Page
    server: LabServer
    page_errors: list[str]

    def check(self) -> None:
        """Fail with the traceback text if any cell, widget callback, or the page itself raised."""
        state = self.page.evaluate(_JS_STATE)
        in_cells = {error["text"] for error in state["errors"]}
        problems = [
            *(f"cell {error['cell']}: {error['text']}" for error in state["errors"]),
            # A cell's error also reached the listener; only the others came from callbacks.
            *(f"callback: {text}" for text in state["callbackErrors"] if text not in in_cells),
            *state["broken"],
            *self.page_errors,
        ]
        if problems:
            text = _ANSI.sub("", "\n\n".join(problems))
            raise NotebookRunError(f"{self.name} ({self.theme}) raised in the browser:\n{text}")

    def screenshot(self, label: str | None = None, *, element: Locator | None = None) -> Path:
        """Save ``test-artifacts/<notebook>-<theme>[-label].png``: the notebook, or one element."""
        stem = Path(self.name).stem + f"-{self.theme}" + (f"-{label}" if label else "")
        path = ARTIFACTS / f"{stem}.png"
        if element is None:
            return screenshot(self.page, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        element.screenshot(path=str(path))
        return path


def screenshot(page: Page, path: Path) -> Path:
    """Grow the viewport to the notebook's height (Lab scrolls inside a panel), then shoot."""
    scroll_top = """() => {
      const outer = document.querySelector(".jp-NotebookPanel .jp-WindowedPanel-outer");
      if (outer) outer.scrollTop = 0;
      const cells = document.querySelectorAll(".jp-NotebookPanel .jp-Cell");
      const last = cells.length ? cells[cells.length - 1].getBoundingClientRect().bottom : 0;
      const status = document.querySelector("#jp-main-statusbar");
      return Math.ceil(last + (status ? status.getBoundingClientRect().height : 0) + 24);
    }"""
    height = page.evaluate(scroll_top)
    width = page.viewport_size["width"] if page.viewport_size else 1280
    # A 1280 x 30000 PNG takes about a second; beyond that the bottom is cut off.
    page.set_viewport_size({"width": width, "height": max(800, min(int(height), 30000))})
    # Lab relayouts on resize through a debounced handler; let it settle, then undo its scrolling.
    page.wait_for_timeout(400)
    page.evaluate(scroll_top)
    page.wait_for_timeout(100)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def _wait(
    page: Page, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = page.evaluate(_JS_STATE)
        if predicate(state):
            return
        page.wait_for_timeout(200)
    raise NotebookRunError(
        f"timed out after {timeout:.0f} s waiting for {what}; last state {state}"
    )


def open_and_run(browser: Browser, server: LabServer, name: str) -> NotebookRun:
    """Open ``name`` on ``server``, wait for its kernel, run all cells, and wait until all ran.

    Raises :class:`NotebookRunError` (or Playwright's ``TimeoutError`` while Lab loads) when the
    kernel or the run does not finish in time, after saving a
    screenshot ``<notebook>-<theme>-failed.png``. Errors raised by the cells are not raised here:
    :meth:`NotebookRun.check` reports them.
    """
    if not (server.root / name).exists():
        raise FileNotFoundError(f"no notebook {name} in {NOTEBOOKS}")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(f"page error: {exc}"))
    try:
        _load_and_run(page, server, name)
    except Exception:
        # What the page showed is the quickest way to see why (a dialog, a stuck cell).
        with contextlib.suppress(Exception):
            screenshot(page, ARTIFACTS / f"{Path(name).stem}-{server.theme}-failed.png")
        context.close()
        raise
    return NotebookRun(
        name=name, theme=server.theme, page=page, server=server, page_errors=page_errors
    )


def _load_and_run(page: Page, server: LabServer, name: str) -> None:
    page.goto(server.notebook_url(name))
    page.wait_for_selector(".jp-NotebookPanel", timeout=KERNEL_TIMEOUT * 1000)
    # The file browser takes a fifth of the width and shows nothing the tests look at.
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    page.wait_for_selector(f'body[data-jp-theme-name="{THEMES[server.theme]}"]', state="attached")
    deadline = time.monotonic() + KERNEL_TIMEOUT
    status = page.evaluate(_JS_KERNEL_READY)
    while status != "connected/idle":
        if time.monotonic() > deadline:
            raise NotebookRunError(
                f"the kernel of {name} was not idle within {KERNEL_TIMEOUT:.0f} s (last: {status})"
                f"\n{server.log_tail()}"
            )
        page.wait_for_timeout(200)
        status = page.evaluate(_JS_KERNEL_READY)
    page.evaluate(_JS_LISTEN)
    # Clearing resets every execution count, so "no cell without a count" can only mean "all ran"
    # (a notebook saved with outputs would otherwise look finished before it started).
    page.evaluate(
        """async () => {
          await window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs');
          // Not awaited: the promise only settles when the last cell ends, and a cell waiting on
          // input() would hang the evaluate without a timeout. The model is polled instead.
          window.jupyterapp.commands.execute('notebook:run-all-cells');
        }"""
    )
    _wait(
        page,
        # After an error Lab skips the remaining cells, so they never get a count.
        lambda s: (
            (s["pending"] == 0 or bool(s["errors"]))
            and s["busyPrompts"] == 0
            and s["kernel"] == "idle"
        ),
        f"every cell of {name} to run",
        RUN_TIMEOUT,
    )
    # A cell can leave comm messages (widget state) in flight after the last reply: let them land.
    page.wait_for_timeout(300)
    _wait(page, lambda s: s["kernel"] == "idle", "the kernel to settle", RUN_TIMEOUT)


# Marks every visible text-bearing element inside a widget with an id, and returns its colour.
_JS_WIDGET_TEXT = """() => {
  const found = [];
  let next = 0;
  for (const el of document.querySelectorAll(".jp-OutputArea-output .jupyter-widgets, "
                                              + ".jp-OutputArea-output .jupyter-widgets *")) {
    const ownText = Array.from(el.childNodes)
      .some(n => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
    if (!ownText && !el.matches("input[type=text], input[type=number], select, textarea")) continue;
    const box = el.getBoundingClientRect();
    if (!box.width || !box.height) continue;  // in a closed accordion or a hidden tab
    if (!el.dataset.mkTextId) el.dataset.mkTextId = String(next++);
    const button = el.closest("button");
    found.push({
      id: el.dataset.mkTextId,
      text: (el.value || el.textContent).trim().slice(0, 50),
      tag: el.tagName.toLowerCase(),
      // A styled button (primary, success, ...) is white on its own colour in every theme.
      styledButton: !!(button && /\\bmod-(primary|success|info|warning|danger)\\b/
                                  .test(button.className)),
      color: getComputedStyle(el).color,
    });
  }
  return found;
}"""

_JS_COLOURS_BY_ID = """(ids) => ids.map(id => {
  const el = document.querySelector('[data-mk-text-id="' + id + '"]');
  return el ? getComputedStyle(el).color : null;
})"""


def widget_text_colours(page: Page) -> list[dict[str, Any]]:
    """Every visible text element inside the page's widgets: id, text, tag, computed colour."""
    return list(page.evaluate(_JS_WIDGET_TEXT))


def colours_of(page: Page, ids: list[str]) -> list[str | None]:
    """The current computed text colour of the elements ``widget_text_colours`` marked."""
    return list(page.evaluate(_JS_COLOURS_BY_ID, ids))


@contextmanager
def switched_theme(page: Page, theme: str) -> Iterator[None]:
    """Switch the open Lab to ``theme`` for the ``with`` block, then back to the server's theme.

    Lab saves the choice in the server's user settings, so without switching back every later
    page on that server would open in the wrong theme.
    """
    original = next(
        short for short, name in THEMES.items() if name == page.evaluate(_JS_THEME_NAME)
    )
    _switch_theme(page, theme)
    try:
        yield
    finally:
        _switch_theme(page, original)


_JS_THEME_NAME = "() => document.body.dataset.jpThemeName"


def _switch_theme(page: Page, theme: str) -> None:
    """Switch the open Lab to ``theme`` ("light" or "dark") and wait until its CSS applies."""
    before = page.evaluate(
        "() => getComputedStyle(document.body).getPropertyValue('--jp-layout-color0')"
    )
    page.evaluate(
        "(name) => window.jupyterapp.commands.execute('apputils:change-theme', {theme: name})",
        THEMES[theme],
    )
    page.wait_for_function(
        """([name, before]) => document.body.dataset.jpThemeName === name &&
             getComputedStyle(document.body).getPropertyValue('--jp-layout-color0') !== before""",
        arg=[THEMES[theme], before],
        timeout=10_000,
    )
    # Widgets restyle on the next frame after the theme's variables change.
    page.wait_for_timeout(200)


def luminance(css_colour: str) -> float:
    """Relative luminance (0 black .. 1 white) of a computed ``rgb(...)``/``rgba(...)`` colour."""
    parts = re.findall(r"[\d.]+", css_colour)
    if len(parts) < 3:
        raise ValueError(f"not an rgb() colour: {css_colour!r}")

    def channel(value: str) -> float:
        c = float(value) / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(p) for p in parts[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b
