"""A decoded batch without its all-null subtrees, and the same batch made whole again.

What the replay cache writes (see :mod:`metaverse_kit.history.cache`). About half of a replayed
batch of DataHub MCEs is union branches and optional records that no event of its file uses
(116 of 242 MiB on ``benchmarks/replay.py``'s history): in memory they cost nothing
(:func:`~metaverse_kit.history._decoder.compact_nulls`: slices of one zeroed buffer), but Arrow
IPC writes every buffer at its own size, zeros included. :func:`without_nulls` leaves them out
of the batch and names them by their **paths**: a path is the column's index, then a child's
index at each level below it (a struct's field, or ``0`` for a list's items), so ``[5, 2, 0, 7]``
is field 7 of the items of the list that is field 2 of column 5. :func:`pruned_schema` is the
schema of what is left, and :func:`with_nulls` puts the all-null subtrees back, each exactly what
``compact_nulls`` makes, so a batch read back equals the one written.

A list's items are never left out whole (the list needs its child array), only what is below
them; below a map nothing is left out (a map's entries are kept whole; in an MCE they are small
string maps such as custom properties). A record that is set but all of whose fields are left
out is kept as a record of no fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from metaverse_kit.history._decoder import compact_nulls

__all__ = ["NullMemo", "SubtreePath", "null_paths", "pruned_schema", "with_nulls", "without_nulls"]

#: Where a subtree is: the column's index, then a child's index at each level below it.
SubtreePath = tuple[int, ...]
# {child index: the subtree below it, or None where the whole child is all null}
_Tree = dict[int, "_Tree | None"]


def _descends(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) or pa.types.is_list(t) or pa.types.is_large_list(t)


def _children(a: pa.Array) -> list[pa.Array]:
    """The children of a struct (as its rows see them) or a list's items (all of them)."""
    if pa.types.is_struct(a.type):
        return [a.field(i) for i in range(a.type.num_fields)]
    # NOTE: .values is the whole child, also outside a sliced list's window; the list keeps
    # its offsets, so what it points at is what is kept.
    return [a.values]


def null_paths(columns: Sequence[pa.Array]) -> list[SubtreePath]:
    """The paths of the largest all-null subtrees under ``columns`` (empty arrays never)."""
    out: list[SubtreePath] = []

    def walk(arrays: Sequence[pa.Array], prefix: SubtreePath, *, items: bool = False) -> None:
        for i, a in enumerate(arrays):
            here = (*prefix, i)
            # NOTE: a list's items are never left out whole (a list needs its child array);
            # what is below them may be.
            if len(a) and a.null_count == len(a) and not items:
                out.append(here)
            elif _descends(a.type):
                walk(_children(a), here, items=not pa.types.is_struct(a.type))

    walk(columns, ())
    if columns and all((i,) in out for i in range(len(columns))):
        # NOTE: a batch of no columns has no rows; one is kept to carry their number.
        out.remove((0,))
    return out


def _tree(paths: Sequence[Sequence[int]]) -> _Tree:
    tree: _Tree = {}
    for path in paths:
        if not path:
            raise ValueError("an empty path")
        node = tree
        for step in path[:-1]:
            child = node.setdefault(int(step), {})
            if child is None:
                raise ValueError(f"path {list(path)} runs through an all-null subtree")
            node = child
        node[int(path[-1])] = None
    return tree


def _pruned_fields(fields: Sequence[pa.Field], tree: _Tree) -> list[pa.Field]:
    for i in tree:
        if not 0 <= i < len(fields):
            raise ValueError(f"no child {i} among {len(fields)}")
    out = []
    for i, f in enumerate(fields):
        if i not in tree:
            out.append(f)
            continue
        sub = tree[i]
        if sub is not None:
            out.append(f.with_type(_pruned_type(f.type, sub)))
    return out


def _pruned_type(t: pa.DataType, tree: _Tree) -> pa.DataType:
    if pa.types.is_struct(t):
        return pa.struct(_pruned_fields(list(t), tree))
    if pa.types.is_list(t):
        return pa.list_(_pruned_fields([t.value_field], tree)[0])
    if pa.types.is_large_list(t):
        return pa.large_list(_pruned_fields([t.value_field], tree)[0])
    raise ValueError(f"a path runs into {t}, which has no children it could leave out")


