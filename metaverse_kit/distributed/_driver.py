"""The driver's half of a distributed replay: list and prune files, resolve schemas, plan dedup.

Engines (:mod:`.spark`, :mod:`.dask`) run the two passes of :mod:`._tasks`; everything that
needs the whole history or the registry happens here, once, on the driver:

1. :class:`Planner` lists the Capture files with the same lake code as the local replay (so the
   same pruning by partition and time, and the same order) and checks the options.
2. The engine runs :func:`~._tasks.scan_files` over the files and hands back the summary rows
   and the rows of message ids that occur more than once (:data:`REPEATED_SCHEMA`).
3. :meth:`Planner.finish` raises on, or reports, damaged files; resolves the schema ids the
   files use (``schemas=`` first, then ``registry=``); and chooses, for each repeated message
   id, the copy the local replay keeps: the first in (file order, position in file).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit.backends.protocols import CaptureFile, Lake, Schema, SchemaRegistry
from metaverse_kit.distributed._tasks import (
    BAD_FILE_CHOICES,
    SCAN_SCHEMA,
    SkippedFile,
    TaskSpec,
    scan_files,
)
from metaverse_kit.errors import CaptureFileError, ConfigurationError, SchemaNotFoundError

__all__ = ["REPEATED_SCHEMA", "SUMMARY_COLUMNS", "Planner", "ReplayPlan", "SkippedFilesWarning"]

#: The columns of the scan's summary rows that engines hand back (one row per file).
SUMMARY_COLUMNS = ("path", "events", "schema_ids", "error")

#: Rows of the message ids that occur more than once, one per copy, as engines hand them back.
REPEATED_SCHEMA = pa.schema(
    [
        pa.field("message_id", pa.string()),
        pa.field("path", pa.string()),
        pa.field("row", pa.int64()),
    ]
)


class SkippedFilesWarning(UserWarning):
    """Damaged Capture files were left out (``on_bad_file="skip"``); ``skipped`` lists them."""

    def __init__(self, message: str, skipped: Sequence[SkippedFile]) -> None:
        super().__init__(message)
        self.skipped = list(skipped)


@dataclass(frozen=True)
class ReplayPlan:
    """What the decode pass needs: the files to read, in replay order, and the task's spec."""

    files: list[CaptureFile]
    spec: TaskSpec
    arrow_schema: pa.Schema
    skipped: list[SkippedFile]
    #: Every listed file's event count (all events, before filtering), by path.
    events: dict[str, int]
    #: Events the decode pass drops as copies of an earlier one (or of an exported one).
    duplicates: int = 0


def _definition(value: Any, schema_id: str) -> str:
    if isinstance(value, Schema):
        return value.definition
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    raise ConfigurationError(
        f"schemas[{schema_id!r}] must be a definition (JSON text or dict) or a registry Schema, "
        f"not {type(value).__name__}"
    )


