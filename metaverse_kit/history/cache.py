"""The warm replay cache: each Capture file's decoded events kept in Arrow IPC form.

A replay decodes a Capture file once; later replays map its Arrow copy instead, which is many
times faster (an entry takes about half the disk its rows take memory in the table, see below;
the folder may be deleted at any time). One cache file per (Capture file path, payload schema),
named by a hash of both and of :data:`FORMAT_VERSION`, so a changed Capture file overwrites its
own entry instead of piling up new ones. An entry is used only when everything it was made
from still holds:

- the Capture file's path, size and version (local: size and modification time in ns; Azure:
  size and ETag; see :class:`~metaverse_kit.backends.protocols.CaptureFile`);
- the payload schema and the table's Arrow schema (their fingerprint) and the format version;
- the definition of every schema id the file's events name, as the registry gives it now (an
  id that was unknown when the entry was written and is known now, or the reverse, rebuilds).

Anything else (a missing, truncated or foreign file, another Arrow schema) is treated as a
miss and the file is decoded again, so the cache can make a replay faster but never change
its answer. An entry of a damaged Capture file replayed with ``on_bad_file="skip"`` remembers
what was skipped (a replay that raises on damaged files then raises from it too). Writes go to a
temporary file in the same folder (``.<entry>.<pid>.<random>.tmp``), then ``os.replace``, so a
reader never sees half an entry and two processes filling the cache at once do no harm; a
process killed mid-write leaves its temporary file, which :func:`remove_leftovers` removes once
that process is gone (with the native decoder's own temporary files).

Small files decoded as one group (a quiet hub's files of an event or two, see
:func:`~metaverse_kit.history.decode.assemble`) are kept as one **group entry**
(``<hash>.group``: the group's batch) and, per file, an entry of its header alone that says
where its rows are in the group and which writing of the group it is (a random ``id`` the group
entry's header holds too: an entry is used only with the group written with it, see
:meth:`ReplayCache.put_group`). PERF: an entry read back is a
batch of ~400 Arrow arrays whatever its rows (~0.4 ms and ~260 KB of structure): 5,000 files of
an event or two replayed warm took longer than decoding them again and held 1.3 GB for a 14 MB
table. A group entry is written before the entries that point into it (a reader finds it or
misses), and one that no entry points into any longer (its files changed) is deleted when the
last of them is replaced.

A batch is written without its all-null subtrees (union branches and optional records that
none of its events uses; :mod:`~metaverse_kit.history._sparse`), their paths in the entry's
header, and they are put back when it is read. PERF: they are about half of a DataHub MCE batch
in Arrow IPC (``benchmarks/replay.py``'s history: 246 MB of cache for 100,000 events, 128 MB
without them), and filling the cache was mostly the system time of writing them.

An entry's name includes :data:`FORMAT_VERSION`, so after an upgrade the old entries are
never read nor overwritten; the first write to a folder after it removes them
(:func:`remove_stale_entries`, once per folder and format).

Where: ``<workspace>/cache/replay`` for ``ws.replay`` on a local workspace; otherwise the
per-user folder ``$XDG_CACHE_HOME/metaverse-kit/replay`` (``~/.cache/metaverse-kit/replay``).
The cache may be deleted at any time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit._files import atomic_write, file_mode
from metaverse_kit.backends.protocols import CaptureFile
from metaverse_kit.errors import ConfigurationError
from metaverse_kit.history._sparse import NullMemo, SubtreePath, without_nulls

__all__ = [
    "FORMAT_VERSION",
    "CacheHit",
    "ReplayCache",
    "default_cache_dir",
    "open_cache",
    "remove_leftovers",
    "remove_stale_entries",
    "schema_fingerprint",
]

#: Bumped whenever what a replay puts in a table changes; older entries are then ignored.
#: 3: bodies of other schema versions are resolved to the reader (defaults, not nulls).
#: 4: an entry holds the batch's IPC message only, without the stream's schema message.
#: 5: small files decoded together share a group entry.
#: 6: a batch is written without its all-null subtrees (their paths in the header).
#: 7: an event holding a date or time no Python object holds has a decode_error, no payload.
FORMAT_VERSION = 7
# Schema metadata key of a decoded batch that lists what of its file was skipped (see decode).
_SKIPPED_KEY = b"metaverse.skipped_files"

# An entry: _MAGIC, the length of the JSON that follows (4 bytes, little-endian), that JSON
# (what the entry was made from), zero padding to a multiple of 64 bytes, then the Arrow IPC
# message of one batch (no schema message: the fingerprint in the JSON stands for the schema,
# and the batch is read with the replay's own schema object, so nothing compares schemas).
# PERF: the built-in MCE's schema message is 31 KB (with its stream's padding and end, ~38 KB
# an entry); a quiet hub's file of an event or two made an entry of ~87 KB with it (5,000
# files: 390 MB of cache for a 14 MB table), ~49 KB without (246 MB).
_MAGIC = b"MKCACHE1"
_ALIGN = 64
# PERF: Arrow IPC, uncompressed (``RecordBatch.serialize``), memory-mapped when read: a warm
# replay maps the file instead of decoding it. Parquet (and compressed IPC) were measured slower
# by 5-10x here: an MCE row has ~400 leaf columns, one per field of every union branch (see ADR
# 3 for the numbers).
_log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """The per-user replay cache folder: ``$XDG_CACHE_HOME/metaverse-kit/replay``.

    ``~/.cache/metaverse-kit/replay`` when ``XDG_CACHE_HOME`` is not set.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "metaverse-kit" / "replay"


