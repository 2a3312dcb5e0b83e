"""A quiet hub's lake: many Capture files of a few events, some empty, two codecs. Their
envelopes are read together; every row, file and skipped part must be what reading them one by
one gives (the fastavro path reads each file alone)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import metaverse_kit as mk
from metaverse_kit.capture import (
    append_events,
    capture_path,
    format_enqueued_time,
    read_header,
    read_varint,
)
from metaverse_kit.events.codec import content_type_for, encode_body
from tests.history.conftest import CountingLake, mce_versions

START = "2026-03-02T08:00:00Z"


def _lake(workspace: mk.Workspace, files: int) -> Path:
    from datetime import datetime, timedelta

    definition = mce_versions()[0]
    schema_id = workspace.registry.register_schema(  # type: ignore[attr-defined]
        workspace.schema_group, definition
    ).id
    root = Path(workspace.path or ".") / "lake"
    start = datetime.fromisoformat(START)
    sequence = 0
    for i in range(files):
        when = start + timedelta(minutes=5 * (i // 2))
        path = root / capture_path("ns", "hub", str(i % 2), when)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = None
        # One to three blocks of one or two events; every fifth file empty, as Capture writes.
        for block in range(0 if i % 5 == 4 else 1 + i % 3):
            records = []
            for _ in range(1 + (i + block) % 2):
                urn = mk.make_dataset_urn("hive", f"db.t{sequence % 7}")
                event = mk.mce(urn, [mk.aspects.global_tags([f"T{sequence}"])])
                records.append(
                    {
                        "SequenceNumber": sequence,
                        "Offset": str(sequence),
                        "EnqueuedTimeUtc": format_enqueued_time(when),
                        "SystemProperties": {
                            "content-type": content_type_for(schema_id),
                            "message-id": f"m{sequence}",
                            "x-opt-enqueued-time": int(when.timestamp() * 1000) + sequence,
                        },
                        "Properties": {},
                        "Body": encode_body(event, definition),
                    }
                )
                sequence += 1
            data = append_events(data, records, codec="deflate" if i % 3 else "null")
        path.write_bytes(data if data is not None else append_events(None, []))
    return root


def _same(a: pa.Table, b: pa.Table) -> None:
    assert a.schema == b.schema
    for name in a.column_names:
        assert a[name].equals(b[name]), name


def _one_more_record(data: bytes) -> bytes:
    """The first block says it holds one record more than it does; its framing stays whole."""
    _, _, start = read_header(data)
    count, at = read_varint(data, start)
    assert count < 63  # one zigzag byte either way
    return data[:start] + bytes([(count + 1) * 2]) + data[at:]


def test_many_small_files_replay_as_they_do_one_by_one(workspace: mk.Workspace) -> None:
    root = _lake(workspace, 60)
    assert len(list(root.rglob("*.avro"))) == 60
    auto = mk.replay_capture(root, registry=workspace.registry, cache=False)
    alone = mk.replay_capture(root, registry=workspace.registry, cache=False, decoder="fastavro")
    _same(auto, alone)
    assert auto.num_rows > 60 and auto["decode_error"].null_count == auto.num_rows
    assert len(set(auto["capture_file"].to_pylist())) == 48  # the empty ones hold no row


@pytest.mark.parametrize("on_bad_file", ["skip", "raise"])
def test_a_small_file_that_does_not_decode_is_named_among_the_others(
    workspace: mk.Workspace, on_bad_file: str
) -> None:
    root = _lake(workspace, 20)
    victim = sorted(root.rglob("*.avro"))[5]
    victim.write_bytes(_one_more_record(victim.read_bytes()))

    def replay(decoder: str) -> pa.Table | str:
        try:
            if on_bad_file == "raise":
                return mk.replay_capture(
                    root, registry=workspace.registry, cache=False, decoder=decoder
                )
            with pytest.warns(mk.CaptureFileWarning, match="1 damaged part of 1 Capture file"):
                return mk.replay_capture(
                    root,
                    registry=workspace.registry,
                    cache=False,
                    decoder=decoder,
                    on_bad_file="skip",
                )
        except mk.CaptureFileError as exc:
            return str(exc)

    auto, alone = replay("auto"), replay("fastavro")
    if on_bad_file == "raise":
        assert isinstance(auto, str) and str(victim) in auto and auto == alone
        return
    assert isinstance(auto, pa.Table) and isinstance(alone, pa.Table)
    assert [p.path for p in mk.skipped_files(auto)] == [str(victim)]
    assert auto.num_rows == alone.num_rows
    assert auto["message_id"].to_pylist() == alone["message_id"].to_pylist()


def test_many_small_files_give_the_rows_each_file_gives_alone(workspace: mk.Workspace) -> None:
    """A group of many small files is built as one batch and cut file by file: every row keeps
    its own file's path, partition and decode error (replayed alone, a file is its own group)."""
    from datetime import datetime, timedelta

    root = _lake(workspace, 40)
    # A file whose second body is junk: its error must stay on its row.
    schema_id = workspace.registry.register_schema(  # type: ignore[attr-defined]
        workspace.schema_group, mce_versions()[0]
    ).id
    when = datetime.fromisoformat(START) + timedelta(minutes=30)
    junk = root / capture_path("ns", "hub", "1", when + timedelta(seconds=1))
    records = []
    for k, body in enumerate(
        [
            encode_body(
                mk.mce(mk.make_dataset_urn("hive", "db.ok"), [mk.aspects.global_tags(["T"])]),
                mce_versions()[0],
            ),
            b"\xff\xff\xff",
        ]
    ):
        records.append(
            {
                "SequenceNumber": 1000 + k,
                "Offset": str(1000 + k),
                "EnqueuedTimeUtc": format_enqueued_time(when),
                "SystemProperties": {
                    "content-type": content_type_for(schema_id),
                    "message-id": f"junk{k}",
                    "x-opt-enqueued-time": int(when.timestamp() * 1000) + k,
                },
                "Properties": {},
                "Body": body,
            }
        )
    junk.parent.mkdir(parents=True, exist_ok=True)
    junk.write_bytes(append_events(None, records))
    table = mk.replay_capture(root, registry=workspace.registry, cache=False)
    files = list(dict.fromkeys(table["capture_file"].to_pylist()))
    assert str(junk) in files and len(files) > 20
    errors = dict(
        zip(table["message_id"].to_pylist(), table["decode_error"].to_pylist(), strict=True)
    )
    assert errors["junk0"] is None and "does not decode" in (errors["junk1"] or "")
    alone = pa.concat_tables(
        mk.replay_capture([path], registry=workspace.registry, cache=False) for path in files
    )
    _same(table, alone)
    partitions = [Path(p).parts[-7] for p in table["capture_file"].to_pylist()]
    assert table["partition"].to_pylist() == partitions


