"""``metaverse app`` as a careless operator starts it: from a folder holding someone's
``voila.json``, on a port that is taken, with a token from an empty or odd variable, with a
file for the workspace."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.app import AppServer, app_command, app_environment, check_port
from tests.conftest import REPO, serving_app

pytest.importorskip("voila")

# NOTE: the console script, as a user runs it (``python -m`` puts the current folder on the
# command's own sys.path, which the script does not).
SCRIPT = Path(sys.executable).parent / "metaverse"
CLI = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "metaverse_kit.cli"]
NOTEBOOK = REPO / "notebooks" / "steward_app.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    mk.connect(path=tmp_path / "ws").close()
    return tmp_path / "ws"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_voila_does_not_read_the_configuration_in_the_folder_the_command_starts_in(
    workspace: Path, tmp_path: Path
) -> None:
    """Voila read voila.json and voila.py from the current folder: a stray one there (a
    checkout, a download) changed the served app (here its headers) or ran its code."""
    here = tmp_path / "downloads"
    here.mkdir()
    ran = tmp_path / "voila-py-ran"
    (here / "voila.json").write_text(
        '{"Voila": {"tornado_settings": {"headers": {"X-Stray": "voila.json"}}}}'
    )
    (here / "voila.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    port, token = _free_port(), "t0ken"
    command = [*CLI, "--workspace", str(workspace), "app", "--port", str(port), "--token", token]
    with serving_app(command, port=port, log=tmp_path / "app.log", cwd=here):
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as answered:
            opener.open(f"http://127.0.0.1:{port}/", timeout=60)  # no token: to the sign-in
        answered.value.close()
        assert answered.value.code == 302
        assert answered.value.headers["Location"].startswith("/login")
        assert answered.value.headers["X-Stray"] is None
    assert not ran.exists()


def test_a_port_in_use_is_refused_before_a_url_is_printed(workspace: Path) -> None:
    """Voila found it taken only after the command printed the URL, which named the other
    program's server (a visitor's token went to it), and said "trying another port"."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        done = subprocess.run(
            [*CLI, "--workspace", str(workspace), "app", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"metaverse app: error: --port {port} is in use on 127.0.0.1 (another program, or the "
        "app already running): choose another --port, a free one from 1024 to 65535\n"
    )


def test_a_port_reserved_for_privileged_programs_is_said_so() -> None:
    setpriv = shutil.which("setpriv")
    start = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
    if os.geteuid() != 0 or setpriv is None or not start.exists():
        pytest.skip("needs root with setpriv (util-linux) on Linux")
    if int(start.read_text()) <= 80:
        pytest.skip("this machine lets any user serve port 80")
    caps = "-net_bind_service"
    code = "from metaverse_kit.app import check_port; check_port(80)"
    done = subprocess.run(
        [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.rstrip().splitlines()[-1] == (
        "metaverse_kit.errors.ConfigurationError: --port 80 is reserved for privileged programs "
        "(ports below 1024): choose another --port, a free one from 1024 to 65535"
    )


def test_a_free_port_passes_and_one_out_of_range_is_said_so() -> None:
    check_port(_free_port())
    with pytest.raises(mk.ConfigurationError, match="--port must be between 1 and 65535, not 0"):
        check_port(0)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (
            "",
            "--token is empty (an unset variable?), which would serve the app without a "
            "sign-in: give the token visitors must give, or leave the option out for a random one",
        ),
        (
            "two words",
            "--token holds ' ': a token is one word of printable characters, as links carry it; "
            "give another, or leave the option out for a random one",
        ),
        (
            "t0ken\n",
            "--token holds '\\n': a token is one word of printable characters, as links carry "
            "it; give another, or leave the option out for a random one",
        ),
    ],
)
def test_an_empty_token_or_one_that_is_not_one_word_is_refused(
    workspace: Path, token: str, message: str
) -> None:
    """An unset variable (``--token "$APP_TOKEN"``) was replaced by a random token without a
    word; a token with a space gave a link that did not work."""
    done = subprocess.run(
        [*CLI, "--workspace", str(workspace), "app", "--port", str(_free_port()), "--token", token],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"metaverse app: error: {message}\n"


def test_an_app_server_from_python_has_a_token_unless_given_one() -> None:
    """``AppServer()`` had the token "", which Voila serves to anyone without a sign-in."""
    assert AppServer().token and AppServer().token != AppServer().token
    with pytest.raises(mk.ConfigurationError, match="--token is empty"):
        app_command(AppServer(token=""), notebook=NOTEBOOK)


@pytest.mark.parametrize("token", ["a+b", "a&theme=dark", "x#y", "50%25"])
def test_the_printed_url_carries_the_token_as_it_is(token: str) -> None:
    """A token with '+', '&', '#' or '%' was printed as it is: the link named another token
    ('+' reads as a space) and was refused."""
    url = urllib.parse.urlsplit(AppServer(port=8867, token=token).url)
    assert (url.netloc, url.fragment) == ("127.0.0.1:8867", "")
    assert urllib.parse.parse_qs(url.query) == {"token": [token]}


def test_relative_jupyter_paths_name_the_same_folders_for_voila(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Voila runs in the notebook's folder, not in the command's: a relative path in these
    would name another folder there."""
    monkeypatch.chdir(tmp_path)
    environ = {
        "JUPYTER_CONFIG_PATH": os.pathsep.join(["conf", "/etc/jupyter"]),
        "JUPYTER_CONFIG_DIR": "jupyter",
        "PATH": "bin",  # NOTE: not a path variable Voila reads for its files: left as it is
    }
    env = app_environment(AppServer(workspace=Path("ws")), environ)
    assert env["JUPYTER_CONFIG_PATH"] == os.pathsep.join([str(tmp_path / "conf"), "/etc/jupyter"])
    assert env["JUPYTER_CONFIG_DIR"] == str(tmp_path / "jupyter")
    assert env["METAVERSE_HOME"] == str(tmp_path / "ws")
    assert env["PATH"] == "bin"


def test_a_workspace_that_is_a_file_is_said_so(tmp_path: Path) -> None:
    """It said "Cannot use <file>/config.toml: a part of the path is a file, not a folder"."""
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(mk.ConfigurationError) as refused:
        app_command(AppServer(workspace=notes), notebook=NOTEBOOK)
    assert str(refused.value) == f"The workspace path {notes} is a file, not a workspace folder"
    assert notes.read_text() == "mine"
