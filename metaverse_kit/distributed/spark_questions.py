"""The history questions on a Spark DataFrame: the same answers as :mod:`metaverse_kit.history`.

``mk.history.state_as_of``, ``audit_trail`` and ``changes`` hand a pyspark DataFrame (the rows
of :func:`~metaverse_kit.distributed.spark_replay`, or the same rows read back from a Parquet
export) to the functions here, which return DataFrames. Nothing is collected to the driver:
aspects are exploded with ``posexplode``, "the last write before t" is a ``row_number`` window
over the replay order, previous values a ``lag`` window, and the field-by-field comparison of
two aspect values runs on the executors (``mapInArrow``) with the local
:func:`~metaverse_kit.history.changed_fields`, so both paths name the same fields.

Differences from the local tables: no ``event_index`` column (a DataFrame has no row
numbers); timestamps are Spark's ``TimestampType``; rows of ``audit_trail`` are ordered oldest
first and those of ``state_as_of`` and ``changes`` by urn and aspect, as locally.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from metaverse_kit.distributed.spark import require_pyspark, spark_schema, without_pandas_warning
from metaverse_kit.events.aspects import ASPECT_NAMES
from metaverse_kit.history import questions as _local

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

__all__ = ["aspects", "audit_trail", "changes", "state_as_of"]

_STATUS = "com.linkedin.pegasus2avro.common.Status"
_BRANCH = "branch"
_ENVELOPE = ("enqueued_time", "partition", "sequence_number", "message_id")
_ASPECT_COLUMNS = (
    "urn",
    "entity_type",
    "platform",
    "aspect",
    "aspect_type",
    "change",
    "value",
    "enqueued_time",
    "partition",
    "sequence_number",
    "message_id",
    "aspect_index",
)


def _f() -> Any:
    return require_pyspark().functions


def _require(df: DataFrame, columns: tuple[str, ...]) -> None:
    # NOTE: the local check on an empty table with the same names: the same messages.
    _local._require(pa.table({c: pa.nulls(0) for c in df.columns}), columns)


def _order(*, descending: bool = False) -> list[Column]:
    """The replay order of aspect rows: time, partition (numerically), sequence, position."""
    f = _f()
    partition_number = f.expr("try_cast(partition AS BIGINT)")
    keys = [
        f.col("enqueued_time"),
        partition_number,
        f.col("partition"),
        f.col("sequence_number"),
        f.col("aspect_index"),
    ]
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


def _explode(df: DataFrame, urn: str | None = None) -> DataFrame:
    """One row per (event, aspect): the local ``aspects`` table's columns but ``event_index``."""
    f = _f()
    _require(df, ("enqueued_time", "partition", "sequence_number", "proposedSnapshot"))
    snaps, value_fields = _value_fields(df.schema["proposedSnapshot"].dataType)
    message_id = f.col("message_id") if "message_id" in df.columns else f.lit(None).cast("string")
    envelope = [
        f.col("enqueued_time"),
        f.col("partition"),
        f.col("sequence_number"),
        message_id.alias("message_id"),
    ]
    parts = []
    for snap in snaps:
        base = "proposedSnapshot" if snap is None else f"proposedSnapshot.{snap}"
        rows = df
        if urn is not None:
            # PERF: one entity's events are kept before anything is exploded.
            rows = rows.where(f.col(f"{base}.urn") == f.lit(urn))
        rows = rows.select(
            f.col(f"{base}.urn").alias("urn"),
            *envelope,
            f.posexplode(f.col(f"{base}.aspects")).alias("aspect_index", "item"),
        )
        item_type: Any = rows.schema["item"].dataType
        present = set(item_type.fieldNames())
        value = f.struct(
            *[
                (
                    f.col(f"item.{field.name}")
                    if field.name in present
                    else f.lit(None).cast(field.dataType)
                ).alias(field.name)
                for field in value_fields
            ]
        )
        parts.append(rows.select("urn", *_ENVELOPE, "aspect_index", value.alias("value")))
    exploded = parts[0]
    for part in parts[1:]:
        exploded = exploded.unionByName(part)
    names = [field.name for field in value_fields]
    branch = f.col("value.branch")
    if "Status" in names and _first_field(value_fields, "Status") == "removed":
        removed = f.coalesce(f.col("value.Status.removed"), f.lit(False))
    else:
        removed = f.lit(False)
    soft = (branch == f.lit(_STATUS)) & removed
    return exploded.select(
        "urn",
        _matched(f.col("urn"), r"^urn:li:([^:]+):").alias("entity_type"),
        _matched(f.col("urn"), r"^urn:li:dataset:\(urn:li:dataPlatform:([^,]+),").alias("platform"),
        _aspect_name(branch).alias("aspect"),
        branch.alias("aspect_type"),
        f.when(soft, f.lit("soft_delete")).otherwise(f.lit("upsert")).alias("change"),
        "value",
        "enqueued_time",
        "partition",
        "sequence_number",
        "message_id",
        f.col("aspect_index").cast("int").alias("aspect_index"),
    )