def test_a_replay_of_many_small_files_keeps_a_batch_per_group_not_per_file(
    workspace: mk.Workspace,
) -> None:
    """A batch of DataHub's columns costs ~10 KB to hold whatever its rows: files kept whole
    are one slice of their group's batch; a time range cutting through a group still keeps
    exactly its rows."""
    from datetime import datetime, timedelta

    root = _lake(workspace, 60)
    table = mk.replay_capture(root, registry=workspace.registry, cache=False)
    assert len(set(table["capture_file"].to_pylist())) == 48
    assert table.column(0).num_chunks < 5
    start = datetime.fromisoformat(START) + timedelta(minutes=20)
    end = start + timedelta(minutes=40)
    cut = mk.replay_capture(root, registry=workspace.registry, cache=False, start=start, end=end)
    times = table["enqueued_time"]
    keep = pc.and_(
        pc.greater_equal(times, pa.scalar(start, times.type)),
        pc.less_equal(times, pa.scalar(end, times.type)),
    )
    expected = table.filter(keep)
    assert 0 < cut.num_rows < table.num_rows
    _same(cut.replace_schema_metadata(None), expected.replace_schema_metadata(None))


# -- the warm cache of a quiet hub's lake -------------------------------------------------------


def _cache_files(cache: Path) -> tuple[list[Path], list[Path]]:
    """(per-file entries, group entries) in ``cache``."""
    return sorted(cache.rglob("*.arrow")), sorted(cache.rglob("*.group"))


def _counting(root: Path) -> CountingLake:
    from metaverse_kit.backends import open_lake

    return CountingLake(open_lake(root))  # type: ignore[arg-type]


