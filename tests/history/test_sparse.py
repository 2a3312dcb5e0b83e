"""``history._sparse``: a batch without its all-null subtrees, made whole again exactly."""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.history import _sparse


def _through_ipc(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[tuple[int, ...]], int]:
    """Prune, write as the cache does, read back with the pruned schema, make whole."""
    stored, paths = _sparse.without_nulls(batch)
    data = stored.serialize()
    schema = _sparse.pruned_schema(batch.schema, paths)
    back = pa.ipc.read_record_batch(data, schema)
    return _sparse.with_nulls(back, batch.schema, paths), paths, data.size


def _mce_batch(workspace: mk.Workspace) -> pa.RecordBatch:
    workspace.emit(
        [
            mk.mce(
                mk.make_dataset_urn("hive", f"db.t{i}"),
                [mk.aspects.ownership([f"u{i}"]), mk.aspects.global_tags(["PII"])],
            )
            for i in range(300)
        ]
    )
    table = mk.replay_capture(workspace.lake, registry=workspace.registry, cache=False)
    return table.combine_chunks().to_batches()[0]


def test_a_replayed_mce_batch_comes_back_equal_from_half_the_bytes(
    workspace: mk.Workspace,
) -> None:
    batch = _mce_batch(workspace)
    back, paths, size = _through_ipc(batch)
    back.validate(full=True)
    assert back.schema.equals(batch.schema, check_metadata=True)
    assert back.equals(batch)
    assert back.to_pylist() == batch.to_pylist()
    # The unused union branches and aspects are most of an MCE's columns.
    assert len(paths) > 10
    assert size < 0.6 * len(batch.serialize()), (size, len(batch.serialize()))
    # Every subtree put back is all null, and every path names the largest such subtree.
    for path in paths:
        a: pa.Array = batch.column(path[0])
        for step in path[1:]:
            a = a.field(step) if pa.types.is_struct(a.type) else a.values
        assert a.null_count == len(a) > 0


def test_slices_of_a_batch_come_back_equal(workspace: mk.Workspace) -> None:
    batch = _mce_batch(workspace)
    for offset, length in [(0, 1), (7, 50), (299, 1), (120, 180)]:
        part = batch.slice(offset, length)
        back, _, _ = _through_ipc(part)
        back.validate(full=True)
        assert back.equals(part), (offset, length)


ITEM = pa.struct([("name", pa.string()), ("score", pa.float64()), ("extra", pa.int32())])
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("nothing", pa.string()),
        (
            "rec",
            pa.struct(
                [
                    ("a", pa.string()),
                    ("b", pa.struct([("x", pa.int32()), ("y", pa.list_(ITEM))])),
                    ("m", pa.map_(pa.string(), pa.string())),
                ]
            ),
        ),
        ("items", pa.large_list(ITEM)),
    ],
    metadata={b"k": b"v"},
)


def _synthetic() -> pa.RecordBatch:
    rows = [
        {
            "id": i,
            "nothing": None,
            "rec": None
            if i % 4 == 0
            else {
                "a": f"a{i}",
                "b": None if i % 3 == 0 else {"x": None, "y": [{"name": "n", "score": None}]},
                "m": {"k": str(i)},
            },
            "items": None if i % 5 == 0 else [{"name": f"i{i}", "score": None}] * (i % 3),
        }
        for i in range(40)
    ]
    return pa.RecordBatch.from_pylist(rows, schema=SCHEMA)


def test_nulls_at_every_level_come_back_as_they_were() -> None:
    batch = _synthetic()
    back, paths, _ = _through_ipc(batch)
    assert sorted(paths) == [
        (1,),  # a whole column
        # (2, 1, 0) is null wherever it is set, but pyarrow fills the rows where its record
        # is null with a valid 0: not all null, so it is kept as it is.
        (2, 1, 1, 0, 1),  # a field of a list's items, inside a record null in some rows
        (2, 1, 1, 0, 2),
        (3, 0, 1),  # fields of a large list's items
        (3, 0, 2),
    ]
    back.validate(full=True)
    assert back.schema.equals(SCHEMA, check_metadata=True)
    assert back.equals(batch)
    for offset, length in [(1, 7), (13, 27), (39, 1)]:
        part = batch.slice(offset, length)
        again, _, _ = _through_ipc(part)
        assert again.equals(part), (offset, length)


def test_a_record_that_is_set_but_all_of_whose_fields_are_null_comes_back() -> None:
    t = pa.struct([("a", pa.int32()), ("b", pa.list_(pa.string()))])
    children = [pa.nulls(5, pa.int32()), pa.nulls(5, pa.list_(pa.string()))]
    for mask in (None, pa.array([False, True, False, False, True])):
        rec = pa.StructArray.from_arrays(children, fields=list(t), mask=mask)
        batch = pa.RecordBatch.from_arrays([rec, pa.array(range(5))], names=["rec", "n"])
        for part in (batch, batch.slice(1, 3)):
            back, paths, _ = _through_ipc(part)
            assert paths == [(0, 0), (0, 1)]
            back.validate(full=True)
            assert back.equals(part) and back.to_pylist() == part.to_pylist()


def test_lists_whose_items_are_all_null_come_back() -> None:
    item = pa.struct([("a", pa.int32()), ("b", pa.string())])
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array([[None, None], None, [None]], pa.list_(pa.string())),
            pa.array([[None], [], None], pa.large_list(item)),
            pa.array([[{"a": None, "b": None}], [], None], pa.list_(item)),
        ],
        names=["strings", "records", "set_records"],
    )
    back, paths, _ = _through_ipc(batch)
    assert (0, 0) not in paths and (1, 0) not in paths
    back.validate(full=True)
    assert back.equals(batch) and back.to_pylist() == batch.to_pylist()


