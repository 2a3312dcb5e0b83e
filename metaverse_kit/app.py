"""``metaverse app``: the steward app (``notebooks/steward_app.ipynb``) served with Voila.

What the server does, and why:

- it binds 127.0.0.1 only: reach it from elsewhere through an SSH tunnel or a reverse proxy
  that adds its own sign-in;
- it asks for a token (a random one unless given), printed with the URL; a request without it
  is refused (403). An empty token (which Voila takes as "no sign-in"), or one with spaces or
  control characters (which no link carries intact), is refused;
- it runs Voila in the notebook's folder, reading Jupyter's configuration folders only: a
  ``voila.json`` or ``voila.py`` in the folder the command started in (a checkout, a download)
  was read, and could change the server (its headers, template, hooks) or run code in it;
- a visitor may pick the theme with ``?theme=light`` or ``?theme=dark``; any other value is
  refused (400): Voila writes it unescaped into the page, so a link carrying markup there would
  run script in the page of a steward whose browser holds the token's cookie. The template
  cannot be picked (``?template=`` is ignored): a junk one served a blank page or an error 500;
- it serves only the app's notebook and refuses a workspace folder that is not one (a mistyped
  path would be served as a new, empty workspace, and a folder of other files made into one);
- Voila stops with the ``metaverse app`` process that started it, even one killed outright
  (Linux): left behind, it kept serving and held the port;
- Voila strips every code cell and starts one kernel per page visit; kernels idle for
  ``cull_idle`` seconds (a closed tab) are shut down, checked every ``cull_interval`` seconds;
- each kernel opens the workspace the server names (``METAVERSE_HOME``) and, on Azure, signs in
  with the server's ``DefaultAzureCredential``: every visitor acts as the server's identity.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaverse_kit.errors import ConfigurationError, MissingDependencyError

__all__ = ["AppServer", "app_command", "app_notebook", "check_port", "run_voila"]

_NOTEBOOK = "steward_app.ipynb"
# The themes a visitor may pick with ``?theme=`` (and the operator with --theme).
_THEMES = ("light", "dark")
# How app_command starts Voila: with the request check below (a Voila prelaunch hook, which only
# Python configuration can set). NOTE: ``-P`` keeps the current folder off sys.path, so a file
# there named like a module (voila.py, a metaverse_kit/ checkout) does not replace it.
_LAUNCH = "from metaverse_kit.app import run_voila; run_voila()"


def app_notebook() -> Path:
    """The steward app's notebook: ``notebooks/`` of the source tree, or the installed copy.

    Raises :class:`ConfigurationError` when neither exists.
    """
    candidates = [
        Path(__file__).resolve().parents[1] / "notebooks" / _NOTEBOOK,
        Path(sys.prefix) / "share" / "metaverse-kit" / "notebooks" / _NOTEBOOK,
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigurationError(
        f"The steward app's notebook is not installed (looked in {', '.join(map(str, candidates))})"
        "; install metaverse-kit from its source tree (pip install -e .)"
    )


def new_token() -> str:
    """A random token for the app's URL."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class AppServer:
    """How the app is served: port, token (a random one unless given), workspace, planner,
    theme and kernel culling."""

    port: int = 8866
    # NOTE: random, not "": Voila serves an empty token to anyone, without a sign-in.
    token: str = field(default_factory=new_token)
    workspace: Path | None = None
    planner: str | None = None
    theme: str = "light"
    cull_idle: int = 900
    cull_interval: int = 60

    @property
    def url(self) -> str:
        """The address to open, token included."""
        # NOTE: quoted: a token with '+', '&', '#' or '%' printed as it is named another token
        # ('+' reads as a space), and the link was refused.
        suffix = f"?token={urllib.parse.quote(self.token, safe='')}" if self.token else ""
        return f"http://127.0.0.1:{self.port}/{suffix}"


