"""BatchEmitter: rows validated first, invalid rows reported and not sent, send failures per row."""

from __future__ import annotations

import html
import warnings
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import metaverse_kit as mk
from metaverse_kit.errors import ConfigurationError
from metaverse_kit.events import aspects as a
from metaverse_kit.events.urns import make_dataset_urn
from metaverse_kit.history import latest_aspect
from metaverse_kit.widgets import BatchEmitter


def build(row: dict[str, Any]) -> dict[str, Any]:
    """One MCE per dataset row: its owner and its tags."""
    return a.mce(
        make_dataset_urn("hive", row["name"]),
        [a.ownership([row["owner"]]), a.global_tags(row["tags"])],
    )


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": ["sales.orders", "sales.customers", "hr.people", "fin.ledger"],
            "owner": ["jdoe", "asmith", "", "lgarcia"],
            "tags": [["Raw"], ["PII", "Raw"], ["PII"], ["Finance", "Gold"]],
        }
    )


def _urns(ws: mk.Workspace) -> list[str]:
    return list(ws.replay(progress=False).column("partition_key").to_pylist())


def test_valid_rows_are_sent_invalid_rows_reported(workspace: mk.Workspace) -> None:
    batch = BatchEmitter(workspace, _frame(), build=build)
    results = batch.emit()
    assert [r.status for r in results] == ["sent", "sent", "invalid", "sent"]
    bad = results[2]
    assert "build failed" in bad.error and "owners[0]" in bad.error
    assert all(r.partition is not None and r.sequence_number is not None for r in results[:2])
    assert sorted(_urns(workspace)) == sorted(
        make_dataset_urn("hive", n) for n in ("sales.orders", "sales.customers", "fin.ledger")
    )
    ledger = latest_aspect(
        workspace.replay(progress=False), make_dataset_urn("hive", "fin.ledger"), "globalTags"
    )
    assert [t["tag"] for t in ledger["tags"]] == ["urn:li:tag:Finance", "urn:li:tag:Gold"]
    assert "1 invalid, 3 sent" in batch.summary.value
    assert batch.progress.value == batch.progress.max == 3
    # Rows that need attention come first in the table.
    assert batch.table.value.index("invalid") < batch.table.value.index("sent")


def test_rows_that_do_not_fit_the_schema_are_not_sent(workspace: mk.Workspace) -> None:
    def loose(row: dict[str, Any]) -> dict[str, Any]:
        record = build(row)
        if row["name"] == "hr.people":
            record["proposedSnapshot"][1]["aspects"][0][1]["owners"][0]["type"] = "BOSS"
        return record

    frame = _frame()
    frame.loc[2, "owner"] = "okoro"
    results = BatchEmitter(workspace, frame, build=loose).emit()
    assert results[2].status == "invalid"
    assert "proposedSnapshot.aspects[0].owners[0].type" in results[2].error
    assert "'BOSS' is not one of" in results[2].error
    assert len(_urns(workspace)) == 3


def test_check_sends_nothing(workspace: mk.Workspace) -> None:
    batch = BatchEmitter(workspace, _frame(), build=build)
    batch.check_button.click()
    assert [r.status for r in batch.results] == ["valid", "valid", "invalid", "valid"]
    assert workspace.replay(progress=False).num_rows == 0


def test_all_or_nothing_holds_every_row_back(workspace: mk.Workspace) -> None:
    results = BatchEmitter(workspace, _frame(), build=build, all_or_nothing=True).emit()
    assert [r.status for r in results] == ["held", "held", "invalid", "held"]
    assert "1 other row(s) are invalid" in results[0].error
    assert workspace.replay(progress=False).num_rows == 0


def test_arrow_tables_and_small_chunks(workspace: mk.Workspace) -> None:
    frame = _frame().drop(index=2)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    batch = BatchEmitter(workspace, table, build=build, chunk_size=1)
    batch.emit_button.click()
    assert [r.status for r in batch.results] == ["sent", "sent", "sent"]
    assert [r.row for r in batch.results] == [0, 1, 2]
    frame_out = batch.results_frame()
    assert list(frame_out["status"]) == ["sent"] * 3
    assert frame_out["sequence_number"].notna().all()


def test_send_failures_are_reported_per_row(flaky_workspace: mk.Workspace) -> None:
    frame = pd.DataFrame(
        {"name": ["ok.one", "refuse.two", "ok.three"], "owner": ["jdoe"] * 3, "tags": [["PII"]] * 3}
    )
    results = BatchEmitter(flaky_workspace, frame, build=build).emit()
    assert [r.status for r in results] == ["sent", "failed", "sent"]
    assert "refused" in results[1].error
    assert results[0].receipt is not None and results[2].receipt is not None
    assert results[0].receipt.partition_key == make_dataset_urn("hive", "ok.one")
    assert results[2].receipt.partition_key == make_dataset_urn("hive", "ok.three")
    assert len(flaky_workspace.outbox.list()) == 1  # the refused event waits for a retry


def test_rows_without_build_must_be_records(workspace: mk.Workspace) -> None:
    record = a.mce(make_dataset_urn("hive", "x"), [a.status(False)])
    results = BatchEmitter(workspace, [record, {"nope": 1}]).emit()
    assert [r.status for r in results] == ["sent", "invalid"]
    with pytest.raises(ConfigurationError, match="DataFrame"):
        BatchEmitter(workspace, "not rows").emit()
    with pytest.raises(ConfigurationError, match="No rows"):
        BatchEmitter(workspace).emit()


def test_warnings_of_the_sends_are_shown_with_the_summary(
    torn_workspace: mk.Workspace,
) -> None:
    batch = BatchEmitter(torn_workspace, _frame(), build=build, chunk_size=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none is given as a Python warning
        results = batch.emit()
    assert [r.status for r in results] == ["sent", "sent", "invalid", "sent"]
    assert batch.warnings and all(isinstance(w, mk.DamagedFileWarning) for w in batch.warnings)
    shown = batch.summary.value.split("<br>")
    assert shown[0] == "<b>✖ 4 rows: 1 invalid, 3 sent</b>"
    assert shown[1:] == [f"⚠ {html.escape(str(w))}" for w in batch.warnings]
