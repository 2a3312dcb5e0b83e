"""Replay Capture archives into Arrow: listing, pruning, the cache, deduplication, skip policy.

One core, :func:`replay_lake`, streams a lake's events (a :class:`ReplayStream` of RecordBatches,
one per Capture file, whose :meth:`~ReplayStream.to_table` collects them). The public verbs are
thin calls of it with one shared set of options (:class:`ReplayOptions`):

- ``mk.replay_capture(location, ...)`` -> ``pyarrow.Table`` and ``mk.replay_batches(location,
  ...)`` -> a stream, for any location (:func:`metaverse_kit.backends.open_lake`: a folder, a
  file, a list, an ``abfss://`` URL, a Lake);
- ``ws.replay(...)`` and ``ws.replay_batches(...)`` on a workspace's lake.

Decoding itself (envelope, bodies, schema resolution, damaged files) is the pure
:mod:`metaverse_kit.history.decode`; its public names are re-exported here.

Every event is kept. Bodies that are not registry Avro (JSON, text, an unknown schema id, another
schema than the replay's) keep their raw ``body`` and say why in ``decode_error``.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, Unpack

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit._time import utc_time
from metaverse_kit.backends.protocols import CaptureFile, Lake, Schema, SchemaRegistry
from metaverse_kit.errors import (
    CaptureFileWarning,
    ConfigurationError,
    MetaverseError,
    SchemaNotFoundError,
    warn,
)
from metaverse_kit.events.avro import AvroSchema
from metaverse_kit.history.cache import ReplayCache, open_cache, schema_fingerprint
from metaverse_kit.history.decode import (
    ENVELOPE_FIELDS,
    SKIPPED_KEY,
    CaptureBytes,
    DecodedFile,
    PayloadSchema,
    SchemaLookup,
    SkippedPart,
    check_options,
    decode_capture_file,
    decode_capture_files,
    decode_stream,
    output_schema,
    recorded,
    skipped_files,
    skipped_metadata,
)
from metaverse_kit.names import partition_ids

__all__ = [
    "DUPLICATES_DROPPED_KEY",
    "ENVELOPE_FIELDS",
    "REPLAY_START_KEY",
    "SKIPPED_KEY",
    "CaptureBytes",
    "PayloadSchema",
    "ReplayOptions",
    "ReplayProgress",
    "ReplayStream",
    "SkippedPart",
    "check_flag",
    "check_registry",
    "decode_capture_file",
    "decode_capture_files",
    "dedup_batch",
    "duplicates_dropped",
    "partial_start",
    "range_mask",
    "reader_schema",
    "registry_lookup",
    "replay_batches",
    "replay_capture",
    "replay_lake",
    "replay_range",
    "replay_start",
    "schema_definition",
    "skipped_files",
    "warn_skipped",
    "with_dropped",
]

#: Schema metadata key of a replayed table (and of each streamed batch): the number of events
#: dropped because an earlier event had the same message id, as ASCII digits.
DUPLICATES_DROPPED_KEY = b"metaverse.duplicates_dropped"

#: Schema metadata key of a replayed table: the replay's ``start`` (ISO 8601, UTC), recorded
#: only when the lake holds events before it, which the table therefore lacks (see
#: :func:`replay_start`).
REPLAY_START_KEY = b"metaverse.replay_start"


@dataclass(frozen=True)
class ReplayProgress:
    """Where a replay is, handed to ``on_file`` after each Capture file it has read.

    ``file`` is that file; ``files_done``/``files_total`` and ``bytes_done``/``bytes_total``
    count the files listed for the replay (after pruning); ``events`` are the events read from
    this file (before the time range and deduplication), ``skipped`` its damaged parts.
    """

    file: CaptureFile
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    events: int
    skipped: tuple[SkippedPart, ...] = ()


class ReplayOptions(TypedDict, total=False):
    """The options every replay verb takes (``ws.replay``, ``ws.replay_batches``,
    ``mk.replay_capture``, ``mk.replay_batches``), all keyword-only:

    ``schema``
        The reader schema payload columns are typed by, and every body is resolved to (Avro's
        schema resolution: defaults for fields the writer lacked, promotions, enum and union
        branches by name, aliases). None (default): the newest version of the built-in MCE's
        full name registered in the registry (the workspace's group for ``ws.replay``), or the
        built-in definition when none is; a definition (JSON text or dict), a registry
        ``Schema`` or a :class:`PayloadSchema`; False: the envelope columns only.
    ``progress``
        Show a progress bar (default: when more than 20 files are read).
    ``dedup``
        Drop an event whose message id an earlier event of the replay already had (default
        True); the count is in :func:`duplicates_dropped`.
    ``cache``
        True (default) keeps decoded files as Arrow IPC (``<workspace>/cache/replay`` for a
        workspace, else ``$XDG_CACHE_HOME/metaverse-kit/replay``); a path puts them there;
        False or None decodes every file each time.
    ``decoder``
        ``"auto"`` (default) the native reader with fastavro where it cannot, ``"fast"`` the
        same, ``"fastavro"`` fastavro only; every choice gives the same table.
    ``on_bad_file``
        ``"raise"`` (default): a damaged, truncated, stray or foreign file raises
        :class:`CaptureFileError` naming the file and the byte offset. ``"skip"``: replay
        everything else, keep every intact block of a damaged file, list what was left out
        (:func:`skipped_files`) and warn (:class:`CaptureFileWarning`) with the count.
    ``on_file``
        A function called with a :class:`ReplayProgress` after each Capture file is read.
    """

    schema: Any
    progress: bool | None
    dedup: bool
    cache: bool | str | os.PathLike[str] | ReplayCache | None
    decoder: str
    on_bad_file: str
    on_file: Callable[[ReplayProgress], None] | None


_DEFAULTS: dict[str, Any] = {
    "schema": None,
    "progress": None,
    "dedup": True,
    "cache": True,
    "decoder": "auto",
    "on_bad_file": "raise",
    "on_file": None,
}


def _options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        raise ConfigurationError(
            f"Unknown replay option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"the options are start, end, partitions, {', '.join(_DEFAULTS)}"
        )
    opts = {**_DEFAULTS, **options}
    check_flag(opts["dedup"], "dedup")
    if opts["progress"] is not None:
        check_flag(opts["progress"], "progress", none="None shows a bar for over 20 files")
    if opts["on_file"] is not None and not callable(opts["on_file"]):
        raise ConfigurationError(
            f"on_file= takes a function of a ReplayProgress, not {type(opts['on_file']).__name__}"
        )
    return opts


def check_flag(value: object, name: str, *, none: str | None = None) -> None:
    """Raise :class:`ConfigurationError` unless ``value`` is True or False.

    NOTE: a string such as ``"no"`` (from a config file or a form) is true to Python: taken
    as it is, ``dedup="no"`` would deduplicate, the opposite of what was asked, silently.
    """
    if not isinstance(value, (bool, np.bool_)):
        also = f" ({none})" if none else ""
        raise ConfigurationError(f"{name}= takes True or False{also}, not {value!r}")


def duplicates_dropped(table: Any) -> int:
    """How many duplicate events the replay that made ``table`` dropped (0 when not recorded).

    ``table`` is an Arrow table or batch, or a DataFrame of ``spark_replay`` or
    ``dask_replay`` (see :func:`~metaverse_kit.history.decode.skipped_files` for where each
    keeps it).
    """
    return int(recorded(table, DUPLICATES_DROPPED_KEY) or b"0")


def replay_start(table: Any) -> datetime | None:
    """The ``start=`` of the replay that made ``table`` when the lake held events before it
    (so ``table`` lacks them), else None: a whole replay, a start before the lake's first
    event, or nothing recorded (a table made elsewhere).

    ``table`` as :func:`duplicates_dropped` takes it. The history questions that need what came
    before (``changes``, ``state_as_of``) warn with it.
    """
    text = recorded(table, REPLAY_START_KEY)
    if not text:
        return None
    try:
        return utc_time(text.decode(), "replay start", error=ConfigurationError)
    except (ConfigurationError, UnicodeDecodeError):
        return None  # NOTE: metadata written by hand that is not a time tells nothing


# -- the reader schema ----------------------------------------------------------------------------


def reader_schema(
    schema: Any = None,
    *,
    registry: SchemaRegistry | None = None,
    schema_group: str | None = None,
    schemas: Mapping[str, Any] | None = None,
) -> PayloadSchema | None:
    """The reader schema a ``schema=`` option names (None for the envelope only).

    ``schema=None`` means the newest registered version of the built-in MCE's full name: in
    ``schema_group`` when given, else in every group of ``registry`` (the highest version
    number wins). Without a registry, the newest among ``schemas`` (an ``{id: definition}``
    mapping, as a cluster without access to the registry is given): the highest version
    among values that are registry ``Schema`` objects (which carry it), else the last
    definition of that name in the mapping's order (oldest first, as
    :meth:`~metaverse_kit.backends.protocols.SchemaRegistry.list_versions` gives them). The
    built-in definition when none of these has one. Raises :class:`ConfigurationError` for
    anything that is not a schema.
    """
    if schema is False:
        return None
    if schema is None:
        from metaverse_kit.events.builtin import MCE_FULL_NAME, mce_definition

        newest = _newest_registered(registry, schema_group, MCE_FULL_NAME)
        if newest is None and registry is None and schemas:
            newest = _newest_given(schemas, MCE_FULL_NAME)
        return PayloadSchema(newest or mce_definition())
    if isinstance(schema, PayloadSchema):
        return schema
    if isinstance(schema, Schema):
        return PayloadSchema(schema.definition)
    if isinstance(schema, (AvroSchema, dict, list, str)):
        from metaverse_kit.events.strict import check_definition

        # NOTE: a reader schema given here is checked as the registry checks one it stores: its
        # defaults fill older events' fields, and one the registry would refuse (a union's
        # default not of its first branch) would fill them with what other readers refuse.
        parsed = schema if isinstance(schema, AvroSchema) else AvroSchema(schema)
        check_definition(parsed.canonical_text)
        return PayloadSchema(parsed.canonical_text)
    raise ConfigurationError(
        f"schema= takes a definition (JSON text or dict), a registry Schema, None for the "
        f"newest registered MCE schema or False for the envelope only; "
        f"got {type(schema).__name__}"
    )


def schema_definition(value: Any, schema_id: str = "") -> str:
    """The definition text of one value of a ``schemas={id: definition}`` mapping.

    Takes JSON text, a parsed definition (dict or list) or a registry ``Schema``; raises
    :class:`ConfigurationError` naming the id for anything else.
    """
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


def _newest_given(schemas: Mapping[str, Any], name: str) -> str | None:
    best: tuple[int, int] | None = None
    chosen = None
    for position, (schema_id, value) in enumerate(schemas.items()):
        definition = schema_definition(value, str(schema_id))
        try:
            if AvroSchema(definition).name != name:
                continue
        except MetaverseError:
            continue  # not a schema at all: its events will say so when they meet it
        version = value.properties.version if isinstance(value, Schema) else 0
        if best is None or (version, position) > best:
            best, chosen = (version, position), definition
    return chosen


def _newest_registered(registry: SchemaRegistry | None, group: str | None, name: str) -> str | None:
    if registry is None:
        return None
    best: tuple[int, str] | None = None
    for g in [group] if group else registry.list_groups():
        try:
            versions = registry.list_versions(g, name)
        except SchemaNotFoundError:
            continue
        if versions and (best is None or versions[-1] > best[0]):
            best = (versions[-1], g)
    if best is None:
        return None
    return registry.get_schema(group_name=best[1], name=name, version=best[0]).definition


def check_registry(registry: object) -> None:
    """Raise :class:`ConfigurationError` unless ``registry`` is None or a schema registry.

    NOTE: checked before the first file is listed: a registry of the wrong kind (a URL, a
    namespace name) would otherwise fail deep in the replay with an AttributeError.
    """
    if registry is not None and not isinstance(registry, SchemaRegistry):
        raise ConfigurationError(
            f"registry= takes a schema registry, such as a workspace's (ws.registry), not "
            f"{type(registry).__name__} {str(registry)[:80]!r}; to replay against Azure Schema "
            "Registry, connect a workspace to it (mk.connect(...)) and pass its registry"
        )


def registry_lookup(registry: SchemaRegistry | None) -> SchemaLookup:
    """A schema lookup (id -> definition, None when unknown) that asks ``registry`` once per
    id; with no registry every id is unknown (events keep their raw bodies and say why)."""
    cache: dict[str, str | None] = {}

    def lookup(schema_id: str) -> str | None:
        if schema_id not in cache:
            if registry is None:
                cache[schema_id] = None
            else:
                try:
                    cache[schema_id] = registry.get_schema(schema_id).definition
                except SchemaNotFoundError:
                    cache[schema_id] = None
        return cache[schema_id]

    return lookup


def replay_range(
    start: datetime | str | None,
    end: datetime | str | None,
    partitions: Sequence[str | int] | None,
) -> tuple[datetime | None, datetime | None, list[str] | None]:
    """A replay's ``start`` and ``end`` as UTC datetimes and its partition ids (None: all),
    checked; the local replay and the engines' planner take them through here.

    Raises :class:`ConfigurationError` for a bad time, a start after the end or a partition id
    no event hub has.
    """
    start_utc = None if start is None else utc_time(start, "start", error=ConfigurationError)
    end_utc = None if end is None else utc_time(end, "end", error=ConfigurationError)
    if start_utc and end_utc and start_utc > end_utc:
        raise ConfigurationError(f"start ({start_utc}) is after end ({end_utc})")
    ids = partition_ids(partitions)
    return start_utc, end_utc, None if ids is None else list(ids)


# -- the stream ---------------------------------------------------------------------------------


@dataclass
class _Step:
    """What the core yields per file: its batch (None when nothing of it is left), what was
    skipped of it and how many of its events deduplication dropped."""

    batch: pa.RecordBatch | None
    skipped: tuple[SkippedPart, ...]
    dropped: int
    #: The decoded group's batch and where ``batch`` starts in it, when ``batch`` is all of
    #: its file's rows (see :class:`~metaverse_kit.history.decode.DecodedFile`).
    within: tuple[pa.RecordBatch, int] | None = None


def _steps_of(batches: Iterator[pa.RecordBatch]) -> Callable[[bool], Iterator[_Step]]:
    def steps(_: bool) -> Iterator[_Step]:
        for batch in batches:
            dropped = int((batch.schema.metadata or {}).get(DUPLICATES_DROPPED_KEY, b"0"))
            yield _Step(batch, tuple(skipped_files(batch)), dropped)

    return steps


class ReplayStream(Iterator[pa.RecordBatch]):
    """The batches of a replay, one per Capture file, and what it dropped or skipped so far.

    Iterate it like any iterator of RecordBatches, or call :meth:`to_table`. ``files`` are the
    Capture files the replay reads (listed and pruned when the stream was made);
    ``duplicates_dropped`` counts events left out because an earlier event had the same message
    id, and ``skipped_files`` the damaged parts left out (``on_bad_file="skip"``); both are
    final once the stream is exhausted. Each batch also says how many of its file's events were
    dropped (schema metadata ``b"metaverse.duplicates_dropped"``) and what of its file was
    skipped (:func:`skipped_files`). ``partial_start`` (optional) says, once the stream is read,
    the replay's start when it left earlier events out; :meth:`to_table` records it
    (:func:`replay_start`).
    """

    def __init__(
        self,
        make: Callable[[bool], Iterator[_Step]] | Iterator[pa.RecordBatch],
        *,
        files: Sequence[CaptureFile] = (),
        schema: pa.Schema | None = None,
        dedup: bool = True,
        partial_start: Callable[[], datetime | None] | None = None,
    ) -> None:
        if not callable(make):
            # A stream of batches made elsewhere: taken as they are (each says what it dropped).
            make, dedup = _steps_of(make), False
        self._make = make
        self._partial_start = partial_start
        self._steps: Iterator[_Step] | None = None
        self._dedup = dedup
        self._done = False
        self._schema_unknown = schema is None
        #: The Arrow schema of every batch (the envelope's when the stream was made without one).
        self.schema = schema if schema is not None else pa.schema(ENVELOPE_FIELDS)
        #: The Capture files this replay reads, in replay order.
        self.files: list[CaptureFile] = list(files)
        #: Events dropped as duplicates so far (the final count once the stream is exhausted).
        self.duplicates_dropped = 0
        #: Damaged parts of files left out so far (``on_bad_file="skip"``).
        self.skipped_files: list[SkippedPart] = []
        #: Warn (:class:`CaptureFileWarning`) when the stream ends with parts skipped; set to
        #: False when you show ``skipped_files`` yourself.
        self.warn_on_skip = True

    def __iter__(self) -> ReplayStream:
        return self

    def _take(self, step: _Step) -> None:
        self.duplicates_dropped += step.dropped
        self.skipped_files.extend(step.skipped)

    def __next__(self) -> pa.RecordBatch:
        if self._steps is None:
            self._steps = self._make(self._dedup)
        for step in self._steps:
            self._take(step)
            if step.batch is not None:
                return step.batch
        self._finish()
        raise StopIteration

    def to_table(self) -> pa.Table:
        """The rest of the stream (all of it when nothing was read yet) as one table.

        The table's schema metadata says how many duplicates were dropped
        (:func:`duplicates_dropped`), what was skipped (:func:`skipped_files`) and, when the
        replay's ``start=`` left earlier events of the lake out, that start
        (:func:`replay_start`).
        """
        fresh = self._steps is None
        if fresh:
            # PERF: the whole table is deduplicated at once below, faster than batch by batch.
            self._steps = self._make(False)
        assert self._steps is not None
        batches: list[pa.RecordBatch] = []
        # PERF: a batch of DataHub's columns costs ~10 KB of Arrow structure to hold, and as
        # much again in a table, whatever its rows: a quiet hub's lake of 100,000 files of an
        # event or two would hold GBs for a table of 300 MB. Whole files of one decoded group
        # are kept as one slice of the group's batch: (group, first row, rows so far).
        run: tuple[pa.RecordBatch, int, int] | None = None
        for step in self._steps:
            self._take(step)
            if step.batch is None:
                continue
            within = step.within
            if run is not None:
                group, first, rows = run
                if within is not None and within[0] is group and within[1] == first + rows:
                    run = (group, first, rows + step.batch.num_rows)
                    continue
                batches.append(group.slice(first, rows).replace_schema_metadata(None))
                run = None
            if within is not None:
                run = (within[0], within[1], step.batch.num_rows)
            else:
                batches.append(step.batch.replace_schema_metadata(None))
        if run is not None:
            batches.append(run[0].slice(run[1], run[2]).replace_schema_metadata(None))
        schema = self.schema
        if self._schema_unknown and batches:
            schema = batches[0].schema
        table = pa.Table.from_batches(batches, schema=schema)
        if fresh and self._dedup:
            table, dropped = _dedup_table(table)
            self.duplicates_dropped += dropped
        metadata = {DUPLICATES_DROPPED_KEY: str(self.duplicates_dropped).encode()}
        if self.skipped_files:
            metadata[SKIPPED_KEY] = skipped_metadata(self.skipped_files)
        start = self._partial_start() if self._partial_start is not None else None
        if start is not None:
            metadata[REPLAY_START_KEY] = start.isoformat().encode()
        self._finish()
        return table.replace_schema_metadata(metadata)

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self.skipped_files and self.warn_on_skip:
            warn_skipped(self.skipped_files)

    def close(self) -> None:
        """Stop reading; closes the progress bar and releases the file being read."""
        close = getattr(self._steps, "close", None)
        if close is not None:
            close()


def warn_skipped(skipped: Sequence[SkippedPart]) -> None:
    """Warn (:class:`CaptureFileWarning`, on the user's line) that a replay left ``skipped``
    out: how many parts of how many files. Every replay that skips damaged parts warns with
    this message, once."""
    if not skipped:
        return
    files = len({s.path for s in skipped})
    count = len(skipped)
    warn(
        CaptureFileWarning(
            f"{count} damaged part{'s' if count != 1 else ''} of {files} Capture "
            f"file{'s' if files != 1 else ''} skipped (every intact block was kept); "
            "mk.skipped_files(table) or stream.skipped_files lists them"
        )
    )


# -- deduplication ------------------------------------------------------------------------------


def dedup_batch(batch: pa.RecordBatch, seen: set[str]) -> tuple[pa.RecordBatch, int]:
    """Drop the rows whose message id is in ``seen`` (or repeats within the batch); return the
    batch left and how many rows were dropped.

    Rows without a message id are always kept. ``seen`` grows by the ids of the kept rows.
    PERF: only the batch's distinct ids become Python strings, and the set does the rest.
    """
    ids = batch.column("message_id")
    n = len(ids)
    if ids.null_count == n:
        return batch, 0
    encoded = ids.dictionary_encode()
    distinct = encoded.dictionary.to_pylist()
    repeated = seen.intersection(distinct)
    seen.update(distinct)
    if not repeated and len(distinct) == n - ids.null_count:
        return batch, 0
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    before = np.empty_like(codes)
    before[0] = -1
    np.maximum.accumulate(codes[:-1], out=before[1:])
    old = np.fromiter((d in repeated for d in distinct), dtype=bool, count=len(distinct))
    # Codes come in order of first appearance: a row is its id's first when its code is new.
    keep = (codes < 0) | ((codes > before) & ~old[np.maximum(codes, 0)])
    dropped = n - int(np.count_nonzero(keep))
    if dropped:
        batch = batch.filter(pa.array(keep))
    return batch, dropped


def _dedup_table(table: pa.Table) -> tuple[pa.Table, int]:
    """:func:`dedup_batch` over a whole table at once: keep each message id's first row.

    PERF: dictionary-encoding the ids replaces a Python set. Codes are given in order of first
    appearance, so a table without duplicates has as many distinct ids as ids (and is returned
    as it is, not copied), and a row is an id's first exactly when its code is larger than
    every code before it: no sort.
    """
    ids = table.column("message_id")
    n = table.num_rows
    if ids.null_count == n:
        return table, 0
    encoded = ids.dictionary_encode()
    chunks = encoded.chunks
    if not chunks or len(chunks[0].dictionary) == n - ids.null_count:
        return table, 0
    codes = np.concatenate(
        [c.indices.fill_null(-1).to_numpy(zero_copy_only=False) for c in chunks]
    ).astype(np.int64, copy=False)
    before = np.empty_like(codes)
    before[0] = -1
    np.maximum.accumulate(codes[:-1], out=before[1:])
    keep = (codes < 0) | (codes > before)
    kept = int(np.count_nonzero(keep))
    return table.filter(pa.array(keep)), n - kept


def with_dropped(batch: pa.RecordBatch, dropped: int) -> pa.RecordBatch:
    """``batch`` with the number of duplicates dropped before it in its schema metadata
    (:data:`DUPLICATES_DROPPED_KEY`, read back by :func:`duplicates_dropped`)."""
    metadata = dict(batch.schema.metadata or {})
    metadata[DUPLICATES_DROPPED_KEY] = str(dropped).encode()
    return batch.replace_schema_metadata(metadata)


# -- the core -----------------------------------------------------------------------------------


def replay_lake(
    lake: Lake,
    *,
    registry: SchemaRegistry | None = None,
    schema_group: str | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    partitions: Sequence[str | int] | None = None,
    **options: Unpack[ReplayOptions],
) -> ReplayStream:
    """Stream the events of a lake as RecordBatches, one per Capture file, in replay order.

    Files are pruned by partition and by the time in their path before they are opened; rows
    are then kept when ``start <= enqueued_time <= end``. Naive datetimes are taken as UTC.
    ``registry`` resolves the schema ids of content types (without one every body is kept
    raw); ``schema_group`` is where ``schema=None`` looks for the newest MCE version. The
    options are those of :class:`ReplayOptions`.

    Deduplication (``dedup``, default True) keeps the first copy in (partition, sequence
    number) order of each message id; events without one are never dropped, and only events
    inside the replayed range are compared. A stream remembers every message id it has seen
    (about 100 bytes each); ``dedup=False`` keeps its memory flat.

    Raises :class:`ConfigurationError` for bad options or times, and :class:`CaptureFileError`
    (``on_bad_file="raise"``) while streaming, naming a file that cannot be read.
    """
    opts = _options(dict(options))
    start_utc, end_utc, parts = replay_range(start, end, partitions)
    check_options(decoder=opts["decoder"], on_bad_file=opts["on_bad_file"])
    check_registry(registry)
    store = open_cache(opts["cache"])
    files = lake.list_files(partitions=parts, start=start_utc, end=end_utc)
    payload = reader_schema(opts["schema"], registry=registry, schema_group=schema_group)
    lookup = registry_lookup(registry)
    show = len(files) > 20 if opts["progress"] is None else bool(opts["progress"])
    run = _Run(
        lake=lake,
        files=files,
        payload=payload,
        lookup=lookup,
        store=store,
        start=start_utc,
        end=end_utc,
        partitions=parts,
        show=show,
        decoder=opts["decoder"],
        on_bad_file=opts["on_bad_file"],
        on_file=opts["on_file"],
    )
    return ReplayStream(
        run.steps,
        files=files,
        schema=output_schema(payload),
        dedup=bool(opts["dedup"]),
        partial_start=run.partial_start,
    )


@dataclass
class _Run:
    """One replay's inputs; :meth:`steps` makes its stream of per-file steps."""

    lake: Lake
    files: list[CaptureFile]
    payload: PayloadSchema | None
    lookup: SchemaLookup
    store: ReplayCache | None
    start: datetime | None
    end: datetime | None
    partitions: list[str] | None
    show: bool
    decoder: str
    on_bad_file: str
    on_file: Callable[[ReplayProgress], None] | None
    #: Whether a file read held events before ``start`` (left out of the replay).
    cut_before_start: bool = False

    def partial_start(self) -> datetime | None:
        """``start`` when the replay left events of the lake before it out, else None
        (:func:`partial_start`)."""
        return partial_start(
            self.lake,
            start=self.start,
            partitions=self.partitions,
            read=self.files,
            cut=self.cut_before_start,
        )

    def steps(self, dedup: bool) -> Iterator[_Step]:
        """Each file's batch, filtered to the range and (``dedup``) deduplicated, in order."""
        seen: set[str] = set()
        bar = None
        total = sum(f.size for f in self.files)
        if self.show:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc="replay")
        done_files = done_bytes = 0
        try:
            for f, decoded in self._decoded():
                done_files += 1
                done_bytes += f.size
                if bar is not None:
                    bar.update(f.size)
                if self.on_file is not None:
                    self.on_file(
                        ReplayProgress(
                            f,
                            done_files,
                            len(self.files),
                            done_bytes,
                            total,
                            decoded.batch.num_rows,
                            decoded.skipped,
                        )
                    )
                if self.start is not None and not self.cut_before_start and decoded.batch.num_rows:
                    times = decoded.batch.column("enqueued_time")
                    early = pc.any(pc.less(times, pa.scalar(self.start, times.type))).as_py()
                    self.cut_before_start = bool(early)
                batch = _filter(decoded.batch, self.start, self.end, self.partitions)
                dropped = 0
                if dedup and batch.num_rows:
                    batch, dropped = dedup_batch(batch, seen)
                kept = with_dropped(batch, dropped) if batch.num_rows or dropped else None
                # Filtering only removes rows: as many rows as decoded are all of them.
                whole = kept is not None and kept.num_rows == decoded.batch.num_rows
                yield _Step(kept, decoded.skipped, dropped, decoded.within if whole else None)
        finally:
            if bar is not None:
                bar.close()

    def _decoded(self) -> Iterator[tuple[CaptureFile, DecodedFile]]:
        """Each file with its decoded batch, in order: from the cache when it has it.

        Files missing from the cache are read one by one and their bodies decoded in groups of
        about :data:`~metaverse_kit.history.decode.GROUP_EVENTS` events, or
        :data:`~metaverse_kit.history.decode.MIXED_GROUP_EVENTS` where writer versions mix (see
        :func:`~metaverse_kit.history.decode.decode_stream`).
        """
        payload, store, lookup = self.payload, self.store, self.lookup
        arrow_schema = output_schema(payload)
        fingerprint = schema_fingerprint(arrow_schema, payload.definition if payload else None)
        # (file, whether it was decoded now) of each item handed to the decoder, in order
        order: deque[tuple[CaptureFile, bool]] = deque()

        def items() -> Iterator[CaptureBytes | DecodedFile]:
            for f in self.files:
                hit = store.get(f, fingerprint, arrow_schema, lookup) if store else None
                if hit is not None:
                    skipped = tuple(skipped_files(hit.batch))
                    if skipped and self.on_bad_file == "raise":
                        raise skipped[0].error()
                    order.append((f, False))
                    yield DecodedFile(hit.batch, skipped, hit.within)
                    continue
                order.append((f, True))
                yield CaptureBytes(self.lake.read_bytes(f), f.path, f)

        # The files of the decoded group being read, cached together when it ends: one entry
        # for the group's batch, not one batch per file (see ReplayCache.put_group).
        group: list[tuple[CaptureFile, DecodedFile]] = []
        group_batch: pa.RecordBatch | None = None

        def keep_group() -> None:
            if store is None or not group or group_batch is None:
                return
            if len(group) > 1 and sum(d.batch.num_rows for _, d in group) == group_batch.num_rows:
                store.put_group([(g, d.batch) for g, d in group], group_batch, fingerprint, lookup)
            else:  # not all of it was read here: file by file
                for g, d in group:
                    store.put(g, fingerprint, d.batch, lookup)
            group.clear()

        for result in decode_stream(
            items(),
            reader=payload,
            schemas=lookup,
            decoder=self.decoder,
            on_bad_file=self.on_bad_file,
        ):
            f, fresh = order.popleft()
            if fresh and store is not None:
                within = result.within
                if within is None:
                    # An empty file between a group's files is decoded alone.
                    store.put(f, fingerprint, result.batch, lookup)
                else:
                    if group and within[0] is not group_batch:
                        keep_group()
                    group_batch = within[0]
                    group.append((f, result))
                    if within[1] + result.batch.num_rows == group_batch.num_rows:
                        keep_group()  # its last file
            yield f, result
        keep_group()


