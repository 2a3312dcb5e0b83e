"""A lake written with several versions of a schema replays under one reader, exactly."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import metaverse_kit as mk
from metaverse_kit.capture import append_events
from metaverse_kit.events.codec import content_type_for, encode_body
from metaverse_kit.history.arrow_types import union_branch
from tests.conftest import REPO, SimClock
from tests.history.conftest import _named, mce_versions

DATAHUB_WHEEL = REPO / ".cache" / "acryl_datahub-1.7.0.17-py3-none-any.whl"
TAGS = "com.linkedin.pegasus2avro.common.GlobalTags"
QUALITY = "com.example.Quality"


def _same(a: pa.Table, b: pa.Table) -> None:
    assert a.schema == b.schema
    for name in a.column_names:
        assert a[name].equals(b[name]), name


def _mce(urn: str, aspects: list[tuple[str, dict]]) -> dict:
    """An MCE of a dataset with aspects a newer schema version knows (mk.mce checks them)."""
    snapshot = "com.linkedin.pegasus2avro.metadata.snapshot.DatasetSnapshot"
    return {
        "auditHeader": None,
        "proposedSnapshot": (snapshot, {"urn": urn, "aspects": aspects}),
        "proposedDelta": None,
        "systemMetadata": None,
    }


def _aspects(table: pa.Table) -> list[list[tuple[str, dict]]]:
    """Each event's aspects as (short name, value), read through the union shape."""
    out = []
    for snapshot in table["proposedSnapshot"].to_pylist():
        held = union_branch(snapshot)
        assert held is not None
        out.append(
            [
                (name.rpartition(".")[2], value)
                for name, value in (union_branch(a) for a in held[1]["aspects"])  # type: ignore[misc]
            ]
        )
    return out


def test_three_schema_versions_replay_under_the_newest_identically_on_both_decoders(
    workspace: mk.Workspace, clock: SimClock
) -> None:
    v1, v2, v3 = mce_versions()
    urn = mk.make_dataset_urn("hive", "db.orders")
    workspace.emit(
        mk.mce(
            urn, [mk.aspects.global_tags(["Old"]), mk.aspects.ownership([("jdoe", "DATA_STEWARD")])]
        )
    )
    clock.advance(seconds=10)
    tags = {"tags": [{"tag": "urn:li:tag:New", "context": None, "attribution": None}]}
    workspace.emit(
        _mce(urn, [(TAGS, {**tags, "origin": "ingest"}), (QUALITY, {"score": 0.5})]), schema=v2
    )
    clock.advance(seconds=10)
    workspace.emit(_mce(urn, [(QUALITY, {"score": 0.25, "checked": True})]), schema=v3)
    # Same key, same window: one Capture file holds all three versions.
    assert len(workspace.lake.list_files()) == 1
    versions = workspace.registry.list_versions(workspace.schema_group, mk.MCE_FULL_NAME)
    assert versions == [1, 2, 3]

    auto = workspace.replay(cache=False)
    slow = workspace.replay(cache=False, decoder="fastavro")
    _same(auto, slow)
    assert auto["decode_error"].null_count == auto.num_rows == 3
    assert auto["body"].null_count == 3
    # schema=None is the newest registered version: v3's fields are columns.
    assert "checked" in str(auto.schema.field("proposedSnapshot").type)
    first, second, third = _aspects(auto)
    old_tags = [{"tag": "urn:li:tag:Old", "context": None, "attribution": None}]
    assert first[0] == ("GlobalTags", {"tags": old_tags, "origin": "steward"})  # the default
    assert first[1][1]["owners"][0]["type"] == "DATA_STEWARD"
    assert second == [
        ("GlobalTags", {**tags, "origin": "ingest"}),
        ("Quality", {"score": 0.5, "checked": False}),  # float promoted, default filled
    ]
    assert third == [("Quality", {"score": 0.25, "checked": True})]
    # A reader of an older version reads the events it can, and says why it cannot read the rest.
    older = workspace.replay(cache=False, schema=v1)
    errors = older["decode_error"].to_pylist()
    assert errors[0] is None
    for error in errors[1:]:
        assert (
            "proposedSnapshot.<DatasetSnapshot>.aspects[]: the writer's branch "
            "com.example.Quality matches no branch" in error
        )
    assert older["body"].null_count == 1
    _same(older, workspace.replay(cache=False, schema=v1, decoder="fastavro"))
    # The cache gives the same answers warm as cold.
    cold = workspace.replay()
    assert workspace.replay().equals(cold) and cold.equals(auto)


