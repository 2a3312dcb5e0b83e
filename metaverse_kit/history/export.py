"""Keep the history as a Parquet dataset: Hive-partitioned by event date, appended incrementally.

Layout of an export folder::

    <out>/event_date=2026-01-05/part-<run>-<n>.parquet     the replay's rows of that UTC day
    <out>/_metaverse/runs/<run>.json                       what each run read and wrote
    <out>/_metaverse/staging/<run>/...                     a run's files before they are moved

DuckDB (``read_parquet('<out>/*/*.parquet', hive_partitioning=true, union_by_name=true)``),
Spark (``spark.read.option("mergeSchema", "true").parquet(out)``), and pandas or polars
through :func:`read_export` read it as it is: folders starting with ``_`` are hidden from
them. Each run writes with the reader schema of its day, so after a schema version added
fields later files have more columns (:func:`export_schema`): a reader that takes one file's
schema (``pd.read_parquet(out)``, Spark without ``mergeSchema``) leaves them out.
``mk.history`` questions take the folder.
An export starts in a new or empty folder (one holding another tool's files is refused) outside
the lake it exports (one that is the lake's folder, is inside it, or holds it is refused); a file
no run named that is put into it later is neither read nor deleted. A first run that fails
leaves the folder as it found it (a folder it created is removed).

Incremental: each run lists the Capture files, reads only those no earlier run recorded (and the
events a grown file gained since; Capture files only ever grow, and one that shrank, repaired or
replaced, is read again whole with a warning), drops events whose message id
the dataset already holds, writes its files into staging, moves them into place and then records
itself (``runs/<run>.json``, written atomically). A run that dies before its record is written
is undone by the next run: its files are deleted and its Capture files read again. Files are
known by their path below the lake's root, so a copy of the lake is the same lake; a run refuses
another lake whose paths match recorded ones (a workspace created again), by the Avro sync
marker of a file an earlier run read. Runs take an exclusive lock on the folder; readers take
none. Where the lock does not reach across machines (Linux keeps the locks of a FUSE file system
that implements none per machine), a run that finds at its commit that another committed
meanwhile records nothing (the first stands), one whose moved files another run removed before
its record was written takes the record back, and a run asks for a record again before it
removes another run's files. Moving a run's files is not one step, so a plain reader may see
part of a run that is committing (or died doing so); :func:`committed_files` lists the files of
recorded runs only, and the questions read those.

The same bookkeeping serves the local export (:func:`export_parquet`, a replay of the new files
through :func:`~metaverse_kit.history.replay.replay_lake`) and the Spark and Dask ones
(:mod:`metaverse_kit.distributed`), which write the staging files with their own workers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit._files import atomic_write, check_text_path, locked
from metaverse_kit.backends.protocols import CaptureFile, Lake, SchemaRegistry
from metaverse_kit.capture import read_header
from metaverse_kit.errors import (
    CaptureFileError,
    ChangedFileWarning,
    ConfigurationError,
    ReadOnlyWorkspaceError,
    warn,
)
from metaverse_kit.history.decode import SkippedPart

__all__ = [
    "EVENT_DATE",
    "ExportFolder",
    "ExportReport",
    "PartWriter",
    "committed_files",
    "export_parquet",
    "export_schema",
    "file_key",
    "message_ids_of",
    "new_run",
    "read_export",
    "with_event_date",
]

#: The Hive partition column of an export: the UTC date of ``enqueued_time``.
EVENT_DATE = "event_date"
_META = "_metaverse"
_EVENT_DATE_TYPE = pa.dictionary(pa.int32(), pa.string())
_PART = re.compile(r"^part-(?P<run>[0-9a-f]{8}-[0-9a-f]{8})-.*\.parquet$")
# A few tens of MB of Capture files decoded and written at a time: memory stays flat.
_CHUNK_BYTES = 64 << 20
# Why an export folder must be named in UTF-8 (see check_text_path).
_UTF8_PATHS = "Parquet datasets are written and read through UTF-8 paths (pyarrow, Spark, DuckDB)"


@dataclass(frozen=True)
class ExportReport:
    """What one export run did: its id, the Capture files it read, the rows it wrote, what it left.

    ``skipped`` lists the damaged parts left out (``on_bad_file="skip"``; every intact block
    was written), as a replay's :func:`~metaverse_kit.skipped_files` does;
    ``duplicates_dropped`` counts events whose message id was already in the dataset or
    earlier in the run. ``undecoded`` counts the rows written with their body raw (a
    ``decode_error`` says why; ``undecoded_reasons`` has the most common reasons): a run
    records its Capture files, so they are not decoded again by a later run that could.
    """

    out: str
    run: str | None
    files: int
    rows: int
    skipped: list[SkippedPart] = field(default_factory=list)
    duplicates_dropped: int = 0
    undecoded: int = 0
    undecoded_reasons: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.run is None:
            return f"{self.out} is up to date: no new Capture files"
        text = f"Wrote {self.rows} events from {self.files} Capture files to {self.out}"
        if self.skipped:
            files = len({s.path for s in self.skipped})
            text += f" ({len(self.skipped)} damaged parts of {files} files skipped)"
        if self.undecoded:
            # NOTE: said at once: an export run without registry= writes every body raw, and
            # its files are recorded, so no later run decodes them.
            text += (
                f"; {self.undecoded} of them could not be decoded and keep their body raw "
                f"({'; '.join(self.undecoded_reasons)}): pass registry= (or schemas=) and "
                "export into a new folder to have them decoded"
            )
        return text


def with_event_date(table: pa.Table | pa.RecordBatch) -> pa.Table:
    """``table`` with the :data:`EVENT_DATE` column (the UTC date of ``enqueued_time``)."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    day = pc.cast(pc.cast(table.column("enqueued_time"), pa.timestamp("ms", tz="UTC")), pa.date32())
    return table.append_column(EVENT_DATE, day)


