"""The warm replay cache: same answers as a cold replay, refreshed when a file changes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.history.cache import (
    FORMAT_VERSION,
    _header,
    _read_header,
    default_cache_dir,
    remove_stale_entries,
)
from tests.conftest import SimClock, python_as_other_user


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


def _wide_history(ws: mk.Workspace) -> None:
    """400 MCEs of two aspects each: most union branches of a row are all null."""
    ws.emit(
        [
            mk.mce(
                mk.make_dataset_urn("hive", f"db.t{i}"),
                [mk.aspects.ownership([f"u{i}"]), mk.aspects.global_tags(["PII", "Raw"])],
            )
            for i in range(400)
        ]
    )


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


def test_a_file_replaced_by_other_bytes_of_its_size_and_time_is_decoded_again(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    """``cp -p``, ``rsync -t`` or a restore keep a file's size and modification time: the warm
    replay answered with the old bytes' tag from the cache."""
    urn = mk.make_dataset_urn("hive", "db.a")
    workspace.emit(mk.mce(urn, [mk.aspects.global_tags(["AAAA"])]))
    cache = tmp_path / "cache"
    lake = workspace.path / "lake"
    mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    [target] = lake.rglob("*.avro")
    stat, data = target.stat(), target.read_bytes()
    assert data.count(b"AAAA") == 1
    other = target.with_name(".other.avro")
    other.write_bytes(data.replace(b"AAAA", b"BBBB"))
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(other, target)
    warm = mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    cold = mk.replay_capture(lake, registry=workspace.registry, cache=False)
    assert warm.equals(cold)
    assert "BBBB" in str(warm["proposedSnapshot"].to_pylist())


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
    """All-null union branches must not each carry a copy of pa.nulls' shared zero buffer,
    and are left out: union branches and aspects no event of a file uses are about half of its
    IPC bytes."""
    _wide_history(workspace)
    cache = tmp_path / "cache"
    table = mk.replay_capture(workspace.lake, registry=workspace.registry, cache=cache)
    entries = _entries(cache)
    on_disk = sum(p.stat().st_size for p in entries)
    # Uncompressed IPC: the buffers, plus the schema (~400 fields, ~65 KB) and footer per entry.
    assert on_disk <= 1.2 * table.nbytes + 70_000 * len(entries), (on_disk, table.nbytes)
    whole = sum(len(b.serialize()) for b in table.to_batches())
    assert on_disk < 0.6 * whole, (on_disk, whole)


def test_an_entry_whose_list_of_all_null_branches_does_not_fit_is_a_miss(
    workspace: mk.Workspace, counting_lake: Any, tmp_path: Path
) -> None:
    _wide_history(workspace)
    cache = tmp_path / "cache"
    cold = mk.replay_capture(workspace.lake, registry=workspace.registry, cache=cache)
    entries = _entries(cache)
    data = entries[0].read_bytes()
    info, start = _read_header(pa.py_buffer(data))
    assert isinstance(info, dict) and len(info["nulls"]) > 10
    info["nulls"] = info["nulls"][1:]
    entries[0].write_bytes(_header(info) + data[start:])
    lake = counting_lake
    warm = mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    assert warm.equals(cold, check_metadata=True)
    assert len(lake.opened) == 1


def test_an_entry_holds_no_schema_message(workspace: mk.Workspace, tmp_path: Path) -> None:
    """The built-in MCE's Arrow schema message (31 KB) would be nearly half
    of a small file's entry: a quiet hub writes thousands of files of an event or two."""
    workspace.emit(mk.example_mce())
    cache = tmp_path / "cache"
    cold = mk.replay_capture(workspace.lake, registry=workspace.registry, cache=cache)
    [entry] = _entries(cache)
    # The JSON header (under 2 KB) and the batch's own message, nothing else.
    batch = cold.to_batches()[0]
    assert entry.stat().st_size <= len(batch.serialize()) + 2048
    warm = mk.replay_capture(workspace.lake, registry=workspace.registry, cache=cache)
    assert warm.equals(cold, check_metadata=True)


