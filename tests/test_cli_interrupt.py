"""A Ctrl-C at any moment of a ``metaverse`` command once its command line runs ends it with
exit status 130 (the command's own status once it has ended) and no traceback.

NOTE: not during the package's imports (pyarrow, numpy: the first ~0.3 s): the console script
``metaverse_kit.cli:main`` imports the package before any code of the command line runs, and a
Ctrl-C there still prints Python's traceback (a known gap; a launcher module outside the package
would close it, at the price of a second top-level name in every user's site-packages).

The command runs as the console script ``pyproject.toml`` declares, as pip writes it
(``from MODULE import FUNCTION; sys.exit(FUNCTION())``), in a subprocess. A ``sitecustomize``
put on its path says when Python has started (before that, no code of ours can run), and can
send the SIGINT itself when a given function starts or returns: the moments are then exact, on
a machine however loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

ENTRY = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["metaverse"]
_MODULE, _FUNCTION = ENTRY.split(":")
SCRIPT = f"import sys\nfrom {_MODULE} import {_FUNCTION}\nsys.exit({_FUNCTION}())\n"

HOOK = """\
import os
import sys

_ready = os.environ.pop("MK_TEST_STARTED", "")
if _ready:
    open(_ready, "w").close()
_at = os.environ.pop("MK_TEST_SIGINT_AT", "")
if _at:
    import signal

    _event, _file, _name = _at.split(" ")

    def _profile(frame, event, arg):
        code = frame.f_code
        if event == _event and code.co_name == _name and code.co_filename.endswith(_file):
            sys.setprofile(None)
            os.kill(os.getpid(), signal.SIGINT)

    sys.setprofile(_profile)
"""


def _start(
    tmp_path: Path, *args: str, sigint_at: str | None = None
) -> tuple[subprocess.Popen[str], Path]:
    """``metaverse args`` started with the hook; the process, and the file it creates once
    Python has started."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    started = tmp_path / f"started-{time.monotonic_ns()}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p),
        "MK_TEST_STARTED": str(started),
    }
    if sigint_at is not None:
        env["MK_TEST_SIGINT_AT"] = sigint_at
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    return process, started


def _finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out, err


@pytest.mark.parametrize(
    ("moment", "status"),
    [
        ("call metaverse_kit/cli.py _parser", 130),
        ("call metaverse_kit/cli.py parse_known_args", 130),
        ("call metaverse_kit/cli.py _init", 130),
        ("return metaverse_kit/cli.py main", 0),
    ],
    ids=["parser", "parsing", "command", "after the command"],
)
def test_an_interrupt_at_each_moment_of_a_command(tmp_path: Path, moment: str, status: int) -> None:
    """Ctrl-C while the parser was built or the options parsed printed a KeyboardInterrupt
    traceback; after the command had ended, it replaced the command's exit status."""
    process, _ = _start(tmp_path, "--workspace", str(tmp_path / "ws"), "init", sigint_at=moment)
    code, out, err = _finish(process)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert (code, err) == (status, "")
    assert (tmp_path / "ws").exists() == (status == 0)  # NOTE: interrupted before it was made
    if status == 0:
        assert out.startswith("Workspace ready: ")
