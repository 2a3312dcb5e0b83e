"""HistoryExplorer without a browser: filters, paging, timeline, state as of, entity audit trail."""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

import metaverse_kit as mk
from metaverse_kit.demo import emit_sample_history
from metaverse_kit.history import HistoryInputError, aspects, state_as_of
from metaverse_kit.widgets import HistoryExplorer
from metaverse_kit.widgets.history_explorer import VEGA_LITE_MIME, brief, value_at

CUSTOMERS = mk.make_dataset_urn("hive", "sales.customers")
CAMPAIGNS = mk.make_dataset_urn("hive", "marketing.campaigns")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep any per-user replay cache of these tests in their temporary folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))


@pytest.fixture
def sample(workspace: mk.Workspace) -> mk.Workspace:
    emit_sample_history(workspace)
    return workspace


@pytest.fixture
def explorer(sample: mk.Workspace) -> HistoryExplorer:
    explorer = HistoryExplorer(sample, page_size=10)
    explorer.refresh(block=True)
    return explorer


def test_the_widget_is_built_lazily_and_loads_when_shown(sample: mk.Workspace) -> None:
    explorer = HistoryExplorer(sample)
    assert explorer.replays == []
    assert "widget" not in vars(explorer)
    box = explorer.widget
    explorer.wait()
    assert explorer.replays == [(None, None, None)]
    assert explorer.tabs.titles == ("Events", "State as of", "Entity")
    assert explorer.tabs in box.children
    assert "application/vnd.jupyter.widget-view+json" in explorer._repr_mimebundle_()
    # The progress bar was fed to its end and the status line counts what was replayed.
    assert explorer.progress.value == explorer.progress.max > 1
    assert "41 events from" in explorer.status.value


def test_events_are_every_aspect_write_in_the_range(
    explorer: HistoryExplorer, sample: mk.Workspace
) -> None:
    expected = aspects(sample.replay(progress=False))
    events = explorer.events
    assert events.num_rows == expected.num_rows == 71
    assert events["message_id"].to_pylist() == expected["message_id"].to_pylist()
    # The filter options come from the data.
    assert [v for _, v in explorer.entity_type.options][1:] == [
        "corpGroup",
        "corpuser",
        "dataset",
        "glossaryTerm",
        "tag",
    ]
    assert "ownership" in [v for _, v in explorer.aspect.options]
    assert [v for _, v in explorer.platform.options][1:] == [
        "hive",
        "kafka",
        "postgres",
        "snowflake",
    ]


def test_filters_cut_the_table_in_memory(explorer: HistoryExplorer) -> None:
    # "(all)" is what the dropdowns show at first.
    assert explorer.aspect.label == explorer.partition.label == "(all)"
    explorer.entity_type.value = "dataset"
    explorer.platform.value = "hive"
    assert set(explorer.events["platform"].to_pylist()) == {"hive"}
    explorer.aspect.value = "globalTags"
    explorer.urn_text.value = "ORDERS"  # case-insensitive
    rows = explorer.events.to_pylist()
    assert [r["urn"] for r in rows] == [mk.make_dataset_urn("hive", "sales.orders")] * 2
    assert [brief("globalTags", r["value"]["GlobalTags"]) for r in rows] == ["Raw", "Raw, Gold"]
    assert explorer.replays == [(None, None, None)]
    # None from code means "(all)" too, and shows so.
    explorer.aspect.value = None
    assert explorer.aspect.label == "(all)"
    assert set(explorer.events["aspect"].to_pylist()) == {
        "datasetProperties",
        "ownership",
        "globalTags",
        "glossaryTerms",
        "editableDatasetProperties",
    }
    explorer.urn_text.value = "no such thing"
    assert explorer.events.num_rows == 0
    assert "No events match" in explorer.events_html.value


def test_partition_and_narrower_times_do_not_replay_again(explorer: HistoryExplorer) -> None:
    explorer.partition.value = "2"
    assert set(explorer.events["partition"].to_pylist()) == {"2"}
    explorer.start_time.value = datetime(2026, 1, 20, tzinfo=UTC)
    explorer.wait()
    times = explorer.events["enqueued_time"].to_pylist()
    assert times and min(times) >= datetime(2026, 1, 20, tzinfo=UTC)
    assert explorer.replays == [(None, None, None)]