def test_leftovers_of_a_killed_replay_are_removed_and_nothing_else(
    workspace: mk.Workspace, clock: SimClock, tmp_path: Path
) -> None:
    import random
    import signal
    import subprocess
    import sys
    import time

    from metaverse_kit.history import _decoder
    from metaverse_kit.history.cache import remove_leftovers

    for i in range(6):
        workspace.emit(mk.mce(mk.make_dataset_urn("hive", f"t{i}"), [mk.aspects.status(False)]))
        clock.advance(minutes=10)
    folder = Path(workspace.path or ".") / "cache" / "replay"
    shm = tmp_path / "shm"
    shm.mkdir()
    # A replay killed at random points while it fills the cache.
    code = (
        "import metaverse_kit as mk, sys\n"
        "ws = mk.connect(path=sys.argv[1])\n"
        "while True:\n"
        "    ws.replay(cache=sys.argv[2], progress=False)\n"
        "    import shutil; shutil.rmtree(sys.argv[2], ignore_errors=True)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(workspace.path), str(folder)])
    deadline = time.monotonic() + 60
    while not folder.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.3))
    child.send_signal(signal.SIGKILL)
    child.wait()
    # What such a process leaves: a half-written entry and a native read's temporary copy.
    (folder / "ab").mkdir(parents=True, exist_ok=True)
    dead = folder / "ab" / f".{'a' * 64}.{child.pid}.k3j2x9q1.tmp"
    dead.write_bytes(b"half an entry")
    alive = folder / "ab" / f".{'b' * 64}.{os.getpid()}.z8y7x6w5.tmp"
    alive.write_bytes(b"being written right now")
    entry = folder / "ab" / f"{'c' * 64}.arrow"
    entry.write_bytes(b"a finished entry")
    read_dead = shm / f"mk-replay-{child.pid}-abcd1234.avro"
    read_dead.write_bytes(b"Obj\x01")
    read_alive = shm / f"mk-replay-{os.getpid()}-efgh5678.avro"
    read_alive.write_bytes(b"Obj\x01")
    stranger = shm / "someone-elses.avro"
    stranger.write_bytes(b"not ours")
    # A native read of a local file in place goes through a link named as a copy is.
    lake_file = Path(workspace.lake.list_files()[0].path)
    link_dead = shm / f"mk-replay-{child.pid}-ijkl9012.avro"
    link_dead.symlink_to(lake_file)
    removed = remove_leftovers(folder, temp_folders=[shm, *_decoder.temp_folders()])
    assert dead in removed and read_dead in removed
    assert link_dead in removed and not link_dead.is_symlink() and lake_file.exists()
    assert not dead.exists() and not read_dead.exists()
    assert alive.exists() and entry.exists() and read_alive.exists() and stranger.exists()
    assert list(folder.rglob(f"*.{child.pid}.*.tmp")) == []
    for temp in _decoder.temp_folders():
        assert list(Path(temp).glob(f"mk-replay-{child.pid}-*")) == []
    # The cache still serves replays afterwards.
    assert workspace.replay(cache=folder).num_rows == workspace.replay(cache=False).num_rows


def test_opening_a_workspace_removes_the_replay_leftovers_of_dead_processes(
    workspace: mk.Workspace,
) -> None:
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True
    )
    dead_pid = int(gone.stdout)  # a process that has exited
    folder = Path(workspace.path or ".") / "cache" / "replay" / "ab"
    folder.mkdir(parents=True)
    dead = folder / f".{'a' * 64}.{dead_pid}.k3j2x9q1.tmp"
    dead.write_bytes(b"half an entry")
    alive = folder / f".{'b' * 64}.{os.getpid()}.z8y7x6w5.tmp"
    alive.write_bytes(b"being written right now")
    # The format stamp's temporary files, at the cache folder's top (see remove_stale_entries).
    dead_stamp = folder.parent / f".FORMAT.{dead_pid}.p0q9r8s7.tmp"
    dead_stamp.write_bytes(b"6")
    alive_stamp = folder.parent / f".FORMAT.{os.getpid()}.a1b2c3d4.tmp"
    alive_stamp.write_bytes(b"6")
    mk.connect(path=workspace.path).close()
    assert not dead.exists() and alive.exists()
    assert not dead_stamp.exists() and alive_stamp.exists()


