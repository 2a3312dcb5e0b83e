"""Crash-safe file primitives: whole-file replacement, process locks, and crash leftovers.

Every state file this toolkit changes is written to a temporary file beside it and moved over
the old one, so a reader (or a crash) only ever sees the old or the new content. Writers that
read-modify-write take an exclusive ``flock`` first, which also holds across processes, so two
notebooks emitting at once never interleave.

Temporary files are named ``.<target>.<pid>.<random>.tmp``: a process killed mid-write leaves
one behind, and the pid in its name tells whether its writer is still alive, so that
:func:`remove_leftovers` never takes a file from under a live writer.

Files get the mode a plain ``open`` would give them (``0o666`` less the umask), not the
``0o600`` of a temporary file: a workspace on a shared drive stays readable by whom the umask
lets read it.

A folder the user cannot write (a read-only mount, a colleague's workspace) makes every write
raise :class:`~metaverse_kit.errors.ReadOnlyWorkspaceError` naming the folder, instead of a
bare ``PermissionError``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from metaverse_kit.errors import ConfigurationError, ReadOnlyWorkspaceError

__all__ = [
    "Leftover",
    "atomic_write",
    "can_write",
    "check_text_path",
    "file_mode",
    "find_leftovers",
    "fsync_folder",
    "locked",
    "remove_leftovers",
    "writing",
]

#: errno values that mean "this folder cannot be written by you", not "something broke".
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def check_text_path(
    path: str | os.PathLike[str], *, what: str, why: str = "replays name their files in UTF-8"
) -> None:
    """Raise :class:`ConfigurationError` when ``path`` is not UTF-8 text (a file name in
    another encoding, which Python keeps as surrogates); the message names ``what`` and says
    ``why`` that matters.

    NOTE: a replay names each event's Capture file in a UTF-8 column (``capture_file``), as
    Arrow's strings are; a workspace in such a folder took events and then failed every replay
    with a UnicodeEncodeError naming no path.
    """
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(text).decode("utf-8", "backslashreplace")
        raise ConfigurationError(
            f"The {what} {shown} is not UTF-8 text: {why}; rename the folder, or use one whose "
            "name is UTF-8"
        ) from None


@contextlib.contextmanager
def writing(folder: Path) -> Iterator[None]:
    """Turn a write refused inside the block into :class:`ReadOnlyWorkspaceError` for ``folder``."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _READ_ONLY:
            raise
        reason = "a read-only file system" if exc.errno == errno.EROFS else "permission denied"
        # NOTE: only this folder is known to refuse: another folder of the workspace (the
        # outbox beside a read-only lake) may take writes, so the message claims no more.
        raise ReadOnlyWorkspaceError(
            f"Cannot write in {folder} ({reason}): this workspace is read-only for you in that "
            "folder; reading it (replay, schemas list/show, metaverse doctor) still works"
        ) from exc


def can_write(folder: Path) -> bool:
    """Whether this process can create files in ``folder`` (created when missing), by trying.

    ``os.access`` is not asked: it answers yes to root on a read-only mount of some kinds and
    ignores what only an attempt shows.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=f".probe.{os.getpid()}."):
            return True
    except OSError:
        return False


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (the entry lives in the folder)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` in one step; its folder is created when missing.

    ``durable=False`` skips the ``fsync``: the replacement is still all-or-nothing for a
    process that dies, but a power cut may bring back the old content (for hints that can be
    rebuilt). Raises :class:`ReadOnlyWorkspaceError` when the folder cannot be written.
    """
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
        )
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def file_mode() -> int:
    """The mode ``open`` gives a new file in this process: ``0o666`` less the umask.

    NOTE: read from ``/proc/self/status`` (Linux 4.7 and later) without changing it: elsewhere
    the umask can only be read by setting it and putting it back, which a file another thread
    creates at that moment would see.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created when missing) for the ``with`` block.

    Raises :class:`ReadOnlyWorkspaceError` when the lock file cannot be created or opened.
    """
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+b")  # noqa: SIM115 - closed below, after the lock is released
    with f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def held(path: Path) -> bool:
    """Whether a process holds a lock on ``path`` right now; takes and makes nothing.

    NOTE: a shared lock is tried and let go at once; the file is opened for reading only, so
    this works on a workspace the user cannot write. A missing file is held by nobody; one
    this user may not open (another user's) cannot be told, and counts as not held.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, PermissionError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# -- crash leftovers ----------------------------------------------------------------------------

# ``.<target>.<pid>.<8 random>.tmp`` (atomic_write), ``.<target>.<pid>.pending`` (the hub before
# it appended in place), ``.<target>.<8 random>.tmp`` (atomic_write before it named the pid).
_TMP = re.compile(r"^\.(?P<target>.+?)\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp$")
_PENDING = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.pending$")
#: A leftover whose name carries no pid is taken as dead once it is this old: no write of
#: this toolkit takes that long, and the versions that wrote such names are gone by then.
UNNAMED_LEFTOVER_AGE = 3600.0


@dataclass(frozen=True)
class Leftover:
    """A temporary file a writer left behind: its path, size, writer's pid and whether it lives."""

    path: Path
    size: int
    pid: int | None
    alive: bool


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def find_leftovers(root: Path, *, skip: tuple[str, ...] = ()) -> list[Leftover]:
    """Every temporary file under ``root`` (not under the top-level folders ``skip``).

    ``alive`` is True when the writer may still be at work (its pid runs, or an unnamed file
    is younger than :data:`UNNAMED_LEFTOVER_AGE`); those are never removed.
    """
    found: list[Leftover] = []
    now = time.time()
    for folder, dirs, names in os.walk(root):
        if Path(folder) == root:
            dirs[:] = [d for d in dirs if d not in skip]
        for name in names:
            if not name.startswith("."):
                continue
            match = _TMP.match(name) or _PENDING.match(name)
            if match is None:
                continue
            path = Path(folder) / name
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            pid = int(match["pid"]) if match["pid"] else None
            alive = _alive(pid) if pid is not None else now - stat.st_mtime < UNNAMED_LEFTOVER_AGE
            found.append(Leftover(path, stat.st_size, pid, alive))
    return sorted(found, key=lambda leftover: str(leftover.path))


def remove_leftovers(root: Path, *, skip: tuple[str, ...] = ()) -> list[Leftover]:
    """Remove the leftovers of dead writers under ``root``; returns those removed.

    Files that cannot be removed (a read-only folder) are left, silently: they do no harm.
    """
    removed = []
    for leftover in find_leftovers(root, skip=skip):
        if leftover.alive:
            continue
        try:
            leftover.path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in _READ_ONLY:
                continue
            raise
        removed.append(leftover)
    return removed
