"""``metaverse app``: the steward app (``notebooks/steward_app.ipynb``) served with Voila.

What the server does, and why:

- it binds 127.0.0.1 only: reach it from elsewhere through an SSH tunnel or a reverse proxy
  that adds its own sign-in;
- it asks for a token (a random one unless given), printed with the URL; a request without it
  is refused (403);
- Voila strips every code cell and starts one kernel per page visit; kernels idle for
  ``cull_idle`` seconds (a closed tab) are shut down, checked every ``cull_interval`` seconds;
- each kernel opens the workspace the server names (``METAVERSE_HOME``) and, on Azure, signs in
  with the server's ``DefaultAzureCredential``: every visitor acts as the server's identity.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from metaverse_kit.errors import ConfigurationError, MissingDependencyError

__all__ = ["AppServer", "app_command", "app_notebook"]

_NOTEBOOK = "steward_app.ipynb"


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


@dataclass(frozen=True)
class AppServer:
    """How the app is served: port, token, workspace, planner, theme and kernel culling."""

    port: int = 8866
    token: str = ""
    workspace: Path | None = None
    planner: str | None = None
    theme: str = "light"
    cull_idle: int = 900
    cull_interval: int = 60

    @property
    def url(self) -> str:
        """The address to open, token included."""
        suffix = f"?token={self.token}" if self.token else ""
        return f"http://127.0.0.1:{self.port}/{suffix}"


def app_command(server: AppServer, *, notebook: Path | None = None) -> list[str]:
    """The Voila command line serving the app as ``server`` says.

    Raises :class:`MissingDependencyError` (with the pip line) when Voila is not installed, and
    :class:`ConfigurationError` for a port or theme out of range or a planner that does not load.
    """
    import importlib.util

    if importlib.util.find_spec("voila") is None:
        raise MissingDependencyError("The steward app", ["voila"], extra="app")
    if not 1 <= server.port <= 65535:
        raise ConfigurationError(f"--port must be between 1 and 65535, not {server.port}")
    if server.theme not in ("light", "dark"):
        raise ConfigurationError(f"the theme is 'light' or 'dark', not {server.theme!r}")
    if server.planner:
        from metaverse_kit.widgets.steward_app import load_planner

        # NOTE: loaded here as each page's kernel will (same interpreter and environment): a
        # mistyped planner is the operator's error now, not a failed page for every steward.
        load_planner(server.planner)
    return [
        sys.executable,
        "-m",
        "voila",
        str(notebook or app_notebook()),
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
        # NOTE: a visitor may pick the dark theme with ?theme=dark.
        "--VoilaConfiguration.allow_theme_override=YES",
    ]


def app_environment(server: AppServer, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the Voila server and its kernels: the workspace and the planner."""
    env = dict(os.environ if environ is None else environ)
    if server.workspace is not None:
        env["METAVERSE_HOME"] = str(server.workspace)
    if server.planner:
        env["METAVERSE_PLANNER"] = server.planner
    return env


def new_token() -> str:
    """A random token for the app's URL."""
    return secrets.token_urlsafe(24)


def serve(server: AppServer) -> int:
    """Run the app until interrupted (Ctrl-C or SIGTERM); returns Voila's exit status."""
    import signal

    command = app_command(server)
    process = subprocess.Popen(command, env=app_environment(server))
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
