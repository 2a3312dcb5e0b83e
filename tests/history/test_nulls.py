"""``_decoder.compact_nulls``: all-null arrays that are what ``pa.nulls`` makes and cost no memory.

About half of a replayed table of DataHub MCEs is union branches and optional records no event
of a group uses; these arrays are where that half lives.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from metaverse_kit.events.builtin import mce_definition
from metaverse_kit.history import _decoder
from metaverse_kit.history.arrow_types import mapping_for

MCE = mapping_for(mce_definition()).type
TYPES = [
    MCE,
    pa.struct([("a", pa.list_(pa.struct([("b", pa.string()), ("c", pa.float64())])))]),
    pa.map_(pa.string(), pa.string()),
    pa.list_(pa.map_(pa.string(), pa.int64())),
    pa.large_list(pa.large_string()),
    pa.large_binary(),
    pa.bool_(),
    pa.int8(),
    pa.int32(),
    pa.float32(),
    pa.timestamp("ms", tz="UTC"),
    pa.date32(),
    pa.decimal128(20, 4),
    pa.binary(16),
    pa.dictionary(pa.int32(), pa.string()),
    pa.null(),
]


@pytest.mark.parametrize("t", TYPES, ids=str)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000])
def test_compact_nulls_are_what_pa_nulls_makes(t: pa.DataType, n: int) -> None:
    a = _decoder.compact_nulls(n, t)
    a.validate(full=True)
    assert a.type == t and len(a) == n and a.null_count == n
    assert a.equals(pa.nulls(n, t))
    # Through any record: every child is null too, as it is under pa.nulls.
    if pa.types.is_struct(t):
        assert all(child.null_count == n for child in a.flatten())
    # And it survives the replay cache's format.
    sink = pa.BufferOutputStream()
    table = pa.table({"x": a})
    with ipc.new_file(sink, table.schema) as writer:
        writer.write(table)
    back = ipc.open_file(sink.getvalue()).read_all()
    assert back.column("x").combine_chunks().equals(a)


def test_compact_nulls_allocate_nothing_per_array() -> None:
    """The second array of DataHub's MCE type (hundreds of leaves) takes no new memory."""
    pool = _decoder.pool()
    _decoder.compact_nulls(8192, MCE)
    before = pool.bytes_allocated()
    kept = [_decoder.compact_nulls(8192, MCE) for _ in range(3)]
    assert pool.bytes_allocated() == before
    assert all(len(a) == 8192 for a in kept)


def test_compact_nulls_are_written_at_their_own_size() -> None:
    """The replay cache (Arrow IPC) writes each buffer as long as its array needs, no more."""
    table = pa.table({"x": _decoder.compact_nulls(8192, MCE)})
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write(table)
    schema_bytes = len(table.schema.serialize())
    assert sink.getvalue().size <= table.nbytes * 1.1 + 4 * schema_bytes
