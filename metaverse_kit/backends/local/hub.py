"""The local event hub: Event Hubs' partitions and sequence numbers, plus Capture, in a folder.

Each ``send`` assigns every event a partition (a stable hash of its partition key), the next
sequence number and offset of that partition, and an enqueued time that never goes backwards
within the partition, as the service does. It then writes the events into Capture-format Avro
files at the default Capture path of their time window.

Appending in place (see ``docs/architecture/0008-append-in-place.md``): new events become Avro
blocks appended after the last block of the partition's current file; nothing already written
is read, copied or rewritten, so a send costs the same into an empty window as into a full one.
One ``fsync`` per file written makes them durable before the receipts are returned.

- The partition state (``hub/partitions.json``) keeps, besides the counters, the partition's
  current file and its good length: the end of its last complete block.
- Before appending, the hub checks the file's tail against that record (same length, the
  file's sync marker in its last 16 bytes). A file that fails (cut short, junk after its last
  block, not a Capture file) is never appended to: the events go to a new file of the same
  window, named after a later second (``.../08/00/00.avro`` damaged -> ``.../08/03/17.avro``,
  the second the events are enqueued in), which ``replay`` and Azure's tools read like any
  other Capture file, and a :class:`~metaverse_kit.errors.DamagedFileWarning` names the file.
- A journal (``hub/journal.json``, rewritten in place: no file is created, renamed or removed
  per send) names every file a send is about to write and its good length, and is cleared
  once the send is committed. A process killed mid-send leaves it; the next send (or opening
  the workspace) rolls
  the files back by truncation to the end of their last complete block, and rolls the
  counters forward over the complete blocks that did land (their events are in the lake
  without a receipt; the outbox still holds them, and a retry's duplicates share their message
  id, which replay drops). So sequence numbers stay contiguous and no receipted event is lost.
- Every file the journal or the state names is checked to be in the lake (a relative path
  without ``..``, no symbolic link leading out) before anything is done with it. A journal
  that fails, or is not the shape the hub writes, is refused whole with a
  :class:`~metaverse_kit.errors.ConfigurationError` naming it: nothing it names is truncated
  or removed, and ``metaverse doctor`` reports it (``--repair`` sets it aside). A state that
  fails is unreadable, as one that is not JSON: ``metaverse doctor --repair`` rebuilds it.
- A new file (a new window) is written whole to a temporary file and renamed into place, so
  readers never see half a header; readers of a file being appended to stop at its last
  complete block (:func:`~metaverse_kit.capture.complete_length`), so they never see a torn one.

A process-wide lock (``flock``) serialises writers, so two processes emitting at once lose
nothing and never reuse a sequence number.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from metaverse_kit._files import atomic_write, fsync_folder, held, locked, writing
from metaverse_kit.backends.protocols import MAX_EVENT_BYTES, OutgoingEvent, Receipt, oversized
from metaverse_kit.capture import (
    CAPTURE_SCHEMA,
    BlockScan,
    EventDataEncoder,
    capture_path,
    check_appendable,
    decode_block,
    enqueued_ms,
    format_enqueued_time,
    new_header,
    parse_capture_path,
    parse_enqueued_time,
    read_header,
    scan_blocks,
)
from metaverse_kit.config import check_workspace_settings
from metaverse_kit.errors import (
    CaptureFileError,
    ConfigurationError,
    DamagedFileWarning,
    EmitError,
    ServiceError,
    warn,
)
from metaverse_kit.names import path_segment

__all__ = ["LocalEventHub", "partition_for_key"]

# Offsets are byte positions in the partition's log; a fixed allowance stands in for the AMQP
# envelope around each body so offsets grow the way the service's do.
_ENVELOPE_BYTES = 96
_JOURNAL_FORMAT = 2
#: The counters every partition of the hub state has (since the first version).
_COUNTERS = ("next_sequence", "next_offset", "last_enqueued_ms")


def partition_for_key(key: str, partition_count: int) -> int:
    """The partition a key maps to: stable across processes, machines and Python versions."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % partition_count