def test_a_wider_range_replays_only_what_it_needs(sample: mk.Workspace) -> None:
    start = datetime(2026, 1, 20, tzinfo=UTC)
    # The campaigns dataset is soft-deleted after the start, in its urn's partition.
    partition = sample.hub.partition_for(CAMPAIGNS)  # type: ignore[attr-defined]
    explorer = HistoryExplorer(sample, start=start, partition=int(partition))
    explorer.refresh(block=True)
    assert explorer.replays == [(start, None, (partition,))]
    assert set(explorer.events["partition"].to_pylist()) == {partition}
    assert min(explorer.events["enqueued_time"].to_pylist()) >= start
    explorer.partition.value = None
    explorer.wait()
    assert explorer.replays[-1] == (start, None, None)
    assert len(set(explorer.events["partition"].to_pylist())) > 1


def test_a_partition_with_no_capture_file_is_said_in_the_status(
    workspace: mk.Workspace,
) -> None:
    """A new hub's partitions that no event reached yet are in the Partition list; choosing one
    says why nothing shows, in the widget (a warning from the replay's thread reached no one)."""
    (receipt,) = workspace.emit(mk.mce(CUSTOMERS, [mk.aspects.status(False)]))
    empty = next(p for p in workspace.hub.partition_ids() if p != receipt.partition)
    explorer = HistoryExplorer(workspace, partition=empty)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none is given as a Python warning
        explorer.refresh(block=True)
        assert explorer.events.num_rows == 0
        assert explorer.status.value == (
            f"0 events from 0 Capture files<br>⚠ No Capture file of partition &#x27;{empty}"
            "&#x27; is in the lake: the replay holds none of its events (the lake&#x27;s "
            f"partitions: {receipt.partition})"
        )
        explorer.partition.value = None  # every partition: nothing to say
        explorer.wait()
    assert explorer.status.value == "1 events from 1 Capture files"


def test_reload_picks_up_new_events(explorer: HistoryExplorer, sample: mk.Workspace) -> None:
    urn = mk.make_dataset_urn("hive", "sales.returns")
    sample.emit(mk.mce(urn, [mk.aspects.global_tags(["Raw"])]))
    assert urn not in explorer.events["urn"].to_pylist()
    explorer.reload_button.click()
    explorer.wait()
    assert explorer.replays == [(None, None, None), (None, None, None)]
    assert explorer.events.num_rows == 72
    assert urn in explorer.entity_urn.options


def test_paging(explorer: HistoryExplorer) -> None:
    pager = explorer.events_pager
    assert pager.label.value == "rows 1–10 of 71"
    assert pager.previous.disabled and not pager.next.disabled
    first = explorer.page_rows
    pager.next.click()
    second = explorer.page_rows
    assert len(first) == len(second) == 10
    assert [r["time"] for r in first + second] == explorer.events["enqueued_time"].to_pylist()[:20]
    for _ in range(10):
        pager.next.click()
    assert pager.label.value == "rows 71–71 of 71" and pager.next.disabled
    assert len(explorer.page_rows) == 1
    assert explorer.page_rows[0]["urn"] in explorer.events_html.value


def test_timeline_counts_writes_by_aspect(explorer: HistoryExplorer) -> None:
    spec = explorer.chart_spec
    values = spec["data"]["values"]
    per_aspect: Counter[str] = Counter()
    for v in values:
        per_aspect[v["aspect"]] += v["writes"]
    assert per_aspect == Counter(explorer.events["aspect"].to_pylist())
    assert spec["encoding"]["x"]["timeUnit"] == "utcyearmonthdate"  # six weeks: per day
    assert "color" not in str(spec.get("config", {}))
    [output] = explorer.chart.outputs
    assert output["data"][VEGA_LITE_MIME] == spec
    explorer.aspect.value = "status"
    assert [(v["aspect"], v["writes"]) for v in explorer.chart_spec["data"]["values"]] == [
        ("status", 1)
    ]


