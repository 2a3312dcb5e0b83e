"""The csv source and its row planner: read-modify-write against the lake, streamed, checked."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.demo import emit_sample_history
from metaverse_kit.events import aspects as A
from metaverse_kit.ingest import SourceUnreachableError
from metaverse_kit.ingest.csv_plan import COLUMNS, PlannedValues, plan_rows, split_list

CUSTOMERS = mk.make_dataset_urn("hive", "sales.customers")
P = "com.linkedin.pegasus2avro."


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _recipe(path: Path, **config) -> dict:
    return {
        "source": {"type": "csv", "config": {"path": str(path), **config}},
        "pipeline_name": "edits",
    }


@pytest.fixture
def sampled(workspace):
    """The workspace with the sample history (sales.customers is tagged PII and Raw)."""
    emit_sample_history(workspace)
    return workspace


def _latest(ws, urn, aspect):
    return mk.history.latest_aspect(ws.replay(progress=False), urn, aspect)


def test_rows_add_to_what_the_lake_holds(sampled, tmp_path):
    before = _latest(sampled, CUSTOMERS, "ownership")["owners"]
    path = _write(
        tmp_path / "edits.csv",
        [
            {
                "resource": CUSTOMERS,
                "tags": "[Sensitive|urn:li:tag:PII]",
                "owners": "[mchen]",
                "ownership_type": "DATA_STEWARD",
                "glossary_terms": "[CustomerEmail]",
                "description": "Everyone who bought",
            },
            {
                "resource": CUSTOMERS,
                "subresource": "email",
                "tags": "[PII]",
                "description": "Where receipts go",
            },
            {"resource": CUSTOMERS, "subresource": "name", "glossary_terms": "[PersonName]"},
        ],
    )
    report = mk.ingest(sampled, _recipe(path), progress=False)
    assert report.exit_status == 0, report.summary()
    # One entity, consecutive rows: one MCE.
    assert report.events_emitted == 1
    tags = [t["tag"] for t in _latest(sampled, CUSTOMERS, "globalTags")["tags"]]
    assert tags == ["urn:li:tag:PII", "urn:li:tag:Raw", "urn:li:tag:Sensitive"]
    owners = _latest(sampled, CUSTOMERS, "ownership")["owners"]
    assert [(o["owner"], o["type"]) for o in owners] == [
        *((o["owner"], o["type"]) for o in before),
        ("urn:li:corpuser:mchen", "DATA_STEWARD"),
    ]
    described = _latest(sampled, CUSTOMERS, "editableDatasetProperties")
    assert described["description"] == "Everyone who bought"
    columns = {
        f["fieldPath"]: f
        for f in _latest(sampled, CUSTOMERS, "editableSchemaMetadata")["editableSchemaFieldInfo"]
    }
    assert columns["email"]["description"] == "Where receipts go"
    assert columns["email"]["globalTags"]["tags"][0]["tag"] == "urn:li:tag:PII"
    assert columns["name"]["glossaryTerms"]["terms"][0]["urn"] == "urn:li:glossaryTerm:PersonName"
    # The same file again changes nothing.
    again = mk.ingest(sampled, _recipe(path), progress=False)
    assert again.events_emitted == 0 and again.entities_unchanged == 1


def test_replace_sets_exactly_the_rows_values(sampled, tmp_path):
    path = _write(tmp_path / "edits.csv", [{"resource": CUSTOMERS, "tags": "[Gold]"}])
    mk.ingest(sampled, _recipe(path, replace=True), progress=False)
    assert [t["tag"] for t in _latest(sampled, CUSTOMERS, "globalTags")["tags"]] == [
        "urn:li:tag:Gold"
    ]


def test_bad_rows_are_reported_by_line_and_column_and_the_rest_applied(sampled, tmp_path):
    path = _write(
        tmp_path / "edits.csv",
        [
            {"resource": "not-a-urn", "tags": "[x]"},
            {"resource": CUSTOMERS, "owners": "[urn:li:tag:nope]"},
            {"resource": CUSTOMERS, "owners": "[jdoe]", "ownership_type": "BOSS"},
            {"resource": "urn:li:corpuser:jdoe", "subresource": "email", "tags": "[x]"},
            {"resource": CUSTOMERS, "tags": "[a|b"},
            {"resource": CUSTOMERS, "tags": "[Checked]"},
        ],
    )
    report = mk.ingest(sampled, _recipe(path), progress=False)
    problems = [str(p) for p in report.failures]
    assert report.exit_status == 1 and report.failures.total == 5
    assert problems[0].startswith("edits.csv line 2: resource: Invalid URN 'not-a-urn'")
    assert problems[1].startswith("edits.csv line 3: owners: An owner is a user or a group")
    assert problems[2].startswith("edits.csv line 4: ownership_type: 'BOSS' is not an ownership")
    assert (
        problems[3] == "edits.csv line 5: subresource: only datasets have columns, not a corpuser"
    )
    assert problems[4].startswith("edits.csv line 6: tags: '[a|b' opens or closes")
    assert "urn:li:tag:Checked" in [
        t["tag"] for t in _latest(sampled, CUSTOMERS, "globalTags")["tags"]
    ]


def test_a_file_without_the_columns_is_refused(workspace, tmp_path):
    path = tmp_path / "wrong.csv"
    path.write_text("urn,tag\nx,y\n")
    with pytest.raises(SourceUnreachableError, match="no 'resource' column"):
        mk.ingest(workspace, _recipe(path), progress=False)
    with pytest.raises(SourceUnreachableError, match="no CSV file at"):
        mk.ingest(workspace, _recipe(tmp_path / "missing.csv"), progress=False)


def test_plan_rows_is_a_pure_function_of_rows_and_a_lookup():
    held = {(CUSTOMERS, P + "common.GlobalTags"): A.global_tags(["PII"])[1]}
    rows = [
        {"resource": CUSTOMERS, "tags": "Gold"},
        {"resource": CUSTOMERS, "tags": "Gold|PII"},  # nothing new after the first row
        {"resource": CUSTOMERS, "subresource": "email", "description": "mail"},
    ]
    plans = list(plan_rows(rows, lambda urn, aspect: held.get((urn, aspect)), now_ms=5))
    assert [p.line for p in plans] == [2, 3, 4]
    (tags,) = plans[0].aspects
    assert [t["tag"] for t in tags[1]["tags"]] == ["urn:li:tag:PII", "urn:li:tag:Gold"]
    assert plans[0].changes[0].changed_fields == ("tags[tag=urn:li:tag:Gold]",)
    assert plans[1].aspects == () and plans[1].problems == ()
    ((name, value),) = plans[2].aspects
    assert name == P + "schema.EditableSchemaMetadata"
    assert value["lastModified"]["time"] == 5
    assert split_list("[a | b]") == ["a", "b"] and split_list("") == []


def test_planned_values_spill_to_disk_and_come_back():
    with PlannedValues(max_in_memory=2) as store:
        for i in range(10):
            store.set(f"u{i}", "a", ("x", {"i": i}))
        assert len(store._memory) == 2
        assert [store.get(f"u{i}", "a") for i in (0, 9)] == [
            (True, ("x", {"i": 0})),
            (True, ("x", {"i": 9})),
        ]
        assert store.get("nope", "a") == (False, None)


def _big_csv(path: Path, rows: int) -> Path:
    """``rows`` field descriptions, 50 columns per dataset, grouped by dataset."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for i in range(rows):
            urn = f"urn:li:dataset:(urn:li:dataPlatform:hive,big.t{i // 50},PROD)"
            writer.writerow([urn, f"c{i % 50}", "", "[Bulk]", "", "", f"column {i}", ""])
    return path


