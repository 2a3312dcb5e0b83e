"""The local consumer: follows the local hub's own writes to its Capture files.

Reading: :func:`new_events` is the one place that reads what the hub wrote: for a partition it
lists the Capture files of the newest time windows (a walk pruned by the date folders), reads
each through the lake, and hands over the complete Avro blocks after the position already
reached, as a small Capture archive (the file's header followed by those blocks). A block is
complete when its sync marker follows it, so a block being written is left for the next call;
damaged bytes between complete blocks are handed over with them, for the tail's decoder to
name and leave out (the walk resynchronises after them, as a replay's does).

A file that cannot be read as a whole stops nothing (see :func:`new_events`): its Avro header is
damaged, it is no Avro file at all (a stray copy with a Capture path), or it cannot be opened.
The other files and partitions are read as usual; the file is named (by the tail's decoder,
which lists it in ``Tail.skipped_files``, or by a :class:`CaptureFileWarning` here) and looked
at again whenever it changes, so a file restored or replaced later is read then.

Waking up: the hub renames its state files into ``<workspace>/hub/`` at every commit. On Linux
an inotify watch on that folder (through ``ctypes``, no extra package) wakes the consumer then,
so an idle tail sleeps in ``select`` and costs nothing; a check every ``safety_interval``
seconds covers a missed wake-up. Without inotify (macOS, an exhausted watch table) it looks
every ``fallback_interval`` seconds instead, which is a listing of a few folders.

A folder that cannot be listed when a ``"latest"`` cursor is placed hides what was there before
the tail opened; the cursor keeps the partition's next sequence number then (from the hub's
state), so what is below the folder once it can be listed is handed out from that number on:
events written there after the tail opened, never those written before.

Checkpoints (``checkpoint="name"``) are kept in ``<workspace>/checkpoints/<consumer group>/
<name>.json``: the newest window and the byte position reached in each of its files (with the
file's sync marker, which tells a file replaced since), the files that could not be read and
the folders hidden at the start, and the start position's sequence number or time, per
partition, so a tail opened again with the same name resumes after what it handed out and
still reads those files once they are fixed. Its ``format`` is :data:`CHECKPOINT_FORMAT`; a
checkpoint of a later format (a newer metaverse-kit's) is refused, not read in part.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import select
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from metaverse_kit._files import atomic_write
from metaverse_kit.backends.local.hub import LocalEventHub
from metaverse_kit.backends.local.lake import LocalLake
from metaverse_kit.backends.protocols import CaptureFile, EventChunk, StartPosition
from metaverse_kit.capture import (
    AVRO_MAGIC,
    CAPTURE_MAX_WINDOW,
    parse_capture_path,
    read_header,
    scan_blocks,
)
from metaverse_kit.errors import (
    CaptureFileError,
    CaptureFileWarning,
    ConfigurationError,
    warn,
)

__all__ = ["CHECKPOINT_FORMAT", "LocalEventConsumer", "PartitionCursor", "new_events"]

#: The format of the checkpoint files this version writes (files without one are format 1).
CHECKPOINT_FORMAT = 1

# inotify(7): the events a commit of the hub causes in its state folder.
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_WATCHED = _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE


@dataclass
class PartitionCursor:
    """How far a consumer has read one partition.

    ``window`` is the start of the newest time window read (None: nothing read yet, every
    file is new); ``files`` maps the path of each file of that window or later to the byte
    position reached in it, ``syncs`` to its sync marker (another one there means the file
    was replaced), and ``versions`` to the version (size, times, inode) it had then.
    Rows numbered below ``min_sequence`` or enqueued before ``min_time`` are before the start
    position. ``unreadable`` maps each file that could not be read as a whole to what it was
    then (its version, or why it could not be looked at), whatever its window: it is looked
    at again on every read and read once it changed. ``before_start`` holds those of them
    that were unreadable when a ``"latest"`` cursor was placed: what they hold once readable
    was written before the start. ``hidden`` maps each folder that could not be listed when a
    ``"latest"`` cursor was placed to the partition's next sequence number then: events below
    it numbered lower were written before the start (dropped once the folder was read).
    ``unlistable`` maps each folder of the partition that could not be listed at the last read
    to why (not kept in a checkpoint: named again on opening).
    """

    window: datetime | None = None
    files: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    min_sequence: int | None = None
    min_time: datetime | None = None
    unreadable: dict[str, str] = field(default_factory=dict)
    before_start: set[str] = field(default_factory=set)
    unlistable: dict[str, str] = field(default_factory=dict)
    syncs: dict[str, bytes] = field(default_factory=dict)
    hidden: dict[str, int] = field(default_factory=dict)

    def min_sequence_of(self, path: str) -> int | None:
        """The lowest sequence number of an event of the file ``path`` that is after the start."""
        lowest = self.min_sequence
        for folder, number in self.hidden.items():
            if _below(path, folder):
                lowest = number if lowest is None else max(lowest, number)
        return lowest


def _below(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies below it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _files_since(
    partition_root: Path, since: datetime | None, unlistable: dict[str, str] | None = None
) -> list[Path]:
    """The ``<YYYY>/<MM>/<DD>/<HH>/<mm>/<ss>.avro`` files below a partition folder whose time
    window starts at or after ``since``; folders wholly before it are not opened. A folder
    that cannot be listed is put in ``unlistable`` with why (when given), and passed by."""
    floor = (
        None
        if since is None
        else (since.year, since.month, since.day, since.hour, since.minute, since.second)
    )
    found: list[Path] = []

    def walk(folder: Path, prefix: tuple[int, ...]) -> None:
        try:
            names = sorted(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            # NOTE: a folder this user may not list raised out of every read of the tail.
            if unlistable is not None:
                unlistable[str(folder)] = exc.strerror or str(exc)
            return
        depth = len(prefix)
        for name in names:
            if name.startswith("."):
                continue
            stem = name[:-5] if depth == 5 and name.endswith(".avro") else name
            if not stem.isdigit():
                continue
            key = (*prefix, int(stem))
            if floor is not None and key < floor[: depth + 1]:
                continue
            if depth == 5:
                found.append(folder / name)
            else:
                walk(folder / name, key)

    walk(partition_root, ())
    return found


def _new_blocks(
    data: bytes, position: int, where: str, *, sync: bytes | None = None
) -> tuple[bytes, int, bytes]:
    """A Capture archive of the complete blocks of ``data`` after ``position``, where they end,
    and the file's sync marker.

    The archive is ``b""`` (and the end ``position``) when there is no new complete block. A
    file replaced since ``position`` was reached (another sync marker than ``sync``, the one it
    had then; shorter than ``position``, or with no block ending there: deleted and written
    again by the hub, restored from a copy, rewritten by ``metaverse doctor --repair``) is read
    again from its first block; the tail drops the events it handed out before as duplicates.
    Damaged bytes with complete blocks after them are in the archive, for the decoder to name
    and leave out. Raises :class:`CaptureFileError` naming ``where`` when the Avro header does
    not parse.
    """
    _, marker, first = read_header(data, where=where)
    # NOTE: the sync marker first: a file written again at the same path can have a block
    # ending exactly at the old position, and its blocks before it were then never handed out.
    replaced = (
        (sync is not None and sync != marker)
        or position > len(data)
        or (position > first and data[position - len(marker) : position] != marker)
    )
    start = first if position < first or replaced else position
    # NOTE: the walk goes on after damage (resync): stopping at a damaged block, as at a block
    # being written, never named it and never handed out the blocks after it. What follows the
    # last complete block (a block being written) is left for the next call.
    end = scan_blocks(data, start, marker, resync=True).end
    if end == start:
        return b"", start, marker
    return data[:first] + data[start:end], end, marker


def new_events(
    lake_root: Path, *, namespace: str, eventhub: str, partition: str, cursor: PartitionCursor
) -> list[EventChunk]:
    """The events of ``partition`` written after ``cursor``, one chunk per Capture file; moves it.

    Reads through :class:`LocalLake` (so a lake that reads a file only up to its committed
    length is honoured); files whose version did not change since the last call are not read.

    A file that cannot be read as a whole is recorded in ``cursor.unreadable`` and read again
    once it changes; it never stops the other files. One whose Avro header does not parse (no
    Avro file at all, or its header damaged) is handed over as it is, in a chunk of its own:
    the decoder the tail reads every chunk with names it (``Tail.skipped_files``, a
    :class:`CaptureFileWarning`), as a replay with ``on_bad_file="skip"`` does. One that cannot
    be listed or opened (a folder or a broken link with a Capture file's name, a file this user
    may not read) holds no bytes to hand over, so a :class:`CaptureFileWarning` names it here.
    """
    root = lake_root / namespace / eventhub / partition
    unlistable: dict[str, str] = {}
    paths = _files_since(root, cursor.window, unlistable)
    for folder, reason in unlistable.items():
        if cursor.unlistable.get(folder) != reason:
            # NOTE: with start="latest", what the folder held before the tail opened is told
            # from what came after by its sequence numbers (``cursor.hidden``).
            warn(
                CaptureFileWarning(
                    f"{folder} is in the lake but cannot be listed ({reason}); the tail passes "
                    "by the Capture files below it and reads them once it can list it. Give it "
                    "the mode the other folders of the lake have"
                )
            )
    cursor.unlistable = unlistable
    # NOTE: unreadable files of older windows too, so that one restored later is read then.
    listed = {str(p) for p in paths}
    paths += [Path(p) for p in cursor.unreadable if p not in listed]
    if not paths:
        return []
    lake = LocalLake(paths)
    files, failed = _list(lake, paths)
    for path in [p for p in cursor.unreadable if p not in failed]:
        if not os.path.lexists(path):
            _forget(cursor, path)  # moved aside (a repair) or deleted: no events to wait for
    for path, reason in failed.items():
        if cursor.unreadable.get(path) != reason:
            cursor.unreadable[path] = reason
            _warn_unreadable(path, reason)
    chunks: list[EventChunk] = []
    for file in files:
        if cursor.versions.get(file.path) == file.version:
            continue
        try:
            data = lake.read_bytes(file)
        except CaptureFileError as exc:
            if not os.path.lexists(file.path):
                continue  # NOTE: gone between the listing and the read; the next call sees it.
            # NOTE: it cannot be opened (a file this user may not read).
            cursor.versions[file.path] = file.version
            if cursor.unreadable.get(file.path) != file.version:
                cursor.unreadable[file.path] = file.version
                cause = exc.__cause__
                _warn_unreadable(
                    file.path,
                    cause.strerror or str(cause) if isinstance(cause, OSError) else str(exc),
                )
            continue
        cursor.versions[file.path] = file.version
        try:
            chunk, end, sync = _new_blocks(
                data, cursor.files.get(file.path, 0), file.path, sync=cursor.syncs.get(file.path)
            )
        except CaptureFileError:
            # NOTE: the header does not parse, so no block of the file can be found. Raising
            # here stopped every read for ever and lost the events of the files read with it;
            # the bytes go to the decoder instead, which names the file and what is wrong.
            cursor.unreadable[file.path] = file.version
            chunks.append(EventChunk(data, partition, file.path, file))
            continue
        # NOTE: only a file read as a Capture archive moves the window: a stray file or link
        # named after a later window moved it past the hub's current file, whose events were
        # then never read again.
        if file.window_start is not None and (
            cursor.window is None or file.window_start > cursor.window
        ):
            cursor.window = file.window_start
        cursor.unreadable.pop(file.path, None)
        cursor.files[file.path] = end
        cursor.syncs[file.path] = sync
        if file.path in cursor.before_start:
            cursor.before_start.discard(file.path)
            continue  # readable again, and all it holds was written before the start
        if chunk:
            chunks.append(
                EventChunk(
                    chunk,
                    partition,
                    file.path,
                    file,
                    min_sequence=cursor.min_sequence_of(file.path),
                    min_time=cursor.min_time,
                    # NOTE: the chunk is the header then the file's bytes up to ``end``.
                    offset=end - len(chunk),
                )
            )
    # NOTE: a hidden folder that was listed, with every file below it read, holds nothing
    # more from before the start: what comes below it now is new. One below (or above) a
    # folder that cannot be listed now, or above a file not read yet, is still hidden.
    waiting = [*unlistable, *cursor.unreadable]
    for folder in [
        f for f in cursor.hidden if not any(_below(p, f) or _below(f, p) for p in waiting)
    ]:
        del cursor.hidden[folder]
    if cursor.window is not None:
        known = set(cursor.files) | set(cursor.versions)
        for path in [p for p in known if p not in cursor.unreadable]:
            if _window_of(path) < cursor.window:
                cursor.files.pop(path, None)
                cursor.versions.pop(path, None)
                cursor.syncs.pop(path, None)
    return chunks


def _list(lake: LocalLake, paths: list[Path]) -> tuple[list[CaptureFile], dict[str, str]]:
    """The files of ``lake`` (made of ``paths``), and the paths there that cannot be listed,
    with why (a path gone since the walk is left out: it holds no events).

    NOTE: the lake refuses a list of files when one of them is no file (gone since the walk,
    as a repair moves a damaged file aside; a folder; a broken link) or cannot be looked at,
    which made every read of the partition fail. Then each path is listed on its own.
    """
    try:
        return lake.list_files(), {}
    except (ConfigurationError, CaptureFileError):
        pass
    files: list[CaptureFile] = []
    failed: dict[str, str] = {}
    for path in paths:
        try:
            files.extend(LocalLake([path]).list_files())
        except ConfigurationError:
            if os.path.lexists(path):
                failed[str(path)] = "it is not a file (a folder, or a link to nothing)"
        except CaptureFileError as exc:
            failed[str(path)] = str(exc)
    return files, failed


def _starts_as_avro(path: Path) -> bool:
    """Whether ``path`` is a file this user can open that starts as an Avro container does."""
    try:
        with open(path, "rb") as f:
            return f.read(len(AVRO_MAGIC)) == AVRO_MAGIC
    except OSError:
        return False


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{value!r:.60} is no JSON object")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r:.60} is no path")
    return value


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what!r:.200} has {value!r:.60}, not a count")
    return value


def _sync(value: Any, what: str) -> bytes:
    try:
        sync = bytes.fromhex(_text(value))
    except (TypeError, ValueError):
        sync = b""
    if len(sync) != 16:
        raise ValueError(f"{what!r:.200} has the sync marker {value!r:.60}, not 32 hex digits")
    return sync


def _aware(value: Any, what: str) -> datetime:
    when = datetime.fromisoformat(_text(value))
    if when.tzinfo is None:
        raise ValueError(f"{what} {value!r:.60} has no time zone")
    return when


def _forget(cursor: PartitionCursor, path: str) -> None:
    for known in (cursor.files, cursor.versions, cursor.unreadable, cursor.syncs):
        known.pop(path, None)
    cursor.before_start.discard(path)


def _warn_unreadable(path: str, reason: str) -> None:
    """Warn that the file at ``path`` in the lake cannot be listed or opened, and is passed by."""
    warn(
        CaptureFileWarning(
            f"{path} is in the lake but cannot be read ({reason}); the tail goes on with the "
            "other files and reads it once it changes. Give it the mode the other Capture files "
            "have, or move it out of the lake if it is no Capture file"
        )
    )


def _window_of(path: str) -> datetime:
    info = parse_capture_path(path)
    if info is None:  # pragma: no cover - only paths found by _files_since get here
        raise CaptureFileError(f"{path} does not follow the Capture path format")
    return info.window_start


# -- waking up ------------------------------------------------------------------------------


def _inotify(folder: Path) -> int | None:
    """An inotify descriptor watching ``folder``, or None where inotify is unavailable."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None
    if add(fd, os.fsencode(folder), _WATCHED) < 0:
        os.close(fd)
        return None
    return int(fd)


