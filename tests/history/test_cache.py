"""The warm replay cache: same answers as a cold replay, refreshed when a file changes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import metaverse_kit as mk
from metaverse_kit.history.cache import default_cache_dir
from tests.conftest import SimClock


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the per-user replay cache of these tests in their temporary folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))


def _history(ws: mk.Workspace, clock: SimClock) -> None:
    for day in range(2):
        ws.emit(
            [
                mk.mce(
                    mk.make_dataset_urn("hive", f"db.t{i}"),
                    [mk.aspects.ownership([f"u{day}"]), mk.aspects.global_tags(["PII"])],
                )
                for i in range(8)
            ]
        )
        clock.advance(days=1)


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.arrow")) if folder.exists() else []


def test_warm_replay_equals_cold_and_reads_no_capture_file(
    workspace: mk.Workspace, counting_lake: Any, clock: SimClock, tmp_path: Path
) -> None:
    _history(workspace, clock)
    cache = tmp_path / "cache"
    lake = counting_lake
    cold = mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    files = len(lake.opened)
    assert files > 1 and len(_entries(cache)) == files
    lake.opened.clear()
    warm = mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    assert lake.opened == []
    assert warm.equals(cold, check_metadata=True)
    uncached = mk.replay_capture(lake, registry=workspace.registry, cache=False)
    assert uncached.equals(cold, check_metadata=True)
    # Filters apply to cached files as to decoded ones.
    some = mk.replay_capture(lake, registry=workspace.registry, cache=cache, partitions=["2"])
    assert some.num_rows == sum(p == "2" for p in cold["partition"].to_pylist()) > 0


def test_a_changed_file_is_decoded_again(
    workspace: mk.Workspace, counting_lake: Any, clock: SimClock, tmp_path: Path
) -> None:
    _history(workspace, clock)
    cache = tmp_path / "cache"
    lake = counting_lake
    before = mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    # Appending to the current window's file rewrites it (new size and modification time).
    clock.advance(days=-1)
    receipt = workspace.emit(mk.example_mce())[0]
    lake.opened.clear()
    after = mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    assert lake.opened == [receipt.location]
    assert after.num_rows == before.num_rows + 1
    assert receipt.message_id in after["message_id"].to_pylist()
    # A touched file (same size, new modification time) is read again too.
    target = Path(receipt.location)
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    lake.opened.clear()
    again = mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    assert lake.opened == [receipt.location]
    assert again.equals(after)


def test_cache_false_writes_nothing_and_the_default_is_per_user(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    _history(workspace, clock)
    user = default_cache_dir()
    assert str(user).startswith(os.environ["XDG_CACHE_HOME"])
    mk.replay_capture(workspace.lake, registry=workspace.registry, cache=False)
    assert _entries(user) == []
    mk.replay_capture(workspace.lake, registry=workspace.registry)
    assert len(_entries(user)) == len(workspace.lake.list_files())


def test_a_corrupt_entry_is_ignored_and_rebuilt(
    workspace: mk.Workspace, counting_lake: Any, clock: SimClock, tmp_path: Path
) -> None:
    _history(workspace, clock)
    cache = tmp_path / "cache"
    cold = mk.replay_capture(workspace.lake, registry=workspace.registry, cache=cache)
    entries = _entries(cache)
    entries[0].write_bytes(b"ARROW1 torn")
    entries[1].write_bytes(entries[1].read_bytes()[:-20])
    lake = counting_lake
    warm = mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    assert warm.equals(cold)
    assert len(lake.opened) == 2
    lake.opened.clear()
    assert mk.replay_capture(lake, registry=workspace.registry, cache=cache).equals(cold)
    assert lake.opened == []


def test_entries_follow_the_registry_and_the_payload_schema(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    workspace.emit(mk.example_mce())
    cache = tmp_path / "cache"
    raw = mk.replay_capture(workspace.lake, cache=cache)  # no registry: bodies stay raw
    assert raw["decode_error"][0].as_py().startswith("unknown schema id")
    decoded = mk.replay_capture(workspace.lake, registry=workspace.registry, cache=cache)
    assert decoded["decode_error"][0].as_py() is None
    assert decoded["proposedSnapshot"][0].as_py() is not None
    envelope = mk.replay_capture(
        workspace.lake, registry=workspace.registry, cache=cache, schema=False
    )
    assert "proposedSnapshot" not in envelope.column_names
    assert envelope.num_rows == 1


def test_cache_option_is_checked(workspace: mk.Workspace) -> None:
    with pytest.raises(mk.ConfigurationError, match="cache="):
        mk.replay_capture(workspace.lake, cache=3)  # type: ignore[arg-type]


def test_cache_entries_are_no_larger_than_their_rows(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    """All-null union branches must not each carry a copy of pa.nulls' shared zero buffer."""
    workspace.emit(
        [
            mk.mce(
                mk.make_dataset_urn("hive", f"db.t{i}"),
                [mk.aspects.ownership([f"u{i}"]), mk.aspects.global_tags(["PII", "Raw"])],
            )
            for i in range(400)
        ]
    )
    cache = tmp_path / "cache"
    table = mk.replay_capture(workspace.lake, registry=workspace.registry, cache=cache)
    entries = _entries(cache)
    on_disk = sum(p.stat().st_size for p in entries)
    # Uncompressed IPC: the buffers, plus the schema (~400 fields, ~65 KB) and footer per entry.
    assert on_disk <= 1.2 * table.nbytes + 70_000 * len(entries), (on_disk, table.nbytes)