def pruned_schema(schema: pa.Schema, paths: Sequence[Sequence[int]]) -> pa.Schema:
    """``schema`` without the subtrees at ``paths``; ValueError if a path is not in it."""
    if not paths:
        return schema
    return _schema_without(schema, _tree(paths))


def _schema_without(schema: pa.Schema, tree: _Tree) -> pa.Schema:
    return pa.schema(_pruned_fields(list(schema), tree), metadata=schema.metadata)


def without_nulls(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[SubtreePath]]:
    """``batch`` without its all-null subtrees, and their paths (none: ``batch`` itself)."""
    paths = null_paths(batch.columns)
    if not paths:
        return batch, paths
    columns, fields = _pruned_arrays(batch.columns, list(batch.schema), _tree(paths))
    schema = pa.schema(fields, metadata=batch.schema.metadata)
    return pa.RecordBatch.from_arrays(columns, schema=schema), paths


def _pruned_arrays(
    arrays: Sequence[pa.Array], fields: Sequence[pa.Field], tree: _Tree
) -> tuple[list[pa.Array], list[pa.Field]]:
    """What is kept of ``arrays`` and their fields, the types pruned as their arrays are."""
    out, kept = [], []
    for i, (a, f) in enumerate(zip(arrays, fields, strict=True)):
        if i not in tree:
            out.append(a)
            kept.append(f)
            continue
        sub = tree[i]
        if sub is not None:
            out.append(_pruned_array(a, sub))
            kept.append(f.with_type(out[-1].type))
    return out, kept


def _pruned_array(a: pa.Array, tree: _Tree) -> pa.Array:
    if pa.types.is_struct(a.type):
        # NOTE: field() gives each child as the struct's rows see it (offset applied).
        children, fields = _pruned_arrays(_children(a), list(a.type), tree)
        if not children:
            # A record that is set but whose every field is null: a struct of no fields, whose
            # length from_arrays could not know.
            validity = a.is_valid().buffers()[1] if a.null_count else None
            return pa.Array.from_buffers(pa.struct([]), len(a), [validity], a.null_count)
        mask = a.is_null() if a.null_count else None
        return pa.StructArray.from_arrays(children, fields=fields, mask=mask)
    (items,), (field,) = _pruned_arrays(_children(a), [a.type.value_field], tree)
    t = pa.large_list(field) if pa.types.is_large_list(a.type) else pa.list_(field)
    validity, offsets = a.buffers()[:2]
    return pa.Array.from_buffers(t, len(a), [validity, offsets], a.null_count, a.offset, [items])


class NullMemo:
    """All-null subtrees already made, by path: one replay's entries share most of them.

    PERF: making the all-null branches of a DataHub MCE walks every field of their types (about
    1 ms a file); kept here as one array per path, at the largest length asked for so far, and
    handed out as slices of it. What is kept belongs to one schema object; another starts
    afresh (as one state, swapped whole, so replays sharing a cache object never mix them).
    """

    def __init__(self) -> None:
        self._state: _MemoState = _MemoState(None)

    def _for(self, schema: pa.Schema) -> _MemoState:
        state = self._state
        if state.schema is not schema:
            state = self._state = _MemoState(schema)
        return state

    def schema(self, schema: pa.Schema, paths: Sequence[Sequence[int]]) -> pa.Schema:
        """:func:`pruned_schema`, made once per set of paths."""
        return self._for(schema).pruned(paths)[0]

    def read(
        self, data: pa.Buffer, schema: pa.Schema, paths: Sequence[Sequence[int]]
    ) -> pa.RecordBatch:
        """The batch of ``schema`` whose pruned form (``paths`` left out) is the IPC message
        ``data``: read with :func:`pruned_schema` and made whole with :func:`with_nulls`."""
        state = self._for(schema)
        pruned, tree = state.pruned(paths)
        batch = pa.ipc.read_record_batch(data, pruned)
        return _made_whole(batch, schema, tree, state) if paths else batch

    def nulls(self, schema: pa.Schema, path: SubtreePath, n: int, t: pa.DataType) -> pa.Array:
        """``compact_nulls(n, t)`` for the subtree at ``path`` of ``schema`` (of type ``t``)."""
        return self._for(schema).nulls(path, n, t)