def schema_fingerprint(arrow_schema: pa.Schema, definition: str | None) -> str:
    """A hash of what shapes a decoded table: the Arrow schema, the payload schema, the format."""
    h = hashlib.sha256()
    h.update(f"format {FORMAT_VERSION}\n".encode())
    h.update(arrow_schema.to_string(show_schema_metadata=False).encode())
    h.update(b"\n")
    h.update((definition or "").encode())
    return h.hexdigest()


def _definition_hash(definition: str | None) -> str | None:
    return None if definition is None else hashlib.sha256(definition.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CacheHit:
    """A file's cached batch; ``within`` is its group entry's batch and where the file's rows
    start in it, when the file was kept with others (see :meth:`ReplayCache.put_group`)."""

    batch: pa.RecordBatch
    within: tuple[pa.RecordBatch, int] | None = None


_GROUP_SUFFIX = ".group"


class ReplayCache:
    """Decoded Capture files as Arrow IPC entries under ``root`` (rules: module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        # The group entry read last (its name, id, fingerprint, schema and batch): the files of a
        # group come one after another, and every one of them is a slice of the same batch.
        self._last_group: tuple[str, str, str, pa.Schema, pa.RecordBatch] | None = None
        self._last_empty: tuple[pa.Schema, pa.RecordBatch] | None = None
        self._nulls = NullMemo()
        self._swept = False
        self._mode: int | None = None  # of new entries: asked once, not per entry

    def __repr__(self) -> str:
        return f"ReplayCache({str(self.root)!r})"

    def entry_path(self, file: CaptureFile, fingerprint: str) -> Path:
        """Where the entry of ``file`` decoded with the schema ``fingerprint`` is kept."""
        return self._entry_at(file.path, fingerprint)

    def _entry_at(self, path: str, fingerprint: str) -> Path:
        key = hashlib.sha256(f"{fingerprint}\0{path}".encode()).hexdigest()
        return self.root / key[:2] / f"{key}.arrow"

    def _group_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{_GROUP_SUFFIX}"

    @staticmethod
    def _group_key(files: Sequence[CaptureFile], fingerprint: str) -> str:
        # NOTE: named by what it holds, so decoding the same files again overwrites it instead
        # of leaving a copy behind.
        h = hashlib.sha256(f"group\0{fingerprint}".encode())
        for f in files:
            h.update(f"\0{f.path}\0{f.size}\0{f.version}".encode())
        return h.hexdigest()

    def _expected(self, file: CaptureFile, fingerprint: str) -> dict[str, object]:
        return {
            "format": FORMAT_VERSION,
            "fingerprint": fingerprint,
            "path": file.path,
            "size": file.size,
            "version": file.version,
        }

    def get(
        self,
        file: CaptureFile,
        fingerprint: str,
        arrow_schema: pa.Schema,
        schemas: Callable[[str], str | None],
    ) -> CacheHit | None:
        """The cached batch of ``file`` (and, for a file kept in a group entry, the group's
        batch it is a slice of), or None when there is none that is still right."""
        path = self.entry_path(file, fingerprint)
        try:
            with pa.memory_map(str(path)) as source:
                data = source.read_buffer()
            info, start = _read_header(data)
            if not self._still_right(info, file, fingerprint, schemas):
                return None
            assert isinstance(info, dict)  # _still_right checked it
            within = None
            if "group" in info:
                group = self._group(
                    str(info["group"]), str(info["group_id"]), fingerprint, arrow_schema
                )
                offset, rows = int(info["offset"]), int(info["rows"])
                if group is None or offset + rows > group.num_rows:
                    return None
                batch, within = group.slice(offset, rows), (group, offset)
            elif info.get("rows") == 0:
                batch = self._empty(arrow_schema)
            else:
                batch = self._read_batch(data.slice(start), info, arrow_schema)
            skipped = info.get("skipped")
            if skipped:
                batch = batch.replace_schema_metadata({_SKIPPED_KEY: json.dumps(skipped).encode()})
        except FileNotFoundError:
            return None
        except Exception as exc:  # a torn or foreign file is a miss, never an error
            _log.debug("ignoring unreadable replay cache entry %s: %s", path, exc)
            return None
        return CacheHit(batch, within)

    def _read_batch(self, data: pa.Buffer, info: dict, arrow_schema: pa.Schema) -> pa.RecordBatch:
        """The entry's batch, its all-null subtrees (``info["nulls"]``) put back."""
        return self._nulls.read(data, arrow_schema, info["nulls"])

    def _empty(self, arrow_schema: pa.Schema) -> pa.RecordBatch:
        """A batch of no rows of ``arrow_schema`` (made once per schema object)."""
        last = self._last_empty
        if last is None or last[0] is not arrow_schema:
            last = self._last_empty = (
                arrow_schema,
                pa.RecordBatch.from_pylist([], schema=arrow_schema),
            )
        return last[1]

    def _group(
        self, key: str, group_id: str, fingerprint: str, arrow_schema: pa.Schema
    ) -> pa.RecordBatch | None:
        """The batch of the group entry ``key`` as written with the id ``group_id``; None when
        it is gone, written again since (another id) or not what was written."""
        last = self._last_group
        if (
            last is not None
            and last[0] == key
            and last[1] == group_id
            and last[2] == fingerprint
            and last[3] is arrow_schema
        ):
            return last[4]
        path = self._group_path(key)
        try:
            with pa.memory_map(str(path)) as source:
                data = source.read_buffer()
            info, start = _read_header(data)
            if not (
                isinstance(info, dict)
                and info.get("format") == FORMAT_VERSION
                and info.get("fingerprint") == fingerprint
                and info.get("id") == group_id
            ):
                return None
            batch = self._read_batch(data.slice(start), info, arrow_schema)
            if batch.num_rows != info.get("rows"):
                return None
        except FileNotFoundError:
            return None
        except Exception as exc:  # a torn or foreign file is a miss, never an error
            _log.debug("ignoring unreadable replay cache group %s: %s", path, exc)
            return None
        self._last_group = (key, group_id, fingerprint, arrow_schema, batch)
        return batch

    def _still_right(
        self,
        info: object,
        file: CaptureFile,
        fingerprint: str,
        schemas: Callable[[str], str | None],
    ) -> bool:
        if not isinstance(info, dict) or any(
            info.get(k) != v for k, v in self._expected(file, fingerprint).items()
        ):
            return False
        used = info.get("schemas")
        return isinstance(used, dict) and all(
            _definition_hash(schemas(sid)) == digest for sid, digest in used.items()
        )

    def put(
        self,
        file: CaptureFile,
        fingerprint: str,
        batch: pa.RecordBatch,
        schemas: Callable[[str], str | None],
    ) -> None:
        """Keep ``batch`` as the entry of ``file``; a cache that cannot be written is skipped."""
        path = self.entry_path(file, fingerprint)
        old = self._group_of(path)
        info = self._info(file, fingerprint, batch, schemas)
        stored = None
        if batch.num_rows == 0:
            # PERF: Capture writes empty files; a batch of no rows is still ~37 KB of IPC
            # message for the built-in MCE's ~400 columns, and ~0.4 ms to read back.
            info["rows"] = 0
        else:
            stored, info["nulls"] = _without_nulls(batch)
        self._write(path, _header(info), stored)
        if old is not None:
            self._drop_unused_group(old, fingerprint)

    def put_group(
        self,
        members: Sequence[tuple[CaptureFile, pa.RecordBatch]],
        group: pa.RecordBatch,
        fingerprint: str,
        schemas: Callable[[str], str | None],
    ) -> None:
        """Keep ``group`` once and, per file of ``members``, an entry pointing into it.

        ``members`` are the files decoded together, in order, each with its batch: a slice of
        ``group``, and together all of its rows. A cache that cannot be written is skipped.

        NOTE: the group entry is named by its files, so another process decoding them at the
        same time (with another registry, or none) writes the same name with other rows; each
        writing carries a random id, and an entry is used only with the group of its own id.
        """
        files = [f for f, _ in members]
        key = self._group_key(files, fingerprint)
        group_id = secrets.token_hex(8)
        stored, nulls = _without_nulls(group)
        if not self._write(
            self._group_path(key),
            _header(
                {
                    "format": FORMAT_VERSION,
                    "fingerprint": fingerprint,
                    "id": group_id,
                    "rows": group.num_rows,
                    "files": [f.path for f in files],
                    "nulls": nulls,
                }
            ),
            stored,
        ):
            return
        offset = 0
        replaced: set[str] = set()
        for file, batch in members:
            info = self._info(file, fingerprint, batch, schemas)
            info.update(group=key, group_id=group_id, offset=offset, rows=batch.num_rows)
            offset += batch.num_rows
            path = self.entry_path(file, fingerprint)
            old = self._group_of(path)
            if old is not None and old != key:
                replaced.add(old)
            self._write(path, _header(info), None)
        for old in replaced:
            self._drop_unused_group(old, fingerprint)

    def _info(
        self,
        file: CaptureFile,
        fingerprint: str,
        batch: pa.RecordBatch,
        schemas: Callable[[str], str | None],
    ) -> dict[str, object]:
        ids = {sid for sid in pc.unique(batch.column("schema_id")).to_pylist() if sid is not None}
        info = self._expected(file, fingerprint)
        info["schemas"] = {sid: _definition_hash(schemas(sid)) for sid in sorted(ids)}
        skipped = (batch.schema.metadata or {}).get(_SKIPPED_KEY)
        if skipped:
            info["skipped"] = json.loads(skipped)
        return info

    def _group_of(self, path: Path) -> str | None:
        """The group entry the entry at ``path`` points into, if it is one that does."""
        try:
            info = _peek_header(path)
        except Exception:  # missing, torn or foreign: none
            return None
        group = info.get("group") if isinstance(info, dict) else None
        return group if isinstance(group, str) else None

    def _drop_unused_group(self, key: str, fingerprint: str) -> None:
        """Delete the group entry ``key`` when no entry of its files points into it any more.

        NOTE: a process writing the same group at this moment can lose it; its files are then
        decoded again by the next replay (a miss), never read wrong.
        """
        path = self._group_path(key)
        try:
            info = _peek_header(path)
            files = info["files"]  # type: ignore[index]
        except FileNotFoundError:
            return
        except Exception:
            files = []  # torn or foreign: nothing can use it
        for name in files:
            if self._group_of(self._entry_at(str(name), fingerprint)) == key:
                return
        with contextlib.suppress(OSError):
            path.unlink()

    def _write(self, path: Path, header: bytes, batch: pa.RecordBatch | None) -> bool:
        """Write an entry atomically (a temporary file, then ``os.replace``); False if not."""
        if not self._swept:
            self._swept = True
            remove_stale_entries(self.root)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{path.name.split('.')[0]}.{os.getpid()}.",
                suffix=_TMP_SUFFIX,
                dir=path.parent,
            )
            if self._mode is None:
                self._mode = file_mode()
            os.fchmod(fd, self._mode)
            os.close(fd)
            # PERF: Arrow's own file writes the buffers directly, not through Python's io.
            with pa.OSFile(tmp, "wb") as sink:
                sink.write(header)
                if batch is not None:
                    sink.write(batch.serialize())
            os.replace(tmp, path)
        except OSError as exc:
            # NOTE: the cache only saves time; a read-only or full disk must not fail a replay.
            _log.debug("could not write replay cache entry %s: %s", path, exc)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return False
        return True


