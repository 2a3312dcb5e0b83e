"""The hashes Dask's plan compares message ids by: equal ids, equal hashes, in any array."""

from __future__ import annotations

import random
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit.distributed._tasks import id_hashes


def _ids(n: int, *, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    kinds = [
        lambda: uuid.UUID(int=rng.getrandbits(128)).hex,
        lambda: str(uuid.UUID(int=rng.getrandbits(128))),
        lambda: "m" + str(rng.randrange(10**9)),
        lambda: "",
        lambda: "é" * rng.randrange(1, 20),
        lambda: "x" * rng.randrange(0, 80),
    ]
    return [rng.choice(kinds)() for _ in range(n)]


def test_an_ids_hash_does_not_depend_on_the_array_it_is_in() -> None:
    """Each plan task hashes its own files' ids: the same id must hash the same in each."""
    values = _ids(3000)
    whole = id_hashes(pa.array(values, pa.string()))
    alone = np.array([id_hashes(pa.array([v], pa.string()))[0] for v in values[:300]])
    assert (whole[:300] == alone).all()
    sliced = pa.array(["pad", *values], pa.string()).slice(1)
    assert (id_hashes(sliced) == whole).all()
    assert (id_hashes(pa.array(values, pa.large_string())) == whole).all()
    reversed_ = id_hashes(pa.array(values[::-1], pa.string()))
    assert (reversed_[::-1] == whole).all()


def test_equal_ids_share_a_hash_and_distinct_ones_almost_never_do() -> None:
    values = _ids(20_000)
    hashes = id_hashes(pa.array(values, pa.string()))
    by_id: dict[str, set[int]] = {}
    for v, h in zip(values, hashes.tolist(), strict=True):
        by_id.setdefault(v, set()).add(h)
    assert all(len(h) == 1 for h in by_id.values())
    assert len({next(iter(h)) for h in by_id.values()}) == len(by_id)
    many = pa.array([uuid.UUID(int=i * 7919 + 1).hex for i in range(200_000)], pa.string())
    assert len(np.unique(id_hashes(many))) == len(pc.unique(many))


def test_no_ids() -> None:
    assert id_hashes(pa.array([], pa.string())).dtype == np.uint64
    assert len(id_hashes(pa.array([], pa.string()))) == 0
    assert len(set(id_hashes(pa.array(["", "a", "aa", "a" * 8, "a" * 9])).tolist())) == 5
