"""A damaged Capture file: never appended to, reported, and repaired by `metaverse doctor`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import pytest

import metaverse_kit as mk
from metaverse_kit.backends.local.doctor import LocalDoctor
from metaverse_kit.capture import complete_length, encode_blocks, read_header, scan_blocks
from metaverse_kit.cli import main
from metaverse_kit.errors import DamagedFileWarning
from tests.conftest import SimClock

URN = mk.make_dataset_urn("hive", "db.orders")


def _emit(ws: mk.Workspace, n: int = 1) -> list[mk.Receipt]:
    return ws.emit([mk.mce(URN, [mk.aspects.status(False)]) for _ in range(n)])


def _readable(path: Path) -> list[dict]:
    return list(fastavro.reader(io.BytesIO(path.read_bytes())))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data + b"\x02\x40garbage", "a block cut short"),
        (lambda data: data + b"\x02\x02xx" + b"\x00" * 16, "bytes that are no block"),
        (lambda data: data[:-7], "7 bytes shorter than the hub left it"),
        (lambda data: data[:-16] + bytes(16), "does not end with the file's sync marker"),
    ],
    ids=["torn-tail", "junk-tail", "cut-short", "overwritten"],
)
def test_no_receipt_for_an_event_nobody_could_read(
    workspace: mk.Workspace, clock: SimClock, damage: object, reason: str
) -> None:
    first = _emit(workspace, 3)[0]
    path = Path(first.location)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    clock.advance(seconds=42)
    with pytest.warns(DamagedFileWarning, match=reason) as info:
        receipt = _emit(workspace)[0]
    assert str(path) in str(info[0].message) and "metaverse doctor --repair" in str(info[0].message)
    # The event went to a new file of the same window, named after a later second, in the
    # default path format: replay and Azure's tools read it like any Capture file.
    moved = Path(receipt.location)
    assert moved.parent == path.parent and moved.name == "42.avro"
    assert [r["SequenceNumber"] for r in _readable(moved)] == [3]
    # Later emits of the window go on in the new file, without another warning.
    clock.advance(seconds=5)
    assert _emit(workspace)[0].location == receipt.location
    assert [r["SequenceNumber"] for r in _readable(moved)] == [3, 4]


def test_a_file_that_is_not_capture_is_never_appended_to(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    first = Path(_emit(workspace)[0].location)
    clock.advance(minutes=5)
    foreign = first.parent.parent / "05" / "00.avro"  # the next window's file, made elsewhere
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.warns(DamagedFileWarning, match="it is not an Avro container file"):
        receipt = _emit(workspace)[0]
    assert receipt.location.endswith("/05/01.avro")
    assert foreign.read_bytes() == b"PK\x03\x04 a zip file"


def test_readers_stop_at_the_last_complete_block(workspace: mk.Workspace) -> None:
    _emit(workspace, 2)
    state = Path(workspace.path or ".") / "hub" / "partitions.json"
    committed = state.read_bytes()
    path = Path(_emit(workspace, 3)[0].location)
    whole = path.read_bytes()
    _, sync, start = read_header(whole)
    blocks = scan_blocks(whole, start, sync).blocks
    assert len(blocks) == 2
    # A file caught in the middle of an append: the hub's state still has the length before
    # it, and the torn block past that length is left out.
    state.write_bytes(committed)
    for cut in (1, 10, blocks[1].end - blocks[1].start - 1):
        path.write_bytes(whole[: blocks[1].start + cut])
        assert complete_length(path.read_bytes()) == blocks[1].start
        assert workspace.replay(cache=False, progress=False).num_rows == 2
    path.write_bytes(whole)
    assert workspace.replay(cache=False, progress=False).num_rows == 5


def test_a_file_cut_below_its_committed_length_is_damage(workspace: mk.Workspace) -> None:
    _emit(workspace, 2)
    path = Path(_emit(workspace, 3)[0].location)
    whole = path.read_bytes()
    _, sync, start = read_header(whole)
    blocks = scan_blocks(whole, start, sync).blocks
    # Cut inside a block the hub had committed: not an append in flight, but a damaged file.
    path.write_bytes(whole[: blocks[1].start + 10])
    with pytest.raises(mk.CaptureFileError, match=rf"cannot be read at byte {blocks[1].start}"):
        workspace.replay(cache=False, progress=False)
    with pytest.warns(mk.CaptureFileWarning):
        assert workspace.replay(cache=False, progress=False, on_bad_file="skip").num_rows == 2


def test_doctor_keeps_every_intact_block_and_quarantines_the_file(
    workspace: mk.Workspace, clock: SimClock, capsys: pytest.CaptureFixture[str]
) -> None:
    for n in (2, 3, 4):
        _emit(workspace, n)
    path = Path(_emit(workspace, 5)[0].location)
    original = path.read_bytes()
    _, sync, start = read_header(original)
    blocks = scan_blocks(original, start, sync).blocks
    assert [b.count for b in blocks] == [2, 3, 4, 5]
    # Damage the second block's records and cut the last block short.
    damaged = bytearray(original)
    damaged[blocks[1].start + 6 : blocks[1].start + 30] = b"\xff" * 24
    path.write_bytes(bytes(damaged[: blocks[3].end - 9]))
    root = workspace.path
    assert root is not None

    assert main(["--workspace", str(root), "doctor"]) == 2
    out, err = capsys.readouterr()
    assert f"error: {path} is damaged" in out and "2 of 4 blocks are intact (6 events)" in out
    assert "need attention; `metaverse doctor --repair` fixes 1" in err
    with pytest.raises(mk.CaptureFileError, match=str(path)):
        workspace.replay(cache=False, progress=False)

    assert main(["--workspace", str(root), "doctor", "--repair"]) == 0
    out, _ = capsys.readouterr()
    aside = root / "quarantine" / path.relative_to(root)
    assert f"kept 2 intact blocks (6 events); the damaged file is in {aside}" in out
    assert out.rstrip().endswith("is healthy.")
    assert aside.read_bytes() == bytes(damaged[: blocks[3].end - 9])
    assert [r["SequenceNumber"] for r in _readable(path)] == [0, 1, 5, 6, 7, 8]
    assert workspace.replay(cache=False, progress=False).num_rows == 6
    # The hub appends to the repaired file again, after its last block, numbers going on.
    receipt = _emit(workspace)[0]
    assert receipt.location == str(path) and receipt.sequence_number == 14
    assert LocalDoctor(root).check() == []


def test_a_file_cut_at_a_block_boundary_is_found_by_its_recorded_length(
    workspace: mk.Workspace,
) -> None:
    _emit(workspace, 2)
    path = Path(_emit(workspace, 3)[0].location)
    data = path.read_bytes()
    _, sync, start = read_header(data)
    path.write_bytes(data[: scan_blocks(data, start, sync).blocks[0].end])
    assert workspace.path is not None
    (finding,) = LocalDoctor(workspace.path).check()
    assert (
        finding.kind == "damaged-file" and "bytes shorter than the hub wrote it" in finding.message
    )
    LocalDoctor(workspace.path).repair()
    assert LocalDoctor(workspace.path).check() == []
    assert _emit(workspace)[0].location == str(path)  # trusted again: appended to


def test_an_unreadable_hub_state_is_rebuilt_from_the_lake(workspace: mk.Workspace) -> None:
    receipts = _emit(workspace, 4) + _emit(workspace, 2)
    assert workspace.path is not None
    state_path = workspace.path / "hub" / "partitions.json"
    state_path.write_text("{torn")
    with pytest.raises(mk.ConfigurationError, match="doctor --repair"):
        _emit(workspace)
    (finding,) = [f for f in LocalDoctor(workspace.path).check() if f.kind == "state"]
    assert finding.repairable
    LocalDoctor(workspace.path).repair()
    state = json.loads(state_path.read_text())
    partition = receipts[0].partition
    assert state[partition]["next_sequence"] == 6
    assert _emit(workspace)[0].sequence_number == 6  # the failed emit's event is in the outbox


def test_numbers_move_past_the_complete_blocks_before_the_damage(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    first = _emit(workspace, 2)[0]
    path = Path(first.location)
    assert workspace.path is not None
    part = json.loads((workspace.path / "hub" / "partitions.json").read_text())[first.partition]
    # Two whole events past what the hub recorded (written before a power cut lost its state,
    # say), then junk: the next event must not reuse their sequence numbers.
    records = [
        {
            "SequenceNumber": n,
            "Offset": str(1000 * n),
            "EnqueuedTimeUtc": "3/2/2026 8:00:00 AM",
            "SystemProperties": {"x-opt-enqueued-time": 1772438400000},
            "Properties": {},
            "Body": b"x",
        }
        for n in (2, 3)
    ]
    block, _ = encode_blocks(records, codec="null", sync=bytes.fromhex(part["sync"]))
    path.write_bytes(path.read_bytes() + block + b"\x02\x40junk")
    with pytest.warns(DamagedFileWarning, match="a block cut short"):
        receipt = _emit(workspace)[0]
    assert receipt.location != first.location and receipt.sequence_number == 4


def test_a_zero_byte_file_is_an_empty_archive_not_damage(
    workspace: mk.Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(_emit(workspace, 2)[0].location)
    empty = path.with_name("59.avro")  # as Azure Capture writes for a window without events
    empty.touch()
    root = workspace.path
    assert root is not None
    assert workspace.replay(cache=False, progress=False).num_rows == 2
    assert LocalDoctor(root).check() == []
    assert main(["--workspace", str(root), "doctor", "--repair"]) == 0
    assert "repaired" not in capsys.readouterr().out
    assert empty.exists() and empty.stat().st_size == 0 and not (root / "quarantine").exists()


def test_a_file_the_hub_wrote_cut_to_zero_bytes_is_damage(workspace: mk.Workspace) -> None:
    path = Path(_emit(workspace, 2)[0].location)
    size = path.stat().st_size
    path.write_bytes(b"")
    root = workspace.path
    assert root is not None
    (finding,) = LocalDoctor(root).check()
    assert finding.kind == "damaged-file" and finding.path == str(path)
    assert f"it is empty, but the hub wrote {size} bytes to it" in finding.message
    LocalDoctor(root).repair()
    assert (root / "quarantine" / path.relative_to(root)).stat().st_size == 0
    assert LocalDoctor(root).check() == []
    assert _emit(workspace)[0].sequence_number == 2


def test_a_listed_file_that_is_gone_or_a_link_loop_is_not_a_crash(tmp_path: Path) -> None:
    """A file removed between the listing and its stat (here a link to nothing) made every
    reader of the lake fail with a bare FileNotFoundError, the steward app's page included;
    a loop of links is a CaptureFileError naming it."""
    root = tmp_path / "ws"
    with mk.connect(path=root) as ws:
        ws.emit(mk.example_mce())
        folder = next((root / "lake").rglob("*.avro")).parent
        (folder / "95.avro").symlink_to(folder / "nothing-here.avro")
        assert ws.replay(progress=False, cache=False).num_rows == 1
        (folder / "95.avro").unlink()
        (folder / "96.avro").symlink_to(folder / "97.avro")
        (folder / "97.avro").symlink_to(folder / "96.avro")
        with pytest.raises(
            mk.CaptureFileError, match=r"9[67].avro is in the lake but cannot be read"
        ):
            ws.replay(progress=False, cache=False)
