"""Ingest benchmark: a 2,000-table SQLite database ingested, then ingested again with no change.

The first run reads every table (SQLAlchemy reflection), builds DatasetProperties,
SchemaMetadata and Status for each, compares them with the (empty) lake and emits them. The
rerun must find that nothing changed: it replays the lake, reads the database's catalogue
(one query for every table's DDL, the fingerprint), and skips every table whose DDL and lake
state did not change. The issue's target: **a rerun with nothing changed costs less than 20%
of the first run**. A third run after altering 1% of the tables shows what a small change costs.

Each run is a fresh process (``metaverse ingest`` is one), measured after its imports
(SQLAlchemy, DataFusion: about 1.5 s here, the same for every run) and the garbage collection
of what they made, as
``benchmarks/replay.py`` does: wall-clock and CPU seconds (user + system) of ``mk.ingest``, which
includes connecting, replaying the lake (cold: the files the previous run wrote are not yet in
the replay cache), comparing and emitting. The baseline of the ratios is the first run, measured
in the same invocation.

Run: ``.venv/bin/python benchmarks/ingest.py`` (``--tables N``; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_TYPES = [
    "INTEGER",
    "TEXT",
    "VARCHAR(40)",
    "NUMERIC(12, 2)",
    "REAL",
    "TIMESTAMP",
    "BOOLEAN",
    "BLOB",
]


def build_database(path: Path, tables: int, *, seed: int = 7) -> None:
    """A SQLite file with ``tables`` tables of 3 to 15 columns, and a view per 20 tables."""
    rng = random.Random(seed)
    with sqlite3.connect(path) as conn:
        for i in range(tables):
            columns = ["id INTEGER PRIMARY KEY"] + [
                f"c{j} {rng.choice(_TYPES)}{' NOT NULL' if rng.random() < 0.3 else ''}"
                for j in range(rng.randint(2, 14))
            ]
            conn.execute(f"CREATE TABLE t{i:05d} ({', '.join(columns)})")
            if i % 20 == 19:
                conn.execute(f"CREATE VIEW v{i:05d} AS SELECT id FROM t{i:05d} WHERE id > 10")
    conn.close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_once(workspace: str, database: str) -> dict[str, Any]:
    """One ingestion, timed after the imports (what the child process prints)."""
    import metaverse_kit as mk
    from metaverse_kit.history import _decoder
    from metaverse_kit.ingest import get_source

    # NOTE: the engines are imported before the clock starts, as in benchmarks/replay.py:
    # SQLAlchemy and the SQLite dialect it loads on first use (~20 ms of imports).
    get_source("sql")
    import sqlalchemy.dialects.sqlite.pysqlite  # noqa: F401

    _decoder.available()
    # NOTE: and the imports' garbage collection: the first full collection of a fresh process
    # walks every object its imports made (SQLAlchemy, pyarrow, pandas, DataFusion: ~90,000),
    # 30-100 ms that fell inside whichever run came first after the imports, whatever it did.
    gc.collect()
    recipe = {
        "source": {"type": "sql", "config": {"url": f"sqlite:///{database}"}},
        "pipeline_name": "bench",
    }
    with mk.connect(path=workspace) as ws:
        wall, cpu = time.perf_counter(), _cpu()
        report = mk.ingest(ws, recipe, progress=False, keep_events=False)
        wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    return {
        "wall": wall,
        "cpu": cpu,
        "seen": report.entities_seen,
        "events": report.events_emitted,
        "unchanged": report.entities_unchanged,
        "failures": report.failures.total,
    }


def _child(workspace: Path, database: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--run", str(workspace), str(database)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if done.returncode:
        raise SystemExit(f"a run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="60 tables, a smoke run")
    parser.add_argument("--run", nargs=2, metavar=("WORKSPACE", "DATABASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        print(json.dumps(run_once(*args.run)))
        return
    tables = 60 if args.quick else args.tables
    with tempfile.TemporaryDirectory(prefix="metaverse-ingest-bench-") as tmp:
        folder = Path(tmp)
        database, workspace = folder / "bench.db", folder / "ws"
        build_database(database, tables)
        rows = [
            ("first run", _child(workspace, database)),
            ("rerun, no change", _child(workspace, database)),
        ]
        with sqlite3.connect(database) as conn:
            for i in range(0, tables, 100):
                conn.execute(f"ALTER TABLE t{i:05d} ADD COLUMN added_later TEXT")
        conn.close()
        rows.append((f"rerun, {len(range(0, tables, 100))} altered", _child(workspace, database)))
    first = rows[0][1]
    print(
        f"database: {tables:,} tables and {tables // 20:,} views in SQLite; "
        "each run in a fresh process, timed after its imports"
    )
    print(
        f"{'run':<22}{'entities':>9}{'events':>8}{'wall s':>8}{'cpu s':>8}{'events/s':>10}"
        f"{'x first (cpu)':>15}"
    )
    for name, r in rows:
        rate = r["events"] / r["cpu"] if r["events"] else 0.0
        print(
            f"{name:<22}{r['seen']:>9,}{r['events']:>8,}{r['wall']:>8.2f}{r['cpu']:>8.2f}"
            f"{rate:>10,.0f}{r['cpu'] / first['cpu']:>15.3f}"
        )
    rerun = rows[1][1]
    print(
        f"rerun / first run: {rerun['cpu'] / first['cpu']:.1%} of the CPU time, "
        f"{rerun['wall'] / first['wall']:.1%} of the wall time (target < 20%); "
        f"first run {first['events'] / first['cpu']:,.0f} events per CPU second"
    )
    if any(r["failures"] for _, r in rows) or rerun["events"]:
        raise SystemExit("a run failed or the rerun emitted events")


if __name__ == "__main__":
    main()
