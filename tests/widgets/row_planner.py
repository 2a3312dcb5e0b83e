"""A row planner for the tests of the Bulk edit tab (the toolkit's own comes with issue 12).

Columns ``resource`` (a dataset urn) and ``tags`` (names separated by ``|``); each row adds its
tags to the dataset's latest ``globalTags`` in the lake (read, modify, write). A row whose
resource is not a dataset urn, or that names no tag, is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import metaverse_kit as mk
from metaverse_kit.widgets.bulk_editor import RowPlan


def plan(ws: Any, rows: Sequence[Mapping[str, str]]) -> list[RowPlan]:
    """One plan per row (see the module notes)."""
    events = ws.replay(progress=False)
    plans = []
    for i, row in enumerate(rows, start=1):
        urn = (row.get("resource") or "").strip()
        tags = [t.strip() for t in (row.get("tags") or "").split("|") if t.strip()]
        problems = []
        if not urn.startswith("urn:li:dataset:("):
            problems.append(f"resource: {urn!r} is not a dataset urn")
        if not tags:
            problems.append("tags: no tag given")
        if problems:
            plans.append(RowPlan(i, urn or None, None, tuple(problems)))
            continue
        latest = mk.history.latest_aspect(events, urn, "globalTags") if events.num_rows else None
        old = sorted(t["tag"].rpartition(":")[2] for t in (latest or {}).get("tags") or [])
        new = sorted(set(old) | set(tags))
        event = mk.mce(urn, [mk.aspects.global_tags(new)])
        plans.append(RowPlan(i, urn, event, (), (("globalTags.tags", old, new),)))
    return plans


def sheet(rows: int = 20, *, bad: Sequence[int] = (4, 13)) -> str:
    """A CSV of ``rows`` rows; those numbered in ``bad`` (1-based) are refused."""
    lines = ["resource,tags"]
    for i in range(1, rows + 1):
        if i == bad[0]:
            lines.append(f"not-a-urn-{i},PII")
        elif i in bad:
            lines.append(f'"{mk.make_dataset_urn("hive", f"bulk.t{i}")}",')
        else:
            lines.append(f'"{mk.make_dataset_urn("hive", f"bulk.t{i}")}",Reviewed|Bulk')
    return "\n".join(lines) + "\n"
