"""HistoryExplorer(ws, live=True): what the hub receives joins the history shown, as it comes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pyarrow.compute as pc
import pytest

import metaverse_kit as mk
from metaverse_kit.demo import emit_sample_history
from metaverse_kit.widgets import HistoryExplorer

ARRIVAL_TIMEOUT = 60.0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {ARRIVAL_TIMEOUT:.0f} s")
        time.sleep(0.05)


def test_a_live_explorer_shows_an_emit_at_once(workspace: mk.Workspace) -> None:
    emit_sample_history(workspace)
    threads = set(threading.enumerate())
    explorer = HistoryExplorer(workspace, live=True, page_size=500)
    try:
        box = explorer.widget  # built as a notebook shows it; the replay starts
        explorer.wait()
        before = explorer.events.num_rows
        assert set(explorer.events.column("source").to_pylist()) == {"captured"}
        urn = mk.make_dataset_urn("hive", "sales.live")
        (receipt,) = workspace.emit(mk.mce(urn, [mk.aspects.global_tags(["Fresh"])]))
        # No reload: the feed's thread adds the row and refreshes the widgets' values.
        wait_for(lambda: explorer.events.num_rows == before + 1, "the emitted event showing")
        row = explorer.events.filter(pc.equal(explorer.events["urn"], urn)).to_pylist()[0]
        assert row["message_id"] == receipt.message_id
        assert row["source"] == "captured"  # the local hub writes Capture at once
        assert urn in explorer.events_html.value or explorer.events_pager.pages > 1
        assert "Source" in explorer.events_html.value
        assert "live: 1 aspect writes received" in explorer.live_status.value
        assert explorer.live_status in box.children[2].children
        # A reload replays the lake, which now has the event: it is shown once, not twice.
        explorer.refresh(block=True)
        assert explorer.events.num_rows == before + 1
    finally:
        explorer.close()
    assert not explorer.live.running
    assert set(threading.enumerate()) == threads


def test_without_live_nothing_follows_the_hub(workspace: mk.Workspace) -> None:
    threads = set(threading.enumerate())
    explorer = HistoryExplorer(workspace)
    explorer.refresh(block=True)
    assert explorer.live is None
    assert "Source" not in explorer.events_html.value
    explorer.close()
    assert set(threading.enumerate()) == threads


def test_the_feeds_warnings_follow_the_live_status(workspace: mk.Workspace) -> None:
    """A damaged Capture block the tail left out is a warning of the feed's thread, which no
    steward saw: the explorer shows it under its live status."""
    emit_sample_history(workspace)
    explorer = HistoryExplorer(workspace, live=True, page_size=500)
    try:
        explorer.widget  # noqa: B018  (built as a notebook shows it; the feed starts)
        explorer.wait()
        feed = explorer.live
        assert feed is not None and feed.on_change is not None
        feed.warnings.append(mk.CaptureFileWarning("lake/0/x.avro has damaged blocks <left out>"))
        feed.on_change()
        assert "⚠ lake/0/x.avro has damaged blocks &lt;left out&gt;" in explorer.live_status.value
    finally:
        explorer.close()