def new_run(clock: datetime | None = None) -> str:
    """A new run's id: its start time in hex seconds and a random part (two runs of one second
    sort by the random part; a run's record says when it committed, see ``known``)."""
    when = clock or datetime.now(UTC)
    return f"{int(when.timestamp()):08x}-{uuid.uuid4().hex[:8]}"


class ExportFolder:
    """The bookkeeping of one export folder, held under its lock (use as a context manager).

    On entry: takes the lock, deletes what a crashed run left (staging files, data files of
    runs without a record) and reads the records of earlier runs. :meth:`plan` says which
    Capture files (and which of their events) a new run must read; :meth:`commit` moves a
    run's staged files into place and records it. Raises :class:`ConfigurationError` when
    ``out`` is not a folder this machine can write or its name is not UTF-8 text; warns
    :class:`~metaverse_kit.errors.ChangedFileWarning` when a Capture file shrank since it was
    exported (repaired or replaced), and reads it again.
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
            raise ConfigurationError(f"An export goes to a folder path; got {out!r}")
        text = os.fspath(out)
        if "://" in text:
            raise ConfigurationError(
                f"Exports go to a folder this machine (and every worker) can write, such as a "
                f"mounted one (/dbfs/..., /Volumes/..., a shared disk), not {text!r}"
            )
        # NOTE: here, where every engine's export starts: pyarrow's dataset writer failed on
        # such a folder after the whole replay, with a UnicodeEncodeError naming no path.
        check_text_path(text, what="export folder", why=_UTF8_PATHS)
        self.out = Path(text)
        self.meta = self.out / _META
        self.runs: dict[str, dict[str, Any]] = {}
        self._lock: Any = None
        self._staged: set[Path] = set()  # staging folders of runs not committed yet
        self._made: Path | None = None  # the topmost folder this run created, if any
        self._lake_check: dict[str, str] | None = None  # what this run records of its lake

    def __enter__(self) -> ExportFolder:
        if self.out.exists() and not self.out.is_dir():
            raise ConfigurationError(f"{self.out} is a file; an export needs a folder")
        if self.out.is_dir() and not self.meta.is_dir() and _visible(self.out):
            # NOTE: another tool's Hive dataset by event date looks like ours; its files must
            # never be mixed with an export's, nor taken for a crashed run's and deleted.
            raise ConfigurationError(
                f"{self.out} holds files and is not a metaverse-kit export (it has no "
                f"{_META} folder); export into a new or empty folder"
            )
        missing = [p for p in (self.meta, *self.meta.parents) if not p.exists()]
        self._made = missing[-1] if missing else None
        try:
            (self.meta / "runs").mkdir(parents=True, exist_ok=True)
            self._lock = locked(self.meta / "lock")
            self._lock.__enter__()
        except (OSError, ReadOnlyWorkspaceError) as exc:
            self._unmake()
            # NOTE: an existing dataset the user may only read fails at the lock, not mkdir.
            cause = (exc.__cause__ or exc) if isinstance(exc, ReadOnlyWorkspaceError) else exc
            raise ConfigurationError(
                f"Cannot write the export folder {self.out}: {cause}. Export to a folder you "
                "can write; a dataset you can only read still answers the history questions "
                "(mk.history.state_as_of(folder, ...)) and DuckDB, pandas or Spark"
            ) from exc
        try:
            self._read_runs()
            self._recover()
        except BaseException:
            self._unmake()
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        try:
            if exc is not None:
                self._unmake()
            if exc is not None and self._staged:
                # A failed run's staged files go now, not at the next run: a disk that filled
                # up is not left full.
                for folder in self._staged:
                    shutil.rmtree(folder, ignore_errors=True)
                if isinstance(exc, OSError):
                    exc.add_note(
                        f"while writing an export run into {self.out}: nothing was recorded "
                        "and its staged files were removed; the next run reads the same "
                        "Capture files again"
                    )
        finally:
            self._lock.__exit__(None, None, None)

    def _unmake(self) -> None:
        """Remove what this run created when it failed in a folder no run has recorded into.

        NOTE: a first export that fails (a mistyped lake, a refused sign-in, a bad option)
        would otherwise leave a folder behind that looks like an export. Done under the lock.
        What it removes is this run's alone: the bookkeeping, files moved into place but not
        recorded (a next run would delete them as a crashed run's), and the folders it made
        where they are left empty.
        """
        made = self._made
        runs = self.meta / "runs"
        if made is None or not self.meta.is_dir() or (runs.is_dir() and any(runs.iterdir())):
            return
        for entry in self.out.glob(f"{EVENT_DATE}=*"):
            for path in entry.glob("*.parquet"):
                if _run_of(path) is not None:
                    path.unlink()
            with contextlib.suppress(OSError):
                entry.rmdir()
        shutil.rmtree(self.meta, ignore_errors=True)
        for folder in (self.out, *self.out.parents):
            if made not in (folder, *folder.parents):
                break
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break

    def _read_runs(self) -> None:
        for path in sorted((self.meta / "runs").glob("*.json")):
            try:
                record = json.loads(path.read_text("utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigurationError(
                    f"{path} is not a readable export record ({exc}); it was not written by "
                    f"metaverse-kit or was edited"
                ) from exc
            self.runs[path.stem] = record

    def _committed_since(self) -> list[str]:
        """Runs recorded since this folder was opened: none, under a lock that holds.

        NOTE: checked at the commit, so that a run that overlapped another (its lock not
        shared between the machines they ran on) records nothing rather than the same Capture
        files twice; the run that committed first stands.
        """
        return sorted(
            path.stem for path in (self.meta / "runs").glob("*.json") if path.stem not in self.runs
        )

    def _recover(self) -> None:
        shutil.rmtree(self.meta / "staging", ignore_errors=True)
        for path in self.data_files():
            run = _run_of(path)
            # NOTE: a file of a run not recorded when the records were read is asked about
            # again: a run the lock does not keep out (another machine) may have recorded
            # itself since, and its files are the dataset now.
            if run not in self.runs and not self._record_path(str(run)).exists():
                path.unlink(missing_ok=True)

    def _keep_schema(self, definition: str) -> str:
        """Store a reader schema's definition once; its name (a hash of the text)."""
        name = hashlib.sha256(definition.encode("utf-8")).hexdigest()[:16]
        path = self.meta / "schemas" / f"{name}.avsc"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, definition.encode("utf-8"))
        return name

    def _record_path(self, run: str) -> Path:
        return self.meta / "runs" / f"{run}.json"

    def _write_record(self, run: str, record: Mapping[str, Any]) -> None:
        """Write a run's record: the commit point."""
        atomic_write(self._record_path(run), json.dumps(record, indent=1).encode("utf-8"))

    def data_files(self) -> list[Path]:
        """The dataset's Parquet files: below an ``event_date=`` folder, named by a run.

        A file a run did not name (put there by hand or by another tool) is neither read
        nor deleted.
        """
        return [path for path in _data_files(self.out) if _run_of(path) is not None]

    @property
    def known(self) -> dict[str, dict[str, Any]]:
        """Every Capture file recorded by a run, by path: its size, version and events."""
        out: dict[str, dict[str, Any]] = {}
        # NOTE: in commit order (runs commit under the folder's lock): a file that grew between
        # runs keeps its newest record. Run ids sort by their start second only, and two runs
        # in one second sort by their random part.
        for record in sorted(self.runs.values(), key=_commit_order):
            out.update(record.get("files", {}))
        return out

    def plan(
        self, lake: Lake, files: Sequence[CaptureFile]
    ) -> tuple[list[CaptureFile], dict[str, int]]:
        """The files of ``lake`` (``files``, as listed) a new run reads, and the events to skip
        at the start of grown ones.

        Files are recorded by their path below the lake's root (:func:`file_key`), so the
        same lake reached from another folder or machine is recognised. Raises
        :class:`ConfigurationError` when ``lake`` is not the lake earlier runs read
        (:meth:`_check_lake`), or when the folder and the lake's are one inside the other
        (:meth:`_check_apart`).
        """
        root = lake.root
        self._check_apart(root)
        _check_data_files(self.out, self.runs)
        self._check_lake(lake, files)
        known = self.known
        todo: list[CaptureFile] = []
        skip: dict[str, int] = {}
        shrunk: list[str] = []
        for f in files:
            before = known.get(file_key(root, f.path))
            if before is None:
                todo.append(f)
            elif f.size > int(before["size"]):
                todo.append(f)
                skip[f.path] = int(before["events"])
            elif f.size < int(before["size"]):
                # NOTE: Capture files only grow. A smaller one was repaired (`metaverse doctor
                # --repair` keeps the intact blocks, which an export that skipped its damage
                # wrote already) or replaced: read again whole, its events the dataset holds
                # are not written twice, and nothing is lost either way.
                todo.append(f)
                shrunk.append(f"{f.path} ({f.size} bytes, {before['size']} when exported)")
        if shrunk:
            warn(
                ChangedFileWarning(
                    f"{len(shrunk)} Capture file(s) are smaller than when they were exported "
                    "(repaired by `metaverse doctor --repair`, or replaced): read again whole; "
                    "events the dataset holds are not written twice, and rows exported from "
                    f"what they held before stay: {'; '.join(shrunk[:3])}"
                    + (f"; and {len(shrunk) - 3} more" if len(shrunk) > 3 else "")
                )
            )
        self._lake_check = _sync_mark(lake, [f for f in todo if f.path not in skip])
        return todo, skip

    def _check_apart(self, root: str) -> None:
        """Refuse an export folder that is the lake's folder, is inside it, or holds it where a
        reader sees it (no folder on the way starts with ``.`` or ``_``).

        NOTE: ``metaverse replay --out <workspace>/lake`` was taken (an empty lake, or one
        whose folder held only hidden files): Capture then wrote its Avro files among the
        export's, and pandas, pyarrow and Spark, which read every visible file of a dataset
        folder as Parquet, failed on the first one ("Parquet magic bytes not found"). An export
        anywhere inside the lake has its files walked by every replay, and Capture's folders
        may grow into it.
        """
        if not root or "://" in root:
            return
        out, lake = os.path.realpath(self.out), os.path.realpath(root)
        if out == lake or out.startswith(os.path.join(lake, "")):
            raise ConfigurationError(
                f"The export folder {self.out} is {'the' if out == lake else 'inside the'} "
                f"lake's folder {root}: Capture writes its Avro files in the lake's folders, "
                "where Parquet readers of the export (pandas, pyarrow, Spark) would take them "
                "for Parquet files and fail, and every replay would walk the export's files. "
                "Export into a folder outside the lake"
            )
        if lake.startswith(os.path.join(out, "")):
            between = Path(os.path.relpath(lake, out)).parts
            if not any(part.startswith((".", "_")) for part in between):
                raise ConfigurationError(
                    f"The export folder {self.out} holds the lake {root}: Parquet readers of "
                    "the export (pandas, pyarrow, Spark) would take its Avro files for Parquet "
                    "files and fail on them. Export into a folder outside the lake"
                )

    def _check_lake(self, lake: Lake, files: Sequence[CaptureFile]) -> None:
        """Refuse a lake other than the one the folder's runs read.

        NOTE: files are known by their path, so another lake with the same namespace and event
        hub names (a local workspace created again, a second one with the defaults) would have
        its files taken for exported ones and left out, without a word. Each run records the
        Avro sync marker of one of its files (random per file, the same in a copy); this reads
        the header of that file again for the two newest runs whose file is listed. A lake that
        shares no recorded path with the folder loses nothing and is not refused; one that
        shares some paths but none of the marked files is not caught.
        """
        listed = {file_key(lake.root, f.path): f for f in files}
        checked = 0
        for record in sorted(self.runs.values(), key=_commit_order, reverse=True):
            mark = record.get("lake_check")
            if not isinstance(mark, dict) or mark.get("file") not in listed:
                continue
            f = listed[mark["file"]]
            found = _sync_of(lake, f)
            if found is None:
                continue  # damaged since: the replay says so
            if found != mark["sync"]:
                raise ConfigurationError(
                    f"{self.out} holds the export of another lake: its run {record['run']} "
                    f"read {mark['file']} with the Avro sync marker {mark['sync']}, and that "
                    f"file in this lake has {found} (sync markers are random per file: this is "
                    "another file). Its other files would be taken for ones already exported "
                    "and left out. Export each lake (or a workspace created again) into a "
                    "folder of its own"
                )
            checked += 1
            if checked == 2:
                return

    def up_to_date(self) -> ExportReport:
        """The report of a run that found nothing new to read."""
        return ExportReport(str(self.out), None, 0, 0)

    @staticmethod
    def records(
        files: Sequence[CaptureFile],
        *,
        root: str,
        events: Mapping[str, int],
        skipped: Sequence[SkippedPart],
    ) -> dict[str, dict[str, Any]]:
        """What a run records of each Capture file it read: size, version, events (of its
        intact blocks), and why parts of it were skipped.

        NOTE: a damaged file is recorded too, so the next run does not read it again unless it
        grows.
        """
        reasons: dict[str, list[str]] = {}
        for part in skipped:
            reasons.setdefault(part.path, []).append(part.reason)
        out: dict[str, dict[str, Any]] = {}
        for f in files:
            record: dict[str, Any] = {
                "size": f.size,
                "version": f.version,
                "events": int(events.get(f.path, 0)),
            }
            if f.path in reasons:
                record["skipped"] = "; ".join(reasons[f.path])
            out[file_key(root, f.path)] = record
        return out

    def holding(self, ids: set[str]) -> set[str]:
        """Which of ``ids`` the dataset holds already.

        PERF: reads the ``message_id`` column one file at a time and keeps only what is among
        ``ids`` (a run's, which it holds anyway), so memory does not grow with the history:
        the set of every id a dataset of 10,000,000 events holds is about 1 GB of Python
        strings, and would be built again every night.
        """
        if not ids:
            return set()
        wanted = pa.array(list(ids), pa.string())
        held: set[str] = set()
        for path in self.data_files():
            column = message_ids_of(path)
            found = pc.filter(column, pc.is_in(column, value_set=wanted))
            held.update(pc.unique(found).to_pylist())
        return held

    def staging(self, run: str) -> Path:
        """Where a run writes its files before :meth:`commit` moves them into place."""
        folder = self.meta / "staging" / run
        folder.mkdir(parents=True, exist_ok=True)
        self._staged.add(folder)
        return folder

    def commit(
        self,
        run: str,
        *,
        files: Mapping[str, dict[str, Any]],
        rows: int,
        skipped: Sequence[SkippedPart] = (),
        duplicates: int = 0,
        engine: str = "local",
        written: Collection[str] | None = None,
        reader: str | None = None,
    ) -> ExportReport:
        """Move the run's staged files into place, then record the run (the commit point).

        ``written``, when given, names the staged files that make the run (relative to its
        staging folder, as :class:`PartWriter` reports them): the others are removed first (a
        failed or speculative attempt of an engine's task wrote them under another name).
        ``rows`` is what the run wrote; the staged files must hold that many. Raises
        :class:`ConfigurationError`, recording nothing and removing what was staged, when they
        do not: an engine's workers wrote where this process cannot see (an export folder
        that is not shared), and recording the run would mark its Capture files as exported.
        ``reader`` is the definition of the reader schema the run wrote its rows with: kept
        (once per definition, in ``_metaverse/schemas/``) so that :func:`read_export` reads
        the rows of earlier runs as the later ones' schema, defaults filled in.
        """
        import pyarrow.parquet as pq

        staged = self.meta / "staging" / run
        parts = sorted(staged.glob(f"{EVENT_DATE}=*/*.parquet")) if staged.exists() else []
        if written is not None:
            keep = set(written)
            for path in [p for p in parts if p.relative_to(staged).as_posix() not in keep]:
                path.unlink()
                parts.remove(path)
        others = self._committed_since()
        if others:
            shutil.rmtree(staged, ignore_errors=True)
            raise ConfigurationError(
                f"Another export run ({', '.join(others)}) committed into {self.out} while run "
                f"{run} ran: two runs at once, which the folder's lock excludes only where its "
                "file system shares locks between machines (a FUSE mount such as /Volumes/... "
                f"or blobfuse may lock per machine). Nothing of run {run} was recorded and its "
                "staged files are removed; the next run reads what is still new. Run one "
                "export into a folder at a time"
            )
        found = undecoded = 0
        for path in parts:
            with pq.ParquetFile(path) as data:
                found += data.metadata.num_rows
                undecoded += _undecoded(data)
        if found != rows:
            shutil.rmtree(staged, ignore_errors=True)
            why = (
                "its workers wrote where this process cannot see. An export folder must be one "
                "path the driver and every worker share (a mounted volume such as /dbfs/... or "
                "/Volumes/..., a shared disk); or another run started in the folder meanwhile "
                "and removed them as a crashed run's (run one export into a folder at a time)"
                if found < rows
                else "something other than the run wrote into its staging folder (two runs "
                "given the same run id, or a task's attempt that the engine did not report)"
            )
            raise ConfigurationError(
                f"The export run {run} wrote {rows} rows, but {found} are in {staged} "
                f"({len(parts)} files): {why}. Nothing was recorded: the next run reads these "
                "Capture files again"
            )
        moved = []
        for n, path in enumerate(parts):
            target = self.out / path.parent.name / f"part-{run}-{n:05d}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            moved.append(target)
        record = {
            "run": run,
            "engine": engine,
            "finished": datetime.now(UTC).isoformat(),
            "rows": rows,
            "duplicates_dropped": duplicates,
            "files": dict(files),
            "skipped": [part.to_dict() for part in skipped],
            # NOTE: the run's own data files, so that one lost later (deleted by hand, a sync
            # that dropped it) is found: the dataset would answer without its rows.
            "data_files": [path.relative_to(self.out).as_posix() for path in moved],
        }
        if self._lake_check is not None:
            record["lake_check"] = self._lake_check
        if reader is not None:
            record["reader_schema"] = self._keep_schema(reader)
        self._write_record(run, record)
        lost = [path for path in moved if not path.exists()]
        if lost:
            # NOTE: another run started between this run's moves and its record (a lock that
            # does not reach across machines) and removed the files as a crashed run's. The
            # record would name events the dataset does not hold: it is taken back.
            self._record_path(run).unlink(missing_ok=True)
            for path in moved:
                path.unlink(missing_ok=True)
            shutil.rmtree(staged, ignore_errors=True)
            raise ConfigurationError(
                f"Another export run started in {self.out} while run {run} committed, and "
                f"removed {len(lost)} of its {len(moved)} files as a crashed run's (two runs "
                "at once, which the folder's lock excludes only where its file system shares "
                "locks between machines). Nothing of run "
                f"{run} is recorded; the next run reads its Capture files again. Run one export "
                "into a folder at a time"
            )
        shutil.rmtree(staged, ignore_errors=True)
        self._staged.discard(staged)
        self.runs[run] = record
        return ExportReport(
            str(self.out),
            run,
            len(files),
            rows,
            list(skipped),
            duplicates,
            undecoded,
            _common_reasons(moved) if undecoded else [],
        )


