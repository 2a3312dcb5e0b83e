"""Damaged, stray, zero-byte and foreign files: raise naming file and offset, or skip and keep
every intact block (counted against what fastavro reads from the intact parts)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import fastavro
import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.capture import read_header, read_varint
from tests.conftest import SimClock, python_as_other_user

SIZES = [2, 3, 1, 4, 2]  # events per block: one block per emit, all in one Capture file


@dataclass(frozen=True)
class Layout:
    data: bytes
    header_end: int
    blocks: list[tuple[int, int]]  # (start, end) of each block, sync marker included


def _layout(data: bytes) -> Layout:
    _, _, pos = read_header(data)
    header_end, blocks = pos, []
    while pos < len(data):
        _, at = read_varint(data, pos)
        size, at = read_varint(data, at)
        blocks.append((pos, at + size + 16))
        pos = at + size + 16
    return Layout(data, header_end, blocks)


def _fastavro_count(layout: Layout, kept: list[int]) -> int:
    """What fastavro reads from the intact blocks, each read on its own behind the header."""
    header = layout.data[: layout.header_end]
    return sum(
        sum(1 for _ in fastavro.reader(io.BytesIO(header + layout.data[slice(*layout.blocks[i])])))
        for i in kept
    )


def _flip(data: bytes, at: int, bit: int = 0x01) -> bytes:
    out = bytearray(data)
    out[at] ^= bit
    return bytes(out)


def _count_plus_one(data: bytes, start: int) -> bytes:
    """A block whose record count says one more than it holds (its framing stays whole)."""
    count, at = read_varint(data, start)
    assert at == start + 1 and count < 60
    return data[:start] + bytes([(count + 1) * 2]) + data[at:]


def _foreign() -> bytes:
    buf = io.BytesIO()
    schema = {"type": "record", "name": "Other", "fields": [{"name": "a", "type": "int"}]}
    fastavro.writer(buf, schema, [{"a": 1}, {"a": 2}])
    return buf.getvalue()


# name -> (damage, blocks kept, offset of the first damaged part: a block index, "whole", None)
DAMAGE: dict[str, tuple[Callable[[Layout], bytes], list[int], int | str | None]] = {
    "truncated-in-header": (lambda x: x.data[:20], [], "whole"),
    "truncated-in-block-header": (lambda x: x.data[: x.blocks[2][0] + 1], [0, 1], 2),
    "truncated-in-block-data": (lambda x: x.data[: x.blocks[3][0] + 10], [0, 1, 2], 3),
    "truncated-in-sync-marker": (lambda x: x.data[: x.blocks[4][1] - 5], [0, 1, 2, 3], 4),
    "cut-at-a-block-boundary": (lambda x: x.data[: x.blocks[3][1]], [0, 1, 2, 3], None),
    "sync-marker-flipped": (lambda x: _flip(x.data, x.blocks[1][1] - 3), [0, 2, 3, 4], 1),
    "block-size-flipped": (lambda x: _flip(x.data, x.blocks[2][0] + 1, 0x10), [0, 1, 3, 4], 2),
    "record-count-wrong": (lambda x: _count_plus_one(x.data, x.blocks[3][0]), [0, 1, 2, 4], 3),
    "zero-byte": (lambda x: b"", [], None),
    "not-avro": (lambda x: b"PAR1 this is a parquet file, honestly", [], "whole"),
    "foreign-schema": (lambda x: _foreign(), [], "whole"),
}


@pytest.fixture
def one_file(workspace: mk.Workspace, clock: SimClock) -> Layout:
    urn = mk.make_dataset_urn("hive", "db.damaged")
    for i, n in enumerate(SIZES):
        workspace.emit([mk.mce(urn, [mk.aspects.global_tags([f"T{i}-{j}"])]) for j in range(n)])
        clock.advance(seconds=1)
    (f,) = workspace.lake.list_files()
    layout = _layout(workspace.lake.read_bytes(f))
    assert len(layout.blocks) == len(SIZES)
    return layout


def _place(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name / "ns" / "hub" / "0" / "2026" / "03" / "02" / "08" / "00" / "00.avro"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", list(DAMAGE))
def test_skip_keeps_every_intact_block_and_raise_names_file_and_offset(
    name: str, one_file: Layout, workspace: mk.Workspace, tmp_path: Path
) -> None:
    damage, kept, first = DAMAGE[name]
    path = _place(tmp_path, name, damage(one_file))
    expected = _fastavro_count(one_file, kept)
    assert expected == sum(SIZES[i] for i in kept)
    tables = []
    for decoder in ("auto", "fastavro"):
        if first is None:
            table = mk.replay_capture(
                path, registry=workspace.registry, on_bad_file="skip", decoder=decoder, cache=False
            )
        else:
            with pytest.warns(mk.CaptureFileWarning, match=r"damaged part"):
                table = mk.replay_capture(
                    path,
                    registry=workspace.registry,
                    on_bad_file="skip",
                    decoder=decoder,
                    cache=False,
                )
        tables.append(table)
    assert tables[0].equals(tables[1])
    table = tables[0]
    assert table.num_rows == expected
    assert table["decode_error"].null_count == expected
    skipped = mk.skipped_files(table)
    if first is None:
        assert skipped == []
        assert (
            mk.replay_capture(path, registry=workspace.registry, cache=False).num_rows == expected
        )
        return
    assert skipped and all(s.path == str(path) and s.events_kept == expected for s in skipped)
    if first == "whole":
        assert [s.offset for s in skipped] == [None]
        match = rf"{name}/.*00\.avro cannot be read as a whole: "
    else:
        offset = one_file.blocks[first][0]  # type: ignore[index]
        assert skipped[0].offset == offset
        match = rf"{name}/.*00\.avro cannot be read at byte {offset}: .*on_bad_file='skip'"
    with pytest.raises(mk.CaptureFileError, match=match):
        mk.replay_capture(path, registry=workspace.registry, cache=False)


def test_every_verb_and_the_cache_skip_the_same_way(
    one_file: Layout, workspace: mk.Workspace, tmp_path: Path
) -> None:
    lake_file = Path(workspace.lake.list_files()[0].path)
    lake_file.write_bytes(one_file.data[: one_file.blocks[3][0] + 10])  # truncated in block 3
    (lake_file.parent / "stray.avro").write_bytes(b"not an archive")
    (lake_file.parent / "empty.avro").write_bytes(b"")
    with pytest.raises(mk.CaptureFileError, match=r"stray\.avro cannot be read as a whole"):
        workspace.replay()
    with pytest.warns(mk.CaptureFileWarning, match=r"^2 damaged parts of 2 Capture files skipped"):
        cold = workspace.replay(on_bad_file="skip")
    assert cold.num_rows == sum(SIZES[:3])
    reasons = sorted((Path(s.path).name, s.offset is None) for s in mk.skipped_files(cold))
    assert reasons == [("00.avro", False), ("stray.avro", True)]
    # The cache remembers what it skipped: a warm replay says the same, and raise still raises.
    with pytest.warns(mk.CaptureFileWarning):
        warm = workspace.replay(on_bad_file="skip")
    assert warm.equals(cold) and mk.skipped_files(warm) == mk.skipped_files(cold)
    (lake_file.parent / "stray.avro").unlink()
    with pytest.raises(mk.CaptureFileError, match=r"00\.avro cannot be read at byte"):
        workspace.replay()
    # The stream, and progress per file.
    seen = []
    stream = workspace.replay_batches(on_bad_file="skip", on_file=seen.append, cache=False)
    assert len(stream.files) == 1  # the zero-byte file is an empty archive: not even listed
    with pytest.warns(mk.CaptureFileWarning):
        rows = sum(b.num_rows for b in stream)
    assert rows == cold.num_rows and stream.skipped_files == [
        s for s in mk.skipped_files(cold) if s.path == str(lake_file)
    ]
    assert [p.files_done for p in seen] == [1] and seen[-1].bytes_done == seen[-1].bytes_total
    assert [len(p.skipped) for p in seen] == [1]
    # The module-level verbs on a copy of the tree.
    copy = tmp_path / "copy"
    shutil.copytree(Path(workspace.path or ".") / "lake", copy)
    with pytest.warns(mk.CaptureFileWarning):
        other = mk.replay_batches(copy, registry=workspace.registry, on_bad_file="skip")
        assert sum(b.num_rows for b in other) == cold.num_rows


def test_the_command_line_skips_bad_files(
    one_file: Layout, workspace: mk.Workspace, tmp_path: Path
) -> None:
    lake_file = Path(workspace.lake.list_files()[0].path)
    lake_file.write_bytes(one_file.data[: one_file.blocks[4][0] + 3])
    out = tmp_path / "events.parquet"
    base = [sys.executable, "-m", "metaverse_kit.cli", "--workspace", str(workspace.path)]
    failed = subprocess.run([*base, "replay", "--out", str(out)], capture_output=True, text=True)
    assert failed.returncode == 2
    assert "at byte" in failed.stderr and "--skip-bad-files" in failed.stderr
    done = subprocess.run(
        [*base, "replay", "--out", str(out), "--skip-bad-files"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stdout + done.stderr
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == sum(SIZES[:4])


def test_a_damaged_file_in_the_middle_of_a_group_keeps_its_neighbours(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    for i in range(4):
        workspace.emit(mk.mce(mk.make_dataset_urn("hive", f"t{i}"), [mk.aspects.status(False)]))
        clock.advance(minutes=10)
    files = workspace.lake.list_files()
    victim = Path(files[1].path)
    victim.write_bytes(victim.read_bytes()[:-4])
    with pytest.warns(mk.CaptureFileWarning):
        table = workspace.replay(on_bad_file="skip", cache=False)
    assert table.num_rows == 3
    assert set(table["capture_file"].to_pylist()) == {f.path for f in files} - {str(victim)}
    assert pa.types.is_struct(table.schema.field("proposedSnapshot").type)


def test_the_history_explorer_shows_what_it_skipped(
    one_file: Layout, workspace: mk.Workspace
) -> None:
    from metaverse_kit.widgets import HistoryExplorer

    lake_file = Path(workspace.lake.list_files()[0].path)
    lake_file.write_bytes(_flip(one_file.data, one_file.blocks[1][1] - 3))  # block 1's sync
    explorer = HistoryExplorer(workspace)
    explorer.refresh(block=True)
    kept = sum(SIZES) - SIZES[1]
    assert f"{kept} events from 1 Capture files; 1 damaged part skipped" in explorer.status.value
    assert [(s.offset, s.events_kept) for s in explorer.skipped_files] == [
        (one_file.blocks[1][0], kept)
    ]
    assert "00.avro" in explorer.skipped_html.value and "sync marker" in explorer.skipped_html.value
    strict = HistoryExplorer(workspace, on_bad_file="raise")
    with pytest.raises(mk.CaptureFileError, match="at byte"):
        strict.refresh(block=True)
    assert "CaptureFileError" in strict.status.value


def test_older_files_read_their_time_from_the_text_and_an_unreadable_one_is_named(
    tmp_path: Path,
) -> None:
    from metaverse_kit.capture import append_events, format_enqueued_time, parse_enqueued_time

    base = {"Offset": "0", "Properties": {}, "SystemProperties": {}, "Body": b"{}"}
    times = ["3/2/2026 8:00:00 AM", " 12/31/2025 11:59:59 PM ", "1/1/2026 12:00:01 AM"]
    good = _place(
        tmp_path,
        "old",
        append_events(
            None, [{**base, "SequenceNumber": i, "EnqueuedTimeUtc": t} for i, t in enumerate(times)]
        ),
    )
    for decoder in ("auto", "fastavro"):
        table = mk.replay_capture(good, cache=False, decoder=decoder)
        assert table["enqueued_time"].to_pylist() == [parse_enqueued_time(t) for t in times]
        assert [format_enqueued_time(t) for t in table["enqueued_time"].to_pylist()] == [
            t.strip() for t in times
        ]
    bad = _place(
        tmp_path,
        "bad",
        append_events(
            None,
            [
                {**base, "SequenceNumber": 7, "EnqueuedTimeUtc": "3/2/2026 8:00:00 AM"},
                {**base, "SequenceNumber": 8, "EnqueuedTimeUtc": "yesterday at noon"},
            ],
        ),
    )
    with pytest.raises(mk.CaptureFileError, match=r"event 8 .*'yesterday at noon'"):
        mk.replay_capture(bad, cache=False)
    with pytest.warns(mk.CaptureFileWarning):
        table = mk.replay_capture([good, bad], cache=False, on_bad_file="skip")
    assert table.num_rows == 3
    (part,) = mk.skipped_files(table)
    assert part.path == str(bad) and part.offset is None and "EnqueuedTimeUtc" in part.reason


_REPLAY_LOCKED = """
import sys
import metaverse_kit as mk
with mk.connect(path=sys.argv[1]) as ws:
    try:
        ws.replay(progress=False, cache=False)
    except mk.CaptureFileError as exc:
        print(exc)
"""


def test_a_file_this_user_cannot_read_is_named_with_what_to_do(tmp_path: Path) -> None:
    """A Capture file the user may not read (another member's 0600 copy) stopped the replay
    with a bare PermissionError."""
    with mk.connect(path=tmp_path / "ws") as ws:
        (receipt,) = ws.emit(mk.example_mce())
    locked = Path(receipt.location or "")
    os.chmod(locked, 0)
    try:
        done = python_as_other_user(_REPLAY_LOCKED, str(tmp_path / "ws"), cache=tmp_path / "xdg")
    finally:
        os.chmod(locked, 0o644)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"{locked} is in the lake but cannot be read: Permission denied; give it the mode the "
        "other Capture files have, or move it out of the lake if it is no Capture file"
    )
