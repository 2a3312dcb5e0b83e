"""Fixtures all tests share: a fresh local workspace, a simulated clock, real Capture files.

``os.environ`` is restored after every test, so a test that sets ``METAVERSE_HOME`` or an Azure
variable cannot leak it into the next one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import metaverse_kit as mk

REPO = Path(__file__).resolve().parents[1]
REAL_CAPTURE = REPO.parent / "shared" / "fixtures" / "capture-real"


@pytest.fixture(autouse=True)
def _restore_environ(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    saved = dict(os.environ)
    # NOTE: a developer's own ~/.config/metaverse/config.toml must not steer the tests.
    os.environ.setdefault("METAVERSE_CONFIG", os.devnull)
    # NOTE: replays cache decoded files per user; tests must not fill (or read) the real one.
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class SimClock:
    """A clock the local hub reads enqueued times from; tests move it forward by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        """Move forward by ``timedelta(**delta)`` and return the new time."""
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> SimClock:
    """A simulated clock starting 2026-03-02 08:00 UTC."""
    return SimClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))


@pytest.fixture
def workspace(tmp_path: Path, clock: SimClock) -> Iterator[mk.Workspace]:
    """A fresh local workspace in the test's temporary folder, stamped by ``clock``."""
    with mk.connect(path=tmp_path / "ws", clock=clock) as ws:
        yield ws


@pytest.fixture(scope="session")
def real_capture() -> Path:
    """The folder of real Capture files written by Azure (shared/fixtures/capture-real)."""
    if not REAL_CAPTURE.is_dir():
        pytest.skip(f"the real Capture fixtures are not at {REAL_CAPTURE}")
    return REAL_CAPTURE


# The capabilities that let root ignore file modes.
_FILE_MODE_CAPS = "-dac_override,-dac_read_search,-fowner,-linux_immutable"


def as_other_user(command: list[str]) -> list[str]:
    """``command`` run so that the kernel refuses what file modes forbid, as for any user.

    The tests run as root here, whom ``chmod`` does not stop: as root, the command runs with
    the capabilities that ignore file modes dropped (``setpriv``, util-linux); as another user
    it runs as it is. Skips the test when root has no ``setpriv``.
    """
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root ignores file modes, and setpriv (util-linux) is not installed")
    return [setpriv, f"--inh-caps={_FILE_MODE_CAPS}", f"--bounding-set={_FILE_MODE_CAPS}", *command]


def python_as_other_user(
    code: str, *args: str, cache: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -c code args`` run as :func:`as_other_user` runs a command, with this checkout
    first on its path (then the ``PYTHONPATH`` the tests were given: the Spark 3.5 run's
    pyspark) and, with ``cache``, ``XDG_CACHE_HOME`` there. Its output is text."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    if cache is not None:
        env["XDG_CACHE_HOME"] = str(cache)
    return subprocess.run(
        as_other_user([sys.executable, "-c", code, *args]),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def serving_app(
    command: list[str], *, port: int, log: Path, timeout: float = 90.0, **popen: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """``metaverse app`` run as ``command`` (output in ``log``), once it answers on ``port``;
    stopped when the block ends. Fails the test when it exits or does not answer in time."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **popen)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"metaverse app exited: {log.read_text()[-3000:]}")
            try:
                # NOTE: not "/": every page request starts a kernel.
                url = f"http://127.0.0.1:{port}/voila/static/voila.js"
                with urllib.request.urlopen(url, timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"metaverse app did not answer: {log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_until(tail: Any, wanted: int, *, timeout: float = 30.0, settle: float = 0.0) -> Any:
    """Read a :class:`~metaverse_kit.history.tail.Tail`'s batches until ``wanted`` events came
    (the test fails after ``timeout`` seconds), then for ``settle`` seconds more (what came within
    a moment after: a test that nothing else arrives); the events as one Arrow table."""
    import pyarrow as pa

    batches: list[Any] = []
    deadline = time.monotonic() + timeout
    while sum(b.num_rows for b in batches) < wanted:
        if time.monotonic() > deadline:
            got = sum(b.num_rows for b in batches)
            pytest.fail(f"only {got} of {wanted} events arrived within {timeout:.0f} s")
        batches.extend(tail.read(0.5))
    if settle:
        batches.extend(tail.read(settle))
    return pa.Table.from_batches(batches)


def capture_of(bodies: list[bytes], schema_id: str, when: datetime) -> bytes:
    """A Capture file's bytes holding ``bodies`` as registry-framed events of ``schema_id``,
    enqueued at ``when`` (message ids ``m0``, ``m1``...), as another producer's would be."""
    from metaverse_kit.capture import append_events, format_enqueued_time
    from metaverse_kit.events.codec import content_type_for

    return append_events(
        None,
        [
            {
                "SequenceNumber": i,
                "Offset": str(i),
                "EnqueuedTimeUtc": format_enqueued_time(when),
                "SystemProperties": {
                    "content-type": content_type_for(schema_id),
                    "message-id": f"m{i}",
                    "x-opt-enqueued-time": int(when.timestamp() * 1000) + i,
                },
                "Properties": {},
                "Body": body,
            }
            for i, body in enumerate(bodies)
        ],
    )
