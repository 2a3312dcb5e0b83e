"""Emits killed at random moments (SIGKILL, real processes) lose no receipted event.

Children are forked from a forkserver that has imported the package once, so each round costs
milliseconds; each child opens the workspace (which rolls back what the last kill left) and
emits batches of random sizes, logging every receipt it gets, until it is killed.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import resource
import signal
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import metaverse_kit as mk
from metaverse_kit._files import find_leftovers
from metaverse_kit.backends.local.doctor import LocalDoctor
from metaverse_kit.capture import complete_length

ROUNDS = 30


@pytest.fixture(scope="module")
def forkserver() -> Iterator[Any]:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["metaverse_kit", "tests.backends.local.test_crash"])
    yield ctx


def _batch(rng: random.Random) -> list[dict[str, Any]]:
    return [
        mk.mce(
            mk.make_dataset_urn("hive", f"db.t{rng.randrange(50)}"),
            [
                mk.aspects.status(rng.random() < 0.5),
                mk.aspects.global_tags(["PII"] * rng.randint(0, 1)),
            ],
        )
        for _ in range(rng.choice((1, 1, 2, 8, 40, 150)))
    ]


def _emit_until_killed(path: str, log: str, seed: int, ready: Any) -> None:
    rng = random.Random(seed)
    with mk.connect(path=path) as ws, open(log, "a") as out:
        while True:
            receipts = ws.emit(_batch(rng))
            out.write(
                "".join(f"{r.message_id} {r.partition} {r.sequence_number}\n" for r in receipts)
            )
            out.flush()
            # NOTE: ready after the first emit, whose one-time costs (compiling the schema's
            # checks) can outlast the random wait on a loaded machine: every round then emits.
            ready.set()


def _receipts(log: Path) -> set[tuple[str, str, int]]:
    out = set()
    for line in log.read_text().splitlines(keepends=True):
        if line.endswith("\n"):  # a line the kill cut short was never complete
            mid, partition, sequence = line.split()
            out.add((mid, partition, int(sequence)))
    return out


def _contiguous(table: Any) -> dict[str, int]:
    """Per partition, check the sequence numbers are 0..n-1, each once; return n."""
    counts = {}
    pairs = zip(table["partition"].to_pylist(), table["sequence_number"].to_pylist(), strict=True)
    by_partition: dict[str, list[int]] = {}
    for partition, sequence in pairs:
        by_partition.setdefault(partition, []).append(sequence)
    for partition, numbers in by_partition.items():
        assert sorted(numbers) == list(range(len(numbers))), f"partition {partition}"
        counts[partition] = len(numbers)
    return counts


def test_sigkill_during_emits_loses_no_receipted_event(tmp_path: Path, forkserver: Any) -> None:
    path = tmp_path / "ws"
    mk.connect(path=path).close()
    log = tmp_path / "receipts.log"
    rng = random.Random(20260302)
    mid_send = 0
    for round_ in range(ROUNDS):
        children = []
        for k in range(1 if rng.random() < 0.7 else 2):
            ready = forkserver.Event()
            child = forkserver.Process(
                target=_emit_until_killed, args=(str(path), str(log), round_ * 10 + k, ready)
            )
            child.start()
            assert ready.wait(30), "the emitting child did not start"
            children.append(child)
        time.sleep(rng.uniform(0.0, 0.25))
        if round_ % 6 == 3:
            # A reader while a writer appends: never a torn block, numbers always contiguous.
            with mk.connect(path=path) as reader:
                _contiguous(reader.replay(schema=False, dedup=False, cache=False))
        for child in children:
            child.kill()
            child.join()
            assert child.exitcode == -signal.SIGKILL
        mid_send += LocalDoctor(path).hub.pending() is not None
    assert mid_send >= 1, "no kill landed inside a send: the test proved nothing"

    receipts = _receipts(log)
    assert len(receipts) > ROUNDS
    with mk.connect(path=path) as ws:
        assert LocalDoctor(path).hub.pending() is None  # opening rolled the last kill back
        assert not [f for f in find_leftovers(path) if not f.alive]
        with warnings.catch_warnings():
            # Retried events older than writes already made: history keeps the newer ones.
            warnings.simplefilter("ignore", mk.LateEventWarning)
            # A killed send's batch may be in the lake already: the replay below checks that.
            warnings.simplefilter("ignore", mk.InterruptedSendWarning)
            ws.outbox.retry()
        assert len(ws.outbox) == 0
        table = ws.replay(schema=False, dedup=False, cache=False)
        landed = set(
            zip(
                table["message_id"].to_pylist(),
                table["partition"].to_pylist(),
                table["sequence_number"].to_pylist(),
                strict=True,
            )
        )
        missing = receipts - landed
        assert not missing, f"{len(missing)} receipted events are not in the lake"
        counts = _contiguous(table)
        state = json.loads((path / "hub" / "partitions.json").read_text())
        assert {p: part["next_sequence"] for p, part in state.items()} == counts
        # Every event that was ever emitted is in the lake once after deduplication.
        assert ws.replay(schema=False, cache=False).num_rows == len(
            set(table["message_id"].to_pylist())
        )
    for file in (path / "lake").rglob("*.avro"):
        data = file.read_bytes()
        assert complete_length(data) == len(data), f"{file} ends in a torn block"
    assert LocalDoctor(path).check() == []


def _fill_then_emit_past_the_size_limit(path: str, limit: int) -> str:
    clock = lambda: datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # noqa: E731 - one window for all
    # NOTE: RLIMIT_FSIZE makes the kernel refuse a write past ``limit`` bytes (EFBIG): a real
    # failure in the middle of an append, as a full disk gives.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    urn = mk.make_dataset_urn("hive", "db.big")
    with mk.connect(path=path, clock=clock) as ws:
        try:
            ws.emit([mk.mce(urn, [mk.aspects.status(False)]) for _ in range(60)])
        except OSError as exc:
            return f"{type(exc).__name__}: {exc.strerror}"
    return "sent"


def test_a_write_that_fails_half_way_leaves_no_trace(tmp_path: Path, forkserver: Any) -> None:
    path = tmp_path / "ws"
    clock = lambda: datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # noqa: E731
    urn = mk.make_dataset_urn("hive", "db.big")
    with mk.connect(path=path, clock=clock) as ws:
        first = ws.emit([mk.mce(urn, [mk.aspects.status(False)]) for _ in range(400)])
    lake_file = Path(first[0].location)
    before = lake_file.read_bytes()
    state = (path / "hub" / "partitions.json").read_bytes()
    with forkserver.Pool(1) as pool:
        outcome = pool.apply(_fill_then_emit_past_the_size_limit, (str(path), len(before) + 3000))
    assert outcome == "OSError: File too large"
    assert lake_file.read_bytes() == before  # the half-written blocks were taken back
    assert (path / "hub" / "partitions.json").read_bytes() == state
    assert LocalDoctor(path).hub.pending() is None
    with mk.connect(path=path, clock=clock) as ws:
        assert len(ws.outbox) == 60
        receipts = ws.outbox.retry()
        assert [r.sequence_number for r in receipts] == list(range(400, 460))
        assert ws.replay(cache=False).num_rows == 460
