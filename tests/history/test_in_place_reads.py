"""A native read of a whole local Capture file reads the file where it is, instead of copying
the caller's bytes to a temporary file first; and only while the file holds what the caller
read of it: otherwise the bytes held are read, as before."""

from __future__ import annotations

from pathlib import Path

import metaverse_kit as mk
from metaverse_kit.capture import append_events
from metaverse_kit.history import _decoder
from metaverse_kit.history.decode import CaptureBytes, read_envelope, read_message_ids


def _record(s: int, body: bytes = b"{}") -> dict:
    # Fixed-width fields: archives of as many records are as long, whatever their numbers.
    return {
        "SequenceNumber": s,
        "Offset": f"{s:04d}",
        "EnqueuedTimeUtc": "3/2/2026 8:00:00 AM",
        "SystemProperties": {"message-id": f"m{s:04d}", "x-opt-enqueued-time": 1_772_438_400},
        "Properties": {},
        "Body": body,
    }


def _archive(seqs: range, body: bytes = b"{}", last: bytes | None = None) -> bytes:
    bodies = [body] * (len(seqs) - 1) + [body if last is None else last]
    return append_events(None, [_record(s, b) for s, b in zip(seqs, bodies, strict=True)])


def _sequence_numbers(data: bytes, source: str | None) -> list[int]:
    return _decoder.read_envelope(data, source=source)["sequence_number"].to_pylist()


def test_the_file_itself_is_read_in_a_folder_of_any_name(tmp_path: Path) -> None:
    held = _archive(range(10, 13))
    on_disk = _archive(range(20, 23))  # as long and as many records: read in place, it shows
    assert len(held) == len(on_disk)
    for name in ["lake", "100% lake", "lake#1", "x?y", "a[0]*", "lac é"]:
        path = tmp_path / name / "00.avro"
        path.parent.mkdir()
        path.write_bytes(on_disk)
        assert _sequence_numbers(held, str(path)) == [20, 21, 22], name
        assert (
            _decoder.read_properties(held, source=str(path))["enqueued_text"].to_pylist()
            == ["3/2/2026 8:00:00 AM"] * 3
        )
    assert _sequence_numbers(held, None) == [10, 11, 12]
    # A temporary link per read, gone after it.
    for folder in _decoder.temp_folders():
        assert not [p for p in Path(folder).glob(f"{_decoder.TEMP_PREFIX}*") if p.is_symlink()]


def test_the_bytes_held_are_read_when_the_file_is_not_what_was_read(tmp_path: Path) -> None:
    held = _archive(range(10, 13))
    path = tmp_path / "00.avro"
    # Grown since it was read (the hub appends blocks in place): the bytes held.
    path.write_bytes(append_events(held, [_record(13)]))
    assert _sequence_numbers(held, str(path)) == [10, 11, 12]
    # As long, with another number of records: the rows read do not add up; the bytes held.
    # Two bodies of under 64 bytes each (their lengths take one byte to write) fill the gap.
    gap = len(held) - len(_archive(range(30, 32), b""))
    assert 0 < gap < 128
    other = _archive(range(30, 32), b"x" * (gap // 2), b"x" * (gap - gap // 2))
    assert len(other) == len(held)
    path.write_bytes(other)
    assert _sequence_numbers(held, str(path)) == [10, 11, 12]
    # Not an archive any more, gone, or named relative to who knows where: the bytes held.
    path.write_bytes(b"\0" * len(held))
    assert _sequence_numbers(held, str(path)) == [10, 11, 12]
    path.unlink()
    assert _sequence_numbers(held, str(path)) == [10, 11, 12]
    path.write_bytes(_archive(range(20, 23)))
    relative = Path("00.avro")
    assert _sequence_numbers(held, str(relative)) == [10, 11, 12]


def test_replays_of_a_lake_read_in_place_are_unchanged(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    """The decode layer's callers pass the file's path: the replay and the plan pass give the
    same rows whether the files are read in place or copied."""
    from metaverse_kit.demo import emit_sample_history

    emit_sample_history(workspace)
    files = workspace.lake.list_files()
    assert files and all(Path(f.path).is_absolute() for f in files)
    for f in files:
        data = workspace.lake.read_bytes(f)
        here = read_envelope(CaptureBytes(data, f.path, f))
        copied = read_envelope(CaptureBytes(data, "", f))
        assert here.events == copied.events
        assert here.columns is not None and copied.columns is not None
        for name in ("sequence_number", "offset", "enqueued_time", "message_id", "schema_ids"):
            assert getattr(here.columns, name).equals(getattr(copied.columns, name)), name
        ids = read_message_ids(CaptureBytes(data, f.path, f))
        assert ids.message_id is not None
        assert ids.message_id.equals(copied.columns.message_id)
