"""The plan pass of a distributed replay reads message ids and times without the bodies
(``decode.read_message_ids``): it must find what the envelope read finds, in every archive."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.capture import append_events
from metaverse_kit.history.decode import CaptureBytes, read_envelope, read_message_ids


def _same(item: CaptureBytes, on_bad_file: str = "raise") -> int:
    envelope = read_envelope(item, on_bad_file=on_bad_file)
    found = read_message_ids(item, on_bad_file=on_bad_file)
    assert found.events == envelope.events
    assert [(d.offset, d.reason) for d in found.damage] == [
        (d.offset, d.reason) for d in envelope.damage
    ]
    if envelope.columns is None:
        assert found.message_id is None and found.enqueued_time is None
        return 0
    assert found.message_id is not None and found.enqueued_time is not None
    assert found.message_id.to_pylist() == envelope.columns.message_id.to_pylist()
    assert found.enqueued_time.cast(pa.timestamp("ms", "UTC")).to_pylist() == (
        envelope.columns.enqueued_time.cast(pa.timestamp("ms", "UTC")).to_pylist()
    )
    return found.events


def _record(seq: int, system: dict, app: dict, *, text: str = "3/2/2026 8:00:00 AM") -> dict:
    return {
        "SequenceNumber": seq,
        "Offset": str(seq * 100),
        "EnqueuedTimeUtc": text,
        "SystemProperties": system,
        "Properties": app,
        "Body": b"{}",
    }


def test_our_files_and_azures_give_the_same_ids(
    workspace: mk.Workspace, real_capture: Path
) -> None:
    from metaverse_kit.demo import emit_sample_history

    emit_sample_history(workspace)
    seen = sum(
        _same(CaptureBytes(workspace.lake.read_bytes(f), f.path))
        for f in workspace.lake.list_files()
    )
    assert seen == workspace.replay(progress=False).num_rows
    for path in sorted(real_capture.glob("*.avro")):
        _same(CaptureBytes(path.read_bytes(), str(path)))


def test_ids_from_either_map_of_any_value_type_and_times_from_text() -> None:
    ms = 1_772_438_400_000
    records = [
        # the system id wins over the application's; an empty one counts as none
        _record(0, {"message-id": "s0", "x-opt-enqueued-time": ms}, {"message-id": "a0"}),
        _record(1, {"x-opt-enqueued-time": ms + 1}, {"message-id": "a1"}),
        _record(2, {"message-id": "", "x-opt-enqueued-time": ms + 2}, {}),
        _record(3, {}, {"n": 5}, text="12/31/2025 11:59:59 PM"),
        _record(4, {"message-id": "s4", "other": "x"}, {"message-id": ""}),
    ]
    assert _same(CaptureBytes(append_events(None, records), "mixed")) == 5
    # A message id that is no text (a producer's long) is read as the envelope reads it.
    odd = [_record(0, {"message-id": 42}, {}), _record(1, {"message-id": "s1"}, {})]
    assert _same(CaptureBytes(append_events(None, odd), "odd")) == 2


def test_damaged_and_empty_archives_give_the_same_damage() -> None:
    records = [_record(i, {"message-id": f"m{i}"}, {}) for i in range(3)]
    whole = append_events(append_events(None, records[:2]), records[2:])
    cut = whole[: len(whole) - 5]
    assert _same(CaptureBytes(cut, "cut"), on_bad_file="skip") == 2
    with pytest.raises(mk.CaptureFileError, match="cut"):
        read_message_ids(CaptureBytes(cut, "cut"))
    assert _same(CaptureBytes(append_events(None, []), "empty")) == 0
    bad_time = [_record(0, {}, {}, text="yesterday at noon")]
    assert _same(CaptureBytes(append_events(None, bad_time), "bad"), on_bad_file="skip") == 0


def test_many_archives_at_once_give_what_each_gives_alone() -> None:
    from metaverse_kit.history.decode import read_message_ids_of

    def archive(first: int, n: int, codec: str = "null") -> bytes:
        ms = 1_772_438_400_000
        records = [
            _record(i, {"message-id": f"m{i}", "x-opt-enqueued-time": ms + i}, {})
            for i in range(first, first + n)
        ]
        return append_events(None, records, codec=codec)

    whole = archive(20, 3)
    items = [
        CaptureBytes(archive(0, 2), "a"),
        CaptureBytes(archive(2, 3, "deflate"), "b"),  # another header: read apart
        CaptureBytes(append_events(None, []), "empty"),
        CaptureBytes(archive(5, 4), "c"),
        CaptureBytes(whole[: len(whole) - 5], "cut"),  # damaged: its error, in its place
        CaptureBytes(archive(9, 1), "d"),
    ]
    got = list(read_message_ids_of(items))
    assert len(got) == len(items)
    error = got[4]
    assert isinstance(error, mk.CaptureFileError) and "cut" in str(error)
    with pytest.raises(mk.CaptureFileError) as alone:
        read_message_ids(items[4])
    assert str(alone.value) == str(error)
    for item, found in zip(items, got, strict=True):
        if item.path == "cut":
            continue
        assert not isinstance(found, mk.CaptureFileError)
        one = read_message_ids(item)
        assert found.events == one.events and found.damage == one.damage
        if one.message_id is None:
            assert found.message_id is None
            continue
        assert found.message_id is not None and found.enqueued_time is not None
        assert found.message_id.to_pylist() == one.message_id.to_pylist()
        assert found.enqueued_time.to_pylist() == one.enqueued_time.to_pylist()
    ids = [g.message_id.to_pylist() for g in got if not isinstance(g, Exception) and g.events]
    assert ids == [["m0", "m1"], ["m2", "m3", "m4"], ["m5", "m6", "m7", "m8"], ["m9"]]
    skipped = list(read_message_ids_of(items, on_bad_file="skip"))
    assert not isinstance(skipped[4], Exception) and skipped[4].events == 0
    assert skipped[4].damage
