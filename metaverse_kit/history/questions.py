"""Questions asked of the replayed history: aspects, state as of a time, audit trails, changes.

Every function takes the events table of :meth:`Workspace.replay` or
:func:`~metaverse_kit.replay_capture` (envelope columns plus the decoded MCE payload), the same
table read back from a Parquet file (a path is accepted too), or the table :func:`aspects`
returned (so a notebook or a widget explodes the history once and asks many questions), or an
:func:`audit_trail`: any table with the ``urn``, ``aspect``, ``aspect_type``, ``value``,
``change``, ``enqueued_time``, ``partition`` and ``sequence_number`` columns of :func:`aspects`
(the columns it only carries along, such as ``platform`` or ``message_id``, are filled from the
urn or left null when missing). Each returns a :class:`pyarrow.Table`. :func:`aspects`,
:func:`state_as_of`, :func:`audit_trail` and :func:`changes` also take a pyspark DataFrame
(``spark_replay``'s, one narrowed or exploded from it, or a Parquet export read by Spark) and
return one, computed by Spark (:mod:`metaverse_kit.distributed.spark_questions`);
:func:`latest_aspect`, whose answer is a dict, refuses one. A Dask or pandas DataFrame is
refused with a :class:`HistoryInputError` that says what to pass instead (the Arrow table of its
rows, or the path of its Parquet export).

Design of the aspect value
    An MCE carries its aspects in a union (``DatasetSnapshot.aspects`` is a list of a union of
    aspect records). Replay maps an Avro union to a struct with a ``branch`` field (the record's
    full name) and one nullable field per branch, named by the record's short name. The
    ``value`` column here is that union, widened to every aspect type of every snapshot:
    ``value.branch`` names the aspect record and ``value.<ShortName>`` (``value.Ownership``)
    holds it, typed, with the other fields null. So values stay typed Arrow data (filter on
    ``value.Status.removed``, flatten ``value.Ownership.owners``) in one column whatever the mix
    of aspects, and the table writes to Parquet as it is. :func:`aspect_record` unwraps one
    value as a Python dict; :func:`latest_aspect` returns such a dict.

Order
    Rows are in replay order: by the time the user emitted the event (the
    ``metaverse-emitted-time`` application property every workspace sets at emit, before the
    outbox) where the event has one, else its ``enqueued_time``; then ``enqueued_time``,
    partition (numerically when every partition id is a number), ``sequence_number``, and the
    aspect's position in its MCE. So the last write of an (urn, aspect) is the one the user
    made last, even when an older write reached the hub later (an outbox retry): that late
    event does not override the newer value, and :func:`audit_trail` marks it ``late``.
    Within one partition the sequence number is the order the hub accepted events in, and an
    entity's events share one partition (its urn is the partition key), so events without an
    emit time are in hub order. Ties between partitions (the same millisecond) are broken by
    partition id: the hub gives no order across partitions, so any fixed rule is as true as
    another, and this one is repeatable. Emit times come from the emitting machine's clock:
    two machines whose clocks disagree by more than the time between their writes of the same
    aspect are ordered by their clocks.

Change kinds
    ``upsert``: an aspect written (also a ``Status`` with ``removed=False``, which restores a
    soft-deleted entity). ``soft_delete``: a ``Status`` aspect with ``removed=True``. ``delete``:
    a hard delete of the aspect; MCEs have no way to say it (DataHub deletes through MCPs with
    ``changeType=DELETE``), so tables of MCEs never hold it, and the kind is reserved so that
    readers of this column need not change when other payloads are added.

Times
    ``when``, ``start`` and ``end`` take an aware ``datetime``, ISO 8601 text
    (``"2026-01-31T12:00:00Z"``) or a ``date`` (midnight UTC). A naive datetime is taken as UTC,
    as :meth:`Workspace.replay` does. Bounds are inclusive: ``state_as_of(t)`` includes events
    enqueued exactly at ``t``. A time the ``enqueued_time`` column's type cannot hold (after
    2262 for nanoseconds, as a pandas round trip gives; in UTC after 9999 or before year 1,
    such as ``9999-12-31T23:00:00-05:00``) is after (or before) all of it.

Duplicates
    Each event is taken as it appears; de-duplication by ``message_id`` is the replay's work.
    A duplicated event shows as a write that repeats the previous value.

Errors
    :class:`HistoryInputError` (a :class:`~metaverse_kit.errors.MetaverseError`) for input that
    is not an events table, a time that cannot be read (or is missing: ``pd.NaT``), an
    ``enqueued_time`` column that holds no timestamps, or an aspect name the table's schema does
    not know (the message names the closest); :class:`MissingColumnError` names the missing
    column. A question checks all of these before it warns.

Warnings
    A question whose answer leaves out events that did not decode (``decode_error`` set; most
    often a replay without ``registry=``) warns once, with
    :class:`~metaverse_kit.errors.UndecodedEventWarning`: how many of how many events, the most
    common reason and what to do. :func:`aspects` does not (its rows are documented to leave
    them out). :func:`changes` and :func:`state_as_of` of a replay whose ``start=`` left
    earlier events of the lake out (recorded in the table, see
    :func:`~metaverse_kit.history.replay.replay_start`) warn with
    :class:`~metaverse_kit.errors.PartialHistoryWarning`: values from before it are unknown.

Checks shared with Spark
    The Spark versions of the questions give the same errors and warnings for the same inputs,
    through the functions here that both call (one home per check): :func:`check_urn`,
    :func:`window_bounds`, :func:`require_timestamps`, :func:`known_aspect_names` and
    :func:`check_aspect_name`, :func:`has_aspect_columns` and :func:`missing_carried`,
    :func:`warn_undecoded` (of an :class:`UndecodedEvents` each engine counts) and
    :func:`warn_partial`.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit._time import utc_time
from metaverse_kit.capture import EMITTED_TIME_PROPERTY
from metaverse_kit.errors import (
    MetaverseError,
    PartialHistoryWarning,
    UndecodedEventWarning,
    warn,
)
from metaverse_kit.events.aspects import ASPECT_NAMES, STATUS_TYPE
from metaverse_kit.history.arrow_types import BRANCH_FIELD, branch_type, union_branch
from metaverse_kit.history.export import read_export
from metaverse_kit.history.replay import REPLAY_START_KEY, check_flag, replay_start

__all__ = [
    "AUDIT_COLUMNS",
    "AUDIT_COMPUTED",
    "CHANGE_KINDS",
    "ITEM_KEYS",
    "ORDER_COLUMNS",
    "UNKNOWN_SCHEMA_ID",
    "WINDOW_CHANGE_KINDS",
    "HistoryInputError",
    "MissingColumnError",
    "UndecodedEvents",
    "as_utc",
    "aspect_record",
    "aspects",
    "audit_trail",
    "changed_fields",
    "changes",
    "check_aspect_name",
    "check_urn",
    "empty_aspects",
    "has_aspect_columns",
    "in_replay_order",
    "known_aspect_names",
    "latest_aspect",
    "missing_carried",
    "require_columns",
    "require_timestamps",
    "state_as_of",
    "time_scalar",
    "warn_partial",
    "warn_undecoded",
    "window_bounds",
    "window_change",
    "write_change",
]

#: The kinds in the ``change`` column of :func:`aspects` and :func:`audit_trail`.
CHANGE_KINDS = ("upsert", "soft_delete", "delete")

_BRANCH = BRANCH_FIELD
#: The envelope columns that order the rows of a table (see *Order*): every question needs them.
ORDER_COLUMNS = ("enqueued_time", "partition", "sequence_number")
_REQUIRED = (*ORDER_COLUMNS, "proposedSnapshot")
_ASPECT_COLUMNS = ("urn", "aspect", "aspect_type", "value", "change", "enqueued_time")


class HistoryInputError(MetaverseError, ValueError):
    """The input of a history question is not an events table, or a time cannot be read."""


class MissingColumnError(HistoryInputError):
    """The events table lacks a column a history question needs; ``column`` names it."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