def _count_problem(part: dict[str, Any], key: str, *, minimum: int = 0) -> str | None:
    """What is wrong with ``part[key]`` as a whole number of at least ``minimum`` (None: fine)."""
    expected = "a whole number" + (f" of at least {minimum}" if minimum else "")
    if key not in part:
        return f"has no {key} (expected {expected})"
    value = part[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return f"has {key} {value!r:.40} (expected {expected})"
    return None


def _kind(value: object) -> str:
    """How a JSON value is named in an error message: "a list", "a string"..."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else "null")


def _is_sync(value: object) -> bool:
    """Whether ``value`` is a sync marker as the hub state keeps it (16 bytes in hex)."""
    if not isinstance(value, str) or len(value) != 32:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _second_of(relative: str) -> int | None:
    """The time a Capture path names, in epoch seconds (None for another layout)."""
    info = parse_capture_path(relative)
    return None if info is None else int(info.window_start.timestamp())


@dataclass
class _Target:
    """Where one partition's events of a send go: a file, its good length, sync marker, codec."""

    relative: str
    length: int
    sync: bytes
    codec: str
    new: bool
    header: bytes = b""


class LocalEventHub:
    """An event hub with Capture, kept in folders of the workspace.

    ``lake_root`` receives the Capture files; ``state_root`` keeps each partition's next
    sequence number, offset, last enqueued time and current file, the lock and the journal.
    """

    def __init__(
        self,
        lake_root: Path | str,
        state_root: Path | str,
        *,
        namespace: str,
        eventhub: str,
        partition_count: int = 4,
        window_seconds: int = 300,
        codec: str = "null",
        clock: Callable[[], datetime] | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self.max_event_bytes = max_event_bytes
        # NOTE: the ranges of a workspace's settings have one home (the workspace checks them
        # when it opens, naming its workspace.json); a hub made directly is held to the same.
        check_workspace_settings(
            {"partition_count": partition_count, "window_seconds": window_seconds, "codec": codec},
            path=None,
        )
        # NOTE: both names become folders of every Capture path written; checked where used.
        path_segment(namespace, what="namespace")
        path_segment(eventhub, what="event hub name")
        self.lake_root = Path(lake_root)
        self._appending: tuple[tuple[int, int, int], dict[str, int]] | None = None
        self.state_root = Path(state_root)
        self.namespace = namespace
        self.name = eventhub
        self.partition_count = partition_count
        self.window = timedelta(seconds=window_seconds)
        self.codec = codec
        #: Stamps enqueued times; tests and the demo set it to simulate a history.
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.lock_path = self.state_root / ".lock"
        self.journal_path = self.state_root / "journal.json"
        self.state_path = self.state_root / "partitions.json"
        self._inside: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"LocalEventHub(namespace={self.namespace!r}, eventhub={self.name!r}, "
            f"partitions={self.partition_count}, lake={str(self.lake_root)!r})"
        )

    def __enter__(self) -> LocalEventHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing stays open between calls; kept for the protocol."""

    def partition_ids(self) -> list[str]:
        """``"0"`` to ``"n-1"``, as Event Hubs names partitions."""
        return [str(i) for i in range(self.partition_count)]

    def partition_for(self, partition_key: str) -> str:
        """The partition id an event with this partition key goes to."""
        return str(partition_for_key(partition_key, self.partition_count))

    # -- state ----------------------------------------------------------------------------------

    def read_state(self) -> dict[str, dict[str, Any]]:
        """Each partition's counters and current file, as last committed (read-only).

        Raises :class:`ConfigurationError` naming the state file when it is not JSON, or not
        the shape the hub writes (each partition's counters, a current file inside the lake).
        """
        try:
            state = json.loads(self.state_path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError:  # not JSON, or not UTF-8
            raise ConfigurationError(
                f"The hub state {self.state_path} is unreadable (not JSON); `metaverse doctor "
                "--repair` rebuilds it from the lake"
            ) from None
        problem = self._state_problem(state)
        if problem:
            raise ConfigurationError(
                f"The hub state {self.state_path} is unreadable: {problem}; `metaverse doctor "
                "--repair` rebuilds it from the lake"
            )
        return state

    def _state_problem(self, state: Any) -> str | None:
        """What keeps ``state`` from being a hub state as :meth:`_save` writes it (None: fine)."""
        if not isinstance(state, dict):
            return f"it holds {_kind(state)}, not an object of partitions"
        for partition, part in state.items():
            if not isinstance(part, dict):
                return f"partition {partition!r} is {_kind(part)}, not an object of counters"
            for key in _COUNTERS:
                problem = _count_problem(part, key)
                if problem:
                    return f"partition {partition!r} {problem}"
            if "length" in part:
                # NOTE: a recorded length ends with the file's 16-byte sync marker.
                problem = _count_problem(part, "length", minimum=16)
                if problem:
                    return f"partition {partition!r} {problem}"
            if "sync" in part and not _is_sync(part["sync"]):
                return (
                    f"partition {partition!r} has sync {part['sync']!r:.40} (expected the 32 hex "
                    "digits of a sync marker)"
                )
            if part.get("codec", "null") not in ("null", "deflate"):
                return (
                    f"partition {partition!r} has codec {part['codec']!r:.40} (expected 'null' "
                    "or 'deflate')"
                )
            # PERF: resolving a path costs a stat per folder (60 us); a partition's file
            # changes once a window, so each name is resolved once per hub.
            if "file" in part and part["file"] not in self._inside:
                reason = self._outside(part["file"])
                if reason:
                    return (
                        f"partition {partition!r} names the file {part['file']!r:.200}, "
                        f"which is not in the lake {self.lake_root} ({reason})"
                    )
                self._inside.add(part["file"])
        return None

    def _outside(self, name: Any, *, relative: bool = True) -> str | None:
        """Why ``name`` does not name a file inside the lake; None when it does.

        ``relative``: a path in the lake (the hub's own records); else a path as older
        versions wrote them, absolute (or from their working folder). Symbolic links are
        followed: a name that leads out of the lake through one is outside.
        """
        if not isinstance(name, str):
            return f"{_kind(name)}, not a file name"
        if not name or "\x00" in name:
            return "not a file name"
        if relative:
            pure = PurePosixPath(name)
            if pure.is_absolute():
                return "an absolute path; the hub's records name files relative to the lake"
            if ".." in pure.parts:
                return "it climbs out of its folder with '..'"
        root = self.lake_root.resolve()
        try:
            found = (self.lake_root / name if relative else Path(name)).resolve()
        except (OSError, RuntimeError):  # RuntimeError: a loop of symbolic links
            return "it cannot be resolved (a loop of symbolic links?)"
        if found == root or not found.is_relative_to(root):
            return f"it leads to {found}" + (", through a symbolic link" if relative else "")
        return None

    def appending_files(self) -> dict[str, int]:
        """The files the hub appends to (each partition's current file, as a path in the lake),
        with their committed length: the end of the last block a send completed.

        Only bytes past that length can be a block still being written; the local lake trims
        such a torn tail from these files alone, so a file cut short anywhere else (or below its
        committed length) is reported as damage.
        """
        try:
            stat = self.state_path.stat()
        except FileNotFoundError:
            return {}
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        # PERF: the lake asks once per file it reads; the state is parsed once per change.
        if self._appending is None or self._appending[0] != key:
            files = {
                str(self.lake_root / part["file"]): int(part.get("length", 0))
                for part in self.read_state().values()
                if isinstance(part.get("file"), str)
            }
            self._appending = (key, files)
        return self._appending[1]

    def _part(self, state: dict[str, dict[str, Any]], partition: str) -> dict[str, Any]:
        return state.setdefault(
            partition, {"next_sequence": 0, "next_offset": 0, "last_enqueued_ms": 0}
        )

    def _save(self, state: dict[str, dict[str, Any]], *, durable: bool) -> None:
        # NOTE: not fsynced in the steady state: after a power cut an older state still names
        # the partition's file, and the complete blocks past its length roll the counters
        # forward (see _inspect), so durability of the events rests on their own fsync.
        atomic_write(self.state_path, json.dumps(state, sort_keys=True).encode(), durable=durable)
        if durable:
            fsync_folder(self.state_root)

    def _roll_forward(self, part: dict[str, Any], data: bytes, scan: BlockScan, codec: str) -> None:
        """Move a partition's counters past the last event in the complete blocks of ``scan``."""
        if not scan.blocks or not scan.records:
            return
        block = next(b for b in reversed(scan.blocks) if b.count)
        last = decode_block(data, block, codec=codec, schema=CAPTURE_SCHEMA)[-1]
        ms = (last.get("SystemProperties") or {}).get("x-opt-enqueued-time")
        if not isinstance(ms, int):
            ms = enqueued_ms(parse_enqueued_time(last["EnqueuedTimeUtc"]))
        body = last.get("Body") or b""
        part["next_sequence"] = max(part["next_sequence"], last["SequenceNumber"] + 1)
        part["next_offset"] = max(
            part["next_offset"], int(last["Offset"]) + len(body) + _ENVELOPE_BYTES
        )
        part["last_enqueued_ms"] = max(part["last_enqueued_ms"], ms)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the hub's lock for the block: no send writes meanwhile (for repairs).

        Raises :class:`ReadOnlyWorkspaceError` on a workspace this user cannot write.
        """
        with locked(self.lock_path):
            yield

    def busy(self) -> bool:
        """Whether a send (in any process) holds the hub's lock right now. Takes nothing."""
        return held(self.lock_path)

    def recover(self, *, hold_lock: bool = True) -> list[str]:
        """Roll back (or finish) a send that a killed process left half done; what it did.

        Takes the hub's lock (``hold_lock=False`` inside :meth:`exclusive`). Returns one line
        per file it truncated or removed (empty when there was nothing to truncate). Raises
        :class:`ReadOnlyWorkspaceError` on a read-only workspace, and
        :class:`ConfigurationError` (touching nothing) for a journal or state it cannot trust.
        """
        if not hold_lock:
            return self._recover()
        with locked(self.lock_path):
            return self._recover()

    def file_rewritten(self, relative: str) -> None:
        """Note that a Capture file was replaced whole (a repair); call inside :meth:`exclusive`.

        The partition writing to it forgets its recorded length, so its next send reads the
        file once, checks it and appends after its last block.
        """
        state = self.read_state()
        for part in state.values():
            if part.get("file") == relative:
                for key in ("length", "sync", "codec"):
                    part.pop(key, None)
        self._save(state, durable=True)

    def rebuild_state(self) -> list[str]:
        """Rebuild the partition state from the lake's files; call inside :meth:`exclusive`.

        For a state file that was lost or damaged: every partition's counters move past the
        last event of its files, and its current file is its latest. One line per partition.
        """
        state: dict[str, dict[str, Any]] = {}
        lines = []
        for partition in self.partition_ids():
            folder = self.lake_root / self.namespace / self.name / partition
            paths = sorted(
                (p for p in folder.rglob("*.avro") if not p.name.startswith(".")),
                key=lambda p: _second_of(p.relative_to(self.lake_root).as_posix()) or 0,
            )
            if not paths:
                continue
            part = self._part(state, partition)
            for path in paths:
                data = path.read_bytes()
                try:
                    sync, codec = check_appendable(data, str(path))
                except CaptureFileError:
                    continue
                scan = scan_blocks(data, read_header(data)[2], sync)
                with contextlib.suppress(CaptureFileError):
                    self._roll_forward(part, data, scan, codec)
            part["file"] = paths[-1].relative_to(self.lake_root).as_posix()
            lines.append(
                f"partition {partition}: next sequence number {part['next_sequence']}, "
                f"current file {self.lake_root / part['file']}"
            )
        self._save(state, durable=True)
        return lines

    def pending(self) -> dict[str, Any] | None:
        """The journal of a send in flight, or of one a killed process left; None when clear.

        Reads only. A journal that does not parse (a power cut in the middle of writing it)
        counts as clear: the files it would name are then checked like any other before the
        next append, and a torn end is reported as damage rather than silently cut. Raises
        :class:`ConfigurationError` naming the journal for JSON that is not a journal this hub
        writes, or that names a file outside the lake (an absolute path, ``..``, a symbolic
        link leading out): such a journal is never acted on.
        """
        try:
            with open(self.journal_path, "rb") as f:
                line = f.readline()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8
            return None
        if isinstance(record, dict) and not record:
            return None
        problem = self._journal_problem(record)
        if problem:
            raise ConfigurationError(
                f"The hub journal {self.journal_path} cannot be acted on: {problem}; it is not "
                "one this hub wrote and nothing it names is touched: check what wrote it, then "
                "`metaverse doctor --repair` sets it aside"
            )
        return record

    def _journal_problem(self, record: Any) -> str | None:
        """What keeps ``record`` from being a journal :meth:`_write` (or a version before ADR
        0008) writes, naming files inside the lake; None when it is one."""
        if not isinstance(record, dict):
            return f"it holds {_kind(record)}, not a journal object"
        if "renames" in record:  # written by a version that replaced whole files
            renames = record["renames"]
            if not isinstance(renames, list) or not all(
                isinstance(pair, list) and len(pair) == 2 and all(isinstance(n, str) for n in pair)
                for pair in renames
            ):
                return "its renames are not a list of [temporary file, final file] pairs"
            for pair in renames:
                for name in pair:
                    reason = self._outside(name, relative=False)
                    if reason:
                        return (
                            f"it renames {name!r:.200}, which is not in the lake "
                            f"{self.lake_root} ({reason})"
                        )
            problem = self._state_problem(record.get("state"))
            return None if problem is None else f"the hub state it holds is unreadable: {problem}"
        files = record.get("files", [])
        if not isinstance(files, list):
            return f"its files are {_kind(files)}, not a list"
        for i, entry in enumerate(files):
            if not isinstance(entry, dict):
                return f"file entry {i} is {_kind(entry)}, not an object"
            if not isinstance(entry.get("partition"), str):
                return f"file entry {i} has no partition (expected a partition id, a string)"
            if "path" not in entry:
                return f"file entry {i} has no path (expected a file in the lake)"
            reason = self._outside(entry["path"])
            if reason:
                return (
                    f"file entry {i} names {entry['path']!r:.200}, which is not in the lake "
                    f"{self.lake_root} ({reason})"
                )
            problem = _count_problem(entry, "length")
            if problem:
                return f"file entry {i} {problem}"
            if not isinstance(entry.get("new", False), bool):
                return f"file entry {i} has new {entry['new']!r:.40} (expected true or false)"
        return None

    def _set_journal(self, record: dict[str, Any] | None, *, durable: bool = False) -> None:
        # PERF: one line written over the start of the same file: no file is created, renamed
        # or removed per send (each of those waits on the file system's own journal). The
        # reader takes the first line, so a shorter record needs no truncation.
        data = (json.dumps(record) if record else "{}").encode() + b"\n"
        with writing(self.state_root):
            self.state_root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, 0)
            if durable:
                os.fsync(fd)
                fsync_folder(self.state_root)
        finally:
            os.close(fd)

    def _recover(self) -> list[str]:
        journal = self.pending()
        if journal is None:
            return []
        done: list[str] = []
        if "renames" in journal:  # written by a version that replaced whole files
            for tmp, final in journal["renames"]:
                if os.path.exists(tmp):
                    os.replace(tmp, final)
                    done.append(f"finished writing {final}")
            atomic_write(self.state_path, json.dumps(journal["state"], sort_keys=True).encode())
            self._set_journal(None)
            return done
        state = self.read_state()
        for entry in journal.get("files", []):
            done.extend(self._recover_file(state, entry))
        self._save(state, durable=True)
        self._set_journal(None, durable=True)
        return done

    def _recover_file(self, state: dict[str, dict[str, Any]], entry: dict[str, Any]) -> list[str]:
        part = self._part(state, entry["partition"])
        relative, length = entry["path"], int(entry["length"])
        new = bool(entry.get("new")) or length == 0
        path = self.lake_root / relative
        if part.get("file") == relative and int(part.get("length", -1)) > length:
            return []  # committed: the process died between the state and the journal's removal
        try:
            data = path.read_bytes()
            sync, codec = check_appendable(data, str(path))
            header_end = read_header(data)[2]
        except (FileNotFoundError, CaptureFileError):
            return []  # never written, or not ours: the next send's check reports a damaged file
        start = header_end if new else length
        if len(data) < start:
            return []  # shorter than the journal says: damage, for the next send to report
        scan = scan_blocks(data, start, sync)
        if new and not scan.blocks:
            path.unlink()
            return [f"removed {path}, which a killed send left without a complete block"]
        lines = []
        if scan.end < len(data):
            with open(path, "r+b") as f:
                f.truncate(scan.end)
                os.fsync(f.fileno())
            lines.append(f"rolled {path} back to its last complete block ({scan.end} bytes)")
        self._roll_forward(part, data, scan, codec)
        part.update(file=relative, length=scan.end, sync=sync.hex(), codec=codec)
        return lines

    # -- sending --------------------------------------------------------------------------------

    def send(self, events: Sequence[OutgoingEvent], *, schema_ids: Sequence[str]) -> list[Receipt]:
        """Append the events to their partitions and Capture files; one receipt per event.

        Raises :class:`ReadOnlyWorkspaceError` on a workspace this user cannot write and
        :class:`ConfigurationError` for a clock without a timezone, or a hub state or journal
        the hub cannot trust (see :meth:`read_state`, :meth:`pending`); nothing is written then.
        """
        if not events:
            return []
        if len(schema_ids) != len(events):
            raise ValueError(f"{len(events)} events but {len(schema_ids)} schema ids")
        # NOTE: Event Hubs refuses an event over its size limit (the Azure hub reports it as
        # too large for any batch); taking it here would pass offline what fails on Azure.
        too_large = oversized(events, limit=self.max_event_bytes)
        if too_large:
            refused = {i for i, _ in too_large}
            keep = [i for i in range(len(events)) if i not in refused]
            sent = self.send([events[i] for i in keep], schema_ids=[schema_ids[i] for i in keep])
            failures: list[tuple[int, BaseException]] = [
                (
                    i,
                    ServiceError(
                        f"Event {i} ({size} bytes with its properties) is larger than Event Hubs "
                        f"takes ({self.max_event_bytes} bytes); it cannot be sent: make it "
                        "smaller (split its aspects over several events)"
                    ),
                )
                for i, size in too_large
            ]
            raise EmitError(
                f"{len(failures)} of {len(events)} events could not be sent to {self.name}: "
                f"{failures[0][1]}",
                failures=failures,
                receipts=sent,
            )
        now = self.clock()
        if now.tzinfo is None:
            raise ConfigurationError("The hub's clock must return timezone-aware datetimes")
        with locked(self.lock_path):
            self._recover()
            state = self.read_state()
            groups: dict[str, list[int]] = {}
            where: dict[str, str] = {}
            for i, event in enumerate(events):
                key = event.partition_key or event.message_id
                # PERF: a batch repeats its keys (one urn, many aspects); hash each once.
                partition = where.get(key)
                if partition is None:
                    partition = where[key] = self.partition_for(key)
                found = groups.get(partition)
                if found is None:
                    groups[partition] = [i]
                else:
                    found.append(i)
            targets: dict[str, _Target] = {}
            stamps: dict[str, int] = {}
            for partition in groups:
                part = self._part(state, partition)
                targets[partition], stamps[partition] = self._target(
                    partition, part, max(enqueued_ms(now), part["last_enqueued_ms"])
                )
            receipts: list[Receipt | None] = [None] * len(events)
            payloads = {
                partition: self._records(
                    partition,
                    events,
                    schema_ids,
                    indexes,
                    self._part(state, partition),
                    stamps[partition],
                    targets[partition],
                    receipts,
                )
                for partition, indexes in groups.items()
            }
            self._write(targets, payloads, state)
        return [r for r in receipts if r is not None]

    def _window_start(self, ms: int) -> int:
        seconds = int(self.window.total_seconds())
        return (ms // 1000) // seconds * seconds

    def _target(self, partition: str, part: dict[str, Any], ms: int) -> tuple[_Target, int]:
        """The file this partition's events go to now, and their enqueued time (epoch ms).

        The partition's current file when it is of this window and sound; else the window's
        file; a damaged one is passed over for a later second of the window.
        """
        seconds = int(self.window.total_seconds())
        window = self._window_start(ms)
        current = part.get("file")
        second = _second_of(current) if isinstance(current, str) else None
        if second is not None and self._window_start(second * 1000) == window:
            relative = str(current)
        else:
            relative = self._relative(partition, window)
        while True:
            found = self._inspect(relative, part)
            if isinstance(found, _Target):
                return found, max(ms, part["last_enqueued_ms"])
            second = _second_of(relative) or window
            later = max(second + 1, ms // 1000)
            if later >= window + seconds:  # the window has no later second left: the next one
                window, later = window + seconds, window + seconds
            ms = max(ms, later * 1000)
            damaged, relative = relative, self._relative(partition, later)
            warn(
                DamagedFileWarning(
                    f"{self.lake_root / damaged} is damaged ({found}); the hub does not append "
                    f"to it and writes these events to {self.lake_root / relative} instead. "
                    "`metaverse doctor --repair` keeps its intact blocks and sets it aside"
                )
            )

    def _relative(self, partition: str, second: int) -> str:
        return capture_path(
            self.namespace, self.name, partition, datetime.fromtimestamp(second, UTC)
        )

    def _inspect(self, relative: str, part: dict[str, Any]) -> _Target | str:
        """A target for appending to ``relative``, or what is wrong with it (a damaged file).

        Costs a ``stat`` and a 16-byte read for the partition's current file; a file the
        hub has not written yet (one copied in, or from an older version) is read once.
        """
        path = self.lake_root / relative
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            header, sync = new_header(self.codec)
            return _Target(relative, 0, sync, self.codec, new=True, header=header)
        if part.get("file") == relative and "length" in part and "sync" in part:
            length, sync = int(part["length"]), bytes.fromhex(part["sync"])
            codec = part.get("codec", self.codec)
            if size < length:
                return f"it is {length - size} bytes shorter than the hub left it"
            with open(path, "rb") as f:
                f.seek(length - 16)
                data = f.read()
            if data[:16] != sync:
                return "its last block does not end with the file's sync marker"
            if size == length:
                return _Target(relative, length, sync, codec, new=False)
            # Complete blocks past the recorded length: a state older than the file (a power
            # cut after the fsync of the events, before the state reached the disk).
            return self._past(relative, data[16:], 0, length, part, sync, codec)
        data = path.read_bytes()
        try:
            sync, codec = check_appendable(data, str(path))
            start = read_header(data)[2]
        except CaptureFileError as exc:
            return str(exc).replace(f"{path} ", "it ", 1)
        return self._past(relative, data, start, 0, part, sync, codec)

    def _past(
        self,
        relative: str,
        data: bytes,
        start: int,
        base: int,
        part: dict[str, Any],
        sync: bytes,
        codec: str,
    ) -> _Target | str:
        """A target after the complete blocks of ``data`` (at ``base`` in the file), or damage.

        The counters move past the events of those blocks either way, so that no sequence
        number in the file is given again, even to events that go to another file.
        """
        scan = scan_blocks(data, start, sync)
        try:
            self._roll_forward(part, data, scan, codec)
        except CaptureFileError as exc:
            return f"its last complete block does not decode ({exc})"
        if scan.tail:
            kind = "a block cut short" if scan.tail == "torn" else "bytes that are no block"
            return f"{len(data) - scan.end} bytes after its last complete block are {kind}"
        return _Target(relative, base + len(data), sync, codec, new=False)

    def _records(
        self,
        partition: str,
        events: Sequence[OutgoingEvent],
        schema_ids: Sequence[str],
        indexes: list[int],
        part: dict[str, Any],
        ms: int,
        target: _Target,
        receipts: list[Receipt | None],
    ) -> bytes:
        """Number this partition's events, fill in their receipts, and encode them as blocks."""
        enqueued = datetime.fromtimestamp(ms / 1000, UTC)
        enqueued_text = format_enqueued_time(enqueued)
        location = str(self.lake_root / target.relative)
        first = sequence = part["next_sequence"]
        offset = part["next_offset"]
        chosen = [events[i] for i in indexes]
        offsets = []
        for i, event in zip(indexes, chosen, strict=True):
            text = str(offset)
            offsets.append(text)
            receipts[i] = Receipt(
                partition,
                sequence,
                text,
                enqueued,
                schema_ids[i],
                event.content_type,
                event.partition_key,
                event.message_id,
                location,
            )
            sequence += 1
            offset += len(event.body) + _ENVELOPE_BYTES
        part.update(next_sequence=sequence, next_offset=offset, last_enqueued_ms=ms)
        return EventDataEncoder().blocks(
            chosen,
            first_sequence=first,
            offsets=offsets,
            enqueued_ms=ms,
            enqueued_text=enqueued_text,
            codec=target.codec,
            sync=target.sync,
        )

    def _write(
        self,
        targets: dict[str, _Target],
        payloads: dict[str, bytes],
        state: dict[str, dict[str, Any]],
    ) -> None:
        """Journal, append (one fsync per file), commit the state, drop the journal."""
        fresh = any(t.new for t in targets.values())
        journal = {
            "format": _JOURNAL_FORMAT,
            "pid": os.getpid(),
            "files": [
                {"partition": p, "path": t.relative, "length": t.length, "new": t.new}
                for p, t in targets.items()
            ],
        }
        # NOTE: durable only when it names a new file: an existing file is named by the state.
        self._set_journal(journal, durable=fresh)
        written: list[_Target] = []
        try:
            for partition, target in targets.items():
                written.append(target)
                self._append(target, payloads[partition])
                self._part(state, partition).update(
                    file=target.relative,
                    length=target.length + len(target.header) + len(payloads[partition]),
                    sync=target.sync.hex(),
                    codec=target.codec,
                )
            self._save(state, durable=fresh)
        except BaseException:
            self._undo(written)
            raise
        self._set_journal(None)

    def _append(self, target: _Target, blocks: bytes) -> None:
        path = self.lake_root / target.relative
        if target.new:
            # NOTE: written whole and renamed into place: a reader never sees half a header.
            with writing(path.parent):
                path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, target.header + blocks)
            fsync_folder(path.parent)
            return
        with writing(path.parent):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(blocks)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _undo(self, written: list[_Target]) -> None:
        """Take back what a failed send wrote, so that it leaves no trace (the journal clears)."""
        try:
            for target in written:
                path = self.lake_root / target.relative
                if target.new:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                else:
                    os.truncate(path, target.length)
            self._set_journal(None)
        except OSError:
            pass  # NOTE: the journal stays, and the next send rolls the files back