class _Wakeup:
    """Sleeps until the hub commits (inotify), ``interrupt()`` is called, or time passes."""

    def __init__(self, folder: Path, *, fallback_interval: float) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._watch = _inotify(folder)
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._fallback = fallback_interval
        self._lock = threading.Lock()
        self._closed = False

    @property
    def uses_inotify(self) -> bool:
        """Whether commits wake the consumer (else it looks every ``fallback_interval`` s)."""
        return self._watch is not None

    def wait(self, timeout: float) -> None:
        with self._lock:
            if self._closed:
                return
            fds = [self._read] if self._watch is None else [self._read, self._watch]
            if self._watch is None:
                timeout = min(timeout, self._fallback)
            ready, _, _ = select.select(fds, [], [], max(timeout, 0))
            for fd in ready:
                # PERF: one read drains every queued event; a burst of commits is one wake-up.
                with contextlib.suppress(BlockingIOError):
                    os.read(fd, 65536)

    def interrupt(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write, b"\0")

    def close(self) -> None:
        self.interrupt()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._read, self._write, self._watch):
                if fd is not None:
                    os.close(fd)


# -- the consumer ----------------------------------------------------------------------------


class LocalEventConsumer:
    """Follows the partitions of a local hub from their start positions (see the module notes).

    ``positions`` maps each partition id to follow to its :data:`StartPosition`. ``lake_root``
    is the hub's Capture folder, ``state_root`` the folder it commits in (watched, and where
    its state gives the sequence numbers of ``"latest"``), and ``checkpoint_root`` where named
    checkpoints are kept. Raises :class:`ConfigurationError` for a checkpoint file that is
    damaged, not the consumer's, or of a newer format.
    """

    def __init__(
        self,
        lake_root: Path,
        state_root: Path,
        *,
        namespace: str,
        eventhub: str,
        positions: Mapping[str, StartPosition],
        consumer_group: str = "$Default",
        checkpoint: str | None = None,
        checkpoint_root: Path | None = None,
        fallback_interval: float = 1.0,
        safety_interval: float = 10.0,
    ) -> None:
        self.lake_root = Path(lake_root)
        self.state_root = Path(state_root)
        self.namespace = namespace
        self.eventhub = eventhub
        self.consumer_group = consumer_group
        self.safety_interval = safety_interval
        self._checkpoint_path = (
            None
            if checkpoint is None
            else Path(checkpoint_root or self.lake_root.parent / "checkpoints")
            / consumer_group
            / f"{checkpoint}.json"
        )
        # NOTE: watching starts before the start positions are read, so nothing committed in
        # between can be missed: it is either read now or wakes the first wait.
        self._wakeup = _Wakeup(Path(state_root), fallback_interval=fallback_interval)
        self._closed = False
        try:
            saved = self._load_checkpoint()
            self._cursors = {
                str(p): saved[str(p)] if str(p) in saved else self._cursor_at(str(p), position)
                for p, position in positions.items()
            }
        except BaseException:
            # NOTE: each failed opening (a damaged checkpoint) kept three descriptors open.
            self._wakeup.close()
            raise

    def __repr__(self) -> str:
        return (
            f"LocalEventConsumer(eventhub={self.eventhub!r}, partitions="
            f"{sorted(self._cursors)}, consumer_group={self.consumer_group!r})"
        )

    def __enter__(self) -> LocalEventConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def uses_inotify(self) -> bool:
        """Whether the hub's commits wake this consumer (False: it looks every second)."""
        return self._wakeup.uses_inotify

    def _cursor_at(self, partition: str, position: StartPosition) -> PartitionCursor:
        if position == "earliest":
            return PartitionCursor()
        if isinstance(position, int):
            return PartitionCursor(min_sequence=position)
        if isinstance(position, datetime):
            return PartitionCursor(window=position - CAPTURE_MAX_WINDOW, min_time=position)
        # "latest": skip what the newest window's files hold now.
        root = self.lake_root / self.namespace / self.eventhub / partition
        # NOTE: read before the listing, so an event committed in between is handed out from
        # a hidden folder rather than lost.
        next_sequence = self._next_sequence(partition)
        hidden: dict[str, str] = {}
        paths = _files_since(root, None, hidden)
        cursor = PartitionCursor()
        if paths:
            # PERF: read from the newest window only. NOTE: the newest Capture archive's
            # window, not that of a stray path named later: the hub's current file was older,
            # so nothing appended to it was read again.
            newest: list[Path | None] = [p for p in reversed(paths) if _starts_as_avro(p)]
            for path in newest or [None]:
                cursor.window = None if path is None else _window_of(str(path))
                self._read(partition, cursor)
                if str(path) not in cursor.unreadable:
                    break  # its header parsed (or there is no Avro file at all)
            # NOTE: nothing of a file unreadable now is read; once readable, its blocks then
            # are skipped like those of the files read now, never handed out as new events.
            cursor.before_start = set(cursor.unreadable)
        if hidden and isinstance(next_sequence, int):
            # NOTE: what a folder that cannot be listed holds now was written before the start,
            # but which files those are is unknown until it can be listed: its events are told
            # apart by their sequence numbers.
            cursor.hidden = dict.fromkeys(hidden, next_sequence)
        elif hidden:
            warn(
                CaptureFileWarning(
                    f"{', '.join(hidden)} cannot be listed, and the hub state cannot be read "
                    f"({next_sequence}) to tell what is there now from what comes later: once "
                    "the tail can list it, it hands out every event below it, also those "
                    "written before it opened"
                )
            )
        return cursor

    def _next_sequence(self, partition: str) -> int | str:
        """The sequence number the hub gives ``partition``'s next event, or why it is unknown."""
        hub = LocalEventHub(
            self.lake_root, self.state_root, namespace=self.namespace, eventhub=self.eventhub
        )
        if not hub.state_path.exists():
            return f"{hub.state_path} does not exist"
        try:
            part = hub.read_state().get(partition)
        except ConfigurationError as exc:
            return str(exc)
        except OSError as exc:
            return f"{hub.state_path}: {exc.strerror or exc}"
        if part is None:
            return f"{hub.state_path} has no counters for partition {partition}"
        return int(part["next_sequence"])

    def _read(self, partition: str, cursor: PartitionCursor) -> list[EventChunk]:
        return new_events(
            self.lake_root,
            namespace=self.namespace,
            eventhub=self.eventhub,
            partition=partition,
            cursor=cursor,
        )

    def receive(self, *, timeout: float) -> list[EventChunk]:
        """The events written since the last call; waits up to ``timeout`` s for a commit."""
        deadline = time.monotonic() + max(timeout, 0)
        while not self._closed:
            chunks = [c for p, cursor in self._cursors.items() for c in self._read(p, cursor)]
            if chunks or self._closed:
                return chunks
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self._wakeup.wait(min(remaining, self.safety_interval))
        return []

    # -- checkpoints ----------------------------------------------------------------------------

    def _load_checkpoint(self) -> dict[str, PartitionCursor]:
        path = self._checkpoint_path
        if path is None:
            return {}
        try:
            saved = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError as exc:  # not JSON, or not UTF-8
            raise ConfigurationError(
                f"The checkpoint file {path} is damaged (not JSON: {exc}); delete it to start "
                "from the start position again"
            ) from None
        version = saved.get("format", 1) if isinstance(saved, dict) else 1
        if isinstance(version, int) and not isinstance(version, bool) and version > 1:
            # NOTE: read in part, a newer checkpoint's positions could hand events out again
            # or pass them by, with nothing said.
            raise ConfigurationError(
                f"The checkpoint file {path} is of format {version}, written by a newer "
                f"metaverse-kit (this one reads format {CHECKPOINT_FORMAT}): upgrade "
                "metaverse-kit to resume from it, or name another checkpoint"
            )
        try:
            saved = _mapping(saved)
            if version != 1 or isinstance(version, bool):
                raise ValueError(f"format {version!r:.60}")
            if saved.get("eventhub", self.eventhub) != self.eventhub:
                raise ValueError(f"it is of the event hub {saved['eventhub']!r}")
            return {p: self._saved_cursor(p, c) for p, c in _mapping(saved["partitions"]).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ConfigurationError(
                f"The checkpoint file {path} is damaged ({what}); delete it to start from the "
                "start position again"
            ) from None

    def _saved_cursor(self, partition: str, c: dict[str, Any]) -> PartitionCursor:
        """The cursor of ``partition`` a checkpoint saved as ``c``; ValueError when damaged.

        NOTE: every path must be one of the partition's own in the lake: a file key that was
        no Capture path made every read raise, and one outside the lake was read.
        """
        root = self.lake_root / self.namespace / self.eventhub / partition

        def inside(relative: Any, *, file: bool) -> str:
            # NOTE: spelt as the walk spells it, so that its positions are found again.
            path = str(self.lake_root / _text(relative))
            found = parse_capture_path(path) if file else None
            if not _below(os.path.normpath(path), os.path.normpath(root)) or (
                file and (found is None or found.partition != partition)
            ):
                kind = "Capture file" if file else "folder"
                raise ValueError(f"{relative!r:.200} is no {kind} of partition {partition}")
            return path

        c = _mapping(c)
        window, min_sequence, min_time = c["window"], c.get("min_sequence"), c.get("min_time")
        return PartitionCursor(
            window=None if window is None else _aware(window, "window"),
            files={inside(k, file=True): _count(v, k) for k, v in _mapping(c["files"]).items()},
            syncs={
                inside(k, file=True): _sync(v, k) for k, v in _mapping(c.get("syncs", {})).items()
            },
            # NOTE: what they were is not kept: they are read again, and named again when still
            # unreadable. Checkpoints saved before these keys have none.
            unreadable=dict.fromkeys((inside(k, file=True) for k in c.get("unreadable", [])), ""),
            before_start={inside(k, file=True) for k in c.get("before_start", [])},
            hidden={
                inside(k, file=False): _count(v, k)
                for k, v in _mapping(c.get("hidden", {})).items()
            },
            min_sequence=None if min_sequence is None else _count(min_sequence, "min_sequence"),
            min_time=None if min_time is None else _aware(min_time, "min_time"),
        )

    def checkpoint(self) -> None:
        """Save how far every partition was read (when opened with a checkpoint name)."""
        if self._checkpoint_path is None or self._closed:
            return

        def relative(path: str) -> str:
            return os.path.relpath(path, self.lake_root)

        state = {
            "format": CHECKPOINT_FORMAT,
            "eventhub": self.eventhub,
            "partitions": {
                p: {
                    "window": c.window.isoformat() if c.window else None,
                    "files": {relative(k): v for k, v in sorted(c.files.items())},
                    "syncs": {relative(k): v.hex() for k, v in sorted(c.syncs.items())},
                    "unreadable": sorted(relative(k) for k in c.unreadable),
                    "before_start": sorted(relative(k) for k in c.before_start),
                    "hidden": {relative(k): v for k, v in sorted(c.hidden.items())},
                    # NOTE: a start by number or time filters the rows of every first read:
                    # lost, a tail closed before it read resumed from the first event.
                    "min_sequence": c.min_sequence,
                    "min_time": c.min_time.isoformat() if c.min_time else None,
                }
                for p, c in sorted(self._cursors.items())
            },
        }
        atomic_write(self._checkpoint_path, json.dumps(state, indent=1).encode())

    def close(self) -> None:
        """Stop: a waiting :meth:`receive` returns [] at once. Safe from another thread."""
        self._closed = True
        self._wakeup.close()