def app_command(server: AppServer, *, notebook: Path | None = None) -> list[str]:
    """The Voila command line serving the app as ``server`` says.

    Raises :class:`MissingDependencyError` (with the pip line) when Voila is not installed, and
    :class:`ConfigurationError` for a port or theme out of range, a token that is empty or not
    one word, or a planner that does not load.
    """
    import importlib.util

    if importlib.util.find_spec("voila") is None:
        raise MissingDependencyError("The steward app", ["voila"], extra="app")
    _check_port_range(server.port)
    _check_token(server.token)
    if server.theme not in _THEMES:
        raise ConfigurationError(f"the theme is 'light' or 'dark', not {server.theme!r}")
    if server.planner:
        from metaverse_kit.widgets.steward_app import load_planner

        # NOTE: a mistyped planner is the operator's error now, not a failed page for every
        # steward; the pages' own loading is checked below, once the workspace is.
        load_planner(server.planner)
    if server.workspace is not None:
        _check_workspace(server.workspace)
    # NOTE: absolute: Voila runs in the notebook's folder (see serve).
    where = Path(os.path.abspath(notebook or app_notebook()))
    if server.planner:
        _check_planner_as_pages_load_it(server, where.parent)
    return [
        sys.executable,
        "-P",
        "-c",
        _LAUNCH,
        str(where),
        "--no-browser",
        "--Voila.ip=127.0.0.1",
        f"--Voila.port={server.port}",
        "--Voila.port_retries=0",
        f"--Voila.token={server.token}",
        "--VoilaConfiguration.strip_sources=True",
        "--VoilaConfiguration.show_tracebacks=False",
        f"--VoilaConfiguration.theme={server.theme}",
        f"--MappingKernelManager.cull_idle_timeout={server.cull_idle}",
        f"--MappingKernelManager.cull_interval={server.cull_interval}",
        "--MappingKernelManager.cull_connected=False",
        # NOTE: a visitor may pick the dark theme with ?theme=dark (run_voila refuses others).
        "--VoilaConfiguration.allow_theme_override=YES",
        "--VoilaConfiguration.allow_template_override=NO",
    ]


def _check_token(token: str) -> None:
    """Raise :class:`ConfigurationError` for a token that is empty, or not one word.

    NOTE: an unset variable (``--token "$APP_TOKEN"``) gave "", which Voila takes as "no
    sign-in": anyone who could reach the port used the app. A space, newline or other control
    character does not survive a link or a copy and paste, so the printed URL did not work.
    """
    if not token.strip():
        raise ConfigurationError(
            "--token is empty (an unset variable?), which would serve the app without a "
            "sign-in: give the token visitors must give, or leave the option out for a random one"
        )
    odd = [c for c in token if c.isspace() or not c.isprintable()]
    if odd:
        raise ConfigurationError(
            f"--token holds {odd[0]!a}: a token is one word of printable characters, as "
            "links carry it; give another, or leave the option out for a random one"
        )