def _first_field(fields: list[Any], name: str) -> str | None:
    from pyspark.sql.types import StructType

    for field in fields:
        if field.name == name and isinstance(field.dataType, StructType):
            names = field.dataType.fieldNames()
            return names[0] if names else None
    return None


def _aspects_of(df: DataFrame, urn: str | None = None) -> DataFrame:
    if all(c in df.columns for c in _ASPECT_COLUMNS):
        return df if urn is None else df.where(_f().col("urn") == _f().lit(urn))
    return _explode(df, urn)


def aspects(events: DataFrame) -> DataFrame:
    """One row per (event, aspect), as :func:`metaverse_kit.history.aspects` (no ``event_index``).

    Raises :class:`~metaverse_kit.history.MissingColumnError` naming a missing column.
    """
    with without_pandas_warning():
        return _aspects_of(events)


def _last_per_key(rows: DataFrame, keys: list[str]) -> DataFrame:
    f, window = _f(), require_pyspark().Window
    last = f.row_number().over(window.partitionBy(*keys).orderBy(*_order(descending=True)))
    return rows.withColumn("_n", last).where(f.col("_n") == 1).drop("_n")


def state_as_of(events: DataFrame, when: Any, *, include_removed: bool = False) -> DataFrame:
    """The catalogue at ``when``, as :func:`metaverse_kit.history.state_as_of`, on Spark.

    Raises :class:`~metaverse_kit.history.HistoryInputError` for a ``when`` that is not a time.
    """
    moment = _local._as_utc(when, "when")
    with without_pandas_warning():
        f, window = _f(), require_pyspark().Window
        rows = _aspects_of(events).where(f.col("enqueued_time") <= f.lit(moment))
        latest = _last_per_key(rows, ["urn", "aspect"])
        soft = (f.col("aspect_type") == f.lit(_STATUS)) & (f.col("change") == "soft_delete")
        removed = f.max(soft).over(window.partitionBy("urn"))
        latest = latest.withColumn("removed", removed)
        if not include_removed:
            latest = latest.where(~f.col("removed"))
        return latest.drop("change").orderBy("urn", "aspect")


def _with_python_columns(
    rows: DataFrame, compute: Any, extra: list[tuple[str, pa.DataType]]
) -> DataFrame:
    """``rows`` plus columns ``compute(batch)`` returns, computed on the executors."""
    from pyspark.sql.types import StructField, StructType

    added = spark_schema(pa.schema([pa.field(n, t) for n, t in extra]))
    schema = StructType([*rows.schema.fields, *[StructField(x.name, x.dataType) for x in added]])

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            columns = compute(batch)
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, *[pa.array(columns[n], t) for n, t in extra]],
                names=[*batch.schema.names, *[n for n, _ in extra]],
            )

    return rows.mapInArrow(run, schema)


def _record_type(value_type: pa.DataType, branch: str) -> pa.DataType:
    return _local._record_type(value_type, branch)


