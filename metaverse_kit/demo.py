"""A realistic sample history, and the headless demo that emits, replays and summarises it.

The history spans six weeks: datasets on a few platforms with owners, tags, glossary terms and
descriptions; users and groups; tags and terms; then later edits (new owners, more tags,
description changes, a deprecation) and a soft delete. It is deterministic for a given seed,
so notebooks and tests can refer to what is in it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit.backends.protocols import Receipt
from metaverse_kit.capture import EMITTED_TIME_PROPERTY
from metaverse_kit.events import aspects as a
from metaverse_kit.events.urns import make_dataset_urn, make_group_urn, make_user_urn
from metaverse_kit.history.arrow_types import union_branch
from metaverse_kit.workspace import Workspace

__all__ = ["HISTORY_START", "aspect_counts", "emit_sample_history", "latest_aspects", "summary"]

#: When the sample history begins (a Monday morning, UTC).
HISTORY_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

_USERS = [
    ("jdoe", "Jane Doe", "Data Engineer"),
    ("asmith", "Alex Smith", "Analytics Lead"),
    ("mchen", "Mei Chen", "Data Steward"),
    ("rkumar", "Ravi Kumar", "Platform Engineer"),
    ("lgarcia", "Lucia Garcia", "Finance Analyst"),
    ("okoro", "Obi Okoro", "Privacy Officer"),
]
_GROUPS = [
    ("data-platform", "Data Platform", ["jdoe", "rkumar"]),
    ("analytics", "Analytics", ["asmith", "lgarcia"]),
    ("governance", "Data Governance", ["mchen", "okoro"]),
]
_TAGS = [
    ("PII", "Holds personal data"),
    ("Gold", "Curated and certified"),
    ("Raw", "Landed as received"),
    ("Finance", "Used in financial reporting"),
]
_TERMS = [
    ("Revenue", "Income from sales before any costs are deducted."),
    ("CustomerEmail", "The e-mail address a customer gave us."),
    ("ActiveCustomer", "A customer with an order in the last 90 days."),
]
_DATASETS = [
    ("hive", "sales.orders", "Every order line, one row per item.", "jdoe", ["Raw"]),
    ("hive", "sales.customers", "Customers and their contact details.", "jdoe", ["PII", "Raw"]),
    (
        "snowflake",
        "analytics.revenue_daily",
        "Revenue per day and region.",
        "asmith",
        ["Gold", "Finance"],
    ),
    (
        "snowflake",
        "analytics.active_customers",
        "Customers active in the last 90 days.",
        "asmith",
        ["Gold"],
    ),
    ("snowflake", "finance.ledger", "General ledger entries.", "lgarcia", ["Finance"]),
    ("postgres", "crm.public.contacts", "CRM contacts, synced nightly.", "rkumar", ["PII"]),
    ("postgres", "crm.public.accounts", "CRM accounts.", "rkumar", []),
    ("kafka", "clickstream.page_views", "Page views from the web shop.", "rkumar", ["Raw"]),
    ("hive", "marketing.campaigns", "Campaign definitions and budgets.", "asmith", []),
    ("snowflake", "analytics.churn_scores", "Predicted churn per customer.", "asmith", ["PII"]),
]
_GOVERNANCE = make_group_urn("governance")
_TERMS_OF = {
    "sales.customers": ["CustomerEmail"],
    "analytics.revenue_daily": ["Revenue"],
    "analytics.active_customers": ["ActiveCustomer"],
    "crm.public.contacts": ["CustomerEmail"],
    "finance.ledger": ["Revenue"],
}


@contextmanager
def _clock(ws: Workspace, now: Callable[[], datetime]) -> Iterator[bool]:
    """Stamp events with simulated times on a hub that lets us; elsewhere, they get real times."""
    hub: Any = ws.hub  # NOTE: the protocol's clock is read-only; a non-None one is settable
    if hub.clock is None:
        yield False
        return
    previous = hub.clock
    hub.clock = now
    try:
        yield True
    finally:
        hub.clock = previous


def emit_sample_history(
    ws: Workspace, *, start: datetime = HISTORY_START, seed: int = 0
) -> list[Receipt]:
    """Emit the sample history into ``ws``; returns the receipts, oldest first.

    On the local backend events are enqueued at simulated times from ``start`` over six weeks;
    on a hub without a settable clock they are enqueued now.
    """
    rng = random.Random(seed)
    t = start
    receipts: list[Receipt] = []

    def emit(urn: str, aspect_list: list, *, step: timedelta) -> None:
        nonlocal t
        t += step + timedelta(seconds=rng.randint(0, 59))
        stamp = int(t.timestamp() * 1000)
        # NOTE: aspects carry the simulated time as their own audit stamp, as DataHub's do;
        # so does the emit time where the hub's clock is simulated too: stamped with the
        # machine's clock, the audit trail showed events emitted months after they reached
        # the hub.
        built = [f(stamp) if callable(f) else f for f in aspect_list]
        props = {EMITTED_TIME_PROPERTY: str(stamp)} if simulated else None
        receipts.extend(ws.emit(a.mce(urn, built), properties=props))

    minute = timedelta(minutes=1)
    with _clock(ws, lambda: t) as simulated:
        for name, title, job in _USERS:
            emit(
                make_user_urn(name),
                [
                    a.corp_user_info(
                        display_name=title,
                        full_name=title,
                        title=job,
                        email=f"{name}@contoso.example",
                        active=True,
                    )
                ],
                step=minute,
            )
        for name, title, members in _GROUPS:
            emit(
                make_group_urn(name),
                [
                    a.corp_group_info(
                        display_name=title,
                        email=f"{name}@contoso.example",
                        description=f"The {title} team",
                    )
                ],
                step=minute,
            )
            for member in members:
                emit(make_user_urn(member), [a.group_membership([name])], step=minute)
        for tag, text in _TAGS:
            emit(f"urn:li:tag:{tag}", [a.tag_properties(tag, description=text)], step=minute)
        for term, text in _TERMS:
            emit(
                f"urn:li:glossaryTerm:{term}", [a.glossary_term_info(text, name=term)], step=minute
            )
        for platform, name, text, owner, tags in _DATASETS:
            urn = make_dataset_urn(platform, name)
            emit(
                urn,
                [
                    a.dataset_properties(name=name.rpartition(".")[2], description=text),
                    lambda ms, o=owner: a.ownership([o, (_GOVERNANCE, "DATA_STEWARD")], time_ms=ms),
                    a.global_tags(tags),
                    lambda ms, n=name: a.glossary_terms(_TERMS_OF.get(n, []), time_ms=ms),
                ],
                step=timedelta(minutes=7),
            )
        # Later edits: days apart, as stewards work through the catalogue.
        day = timedelta(days=1)
        orders = make_dataset_urn("hive", "sales.orders")
        customers = make_dataset_urn("hive", "sales.customers")
        revenue = make_dataset_urn("snowflake", "analytics.revenue_daily")
        campaigns = make_dataset_urn("hive", "marketing.campaigns")
        churn = make_dataset_urn("snowflake", "analytics.churn_scores")
        emit(
            orders,
            [
                lambda ms: a.editable_dataset_properties(
                    "Every order line. Joins to sales.customers on customer_id.",
                    time_ms=ms,
                    actor=make_user_urn("mchen"),
                )
            ],
            step=3 * day,
        )
        emit(
            customers,
            [
                lambda ms: a.ownership(
                    ["jdoe", ("okoro", "DATA_STEWARD"), (_GOVERNANCE, "DATA_STEWARD")],
                    time_ms=ms,
                    actor=make_user_urn("mchen"),
                )
            ],
            step=2 * day,
        )
        emit(revenue, [a.global_tags(["Gold", "Finance", "PII"])], step=4 * day)
        emit(revenue, [a.global_tags(["Gold", "Finance"])], step=day)
        emit(
            campaigns,
            [
                lambda ms: a.dataset_deprecation(
                    True,
                    note="Replaced by analytics.campaign_performance",
                    actor=make_user_urn("asmith"),
                )
            ],
            step=5 * day,
        )
        emit(
            churn,
            [
                lambda ms: a.editable_dataset_properties(
                    "Churn model v2 scores, refreshed weekly.",
                    time_ms=ms,
                    actor=make_user_urn("asmith"),
                )
            ],
            step=3 * day,
        )
        emit(orders, [a.global_tags(["Raw", "Gold"])], step=6 * day)
        emit(campaigns, [a.status(True)], step=7 * day)
        emit(
            make_user_urn("lgarcia"),
            [
                a.corp_user_info(
                    display_name="Lucia Garcia",
                    full_name="Lucia Garcia",
                    title="Finance Lead",
                    email="lgarcia@contoso.example",
                    active=True,
                )
            ],
            step=2 * day,
        )
    return receipts


# -- summaries ---------------------------------------------------------------------------------


def _aspect_rows(events: pa.Table) -> Iterator[tuple[str, str, Any, int]]:
    """(urn, aspect full name, aspect value, row index) of every aspect in an MCE table."""
    if "proposedSnapshot" not in events.column_names:
        return
    snapshots = events.column("proposedSnapshot").to_pylist()
    for i, snap in enumerate(snapshots):
        held = union_branch(snap)
        if held is None:
            continue
        inner = held[1]
        for aspect in inner["aspects"]:
            name, value = union_branch(aspect) or (None, None)
            if name is not None:
                yield inner["urn"], name, value, i


def aspect_counts(events: pa.Table) -> Counter[str]:
    """How many times each aspect (by DataHub's aspect name) was written."""
    return Counter(a.aspect_name(name) for _, name, _, _ in _aspect_rows(events))


def latest_aspects(events: pa.Table, urn: str) -> dict[str, Any]:
    """The last value of every aspect written to ``urn`` (events in replay order per partition)."""
    ordered = events.sort_by([("enqueued_time", "ascending"), ("sequence_number", "ascending")])
    mask = pc.equal(ordered.column("partition_key"), urn)
    latest: dict[str, Any] = {}
    for u, name, value, _ in _aspect_rows(ordered.filter(mask)):
        if u == urn:
            latest[a.aspect_name(name)] = value
    return latest


def summary(events: pa.Table, *, urn: str | None = None) -> str:
    """A short text summary: events per partition and per aspect, one dataset's current state."""
    lines = [f"{events.num_rows} events replayed"]
    if events.num_rows:
        per_partition = Counter(events.column("partition").to_pylist())
        lines.append(
            "events per partition: "
            + ", ".join(
                f"{p}: {n}" for p, n in sorted(per_partition.items(), key=lambda kv: str(kv[0]))
            )
        )
        lines.append(
            "aspects written: "
            + ", ".join(f"{name} {n}" for name, n in aspect_counts(events).most_common())
        )
        first, last = pc.min_max(events.column("enqueued_time")).values()
        lines.append(f"from {first} to {last}")
    urn = urn or make_dataset_urn("hive", "sales.customers")
    state = latest_aspects(events, urn)
    if state:
        lines.append(f"current state of {urn}:")
        for name, value in sorted(state.items()):
            lines.append(f"  {name}: {_brief(name, value)}")
    return "\n".join(lines)


def _brief(name: str, value: dict) -> str:
    if name == "ownership":
        return ", ".join(f"{o['owner']} ({o['type']})" for o in value["owners"])
    if name == "globalTags":
        return ", ".join(t["tag"] for t in value["tags"]) or "(none)"
    if name == "glossaryTerms":
        return ", ".join(t["urn"] for t in value["terms"]) or "(none)"
    if name in ("datasetProperties", "editableDatasetProperties"):
        return repr(value.get("description"))
    if name == "status":
        return "removed" if value["removed"] else "active"
    return ", ".join(f"{k}={v!r}" for k, v in value.items() if v not in (None, [], {}))[:100]
