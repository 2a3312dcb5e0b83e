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