def partial_start(
    lake: Lake,
    *,
    start: datetime | None,
    partitions: Sequence[str] | None,
    read: Sequence[CaptureFile],
    cut: bool,
) -> datetime | None:
    """``start`` when a replay from it left events of ``lake`` out, else None: what a replay
    records under :data:`REPLAY_START_KEY` (see :func:`replay_start`).

    ``read`` are the files the replay read and ``cut`` whether any of them held events before
    ``start``. NOTE: asked once the files were read: they tell whether rows before ``start``
    were cut; else one more listing tells whether files wholly before it were pruned unread.
    The local replay and the distributed ones (``spark_replay``, ``dask_replay``) ask this.
    """
    if start is None:
        return None
    if cut:
        return start
    names = {f.path for f in read}
    earlier = lake.list_files(partitions=partitions, end=start)
    return start if any(f.path not in names for f in earlier) else None


def range_mask(
    batch: pa.RecordBatch,
    *,
    start: datetime | None,
    end: datetime | None,
    partitions: Sequence[str] | None,
) -> pa.Array | None:
    """Which rows of a decoded batch a replay keeps: ``start <= enqueued_time <= end`` and a
    partition among ``partitions`` (or unknown); None when nothing is to be filtered."""
    mask = None
    times = batch.column("enqueued_time")
    conditions = []
    if start is not None:
        conditions.append(pc.greater_equal(times, pa.scalar(start, times.type)))
    if end is not None:
        conditions.append(pc.less_equal(times, pa.scalar(end, times.type)))
    if partitions is not None:
        part = batch.column("partition")
        conditions.append(pc.or_kleene(pc.is_null(part), pc.is_in(part, pa.array(partitions))))
    for c in conditions:
        mask = c if mask is None else pc.and_(mask, c)
    return mask