# -- input -------------------------------------------------------------------------------------


def _spark_questions(events: Any) -> Any:
    """The Spark versions of the questions when ``events`` is a pyspark DataFrame, else None."""
    if not type(events).__module__.startswith("pyspark."):
        return None
    from metaverse_kit.distributed import spark_questions

    return spark_questions


def _table(events: Any) -> pa.Table:
    if isinstance(events, pa.Table):
        return events
    if isinstance(events, pa.RecordBatch):
        return pa.Table.from_batches([events])
    if isinstance(events, (str, os.PathLike)):
        import pyarrow.parquet as pq

        path = Path(events)
        if not path.exists():
            raise HistoryInputError(
                f"{path} does not exist; pass the table from ws.replay() or the path of a "
                f"Parquet file written from one"
            )
        try:
            # An export folder is read as of its last commit; any other path as it is.
            exported = read_export(path) if path.is_dir() else None
            table = exported if exported is not None else pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise HistoryInputError(f"{path} is not a readable Parquet file: {exc}") from exc
        if exported is not None and not exported.num_columns:
            raise HistoryInputError(
                f"{path} is a Parquet export no run has written events to yet; export a "
                "replay into it first (metaverse replay --out FOLDER --format parquet)"
            )
        return table
    raise HistoryInputError(
        f"expected the events table of ws.replay() or replay_capture() (a pyarrow.Table), a "
        f"RecordBatch, a pyspark DataFrame or a Parquet path; got {type(events).__name__}"
        f"{_frame_hint(events)}"
    )


def _frame_hint(events: Any) -> str:
    """What to pass instead of a Dask or pandas DataFrame (else nothing)."""
    package = type(events).__module__.partition(".")[0]
    if package in ("dask", "dask_expr"):
        # NOTE: refused, not computed here: .compute() would pull the whole history into this
        # process unasked. The questions run locally (Arrow) or on Spark; not on Dask.
        return (
            " (for a Dask replay: ask the Parquet dataset mk.distributed.dask_export(location, "
            "folder, ...) writes, passing the folder's path; or, when the history fits in "
            "memory, pa.Table.from_pandas(ddf.compute(), preserve_index=False), the replay's "
            "table: dask_replay's columns have its Arrow types). A Dask DataFrame is not "
            "computed for you"
        )
    if package == "pandas":
        return (
            ". Pass pa.Table.from_pandas(df, preserve_index=False) (exact for the ArrowDtype "
            "columns of a computed dask_replay)"
        )
    return ""


def has_aspect_columns(names: Iterable[str]) -> bool:
    """Whether a table with the columns ``names`` is an aspects table (of :func:`aspects`, an
    :func:`audit_trail`, or a selection of their columns), not an events table to explode."""
    have = set(names)
    return all(c in have for c in _ASPECT_COLUMNS)


def _is_aspects_table(table: pa.Table) -> bool:
    # NOTE: with or without its values (aspects(values=False)); a question that needs them
    # says the column is missing (_asked).
    return has_aspect_columns([*table.column_names, "value"])


def require_columns(table: pa.Table, columns: Iterable[str]) -> None:
    """Raise :class:`MissingColumnError` for the first of ``columns`` that ``table`` lacks,
    saying what kind of column it is (a payload or an envelope column). A table with only a
    schema (``pa.table({name: pa.nulls(0)...})``) checks the names of any other frame."""
    for column in columns:
        if column in table.column_names:
            continue
        if column == "proposedSnapshot":
            hint = (
                "the table has no decoded MCE payload; replay with the MetadataChangeEvent "
                "schema (the default of ws.replay(); schema=False keeps only the envelope)"
            )
        else:
            hint = "it is an envelope column every table from ws.replay() or replay_capture() has"
        raise MissingColumnError(
            column,
            f"the events table has no {column!r} column: {hint}; it has "
            f"{', '.join(table.column_names) or 'no columns'}",
        )


_require = require_columns


def as_utc(value: Any, what: str) -> datetime:
    """``value`` (a datetime, ISO 8601 text or a date) as an aware UTC datetime; naive is UTC.

    ``what`` names the argument in the :class:`HistoryInputError` raised when it is not a time
    (or is missing: ``pd.NaT``). A time whose UTC is past what ``datetime`` holds
    (``9999-12-31T23:00:00-05:00``) is its last (or first) microsecond: after (or before)
    every time a column can hold, as the time itself is.
    """
    try:
        return utc_time(value, what, error=HistoryInputError, dates=True)
    except OverflowError:
        # NOTE: only the move to UTC overflows, and only within a day of year 1 or 9999.
        text = value.strip().replace("Z", "+00:00") if isinstance(value, str) else None
        local = datetime.fromisoformat(text) if text is not None else value
        last = datetime.max if local.year == datetime.max.year else datetime.min
        return last.replace(tzinfo=UTC)


def check_urn(urn: Any) -> None:
    """Raise :class:`HistoryInputError` unless ``urn`` is a URN (text starting ``urn:``)."""
    if not isinstance(urn, str) or not urn.startswith("urn:"):
        raise HistoryInputError(f"urn must be a URN such as 'urn:li:corpuser:jdoe', not {urn!r}")


def window_bounds(start: Any, end: Any) -> tuple[datetime, datetime]:
    """The window of :func:`changes` as UTC datetimes; raises :class:`HistoryInputError` for a
    bound that is not a time, or a ``start`` after ``end``."""
    lo, hi = as_utc(start, "start"), as_utc(end, "end")
    if lo > hi:
        raise HistoryInputError(f"start ({lo.isoformat()}) is after end ({hi.isoformat()})")
    return lo, hi


#: How to cast a column of another type to timestamps, in Arrow (``{name}`` is the column).
_ARROW_CAST = "table.set_column(i, {name!r}, pc.cast(column, pa.timestamp('ms', tz='UTC')))"