def _grown(tmp_path: Path, path: Path) -> dict:
    """Ingest ``path`` into a fresh workspace in a process of its own; how much its peak grew."""
    probe = Path(__file__).with_name("csv_memory_probe.py")
    done = subprocess.run(
        [sys.executable, str(probe), str(tmp_path / f"ws-{path.stem}"), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_csv_of_100000_rows_streams_in_bounded_memory(tmp_path):
    """The peak memory of 100,000 rows grows no more than that of 10,000, within a margin.

    Memory is measured (the peak resident size of a fresh process, ``ru_maxrss``), not time.
    Holding the rows, their plans or their events would cost well over 100 MB more for the
    90,000 more rows (the file alone is 14 MB); the margin allows 25 MB of allocator noise.
    """
    small = _grown(tmp_path, _big_csv(tmp_path / "small.csv", 10_000))
    big = _grown(tmp_path, _big_csv(tmp_path / "big.csv", 100_000))
    assert (small["entities"], small["events"], small["failures"]) == (200, 200, 0)
    assert (big["entities"], big["events"], big["failures"]) == (2_000, 2_000, 0)
    assert big["grew_kib"] < small["grew_kib"] + 25 * 1024, (small, big)


def test_a_domain_is_refused_with_the_reason_not_dropped(sampled, tmp_path):
    path = _write(
        tmp_path / "edits.csv",
        [{"resource": CUSTOMERS, "tags": "[Sensitive]", "domain": "Sales"}],
    )
    report = mk.ingest(sampled, _recipe(path), progress=False)
    assert report.events_emitted == 0 and report.exit_status == 1
    assert any("DataHub's MCE has no Domains aspect" in str(f) for f in report.failures)


def test_a_plain_user_name_as_actor_stamps_every_aspect_with_its_urn(sampled, tmp_path):
    path = _write(
        tmp_path / "edits.csv",
        [
            {"resource": CUSTOMERS, "tags": "[Gold]", "description": "Everyone who bought"},
            {"resource": CUSTOMERS, "subresource": "email", "description": "Where receipts go"},
        ],
    )
    report = mk.ingest(sampled, _recipe(path, actor="jdoe"), progress=False)
    assert report.exit_status == 0, report.summary()
    columns = _latest(sampled, CUSTOMERS, "editableSchemaMetadata")
    described = _latest(sampled, CUSTOMERS, "editableDatasetProperties")
    assert columns["lastModified"]["actor"] == "urn:li:corpuser:jdoe"
    assert described["lastModified"]["actor"] == "urn:li:corpuser:jdoe"
    # An actor that is no user is refused when the config is checked, not row by row.
    with pytest.raises(SourceUnreachableError, match=r"source\.config\.actor must be a user name"):
        mk.ingest(sampled, _recipe(path, actor="urn:li:corpGroup:stewards"), progress=False)


def test_lines_are_where_each_record_starts_blank_lines_and_multiline_cells_counted(
    workspace, tmp_path
):
    path = tmp_path / "edits.csv"
    path.write_text(
        "resource,tags,owners,ownership_type,description\n"  # line 1
        "\n\n"  # lines 2-3
        f'"{CUSTOMERS}",Gold,,,"a description\non three\nlines"\n'  # lines 4-6
        "\n"  # line 7
        f'"{CUSTOMERS}",,jdoe,WEIRD,\n'  # line 8
        f'"{CUSTOMERS}",Silver,,,\n'  # line 9
        f'"{CUSTOMERS}",,,,"{"x" * 200_000}"\n'  # line 10: a cell over csv's field limit
        f'"{CUSTOMERS}",Bronze,,,\n'  # line 11: not read
    )
    report = mk.ingest(workspace, _recipe(path), dry_run=True, progress=False)
    failures = [(p.where, p.message) for p in report.failures]
    assert failures[0][0] == "edits.csv line 8"
    assert failures[0][1].startswith("ownership_type: 'WEIRD' is not an ownership type")
    assert failures[1][0] == "edits.csv line 10"
    assert "field larger than field limit" in failures[1][1]
    assert len(failures) == 2
    # The rows before the unreadable record are applied; the unit names their lines.
    assert [c.where for c in report.changes] == ["edits.csv lines 4-9"]
    tags = report.events[0]["proposedSnapshot"][1]["aspects"][0][1]["tags"]
    assert [t["tag"] for t in tags] == ["urn:li:tag:Gold", "urn:li:tag:Silver"]
    # plan_rows keeps the lines its caller gives with the rows.
    plans = plan_rows([(7, {"resource": "nope"})], lambda urn, aspect: None)
    assert [p.line for p in plans] == [7]


def test_a_header_naming_a_column_twice_is_refused_with_the_columns(workspace, tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text(f'resource,tags,owners,tags,,\n"{CUSTOMERS}",keep_me,jdoe,other,,\n')
    with pytest.raises(SourceUnreachableError) as refused:
        mk.ingest(workspace, _recipe(path), dry_run=True, progress=False)
    message = str(refused.value)
    assert message.startswith(f"{path} names a column more than once in its header")
    # Two empty names (trailing separators) are ignored columns: they lose nothing.
    assert "'tags' in columns 2 and 4; keep one column of each name" in message
    assert "''" not in message


def test_an_empty_array_delimiter_is_refused_with_the_config(workspace, tmp_path):
    path = _write(tmp_path / "edits.csv", [{"resource": CUSTOMERS, "tags": "[Gold]"}])
    with pytest.raises(SourceUnreachableError, match=r"source\.config\.array_delimiter must be"):
        mk.ingest(workspace, _recipe(path, array_delimiter=""), dry_run=True, progress=False)


def test_cells_under_no_column_fail_their_row_and_empty_ones_lose_nothing(workspace, tmp_path):
    """A list typed with the separator (PII,Finance,Sales) lost all but its first item, silently."""
    path = tmp_path / "edits.csv"
    path.write_text(
        "resource,tags,\n"  # line 1: a trailing separator names no column
        f'"{CUSTOMERS}",PII,Finance,Sales\n'  # line 2: not applied
        "\n"  # line 3
        f'"{CUSTOMERS}",Gold,,,\n'  # line 4: empty cells only: applied
        f'"{CUSTOMERS}",Silver,,  \n'  # line 5: applied
        f'"{CUSTOMERS}",Bronze,Copper\n'  # line 6: under the unnamed column: not applied
    )
    report = mk.ingest(workspace, _recipe(path), dry_run=True, progress=False)
    failures = [(p.where, p.message) for p in report.failures]
    advice = (
        "the row was not applied. Quote a cell that holds the separator ',' (\"a, b\"); a list's "
        "items go in one cell, separated by '|' (PII|Finance)"
    )
    assert failures == [
        (
            "edits.csv line 2",
            "cells under no column of the header (resource, tags): 'Finance' (column 3), "
            f"'Sales' (column 4); {advice}",
        ),
        (
            "edits.csv line 6",
            f"cells under no column of the header (resource, tags): 'Copper' (column 3); {advice}",
        ),
    ]
    assert report.exit_status == 1 and not list(report.warnings)
    assert [c.where for c in report.changes] == ["edits.csv lines 4-5"]
    tags = report.events[0]["proposedSnapshot"][1]["aspects"][0][1]["tags"]
    assert [t["tag"] for t in tags] == ["urn:li:tag:Gold", "urn:li:tag:Silver"]
