"""Replay benchmark: the Azure-documentation baseline against our cold, warm and streaming replay.

Generates a realistic Capture tree in a temporary folder (4 partitions, files rolled every
5 minutes like Capture's default window and written a block per batch as Capture does, MCEs
with 1 to 4 aspects over about 5,000 datasets, ``deflate`` codec on partitions 0-1 and ``null``
on 2-3), then measures each way of reading it in its own subprocess pinned to one CPU:

- ``baseline``: what a user writes from Azure's documentation: fastavro reads the container,
  ``azure.schemaregistry.encoder.avroencoder.AvroEncoder.decode`` decodes each body (its
  client backed by our local registry), the dicts go into a pandas DataFrame, then to Arrow;
- ``cold``: ``replay_capture`` with an empty cache (it fills it as it goes);
- ``cold-nocache``: ``replay_capture(cache=False)``;
- ``warm``: ``replay_capture`` again, every file in the cache;
- ``stream``: ``replay_batches(cache=False)``, batches dropped as they come, on the history
  and on one 4 times longer, to show that its memory does not grow with the history (but for
  deduplication's set of message ids, about 110 bytes per event);
- ``evolved``: ``replay_capture(cache=False)`` of the same history where the newest version
  of the MCE schema (registered after the built-in one) adds two dataset aspects and an owner
  type, as the next version of our schema will, and 10% of the events, spread through every
  file, were still written with the previous version (the built-in). The newest version is the
  reader. Target: 30x the baseline, like one version;
- ``evolved-fields``: the same, but the previous version also lacks a field
  (TagAssociation's ``context``) and an aspect in the middle of the union, so its bodies are
  decoded with their own schema and resolved to the reader column by column, then interleaved
  with the others in event order;
- ``older``: ``replay_capture(cache=False)`` of the same history written as older Capture
  files are, with no ``x-opt-enqueued-time`` (the time is the ``EnqueuedTimeUtc`` text only).
  Target: at least 0.8 times the rate of ``cold-nocache`` on current files.
- ``quiet-baseline`` / ``quiet``: the baseline and ``replay_capture(cache=False)`` on a quiet
  hub's lake, 5,000 Capture files (``--quiet-files``) of 1-2 events, a fifth of them empty, as
  Capture writes them when little happens (a file per partition and window): what a file costs.
  No target; it shows what per-file costs do. ``quiet-cold`` / ``quiet-warm``: the same lake
  filling the cache, then replayed from it.

Prints events per second of CPU time (user + system, all threads: on a shared machine the
wall-clock time also counts other processes' turns; it is printed too), the ratio to the
baseline, and peak memory above the interpreter's own (``ru_maxrss`` of the subprocess minus
the same process after its imports), next to the size of the Arrow table (``Table.nbytes``).

Run: ``make bench`` or ``.venv/bin/python benchmarks/replay.py``;
``--events N`` sets the history length, ``--quiet-files N`` the quiet lake's files, ``--quick``
makes a smoke run of a few seconds.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

NAMESPACE, EVENTHUB, GROUP = "ehns-metaverse", "eh-metaverse", "metadata"
PARTITIONS = 4
WINDOW = timedelta(minutes=5)
BATCH = 250  # events per Capture block (Capture writes one block per batch it receives)
DATASETS = 5000


# -- the history ---------------------------------------------------------------------------


def _aspects(rng: random.Random, i: int) -> list[Any]:
    import metaverse_kit as mk

    a = mk.aspects
    t = 1_767_225_600_000 + i * 1000
    makers = [
        lambda: a.ownership(
            [f"user{rng.randrange(300)}", (f"steward{i % 50}", "DATA_STEWARD")], time_ms=t
        ),
        lambda: a.global_tags(rng.sample(["PII", "Gold", "Silver", "Finance", "HR", "Raw"], 2)),
        lambda: a.glossary_terms([f"Term{rng.randrange(80)}"], time_ms=t),
        lambda: a.status(rng.random() < 0.05),
        lambda: a.editable_dataset_properties(
            f"Table {i} holds orders of region {i % 17}", time_ms=t
        ),
        lambda: a.dataset_properties(
            name=f"t{i}", description="loaded nightly", custom_properties={"owner": "etl"}
        ),
        lambda: a.institutional_memory([(f"https://wiki.example.com/t{i}", "runbook")], time_ms=t),
        lambda: a.dataset_deprecation(False, note=""),
    ]
    return [m() for m in rng.sample(makers, rng.randint(1, 4))]


def grown_version(definition: str) -> str:
    """The next version of the built-in MCE schema: two dataset aspects and an owner type more
    (appended, as a schema grows), Backward compatible with the built-in one."""
    schema = json.loads(definition)

    def walk(t: Any) -> None:
        if isinstance(t, dict):
            if t.get("name") == "DatasetSnapshot":
                aspects = next(f for f in t["fields"] if f["name"] == "aspects")["type"]
                aspects["items"] += [
                    {
                        "type": "record",
                        "name": "Certification",
                        "namespace": "com.example",
                        "fields": [
                            {"name": "levels", "type": {"type": "array", "items": "string"}}
                        ],
                    },
                    {
                        "type": "record",
                        "name": "Quality",
                        "namespace": "com.example",
                        "fields": [{"name": "score", "type": "double"}],
                    },
                ]
            if t.get("name") == "OwnershipType":
                t["symbols"] = [*t["symbols"], "AUDITOR"]
            for v in t.values():
                if isinstance(v, (dict, list)):
                    walk(v)
        elif isinstance(t, list):
            for v in t:
                walk(v)

    walk(schema)
    return json.dumps(schema, separators=(",", ":"))


def previous_version(definition: str) -> str:
    """The MCE schema a lagging producer still writes with: the built-in one without
    TagAssociation's ``context`` field and without the DatasetDeprecation aspect."""
    schema = json.loads(definition)

    def walk(t: Any) -> None:
        if isinstance(t, list):
            for b in t:
                walk(b)
            t[:] = [
                b for b in t if not (isinstance(b, dict) and b.get("name") == "DatasetDeprecation")
            ]
        elif isinstance(t, dict):
            if t.get("name") == "TagAssociation":
                t["fields"] = [f for f in t["fields"] if f["name"] != "context"]
            for v in t.values():
                if isinstance(v, (dict, list)):
                    walk(v)

    walk(schema)
    return json.dumps(schema, separators=(",", ":"))