def test_a_quiet_lake_is_cached_as_groups_and_replays_warm_from_them(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    """An entry read back is a batch of ~400 arrays whatever its rows (~260 KB of structure):
    files decoded together are kept as one group entry, and each file's entry says where its
    rows are in it. A warm replay reads no Capture file and gives the cold replay's table, in
    a few chunks."""
    root = _lake(workspace, 60)
    cache = tmp_path / "cache"
    lake = _counting(root)
    cold = mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    assert len(lake.opened) == 60
    entries, groups = _cache_files(cache)
    assert len(entries) == 60 and 1 <= len(groups) <= 2
    # A file's entry is its header alone: its rows are in the group's, or it has none (the
    # twelve empty files: a batch of no rows is still ~37 KB of IPC message).
    assert max(p.stat().st_size for p in entries) < 4096
    assert sum(p.stat().st_size for p in groups) < 2 * cold.nbytes
    lake.opened.clear()
    warm = mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    assert lake.opened == []
    assert warm.equals(cold, check_metadata=True)
    assert warm.column(0).num_chunks < 5
    _same(warm, mk.replay_capture(root, registry=workspace.registry, cache=False))
    # The stream gives each file its own rows from the group, with its own file's path.
    for batch in mk.replay_batches(lake, registry=workspace.registry, cache=cache):
        assert set(batch["capture_file"].to_pylist()) <= {str(p) for p in root.rglob("*.avro")}
        assert len(set(batch["capture_file"].to_pylist())) == 1
    assert lake.opened == []


def test_a_changed_file_of_a_group_is_decoded_again_and_an_unused_group_goes(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    root = _lake(workspace, 30)
    cache = tmp_path / "cache"
    lake = _counting(root)
    mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    [first_group] = _cache_files(cache)[1]
    # One file touched: only it is read again; the others still come from the group.
    files = sorted(root.rglob("*.avro"))
    touched = next(p for p in files if p.stat().st_size > 300)
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    lake.opened.clear()
    again = mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    assert lake.opened == [str(touched)]
    _same(again, mk.replay_capture(root, registry=workspace.registry, cache=False))
    assert first_group.exists()
    # Every file touched: all are decoded again, into a new group; the old one is deleted.
    for p in files:
        stat = p.stat()
        os.utime(p, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    lake.opened.clear()
    mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    assert len(lake.opened) == 30
    groups = _cache_files(cache)[1]
    assert first_group not in groups and len(groups) == 1


@pytest.mark.parametrize("damage", ["deleted", "torn", "foreign"])
def test_a_missing_or_damaged_group_entry_is_a_miss(
    workspace: mk.Workspace, tmp_path: Path, damage: str
) -> None:
    root = _lake(workspace, 30)
    cache = tmp_path / "cache"
    cold = mk.replay_capture(root, registry=workspace.registry, cache=cache)
    [group] = _cache_files(cache)[1]
    if damage == "deleted":
        group.unlink()
    elif damage == "torn":
        group.write_bytes(group.read_bytes()[:-100])
    else:
        group.write_bytes(b"ARROW1 not ours")
    lake = _counting(root)
    warm = mk.replay_capture(lake, registry=workspace.registry, cache=cache)
    assert warm.equals(cold, check_metadata=True)
    assert len(lake.opened) == 24  # every file with events pointed into it
    lake.opened.clear()
    assert mk.replay_capture(lake, registry=workspace.registry, cache=cache).equals(cold)
    assert lake.opened == []


def test_a_damaged_file_of_a_group_is_remembered_as_skipped(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    root = _lake(workspace, 30)
    victim = sorted(root.rglob("*.avro"))[5]
    victim.write_bytes(_one_more_record(victim.read_bytes()))
    cache = tmp_path / "cache"
    with pytest.warns(mk.CaptureFileWarning):
        cold = mk.replay_capture(root, registry=workspace.registry, cache=cache, on_bad_file="skip")
    assert len(_cache_files(cache)[1]) == 1
    lake = _counting(root)
    with pytest.warns(mk.CaptureFileWarning, match="1 damaged part of 1 Capture file"):
        warm = mk.replay_capture(lake, registry=workspace.registry, cache=cache, on_bad_file="skip")
    assert lake.opened == []
    assert warm.equals(cold, check_metadata=True)
    with pytest.raises(mk.CaptureFileError, match=str(victim)):
        mk.replay_capture(lake, registry=workspace.registry, cache=cache)