@pytest.fixture
def older(workspace: mk.Workspace, tmp_path: Path) -> Path:
    """An entry of the format before this one in the cache folder ``tmp_path / "cache"``, and
    an event in ``workspace`` to replay."""
    workspace.emit(mk.example_mce())
    older = tmp_path / "cache" / "ab" / ("ab" + "0" * 62 + ".arrow")
    older.parent.mkdir(parents=True)
    older.write_bytes(_header({"format": FORMAT_VERSION - 1, "rows": 1}) + b"\0" * 64)
    return older


def test_entries_of_other_formats_are_removed_once_on_the_first_write(
    workspace: mk.Workspace, older: Path
) -> None:
    """An upgrade must not leave the old format's entries on disk for good."""
    sub = older.parent
    cache = sub.parent
    older_group = sub / ("ab" + "1" * 62 + ".group")
    older_group.write_bytes(_header({"format": 3}))
    headerless = sub / ("ab" + "2" * 62 + ".arrow")  # formats before 4: a bare Arrow stream
    headerless.write_bytes(b"\xff\xff\xff\xff" + b"\0" * 60)
    keep = [sub / "notes.txt", cache / "zz" / ("ab" + "3" * 62 + ".arrow"), cache / "README"]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not ours")
    cold = mk.replay_capture(workspace.lake, registry=workspace.registry, cache=cache)
    assert not older.exists() and not older_group.exists() and not headerless.exists()
    assert all(path.exists() for path in keep)
    assert (cache / "FORMAT").read_text().strip() == str(FORMAT_VERSION)
    [entry] = [p for p in _entries(cache) if p not in keep]  # this format's, written and kept
    warm = mk.replay_capture(workspace.lake, registry=workspace.registry, cache=cache)
    assert warm.equals(cold, check_metadata=True)
    # Swept once per format: the stamp stops a second sweep (one small read per cache).
    older.write_bytes(_header({"format": FORMAT_VERSION - 1}))
    assert remove_stale_entries(cache) == []
    assert older.exists()
    (cache / "FORMAT").write_text("5\n")
    assert remove_stale_entries(cache) == [older]
    assert entry.exists()


def test_a_cache_folder_the_user_cannot_write_is_read_and_left_as_it_is(
    workspace: mk.Workspace, older: Path
) -> None:
    """A shared or read-only cache: no sweep, no stamp, no error; the replay still works."""
    import json

    sub = older.parent
    cache = sub.parent
    for folder in (sub, cache):
        folder.chmod(0o555)
    code = (
        "import json, sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "import metaverse_kit as mk\n"
        "from metaverse_kit.backends.local.lake import LocalLake\n"
        "from metaverse_kit.backends.local.registry import LocalSchemaRegistry\n"
        "from metaverse_kit.history.cache import remove_stale_entries\n"
        "lake, registry, cache = sys.argv[1:]\n"
        "table = mk.replay_capture(LocalLake(lake), registry=LocalSchemaRegistry(registry),\n"
        "                          cache=cache)\n"
        "removed = [str(p) for p in remove_stale_entries(cache)]\n"
        "try:\n"
        "    open(cache + '/probe', 'w')\n"
        "except PermissionError:\n"
        "    print(json.dumps([table.num_rows, removed]))\n"
    )
    lake, registry = workspace.lake, workspace.registry
    done = python_as_other_user(code, str(lake.root), str(registry.root), str(cache))
    for folder in (sub, cache):
        folder.chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [1, []]
    assert older.exists() and not (cache / "FORMAT").exists()
    assert [p.name for p in cache.rglob("*")] == ["ab", older.name]


