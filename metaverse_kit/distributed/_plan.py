"""The driver's half of a distributed replay: list the files, know the schemas, plan the decode.

Everything that needs the whole history or the registry happens here, once, on the driver;
executors and workers run :mod:`._tasks` with what :class:`Planner` puts in the spec:

1. :class:`Planner` lists the Capture files with the lake code of the local replay (the same
   pruning by partition and time, the same order), chooses the reader schema as the local
   replay does, and collects the definition of every schema id the driver knows
   (:func:`registry_schemas` plus ``schemas=``): executors never call the registry.
2. The engine runs the plan pass (:func:`~._tasks.scan_rows`) and groups its rows by
   (kind, key): a row per file and one per message id that occurs more than once, with the
   replay order of its first copy (Spark with a hash aggregate; Dask by the ids' hashes
   first, see :mod:`metaverse_kit.distributed.dask`).
3. :meth:`Planner.finish` raises, as the local replay would, for the first damaged file in
   replay order (``on_bad_file="raise"``), or warns :class:`~metaverse_kit.errors.
   CaptureFileWarning` with the local message and keeps the :class:`SkippedPart` records;
   and puts the repeated ids in the spec of the decode pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit.backends.protocols import CaptureFile, Lake, SchemaRegistry
from metaverse_kit.distributed._tasks import FILE, MESSAGE, FileEntry, TaskSpec, engine_key
from metaverse_kit.errors import (
    CaptureFileError,
    ConfigurationError,
    MetaverseError,
    SchemaNotFoundError,
)
from metaverse_kit.events.avro import AvroSchema
from metaverse_kit.history.decode import (
    SKIPPED_KEY,
    SkippedPart,
    check_options,
    output_schema,
    skipped_metadata,
)
from metaverse_kit.history.export import ExportFolder
from metaverse_kit.history.replay import (
    DUPLICATES_DROPPED_KEY,
    REPLAY_START_KEY,
    check_flag,
    check_registry,
    partial_start,
    reader_schema,
    replay_range,
    schema_definition,
    warn_skipped,
)

__all__ = ["GROUPED_SCHEMA", "Plan", "Planner", "held_before", "records", "registry_schemas"]

#: What an engine hands back from the plan pass: its rows grouped by (kind, key), with the
#: smallest ``order`` (``first``) and the number of rows (``n``) of each; every :data:`FILE`
#: row, and the :data:`MESSAGE` rows whose id occurs more than once.
GROUPED_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.int8()),
        pa.field("key", pa.string()),
        pa.field("first", pa.int64()),
        pa.field("n", pa.int64()),
        pa.field("info", pa.string()),
    ]
)


def registry_schemas(registry: SchemaRegistry) -> dict[str, str]:
    """Every schema version ``registry`` lists, as ``{schema id: definition}``, oldest first.

    What a distributed replay ships to executors, and what to save for a cluster that cannot
    reach the registry (``spark_replay(..., schemas=json.load(...))``): in this order,
    ``schema=None`` there picks the same newest MCE version as with ``registry=``. Azure
    Schema Registry cannot list every schema of a group (``registry.lists_all_schemas`` is
    False): it lists the names this toolkit knows, with all their versions. Raises what the
    registry raises.
    """
    found: list[tuple[int, int, str, str]] = []
    groups = registry.list_groups()
    for g, group in enumerate(groups):
        for name in registry.list_schemas(group):
            for version in registry.list_versions(group, name):
                try:
                    schema = registry.get_schema(group_name=group, name=name, version=version)
                except SchemaNotFoundError:
                    continue
                found.append((version, -g, schema.properties.id, schema.definition))
    # NOTE: ascending versions; of equal ones the first group's last, as reader_schema picks it.
    return {schema_id: definition for _, _, schema_id, definition in sorted(found)}


@dataclass(frozen=True)
class Plan:
    """The decode pass's spec and what the plan pass found."""

    spec: TaskSpec
    arrow_schema: pa.Schema
    #: The listed files, in replay order.
    files: list[CaptureFile]
    #: Damaged parts left out (``on_bad_file="skip"``), in replay order.
    skipped: list[SkippedPart]
    #: Every listed file's event count (of its intact blocks, before any filter), by path.
    events: dict[str, int]
    #: Events the decode pass drops as copies of an earlier one (or of an exported one).
    duplicates: int = 0
    #: ``start=`` when the replay leaves events of the lake before it out (else None).
    start: datetime | None = None

    @property
    def export_rows(self) -> int:
        """The rows an export run's decode pass gives: every event of its files (of their
        intact blocks, less the start an earlier run exported) but the copies it drops."""
        kept = sum(
            max(self.events.get(e.file.path, 0) - e.skip, 0) for e in self.spec.files.values()
        )
        return kept - self.duplicates