def _as_previous(record: Any) -> Any:
    """A record of the built-in schema as a producer on the previous version writes it."""
    snapshot = record["proposedSnapshot"][1]
    aspects = []
    for name, value in snapshot["aspects"]:
        if name.endswith("DatasetDeprecation"):
            continue  # a producer on the previous version has no such aspect
        if name.endswith("GlobalTags"):
            value = {
                "tags": [{k: v for k, v in t.items() if k != "context"} for t in value["tags"]]
            }
        aspects.append((name, value))
    return {
        **record,
        "proposedSnapshot": (record["proposedSnapshot"][0], {**snapshot, "aspects": aspects}),
    }


@functools.cache
def _event_pool(n: int, seed: int) -> list[tuple[str, bytes, bytes]]:
    """``n`` distinct encoded events: (urn, body, the body a previous-version producer writes).

    PERF: encoding validates every record, which is slow; the histories reuse one pool.
    """
    import metaverse_kit as mk
    from metaverse_kit.events.builtin import mce_definition
    from metaverse_kit.events.codec import encode_body

    rng = random.Random(seed)
    definition = mce_definition()
    older = previous_version(definition)
    pool: list[tuple[str, bytes, bytes]] = []
    for i in range(n):
        urn = mk.make_dataset_urn("hive", f"db.table_{rng.randrange(DATASETS)}")
        record = mk.mce(urn, _aspects(rng, i))
        old = encode_body(_as_previous(record), older)
        pool.append((urn, encode_body(record, definition), old))
    return pool