class _MemoState:
    def __init__(self, schema: pa.Schema | None) -> None:
        self.schema = schema
        self.arrays: dict[SubtreePath, pa.Array] = {}
        self._pruned: dict[tuple[SubtreePath, ...], tuple[pa.Schema, _Tree]] = {}
        self._fields: dict[SubtreePath, list[pa.Field]] = {}

    def pruned(self, paths: Sequence[Sequence[int]]) -> tuple[pa.Schema, _Tree]:
        key = tuple(tuple(int(s) for s in p) for p in paths)
        made = self._pruned.get(key)
        if made is None:
            assert self.schema is not None
            tree = _tree(paths)
            pruned = _schema_without(self.schema, tree) if paths else self.schema
            made = self._pruned[key] = (pruned, tree)
        return made

    def fields(self, path: SubtreePath, t: pa.StructType) -> list[pa.Field]:
        made = self._fields.get(path)
        if made is None:
            made = self._fields[path] = list(t)
        return made

    def nulls(self, path: SubtreePath, n: int, t: pa.DataType) -> pa.Array:
        made = self.arrays.get(path)
        if made is None or len(made) < n:
            made = self.arrays[path] = compact_nulls(max(n, 2 * len(made or ())), t)
        return made if len(made) == n else made.slice(0, n)


def with_nulls(
    batch: pa.RecordBatch,
    schema: pa.Schema,
    paths: Sequence[Sequence[int]],
    *,
    memo: NullMemo | None = None,
) -> pa.RecordBatch:
    """``batch`` (of :func:`pruned_schema`) with the all-null subtrees at ``paths`` put back.

    Raises ValueError (or Arrow's errors) when ``batch`` is not what ``paths`` left of ``schema``.
    """
    if not paths:
        return batch
    state = (memo or NullMemo())._for(schema)
    return _made_whole(batch, schema, state.pruned(paths)[1], state)


def _made_whole(
    batch: pa.RecordBatch, schema: pa.Schema, tree: _Tree, memo: _MemoState
) -> pa.RecordBatch:
    columns = _whole(batch.columns, list(schema), tree, batch.num_rows, (), memo)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _whole(
    arrays: Sequence[pa.Array],
    fields: Sequence[pa.Field],
    tree: _Tree,
    n: int,
    prefix: SubtreePath,
    memo: _MemoState,
) -> list[pa.Array]:
    """The children ``fields`` asks for, from ``arrays`` (what was kept) and all-null ones."""
    out: list[pa.Array] = []
    kept = list(arrays)
    if len(kept) != sum(1 for i in range(len(fields)) if tree.get(i, {}) is not None):
        raise ValueError(f"{len(kept)} children kept, not what the paths leave of {len(fields)}")
    at = iter(kept)
    for i, f in enumerate(fields):
        here = (*prefix, i)
        if i not in tree:
            out.append(next(at))
            continue
        sub = tree[i]
        if sub is None:
            out.append(memo.nulls(here, n, f.type))
        else:
            out.append(_whole_array(next(at), f.type, sub, here, memo))
    return out


def _whole_array(
    a: pa.Array, t: Any, tree: _Tree, prefix: SubtreePath, memo: _MemoState
) -> pa.Array:
    if a.offset:
        raise ValueError("a sliced array")  # IPC reads none; what was written had none
    # PERF: Array.buffers() lists every buffer of the subtree; the validity bitmap of an array
    # with nulls is taken from is_valid() instead (a few hundred bytes a file), and the arrays
    # are made from buffers, without from_arrays' checks and mask inversion (a warm replay of
    # benchmarks/replay.py's history puts back ~25 records and lists per file).
    validity = a.is_valid().buffers()[1] if a.null_count else None
    if pa.types.is_struct(t):
        children = _whole(_children(a), memo.fields(prefix, t), tree, len(a), prefix, memo)
        return pa.Array.from_buffers(t, len(a), [validity], a.null_count, children=children)
    items = a.values
    (child,) = _whole([items], [t.value_field], tree, len(items), prefix, memo)
    offsets = a.offsets.buffers()[1]
    return pa.Array.from_buffers(t, len(a), [validity, offsets], a.null_count, children=[child])
