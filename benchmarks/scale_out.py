"""Scale-out benchmark: the local replay against Spark and Dask on one and on two cores.

Builds the Capture tree of ``benchmarks/replay.py`` (MCEs with 1-4 aspects, 4 partitions, files
of 2,500 events, ``deflate`` on half of them), 1,000,000 events by default, then measures each
configuration in its own process, **pinned to its cores** (``os.sched_setaffinity``, inherited
by the JVM, Spark's Python workers and Dask's worker processes):

- ``local``: ``mk.replay_capture(cache=False)`` on one core (the Arrow table in memory);
- ``spark-1`` / ``spark-2``: ``spark_replay`` on ``local[1]`` / ``local[2]``, consumed with
  Spark's ``noop`` sink (every row decoded and converted to Spark rows, nothing kept);
- ``dask-1`` / ``dask-2``: ``dask_replay`` on a ``LocalCluster`` of 1 / 2 single-threaded
  worker processes, consumed with ``map_partitions(len)`` (every partition decoded into
  pandas ``ArrowDtype`` columns on its worker, nothing sent back).

Every engine is started and warmed up (its workers import the decoder on a small replay)
before the clock starts; the time includes the envelope scan, the plan and the decode. Prints
events per second of wall-clock time (the cores are the configuration's own: on a quiet
machine that is CPU time), the speedup from 1 to 2 cores per engine (target >= 1.7x) and the
per-core rate of each engine as a share of the local replay's (target >= 70%), all measured
in the same run.

Run: ``.venv/bin/python benchmarks/scale_out.py`` (about 15 minutes on 2 cores);
``--events N`` sets the tree's size, ``--quick`` makes a smoke run, ``--tree DIR`` keeps
(or reuses) the tree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CONFIGS = ("local", "spark-1", "spark-2", "dask-1", "dask-2")


def _pin(cores: int) -> None:
    available = sorted(os.sched_getaffinity(0))
    if len(available) < cores:
        raise SystemExit(f"this configuration needs {cores} cores; the process may use {available}")
    os.sched_setaffinity(0, set(available[:cores]))


def _registry(root: str) -> Any:
    from metaverse_kit.backends.local.registry import LocalSchemaRegistry

    return LocalSchemaRegistry(root)


def _measure_local(lake: str, registry_root: str) -> tuple[int, float]:
    import metaverse_kit as mk

    registry = _registry(registry_root)
    started = time.perf_counter()
    table = mk.replay_capture(lake, registry=registry, cache=False, progress=False)
    return table.num_rows, time.perf_counter() - started


def _measure_spark(lake: str, registry_root: str, cores: int, warm: str) -> tuple[int, float]:
    from pyspark.sql import SparkSession

    from metaverse_kit.distributed import spark_replay

    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(2 * cores))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    registry = _registry(registry_root)
    # Warm-up: Python workers start and import the decoder; the JVM loads its classes.
    spark_replay(spark, warm, registry=registry).write.format("noop").mode("overwrite").save()
    started = time.perf_counter()
    df = spark_replay(spark, lake, registry=registry)
    df.write.format("noop").mode("overwrite").save()
    elapsed = time.perf_counter() - started
    events = df.count()
    spark.stop()
    return events, elapsed


def _measure_dask(lake: str, registry_root: str, cores: int, warm: str) -> tuple[int, float]:
    from distributed import Client, LocalCluster

    from metaverse_kit.distributed import dask_replay

    registry = _registry(registry_root)
    with (
        LocalCluster(
            n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        dask_replay(warm, registry=registry).map_partitions(len).compute()
        started = time.perf_counter()
        sizes = dask_replay(lake, registry=registry).map_partitions(len).compute()
        elapsed = time.perf_counter() - started
    return int(sizes.sum()), elapsed


def _measure(config: str, lake: str, registry_root: str, warm: str) -> dict[str, Any]:
    cores = 1 if config in ("local", "spark-1", "dask-1") else 2
    _pin(cores)
    if config == "local":
        events, elapsed = _measure_local(lake, registry_root)
    elif config.startswith("spark"):
        events, elapsed = _measure_spark(lake, registry_root, cores, warm)
    else:
        events, elapsed = _measure_dask(lake, registry_root, cores, warm)
    return {"config": config, "cores": cores, "events": events, "seconds": elapsed}


def _run(config: str, lake: str, registry_root: str, warm: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", config, lake, registry_root, warm],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{config} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Build the tree, measure every configuration, print the rates and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="a smoke run on a small tree")
    parser.add_argument("--tree", type=Path, help="build (or reuse) the tree in this folder")
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        config, lake, registry_root, warm = args.measure
        print(json.dumps(_measure(config, lake, registry_root, warm)))
        return 0
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("the benchmark needs 2 cores to compare 1 and 2")
    from benchmarks.replay import make_history

    events = 20_000 if args.quick else args.events
    with tempfile.TemporaryDirectory(prefix="mk-scale-") as scratch:
        root = args.tree or Path(scratch)
        info_path = root / "tree.json"
        if info_path.exists():
            info = json.loads(info_path.read_text())
        else:
            root.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            info = make_history(root, events)
            info_path.write_text(json.dumps(info))
            print(
                f"built {info['events']:,} events in {info['files']} files in "
                f"{time.perf_counter() - started:.0f} s"
            )
        warm = str(sorted(Path(info["lake"]).rglob("*.avro"))[0])
        results = {c: _run(c, info["lake"], info["registry"], warm) for c in CONFIGS}
    rate = {c: r["events"] / r["seconds"] for c, r in results.items()}
    print(f"\n{'configuration':<14}{'cores':>6}{'events':>12}{'seconds':>10}{'events/s':>12}")
    for c, r in results.items():
        print(f"{c:<14}{r['cores']:>6}{r['events']:>12,}{r['seconds']:>10.1f}{rate[c]:>12,.0f}")
    counts = {r["events"] for r in results.values()}
    if len(counts) != 1:
        print(f"\nWARNING: the configurations returned different event counts: {sorted(counts)}")
    print()
    for engine in ("spark", "dask"):
        one, two = rate[f"{engine}-1"], rate[f"{engine}-2"]
        print(
            f"{engine}: speedup 1 -> 2 cores {two / one:.2f}x (target >= 1.7x); per core "
            f"{one / rate['local']:.0%} (1 core) and {two / 2 / rate['local']:.0%} (2 cores) "
            f"of the local replay (target >= 70%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