def _without_nulls(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[SubtreePath]]:
    """:func:`~metaverse_kit.history._sparse.without_nulls`, or ``batch`` whole if that fails.

    NOTE: the cache only saves time: a batch of a shape the pruning does not foresee is kept
    as it is (its entry is larger), never a failed replay.
    """
    try:
        return without_nulls(batch)
    except Exception as exc:
        _log.debug("replay cache keeps a batch whole: %s", exc)
        return batch, []


def _header(info: dict[str, object]) -> bytes:
    text = json.dumps(info, sort_keys=True).encode()
    head = _MAGIC + len(text).to_bytes(4, "little") + text
    return head + b"\0" * (-len(head) % _ALIGN)


def _read_header(data: pa.Buffer) -> tuple[object, int]:
    """The JSON of an entry and where its Arrow stream starts; ValueError when it is not one."""
    head = memoryview(data)
    if bytes(head[: len(_MAGIC)]) != _MAGIC:
        raise ValueError("not a replay cache entry")
    size = int.from_bytes(head[len(_MAGIC) : len(_MAGIC) + 4], "little")
    end = len(_MAGIC) + 4 + size
    if end > len(head):
        raise ValueError("truncated header")
    return json.loads(bytes(head[len(_MAGIC) + 4 : end])), end + (-end % _ALIGN)