def committed_files(out: str | os.PathLike[str]) -> list[str] | None:
    """The data files of the runs an export folder recorded, or None when ``out`` is not one.

    A run moves all its files into place and then writes its record (the commit), so these are
    the dataset as of a commit: a run that is moving its files, or that died while doing so,
    has none among them, while a plain Parquet reader of the folder sees its files until the
    next run removes or records them. Takes no lock: readers never wait for a run. For Spark:
    ``spark.read.option("basePath", out).option("mergeSchema", "true")
    .parquet(*committed_files(out))``; for DuckDB:
    ``read_parquet(committed_files(out), hive_partitioning=true, union_by_name=true)``.
    Raises :class:`ConfigurationError` when data files its runs recorded are gone, or when the
    folder's name is not UTF-8 text.
    """
    found = _committed(Path(out))
    return None if found is None else found[0]


def _committed(root: Path) -> tuple[list[str], dict[str, dict[str, Any]]] | None:
    """:func:`committed_files` and the records of the runs that wrote them."""
    runs = root / _META / "runs"
    if not runs.is_dir():
        return None
    # NOTE: an export renamed into such a folder failed in pyarrow, naming no path.
    check_text_path(root, what="export folder", why=_UTF8_PATHS)
    # NOTE: the records before the files, so every file of a run seen recorded is in place.
    records = {}
    for path in runs.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):  # a record being written: not yet one
            records[path.stem] = json.loads(path.read_text("utf-8"))
    _check_data_files(root, records)
    return [str(path) for path in _data_files(root) if _run_of(path) in records], records


