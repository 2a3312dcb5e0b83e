"""A path of the lake that is no Capture archive, named after a later window than the hub's
current file, must not move the local tail past that file."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

import metaverse_kit as mk

URN = mk.make_dataset_urn("hive", "db.orders")
# Generous: the test machine may be busy.
ARRIVAL_TIMEOUT = 30.0


def _broken_link(current: Path) -> Path:
    stray = current.with_name("59.avro")
    stray.symlink_to(stray.with_name("nothing-here"))
    return stray


def _not_avro(current: Path) -> Path:
    stray = current.with_name("59.avro")
    stray.write_bytes(b"a note someone saved with a Capture name")
    return stray


def _damaged_header(current: Path) -> Path:
    stray = current.with_name("59.avro")
    stray.write_bytes(current.read_bytes()[:20])  # the magic, then a cut header
    return stray


def _far_future(current: Path) -> Path:
    # <partition>/<YYYY>/<MM>/<DD>/<HH>/<mm>/<ss>.avro
    stray = current.parents[5] / "2099" / "01" / "01" / "00" / "00" / "00.avro"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"a note someone saved with a Capture name")
    return stray


@pytest.mark.parametrize("start", ["latest", "earliest"])
@pytest.mark.parametrize(
    "make",
    [_broken_link, _not_avro, _damaged_header, _far_future],
    ids=["broken-link", "not-avro", "damaged-header", "far-future-not-avro"],
)
def test_a_stray_path_named_later_does_not_hide_the_events_of_the_current_file(
    workspace: mk.Workspace, start: str, make: Callable[[Path], Path]
) -> None:
    """Its name moved the tail's window past the hub's current file, so nothing appended to
    that file was read again: the tail went silent for good, naming nothing more."""
    (first,) = workspace.emit(mk.mce(URN, [mk.aspects.status(False)]))
    stray = make(Path(first.location or ""))
    got: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with workspace.tail(start=start) as tail:
            if start == "earliest":
                deadline = time.monotonic() + ARRIVAL_TIMEOUT
                while not got and time.monotonic() < deadline:
                    got += [i for b in tail.read(0.5) for i in b.column("message_id").to_pylist()]
            assert got == ([first.message_id] if start == "earliest" else [])
            later = workspace.emit([mk.mce(URN, [mk.aspects.status(True)]) for _ in range(2)])
            assert {r.location for r in later} == {first.location}
            deadline = time.monotonic() + ARRIVAL_TIMEOUT
            while len(got) < len(later) + (start == "earliest"):
                if time.monotonic() > deadline:
                    pytest.fail(f"the events appended to {first.location} never came")
                got += [i for b in tail.read(0.5) for i in b.column("message_id").to_pylist()]
    assert got[-2:] == [r.message_id for r in later]
    assert all(
        issubclass(w.category, mk.CaptureFileWarning) and str(stray) in str(w.message)
        for w in caught
    )
