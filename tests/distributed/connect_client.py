"""A Spark Connect client that runs ``spark_replay``, the questions and ``spark_export``.

Run by ``test_spark_connect.py`` in a process of its own: ``python -m
tests.distributed.connect_client JOB OUT``. pyspark starts a local Spark Connect server for
``SparkSession.builder.remote("local[2]")`` (the classic engine with the Connect plugin, served
over gRPC on localhost) and this process talks to it as a Databricks serverless notebook talks
to its cluster: a Connect session, with no ``sparkContext``.

NOTE: its own process because a Connect session switches pyspark's functions to their Connect
versions for the whole process (``SPARK_CONNECT_MODE_ENABLED``), which would break the
classic session the other tests share.

``JOB`` is a JSON file: ``{"lakes": {name: {"root": ..., "schemas": {...}}}, "export": DIR}``
with the lakes ``demo``, ``evolved``, ``damaged`` and (optional) ``real``. Everything this
writes to ``OUT``: an Arrow IPC file per table (named by what made it) and ``results.json``
(the session's class, duplicates, skipped parts, warnings, the error raised, export reports).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa

import metaverse_kit as mk
from metaverse_kit.distributed import spark_export, spark_replay
from metaverse_kit.distributed.spark import without_pandas_warning

# The moment and the range the questions are asked at (the demo history's days).
WHEN = "2026-03-01T00:00:00Z"
START, END = "2026-01-01T00:00:00Z", "2026-12-31T00:00:00Z"


def _write(out: Path, name: str, df: Any) -> None:
    with without_pandas_warning():
        table = df.toArrow()
    with (
        pa.OSFile(str(out / f"{name}.arrow"), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as writer,
    ):
        writer.write_table(table)


def _parts(parts: list[Any]) -> list[list[Any]]:
    return sorted([p.path, p.offset, p.reason, p.events_kept] for p in parts)


def main(job_path: str, out_path: str) -> None:
    """Run the job (see the module's docstring) and write what it gives to ``out_path``."""
    from pyspark.sql import SparkSession

    job = json.loads(Path(job_path).read_text())
    out = Path(out_path)
    lakes = job["lakes"]
    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.remote("local[2]")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.codegen.wholeStage", "false")
        .config("spark.sql.codegen.factoryMode", "NO_CODEGEN")
        .getOrCreate()
    )
    results: dict[str, Any] = {"session": f"{type(spark).__module__}.{type(spark).__name__}"}
    try:
        for name in ("demo", "evolved", "real"):
            if name not in lakes:
                continue
            df = spark_replay(spark, lakes[name]["root"], schemas=lakes[name]["schemas"])
            _write(out, f"replay_{name}", df)
            results[f"duplicates_{name}"] = mk.duplicates_dropped(df)
            if name == "demo":
                demo = df.cache()
                _write(out, "state_as_of", mk.history.state_as_of(demo, WHEN))
                _write(out, "changes", mk.history.changes(demo, START, END))
                urn = lakes[name]["urn"]
                _write(out, "audit_trail", mk.history.audit_trail(demo, urn))

        damaged = lakes["damaged"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            df = spark_replay(
                spark, damaged["root"], schemas=damaged["schemas"], on_bad_file="skip"
            )
        results["warnings"] = [
            str(w.message) for w in caught if issubclass(w.category, mk.CaptureFileWarning)
        ]
        results["skipped"] = _parts(mk.skipped_files(df))
        results["duplicates_damaged"] = mk.duplicates_dropped(df)
        _write(out, "replay_damaged", df)
        try:
            spark_replay(spark, damaged["root"], schemas=damaged["schemas"])
        except mk.MetaverseError as exc:
            results["raised"] = [type(exc).__name__, str(exc)]

        reports = []
        for _ in range(2):  # the second run finds nothing new
            report = spark_export(
                spark, lakes["evolved"]["root"], job["export"], schemas=lakes["evolved"]["schemas"]
            )
            reports.append([report.run, report.files, report.rows, report.duplicates_dropped])
        results["export"] = reports
    finally:
        (out / "results.json").write_text(json.dumps(results))
        spark.stop()


if __name__ == "__main__":
    main(*sys.argv[1:3])