def test_an_entry_is_not_read_from_a_group_entry_another_process_wrote_again_meanwhile(
    workspace: mk.Workspace, clock: SimClock, tmp_path: Path
) -> None:
    """Two processes decoding the same small files together, one without the registry (raw
    bodies) and one with it, name their group entries alike: the first one's entries, written
    after the second rewrote the group, pointed at the second one's rows, and a raw replay
    then answered with decoded bodies."""
    from metaverse_kit.history.cache import ReplayCache

    for i in range(12):
        workspace.emit(mk.mce(mk.make_dataset_urn("hive", f"db.t{i}"), [mk.aspects.status(False)]))
        clock.advance(minutes=10)
    lake, registry = workspace.lake, workspace.registry
    files = lake.list_files()

    def members(table: pa.Table) -> tuple[list[tuple[Any, pa.RecordBatch]], pa.RecordBatch]:
        """The rows of each file, as slices of one batch (what a decoded group is)."""
        per_file = [table.filter(pa.compute.equal(table["capture_file"], f.path)) for f in files]
        group = pa.concat_tables(per_file).combine_chunks().to_batches()[0]
        out, offset = [], 0
        for f, rows in zip(files, per_file, strict=True):
            out.append((f, group.slice(offset, rows.num_rows)))
            offset += rows.num_rows
        return out, group

    raw = mk.replay_capture(lake, cache=False)
    decoded = mk.replay_capture(lake, registry=registry, cache=False)
    assert raw.schema == decoded.schema and raw["proposedSnapshot"].null_count == raw.num_rows
    raw_members, raw_group = members(raw)
    decoded_members, decoded_group = members(decoded)

    def definition(schema_id: str) -> str | None:
        return registry.get_schema(schema_id).definition

    other_process = ReplayCache(tmp_path / "cache")
    interleaved: list[bool] = []

    def unknown_meanwhile(schema_id: str) -> str | None:
        # The first writer has written its group entry and now writes the entries of its
        # files; the other process writes the same group, and its entries, right then.
        if not interleaved:
            interleaved.append(True)
            other_process.put_group(decoded_members, decoded_group, "fp", definition)
        return None

    ReplayCache(tmp_path / "cache").put_group(raw_members, raw_group, "fp", unknown_meanwhile)
    assert interleaved
    reader = ReplayCache(tmp_path / "cache")
    for f, rows in raw_members:
        hit = reader.get(f, "fp", raw.schema, lambda schema_id: None)
        assert hit is None or hit.batch.equals(rows), f.path


def test_a_cache_folder_another_user_cannot_list_does_not_stop_opening_the_workspace(
    workspace: mk.Workspace,
) -> None:
    """A team's workspace holding a member's cache subfolder the others cannot list: opening
    the workspace (which removes dead processes' leftovers) raised PermissionError."""
    import json
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True
    )
    workspace.emit(mk.example_mce())
    cache = Path(workspace.path or ".") / "cache" / "replay"
    workspace.replay(cache=cache, progress=False)
    for path in [workspace.path, *Path(workspace.path or ".").rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)  # the team's workspace
    closed = cache / "zz"  # a member's, with a leftover the others cannot see
    closed.mkdir()
    (closed / f".{'a' * 64}.{int(gone.stdout)}.k3j2x9q1.tmp").write_bytes(b"half")
    open_ = cache / "ab"
    open_.mkdir(exist_ok=True)
    open_.chmod(0o777)
    leftover = open_ / f".{'b' * 64}.{int(gone.stdout)}.z8y7x6w5.tmp"
    leftover.write_bytes(b"half an entry")
    leftover.chmod(0o666)
    closed.chmod(0)  # as_other_user keeps root's uid: the owner's bits must refuse too
    code = (
        "import json, sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "import metaverse_kit as mk\n"
        "with mk.connect(path=sys.argv[1]) as ws:\n"
        "    print(json.dumps(ws.replay(progress=False).num_rows))\n"
    )
    try:
        done = python_as_other_user(code, str(workspace.path))
    finally:
        closed.chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == 1
    assert not leftover.exists()