def test_an_unresolvable_writer_keeps_its_body_and_names_the_field(
    workspace: mk.Workspace, tmp_path: Path
) -> None:
    workspace.emit(mk.mce(mk.make_dataset_urn("hive", "ok"), [mk.aspects.status(False)]))
    bad = mk.mce_schema()
    removed = next(f for f in _named(bad, "Status")["fields"] if f["name"] == "removed")
    removed["type"], removed["default"] = "string", "no"
    definition = json.dumps(bad)
    workspace.registry.create_group("lenient", compatibility="None")  # type: ignore[attr-defined]
    schema_id = workspace.registry.register_schema("lenient", definition).id
    event = mk.mce(mk.make_dataset_urn("hive", "bad"), [mk.aspects.status(False)])
    status = event["proposedSnapshot"][1]["aspects"][0][1]
    status["removed"] = "yes"
    body = encode_body(event, definition)
    folder = (
        Path(workspace.path or ".")
        / "lake"
        / "ns"
        / "hub"
        / "3"
        / "2026"
        / "03"
        / "02"
        / "08"
        / "00"
    )
    folder.mkdir(parents=True)
    (folder / "00.avro").write_bytes(
        append_events(
            None,
            [
                {
                    "SequenceNumber": 0,
                    "Offset": "0",
                    "EnqueuedTimeUtc": "3/2/2026 8:00:00 AM",
                    "SystemProperties": {"content-type": content_type_for(schema_id)},
                    "Properties": {},
                    "Body": body,
                }
            ],
        )
    )
    tables = [workspace.replay(cache=False, decoder=d) for d in ("auto", "fastavro")]
    _same(*tables)
    table = tables[0]
    assert table.num_rows == 2
    row = table.filter(pc.equal(table["schema_id"], schema_id)).to_pylist()[0]
    assert row["decode_error"] == (
        f"written with schema {schema_id}, which cannot be read as the replay's "
        f"{mk.MCE_FULL_NAME}: proposedSnapshot.<DatasetSnapshot>.aspects[].<Status>.removed: "
        "the writer's string cannot be read as a boolean"
    )
    assert row["body"] == body and row["proposedSnapshot"] is None
    # No row ever has a null payload without saying why.
    assert pc.sum(
        pc.and_(pc.is_null(table["proposedSnapshot"]), pc.is_null(table["decode_error"]))
    ).as_py() in (0, None)


def test_datahubs_full_mce_schema_reads_the_whole_lake(workspace: mk.Workspace) -> None:
    if not DATAHUB_WHEEL.is_file():
        pytest.skip(f"DataHub's wheel is not at {DATAHUB_WHEEL} (make test-deps downloads it)")
    from metaverse_kit.demo import emit_sample_history

    emit_sample_history(workspace)
    with zipfile.ZipFile(DATAHUB_WHEEL) as wheel:
        datahub = json.loads(wheel.read("datahub/metadata/schemas/MetadataChangeEvent.avsc"))
    ours = workspace.replay(cache=False)
    workspace.registry.register_schema(workspace.schema_group, json.dumps(datahub))
    theirs = workspace.replay(cache=False)  # schema=None: DataHub's, now the newest version
    assert theirs.schema != ours.schema
    assert theirs["decode_error"].null_count == theirs.num_rows == ours.num_rows
    _same(theirs, workspace.replay(cache=False, decoder="fastavro"))
    # The same aspects, now in DataHub's wider union.
    assert [len(a) for a in _aspects(theirs)] == [len(a) for a in _aspects(ours)]


def test_a_long_history_mixing_versions_replays_identically_on_both_decoders(
    workspace: mk.Workspace,
) -> None:
    """Past one native read (8,192 bodies): groups mixing versions are decoded in several reads
    per version, then put back in event order, and must still equal fastavro's resolution."""
    v1, v2, _ = mce_versions()
    registry = workspace.registry
    old_id, new_id = (
        registry.register_schema(workspace.schema_group, v).id  # type: ignore[attr-defined]
        for v in (v1, v2)
    )
    tags = {"tags": [{"tag": "urn:li:tag:T", "context": None, "attribution": None}]}
    root = Path(workspace.path or ".") / "lake" / "ns" / "hub"
    sequence = 0
    for partition, events in (("0", 6000), ("1", 4500), ("2", 10)):
        folder = root / partition / "2026" / "03" / "02" / "08" / "00"
        folder.mkdir(parents=True)
        records = []
        for i in range(events):
            urn = mk.make_dataset_urn("hive", f"db.t{i % 97}")
            if i % 10 == 3:  # a producer still on v1: no origin, no Quality aspect
                body = encode_body(mk.mce(urn, [mk.aspects.global_tags([f"T{i}"])]), v1)
                schema_id = old_id
            else:
                aspects = [(TAGS, {**tags, "origin": f"o{i}"}), (QUALITY, {"score": i / 8})]
                body = encode_body(_mce(urn, aspects[: 1 + i % 2]), v2)
                schema_id = new_id
            records.append(
                {
                    "SequenceNumber": sequence,
                    "Offset": str(sequence),
                    "EnqueuedTimeUtc": "3/2/2026 8:00:00 AM",
                    "SystemProperties": {
                        "content-type": content_type_for(schema_id),
                        "message-id": f"m{sequence}",
                    },
                    "Properties": {},
                    "Body": body,
                }
            )
            sequence += 1
        (folder / "00.avro").write_bytes(append_events(None, records))
    auto = workspace.replay(cache=False, schema=v2)
    assert auto.num_rows == 10510 and auto["decode_error"].null_count == auto.num_rows
    _same(auto, workspace.replay(cache=False, schema=v2, decoder="fastavro"))
    assert _aspects(auto.slice(3, 2)) == [
        [
            (
                "GlobalTags",
                {"tags": [{**tags["tags"][0], "tag": "urn:li:tag:T3"}], "origin": "steward"},
            )
        ],
        [("GlobalTags", {**tags, "origin": "o4"})],
    ]
