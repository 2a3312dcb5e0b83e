"""``_decoder.interleave`` puts writer-version groups back in event order exactly as take does."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from metaverse_kit.history import _decoder

ASPECT = pa.struct(
    [
        ("branch", pa.string()),
        ("Tags", pa.struct([("tags", pa.list_(pa.struct([("tag", pa.string())])))])),
        ("Owners", pa.struct([("owners", pa.list_(pa.string())), ("n", pa.int64())])),
    ]
)
ROW = pa.struct(
    [
        ("urn", pa.string()),
        ("aspects", pa.list_(ASPECT)),
        ("props", pa.map_(pa.string(), pa.string())),
        ("flag", pa.bool_()),
        ("missing", pa.struct([("x", pa.list_(pa.int32()))])),
    ]
)


def _row(i: int) -> dict | None:
    if i % 7 == 3:
        return None
    aspects = None if i % 5 == 1 else []
    if aspects is not None:
        for k in range(i % 4):
            if k % 2:
                aspects.append({"branch": "Tags", "Tags": {"tags": [{"tag": f"t{i}.{k}"}, None]}})
            else:
                owners = None if i % 3 == 0 else [f"o{i}", None]
                aspects.append({"branch": "Owners", "Owners": {"owners": owners, "n": i}})
    return {
        "urn": None if i % 11 == 0 else f"urn:{i}",
        "aspects": aspects,
        "props": {"k": str(i)} if i % 2 else None,
        "flag": i % 3 == 1,
        "missing": None,
    }


def _piece(rows: range, *, sliced: bool) -> pa.Array:
    values = [_row(i) for i in rows]
    if not sliced:
        return pa.array(values, ROW)
    # A window of a longer array: offsets of its lists do not start at zero.
    padded = [_row(1000 + i) for i in range(5)] + values + [_row(2000)]
    return pa.array(padded, ROW).slice(5, len(values))


@pytest.mark.parametrize("sliced", [False, True])
@pytest.mark.parametrize("nulls", [False, True])
def test_interleave_equals_concatenate_then_take(sliced: bool, nulls: bool) -> None:
    pieces = [
        _piece(range(0, 40), sliced=sliced),
        _piece(range(40, 47), sliced=sliced),
        _piece(range(47, 60), sliced=False),
    ]
    rng = np.random.default_rng(3)
    index = rng.permutation(60).astype(np.int64)
    if nulls:
        index[rng.choice(60, 9, replace=False)] = -1
    got = _decoder.interleave(pieces, index)
    got.validate(full=True)
    expected = pc.take(pa.concat_arrays(pieces), pa.array(index, mask=index < 0))
    assert got.type == ROW
    assert got.equals(expected)
    assert got.to_pylist() == expected.to_pylist()


def test_an_all_null_piece_and_a_piece_of_one_row() -> None:
    pieces = [pa.nulls(4, ROW), _piece(range(1), sliced=True), _piece(range(4, 9), sliced=False)]
    index = np.array([9, 4, 0, -1, 5, 1, 2, 3, 6, 7, 8], dtype=np.int64)
    got = _decoder.interleave(pieces, index)
    got.validate(full=True)
    assert (
        got.to_pylist()
        == pc.take(pa.concat_arrays(pieces), pa.array(index, mask=index < 0)).to_pylist()
    )