def _peek_header(path: Path) -> object:
    """The JSON header of the entry at ``path``, read without its batch."""
    with open(path, "rb") as f:
        head = f.read(len(_MAGIC) + 4)
        if head[: len(_MAGIC)] != _MAGIC or len(head) < len(_MAGIC) + 4:
            raise ValueError("not a replay cache entry")
        size = int.from_bytes(head[len(_MAGIC) :], "little")
        text = f.read(size)
    if len(text) != size:
        raise ValueError("truncated header")
    return json.loads(text)


def open_cache(cache: bool | str | os.PathLike[str] | ReplayCache | None) -> ReplayCache | None:
    """The cache a ``cache=`` option names: True the per-user folder, a path, False/None none."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return ReplayCache(default_cache_dir())
    if isinstance(cache, ReplayCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return ReplayCache(cache)
    raise ConfigurationError(
        f"cache= takes True (the per-user cache folder), False (no cache) or a folder path; "
        f"got {type(cache).__name__}"
    )


# -- entries of other formats --------------------------------------------------------------------

# A file at the cache folder's root: the format its entries were last swept for.
_STAMP = "FORMAT"
_ENTRY_NAME = re.compile(r"^[0-9a-f]{64}\.(arrow|group)$")
_SUBFOLDER = re.compile(r"^[0-9a-f]{2}$")


def remove_stale_entries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the entries of other cache formats from ``folder``; return the paths removed.

    Entries are named by a hash that includes :data:`FORMAT_VERSION`, so an upgrade leaves the
    old ones unused and never overwritten: half a table's size on disk, per event, for good.
    The first write of a :class:`ReplayCache` calls this; a folder already swept for this
    format (its ``FORMAT`` file says so) is left alone, so it costs one small read. Only files
    named as entries (``<64 hex>.arrow`` or ``.group`` in a folder of two hex digits) are
    looked at, and removed when their header names another format or is not an entry header
    at all (the formats before 4 had none); an entry is always written whole (see
    :meth:`ReplayCache._write`), so one of this format always has its header. Files that
    cannot be read or removed are left. NOTE: a process of an older version using the same
    folder at the same time loses its entries (its next replay decodes those files again) and
    may write more of them, which stay until the next format's sweep.
    """
    root = Path(folder).expanduser()
    stamp = root / _STAMP
    try:
        if stamp.read_text().strip() == str(FORMAT_VERSION):
            return []
    except (OSError, UnicodeDecodeError):
        pass
    removed: list[Path] = []
    if not os.access(root, os.W_OK):
        return removed  # nothing could be removed nor the stamp written: no reading every entry
    try:
        subfolders = [d for d in root.iterdir() if _SUBFOLDER.match(d.name) and d.is_dir()]
    except OSError:
        return removed
    for sub in subfolders:
        try:
            names = [p for p in sub.iterdir() if _ENTRY_NAME.match(p.name)]
        except OSError:
            continue
        for path in names:
            try:
                info = _peek_header(path)
                stale = not isinstance(info, dict) or info.get("format") != FORMAT_VERSION
            except ValueError:
                stale = True  # no header: a format before 4, or not ours to keep
            except Exception:
                continue  # unreadable: left
            if stale:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    with contextlib.suppress(OSError):
        atomic_write(stamp, f"{FORMAT_VERSION}\n".encode(), durable=False)
    return removed