def _check_port_range(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigurationError(f"--port must be between 1 and 65535, not {port}")


def check_port(port: int) -> None:
    """Raise :class:`ConfigurationError` when ``port`` cannot be served on 127.0.0.1 now: in
    use by another program, or reserved (below 1024) for a privileged one.

    NOTE: Voila found it taken only after the URL was printed, which then named the other
    program's server (a visitor's token went to it), and said "trying another port" while it
    tried none.
    """
    _check_port_range(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # NOTE: as Tornado binds: a port whose last connections are closing is free for it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why = "is in use on 127.0.0.1 (another program, or the app already running)"
            elif exc.errno in (errno.EACCES, errno.EPERM):
                why = "is reserved for privileged programs (ports below 1024)"
            else:
                why = f"cannot be used: {exc.strerror or exc}"
            raise ConfigurationError(
                f"--port {port} {why}: choose another --port, a free one from 1024 to 65535"
            ) from None


def _check_workspace(path: Path) -> None:
    """Raise :class:`ConfigurationError` when the local workspace ``path`` is not there.

    NOTE: each page's kernel opens the workspace, which creates it when missing: a mistyped
    path was served as a new, empty one (stewards saw no history and emitted into it), and an
    existing folder of other files was made into one. Azure keeps the history in the cloud;
    its local folder (the outbox) may be created.
    """
    from metaverse_kit.backends.local.factory import existing_settings
    from metaverse_kit.config import default_backend

    if path.exists() and not path.is_dir():
        # NOTE: said so, not "Cannot use <path>/config.toml: a part of the path is a file".
        raise ConfigurationError(f"The workspace path {path} is a file, not a workspace folder")
    if default_backend(workspace=path) == "local":
        existing_settings(path)


def _check_planner_as_pages_load_it(server: AppServer, folder: Path) -> None:
    """Load the planner in a new interpreter as a page's kernel does (in ``folder``, the
    notebook's, with the server's environment); :class:`ConfigurationError` when it fails.

    NOTE: the planner loading in this process is not enough: a module found through the
    current folder (``python -m metaverse_kit.cli app``) was not found by the pages, whose
    kernels start in the notebook's folder, and every steward's page failed.
    """
    code = (
        "import sys\n"
        "from metaverse_kit.errors import MetaverseError\n"
        "from metaverse_kit.widgets.steward_app import load_planner\n"
        "try:\n"
        "    load_planner(sys.argv[1])\n"
        "except MetaverseError as exc:\n"
        "    sys.exit(str(exc))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(server.planner)],
        cwd=folder,
        env=app_environment(server),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise ConfigurationError(
            f"{why[0]} (in the app's pages, which start in {folder}, not in this folder); "
            "install the planner's package, or put its folder on PYTHONPATH"
        )


def _check_request(handler: Any, notebook: Any = None, cwd: str | None = None) -> Any:
    """Refuse (HTTP 400) a page request whose ``?theme=`` is not ``light`` or ``dark``.

    A Voila prelaunch hook (see :func:`run_voila`); returns None, leaving the notebook as it is.
    """
    import tornado.web

    theme = handler.get_argument("theme", None)
    if theme is not None and theme not in _THEMES:
        raise tornado.web.HTTPError(400, reason="the theme is 'light' or 'dark'")
    return None


def run_voila(argv: list[str] | None = None) -> None:
    """Run Voila with ``argv`` (default: this process's arguments), refusing page requests
    with a ``?theme=`` other than ``light`` or ``dark`` (HTTP 400).

    What :func:`app_command`'s command line runs.
    """
    from jupyter_core.paths import jupyter_config_path
    from traitlets.config import Config
    from voila.app import Voila

    _stop_with_parent()
    config = Config()
    config.VoilaConfiguration.prelaunch_hook = _check_request
    # NOTE: Voila also reads voila.json and voila.py from the folder it runs in, before these:
    # a stray one there changed the served app (headers, template, hooks) or ran its code.
    config.Voila.config_file_paths = jupyter_config_path()
    Voila.launch_instance(argv=sys.argv[1:] if argv is None else argv, config=config)


# The environment variable through which serve() tells Voila its pid.
_PARENT = "METAVERSE_APP_PARENT"


def _stop_with_parent() -> None:
    """Linux: have the kernel send this process SIGTERM (Voila's clean stop) when the process
    that started it (``$METAVERSE_APP_PARENT``) ends, even when it was killed outright."""
    parent = os.environ.pop(_PARENT, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(parent):  # it ended before the line above: no signal will come
        sys.exit(0)


# Variables naming paths, or lists of them, that the Voila server or its kernels read.
_PATH_LISTS = ("PYTHONPATH", "JUPYTER_CONFIG_PATH", "JUPYTER_PATH")
_PATHS = ("METAVERSE_CONFIG", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR")


def app_environment(server: AppServer, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the Voila server and its kernels: the workspace and the planner, and
    ``PYTHONPATH``, ``METAVERSE_CONFIG`` and Jupyter's path variables with relative paths made
    absolute."""
    env = dict(os.environ if environ is None else environ)
    # NOTE: Voila and the kernels run in the notebook's folder, not in this one: a relative
    # path in these would name another file or folder there (a planner not found, another
    # config).
    for name in _PATH_LISTS:
        if env.get(name):
            env[name] = os.pathsep.join(
                os.path.abspath(p) if p else os.getcwd() for p in env[name].split(os.pathsep)
            )
    for name in _PATHS:
        if env.get(name):
            env[name] = os.path.abspath(env[name])
    if server.workspace is not None:
        env["METAVERSE_HOME"] = os.path.abspath(server.workspace)
    if server.planner:
        env["METAVERSE_PLANNER"] = server.planner
    return env


def serve(server: AppServer, *, ready: Callable[[], object] | None = None) -> int:
    """Run the app until interrupted (Ctrl-C or SIGTERM); returns Voila's exit status.

    Raises as :func:`app_command` and :func:`check_port` do, before ``ready`` is called (the
    command line prints the URL there: only once every option has been checked).
    """
    import signal

    notebook = app_notebook()
    command = app_command(server, notebook=notebook)
    check_port(server.port)
    if ready is not None:
        ready()
    env = app_environment(server)
    env[_PARENT] = str(os.getpid())
    # NOTE: in the notebook's folder (where its kernels start), not in this one: Voila reads
    # files from the folder it runs in (nbconvert's templates, for one).
    process = subprocess.Popen(command, env=env, cwd=notebook.parent)
    # NOTE: stopping this process (a service manager's SIGTERM) stops Voila and its kernels too.
    previous = signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