def _audit_columns(batch: pa.RecordBatch) -> dict[str, list[Any]]:
    value_type = batch.schema.field("value").type
    fields, actors = [], []
    for value, previous in zip(
        batch.column("value").to_pylist(), batch.column("previous_value").to_pylist(), strict=True
    ):
        new, old = _local.aspect_record(value), _local.aspect_record(previous)
        branch = value[_BRANCH] if value else None
        fields.append(
            _local.changed_fields(old, new, _record_type(value_type, branch)) if branch else []
        )
        actors.append(_local._actor(new))
    return {"changed_fields": fields, "actor": actors}


def audit_trail(events: DataFrame, urn: str, *, aspect: str | None = None) -> DataFrame:
    """Every aspect written to ``urn``, as :func:`metaverse_kit.history.audit_trail`, on Spark.

    Raises :class:`~metaverse_kit.history.HistoryInputError` for a bad urn or aspect.
    """
    if not isinstance(urn, str) or not urn.startswith("urn:"):
        raise _local.HistoryInputError(
            f"urn must be a URN such as 'urn:li:corpuser:jdoe', not {urn!r}"
        )
    if aspect is not None and (not isinstance(aspect, str) or not aspect):
        raise _local.HistoryInputError(
            f"aspect must be an aspect name such as 'ownership', not {aspect!r}"
        )
    with without_pandas_warning():
        f, window = _f(), require_pyspark().Window
        rows = _aspects_of(events, urn)
        if aspect is not None:
            rows = rows.where(
                (f.col("aspect") == aspect)
                | (f.col("aspect_type") == aspect)
                | f.col("aspect_type").endswith("." + aspect)
            )
        previous = f.lag("value").over(window.partitionBy("aspect").orderBy(*_order()))
        rows = rows.withColumn("previous_value", previous)
        rows = _with_python_columns(
            rows,
            _audit_columns,
            [("changed_fields", pa.list_(pa.string())), ("actor", pa.string())],
        )
        columns = [c for c in _local._AUDIT_ORDER if c != "event_index"]
        return rows.orderBy(*_order()).select(*columns)


def _change_columns(batch: pa.RecordBatch) -> dict[str, list[Any]]:
    value_type = batch.schema.field("after").type
    kinds, fields = [], []
    for new_value, old_value in zip(
        batch.column("after").to_pylist(), batch.column("before").to_pylist(), strict=True
    ):
        new, old = _local.aspect_record(new_value), _local.aspect_record(old_value)
        branch = new_value[_BRANCH]
        diff = _local.changed_fields(old, new, _record_type(value_type, branch))
        if branch == _STATUS:
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
        kinds.append(kind)
        fields.append(diff)
    return {"change": kinds, "changed_fields": fields}


def changes(
    events: DataFrame, start: Any, end: Any, *, include_unchanged: bool = False
) -> DataFrame:
    """What was added, changed and removed between two times, as the local ``changes``, on Spark.

    Raises :class:`~metaverse_kit.history.HistoryInputError` when ``start`` is after ``end``.
    """
    lo, hi = _local._as_utc(start, "start"), _local._as_utc(end, "end")
    if lo > hi:
        raise _local.HistoryInputError(f"start ({lo.isoformat()}) is after end ({hi.isoformat()})")
    with without_pandas_warning():
        f = _f()
        table = _aspects_of(events)
        t = f.col("enqueued_time")
        window = table.where((t >= f.lit(lo)) & (t <= f.lit(hi)))
        stats = window.groupBy("urn", "aspect").agg(
            f.count(t).alias("writes"), f.min(t).alias("first_time"), f.max(t).alias("last_time")
        )
        after = _last_per_key(window, ["urn", "aspect"])
        touched = window.select("urn").distinct()
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
            _change_columns,
            [("change", pa.string()), ("changed_fields", pa.list_(pa.string()))],
        )
        if not include_unchanged:
            rows = rows.where(f.col("change") != "unchanged")
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