# -- leftovers of dead processes ----------------------------------------------------------------

_TMP_SUFFIX = ".tmp"
# ".<entry>.<pid>.<random>.tmp" (entries), "mk-replay-<pid>-<random>.avro" (native reads)
_ENTRY_TMP = re.compile(r"^\.[0-9a-f]{64}\.(?P<pid>\d+)\..+\.tmp$")
_OLD_ENTRY_TMP = re.compile(r"^\.[0-9a-f]{64}\.[^.]+\.tmp$")
# ".FORMAT.<pid>.<random>.tmp" (the format stamp; atomic_write's names), in the folder itself
_STAMP_TMP = re.compile(rf"^\.{re.escape(_STAMP)}\.(?P<pid>\d+)\..+\.tmp$")
_READ_TMP = re.compile(r"^mk-replay-(?P<pid>\d+)-.+\.avro$")
_OLD_READ_TMP = re.compile(r"^mk-replay-[a-z0-9_]{8}\.avro$")
# A temporary file without a pid (written before they carried one) is a leftover after this.
_OLD_AGE_S = 3600.0


def _listing(folder: Path) -> list[Path]:
    """What ``folder`` holds; nothing when it is missing, not a folder, or cannot be read.

    NOTE: a team's workspace can hold a member's cache folder the others cannot list; opening
    the workspace (which calls :func:`remove_leftovers`) failed with PermissionError.
    """
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_leftovers(
    folder: str | os.PathLike[str] | None = None,
    *,
    temp_folders: Sequence[str | os.PathLike[str]] | None = None,
    clock: Callable[[], float] = time.time,
) -> list[Path]:
    """Remove what replays killed mid-way left behind; return the paths removed.

    Looks in ``folder`` (a replay cache folder, such as ``<workspace>/cache/replay``; None:
    none) for half-written entries and format stamps, and in the native decoder's temporary
    folders (``/dev/shm`` and the temp folder, or ``temp_folders``) for its temporary copies.
    A file is removed only when the process that wrote it (the pid in its name) is gone, so a
    replay running now is never disturbed; a temporary file from before names carried a pid is
    removed once an hour old. Files that cannot be removed are left and not reported.
    """
    from metaverse_kit.history import _decoder

    removed: list[Path] = []

    def drop(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            return
        removed.append(path)

    def consider(
        path: Path, current: re.Pattern[str], legacy: re.Pattern[str] | None = None
    ) -> None:
        m = current.match(path.name)
        if m:
            if not _alive(int(m["pid"])):
                drop(path)
        elif legacy is not None and legacy.match(path.name):
            try:
                old = clock() - path.stat().st_mtime > _OLD_AGE_S
            except OSError:
                return
            if old:
                drop(path)

    if folder is not None:
        for sub in _listing(Path(folder).expanduser()):
            if not sub.is_dir():
                consider(sub, _STAMP_TMP)
                continue
            for path in _listing(sub):
                consider(path, _ENTRY_TMP, _OLD_ENTRY_TMP)
    for temp in _decoder.temp_folders() if temp_folders is None else temp_folders:
        try:
            names = os.listdir(temp)
        except OSError:
            continue
        for name in names:
            consider(Path(temp) / name, _READ_TMP, _OLD_READ_TMP)
    return removed