def test_state_as_of_the_slider(explorer: HistoryExplorer, sample: mk.Workspace) -> None:
    events = sample.replay(progress=False)
    last = pc.max(events["enqueued_time"]).as_py()
    assert explorer.as_of.value == last
    state = explorer.state
    expected = state_as_of(events, last)
    assert state.drop_columns(["event_index"]).equals(expected.drop_columns(["event_index"]))
    assert CAMPAIGNS not in state["urn"].to_pylist()
    explorer.include_removed.value = True
    assert CAMPAIGNS in explorer.state["urn"].to_pylist()
    assert "1 of them removed" in explorer.state_html.value
    # Before the soft delete, the campaigns dataset is live.
    explorer.include_removed.value = False
    explorer.set_as_of(datetime(2026, 2, 1, tzinfo=UTC))
    assert explorer.as_of.value <= datetime(2026, 2, 1, tzinfo=UTC)
    assert CAMPAIGNS in explorer.state["urn"].to_pylist()
    # The filters apply to the catalogue too.
    explorer.aspect.value = "ownership"
    assert set(explorer.state["aspect"].to_pylist()) == {"ownership"}
    with pytest.raises(HistoryInputError, match="before the first event"):
        explorer.set_as_of("2020-01-01")


def test_state_needs_the_history_before_the_range(sample: mk.Workspace) -> None:
    start = datetime(2026, 1, 20, tzinfo=UTC)
    explorer = HistoryExplorer(sample, start=start)
    explorer.refresh(block=True)
    assert explorer.replays == [(start, None, None)]
    state = explorer.state
    # The datasets were created before the range; their state is still complete.
    expected = state_as_of(sample.replay(progress=False), explorer.as_of.value)
    assert state["urn"].to_pylist() == expected["urn"].to_pylist()
    assert explorer.replays == [(start, None, None), (None, None, None)]


