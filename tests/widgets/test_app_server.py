"""``metaverse app`` as a careless or hostile visitor or operator uses it: junk query parameters,
a workspace path that is not a workspace, a planner only the operator's folder holds."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.app import AppServer, app_command, app_environment
from tests.conftest import REPO, serving_app

pytest.importorskip("voila")

CLI = [sys.executable, "-m", "metaverse_kit.cli", "app"]
START_TIMEOUT = 90.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """A running ``metaverse app`` on an empty workspace: (port, token)."""
    base = tmp_path_factory.mktemp("app-server")
    mk.connect(path=base / "ws").close()
    port, token = _free_port(), secrets.token_hex(16)
    log = base / "app.log"
    command = [*CLI, "--workspace", str(base / "ws"), "--port", str(port), "--token", token]
    with serving_app(command, port=port, log=log, timeout=START_TIMEOUT, cwd=REPO):
        yield port, token


@pytest.mark.parametrize(
    "theme",
    ['x"><img src=x onerror=alert(document.cookie)>', "solarized", "../../etc/passwd"],
)
def test_a_theme_other_than_light_or_dark_is_refused(server: tuple[int, str], theme: str) -> None:
    """Voila wrote ``?theme=`` unescaped into an attribute of the page: a link with markup
    there ran script in the page of any steward whose browser held the token's cookie."""
    port, token = server
    query = urllib.parse.urlencode({"token": token, "theme": theme})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/?{query}", timeout=60)
    assert refused.value.code == 400
    body = refused.value.read().decode()
    assert "the theme is &#39;light&#39; or &#39;dark&#39;" in body
    assert theme not in body and "<img" not in body


def test_the_template_cannot_be_picked_by_a_visitor() -> None:
    """``?template=junk`` served a blank page, ``?template=../..`` an error 500."""
    command = app_command(AppServer(token="t"), notebook=REPO / "notebooks" / "steward_app.ipynb")
    assert "--VoilaConfiguration.allow_template_override=NO" in command


@pytest.mark.parametrize("kind", ["missing", "folder of other files"])
def test_a_workspace_path_that_is_not_a_workspace_is_refused_and_left_alone(
    tmp_path: Path, kind: str
) -> None:
    """A mistyped path was served as a new, empty workspace; a folder of other files was
    made into one (lake/, registry/, workspace.json added beside them)."""
    target = tmp_path / "typo" / "ws"
    if kind != "missing":
        target.mkdir(parents=True)
        (target / "notes.txt").write_text("mine")
    done = subprocess.run(
        [*CLI, "--workspace", str(target), "--port", str(_free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"metaverse app: error: No workspace at {target} (no workspace.json); `metaverse init` "
        "creates one, or --workspace (or $METAVERSE_HOME) names another\n"
    )
    if kind == "missing":
        assert not (tmp_path / "typo").exists()
    else:
        assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_a_workspace_path_with_a_tilde_is_the_home_folders(tmp_path: Path) -> None:
    """``--workspace='~/ws'`` (quoted: no shell expands it) named ``<cwd>/~/ws`` for the
    pages' kernels while the command printed the home folder's."""
    home = tmp_path / "home"
    home.mkdir()
    done = subprocess.run(
        [*CLI, "--workspace", "~/ws", "--port", str(_free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "HOME": str(home)},
    )
    assert done.returncode == 2
    assert f"No workspace at {home / 'ws'} (no workspace.json)" in done.stderr


@pytest.fixture
def planner_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A planner module only in the current folder, which is on sys.path (as with ``python -m
    metaverse_kit.cli app`` run there): its name, and a workspace."""
    name = f"planner_{secrets.token_hex(4)}"
    folder = tmp_path / "operator"
    folder.mkdir()
    (folder / f"{name}.py").write_text((REPO / "tests" / "widgets" / "row_planner.py").read_text())
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    mk.connect(path=tmp_path / "ws").close()
    yield f"{name}:plan", tmp_path / "ws"
    sys.modules.pop(name, None)


def test_a_planner_the_pages_cannot_load_is_refused(planner_here: tuple[str, Path]) -> None:
    """The planner loaded in the command's process, but the pages' kernels start in the
    notebook's folder: every steward's page failed ("There was an error when executing
    cell")."""
    planner, ws = planner_here
    with pytest.raises(mk.ConfigurationError, match="in the app's pages, which start in"):
        app_command(AppServer(workspace=ws, planner=planner))


def test_a_relative_pythonpath_names_the_same_folders_for_the_pages(
    planner_here: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PYTHONPATH=. metaverse app --planner mine:plan``: the kernels, started elsewhere,
    read "." as their own folder."""
    planner, ws = planner_here
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([".", "", "lib"]))
    server = AppServer(workspace=ws, planner=planner)
    assert app_command(server)[:3] == [sys.executable, "-P", "-c"]
    here = os.getcwd()
    assert app_environment(server)["PYTHONPATH"].split(os.pathsep) == [
        here,
        here,
        os.path.join(here, "lib"),
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal")
def test_voila_stops_when_the_app_process_is_killed_outright(tmp_path: Path) -> None:
    """A ``metaverse app`` killed with SIGKILL (the OOM killer, ``kill -9``) left Voila serving,
    its kernels running and the port taken, so the app could not be started again."""
    import signal

    mk.connect(path=tmp_path / "ws").close()
    port = _free_port()
    app = subprocess.Popen(
        [*CLI, "--workspace", str(tmp_path / "ws"), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children = Path(f"/proc/{app.pid}/task/{app.pid}/children")
    voila = None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while voila is None:
            assert app.poll() is None, "metaverse app exited"
            assert time.monotonic() < deadline, "Voila did not start"
            pids = children.read_text().split() if children.exists() else []
            voila = int(pids[0]) if pids else None
            time.sleep(0.1)
        while True:  # serving: the signal is asked for before that
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/voila/static/voila.js", timeout=5
                ):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "Voila did not answer"
                time.sleep(0.2)
        app.send_signal(signal.SIGKILL)
        app.wait()
        deadline = time.monotonic() + 30
        while Path(f"/proc/{voila}").exists() and _state(voila) != "Z":
            assert time.monotonic() < deadline, "Voila still runs after its parent was killed"
            time.sleep(0.1)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
        if voila is not None and Path(f"/proc/{voila}").exists() and _state(voila) != "Z":
            os.kill(voila, signal.SIGKILL)


def _state(pid: int) -> str:
    """The state letter of a process (``Z``: exited, not yet reaped), "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
