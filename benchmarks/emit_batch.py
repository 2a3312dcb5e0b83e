"""Batch emit benchmark: ``ws.emit`` of many built-in MCEs against bare fastavro encoding.

Builds N MetadataChangeEvents with the aspect builders (1 to 4 aspects each over about 5,000
datasets, the mix of ``benchmarks/replay.py``), then measures, each in its own process pinned to
one CPU and after its imports and the events are built:

- ``baseline``: bare fastavro encoding of the same events: ``fastavro.schemaless_writer`` of each
  event into one buffer with the parsed built-in schema (no validation, nothing written);
- ``emit``: ``ws.emit(events)`` on a new local workspace: every event checked against the Avro
  schema and DataHub's URN and text rules, encoded, written to the outbox, sent to the local hub
  (which writes the Capture files), removed from the outbox. The hub is wrapped to time its
  ``send``, and the checks and encoding are timed alone on the same events, so the line says
  what share each part takes;
- ``checks+encode``: :func:`metaverse_kit.events.codec.encode_bodies` alone (what ``emit`` does
  before the outbox and the hub).

Rates are events per second of CPU time (user + system); wall-clock time, which also counts
fsync waits and other processes' turns on a shared machine, is printed too. The target (issue
10): ``emit`` at >= 0.5x the baseline.

Run: ``.venv/bin/python benchmarks/emit_batch.py`` (100,000 events, best of 2), ``--events N``,
``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

TARGET = 0.5


def make_events(count: int, *, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` built-in MCEs for datasets, made with the builders (deterministic)."""
    from replay import DATASETS, _aspects

    import metaverse_kit as mk

    rng = random.Random(seed)
    return [
        mk.mce(mk.make_dataset_urn("hive", f"db.t{rng.randrange(DATASETS)}"), _aspects(rng, i))
        for i in range(count)
    ]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _TimedHub:
    """The workspace's hub, with the CPU and wall time of its sends added up."""

    def __init__(self, hub: Any) -> None:
        self._hub = hub
        self.namespace = hub.namespace
        self.name = hub.name
        self.cpu = 0.0
        self.wall = 0.0

    @property
    def clock(self) -> Any:
        return self._hub.clock

    def partition_ids(self) -> list[str]:
        return list(self._hub.partition_ids())

    def send(self, events: Any, *, schema_ids: Any) -> Any:
        cpu, wall = _cpu(), time.perf_counter()
        try:
            return self._hub.send(events, schema_ids=schema_ids)
        finally:
            self.cpu += _cpu() - cpu
            self.wall += time.perf_counter() - wall

    def close(self) -> None:
        self._hub.close()


def _measure(kind: str, count: int) -> dict[str, Any]:
    import io

    import fastavro

    import metaverse_kit as mk
    from metaverse_kit.events.codec import encode_bodies, parsed_schema

    events = make_events(count)
    definition = mk.mce_definition()
    if kind == "baseline":
        cpu, wall = _cpu(), time.perf_counter()
        parsed = parsed_schema(definition)
        buf = io.BytesIO()
        for event in events:
            fastavro.schemaless_writer(buf, parsed, event)
        return {"cpu": _cpu() - cpu, "wall": time.perf_counter() - wall, "bytes": buf.tell()}
    if kind == "encode":
        cpu, wall = _cpu(), time.perf_counter()
        bodies = encode_bodies(events, definition)
        return {"cpu": _cpu() - cpu, "wall": time.perf_counter() - wall, "n": len(bodies)}
    from metaverse_kit.backends.local.factory import create
    from metaverse_kit.workspace import Workspace

    with tempfile.TemporaryDirectory(prefix="emit-bench-") as folder:
        parts = create(Path(folder) / "ws")
        hub = _TimedHub(parts.hub)
        parts.hub = hub
        with Workspace(parts) as ws:
            ws.schema_properties()  # registered at creation; looked up once, as any first emit
            cpu, wall = _cpu(), time.perf_counter()
            receipts = ws.emit(events)
            out = {"cpu": _cpu() - cpu, "wall": time.perf_counter() - wall}
            assert len(receipts) == count and not ws.outbox.list()
    return {**out, "hub_cpu": hub.cpu, "hub_wall": hub.wall}


def _run(kind: str, count: int) -> dict[str, Any]:
    code = (
        "import os, sys, json\n"
        f"sys.path.insert(0, {str(REPO / 'benchmarks')!r})\n"
        "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}) "
        "if hasattr(os, 'sched_setaffinity') else None\n"
        "import emit_batch\n"
        f"print(json.dumps(emit_batch._measure({kind!r}, {count})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_batch(count: int, *, repeat: int = 2) -> list[str]:
    """Run the three measurements (interleaved, best of ``repeat``); the lines to print."""
    # NOTE: interleaved, so that a busy spell on a shared machine does not fall on one kind.
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "encode": [], "emit": []}
    for _ in range(repeat):
        for kind, found in runs.items():
            found.append(_run(kind, count))
    base, encode, emit = (min(runs[k], key=lambda r: r["cpu"]) for k in runs)
    rate = count / base["cpu"]
    lines = [
        f"batch emit of {count:,} built-in MCEs, one CPU, events per CPU second "
        f"(best of {repeat}; wall seconds in brackets)",
        f"  baseline  bare fastavro encoding    {rate:>10,.0f} ev/s  1.00x  [{base['wall']:.2f} s]",
    ]
    for name, r in (("checks+encode", encode), ("ws.emit", emit)):
        ratio = base["cpu"] / r["cpu"]
        lines.append(
            f"  {name:<32}  {count / r['cpu']:>10,.0f} ev/s  {ratio:.2f}x  [{r['wall']:.2f} s]"
        )
    share_hub = emit["hub_cpu"] / emit["cpu"]
    share_encode = encode["cpu"] / emit["cpu"]
    lines.append(
        f"  ws.emit CPU shares: checks+encode {share_encode:.0%}, local hub send "
        f"{share_hub:.0%} ({emit['hub_wall']:.2f} s wall), outbox and the rest "
        f"{1 - share_hub - share_encode:.0%}"
    )
    without_hub = base["cpu"] / (emit["cpu"] - emit["hub_cpu"])
    verdict = "meets" if base["cpu"] / emit["cpu"] >= TARGET else "below"
    lines.append(
        f"  target ws.emit >= {TARGET}x the baseline: {verdict} "
        f"(without the hub's share: {without_hub:.2f}x)"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the measurements; ``--events N``, ``--repeat R``, ``--quick``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2,000 events, once")
    args = parser.parse_args(argv)
    count, repeat = (2_000, 1) if args.quick else (args.events, args.repeat)
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    for line in measure_batch(count, repeat=repeat):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