def require_timestamps(
    type_name: str, *, is_timestamp: bool, name: str = "enqueued_time", cast: str = _ARROW_CAST
) -> None:
    """Raise :class:`HistoryInputError` unless the column ``name`` holds timestamps.

    ``type_name`` is the column's type as its engine names it, ``is_timestamp`` whether that is
    a timestamp type, and ``cast`` how to make it one in that engine (``{name}`` is replaced).
    NOTE: the one check of Arrow tables and Spark DataFrames alike: a time compared with text
    or numbers would give an answer, wrong or not, instead of this error.
    """
    if is_timestamp:
        return
    raise HistoryInputError(
        f"the {name!r} column must hold timestamps (as a replay's do), not {type_name}; "
        f"cast it first: {cast.format(name=name)}"
    )


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def time_scalar(
    when: datetime,
    column: pa.ChunkedArray | pa.Array,
    *,
    round_up: bool = False,
    name: str = "enqueued_time",
) -> pa.Scalar:
    """``when`` as a scalar of a timestamp column's type, to compare the column with.

    Rounded down for ``<=``/``>``, up (``round_up``) for ``>=``/``<``.

    So a time between two milliseconds compares as it should against millisecond stamps.
    A time outside what the column's type can hold (past 2262 for nanoseconds) is its first or
    last tick: before or after every value the column can have, as the time itself is.
    ``name`` names the column in the :class:`HistoryInputError` raised when it holds no
    timestamps.
    """
    require_timestamps(str(column.type), is_timestamp=pa.types.is_timestamp(column.type), name=name)
    micros = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    per = _PER_SECOND[column.type.unit]
    if per >= 1_000_000:
        ticks = micros * (per // 1_000_000)
    else:
        step = 1_000_000 // per
        ticks = -(-micros // step) if round_up else micros // step
    # NOTE: clamped, not refused: a time past the type's range is after (or before) every value
    # the column holds, and its first or last tick compares the same way with all of them.
    ticks = min(max(ticks, _INT64_MIN), _INT64_MAX)
    return pa.scalar(ticks, column.type)


# -- the aspects table ---------------------------------------------------------------------------


def _arange(n: int) -> pa.Array:
    # PERF: an Arrow-native 0..n-1, without a Python list or numpy.
    return (
        pc.indices_nonzero(pa.repeat(True, n)).cast(pa.int64()) if n else pa.array([], pa.int64())
    )


def _snapshots(snapshot_type: pa.DataType) -> list[tuple[int | None, pa.StructType]]:
    """(field index in proposedSnapshot, or None for a bare snapshot; the snapshot's type)."""
    if not pa.types.is_struct(snapshot_type):
        raise HistoryInputError(
            f"proposedSnapshot is a {snapshot_type}, not a struct; is this an MCE table?"
        )
    names = [f.name for f in snapshot_type]
    found: list[tuple[int | None, pa.StructType]]
    if _BRANCH in names:
        found = [
            (i, f.type)
            for i, f in enumerate(snapshot_type)
            if f.name != _BRANCH and pa.types.is_struct(f.type)
        ]
    else:
        found = [(None, snapshot_type)]
    out: list[tuple[int | None, pa.StructType]] = []
    for i, t in found:
        fields = {f.name: f.type for f in t}
        aspects_type = fields.get("aspects")
        if "urn" not in fields or aspects_type is None or not pa.types.is_list(aspects_type):
            raise HistoryInputError(
                f"every snapshot in proposedSnapshot needs a urn and an aspects list; {t} has not"
            )
        out.append((i, t))
    return out


def _value_type(snaps: list[tuple[int | None, pa.StructType]]) -> pa.StructType:
    """The union of every snapshot's aspect union: branch plus one field per aspect record."""
    fields: dict[str, pa.Field] = {}
    for _, t in snaps:
        item = t.field("aspects").type.value_type
        if not (pa.types.is_struct(item) and item.get_field_index(_BRANCH) >= 0):
            raise HistoryInputError(
                f"the aspects of a snapshot are {item}, not a union of aspect records"
            )
        for f in item:
            if f.name == _BRANCH:
                continue
            known = fields.get(f.name)
            if known is not None and known.type != f.type:
                raise HistoryInputError(
                    f"two aspect records named {f.name} have different types in this schema; "
                    f"the aspects of one table must agree"
                )
            fields[f.name] = f
    return pa.struct([pa.field(_BRANCH, pa.string()), *fields.values()])


def _aspect_names(types: pa.Array) -> pa.Array:
    encoded = pc.dictionary_encode(types)
    names = [_aspect_name(t) for t in encoded.dictionary.to_pylist()]
    return pc.take(pa.array(names, pa.string()), encoded.indices)


def _aspect_name(full_name: str | None) -> str | None:
    if full_name is None:
        return None
    known = ASPECT_NAMES.get(full_name)
    if known:
        return known
    # NOTE: DataHub names an aspect after its record, first letter lower-cased.
    short = full_name.rpartition(".")[2]
    return short[:1].lower() + short[1:]


def _partition_order(partitions: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    try:
        return pc.cast(partitions, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return partitions


def _explode(events: pa.Table, *, values: bool = True) -> pa.Table:
    _require(events, _REQUIRED)
    column = events.column("proposedSnapshot")
    snaps = _snapshots(column.type)
    value_type = _value_type(snaps)
    if not values:
        # PERF: only what decides a write (its branch, and Status for a soft delete): the
        # nested values are neither assembled nor copied by the sort below.
        value_type = pa.struct([f for f in value_type if f.name in (_BRANCH, "Status")])
    snapshot = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    pieces: list[tuple[pa.Array, ...]] = []
    for index, t in snaps:
        sub = snapshot if index is None else pc.struct_field(snapshot, [index])
        lists = pc.struct_field(sub, [t.get_field_index("aspects")])
        urns = pc.struct_field(sub, [t.get_field_index("urn")])
        parents = pc.list_parent_indices(lists).cast(pa.int64())
        if not len(parents):
            continue
        items = pc.list_flatten(lists)
        lengths = pc.fill_null(pc.list_value_length(lists), 0).cast(pa.int64())
        starts = pc.subtract(pc.cumulative_sum(lengths), lengths)
        position = pc.subtract(_arange(len(items)), pc.take(starts, parents)).cast(pa.int32())
        have = {f.name: i for i, f in enumerate(items.type)}
        children = [
            items.field(have[f.name]) if f.name in have else pa.nulls(len(items), f.type)
            for f in value_type
        ]
        value = pa.StructArray.from_arrays(children, fields=list(value_type))
        pieces.append((pc.take(urns, parents), value, parents, position))
    if pieces:
        urn = pa.concat_arrays([p[0] for p in pieces])
        value = pa.concat_arrays([p[1] for p in pieces])
        rows = pa.concat_arrays([p[2] for p in pieces])
        position = pa.concat_arrays([p[3] for p in pieces])
    else:
        urn = pa.array([], pa.string())
        value = pa.array([], value_type)
        rows = pa.array([], pa.int64())
        position = pa.array([], pa.int32())
    envelope = events.select(["enqueued_time", "partition", "sequence_number"]).take(rows)
    emitted = _emitted_times(events).take(rows)
    message_id = (
        events.column("message_id").take(rows)
        if "message_id" in events.column_names
        else pa.nulls(len(rows), pa.string())
    )
    aspect_type = value.field(_BRANCH)
    removed = (
        pc.fill_null(pc.struct_field(value, [value_type.get_field_index("Status"), 0]), False)
        if value_type.get_field_index("Status") >= 0
        and value_type.field("Status").type.get_field_index("removed") == 0
        else pa.repeat(False, len(value))
    )
    soft = pc.and_(pc.equal(aspect_type, STATUS_TYPE), removed)
    change = pc.if_else(soft, "soft_delete", "upsert")
    entity, platform = _entity_and_platform(urn)
    table = pa.table(
        {
            "urn": urn,
            "entity_type": entity,
            "platform": platform,
            "aspect": _aspect_names(aspect_type),
            "aspect_type": aspect_type,
            "change": change,
            **({"value": value} if values else {}),
            "enqueued_time": envelope.column("enqueued_time"),
            "emitted_time": emitted,
            "partition": envelope.column("partition"),
            "sequence_number": envelope.column("sequence_number"),
            "message_id": message_id,
            "event_index": rows,
            "aspect_index": position,
        }
    )
    start = (events.schema.metadata or {}).get(REPLAY_START_KEY)
    if start is not None:
        # NOTE: carried over, so a question of the aspects table knows the replay was partial.
        table = table.replace_schema_metadata({REPLAY_START_KEY: start})
    return in_replay_order(table)


def _entity_and_platform(urn: Any) -> tuple[Any, Any]:
    """The entity type of every urn, and the platform of every dataset urn (else null)."""
    entity = pc.struct_field(pc.extract_regex(urn, r"^urn:li:(?P<t>[^:]+):"), [0])
    platform = pc.struct_field(
        pc.extract_regex(urn, r"^urn:li:dataset:\(urn:li:dataPlatform:(?P<p>[^,]+),"), [0]
    )
    return entity, platform


_EMITTED_TYPE = pa.timestamp("ms", tz="UTC")

#: Columns of :func:`aspects` that only carry a fact along (none orders or decides a write),
#: with their types: filled (from the urn, else null) in an aspects table without them.
_CARRIED = {
    "entity_type": pa.string(),
    "platform": pa.string(),
    "emitted_time": _EMITTED_TYPE,
    "message_id": pa.string(),
    "event_index": pa.int64(),
}


def missing_carried(names: Iterable[str]) -> list[tuple[str, pa.DataType]]:
    """The columns that only carry a fact along (``entity_type``, ``platform``,
    ``emitted_time``, ``message_id``, ``event_index``) an aspects table with the columns
    ``names`` lacks, in order, with their Arrow types: each question fills them in,
    ``entity_type`` and ``platform`` from the urn, the others with nulls.

    NOTE: the questions take any table with the columns of :func:`has_aspect_columns`, such as
    an audit trail or a selection of columns.
    """
    have = set(names)
    return [(c, t) for c, t in _CARRIED.items() if c not in have]


def _complete(table: pa.Table) -> pa.Table:
    """An aspects table (or an audit trail) with the columns it only carried filled in."""
    missing = missing_carried(table.column_names)
    if not missing:
        return table
    entity, platform = _entity_and_platform(table.column("urn"))
    derived = {"entity_type": entity, "platform": platform}
    for column, column_type in missing:
        filled = derived.get(column)
        if filled is None:
            filled = pa.nulls(table.num_rows, column_type)
        table = table.append_column(pa.field(column, column_type), filled)
    return table


def _emitted_times(events: pa.Table) -> pa.ChunkedArray | pa.Array:
    """Each event's emit time (the ``metaverse-emitted-time`` property), null where it has none."""
    if "properties" not in events.column_names or not events.num_rows:
        return pa.nulls(events.num_rows, _EMITTED_TYPE)
    properties = events.column("properties")
    if not pa.types.is_map(properties.type):
        return pa.nulls(events.num_rows, _EMITTED_TYPE)
    text = pc.map_lookup(properties, pa.scalar(EMITTED_TIME_PROPERTY), "last").cast(pa.string())
    # NOTE: a value that is not epoch milliseconds (set by hand) counts as no emit time.
    ok = pc.fill_null(pc.match_substring_regex(text, r"^[0-9]{1,15}$"), False)
    digits = pc.if_else(ok, text, pa.scalar(None, pa.string()))
    return digits.cast(pa.int64()).cast(_EMITTED_TYPE)


def _write_time(table: pa.Table) -> pa.ChunkedArray | pa.Array:
    """When each write was made: its emit time where known, else its enqueued time."""
    enqueued = table.column("enqueued_time")
    if "emitted_time" not in table.column_names:
        return enqueued
    return pc.coalesce(table.column("emitted_time").cast(enqueued.type), enqueued)


def in_replay_order(table: pa.Table) -> pa.Table:
    """``table`` (events or aspects) sorted in replay order: the write's emit time where known
    (else its enqueued time), then enqueued time, partition (numerically), sequence number, and
    the aspect's position in its event.

    Returned as it is when already in that order. Raises :class:`MissingColumnError`.
    """
    _require(table, _REQUIRED[:3])
    position = (
        table.column("aspect_index")
        if "aspect_index" in table.column_names
        else pa.repeat(0, table.num_rows)
    )
    keys = pa.table(
        {
            "w": _write_time(table),
            "t": table.column("enqueued_time"),
            "p": _partition_order(table.column("partition")),
            "s": table.column("sequence_number"),
            "a": position,
        }
    )
    # NOTE: nulls (a partition unknown to a file outside Capture's layout) sort last.
    order = pc.sort_indices(keys, sort_keys=[(k, "ascending") for k in "wtpsa"])
    # PERF: the take copies every nested value; a table already in order is returned as it is.
    if pc.all(pc.equal(order, _arange(table.num_rows).cast(order.type))).as_py() is not False:
        return table
    return table.take(order)


def _aspects_of(events: Any) -> pa.Table:
    """The aspects table of ``events``."""
    return _asked(events, count=False)[0]


def _asked(
    events: Any, urn: str | None = None, *, count: bool = True, values: bool = True
) -> tuple[pa.Table, UndecodedEvents | None]:
    """The aspects table of ``events`` (of ``urn`` alone, when given), and (``count``) the
    events of ``events`` that did not decode (None for an aspects table, whose rows tell
    nothing of them). ``values=False``: without the ``value`` column.

    NOTE: the questions warn of those only after their own checks passed: a warning followed
    by an error would be noise.
    """
    if urn is not None:
        check_urn(urn)
    table = _table(events)
    if _is_aspects_table(table):
        if urn is not None:
            table = table.filter(pc.equal(table.column("urn"), urn))
        if values:
            _require(table, ["value"])
        elif "value" in table.column_names:
            table = table.drop_columns(["value"])
        # NOTE: an aspects table may have been sorted another way since (by urn, say).
        return in_replay_order(_complete(table)), None
    _require(table, _REQUIRED)
    undecoded = _undecoded(table) if count else None
    if urn is None:
        return _explode(table, values=values), undecoded
    # PERF: filter events by urn before exploding, so one entity costs one pass over a column.
    keep = pc.indices_nonzero(pc.fill_null(pc.equal(_urns_of_events(table), urn), False))
    rows = _explode(table.take(keep), values=values)
    # NOTE: event_index must point into the caller's table, not into the filtered one.
    original = pc.take(keep.cast(pa.int64()), rows.column("event_index"))
    rows = rows.set_column(rows.schema.get_field_index("event_index"), "event_index", original)
    return rows, undecoded


def _require_times(table: pa.Table) -> None:
    column_type = table.schema.field("enqueued_time").type
    require_timestamps(str(column_type), is_timestamp=pa.types.is_timestamp(column_type))


#: How the ``decode_error`` of an event begins when no schema its replay had resolves its id.
UNKNOWN_SCHEMA_ID = "unknown schema id"


@dataclass(frozen=True)
class UndecodedEvents:
    """The events of a table that did not decode (``decode_error`` set), as counted for
    :func:`warn_undecoded`; each engine counts them its way."""

    #: Events with a ``decode_error``.
    count: int
    #: Events in the table.
    total: int
    #: The most common ``decode_error`` (of those equally common, the first in text order).
    reason: str
    #: How many events have it.
    reason_count: int
    #: Whether any ``decode_error`` is an unknown schema id (:data:`UNKNOWN_SCHEMA_ID`).
    unknown_ids: bool


def _undecoded(events: pa.Table) -> UndecodedEvents | None:
    """The events of ``events`` that did not decode; None when all did (or it does not say)."""
    if "decode_error" not in events.column_names:
        return None
    errors = events.column("decode_error")
    count = len(errors) - errors.null_count
    if not count:
        return None
    counted = pc.value_counts(errors.drop_null()).to_pylist()
    top = min(counted, key=lambda c: (-c["counts"], c["values"]))
    unknown_ids = bool(pc.any(pc.starts_with(errors, UNKNOWN_SCHEMA_ID)).as_py())
    return UndecodedEvents(count, len(errors), top["values"], top["counts"], unknown_ids)


def warn_undecoded(question: str, undecoded: UndecodedEvents | None) -> None:
    """Warn (:class:`UndecodedEventWarning`) that ``question``'s answer leaves out the events
    that did not decode (``undecoded``; nothing when None or none): without a payload they
    have no aspects. Says how many, the most common reason and what to do."""
    if undecoded is None or not undecoded.count:
        return
    fix = (
        "replay with registry= (mk.replay_capture(path, registry=ws.registry), or ws.replay()) "
        "or, for spark_replay / dask_replay, schemas=, so the schema ids of their content types "
        "resolve"
        if undecoded.unknown_ids
        else "their raw body and decode_error stay in the events table (filter on "
        "decode_error to see them); a replay with the schema they were written with "
        "(registry= or schemas=) decodes those the reader schema can resolve"
    )
    warn(
        UndecodedEventWarning(
            f"{question}: {undecoded.count} of {undecoded.total} events did not decode and are "
            f"left out of the answer (most common reason, {undecoded.reason_count} of them: "
            f"{undecoded.reason}); {fix}"
        )
    )


#: What each question that needs the values before a replay's start lacks without them.
_PARTIAL_NEEDS = {
    "state_as_of": "aspects last written before it are missing",
    "changes": "the first change in the table of an aspect written before it reads as 'added' "
    "(or 'removed') with no before value",
}


def warn_partial(
    question: str,
    start: datetime | None,
    *,
    window_start: datetime | None = None,
    unknown_before: Callable[[], bool] | None = None,
) -> None:
    """Warn (:class:`PartialHistoryWarning`) that the table ``question`` (``"state_as_of"`` or
    ``"changes"``) was asked of comes from a replay that started at ``start`` (its
    :func:`~metaverse_kit.history.replay.replay_start`; nothing when None), after the lake's
    first events, so the values written before it are unknown.

    For :func:`changes`, only when the window (from ``window_start``) opens before ``start`` or
    ``unknown_before()`` says a row of the answer has no value from before the window: a window
    opened after the start is whole, and a row with a value from before it is right.
    ``unknown_before`` is asked last, and only then (on Spark it runs a job).
    """
    if start is None:
        return
    if question == "changes" and not (
        window_start is None
        or start > window_start
        or (unknown_before is not None and unknown_before())
    ):
        return
    warn(
        PartialHistoryWarning(
            f"{question}: this table was replayed from {start.isoformat()} (start=) and the lake "
            f"holds events before that: values written before it are unknown, so "
            f"{_PARTIAL_NEEDS[question]}; replay from earlier (or without start=) for the "
            "whole history"
        )
    )


def empty_aspects() -> pa.Table:
    """The columns of :func:`aspects` for the built-in MCE schema, with no row: what a view
    shows before any event arrives."""
    from metaverse_kit.events.builtin import mce_definition
    from metaverse_kit.history.replay import PayloadSchema

    return aspects(PayloadSchema(mce_definition()).arrow_schema().empty_table())


def aspects(events: Any, *, values: bool = True) -> pa.Table:
    """One row per (event, aspect), in replay order.

    Columns: ``urn``, ``entity_type`` (``dataset``, ``corpuser``, ...), ``platform`` (of a
    dataset, else null), ``aspect`` (DataHub's name: ``ownership``), ``aspect_type`` (the
    record's full name), ``change`` (``upsert`` / ``soft_delete`` / ``delete``), ``value``
    (the typed aspect union, see the module notes), ``enqueued_time``, ``emitted_time`` (when
    the user emitted it, null for events without the property; see *Order*), ``partition``,
    ``sequence_number``, ``message_id``, ``event_index`` (the event's row in ``events``) and
    ``aspect_index`` (the aspect's position in its MCE). Events that did not decode
    (``decode_error`` set) have no aspects and no rows.

    ``values=False`` leaves the ``value`` column out, and the nested values are not copied:
    far cheaper on a long history, for a caller that needs to know which write is where
    (``event_index`` and ``aspect_index`` locate each value in ``events``).

    Of a pyspark DataFrame, a DataFrame of the same rows, computed by Spark, without
    ``event_index``.

    Raises :class:`MissingColumnError` naming a column ``events`` lacks, and
    :class:`HistoryInputError` when it is not an events table.
    """
    check_flag(values, "values")
    if (spark := _spark_questions(events)) is not None:
        return spark.aspects(events, values=values)
    return _asked(events, count=False, values=values)[0]


def aspect_record(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Unwrap one ``value`` of the aspects table (``{"branch": ..., "Ownership": {...}}``).

    Returns the aspect record as a dict (``{"owners": [...], ...}``), or None for None.
    """
    held = union_branch(value)
    if held is None:
        return None
    inner = held[1]
    return inner if isinstance(inner, dict) else None


def _resolve_aspect(table: pa.Table, aspect: str) -> pa.Array | pa.ChunkedArray:
    check_aspect_name(aspect, _known_aspects(table))
    by_name = pc.equal(table.column("aspect"), aspect)
    by_type = pc.equal(table.column("aspect_type"), aspect)
    by_short = pc.ends_with(table.column("aspect_type"), "." + aspect)
    return pc.or_(pc.or_(by_name, by_type), by_short)


def check_aspect_name(aspect: Any, known: Mapping[str, str]) -> None:
    """Raise :class:`HistoryInputError` unless ``aspect`` is a name of an aspect of ``known``
    (:func:`known_aspect_names`: the record's full or short name, DataHub's name) or of the
    built-in MCE; the message names the closest known one and lists them all."""
    if not isinstance(aspect, str) or not aspect:
        raise HistoryInputError(
            f"aspect must be an aspect name such as 'ownership', not {aspect!r}"
        )
    short = aspect.rpartition(".")[2]
    # NOTE: the built-in MCE's aspects are known whatever the table holds (a table of no
    # events, or of another version's value type, still answers None for them).
    if (
        aspect in known
        or short in known
        or short in known.values()
        or aspect in _builtin_aspect_names()
    ):
        return
    names = sorted(set(known.values()))
    close = difflib.get_close_matches(aspect, list(known), n=1)
    hint = f"; did you mean {known[close[0]]!r}?" if close else ""
    raise HistoryInputError(
        f"aspect {aspect!r} is no aspect this table's schema knows{hint} (known aspects: "
        f"{', '.join(names)}; the record's short or full name works too)"
    )


def known_aspect_names(
    fields: Iterable[str], *, types: Iterable[str | None] = (), names: Iterable[str | None] = ()
) -> dict[str, str]:
    """Every name the aspects of a table go by, each mapped to DataHub's name: those of the
    aspect records ``fields`` (the field names of the ``value`` union, ``branch`` aside: the
    records' short names), of the full names ``types`` (an ``aspect_type`` column's) and the
    DataHub names ``names`` (an ``aspect`` column's).

    NOTE: the type is enough (an aspect the schema has but nobody wrote to an entity is a known
    aspect with no value, not a mistyped one); the rows' names, where they are at hand, add
    the names of a table whose value type says less.
    """
    known: dict[str, str] = {}
    by_short = _aspect_by_short_name()
    for field in fields:
        if field == _BRANCH:
            continue
        name = by_short.get(field) or _aspect_name(field) or field
        known[field] = known[name] = name
    for full in types:
        if full:
            known[full] = _aspect_name(full) or full
    for given in names:
        if given:
            known[given] = given
    return known


@functools.cache
def _aspect_by_short_name() -> dict[str, str]:
    """DataHub's name of each built-in aspect, by its record's short name (``GlobalTags``)."""
    return {full.rpartition(".")[2]: name for full, name in ASPECT_NAMES.items()}


@functools.cache
def _builtin_aspect_names() -> frozenset[str]:
    """Every name a built-in aspect goes by: its record's full and short name, DataHub's."""
    return (
        frozenset(ASPECT_NAMES)
        | frozenset(ASPECT_NAMES.values())
        | frozenset(_aspect_by_short_name())
    )


def _known_aspects(table: pa.Table) -> dict[str, str]:
    """The names of the aspects of an aspects table (see :func:`known_aspect_names`)."""
    value_type = table.schema.field("value").type
    return known_aspect_names(
        [f.name for f in value_type] if pa.types.is_struct(value_type) else [],
        types=pc.unique(table.column("aspect_type")).to_pylist(),
        names=pc.unique(table.column("aspect")).to_pylist(),
    )


def _urns_of_events(events: pa.Table) -> pa.ChunkedArray | pa.Array:
    """The urn of every event's snapshot, computed column-wise (null for undecoded events)."""
    column = events.column("proposedSnapshot")
    snaps = _snapshots(column.type)
    snapshot = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    urns = [
        pc.struct_field(
            snapshot if i is None else pc.struct_field(snapshot, [i]), [t.get_field_index("urn")]
        )
        for i, t in snaps
    ]
    return urns[0] if len(urns) == 1 else pc.coalesce(*urns)


def latest_aspect(
    events: Any, urn: str, aspect_name: str, *, as_of: Any = None
) -> dict[str, Any] | None:
    """The last value written to ``aspect_name`` of ``urn``, in replay order; None if never.

    ``aspect_name`` is DataHub's name (``"ownership"``), the record's short name
    (``"Ownership"``) or its full name. ``as_of`` (optional) considers only events enqueued at
    or before that time. A soft-deleted entity still has its last values. Returns the aspect
    record as a dict, as the builders of :mod:`metaverse_kit.events.aspects` take it.

    Raises :class:`HistoryInputError` for a bad urn or time, or an aspect name no aspect of
    the table's schema has (an aspect it has but never written to ``urn`` gives None), or a
    pyspark DataFrame (saying which question to ask of it instead), and
    :class:`MissingColumnError` for a table without the columns of a replay. Warns
    (:class:`~metaverse_kit.errors.UndecodedEventWarning`) when events did not decode.
    """
    if _spark_questions(events) is not None:
        # NOTE: the answer is a dict on this machine; the other questions return DataFrames.
        raise HistoryInputError(
            "latest_aspect answers from an Arrow table and takes no pyspark DataFrame; on "
            "Spark ask mk.history.state_as_of(df, as_of, include_removed=True) and filter its "
            "rows on urn and aspect (a DataFrame, computed by Spark)"
        )
    when = None if as_of is None else as_utc(as_of, "as_of")
    rows, undecoded = _asked(events, urn)
    mask = _resolve_aspect(rows, aspect_name)
    if when is not None:
        times = rows.column("enqueued_time")
        mask = pc.and_(mask, pc.less_equal(times, time_scalar(when, times)))
    warn_undecoded("latest_aspect", undecoded)
    rows = rows.filter(mask)
    if not rows.num_rows:
        return None
    return aspect_record(rows.column("value")[rows.num_rows - 1].as_py())


# -- state as of ---------------------------------------------------------------------------------


def _last_per_key(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """The last row (in the table's order) of every distinct ``keys``, in the table's order."""
    if not table.num_rows:
        return table
    numbered = table.select(list(keys)).append_column("_row", _arange(table.num_rows))
    last = numbered.group_by(list(keys), use_threads=False).aggregate([("_row", "max")])
    rows = last.column("_row_max")
    return table.take(pc.take(rows, pc.sort_indices(rows)))


def _removed_urns(latest: pa.Table) -> pa.Array:
    soft = latest.filter(
        pc.and_(
            pc.equal(latest.column("aspect_type"), STATUS_TYPE),
            pc.equal(latest.column("change"), "soft_delete"),
        )
    )
    return pc.unique(soft.column("urn").combine_chunks())


def _up_to(table: pa.Table, when: datetime, *, inclusive: bool = True) -> pa.Table:
    times = table.column("enqueued_time")
    if inclusive:
        return table.filter(pc.less_equal(times, time_scalar(when, times)))
    return table.filter(pc.less(times, time_scalar(when, times, round_up=True)))


def state_as_of(
    events: Any, when: Any, *, include_removed: bool = False, values: bool = True
) -> pa.Table:
    """The catalogue at ``when``: for each (urn, aspect), the last value enqueued at or before it.

    One row per (urn, aspect), sorted by urn then aspect, with the columns of :func:`aspects`
    (``value``, ``enqueued_time``, ``partition``, ``sequence_number`` of the write that set it)
    plus ``removed``: whether the entity's last ``Status`` by then had ``removed=True``.
    Entities removed by then are left out unless ``include_removed=True``; a restored entity
    (``Status`` set back to ``removed=False``) is in again. Events enqueued exactly at
    ``when`` count. ``values=False`` leaves the ``value`` column out (and copies no nested
    value): ``event_index`` and ``aspect_index`` say where each write is.

    Raises :class:`HistoryInputError` for a ``when`` that is not a time and
    :class:`MissingColumnError` for a table without the columns of a replay. Warns of events
    that did not decode and of a replay that started after the lake's first events (see
    *Warnings* in the module notes).
    """
    check_flag(values, "values")
    if (spark := _spark_questions(events)) is not None:
        return spark.state_as_of(events, when, include_removed=include_removed, values=values)
    moment = as_utc(when, "when")
    table, undecoded = _asked(events, values=values)
    _require_times(table)
    warn_undecoded("state_as_of", undecoded)
    warn_partial("state_as_of", replay_start(table))
    # PERF: chosen, judged and ordered on the key columns alone; the nested values are copied
    # once, by the final take (a filter, a take and a sort of the whole table took 3 copies).
    keys = table.select(["urn", "aspect", "aspect_type", "change", "enqueued_time"])
    keys = _up_to(keys.append_column("_row", _arange(table.num_rows)), moment)
    latest = _last_per_key(keys, ["urn", "aspect"])
    removed = pc.is_in(latest.column("urn"), value_set=_removed_urns(latest))
    latest = latest.append_column("removed", removed)
    if not include_removed:
        latest = latest.filter(pc.invert(removed))
    latest = latest.sort_by([("urn", "ascending"), ("aspect", "ascending")])
    out = table.take(latest.column("_row"))
    out = out.drop_columns([c for c in ("change", "removed") if c in out.column_names])
    return out.append_column("removed", latest.column("removed"))


# -- diffs ----------------------------------------------------------------------------------------


def _set(value: Any) -> bool:
    return value is not None and value != [] and value != {}


#: Fields that identify an item in a list of records (an owner, a tag, a term, a link).
ITEM_KEYS = ("owner", "tag", "urn", "url", "fieldPath", "dataset")


def _item_key(item_type: pa.DataType, old: list, new: list) -> str | None:
    """The field that names each item of both lists, if there is one and it is unique."""
    if not pa.types.is_struct(item_type):
        return None
    for key in ITEM_KEYS:
        index = item_type.get_field_index(key)
        if index < 0 or not pa.types.is_string(item_type.field(index).type):
            continue
        for items in (old, new):
            names = [i.get(key) if isinstance(i, dict) else None for i in items]
            if None in names or len(set(names)) != len(names):
                return None
        return key
    return None


def _diff_keyed(
    old: list, new: list, item_type: pa.DataType, key: str, path: str, out: list[str]
) -> None:
    # NOTE: items are matched by what they name (an owner's urn), not by position, so one owner
    # inserted in the middle is one added item, not every later item changed.
    a = {i[key]: i for i in old}
    b = {i[key]: i for i in new}
    before = len(out)
    for name in [*a, *(n for n in b if n not in a)]:
        where = f"{path}[{key}={name}]"
        if name not in a or name not in b:
            out.append(where)
        else:
            _diff(a[name], b[name], item_type, where, out)
    if len(out) == before:
        out.append(path)  # the same items in another order


def _diff(old: Any, new: Any, t: pa.DataType, path: str, out: list[str]) -> None:
    if old == new:
        return
    if old is None or new is None:
        out.append(path)
        return
    if pa.types.is_struct(t):
        for f in t:
            _diff(
                old.get(f.name),
                new.get(f.name),
                f.type,
                f"{path}.{f.name}" if path else f.name,
                out,
            )
        return
    if pa.types.is_map(t):
        # NOTE: to_pylist gives a map as (key, value) pairs; keys name the path, not positions.
        a, b = dict(old), dict(new)
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{path}[{key}]")
            else:
                _diff(a[key], b[key], t.item_type, f"{path}[{key}]", out)
        return
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        key = _item_key(t.value_type, old, new)
        if key is not None:
            _diff_keyed(old, new, t.value_type, key, path, out)
            return
        for i in range(max(len(old), len(new))):
            if i >= len(old) or i >= len(new):
                out.append(f"{path}[{i}]")
            else:
                _diff(old[i], new[i], t.value_type, f"{path}[{i}]", out)
        return
    out.append(path)


def changed_fields(
    previous: dict[str, Any] | None, new: dict[str, Any] | None, aspect_type: pa.DataType
) -> list[str]:
    """The paths of the fields that differ between two aspect records of Arrow type ``aspect_type``.

    Paths are dotted (``lastModified.actor``). Items of a list of records that name something
    (an ``owner``, ``tag``, ``urn``, ``url``, ``fieldPath`` or ``dataset`` field, see
    :data:`ITEM_KEYS`, unique in both lists) are matched by that name:
    ``owners[owner=urn:li:corpuser:okoro]`` for an owner added or removed,
    ``owners[owner=urn:li:corpuser:jdoe].type`` for one field of it; the same items in another
    order name the list itself. Other list items go by position
    (``paths[2]``), map entries by key (``customProperties[team]``). A field that appears or
    disappears as a whole is named once, not field by field. With no ``previous`` (a first
    write), the top-level fields ``new`` sets are named. Equal records give ``[]``.
    """
    if previous is None and new is not None:
        return [f.name for f in aspect_type if _set(new.get(f.name))]
    if new is None:
        return (
            [] if previous is None else [f.name for f in aspect_type if _set(previous.get(f.name))]
        )
    out: list[str] = []
    _diff(previous, new, aspect_type, "", out)
    return out


def _record_type(value_type: pa.StructType, branch: str) -> pa.DataType:
    return branch_type(value_type, branch)


# -- audit trail ---------------------------------------------------------------------------------

_ACTOR_STAMPS = ("lastModified", "auditStamp", "lastUpdated", "created", "lifecycleLastUpdated")


def _actor(record: dict[str, Any] | None) -> str | None:
    """Who an aspect says wrote it: its own ``actor``, else the actor of its audit stamp."""
    if not record:
        return None
    if isinstance(record.get("actor"), str):
        return str(record["actor"])
    for key in _ACTOR_STAMPS:
        stamp = record.get(key)
        if isinstance(stamp, dict) and isinstance(stamp.get("actor"), str):
            return str(stamp["actor"])
    return None


#: The columns of :func:`audit_trail`, in order.
AUDIT_COLUMNS = (
    "urn",
    "entity_type",
    "aspect",
    "aspect_type",
    "change",
    "late",
    "enqueued_time",
    "emitted_time",
    "partition",
    "sequence_number",
    "message_id",
    "actor",
    "changed_fields",
    "previous_value",
    "value",
    "event_index",
)


def write_change(
    previous_value: dict[str, Any] | None, value: dict[str, Any] | None, value_type: pa.DataType
) -> tuple[list[str], str | None]:
    """One row of :func:`audit_trail`: the fields a write changed and who the aspect says made it.

    ``previous_value`` and ``value`` are values of the aspects table's ``value`` column (the
    union, as ``to_pylist`` gives them), of Arrow type ``value_type``.
    """
    new = aspect_record(value)
    old = aspect_record(previous_value)
    branch = value[_BRANCH] if value else None
    fields = changed_fields(old, new, _record_type(value_type, branch)) if branch else []
    return fields, _actor(new)


def audit_trail(events: Any, urn: str, *, aspect: str | None = None) -> pa.Table:
    """Every aspect written to ``urn``, oldest first, each with its previous and new value.

    Rows are in the order the writes were made (see *Order* in the module notes). Columns:
    ``urn``, ``entity_type``, ``aspect``, ``aspect_type``, ``change``, ``late`` (True for a
    write that reached the hub after a newer write of the same aspect, such as an outbox retry
    of an event emitted while the hub was down: the newer value stands, so the late write's
    value never became the current one), ``enqueued_time``, ``emitted_time`` (when the user
    emitted it; null for events from elsewhere), ``partition``, ``sequence_number``,
    ``message_id``, ``actor`` (the actor
    of the aspect's own audit stamp, when it has one), ``changed_fields`` (see
    :func:`changed_fields`; empty when the write repeated the previous value, which stays in
    the trail), ``previous_value`` (null for the first write of that aspect), ``value`` and
    ``event_index``. ``aspect`` (optional) keeps one aspect's trail.

    Raises :class:`HistoryInputError` for a bad urn, an ``aspect`` no aspect of the table's
    schema has (one it has but never written to ``urn`` gives no rows) or an ``enqueued_time``
    that holds no timestamps (``late`` compares them), and :class:`MissingColumnError` for a
    table without the columns of a replay. Warns
    (:class:`~metaverse_kit.errors.UndecodedEventWarning`) when events did not decode.
    """
    if (spark := _spark_questions(events)) is not None:
        return spark.audit_trail(events, urn, aspect=aspect)
    rows, undecoded = _asked(events, urn)
    if aspect is not None:
        rows = rows.filter(_resolve_aspect(rows, aspect))
    # NOTE: late is judged on the arrival times; text there would be compared as text.
    _require_times(rows)
    warn_undecoded("audit_trail", undecoded)
    # NOTE: the trail of a trail: the columns computed here are computed again.
    rows = rows.drop_columns([c for c in AUDIT_COMPUTED if c in rows.column_names])
    value_type = rows.schema.field("value").type
    values = rows.column("value").to_pylist()
    names = rows.column("aspect").to_pylist()
    previous_index: list[int | None] = []
    fields: list[list[str]] = []
    actors: list[str | None] = []
    last: dict[str, int] = {}
    # NOTE: a Python loop, but over one entity's writes: a short list.
    for i, (name, value) in enumerate(zip(names, values, strict=True)):
        before = last.get(name)
        previous_index.append(before)
        changed, actor = write_change(None if before is None else values[before], value, value_type)
        fields.append(changed)
        actors.append(actor)
        last[name] = i
    previous = rows.column("value").take(pa.array(previous_index, pa.int64()))
    rows = rows.append_column("previous_value", previous)
    rows = rows.append_column("late", pa.array(_late(rows), pa.bool_()))
    rows = rows.append_column("changed_fields", pa.array(fields, pa.list_(pa.string())))
    rows = rows.append_column("actor", pa.array(actors, pa.string()))
    return rows.select(list(AUDIT_COLUMNS))


#: The columns of :func:`audit_trail` it computes: the trail of a trail computes them again.
AUDIT_COMPUTED = ("previous_value", "late", "changed_fields", "actor")


def _late(rows: pa.Table) -> list[bool]:
    """For each write (rows in write order), whether a newer write of its aspect arrived first."""
    arrived = list(
        zip(
            rows.column("enqueued_time").cast(pa.int64()).to_pylist(),
            _partition_order(rows.column("partition")).to_pylist(),
            rows.column("sequence_number").to_pylist(),
            strict=True,
        )
    )
    earliest_later: dict[str, tuple[Any, ...]] = {}
    late = [False] * rows.num_rows
    names = rows.column("aspect").to_pylist()
    for i in range(rows.num_rows - 1, -1, -1):
        seen = earliest_later.get(names[i])
        late[i] = seen is not None and _before(seen, arrived[i])
        if seen is None or _before(arrived[i], seen):
            earliest_later[names[i]] = arrived[i]
    return late


def _before(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Arrival order (enqueued time, partition, sequence number); unknowns compare as equal."""
    for x, y in zip(a, b, strict=True):
        if x is None or y is None or x == y or type(x) is not type(y):
            continue
        return bool(x < y)
    return False


# -- changes between two times -------------------------------------------------------------------

#: The kinds in the ``change`` column of :func:`changes`.
WINDOW_CHANGE_KINDS = ("added", "changed", "removed", "restored", "unchanged")


def window_change(
    before_value: dict[str, Any] | None, after_value: dict[str, Any], value_type: pa.DataType
) -> tuple[str, list[str]]:
    """One row of :func:`changes`: its kind (:data:`WINDOW_CHANGE_KINDS`) and the fields that
    differ between the value before the window and the last one in it (values of the aspects
    table's ``value`` column, of Arrow type ``value_type``)."""
    new, old = aspect_record(after_value), aspect_record(before_value)
    branch = after_value[_BRANCH]
    diff = changed_fields(old, new, _record_type(value_type, branch))
    if branch == STATUS_TYPE:
        was, now = bool(old and old.get("removed")), bool(new and new.get("removed"))
        kind = (
            "removed"
            if now and not was
            else "restored"
            if was and not now
            else "added"
            if old is None
            else "changed"
            if diff
            else "unchanged"
        )
    else:
        kind = "added" if old is None else "changed" if diff else "unchanged"
    return kind, diff


def changes(events: Any, start: Any, end: Any, *, include_unchanged: bool = False) -> pa.Table:
    """What was added, changed and removed between ``start`` and ``end``, per entity and aspect.

    Compares each (urn, aspect) written in the window ``start <= enqueued_time <= end`` with
    its value just before ``start``. ``change`` is ``added`` (no value before), ``changed``
    (another value), ``removed`` (a ``Status`` aspect that soft-deleted the entity),
    ``restored`` (a ``Status`` that undid an earlier removal) or, only with
    ``include_unchanged=True``, ``unchanged`` (written, but back to the value it had before,
    such as a tag added and taken away again). One row per (urn, aspect), sorted by urn then
    aspect, with ``before`` and ``after`` values, ``changed_fields`` between them, ``writes``
    (how many writes in the window), ``first_time`` and ``last_time`` (of those writes) and
    the ``urn``, ``entity_type``, ``platform``, ``aspect``, ``aspect_type`` of :func:`aspects`.

    Raises :class:`HistoryInputError` when ``start`` is after ``end`` or either is not a time.
    Warns of events that did not decode, and of a replay that started after the lake's first
    events when the answer may read an older value as none (see *Warnings* in the module notes).
    """
    if (spark := _spark_questions(events)) is not None:
        return spark.changes(events, start, end, include_unchanged=include_unchanged)
    lo, hi = window_bounds(start, end)
    table, undecoded = _asked(events)
    _require_times(table)
    warn_undecoded("changes", undecoded)
    times = table.column("enqueued_time")
    in_window = pc.and_(
        pc.greater_equal(times, time_scalar(lo, times, round_up=True)),
        pc.less_equal(times, time_scalar(hi, times)),
    )
    window = table.filter(in_window)
    stats = window.group_by(["urn", "aspect"], use_threads=False).aggregate(
        [("enqueued_time", "min"), ("enqueued_time", "max"), ("enqueued_time", "count")]
    )
    touched = pc.unique(window.column("urn"))
    # NOTE: the value at ``end`` is the last write made (not the last to arrive) of those
    # enqueued by then: a late write in the window may leave an older-arrived newer one in place.
    upto_end = _up_to(table, hi)
    upto_end = upto_end.filter(pc.is_in(upto_end.column("urn"), value_set=touched))
    after = _last_per_key(upto_end, ["urn", "aspect"])
    before_rows = _up_to(table, lo, inclusive=False)
    before_rows = before_rows.filter(pc.is_in(before_rows.column("urn"), value_set=touched))
    before = _last_per_key(before_rows, ["urn", "aspect"])
    before_at = {
        key: i
        for i, key in enumerate(
            zip(before.column("urn").to_pylist(), before.column("aspect").to_pylist(), strict=True)
        )
    }
    stat_at = {
        key: i
        for i, key in enumerate(
            zip(stats.column("urn").to_pylist(), stats.column("aspect").to_pylist(), strict=True)
        )
    }
    value_type = table.schema.field("value").type
    after_values = after.column("value").to_pylist()
    before_values = before.column("value").to_pylist()
    keep: list[int] = []
    before_index: list[int | None] = []
    kinds: list[str] = []
    fields: list[list[str]] = []
    firsts: list[int] = []
    # NOTE: per-row work over the (urn, aspect) pairs written in the window only.
    for i, key in enumerate(
        zip(after.column("urn").to_pylist(), after.column("aspect").to_pylist(), strict=True)
    ):
        if key not in stat_at:
            continue  # an aspect of a touched entity that was not written in the window
        j = before_at.get(key)
        kind, diff = window_change(
            None if j is None else before_values[j], after_values[i], value_type
        )
        if kind == "unchanged" and not include_unchanged:
            continue
        keep.append(i)
        before_index.append(j)
        kinds.append(kind)
        fields.append(diff)
        firsts.append(stat_at[key])
    warn_partial(
        "changes",
        replay_start(table),
        window_start=lo,
        unknown_before=lambda: None in before_index,
    )
    picked = after.take(pa.array(keep, pa.int64()))
    stat_rows = stats.take(pa.array(firsts, pa.int64()))
    result = pa.table(
        {
            "urn": picked.column("urn"),
            "entity_type": picked.column("entity_type"),
            "platform": picked.column("platform"),
            "aspect": picked.column("aspect"),
            "aspect_type": picked.column("aspect_type"),
            "change": pa.array(kinds, pa.string()),
            "changed_fields": pa.array(fields, pa.list_(pa.string())),
            "before": before.column("value").take(pa.array(before_index, pa.int64())),
            "after": picked.column("value"),
            "writes": stat_rows.column("enqueued_time_count"),
            "first_time": stat_rows.column("enqueued_time_min"),
            "last_time": stat_rows.column("enqueued_time_max"),
        }
    )
    return result.sort_by([("urn", "ascending"), ("aspect", "ascending")])