def make_history(
    root: Path,
    events: int,
    *,
    seed: int = 7,
    previous: float = 0.0,
    fields: bool = False,
    enqueued_ms: bool = True,
) -> dict[str, Any]:
    """Write a Capture tree of ``events`` MCEs under ``root/lake`` and a registry under ``root``.

    ``previous`` is the share of events written with the previous version: the built-in one,
    with :func:`grown_version` registered after it as the newest; or, with ``fields``,
    :func:`previous_version`, with the built-in one as the newest. ``enqueued_ms=False`` writes
    older Capture files, whose system properties carry no ``x-opt-enqueued-time``.
    Returns what the measurements need: the lake folder, the registry folder, the file count.
    """
    from metaverse_kit.backends.local.hub import partition_for_key
    from metaverse_kit.backends.local.registry import LocalSchemaRegistry
    from metaverse_kit.capture import append_events, capture_path, format_enqueued_time
    from metaverse_kit.events.builtin import mce_definition
    from metaverse_kit.events.codec import content_type_for

    rng = random.Random(seed + 1)
    registry = LocalSchemaRegistry(root / "registry")
    definition = mce_definition()
    registry.create_group(GROUP)
    older_type = ""
    if previous and fields:
        older_type = content_type_for(
            registry.register_schema(GROUP, previous_version(definition)).id
        )
    content_type = content_type_for(registry.register_schema(GROUP, definition).id)
    if previous and not fields:
        # The built-in one is the previous version; the same records encode the same in both.
        older_type = content_type
        content_type = content_type_for(
            registry.register_schema(GROUP, grown_version(definition)).id
        )
    pool = _event_pool(min(events, 4000), seed)
    per_partition = max(1, events // PARTITIONS)
    per_file = 2500
    start = datetime(2026, 1, 1, tzinfo=UTC)
    lake = root / "lake"
    files = 0
    count = 0
    for p in range(PARTITIONS):
        codec = "deflate" if p < 2 else "null"
        n = per_partition if p < PARTITIONS - 1 else events - per_partition * (PARTITIONS - 1)
        in_partition = [e for e in pool if partition_for_key(e[0], PARTITIONS) == p] or pool
        offset = 0
        for first in range(0, n, per_file):
            window = start + WINDOW * (first // per_file)
            path = lake / capture_path(NAMESPACE, EVENTHUB, str(p), window)
            path.parent.mkdir(parents=True, exist_ok=True)
            data: bytes | None = None
            last = min(n, first + per_file)
            for block in range(first, last, BATCH):
                records = []
                for seq in range(block, min(last, block + BATCH)):
                    urn, body, old_body = in_partition[seq % len(in_partition)]
                    kind = content_type
                    if previous and rng.random() < previous:
                        body, kind = (old_body if fields else body), older_type
                    when = window + timedelta(milliseconds=(seq - first) * 100)
                    ms = int(when.timestamp() * 1000)
                    mid = f"{p:x}{seq:031x}"
                    system: dict[str, Any] = {
                        "x-opt-enqueued-time": ms,
                        "x-opt-partition-key": urn,
                        "content-type": kind,
                        "message-id": mid,
                    }
                    if not enqueued_ms:
                        del system["x-opt-enqueued-time"]
                    records.append(
                        {
                            "SequenceNumber": seq,
                            "Offset": str(offset),
                            "EnqueuedTimeUtc": format_enqueued_time(when),
                            "SystemProperties": system,
                            "Properties": {"content-type": kind, "message-id": mid},
                            "Body": body,
                        }
                    )
                    offset += len(body) + 96
                data = append_events(data, records, codec=codec, where=str(path))
                count += len(records)
            assert data is not None
            path.write_bytes(data)
            files += 1
    return {"lake": str(lake), "registry": str(root / "registry"), "files": files, "events": count}


def make_quiet_history(root: Path, files: int, *, seed: int = 7) -> dict[str, Any]:
    """A quiet hub's lake under ``root/lake``: ``files`` Capture files of 1-2 events, a fifth
    of them empty (Capture writes a file per partition and window even when nothing came)."""
    from metaverse_kit.backends.local.registry import LocalSchemaRegistry
    from metaverse_kit.capture import append_events, capture_path, format_enqueued_time
    from metaverse_kit.events.builtin import mce_definition
    from metaverse_kit.events.codec import content_type_for

    registry = LocalSchemaRegistry(root / "registry")
    registry.create_group(GROUP)
    content_type = content_type_for(registry.register_schema(GROUP, mce_definition()).id)
    pool = _event_pool(200, seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    lake = root / "lake"
    count = 0
    for i in range(files):
        p, when = i % PARTITIONS, start + WINDOW * (i // PARTITIONS)
        path = lake / capture_path(NAMESPACE, EVENTHUB, str(p), when)
        path.parent.mkdir(parents=True, exist_ok=True)
        records = []
        for _ in range(0 if i % 5 == 4 else 1 + i % 2):
            urn, body, _ = pool[count % len(pool)]
            system = {
                "x-opt-enqueued-time": int(when.timestamp() * 1000) + count,
                "x-opt-partition-key": urn,
                "content-type": content_type,
                "message-id": f"q{count:031x}",
            }
            records.append(
                {
                    "SequenceNumber": count,
                    "Offset": str(count),
                    "EnqueuedTimeUtc": format_enqueued_time(when),
                    "SystemProperties": system,
                    "Properties": {},
                    "Body": body,
                }
            )
            count += 1
        path.write_bytes(append_events(None, records, codec="deflate" if p < 2 else "null"))
    return {"lake": str(lake), "registry": str(root / "registry"), "files": files, "events": count}


# -- the measurements (each in a fresh subprocess) ------------------------------------------


def _pin_one_cpu() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def _cpu_seconds() -> float:
    """CPU time of this process (all threads): immune to other work on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _user_seconds() -> float:
    """User CPU time of this process: the system time of page faults varies run to run here."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def _rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _baseline(lake: str, registry_root: str) -> tuple[int, int]:
    import fastavro
    import pandas as pd
    import pyarrow as pa
    from azure.schemaregistry.encoder.avroencoder import AvroEncoder

    from metaverse_kit.backends.local.registry import LocalSchemaRegistry

    registry = LocalSchemaRegistry(registry_root)
    encoder = AvroEncoder(client=registry.sdk_client(), group_name=GROUP)
    rows = []
    for path in sorted(Path(lake).rglob("*.avro")):
        with open(path, "rb") as f:
            for record in fastavro.reader(f):
                system = record["SystemProperties"]
                content_type = system.get("content-type")
                value = encoder.decode({"content": record["Body"], "content_type": content_type})
                rows.append(
                    {
                        "sequence_number": record["SequenceNumber"],
                        "enqueued_time": record["EnqueuedTimeUtc"],
                        "partition_key": system.get("x-opt-partition-key"),
                        "message_id": system.get("message-id"),
                        **value,
                    }
                )
    frame = pd.DataFrame(rows)
    table = pa.Table.from_pandas(frame)
    return table.num_rows, table.nbytes


def _measure(kind: str, lake: str, registry_root: str, cache: str) -> dict[str, Any]:
    """Run one measurement in this process (already pinned) and return its numbers."""
    import gc

    import pyarrow as pa

    import metaverse_kit as mk
    from metaverse_kit.backends.local.registry import LocalSchemaRegistry
    from metaverse_kit.history import replay as _replay  # noqa: F401  (import cost not timed)

    if kind != "baseline":
        # Imported on first use; not timed, like AvroEncoder. The progress bar (over 20 files)
        # takes ~20 ms to import tqdm and ~5 ms more for the multiprocessing module its first
        # bar imports for its lock.
        import multiprocessing.synchronize  # noqa: F401

        import datafusion  # noqa: F401
        import tqdm.auto  # noqa: F401

    if kind == "baseline":
        import fastavro  # noqa: F401
        import pandas  # noqa: F401
        from azure.schemaregistry.encoder.avroencoder import AvroEncoder  # noqa: F401
    gc.collect()
    base = _rss_mb()
    registry = LocalSchemaRegistry(registry_root)
    cpu = _cpu_seconds()
    user = _user_seconds()
    t = time.perf_counter()
    undecoded = 0
    if kind == "baseline":
        rows, nbytes = _baseline(lake, registry_root)
    elif kind in ("cold", "warm", "cold-nocache"):
        table = mk.replay_capture(
            lake, registry=registry, cache=False if kind == "cold-nocache" else cache
        )
        rows, nbytes = table.num_rows, table.nbytes
        undecoded = rows - table["decode_error"].null_count
    elif kind == "stream":
        rows = nbytes = 0
        for batch in mk.replay_batches(lake, registry=registry, cache=False):
            rows += batch.num_rows
            nbytes = max(nbytes, batch.nbytes)
    else:
        raise SystemExit(f"unknown measurement {kind}")
    seconds = time.perf_counter() - t
    cpu = _cpu_seconds() - cpu
    user = _user_seconds() - user
    del pa
    return {
        "kind": kind,
        "rows": rows,
        "seconds": cpu,
        "user": user,
        "wall": seconds,
        "table_mb": nbytes / 2**20,
        "peak_mb": _rss_mb() - base,
        "undecoded": undecoded,
    }


def _run(
    kind: str, lake: str, registry_root: str, cache: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", kind, lake, registry_root, cache],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def quiet_ms(results: list[tuple[str, dict[str, Any]]], quiet: dict[str, Any], line: str) -> float:
    """CPU milliseconds per file of a line measured on the quiet hub's lake."""
    return dict(results)[line]["seconds"] * 1000 / quiet["files"]


def main(argv: list[str] | None = None) -> int:
    """Generate the history, measure every way of replaying it, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="history length")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement (best kept)")
    parser.add_argument("--quick", action="store_true", help="a smoke run on a tiny history")
    parser.add_argument(
        "--quiet-files", type=int, default=5_000, help="files of the quiet hub's lake"
    )
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        _pin_one_cpu()
        print(json.dumps(_measure(*args.measure)))
        return 0
    events = 2_000 if args.quick else args.events
    repeat = 1 if args.quick else max(1, args.repeat)
    with tempfile.TemporaryDirectory(prefix="mk-bench-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        made = make_history(root / "long", events)
        longer = make_history(root / "longer", events * 4)
        evolved = make_history(root / "evolved", events, previous=0.1)
        fielded = make_history(root / "evolved-fields", events, previous=0.1, fields=True)
        older = make_history(root / "older", events, enqueued_ms=False)
        quiet = make_quiet_history(root / "quiet", 200 if args.quick else args.quiet_files)
        size = sum(f.stat().st_size for f in Path(made["lake"]).rglob("*.avro")) / 2**20
        print(
            f"history: {made['events']:,} events in {made['files']} Capture files "
            f"({size:.1f} MiB), made in {time.perf_counter() - t:.1f} s; each measurement in "
            f"its own process on one CPU, best of {repeat} (taken in rounds)"
        )
        # pyarrow's default allocator (mimalloc) hands freed pages back to the OS at once and
        # faults them in again; a table that keeps growing pays that in system time.
        keep = {"MIMALLOC_PURGE_DELAY": "-1"}
        # (line, what is measured, history, cache folder or "-", extra environment)
        jobs: list[tuple[str, str, dict[str, Any], str, dict[str, str] | None]] = [
            ("baseline", "baseline", made, "-", None),
            ("cold-nocache", "cold-nocache", made, "-", None),
            ("cold-nocache*", "cold-nocache", made, "-", keep),
            ("cold", "cold", made, "{cache}", None),
            ("warm", "warm", made, str(root / "cache0"), None),
            (f"stream@{made['events']:,}", "stream", made, "-", None),
            (f"stream@{longer['events']:,}", "stream", longer, "-", None),
            ("evolved", "cold-nocache", evolved, "-", None),
            ("evolved-fields", "cold-nocache", fielded, "-", None),
            ("older", "cold-nocache", older, "-", None),
            ("quiet-baseline", "baseline", quiet, "-", None),
            ("quiet", "cold-nocache", quiet, "-", None),
            ("quiet-cold", "cold", quiet, "{quiet_cache}", None),
            ("quiet-warm", "warm", quiet, str(root / "quiet-cache0"), None),
        ]
        runs: dict[str, list[dict[str, Any]]] = {}
        # NOTE: round after round of every line, not every round of one line after another:
        # on a shared machine a burst of load then slows one round of each, not all of one.
        for i in range(repeat):
            for line, kind, history, cache, env in jobs:
                cache = cache.format(cache=root / f"cache{i}", quiet_cache=root / f"quiet-cache{i}")
                runs.setdefault(line, []).append(
                    _run(kind, history["lake"], history["registry"], cache, env)
                )
        results = [(line, min(runs[line], key=lambda r: r["seconds"])) for line, *_ in jobs]
        rate = {k: r["rows"] / r["seconds"] for k, r in results}
        for kind, r in results:
            if r["undecoded"]:
                print(f"!! {kind}: {r['undecoded']:,} events were not decoded")
        base = rate["baseline"]
        print(
            f"{'what':<15}{'events':>9}{'cpu s':>8}{'user s':>8}{'wall s':>8}{'events/s':>11}"
            f"{'x baseline':>11}{'peak MiB':>10}{'table MiB':>11}{'peak/table':>11}"
        )
        for kind, r in results:
            streaming = kind.startswith("stream")
            ratio = "" if streaming or not r["table_mb"] else f"{r['peak_mb'] / r['table_mb']:.2f}"
            print(
                f"{kind:<15}{r['rows']:>9,}{r['seconds']:>8.2f}{r['user']:>8.2f}{r['wall']:>8.2f}{rate[kind]:>11,.0f}"
                f"{rate[kind] / base:>11.1f}{r['peak_mb']:>10.1f}{r['table_mb']:>11.1f}{ratio:>11}"
            )
        print(
            f"cold / baseline: {rate['cold-nocache'] / base:.1f}x without the cache, "
            f"{rate['cold'] / base:.1f}x while filling it (target 30x); "
            f"warm / cold: {rate['warm'] / rate['cold-nocache']:.1f}x (target 10x)"
        )
        by_user = {k: r["rows"] / r["user"] for k, r in results if r["user"]}
        print(
            "by user CPU time alone: cold / baseline "
            f"{by_user['cold-nocache'] / by_user['baseline']:.1f}x, "
            f"warm / cold {by_user['warm'] / by_user['cold-nocache']:.1f}x "
            "(the system time of page faults varies a lot from run to run on a shared VM)"
        )
        print(
            f"evolved (10% previous version, newest as reader) / baseline: "
            f"{rate['evolved'] / base:.1f}x (target 30x), "
            f"{rate['evolved-fields'] / base:.1f}x when fields must be resolved; "
            f"older files (no x-opt-enqueued-time) / current: "
            f"{rate['older'] / rate['cold-nocache']:.2f}x (target 0.8x)"
        )
        print(
            f"quiet hub ({quiet['files']:,} files of 0-2 events) / its baseline: "
            f"{rate['quiet'] / rate['quiet-baseline']:.1f}x (no target; per file: "
            f"{quiet_ms(results, quiet, 'quiet'):.2f} ms against "
            f"{quiet_ms(results, quiet, 'quiet-baseline'):.2f} ms); warm / cold: "
            f"{rate['quiet-warm'] / rate['quiet']:.1f}x (no target; below 1x the cache costs "
            f"more than it saves), {quiet_ms(results, quiet, 'quiet-cold'):.2f} ms a file "
            "while filling the cache"
        )
        print("stream: 'table MiB' is its largest batch; its peak should not grow with the history")
        print("*: the same with MIMALLOC_PURGE_DELAY=-1 (pyarrow's allocator keeps freed pages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
