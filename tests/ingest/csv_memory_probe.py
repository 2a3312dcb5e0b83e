"""Run one csv ingestion in a fresh process and print how much its peak memory grew (JSON).

``python csv_memory_probe.py WORKSPACE FILE.csv``: the process imports everything and warms up
first, so the growth of its peak resident memory (``ru_maxrss``) is the ingestion's alone.
Used by ``test_csv.py``; measuring in a process of its own keeps other tests' memory out.
"""

from __future__ import annotations

import json
import resource
import sys

import metaverse_kit as mk


def main(workspace: str, path: str) -> None:
    recipe = {"source": {"type": "csv", "config": {"path": path}}, "pipeline_name": "probe"}
    with mk.connect(path=workspace) as ws:
        ws.replay(progress=False)  # NOTE: DataFusion and the schema are loaded before measuring
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report = mk.ingest(ws, recipe, progress=False, keep_events=False)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "grew_kib": after - before,
                "entities": report.entities_seen,
                "events": report.events_emitted,
                "failures": report.failures.total,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
