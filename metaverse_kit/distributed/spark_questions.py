"""The history questions on a Spark DataFrame: the same answers as :mod:`metaverse_kit.history`.

``mk.history.state_as_of``, ``audit_trail`` and ``changes`` hand a pyspark DataFrame (the rows
of :func:`~metaverse_kit.distributed.spark_replay`, or the same rows read back from a Parquet
export) to the functions here, which return DataFrames. Nothing is collected to the driver:
aspects are exploded with ``posexplode``, "the last write before t" is a ``row_number`` window
over the replay order, previous values a ``lag`` window, and the field-by-field comparison of
two aspect values runs on the executors (``mapInArrow``) with the local functions
(:func:`~metaverse_kit.history.questions.write_change`,
:func:`~metaverse_kit.history.questions.window_change`), so both paths name the same fields.
The order of writes is the local one (see *Order* in :mod:`metaverse_kit.history.questions`):
the emit time where the event has one, else the enqueued time, then enqueued time, partition
(numerically), sequence number and the aspect's position.

Differences from the local tables: no ``event_index`` column (a DataFrame has no row
numbers); timestamps are Spark's ``TimestampType`` (an ``enqueued_time`` without a time zone,
``TimestampNTZType``, is read as UTC, as locally, whatever the session's zone); rows of
``audit_trail`` are ordered oldest first and those of ``state_as_of`` and ``changes`` by urn
and aspect, as locally. Partition ids that are partly numbers and partly not sort numbers
first (locally, all as text).

Checks and warnings are the local ones (the functions of
:mod:`metaverse_kit.history.questions` that both paths call), made from the DataFrame's
schema and the metadata ``spark_replay`` records, before any Spark job. A partial start is
recorded on ``capture_file`` and on ``enqueued_time`` (which an aspects DataFrame, or a
selection of a replay's columns, keeps): the aspects :func:`aspects` gives record it there, as
the local aspects table keeps its replay's. The checks: a missing column, an
``enqueued_time`` that holds no timestamps, an aspect name the schema does not know, a time
that is not one. Two need the rows, and run a Spark job: whether events did not decode (one
aggregate over the ``decode_error`` column, once per DataFrame: see :func:`_undecoded`), and,
for ``changes`` of a replay recorded as started late whose window opens after that start,
whether a row of the answer has no value from before the window. A name in an aspects table's
``aspect`` column that its ``value`` type lacks is not known here (locally it is): reading it
would take a job.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from metaverse_kit.capture import EMITTED_TIME_PROPERTY
from metaverse_kit.distributed.spark import (
    require_pyspark,
    spark_schema,
    with_recorded_start,
    without_pandas_warning,
)
from metaverse_kit.events.aspects import ASPECT_NAMES, STATUS_TYPE
from metaverse_kit.history import questions as _local
from metaverse_kit.history.arrow_types import BRANCH_FIELD
from metaverse_kit.history.replay import check_flag, replay_start

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

__all__ = ["aspects", "audit_trail", "changes", "state_as_of"]

_BRANCH = BRANCH_FIELD
_ENVELOPE = ("enqueued_time", "emitted_time", "partition", "sequence_number", "message_id")


def _f() -> Any:
    return require_pyspark().functions


def _require(df: DataFrame, columns: tuple[str, ...]) -> None:
    # NOTE: the local check on an empty table with the same names: the same messages.
    _local.require_columns(pa.table({c: pa.nulls(0) for c in df.columns}), columns)


#: How to make a column of a DataFrame timestamps (``{name}`` is the column).
_SPARK_CAST = "df = df.withColumn({name!r}, F.col({name!r}).cast('timestamp'))"


def _instants(rows: DataFrame) -> DataFrame:
    """``rows`` whose ``enqueued_time`` holds instants (``TimestampType``); raises
    :class:`~metaverse_kit.history.HistoryInputError` when it holds no timestamps.

    NOTE: a time without a zone (``TimestampNTZType``) is UTC, as locally; Spark would compare
    it with an instant in the session's zone. Rebuilt from its fields (not cast through the
    session's zone, whose summer-time gaps would move some times).
    """
    from pyspark.sql.types import TimestampNTZType, TimestampType

    column_type = rows.schema["enqueued_time"].dataType
    _local.require_timestamps(
        column_type.simpleString(),
        is_timestamp=isinstance(column_type, (TimestampType, TimestampNTZType)),
        cast=_SPARK_CAST,
    )
    if not isinstance(column_type, TimestampNTZType):
        return rows
    t = "enqueued_time"
    utc = _f().expr(
        f"make_timestamp(year({t}), month({t}), day({t}), hour({t}), minute({t}), "
        f"date_part('SECOND', {t}), 'UTC')"
    )
    return rows.withColumn(t, utc)


def _arrival() -> list[Column]:
    """The order events reached the hub: enqueued time, partition (numerically), sequence."""
    f = _f()
    return [
        f.col("enqueued_time"),
        f.expr("try_cast(partition AS BIGINT)"),
        f.col("partition"),
        f.col("sequence_number"),
    ]


def _order(columns: list[str], *, descending: bool = False) -> list[Column]:
    """The replay order of aspect rows (of the ``columns``): write time (the emit time, else
    the enqueued time), then arrival, then the aspect's position in its event.

    A table without ``aspect_index`` (an audit trail) does not say the position: the aspects of
    one event then come by name. NOTE: locally they keep the table's order, which a DataFrame
    does not have; either way no question's answer but the order of those rows depends on it
    (each aspect is judged apart).
    """
    f = _f()
    written = f.coalesce(f.col("emitted_time"), f.col("enqueued_time"))
    position = f.col("aspect_index") if "aspect_index" in columns else f.col("aspect")
    keys = [written, *_arrival(), position]
    # NOTE: the local sort puts nulls last; the last row in that order comes first descending.
    return [k.desc_nulls_first() if descending else k.asc_nulls_last() for k in keys]


def _value_fields(snapshot_type: Any) -> tuple[list[str | None], list[Any]]:
    """Snapshot field names and the union of their aspect records (as the local ``_value_type``)."""
    from pyspark.sql.types import ArrayType, StringType, StructField, StructType

    if not isinstance(snapshot_type, StructType):
        raise _local.HistoryInputError(
            f"proposedSnapshot is a {snapshot_type.simpleString()}, not a struct; is this an "
            f"MCE table?"
        )
    names = snapshot_type.fieldNames()
    snaps: list[str | None] = (
        [f.name for f in snapshot_type.fields if f.name != _BRANCH] if _BRANCH in names else [None]
    )
    fields: dict[str, StructField] = {}
    for snap in snaps:
        t: Any = snapshot_type if snap is None else snapshot_type[snap].dataType
        inner = {f.name: f.dataType for f in t.fields}
        aspects_type = inner.get("aspects")
        if "urn" not in inner or not isinstance(aspects_type, ArrayType):
            raise _local.HistoryInputError(
                f"every snapshot in proposedSnapshot needs a urn and an aspects list; "
                f"{t.simpleString()} has not"
            )
        item = aspects_type.elementType
        if not (isinstance(item, StructType) and _BRANCH in item.fieldNames()):
            raise _local.HistoryInputError(
                f"the aspects of a snapshot are {item.simpleString()}, not a union of aspect "
                f"records"
            )
        for field in item.fields:
            if field.name == _BRANCH:
                continue
            known = fields.get(field.name)
            if known is not None and known.dataType != field.dataType:
                raise _local.HistoryInputError(
                    f"two aspect records named {field.name} have different types in this "
                    f"schema; the aspects of one table must agree"
                )
            fields[field.name] = field
    return snaps, [StructField(_BRANCH, StringType()), *fields.values()]


def _aspect_name(branch: Column) -> Column:
    f = _f()
    known = f.create_map(*[f.lit(x) for pair in ASPECT_NAMES.items() for x in pair])
    short = f.regexp_extract(branch, r"([^.]*)$", 1)
    derived = f.concat(f.lower(f.substring(short, 1, 1)), f.substring(short, 2, 1 << 30))
    return f.when(branch.isNull(), f.lit(None)).otherwise(f.coalesce(known[branch], derived))


def _matched(text: Column, pattern: str) -> Column:
    """The first group of ``pattern`` in ``text``; null when it does not match (as Arrow's)."""
    f = _f()
    return f.when(text.rlike(pattern), f.regexp_extract(text, pattern, 1))


def _entity_and_platform() -> dict[str, Column]:
    """The entity type of the ``urn`` column's urns, and the platform of a dataset urn."""
    f = _f()
    return {
        "entity_type": _matched(f.col("urn"), r"^urn:li:([^:]+):"),
        "platform": _matched(f.col("urn"), r"^urn:li:dataset:\(urn:li:dataPlatform:([^,]+),"),
    }


def _explode(df: DataFrame, urn: str | None = None) -> DataFrame:
    """One row per (event, aspect): the local ``aspects`` table's columns but ``event_index``."""
    f = _f()
    _require(df, ("enqueued_time", "partition", "sequence_number", "proposedSnapshot"))
    snaps, value_fields = _value_fields(df.schema["proposedSnapshot"].dataType)
    message_id = f.col("message_id") if "message_id" in df.columns else f.lit(None).cast("string")
    envelope = [
        f.col("enqueued_time"),
        _emitted_time(df).alias("emitted_time"),
        f.col("partition"),
        f.col("sequence_number"),
        message_id.alias("message_id"),
    ]
    bases = ["proposedSnapshot" if snap is None else f"proposedSnapshot.{snap}" for snap in snaps]
    # PERF: one pass over the events: each snapshot type's aspects are widened to the common
    # value union with a higher-order function, and the one that is set is exploded.
    widened = [_widened(df, base, value_fields) for base in bases]
    urns = f.coalesce(*[f.col(f"{base}.urn") for base in bases])
    rows = df if urn is None else df.where(urns == f.lit(urn))
    items = f.coalesce(*widened) if len(widened) > 1 else widened[0]
    exploded = rows.select(
        urns.alias("urn"),
        *envelope,
        f.posexplode(items).alias("aspect_index", "value"),
    )
    names = [field.name for field in value_fields]
    branch = f.col("value.branch")
    if "Status" in names and _first_field(value_fields, "Status") == "removed":
        removed = f.coalesce(f.col("value.Status.removed"), f.lit(False))
    else:
        removed = f.lit(False)
    soft = (branch == f.lit(STATUS_TYPE)) & removed
    derived = _entity_and_platform()
    table = exploded.select(
        "urn",
        derived["entity_type"].alias("entity_type"),
        derived["platform"].alias("platform"),
        _aspect_name(branch).alias("aspect"),
        branch.alias("aspect_type"),
        f.when(soft, f.lit("soft_delete")).otherwise(f.lit("upsert")).alias("change"),
        "value",
        "enqueued_time",
        "emitted_time",
        "partition",
        "sequence_number",
        "message_id",
        f.col("aspect_index").cast("int").alias("aspect_index"),
    )
    # NOTE: carried over, as locally, so a question of the aspects table knows the replay was
    # partial: it has no capture_file column to read it from.
    start = _replay_start(df)
    return with_recorded_start(table, None if start is None else start.isoformat())


def _replay_start(df: DataFrame) -> datetime | None:
    """:func:`~metaverse_kit.history.replay.replay_start` of a replay DataFrame (recorded on its
    ``capture_file`` column) or of one narrowed or exploded from it (on ``enqueued_time``: see
    :func:`~metaverse_kit.distributed.spark.with_recorded_start`)."""
    return replay_start(df)


def _widened(df: DataFrame, base: str, value_fields: list[Any]) -> Column:
    """A snapshot type's aspects, each as the common value union (the local ``_value_type``)."""
    f = _f()
    item_type: Any = df.schema[base.split(".")[0]].dataType
    for part in base.split(".")[1:]:
        item_type = item_type[part].dataType
    present = set(item_type["aspects"].dataType.elementType.fieldNames())

    def widen(item: Column) -> Column:
        return f.struct(
            *[
                (
                    item.getField(field.name)
                    if field.name in present
                    else f.lit(None).cast(field.dataType)
                ).alias(field.name)
                for field in value_fields
            ]
        )

    return f.transform(f.col(f"{base}.aspects"), widen)


def _emitted_time(df: DataFrame) -> Column:
    """Each event's emit time (the local ``_emitted_times``): the property's epoch milliseconds,
    null where the event has none or a value that is not one."""
    from pyspark.sql.types import MapType

    f = _f()
    empty = f.lit(None).cast("timestamp")
    if "properties" not in df.columns or not isinstance(df.schema["properties"].dataType, MapType):
        return empty
    text = f.try_element_at(f.col("properties"), f.lit(EMITTED_TIME_PROPERTY))
    return f.when(text.rlike(r"^[0-9]{1,15}$"), f.timestamp_millis(text.cast("long"))).otherwise(
        empty
    )


def _first_field(fields: list[Any], name: str) -> str | None:
    from pyspark.sql.types import StructType

    for field in fields:
        if field.name == name and isinstance(field.dataType, StructType):
            names = field.dataType.fieldNames()
            return names[0] if names else None
    return None


def _is_aspects(df: DataFrame) -> bool:
    # NOTE: with or without its values (aspects(values=False)), as locally; a question that
    # needs them says the column is missing.
    return _local.has_aspect_columns([*df.columns, "value"])


def _aspects_of(df: DataFrame, urn: str | None = None, *, values: bool = True) -> DataFrame:
    """The aspects rows of ``df`` (of ``urn`` alone, when given): ``df`` itself when it is an
    aspects table (of :func:`aspects`, an audit trail, or a selection of their columns, whose
    missing columns are filled in as locally), else its events exploded. ``values=False``:
    without the ``value`` column (an aspects table without it is taken)."""
    if not _is_aspects(df):
        rows = _explode(df, urn)
        return rows if values else rows.drop("value")
    _require(df, _local.ORDER_COLUMNS)
    if values:
        _require(df, ("value",))
    elif "value" in df.columns:
        df = df.drop("value")
    f = _f()
    derived = _entity_and_platform()
    for name, arrow_type in _local.missing_carried(df.columns):
        if name == "event_index":
            continue  # NOTE: a DataFrame has no row numbers (see the module notes)
        spark_type = spark_schema(pa.schema([pa.field(name, arrow_type)]))[0].dataType
        df = df.withColumn(name, derived.get(name, f.lit(None)).cast(spark_type))
    return df if urn is None else df.where(f.col("urn") == f.lit(urn))


#: What :func:`_undecoded` counted, by DataFrame (a DataFrame's rows do not change).
_COUNTED: weakref.WeakKeyDictionary[Any, _local.UndecodedEvents | None] = (
    weakref.WeakKeyDictionary()
)


def _undecoded(events: DataFrame) -> _local.UndecodedEvents | None:
    """The events of ``events`` that did not decode (None for an aspects table, a table
    without ``decode_error``, or when all decoded), for the local warning.

    PERF: the one check that needs the rows: one Spark job, an aggregate by ``decode_error``
    whose single row comes back (no event does). It reads what the question reads (for an
    uncached ``spark_replay`` DataFrame, it decodes the lake once more), so it runs once per
    DataFrame and is remembered for the next question asked of it. NOTE: spark_replay's plan
    pass cannot record the count instead: it reads no body, and an event whose schema id the
    shipped schemas know may still not decode (a body cut short, a value no datetime holds).
    """
    if _is_aspects(events) or "decode_error" not in events.columns:
        return None
    try:
        return _COUNTED[events]
    except KeyError:
        pass
    except TypeError:  # a DataFrame type without weak references: counted each time
        return _count_undecoded(events)
    counted = _count_undecoded(events)
    _COUNTED[events] = counted
    return counted


def _count_undecoded(events: DataFrame) -> _local.UndecodedEvents | None:
    f = _f()
    reason = f.col("reason")
    failed = reason.isNotNull()
    per_reason = events.groupBy(f.col("decode_error").alias("reason")).agg(
        f.count(f.lit(1)).alias("n")
    )
    # NOTE: the most common reason; of those equally common the first in text order (as
    # locally): min_by skips the null order of the rows that decoded.
    top = f.struct((-f.col("n")).alias("n"), reason.alias("reason"))
    row = per_reason.agg(
        f.sum("n").alias("total"),
        f.sum(f.when(failed, f.col("n"))).alias("count"),
        f.min_by(reason, f.when(failed, top)).alias("reason"),
        f.max(f.when(failed, f.col("n"))).alias("reason_count"),
        f.max(reason.startswith(_local.UNKNOWN_SCHEMA_ID)).alias("unknown_ids"),
    ).first()
    if row is None or not row["count"]:
        return None
    return _local.UndecodedEvents(
        count=int(row["count"]),
        total=int(row["total"]),
        reason=str(row["reason"]),
        reason_count=int(row["reason_count"]),
        unknown_ids=bool(row["unknown_ids"]),
    )


def aspects(events: DataFrame, *, values: bool = True) -> DataFrame:
    """One row per (event, aspect), as :func:`metaverse_kit.history.aspects` (no ``event_index``;
    ``values=False`` leaves the ``value`` column out). A partial start the replay recorded is
    recorded on the rows' ``enqueued_time`` column, so the questions asked of them warn of it.

    Raises :class:`~metaverse_kit.history.MissingColumnError` naming a missing column.
    """
    check_flag(values, "values")
    with without_pandas_warning():
        return _aspects_of(events, values=values)


def _last_per_key(rows: DataFrame, keys: list[str]) -> DataFrame:
    f, window = _f(), require_pyspark().Window
    order = _order(rows.columns, descending=True)
    last = f.row_number().over(window.partitionBy(*keys).orderBy(*order))
    return rows.withColumn("_n", last).where(f.col("_n") == 1).drop("_n")


def state_as_of(
    events: DataFrame, when: Any, *, include_removed: bool = False, values: bool = True
) -> DataFrame:
    """The catalogue at ``when``, as :func:`metaverse_kit.history.state_as_of`, on Spark
    (``values=False``: without the ``value`` column; an aspects table without it is taken).

    Raises and warns as locally (see the module notes).
    """
    check_flag(values, "values")
    moment = _local.as_utc(when, "when")
    with without_pandas_warning():
        f, window = _f(), require_pyspark().Window
        rows = _instants(_aspects_of(events, values=values))
        _local.warn_undecoded("state_as_of", _undecoded(events))
        _local.warn_partial("state_as_of", _replay_start(events))
        rows = rows.where(f.col("enqueued_time") <= f.lit(moment))
        latest = _last_per_key(rows, ["urn", "aspect"])
        soft = (f.col("aspect_type") == f.lit(STATUS_TYPE)) & (f.col("change") == "soft_delete")
        removed = f.max(soft).over(window.partitionBy("urn"))
        latest = latest.withColumn("removed", removed)
        if not include_removed:
            latest = latest.where(~f.col("removed"))
        return latest.drop("change").orderBy("urn", "aspect")


def _with_python_columns(
    rows: DataFrame,
    compute: Callable[[Any, Any, pa.DataType], tuple[Any, ...]],
    inputs: tuple[str, str],
    extra: list[tuple[str, pa.DataType]],
) -> DataFrame:
    """``rows`` plus the ``extra`` columns ``compute(old, new, type of new)`` gives per row, from
    the two ``inputs`` columns, computed on the executors with the local function."""
    from pyspark.sql.types import StructField, StructType

    added = spark_schema(pa.schema([pa.field(n, t) for n, t in extra]))
    schema = StructType([*rows.schema.fields, *[StructField(x.name, x.dataType) for x in added]])
    old_name, new_name = inputs

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            value_type = batch.schema.field(new_name).type
            olds = batch.column(old_name).to_pylist()
            news = batch.column(new_name).to_pylist()
            results = [compute(o, n, value_type) for o, n in zip(olds, news, strict=True)]
            columns = [pa.array([r[i] for r in results], t) for i, (_, t) in enumerate(extra)]
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, *columns], names=[*batch.schema.names, *[n for n, _ in extra]]
            )

    return rows.mapInArrow(run, schema)