def test_a_batch_with_no_all_null_subtree_is_kept_as_it_is() -> None:
    batch = pa.RecordBatch.from_pylist([{"id": 1, "s": "x"}])
    stored, paths = _sparse.without_nulls(batch)
    assert paths == [] and stored is batch
    assert _sparse.with_nulls(batch, batch.schema, []) is batch
    empty = _synthetic().slice(0, 0)
    assert _through_ipc(empty)[0].equals(empty)


@pytest.mark.parametrize(
    "paths",
    [[(9,)], [(0, 1)], [(2, 7)], [()], [(2, 1), (2, 1, 0)], [(2, 2, 0)]],
    ids=["no column 9", "into a number", "no field 7", "empty", "through a null", "into a map"],
)
def test_paths_that_are_not_in_the_schema_are_refused(paths: list[tuple[int, ...]]) -> None:
    with pytest.raises(ValueError):
        _sparse.pruned_schema(SCHEMA, paths)


def test_a_batch_that_is_not_what_the_paths_left_is_refused() -> None:
    batch = _synthetic()
    stored, paths = _sparse.without_nulls(batch)
    with pytest.raises((ValueError, pa.ArrowException)):
        _sparse.with_nulls(stored, SCHEMA, paths[1:])


def test_the_memo_hands_out_one_array_per_path_and_length() -> None:
    memo = _sparse.NullMemo()
    t = SCHEMA.field("rec").type
    a = memo.nulls(SCHEMA, (2,), 10, t)
    assert memo.nulls(SCHEMA, (2,), 10, t) is a
    shorter = memo.nulls(SCHEMA, (2,), 4, t)
    assert len(shorter) == 4 and shorter.null_count == 4 and shorter.equals(pa.nulls(4, t))
    longer = memo.nulls(SCHEMA, (2,), 25, t)
    longer.validate(full=True)
    assert len(longer) == 25 and longer.equals(pa.nulls(25, t))
    # Another schema object starts afresh: the same path there may be another type.
    other = pa.schema([("id", pa.int64()), ("n", pa.int8()), ("rec", pa.int32())])
    assert memo.nulls(other, (2,), 10, pa.int32()).type == pa.int32()
    assert memo.nulls(SCHEMA, (2,), 10, t) is not a


def _random_type(rng: random.Random, depth: int) -> pa.DataType:
    kinds = ["int", "string", "bool", "ts"] + (
        ["struct", "struct", "list", "large", "map"] * (depth < 4)
    )
    kind = rng.choice(kinds)
    if kind == "struct":
        return pa.struct(
            [(f"f{i}", _random_type(rng, depth + 1)) for i in range(rng.randint(1, 4))]
        )
    if kind == "list":
        return pa.list_(_random_type(rng, depth + 1))
    if kind == "large":
        return pa.large_list(_random_type(rng, depth + 1))
    if kind == "map":
        return pa.map_(pa.string(), _random_type(rng, depth + 1))
    return {"int": pa.int64(), "string": pa.string(), "bool": pa.bool_(), "ts": pa.timestamp("ms")}[
        kind
    ]


def _random_value(rng: random.Random, t: pa.DataType, never: set[int]) -> Any:
    """A value of ``t``; types whose id() is in ``never`` are always null (all-null subtrees)."""
    if id(t) in never or rng.random() < 0.2:
        return None
    if pa.types.is_struct(t):
        return {
            t.field(i).name: _random_value(rng, t.field(i).type, never) for i in range(t.num_fields)
        }
    if pa.types.is_map(t):
        return [(f"k{i}", _random_value(rng, t.item_type, never)) for i in range(rng.randint(0, 2))]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return [_random_value(rng, t.value_type, never) for _ in range(rng.randint(0, 3))]
    if pa.types.is_string(t):
        return f"s{rng.randint(0, 9)}"
    if pa.types.is_boolean(t):
        return rng.random() < 0.5
    return rng.randint(0, 10**6)


def _types_in(t: pa.DataType) -> list[pa.DataType]:
    out = [t]
    if pa.types.is_struct(t):
        for i in range(t.num_fields):
            out += _types_in(t.field(i).type)
    elif pa.types.is_map(t):
        out += _types_in(t.item_type)
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        out += _types_in(t.value_type)
    return out


def test_random_nested_batches_and_their_slices_come_back_equal() -> None:
    """Random types and null patterns: what is left out is always put back as it was."""
    rng = random.Random(20261202)
    left_out = 0
    for _ in range(150):
        types = [_random_type(rng, 0) for _ in range(rng.randint(1, 4))]
        # Keep the type objects alive so that their ids name them while values are made.
        every = [sub for t in types for sub in _types_in(t)]
        never = {id(sub) for sub in every if rng.random() < 0.3}
        n = rng.randint(1, 30)
        columns = [pa.array([_random_value(rng, t, never) for _ in range(n)], t) for t in types]
        batch = pa.RecordBatch.from_arrays(columns, names=[f"c{i}" for i in range(len(types))])
        for part in (batch, batch.slice(rng.randint(0, n - 1))):
            back, paths, _ = _through_ipc(part)
            left_out += len(paths)
            back.validate(full=True)
            assert back.equals(part), (part.schema, paths)
            assert back.to_pylist() == part.to_pylist()
    assert left_out > 100  # the null patterns did leave subtrees out