def _check_data_files(root: Path, records: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise :class:`ConfigurationError` when data files that runs recorded are gone.

    NOTE: a file deleted by hand (or dropped by a copy or sync) took its rows out of every
    answer without a word, and the next run said "up to date": its Capture files stay
    recorded. Runs recorded before 2026-12-03 do not list their files and are not checked.
    """
    lost = [
        (run, name)
        for run, record in sorted(records.items())
        for name in record.get("data_files", ())
        if not (root / name).is_file()
    ]
    if lost:
        run, name = lost[0]
        raise ConfigurationError(
            f"The export {root} has lost {len(lost)} data file(s) its runs wrote (such as "
            f"{name}, of run {run}): it would answer without their rows. Put them back, or "
            "export into a new folder"
        )


def read_export(out: str | os.PathLike[str]) -> pa.Table | None:
    """The rows of an export folder as of its last commit (:func:`committed_files`), or None
    when ``out`` is not one; a table of no columns when no run has written rows to it.

    Every run's columns are there (:func:`export_schema`); rows of runs that wrote fewer read
    the missing ones as null. Raises :class:`ConfigurationError` when runs wrote types that do
    not combine, or when the folder's name is not UTF-8 text.
    """
    import pyarrow.dataset as ds

    found = _committed(Path(out))
    if found is None:
        return None
    files, records = found
    if not files:
        return pa.table({})
    partition = pa.field(EVENT_DATE, pa.string())
    schema = export_schema(out, files).append(partition)

    def read(some: list[str], schema: pa.Schema | None) -> pa.Table:
        return ds.dataset(
            some,
            format="parquet",
            partitioning=ds.partitioning(pa.schema([partition]), flavor="hive"),
            partition_base_dir=os.fspath(out),
            schema=schema,
        ).to_table()

    # NOTE: each run wrote with the reader schema of its day. Rows of a run whose reader was
    # older are read as the newest run's reader reads them, as a replay would: a field a
    # later version added takes its default (null would differ from the replay's answers,
    # and `changes` would report the default's arrival as a change).
    older = _older_runs(Path(out), records)
    by_run: dict[str, list[str]] = {}
    for f in files:
        by_run.setdefault(str(_run_of(Path(f))), []).append(f)
    rest = [f for f in files if str(_run_of(Path(f))) not in older]
    tables = [read(rest, schema)] if rest else []
    for run, (writer, reader) in older.items():
        if run in by_run:
            tables.append(_resolved(read(by_run[run], None), writer, reader))
    table = (
        tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    )
    table = table.select(schema.names) if older else table
    # The partition column as pyarrow.parquet.read_table gives it for the folder: a dictionary.
    column = table.schema.get_field_index(EVENT_DATE)
    return table.set_column(
        column, EVENT_DATE, table.column(column).dictionary_encode().cast(_EVENT_DATE_TYPE)
    )


def _older_runs(root: Path, records: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """The runs whose reader schema is not the newest run's: ``{run: (its reader's
    definition, the newest run's)}``. Runs that recorded no reader (before 2026-12-03, or
    ``schema=False``) are read as they are."""
    named = [
        (record["reader_schema"], run)
        for run, record in sorted(records.items(), key=lambda item: _commit_order(item[1]))
        if isinstance(record.get("reader_schema"), str)
    ]
    if not named or len({name for name, _ in named}) == 1:
        return {}
    newest = named[-1][0]

    def definition(name: str) -> str | None:
        with contextlib.suppress(OSError):
            return (root / _META / "schemas" / f"{name}.avsc").read_text("utf-8")
        return None

    reader = definition(newest)
    out = {}
    for name, run in named:
        writer = definition(name) if name != newest else None
        if reader is not None and writer is not None:
            out[run] = (writer, reader)
    return out


def _resolved(table: pa.Table, writer: str, reader: str) -> pa.Table:
    """The rows of one run, written with ``writer``'s payload columns, as ``reader`` reads
    them (:mod:`metaverse_kit.history._resolve`, the replay's own resolution); a row that does
    not resolve keeps a null payload and says why in ``decode_error``."""
    from metaverse_kit.history._resolve import ResolutionUnsupported, resolution
    from metaverse_kit.history.arrow_types import mapping_for

    plan = resolution(writer, reader)
    fields = list(mapping_for(writer).type)
    if plan.identity or any(f.name not in table.column_names for f in fields):
        return table
    try:
        values = pa.StructArray.from_arrays(
            [table.column(f.name).combine_chunks().cast(f.type) for f in fields], fields=fields
        )
        out, failures = plan.apply(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ResolutionUnsupported):
        return table  # NOTE: read as before (the later fields null) rather than not at all
    for resolved, column in zip(out.type, out.flatten(), strict=True):
        at = table.schema.get_field_index(resolved.name)
        table = (
            table.set_column(at, resolved.name, column)
            if at >= 0
            else table.append_column(resolved.name, column)
        )
    if failures is not None and "decode_error" in table.column_names:
        why = pa.array(failures, pa.string())
        at = table.schema.get_field_index("decode_error")
        table = table.set_column(
            at, "decode_error", pc.if_else(pc.is_valid(why), why, table.column(at))
        )
    return table


def export_schema(out: str | os.PathLike[str], files: Sequence[str]) -> pa.Schema:
    """The schema of an export's ``files`` together: every run's columns (the partition column
    ``event_date`` is in the folder names, not in the files).

    NOTE: each run writes with the reader schema of its day, so after a schema version added
    a field (at the top or deep in the value) later runs' files have more than earlier ones.
    A dataset takes its first file's schema and would leave the new fields out without a
    word (``pd.read_parquet`` and ``pq.read_table`` on the folder do); here the earlier rows
    read them as null. A run's files share one schema: one file of each is asked.
    Raises :class:`ConfigurationError` when two runs wrote types that do not combine.
    """
    import pyarrow.parquet as pq

    first: dict[str | None, str] = {}
    for f in files:
        first.setdefault(_run_of(Path(f)), f)
    try:
        schema = pa.unify_schemas(
            [pq.read_schema(f) for f in first.values()], promote_options="permissive"
        )
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise ConfigurationError(
            f"The runs of the export {out} wrote columns whose types do not combine ({exc}); "
            "read the runs apart (committed_files lists the files) or export into a new folder"
        ) from exc
    return schema


def message_ids_of(path: str | os.PathLike[str]) -> pa.Array:
    """The ``message_id`` column of one of an export's data files, read alone.

    PERF: ``ParquetFile``, not ``read_table``: half the time (no dataset discovery per file);
    and a path with glob characters (``[``, ``?``) is read as it is, not expanded.
    """
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as data:
        return data.read(columns=["message_id"]).column("message_id").combine_chunks()


def _undecoded(data: Any) -> int:
    """How many rows of a data file (a ``pq.ParquetFile``) have a ``decode_error``.

    PERF: from the row groups' statistics (its null count) when pyarrow wrote them, as it does.
    """
    meta = data.metadata
    if not meta.num_row_groups:
        return 0
    # NOTE: the statistics are per leaf column (nested fields are many), named by their path.
    first = meta.row_group(0)
    leaves = [first.column(j).path_in_schema for j in range(first.num_columns)]
    if "decode_error" not in leaves:
        return 0
    column = leaves.index("decode_error")
    total = 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        stats = group.column(column).statistics
        if stats is None or not stats.has_null_count:
            errors = data.read_row_group(i, columns=["decode_error"]).column(0)
            total += len(errors) - errors.null_count
        else:
            total += group.num_rows - stats.null_count
    return total


def _common_reasons(paths: Sequence[Path], most: int = 3) -> list[str]:
    """The most common ``decode_error`` texts in these data files, with their counts."""
    import pyarrow.parquet as pq

    counts: dict[str, int] = {}
    for path in paths:
        errors = pq.read_table(path, columns=["decode_error"]).column(0).drop_null()
        for value in pc.value_counts(errors).to_pylist():
            counts[value["values"]] = counts.get(value["values"], 0) + value["counts"]
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:most]
    return [f"{n} x {reason}" for reason, n in ranked]


def _commit_order(record: Mapping[str, Any]) -> tuple[str, str]:
    return (str(record.get("finished")), str(record["run"]))


def _sync_of(lake: Lake, file: CaptureFile) -> str | None:
    """The Avro sync marker of ``file`` (hex), or None when it is not a readable archive."""
    try:
        _, sync, _ = read_header(lake.read_bytes(file), where=file.path)
    except CaptureFileError:
        return None
    return sync.hex()


def _sync_mark(lake: Lake, files: Sequence[CaptureFile]) -> dict[str, str] | None:
    """What a run records for :meth:`ExportFolder._check_lake`: the sync marker of the
    smallest of its new files that is a readable archive (read whole: a lake reads no part)."""
    for f in sorted((f for f in files if f.size > 0), key=lambda f: f.size)[:3]:
        sync = _sync_of(lake, f)
        if sync is not None:
            return {"file": file_key(lake.root, f.path), "sync": sync}
    return None


def _visible(folder: Path) -> bool:
    """Whether ``folder`` holds anything but hidden entries (``.ipynb_checkpoints``, ...)."""
    return any(not entry.name.startswith(".") for entry in folder.iterdir())


def _data_files(out: Path) -> list[Path]:
    return sorted(out.glob(f"{EVENT_DATE}=*/*.parquet"))


def _run_of(path: Path) -> str | None:
    """The run that wrote the data file at ``path``, or None when a run did not name it."""
    m = _PART.match(path.name)
    return None if m is None else m["run"]


def file_key(root: str, path: str) -> str:
    """How an export records a Capture file: its path below the lake's root (forward slashes)."""
    base = str(Path(root)) if root and "://" not in root else root
    if base and path.startswith(base):
        return path[len(base) :].replace(os.sep, "/").lstrip("/") or Path(path).name
    return path.replace(os.sep, "/")


def write_part(table: pa.Table, folder: Path, name: str) -> list[str]:
    """Write ``table`` (with :data:`EVENT_DATE`) into ``folder``, one file per event date; the
    files written, relative to ``folder`` (forward slashes)."""
    import pyarrow.dataset as ds

    written: list[str] = []
    if not table.num_rows:
        return written
    base = str(folder).replace(os.sep, "/").rstrip("/") + "/"
    ds.write_dataset(
        table,
        folder,
        format="parquet",
        partitioning=ds.partitioning(pa.schema([table.schema.field(EVENT_DATE)]), flavor="hive"),
        basename_template=f"{name}-{{i}}.parquet",
        existing_data_behavior="overwrite_or_ignore",
        file_visitor=lambda f: written.append(f.path.replace(os.sep, "/").removeprefix(base)),
    )
    return written


class PartWriter:
    """Rows of an export run written into its staging folder a few tens of MB at a time, so
    that memory stays flat: files ``<name>-<n>-<i>.parquet`` below ``event_date=<day>``.

    ``name`` must be the writer's own within the run: on an engine, a task attempt's, so that
    two attempts never write one file; :attr:`files` is what the commit is told to keep.
    """

    def __init__(self, folder: Path, schema: pa.Schema, name: str) -> None:
        self.folder = folder
        self.schema = schema
        self.name = name
        self.rows = 0
        #: The files written, relative to ``folder`` (see :func:`write_part`).
        self.files: list[str] = []
        self._batches: list[pa.RecordBatch] = []
        self._size = self._chunk = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Keep ``batch`` (of :attr:`schema`) to write; writes once enough is kept."""
        if batch.num_rows:
            self._batches.append(batch.replace_schema_metadata(None))
            self._size += batch.nbytes
        if self._size >= _CHUNK_BYTES:
            self._flush()

    def close(self) -> int:
        """Write what is kept; the rows written in all."""
        self._flush()
        return self.rows

    def _flush(self) -> None:
        if self._batches:
            table = pa.Table.from_batches(self._batches, self.schema)
            part = f"{self.name}-{self._chunk:05d}"
            self.files += write_part(with_event_date(table), self.folder, part)
            self.rows += table.num_rows
        self._batches, self._size, self._chunk = [], 0, self._chunk + 1


class _Files:
    """The files of one export run, read through the lake they were listed from."""

    def __init__(self, lake: Lake, files: Sequence[CaptureFile]) -> None:
        self.root = lake.root
        self._lake = lake
        self._files = list(files)

    def list_files(self, **_: Any) -> list[CaptureFile]:
        return list(self._files)

    def read_bytes(self, file: CaptureFile) -> bytes:
        return self._lake.read_bytes(file)

    def close(self) -> None:
        """The lake is the caller's to close."""


def export_parquet(
    location: Any,
    out: str | os.PathLike[str],
    *,
    registry: SchemaRegistry | None = None,
    schema_group: str | None = None,
    schema: Any = None,
    storage_options: dict | None = None,
    on_bad_file: str = "raise",
) -> ExportReport:
    """Append the Capture files that are new since the last run to the Parquet dataset at ``out``.

    ``location``, ``registry``, ``schema`` and ``storage_options`` as in
    :func:`~metaverse_kit.replay_capture` (a Workspace's ``ws.lake`` works too;
    ``schema_group`` is where ``schema=None`` looks first, as ``ws.replay`` does). Rows are the
    local replay's, with :data:`EVENT_DATE` as the Hive partition; a message id already in the
    dataset is not written again. ``on_bad_file="skip"`` keeps every intact block of a damaged
    file, records what it left out in the run and the report (and warns
    :class:`~metaverse_kit.errors.CaptureFileWarning`); the file is not read again unless it
    grows.

    Raises :class:`CaptureFileError` for a damaged file (``on_bad_file="raise"``; nothing is
    written) and :class:`ConfigurationError` for a bad option or an unwritable ``out``.
    """
    from metaverse_kit.backends import open_lake
    from metaverse_kit.history.replay import dedup_batch, reader_schema, replay_lake

    lake = open_lake(location, storage_options=storage_options)
    with ExportFolder(out) as folder:
        todo, skip = folder.plan(lake, lake.list_files())
        if not todo:
            return folder.up_to_date()
        events: dict[str, int] = {}

        def counted(progress: Any) -> None:
            events[progress.file.path] = progress.events

        # The reader chosen once, here: the run records it (see ExportFolder.commit).
        payload = reader_schema(schema, registry=registry, schema_group=schema_group)
        stream = replay_lake(
            _Files(lake, todo),
            registry=registry,
            schema_group=schema_group,
            schema=payload if payload is not None else False,
            dedup=False,
            cache=False,
            progress=False,
            on_bad_file=on_bad_file,
            on_file=counted,
        )
        run = new_run()
        staging = folder.staging(run)
        # The run's own ids: repeats within the run are dropped as they come, and the ones the
        # dataset holds already are looked up once the run is staged (see ExportFolder.holding).
        seen: set[str] = set()
        dropped = 0
        parts = PartWriter(staging, stream.schema, "chunk")
        for batch in stream:
            path = batch.column("capture_file")[0].as_py()
            if skip.get(path):
                batch = batch.slice(skip[path])
            batch, repeats = dedup_batch(batch, seen)
            dropped += repeats
            parts.add(batch)
        rows = parts.close()
        held = _drop_staged(staging, folder.holding(seen))
        return folder.commit(
            run,
            files=folder.records(todo, root=lake.root, events=events, skipped=stream.skipped_files),
            rows=rows - held,
            skipped=stream.skipped_files,
            duplicates=dropped + held,
            reader=payload.definition if payload is not None else None,
        )


def _drop_staged(staging: Path, ids: set[str]) -> int:
    """Drop the rows with these message ids from the staged files; how many were dropped.

    A file left with no rows is removed. Copies of exported events are rare (at-least-once
    delivery, a file copied into the lake), so this mostly reads nothing.
    """
    import pyarrow.parquet as pq

    if not ids:
        return 0
    wanted = pa.array(list(ids), pa.string())
    dropped = 0
    for path in sorted(staging.glob(f"{EVENT_DATE}=*/*.parquet")):
        table = pq.read_table(path, partitioning=None)
        keep = pc.invert(pc.is_in(table.column("message_id"), value_set=wanted))
        kept = table.filter(pc.fill_null(keep, True))
        if kept.num_rows == table.num_rows:
            continue
        dropped += table.num_rows - kept.num_rows
        if kept.num_rows:
            pq.write_table(kept, path)
        else:
            path.unlink()
    return dropped