def audit_trail(events: DataFrame, urn: str, *, aspect: str | None = None) -> DataFrame:
    """Every aspect written to ``urn``, as :func:`metaverse_kit.history.audit_trail`, on Spark.

    ``late`` is computed as locally: a write is late when a write of the same aspect made
    after it (in write order) reached the hub before it.
    Raises and warns as locally (see the module notes).
    """
    _local.check_urn(urn)
    with without_pandas_warning():
        f, window = _f(), require_pyspark().Window
        rows = _aspects_of(events, urn)
        if aspect is not None:
            _local.check_aspect_name(aspect, _known_aspects(rows))
            rows = rows.where(
                (f.col("aspect") == aspect)
                | (f.col("aspect_type") == aspect)
                | f.col("aspect_type").endswith("." + aspect)
            )
        rows = _instants(rows)
        _local.warn_undecoded("audit_trail", _undecoded(events))
        # NOTE: the trail of a trail: the columns computed here are computed again.
        rows = rows.drop(*[c for c in _local.AUDIT_COMPUTED if c in rows.columns])
        by_aspect = window.partitionBy("aspect").orderBy(*_order(rows.columns))
        arrival = f.struct(*_arrival())
        later = by_aspect.rowsBetween(1, window.unboundedFollowing)
        rows = rows.withColumn("previous_value", f.lag("value").over(by_aspect)).withColumn(
            "late", f.coalesce(f.min(arrival).over(later) < arrival, f.lit(False))
        )
        rows = _with_python_columns(
            rows,
            _local.write_change,
            ("previous_value", "value"),
            [("changed_fields", pa.list_(pa.string())), ("actor", pa.string())],
        )
        columns = [c for c in _local.AUDIT_COLUMNS if c != "event_index"]
        return rows.orderBy(*_order(rows.columns)).select(*columns)


