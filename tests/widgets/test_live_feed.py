"""LiveFeed as a careless user or a damaged lake meets it: wrong options, damaged blocks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import metaverse_kit as mk
from metaverse_kit.capture import read_header
from metaverse_kit.widgets.live_feed import LiveFeed

ARRIVAL_TIMEOUT = 60.0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {ARRIVAL_TIMEOUT:.0f} s")
        time.sleep(0.05)


def test_a_damaged_block_is_a_warning_of_the_feed_and_it_goes_on(
    workspace: mk.Workspace,
) -> None:
    """The tail's warning, given in the feed's thread, went to a stderr no steward of the app
    reads (and, where warnings are errors, stopped the feed)."""
    receipts = workspace.emit(
        [
            mk.mce(mk.make_dataset_urn("hive", f"db.t{i}"), [mk.aspects.status(False)])
            for i in range(6)
        ]
    )
    damaged = Path(receipts[0].location or "")
    others = {r.message_id for r in receipts if r.location != receipts[0].location}
    data = bytearray(damaged.read_bytes())
    _, _, first = read_header(bytes(data), where=str(damaged))
    data[first + 8 : first + 14] = b"\xff" * 6  # inside a record: the framing stays whole
    damaged.write_bytes(bytes(data))
    changes = threading.Event()
    with LiveFeed(workspace, start="earliest", on_change=changes.set) as feed:
        wait_for(lambda: set(feed.rows["message_id"].to_pylist()) >= others, "the events")
        wait_for(lambda: bool(feed.warnings), "the warning")
        assert feed.error is None and feed.running
        [warning] = feed.warnings
        assert isinstance(warning, mk.CaptureFileWarning) and str(damaged) in str(warning)
        assert changes.is_set()
        urn = mk.make_dataset_urn("hive", "db.after")
        (after,) = workspace.emit(mk.mce(urn, [mk.aspects.status(True)]))
        wait_for(lambda: after.message_id in feed.rows["message_id"].to_pylist(), "a new event")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"recheck": "30"}, "recheck= is the seconds .* not '30'"),
        ({"recheck": 0}, "a number above 0; not 0"),
        ({"recheck": -5.0}, "not -5.0"),
        ({"recheck": float("nan")}, "not nan"),
        ({"recheck": True}, "not True"),
        ({"on_change": "refresh"}, "on_change= takes a function"),
    ],
)
def test_wrong_options_are_refused_before_a_thread_starts(
    workspace: mk.Workspace, options: dict[str, Any], message: str
) -> None:
    """A wrong recheck stopped the feed from its thread with a TypeError naming no option (or,
    0 and below, replayed the lake in a loop)."""
    threads = set(threading.enumerate())
    with pytest.raises(mk.ConfigurationError, match=message):
        LiveFeed(workspace, **options)
    assert set(threading.enumerate()) == threads


def test_a_warning_given_while_its_tail_opens_is_a_warning_of_the_feed(
    workspace: mk.Workspace,
) -> None:
    """The tail names a path of the lake it cannot read as it opens at "latest": that warning
    went to Python's warnings from the cell that made the feed (where warnings are errors, the
    feed did not open), never to feed.warnings, which the explorer and the app show."""
    urn = mk.make_dataset_urn("hive", "db.orders")
    (first,) = workspace.emit(mk.mce(urn, [mk.aspects.status(False)]))
    stray = Path(first.location or "").with_name("59.avro")
    stray.symlink_to(stray.with_name("nothing-here"))
    changes = threading.Event()
    with LiveFeed(workspace, on_change=changes.set) as feed:
        [warning] = feed.warnings
        assert isinstance(warning, mk.CaptureFileWarning) and str(stray) in str(warning)
        wait_for(changes.is_set, "the call of on_change for it")
        (after,) = workspace.emit(mk.mce(urn, [mk.aspects.status(True)]))
        wait_for(lambda: after.message_id in feed.rows["message_id"].to_pylist(), "a new event")
        assert feed.error is None and len(feed.warnings) == 1