class Planner:
    """Lists the files of one distributed replay and, after the plan pass, plans the decode.

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

        check_options(decoder="auto", on_bad_file=on_bad_file)
        if schemas is not None and not isinstance(schemas, Mapping):
            raise ConfigurationError(
                f"schemas= maps schema ids to definitions, not a {type(schemas).__name__}"
            )
        given = {str(k): schema_definition(v, str(k)) for k, v in (schemas or {}).items()}
        for schema_id, definition in given.items():
            # A mapping the user wrote is checked here, on the driver, once: a typo would
            # otherwise surface as a decode error on every event that uses the id, or never.
            try:
                AvroSchema(definition)
            except MetaverseError as exc:
                raise ConfigurationError(
                    f"schemas[{schema_id!r}] is not an Avro schema: {exc}"
                ) from exc
        start_utc, end_utc, parts = replay_range(start, end, partitions)
        check_registry(registry)
        check_flag(dedup, "dedup")
        payload = reader_schema(schema, registry=registry, schemas=schemas)
        self.lake: Lake = open_lake(location, storage_options=storage_options)
        self.storage_options = storage_options
        self.files = self.lake.list_files(partitions=parts, start=start_utc, end=end_utc)
        self.arrow_schema = output_schema(payload)
        self.dedup = dedup
        # What the listing alone says of the start (see _partial_start), once asked.
        self._listed: tuple[datetime | None] | None = None
        known = registry_schemas(registry) if registry is not None else {}
        self.spec = TaskSpec(
            reader=payload.definition if payload else None,
            schemas={**known, **given},
            on_bad_file=on_bad_file,
            start=start_utc,
            end=end_utc,
            partitions=None if parts is None else tuple(parts),
            files=self._entries(self.files, {}),
        )

    @classmethod
    def for_export(
        cls,
        folder: ExportFolder,
        location: Any,
        *,
        registry: SchemaRegistry | None,
        schemas: Mapping[str, Any] | None,
        schema: Any,
        storage_options: dict | None,
        on_bad_file: str,
    ) -> Planner | None:
        """The planner of an export run into ``folder``: the whole history's files that are new
        since its last run (and the events grown files gained); None when there are none."""
        planner = cls(
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
        todo, skip = folder.plan(planner.lake, planner.files)
        if not todo:
            return None
        planner.files = list(todo)
        planner.spec = replace(planner.spec, files=cls._entries(planner.files, skip))
        return planner

    @staticmethod
    def _entries(files: Sequence[CaptureFile], skip: Mapping[str, int]) -> dict[str, FileEntry]:
        return {
            engine_key(f.path): FileEntry(f, i, int(skip.get(f.path, 0)))
            for i, f in enumerate(files)
        }

    def engine_path(self, file: CaptureFile) -> str:
        """How an engine is given ``file``: a ``file://`` URI for a local file, else its URL."""
        if "://" in file.path:
            return file.path
        return "file://" + engine_key(file.path)

    @property
    def local(self) -> bool:
        """True when every file is on this machine's file system."""
        return all("://" not in f.path for f in self.files)

    def finish(self, grouped: pa.Table) -> Plan:
        """The decode pass's plan from the plan pass's grouped rows (:data:`GROUPED_SCHEMA`).

        Raises :class:`CaptureFileError`: with ``on_bad_file="raise"`` the local replay's error
        for the first damaged file in replay order; and when a listed file was not read (it
        disappeared, or the engine could not see it). With ``"skip"``, warns
        :class:`~metaverse_kit.errors.CaptureFileWarning` as the local replay does. Message ids
        grouped with an ``order`` of -1 (an export's: already in the dataset) keep no copy.
        """
        kinds = grouped.column("kind").to_numpy(zero_copy_only=False)
        files = grouped.filter(pa.array(kinds == FILE))
        info = dict(
            zip(
                files.column("key").to_pylist(),
                (json.loads(i) for i in files.column("info").to_pylist()),
                strict=True,
            )
        )
        skipped: list[SkippedPart] = []
        for f in self.files:
            found = info.get(f.path)
            if found is None:
                raise CaptureFileError(
                    f"{f.path} was listed but not read: it disappeared while replaying, or the "
                    f"engine cannot see it (is the folder shared with every worker?)"
                )
            if found["error"]:
                raise CaptureFileError(found["error"])
            skipped.extend(SkippedPart(**s) for s in found["skipped"])
        if skipped:
            warn_skipped(skipped)
        repeats = grouped.filter(pa.array(kinds == MESSAGE))
        if not self.dedup:
            # NOTE: an export never turns dedup off; only copies of exported ids go then.
            repeats = repeats.filter(pc.equal(repeats.column("first"), -1))
        counts = repeats.column("n").to_numpy(zero_copy_only=False)
        spec = replace(
            self.spec,
            repeated=repeats.column("key").combine_chunks() if repeats.num_rows else None,
            first=repeats.column("first").to_numpy(zero_copy_only=False).astype(np.int64),
        )
        return Plan(
            spec=spec,
            arrow_schema=self.arrow_schema,
            files=self.files,
            skipped=skipped,
            events={p: int(i["events"]) for p, i in info.items()},
            duplicates=int((counts - 1).sum()) if repeats.num_rows else 0,
            start=self._partial_start(cut=held_before(info.values())),
        )

    def unplanned(self, *, cut: bool = False) -> Plan:
        """The plan of a replay that runs no plan pass (``dedup=False`` with ``"raise"``):
        damage then raises in the decode pass, when the engine reads the file. ``cut``: a
        file of :meth:`boundary_files` held events before ``start=`` (see :func:`held_before`).
        """
        return Plan(
            spec=self.spec,
            arrow_schema=self.arrow_schema,
            files=self.files,
            skipped=[],
            events={},
            start=self._partial_start(cut=cut),
        )

    def boundary_files(self) -> list[CaptureFile]:
        """What a replay without a plan pass scans (its envelopes only) to know whether
        ``start=`` left events of the lake out, as the local replay knows it: the listed files
        that may hold events from before ``start`` (whose window began before it, or that are
        outside Capture's layout); none without ``start``, or when the listing already tells
        (files wholly before it were pruned).

        NOTE: a file holds events enqueued from the time in its path on (what the listing prunes
        by), so these are a few files per partition; without them a question asked of the
        replay would not warn that values written before ``start`` are unknown.
        """
        start = self.spec.start
        if start is None or self._partial_start(cut=False) is not None:
            return []
        return [f for f in self.files if f.window_start is None or f.window_start < start]

    def _partial_start(self, *, cut: bool) -> datetime | None:
        if not cut and self._listed is not None:
            return self._listed[0]
        partitions = None if self.spec.partitions is None else list(self.spec.partitions)
        found = partial_start(
            self.lake, start=self.spec.start, partitions=partitions, read=self.files, cut=cut
        )
        if not cut:
            # NOTE: one listing of the lake (a list call per partition and time prefix) per replay.
            self._listed = (found,)
        return found

    @property
    def needs_scan(self) -> bool:
        """Whether the plan pass must run: to deduplicate, or to report what skip mode skips."""
        return self.dedup or self.spec.on_bad_file == "skip"


def held_before(infos: Iterable[Mapping[str, Any]]) -> bool:
    """Whether a file of the plan pass's :data:`FILE` rows (their ``info``, read) held events
    before the replay's ``start``."""
    return any(i.get("before") for i in infos)


def records(plan: Plan) -> dict[str, str]:
    """What a replay records on the DataFrame it returns (read by ``mk.skipped_files`` and
    ``mk.duplicates_dropped``): JSON text by key."""
    out = {DUPLICATES_DROPPED_KEY.decode(): str(plan.duplicates)}
    if plan.skipped:
        out[SKIPPED_KEY.decode()] = skipped_metadata(plan.skipped).decode()
    if plan.start is not None:
        out[REPLAY_START_KEY.decode()] = plan.start.isoformat()
    return out