class Planner:
    """Lists the files of one distributed replay and, after the scan, plans the decode pass.

    Takes the options of :func:`~metaverse_kit.distributed.spark_replay`; raises
    :class:`ConfigurationError` for a bad one before any engine work starts.
    """

    def __init__(
        self,
        location: Any,
        *,
        registry: SchemaRegistry | None,
        schemas: Mapping[str, Any] | None,
        schema: Any,
        start: datetime | str | None,
        end: datetime | str | None,
        partitions: Sequence[str | int] | None,
        storage_options: dict | None,
        on_bad_file: str,
        dedup: bool = True,
    ) -> None:
        from metaverse_kit.backends import open_lake
        from metaverse_kit.history.replay import _as_utc, reader_schema

        if on_bad_file not in BAD_FILE_CHOICES:
            raise ConfigurationError(
                f"on_bad_file is one of {', '.join(map(repr, BAD_FILE_CHOICES))}, "
                f"not {on_bad_file!r}"
            )
        if schemas is not None and not isinstance(schemas, Mapping):
            raise ConfigurationError(
                f"schemas= maps schema ids to definitions, not a {type(schemas).__name__}"
            )
        self.registry = registry
        self.given = {str(k): _definition(v, str(k)) for k, v in (schemas or {}).items()}
        payload = reader_schema(schema, registry=registry)
        self.payload = payload
        self.arrow_schema = payload.arrow_schema() if payload else _envelope_schema()
        start_utc, end_utc = _as_utc(start, "start"), _as_utc(end, "end")
        if start_utc and end_utc and start_utc > end_utc:
            raise ConfigurationError(f"start ({start_utc}) is after end ({end_utc})")
        parts = None if partitions is None else tuple(str(p) for p in partitions)
        self.lake: Lake = open_lake(location, storage_options=storage_options)
        self.storage_options = storage_options
        self.files = self.lake.list_files(
            partitions=None if parts is None else list(parts), start=start_utc, end=end_utc
        )
        self.dedup = dedup
        self.spec = TaskSpec(
            payload=payload.definition if payload else None,
            start=start_utc,
            end=end_utc,
            partitions=parts,
            on_bad_file=on_bad_file,
            roots=_roots(self.lake),
        )

    @classmethod
    def for_export(
        cls,
        location: Any,
        *,
        registry: SchemaRegistry | None,
        schemas: Mapping[str, Any] | None,
        schema: Any,
        storage_options: dict | None,
        on_bad_file: str,
    ) -> Planner:
        """A planner over the whole history (an export takes no time or partition range)."""
        return cls(
            location,
            registry=registry,
            schemas=schemas,
            schema=schema,
            start=None,
            end=None,
            partitions=None,
            storage_options=storage_options,
            on_bad_file=on_bad_file,
        )

    def only(self, files: Sequence[CaptureFile], skip_rows: Mapping[str, int]) -> None:
        """Narrow the replay to ``files``, skipping the first ``skip_rows`` events of some."""
        self.files = list(files)
        self.spec = replace(self.spec, skip_rows=dict(skip_rows))

    @property
    def readable(self) -> list[CaptureFile]:
        """The files an engine reads (engines skip empty files: the driver decodes those)."""
        return [f for f in self.files if f.size > 0]

    def engine_path(self, file: CaptureFile) -> str:
        """How an engine is given ``file``: a ``file://`` URI for a local file, else its URL."""
        if "://" in file.path:
            return file.path
        return "file://" + os.path.abspath(file.path)

    def finish(
        self, summaries: pa.Table, repeated: pa.Table, exported: pa.Table | None = None
    ) -> ReplayPlan:
        """The decode pass's plan from the scan's summary rows and repeated message ids.

        Raises :class:`CaptureFileError` for the first damaged file in replay order with
        ``on_bad_file="raise"``, and when a listed file was not read (it disappeared, or the
        engine could not see it). With ``"skip"``, warns :class:`SkippedFilesWarning`.
        ``exported`` (an export's) has the (message_id, path, row) of events whose message id
        the dataset already holds: none of their copies is kept.
        """
        rows = summaries.select(list(SUMMARY_COLUMNS)).to_pylist()
        empty = [(f.path, b"") for f in self.files if f.size == 0]
        if empty:
            scanned = pa.Table.from_batches([scan_files(empty, self.spec)], SCAN_SCHEMA)
            rows += (
                scanned.filter(pc.less(scanned["row"], 0)).select(list(SUMMARY_COLUMNS)).to_pylist()
            )
        seen = {row["path"]: row for row in rows}
        skipped: list[SkippedFile] = []
        good: list[CaptureFile] = []
        for f in self.files:
            row = seen.get(f.path)
            if row is None:
                raise CaptureFileError(
                    f"{f.path} was listed but not read: it disappeared while replaying, or the "
                    f"engine cannot see it (is the folder shared with every worker?)"
                )
            if row["error"] is None:
                good.append(f)
            elif self.spec.on_bad_file == "raise":
                raise CaptureFileError(row["error"])
            else:
                skipped.append(SkippedFile(f.path, row["error"], 0))
        if skipped:
            listed = "; ".join(f"{s.path} ({s.reason})" for s in skipped[:5])
            more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
            warnings.warn(
                SkippedFilesWarning(
                    f"{len(skipped)} damaged Capture file(s) left out: {listed}{more}", skipped
                ),
                stacklevel=3,
            )
        ids = {i for f in good for i in seen[f.path]["schema_ids"] or ()}
        first = self._first_copies(repeated) if self.dedup else {}
        gone = set() if exported is None else set(exported.column("message_id").to_pylist())
        copies = [m for m in repeated.column("message_id").to_pylist() if m not in gone]
        # Every copy of an exported id goes; of the others, all but the first.
        duplicates = len(copies) - len(set(first) - gone) if self.dedup else 0
        duplicates += 0 if exported is None else exported.num_rows
        first.update({m: ("", -1) for m in gone})
        spec = replace(self.spec, schemas=self._resolve(ids), first_copies=first)
        return ReplayPlan(
            files=good,
            spec=spec,
            arrow_schema=self.arrow_schema,
            skipped=skipped,
            events={p: int(row["events"] or 0) for p, row in seen.items()},
            duplicates=duplicates,
        )

    def _resolve(self, ids: set[str]) -> dict[str, str]:
        """Definitions of the schema ids the files use: ``schemas=`` first, then the registry."""
        out = {i: d for i, d in self.given.items()}
        if self.registry is not None:
            for schema_id in sorted(ids - set(out)):
                try:
                    out[schema_id] = self.registry.get_schema(schema_id).definition
                except SchemaNotFoundError:
                    continue
        return out

    def _first_copies(self, repeated: pa.Table) -> dict[str, tuple[str, int]]:
        order = {f.path: i for i, f in enumerate(self.files)}
        first: dict[str, tuple[int, int, str]] = {}
        for mid, path, row in zip(
            repeated.column("message_id").to_pylist(),
            repeated.column("path").to_pylist(),
            repeated.column("row").to_pylist(),
            strict=True,
        ):
            key = (order.get(path, len(order)), int(row), path)
            if mid not in first or key < first[mid]:
                first[mid] = key
        return {mid: (path, row) for mid, (_, row, path) in first.items()}


def _envelope_schema() -> pa.Schema:
    from metaverse_kit.history.replay import ENVELOPE_FIELDS

    return pa.schema(ENVELOPE_FIELDS)


def _roots(lake: Lake) -> tuple[tuple[str, str], ...]:
    """(absolute prefix, the listing's prefix) for a local lake listed from a relative folder."""
    if "://" in lake.root or not lake.root:
        return ()
    root = str(Path(lake.root))
    absolute = os.path.abspath(root)
    return () if absolute == root else ((absolute, root),)