def test_entity_view_shows_the_audit_trail_and_diffs(explorer: HistoryExplorer) -> None:
    explorer.select_entity(CUSTOMERS)
    assert explorer.tabs.selected_index == 2
    trail = explorer.entity_trail
    assert trail is not None
    assert trail["aspect"].to_pylist() == [
        "datasetProperties",
        "ownership",
        "globalTags",
        "glossaryTerms",
        "ownership",
    ]
    change = explorer.entity_diffs[-1]
    assert change["actor"] == "urn:li:corpuser:mchen"
    okoro = {
        "owner": "urn:li:corpuser:okoro",
        "type": "DATA_STEWARD",
        "typeUrn": None,
        "source": None,
        "attribution": None,
    }
    assert ("owners[owner=urn:li:corpuser:okoro]", None, okoro) in change["fields"]
    assert "lastModified.actor" in [p for p, _, _ in change["fields"]]
    html = explorer.entity_html.value
    assert "by urn:li:corpuser:mchen" in html and "urn:li:corpuser:okoro" in html
    # Audit stamps read as times.
    [(_, _, stamp)] = [f for f in change["fields"] if f[0] == "lastModified.time"]
    shown = datetime.fromtimestamp(stamp / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert f"{shown} UTC ({stamp})" in html
    # Typing a urn in the box selects it too.
    explorer.entity_urn.value = CAMPAIGNS
    assert explorer.entity_diffs[-1]["change"] == "soft_delete"
    assert explorer.entity_diffs[-1]["fields"] == [("removed", None, True)]


def test_a_rewrite_shows_as_the_same_value_again(explorer: HistoryExplorer) -> None:
    revenue = mk.make_dataset_urn("snowflake", "analytics.revenue_daily")
    explorer.select_entity(revenue)
    tags = [d for d in explorer.entity_diffs if d["aspect"] == "globalTags"]
    pii = {"tag": "urn:li:tag:PII", "context": None, "attribution": None}
    assert [d["fields"] for d in tags][1:] == [
        [("tags[tag=urn:li:tag:PII]", None, pii)],
        [("tags[tag=urn:li:tag:PII]", pii, None)],
    ]


def test_a_late_write_is_marked_in_the_entity_view(workspace: mk.Workspace) -> None:
    from metaverse_kit.capture import EMITTED_TIME_PROPERTY

    # Alice's ownership was emitted first but reached the hub after Bob's (an outbox retry).
    emitted = round(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
    workspace.emit(mk.mce(CUSTOMERS, [mk.aspects.ownership(["bob"])]))
    workspace.emit(
        mk.mce(CUSTOMERS, [mk.aspects.ownership(["alice"])]),
        properties={EMITTED_TIME_PROPERTY: str(emitted)},
    )
    explorer = HistoryExplorer(workspace)
    explorer.refresh(block=True)
    explorer.select_entity(CUSTOMERS)
    # Writes are listed in the order they were made: Alice's first, and it is the late one.
    assert [d["late"] for d in explorer.entity_diffs] == [True, False]
    assert explorer.entity_html.value.count("late: a newer write had already reached") == 1


def test_the_replay_runs_in_the_background(sample: mk.Workspace, monkeypatch: Any) -> None:
    lake = sample.lake
    gate = threading.Event()
    read = lake.read_bytes
    calls = []

    def slow_read(file: Any) -> bytes:
        calls.append(file.path)
        if len(calls) == 3:
            gate.wait(timeout=30)
        return read(file)

    monkeypatch.setattr(lake, "read_bytes", slow_read)
    explorer = HistoryExplorer(sample)
    seen: list[float] = []
    explorer.progress.observe(lambda change: seen.append(change["new"]), names="value")
    explorer.refresh()
    try:
        # The call returned while the replay is held on its third file.
        for _ in range(500):
            if len(calls) >= 3:
                break
            threading.Event().wait(0.01)
        assert len(calls) == 3
        assert explorer.progress.value < explorer.progress.max
        assert "replaying" in explorer.status.value
        with pytest.raises(TimeoutError):
            explorer.wait(timeout=0.05)
        # Meanwhile the widget answers: its filters move, with nothing loaded to filter yet.
        explorer.aspect.value = None
    finally:
        gate.set()
    explorer.wait()
    assert explorer.events.num_rows == 71
    # The bar moved file by file, never back, to its end.
    assert seen == sorted(seen) and seen[-1] == explorer.progress.max
    assert len(set(seen)) > 10


def test_a_failed_replay_is_shown_and_raised(sample: mk.Workspace, monkeypatch: Any) -> None:
    def broken(file: Any) -> bytes:
        raise mk.CaptureFileError(f"{file.path} is not a readable Capture archive: test")

    monkeypatch.setattr(sample.lake, "read_bytes", broken)
    explorer = HistoryExplorer(sample)
    explorer.refresh()
    with pytest.raises(mk.CaptureFileError, match="not a readable Capture archive"):
        explorer.wait()
    assert "CaptureFileError" in explorer.status.value


def test_an_empty_workspace(workspace: mk.Workspace) -> None:
    explorer = HistoryExplorer(workspace)
    assert explorer.events.num_rows == 0
    assert explorer.as_of.disabled
    assert explorer.state.num_rows == 0
    assert explorer.chart_spec["data"]["values"] == []


def test_bad_arguments(sample: mk.Workspace, explorer: HistoryExplorer) -> None:
    with pytest.raises(HistoryInputError, match="no partition '9'"):
        HistoryExplorer(sample, partition="9")
    with pytest.raises(HistoryInputError, match="ISO 8601"):
        HistoryExplorer(sample, start="yesterday")
    with pytest.raises(HistoryInputError, match="takes a URN"):
        explorer.select_entity("sales.customers")
    explorer.end_time.value = datetime(2026, 1, 1, tzinfo=UTC)
    explorer.start_time.value = datetime(2026, 2, 1, tzinfo=UTC)
    assert "is after To" in explorer.status.value


def test_value_at_paths() -> None:
    record = {
        "owners": [{"owner": "a", "type": "X"}, {"owner": "b", "type": "Y"}],
        "customProperties": [("team", "blue")],
        "lastModified": {"actor": "me"},
    }
    assert value_at(record, "owners[1].type") == "Y"
    assert value_at(record, "owners[5]") is None
    assert value_at(record, "owners[owner=b].type") == "Y"
    assert value_at(record, "owners[owner=c]") is None
    assert value_at(record, "customProperties[team]") == "blue"
    assert value_at(record, "lastModified.actor") == "me"
    assert value_at(None, "owners") is None


def test_filters_while_from_is_after_to_say_so_in_the_status(explorer: HistoryExplorer) -> None:
    explorer.start_time.value = datetime(2030, 1, 1, tzinfo=UTC)
    explorer.end_time.value = datetime(2020, 1, 1, tzinfo=UTC)
    assert "is after To" in explorer.status.value
    explorer.status.value = ""
    explorer.urn_text.value = "orders"  # raised out of the observer before
    assert "✖" in explorer.status.value and "is after To" in explorer.status.value
    explorer.status.value = ""
    explorer.aspect.value = "globalTags"
    assert "is after To" in explorer.status.value
    # The widget stays usable: once the range is right the filters apply.
    explorer.end_time.value = None
    explorer.start_time.value = None
    explorer.wait()
    urns = set(explorer.events["urn"].to_pylist())
    assert urns == {mk.make_dataset_urn("hive", "sales.orders")}
    assert set(explorer.events["aspect"].to_pylist()) == {"globalTags"}