def _filter(
    batch: pa.RecordBatch,
    start: datetime | None,
    end: datetime | None,
    partitions: list[str] | None,
) -> pa.RecordBatch:
    mask = range_mask(batch, start=start, end=end, partitions=partitions)
    return batch if mask is None else batch.filter(mask)


# -- the public verbs ---------------------------------------------------------------------------


def replay_batches(
    location: Any,
    *,
    registry: SchemaRegistry | None = None,
    storage_options: dict | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    partitions: Sequence[str | int] | None = None,
    **options: Unpack[ReplayOptions],
) -> ReplayStream:
    """Stream any Capture tree, file or list of files as RecordBatches (one per file).

    ``location`` is a folder, a file, a list of files, an ``abfss://`` URL (with
    ``storage_options`` as fsspec takes them) or a Lake. Memory stays bounded by the largest
    file, whatever the length of the history, except for the set of message ids deduplication
    remembers. Options: :class:`ReplayOptions`; the rest as :func:`replay_lake`.
    """
    from metaverse_kit.backends import open_lake

    lake = open_lake(location, storage_options=storage_options)
    return replay_lake(
        lake, registry=registry, start=start, end=end, partitions=partitions, **options
    )


def replay_capture(
    location: Any,
    *,
    registry: SchemaRegistry | None = None,
    storage_options: dict | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    partitions: Sequence[str | int] | None = None,
    **options: Unpack[ReplayOptions],
) -> pa.Table:
    """Replay any Capture tree (a folder copied from a lake, one file, a list, a URL) into a table.

    ``registry`` resolves the schema ids in content types; without it every body is kept raw.
    Duplicates (same message id) are dropped unless ``dedup=False`` (how many:
    :func:`duplicates_dropped`). Options: :class:`ReplayOptions`. Raises
    :class:`CaptureFileError` naming a file that cannot be read (unless
    ``on_bad_file="skip"``: then :func:`skipped_files` lists what was left out). A
    ``partitions=`` id of which the lake has no file warns :class:`MissingPartitionWarning`.
    """
    return replay_batches(
        location,
        registry=registry,
        storage_options=storage_options,
        start=start,
        end=end,
        partitions=partitions,
        **options,
    ).to_table()
