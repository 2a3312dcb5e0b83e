"""Emit benchmark: one-event emits cost the same into a full window; batch emit vs bare encoding.

Each measurement runs in its own subprocess pinned to one CPU, in a fresh workspace whose hub
clock stands still, so that every event lands in one Capture time window:

- ``append``: 20,000 one-event ``ws.emit`` calls (MCEs with a status and an ownership aspect
  over 1,000 datasets, so 4 partitions of about 5,000 events each). Emits per second of the
  first and of the last 1,000; target: the last 1,000 no slower than 1.2x the first.
- ``rewrite`` (the baseline): the same first and last 1,000 emits with a hub that replaces
  the whole window file on every send, as the local hub did before ADR 0008 (kept below as
  :class:`RewritingHub`); the 18,000 in between go in one batch, since only the size of the
  file matters to its cost.
- ``batch`` (``benchmarks/emit_batch.py``, printed in the same run): one ``ws.emit`` of
  100,000 built-in MCEs against bare fastavro encoding of the same records, each in its own
  process on one CPU; target >= 0.5x.

Rates use wall-clock time for the one-event lines (an emit waits for its ``fsync``, which is no
CPU time) and CPU time for the batch line (on a machine shared with other work, wall-clock time
also counts their turns); both are printed.

Run: ``.venv/bin/python benchmarks/emit.py`` (about 2 minutes), ``--events N`` for another
window size, ``--quick`` for a smoke run of a few seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.replay import _cpu_seconds, _pin_one_cpu  # noqa: E402 - after the path

NOW = datetime(2026, 3, 2, 8, 0, 1, tzinfo=UTC)
DATASETS = 1000


def _mces(n: int) -> list[Any]:
    import metaverse_kit as mk

    a = mk.aspects
    return [
        mk.mce(
            mk.make_dataset_urn("hive", f"db.table_{i % DATASETS}"),
            [
                a.status(i % 7 == 0),
                a.ownership([f"user{i % 300}", (f"steward{i % 50}", "DATA_STEWARD")]),
            ],
        )
        for i in range(n)
    ]


# -- the hub before ADR 0008 (the baseline) -----------------------------------------------------


def _rewriting_hub(lake: Path, state: Path) -> Any:
    """The local hub as it was before ADR 0008: a send reads, copies and replaces the file.

    Its records are the same as today's hub's, encoded as it did (fastavro, one record at a
    time), and each send wrote a pending file, a journal and the state, each fsynced.
    """
    import io

    import fastavro

    from metaverse_kit._files import atomic_write, locked
    from metaverse_kit.backends.local.hub import LocalEventHub
    from metaverse_kit.backends.protocols import OutgoingEvent, Receipt
    from metaverse_kit.capture import (
        CAPTURE_SCHEMA,
        capture_path,
        check_appendable,
        enqueued_ms,
        format_enqueued_time,
        new_header,
        zigzag,
    )

    def append(existing: bytes | None, records: list[dict[str, Any]]) -> bytes:
        if existing:
            sync, _ = check_appendable(existing, "the file")
            out = bytearray(existing)
        else:
            header, sync = new_header()
            out = bytearray(header)
        block = io.BytesIO()
        for record in records:
            fastavro.schemaless_writer(block, CAPTURE_SCHEMA, record)
        data = block.getvalue()
        out += zigzag(len(records)) + zigzag(len(data)) + data + sync
        return bytes(out)

    class RewritingHub(LocalEventHub):
        def send(
            self, events: Sequence[OutgoingEvent], *, schema_ids: Sequence[str]
        ) -> list[Receipt]:
            with locked(self.lock_path):
                parts = self.read_state()
                files: dict[str, list[dict[str, Any]]] = {}
                receipts = []
                now = self.clock()
                ms = enqueued_ms(now)
                seconds = int(self.window.total_seconds())
                window = datetime.fromtimestamp((ms // 1000) // seconds * seconds, UTC)
                for event, schema_id in zip(events, schema_ids, strict=True):
                    partition = self.partition_for(event.partition_key)
                    part = parts.setdefault(
                        partition, {"next_sequence": 0, "next_offset": 0, "last_enqueued_ms": 0}
                    )
                    sequence, offset = part["next_sequence"], part["next_offset"]
                    part.update(next_sequence=sequence + 1, next_offset=offset + len(event.body))
                    relative = capture_path(self.namespace, self.name, partition, window)
                    properties = dict(event.properties)
                    properties.setdefault("content-type", event.content_type)
                    properties.setdefault("message-id", event.message_id)
                    files.setdefault(relative, []).append(
                        {
                            "SequenceNumber": sequence,
                            "Offset": str(offset),
                            "EnqueuedTimeUtc": format_enqueued_time(now),
                            "SystemProperties": {
                                "x-opt-enqueued-time": ms,
                                "content-type": event.content_type,
                                "message-id": event.message_id,
                                "x-opt-partition-key": event.partition_key,
                            },
                            "Properties": properties,
                            "Body": event.body,
                        }
                    )
                    receipts.append(
                        Receipt(partition, sequence, str(offset), now, schema_id, "", "", "")
                    )
                renames = []
                for relative, records in files.items():
                    final = self.lake_root / relative
                    existing = final.read_bytes() if final.exists() else None
                    pending = final.with_name(f".{final.name}.{os.getpid()}.pending")
                    atomic_write(pending, append(existing, records))
                    renames.append((pending, final))
                journal = {"renames": [[str(p), str(f)] for p, f in renames], "state": parts}
                atomic_write(self.journal_path, json.dumps(journal).encode())
                for pending, final in renames:
                    os.replace(pending, final)
                atomic_write(self.state_path, json.dumps(parts).encode())
                self.journal_path.unlink()
            return receipts

    return RewritingHub(lake, state, namespace="metaverse-local", eventhub="metaverse")


# -- the measurements ---------------------------------------------------------------------------


def _workspace(root: Path, *, rewriting: bool) -> Any:
    from metaverse_kit.backends.local.factory import create
    from metaverse_kit.workspace import Workspace

    parts = create(root, clock=lambda: NOW)
    if rewriting:
        parts.hub = _rewriting_hub(root / "lake", root / "hub")
        parts.hub.clock = lambda: NOW
    return Workspace(parts)


def _one_by_one(ws: Any, records: list[Any]) -> tuple[float, float]:
    """Wall and CPU seconds of emitting ``records`` one ``ws.emit`` call each."""
    cpu, wall = _cpu_seconds(), time.perf_counter()
    for record in records:
        ws.emit(record)
    return time.perf_counter() - wall, _cpu_seconds() - cpu


def measure_single(root: str, events: int, edge: int, *, rewriting: bool) -> dict[str, Any]:
    """First and last ``edge`` of ``events`` one-event emits into one window."""
    records = _mces(events)
    with _workspace(Path(root), rewriting=rewriting) as ws:
        ws.emit(records[0])  # the first emit registers nothing new but warms every cache
        first = _one_by_one(ws, records[1 : edge + 1])
        middle = records[edge + 1 : events - edge]
        if rewriting:
            ws.emit(middle)  # one rewrite: the file's size is what matters
        else:
            _one_by_one(ws, middle)
        last = _one_by_one(ws, records[events - edge :])
        size = sum(f.stat().st_size for f in (Path(root) / "lake").rglob("*.avro"))
    return {"first": first, "last": last, "edge": edge, "events": events, "lake_bytes": size}


MEASUREMENTS: dict[str, Callable[..., dict[str, Any]]] = {
    "append": lambda root, n, edge: measure_single(root, n, edge, rewriting=False),
    "rewrite": lambda root, n, edge: measure_single(root, n, edge, rewriting=True),
}


def _run(kind: str, root: Path, events: int, edge: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", kind, str(root), str(events), str(edge)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Measure each line in its own process and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="one-event emits per window")
    parser.add_argument("--batch", type=int, default=100_000, help="events in the batch emit")
    parser.add_argument("--repeat", type=int, default=2, help="batch measurements: best of R")
    parser.add_argument("--quick", action="store_true", help="a smoke run in a few seconds")
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        _pin_one_cpu()
        kind, root, events, edge = args.measure
        print(json.dumps(MEASUREMENTS[kind](root, int(events), int(edge))))
        return 0
    events, batch = (300, 300) if args.quick else (args.events, args.batch)
    edge = max(1, min(1_000, events // 10))
    print(
        f"one-event emits: {events:,} into one window, first and last {edge:,} timed; batch: "
        f"{batch:,} MCEs; each measurement in its own process on one CPU"
    )
    with tempfile.TemporaryDirectory(prefix="mk-emit-bench-") as tmp:
        single = {k: _run(k, Path(tmp) / k, events, edge) for k in ("append", "rewrite")}
    print(
        f"{'what':<10}{'first/s':>10}{'last/s':>10}{'last/first time':>17}{'cpu first/s':>13}"
        f"{'cpu last/s':>12}{'lake MiB':>10}"
    )
    for kind, r in single.items():
        (fw, fc), (lw, lc) = r["first"], r["last"]
        print(
            f"{kind:<10}{edge / fw:>10,.0f}{edge / lw:>10,.0f}{lw / fw:>17.2f}{edge / fc:>13,.0f}"
            f"{edge / lc:>12,.0f}{r['lake_bytes'] / 2**20:>10.1f}"
        )
    a, b = single["append"], single["rewrite"]
    print(
        f"append: the last {edge:,} took {a['last'][0] / a['first'][0]:.2f}x the time of the first "
        f"(target <= 1.2x); the last {edge:,} are {b['last'][0] / a['last'][0]:.1f}x faster than "
        f"with the whole-file rewrite (baseline)"
    )
    # NOTE: the batch lines live in emit_batch.py (which also runs alone), printed in this run.
    from benchmarks.emit_batch import measure_batch

    for line in measure_batch(batch, repeat=1 if args.quick else args.repeat):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