def _known_aspects(rows: DataFrame) -> dict[str, str]:
    """The names of the aspects of the ``value`` type of aspects rows (its schema alone)."""
    from pyspark.sql.types import StructType

    value_type = rows.schema["value"].dataType
    fields = value_type.fieldNames() if isinstance(value_type, StructType) else []
    return _local.known_aspect_names(fields)


def changes(
    events: DataFrame, start: Any, end: Any, *, include_unchanged: bool = False
) -> DataFrame:
    """What was added, changed and removed between two times, as the local ``changes``, on Spark.

    As locally, the value after is the last write made (not the last to arrive) of those
    enqueued by ``end``, for the (urn, aspect) pairs written in the window.
    Raises and warns as locally (see the module notes).
    """
    lo, hi = _local.window_bounds(start, end)
    with without_pandas_warning():
        f = _f()
        table = _instants(_aspects_of(events))
        _local.warn_undecoded("changes", _undecoded(events))
        t = f.col("enqueued_time")
        window = table.where((t >= f.lit(lo)) & (t <= f.lit(hi)))
        stats = window.groupBy("urn", "aspect").agg(
            f.count(t).alias("writes"), f.min(t).alias("first_time"), f.max(t).alias("last_time")
        )
        touched = window.select("urn").distinct()
        upto_end = table.where(t <= f.lit(hi)).join(touched, "urn", "left_semi")
        after = _last_per_key(upto_end, ["urn", "aspect"])
        earlier = table.where(t < f.lit(lo)).join(touched, "urn", "left_semi")
        before = _last_per_key(earlier, ["urn", "aspect"]).select(
            "urn", "aspect", f.col("value").alias("before")
        )
        rows = (
            after.select(
                "urn",
                "entity_type",
                "platform",
                "aspect",
                "aspect_type",
                f.col("value").alias("after"),
            )
            .join(stats, ["urn", "aspect"])
            .join(before, ["urn", "aspect"], "left")
        )
        rows = _with_python_columns(
            rows,
            _local.window_change,
            ("before", "after"),
            [("change", pa.string()), ("changed_fields", pa.list_(pa.string()))],
        )
        if not include_unchanged:
            rows = rows.where(f.col("change") != "unchanged")
        _local.warn_partial(
            "changes",
            _replay_start(events),
            window_start=lo,
            unknown_before=lambda: not rows.where(f.col("before").isNull()).isEmpty(),
        )
        return rows.select(
            "urn",
            "entity_type",
            "platform",
            "aspect",
            "aspect_type",
            "change",
            "changed_fields",
            "before",
            "after",
            "writes",
            "first_time",
            "last_time",
        ).orderBy("urn", "aspect")
