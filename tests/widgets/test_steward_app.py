"""The steward app's widgets without a browser: Bulk edit with an injected planner, the tabs."""

from __future__ import annotations

import base64
import csv
import io
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.demo import emit_sample_history
from metaverse_kit.widgets.bulk_editor import BulkEditor, read_sheet
from metaverse_kit.widgets.steward_app import StewardApp, load_planner
from tests.conftest import REPO
from tests.widgets.row_planner import plan, sheet

URN = mk.make_dataset_urn("hive", "bulk.t1")


def test_a_sheet_is_planned_row_by_row_and_only_valid_rows_are_emitted(
    workspace: mk.Workspace,
) -> None:
    workspace.emit(mk.mce(URN, [mk.aspects.global_tags(["Legacy"])]))
    sent: list[list[str]] = []
    editor = BulkEditor(workspace, planner=plan, on_emitted=sent.append)
    editor.widget  # noqa: B018 - built as the app shows it
    plans = editor.load("edits.csv", sheet().encode())
    assert len(plans) == 20 and sum(p.valid for p in plans) == 18
    assert "20 rows, 18 valid, 2 refused" in editor.summary.value
    assert editor.emit_button.description == "Emit 18 valid rows"
    # The diff is against the latest value in the lake: the tag already there stays.
    assert plans[0].diff == (("globalTags.tags", ["Legacy"], ["Bulk", "Legacy", "Reviewed"]),)
    assert "not-a-urn-4" in editor.table.value and "is not a dataset urn" in editor.table.value

    editor.emit_button.click()
    results = editor.results
    assert [r.status for r in results].count("sent") == 18
    refused = {r.row: r.error for r in results if r.status == "invalid"}
    assert refused == {4: "resource: 'not-a-urn-4' is not a dataset urn", 13: "tags: no tag given"}
    assert "18 emitted, 2 refused" in editor.summary.value
    assert len(sent) == 1 and len(sent[0]) == 18
    # The download link holds the same per-row results.
    encoded = editor.download.value.split("base64,", 1)[1].split("'", 1)[0]
    rows = list(csv.DictReader(io.StringIO(base64.b64decode(encoded).decode())))
    assert len(rows) == 20 and rows[3]["status"] == "invalid" and rows[0]["partition"] != ""
    events = workspace.replay(progress=False)
    latest = mk.history.latest_aspect(events, URN, "globalTags")
    assert sorted(t["tag"] for t in latest["tags"]) == [
        "urn:li:tag:Bulk",
        "urn:li:tag:Legacy",
        "urn:li:tag:Reviewed",
    ]


def test_the_default_planner_reads_csv_enricher_rows_against_the_lake(
    workspace: mk.Workspace,
) -> None:
    workspace.emit(mk.mce(URN, [mk.aspects.global_tags(["Legacy"])]))
    editor = BulkEditor(workspace)  # DataHub csv-enricher's columns, the csv source's planner
    plans = editor.load("edits.csv", sheet().encode())
    assert [p.row for p in plans if not p.valid] == [4, 13]
    assert plans[3].problems[0].startswith("resource: Invalid URN 'not-a-urn-4'")
    assert plans[12].problems[0].startswith("the row sets nothing")
    assert ("globalTags.tags[tag=urn:li:tag:Bulk]", None, "urn:li:tag:Bulk") in plans[0].diff
    editor.emit()
    assert "18 emitted, 2 refused" in editor.summary.value
    latest = mk.history.latest_aspect(workspace.replay(progress=False), URN, "globalTags")
    assert sorted(t["tag"] for t in latest["tags"]) == [
        "urn:li:tag:Bulk",
        "urn:li:tag:Legacy",
        "urn:li:tag:Reviewed",
    ]
    # The same sheet again: what it sets is in the lake now.
    again = editor.load("edits.csv", sheet().encode())
    assert (
        sum(p.unchanged for p in again) == 18 and "18 unchanged, 2 refused" in editor.summary.value
    )


def test_excel_sheets_and_bad_files(workspace: mk.Workspace) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet_ = book.active
    sheet_.append(["resource", "tags"])
    sheet_.append([URN, "Gold"])
    sheet_.append([None, None])  # blank rows are skipped
    out = io.BytesIO()
    book.save(out)
    assert read_sheet("edits.xlsx", out.getvalue()) == [{"resource": URN, "tags": "Gold"}]
    editor = BulkEditor(workspace, planner=plan)
    for name, data, message in [
        ("edits.csv", "resource\n\xe9".encode("latin-1"), "not UTF-8"),
        ("edits.csv", b"", "is empty"),
        ("edits.csv", b"resource,tags\n", "no row to apply"),
        ("edits.txt", b"x", "upload a .csv or an .xlsx"),
        ("edits.xlsx", b"not a zip", "not a readable Excel workbook"),
        # A second tags column: one of the two cells was dropped without a word.
        (
            "edits.csv",
            f"resource,tags,tags\n{URN},Gold,Silver\n".encode(),
            "names a column more than once in its first row: &#x27;tags&#x27; in columns 2 and 3",
        ),
    ]:
        upload = {"name": name, "type": "", "size": len(data), "content": memoryview(data)}
        upload["last_modified"] = datetime(2026, 3, 2, tzinfo=UTC)
        editor.upload.value = (upload,)
        assert message in editor.summary.value, (name, editor.summary.value)
        assert editor.emit_button.disabled


def test_a_row_with_cells_under_no_column_is_refused_with_them_and_not_planned(
    workspace: mk.Workspace,
) -> None:
    """A list typed with commas (PII,Finance) was read as PII alone, without a word."""
    from openpyxl import Workbook

    other = mk.make_dataset_urn("hive", "bulk.t2")
    data = (
        "resource,tags\n"
        f'"{URN}",PII,Finance\n'  # line 2, row 1: refused
        "\n"
        f'"{URN}",Gold,,\n'  # line 4, row 2: empty cells beyond the header lose nothing
        f'"{other}",Silver\n'  # line 5, row 3
    ).encode()
    editor = BulkEditor(workspace)  # the csv source's planner
    plans = editor.load("edits.csv", data)
    assert [(p.row, p.valid) for p in plans] == [(1, False), (2, True), (3, True)]
    assert plans[0].problems == (
        "edits.csv line 2: cells under no column of the header (resource, tags): 'Finance' "
        "(column 3); the row is refused, those cells would be lost: quote a cell that holds a "
        "comma (\"a, b\"); a list's items go in one cell, separated by '|' (PII|Finance)",
    )
    assert "3 rows, 2 valid, 1 refused" in editor.summary.value
    assert "(column 3)" in editor.table.value
    editor.emit()
    assert {r.row: r.status for r in editor.results} == {1: "invalid", 2: "sent", 3: "sent"}
    assert editor.results[0].error == plans[0].problems[0]
    # Row 2 is planned on what the lake holds, not on what the refused row 1 would have set.
    latest = mk.history.latest_aspect(workspace.replay(progress=False), URN, "globalTags")
    assert [t["tag"] for t in latest["tags"]] == ["urn:li:tag:Gold"]
    with pytest.raises(mk.ConfigurationError, match=r"edits\.csv line 2: cells under no column"):
        read_sheet("edits.csv", data)

    book = Workbook()
    sheet_ = book.active
    sheet_.append(["resource", "tags", None])
    sheet_.append([URN, "Gold", None, "Silver"])
    sheet_.append([URN, "Bronze"])
    out = io.BytesIO()
    book.save(out)
    plans = BulkEditor(workspace, planner=plan).load("edits.xlsx", out.getvalue())
    assert (
        plans[0]
        .problems[0]
        .startswith(
            "edits.xlsx row 2: cells under no column of the header (resource, tags): 'Silver' "
            "(column D); the row is refused, those cells would be lost: a list's items go in one "
            "cell"
        )
    )
    assert plans[1].row == 2 and plans[1].valid


def test_a_row_the_workspace_would_refuse_is_refused_at_load_and_not_planned_on(
    workspace: mk.Workspace,
) -> None:
    """A NUL in a description was planned valid, refused at emit, and its tag reached the lake
    anyway through the next row of its entity, planned on top of it."""
    data = f'resource,tags,description\n"{URN}",PII,"a\x00b"\n"{URN}",Gold,\n'.encode()
    editor = BulkEditor(workspace)  # the csv source's planner
    plans = editor.load("edits.csv", data)
    assert [(p.row, p.urn, p.valid) for p in plans] == [(1, URN, False), (2, URN, True)]
    # Named by the sheet's column, not proposedSnapshot.aspects[1].description.
    assert plans[0].problems == ("description: contains a NUL character (\\x00) at position 1",)
    # Row 2 is planned again without row 1: PII is not among what it sets.
    assert plans[1].diff == (("globalTags.tags", None, ["urn:li:tag:Gold"]),)
    assert "2 rows, 1 valid, 1 refused" in editor.summary.value
    assert editor.emit_button.description == "Emit 1 valid rows"
    editor.emit()
    assert "1 emitted, 1 refused" in editor.summary.value
    assert editor.results[0].error == plans[0].problems[0]
    latest = mk.history.latest_aspect(workspace.replay(progress=False), URN, "globalTags")
    assert [t["tag"] for t in latest["tags"]] == ["urn:li:tag:Gold"]


def test_a_failed_upload_leaves_nothing_loaded_to_emit(workspace: mk.Workspace) -> None:
    """Emit sent the previous sheet after a failed upload, its button still enabled."""

    def upload(name: str, data: bytes) -> None:
        item = {"name": name, "type": "", "size": len(data), "content": memoryview(data)}
        item["last_modified"] = datetime(2026, 3, 2, tzinfo=UTC)
        editor.upload.value = (item,)

    editor = BulkEditor(workspace, planner=plan)
    editor.widget  # noqa: B018 - built as the app shows it
    upload("first.csv", f'resource,tags\n"{URN}",WrongTag\n'.encode())
    assert not editor.emit_button.disabled and "WrongTag" in editor.table.value
    upload("fixed.csv", f'resource,tags,tags\n"{URN}",Fixed,Fixed\n'.encode())
    assert "Not loaded: fixed.csv names a column more than once" in editor.summary.value
    assert editor.plans == [] and editor.table.value == ""
    assert editor.emit_button.disabled and editor.emit_button.description == "Emit valid rows"
    assert "Nothing is loaded now" in editor.summary.value
    editor.emit_button.click()
    with pytest.raises(mk.ConfigurationError, match="no sheet is loaded"):
        editor.emit()
    assert workspace.replay(progress=False).num_rows == 0


def test_a_double_click_emits_once_and_emitted_plans_are_spent(workspace: mk.Workspace) -> None:
    """ipywidgets runs a click's handlers even on a disabled button: a double click sent every
    row twice."""
    urns = [mk.make_dataset_urn("hive", f"bulk.t{i}") for i in range(3)]
    data = ("resource,tags\n" + "".join(f'"{urn}",PII\n' for urn in urns)).encode()
    editor = BulkEditor(workspace, chunk_size=1)  # the csv source's planner
    editor.load("edits.csv", data)
    while_sending: list[bool] = []
    editor.progress.observe(
        lambda _: while_sending.append(editor.emit_button.disabled), names="value"
    )
    editor.emit_button.click()
    editor.emit_button.click()  # the second message of a double click
    assert workspace.replay(progress=False).num_rows == 3
    assert "3 emitted, 0 refused" in editor.summary.value
    assert while_sending and all(while_sending) and editor.emit_button.disabled
    with pytest.raises(mk.ConfigurationError, match="emitted already: upload a sheet"):
        editor.emit()
    # A new load plans against the lake anew (its rows are there now) and can be emitted.
    editor.load("edits.csv", data)
    assert sum(p.unchanged for p in editor.plans) == 3 and editor.emit_button.disabled
    editor.load("more.csv", f'resource,tags\n"{URN}",More\n'.encode())
    assert not editor.emit_button.disabled
    editor.emit_button.click()
    assert workspace.replay(progress=False).num_rows == 4


def _with_cached_values(book: bytes, values: Mapping[str, str]) -> bytes:
    """A workbook as Excel saves it: each formula cell named in ``values`` with the text it
    computed (openpyxl writes formulas without any)."""
    import re
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(book)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            text = src.read(item)
            if item.filename.startswith("xl/worksheets/"):
                xml = text.decode()
                for cell, value in values.items():
                    xml = re.sub(
                        rf'<c r="{cell}">(<f>.*?</f>)<v\s*/>',
                        rf'<c r="{cell}" t="str">\1<v>{value}</v>',
                        xml,
                    )
                text = xml.encode()
            dst.writestr(item, text)
    return out.getvalue()


def test_an_excel_formula_without_its_value_refuses_its_row(workspace: mk.Workspace) -> None:
    """A workbook written by a program has formulas Excel never computed: they read as empty,
    and the row was planned without that edit."""
    from openpyxl import Workbook

    book = Workbook()
    sheet_ = book.active
    sheet_.title = "Edits"
    sheet_.append(["resource", "tags", "description"])
    sheet_.append([URN, "PII", '=CONCATENATE("Orders ","table")'])  # row 2: never computed
    sheet_.append([URN, "Gold", '=IF(TRUE,"","x")'])  # row 3: computed ""
    sheet_.append([URN, "Silver", "=A1"])  # row 4: computed "resource"
    sheet_.append([URN, "Bronze", '=CONCATENATE("a","b")'])  # row 5: never computed
    out = io.BytesIO()
    book.save(out)
    data = _with_cached_values(out.getvalue(), {"C3": "", "C4": "resource"})
    plans = BulkEditor(workspace).load("edits.xlsx", data)
    assert [(p.row, p.valid) for p in plans] == [(1, False), (2, True), (3, True), (4, False)]
    assert plans[0].problems == (
        "edits.xlsx row 2 (sheet 'Edits'): cell C2 (description) holds a formula without its "
        "value, which would read as empty: the workbook was written by a program that does not "
        "compute formulas; open it in Excel and save it, or type the value in place of the "
        "formula",
    )
    assert ("editableDatasetProperties.description", None, "resource") in plans[2].diff
    assert not any(path.endswith("description") for path, _, _ in plans[1].diff)
    assert "cell C5 (description)" in plans[3].problems[0]
    with pytest.raises(mk.ConfigurationError, match=r"edits\.xlsx row 2 \(sheet 'Edits'\)"):
        read_sheet("edits.xlsx", data)


def test_the_app_has_four_tabs_composes_from_a_template_and_shows_activity(
    workspace: mk.Workspace,
) -> None:
    emit_sample_history(workspace)
    threads = set(threading.enumerate())
    app = StewardApp(workspace, planner=plan)
    try:
        page = app.widget
        tabs = page.children[1]
        assert tabs.titles == ("Browse", "Compose", "Bulk edit", "Activity")
        assert "local workspace" in page.children[0].value
        urn = mk.make_dataset_urn("hive", "sales.orders")
        app.template_urn.value = urn
        # The aspects the entity has in the lake come first.
        have = {"datasetProperties", "globalTags", "ownership", "status", "glossaryTerms"}
        assert app.template_aspect.options[0] in have
        app.template_aspect.value = "globalTags"
        app.template_button.click()
        assert "Loaded the latest globalTags" in app.template_message.value
        app.composer.emit_button.click()
        assert "MCE Published" in app.composer.status.value
        assert app.touched == [urn]
        deadline = time.monotonic() + 60
        while urn not in app.activity.value:
            assert time.monotonic() < deadline, app.activity.value
            time.sleep(0.05)
        assert urn in app.recent.value
    finally:
        app.feed.close()
    assert set(threading.enumerate()) == threads


def test_without_a_planner_bulk_edit_says_it_is_not_available(workspace: mk.Workspace) -> None:
    app = StewardApp(workspace, planner=None, live=False)
    tabs = app.widget.children[1]
    assert "no row planner configured" in tabs.children[2].value
    assert app.feed is None


def test_a_damaged_capture_file_leaves_compose_and_bulk_edit_working(
    workspace: mk.Workspace,
) -> None:
    """One damaged file left Compose with no template and refused every sheet, telling a
    steward to pass on_bad_file='skip'; now both read around it, and say which file it is
    and who can repair it."""
    for i in range(3):
        urn = mk.make_dataset_urn("hive", f"db.t{i}")
        workspace.emit(mk.mce(urn, [mk.aspects.global_tags(["PII"])]))
    folder = next((workspace.path / "lake").rglob("*.avro")).parent
    (folder / "99.avro").write_bytes(b"not avro at all" * 10)
    app = StewardApp(workspace, live=False)
    assert app.widget is not None and len(app.template_urn.options) == 3
    assert "99.avro" in app.template_message.value
    assert "metaverse doctor" in app.template_message.value
    data = f'resource,tags\n"{mk.make_dataset_urn("hive", "db.t0")}",Gold\n'.encode()
    assert app.bulk is not None
    with pytest.warns(mk.CaptureFileWarning, match="99.avro"):
        plans = app.bulk.load("e.csv", data)
    assert [p.problems for p in plans] == [()]


def test_planners_are_loaded_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_planner("tests.widgets.row_planner:plan") is plan
    for name, message in [
        ("nomodule", "module:function"),
        ("tests.widgets.row_planner:nothing", "Cannot load"),
        ("no.such.module:plan", "Cannot load"),
    ]:
        with pytest.raises(mk.ConfigurationError, match=message):
            load_planner(name)


@pytest.mark.parametrize(
    ("planner", "message"),
    [
        ("nomodule", "a planner is named 'package.module:function', not 'nomodule'"),
        (
            "os:no_such_function",
            "Cannot load the row planner 'os:no_such_function': module 'os' has no attribute "
            "'no_such_function'",
        ),
        ("os:sep", "The row planner 'os:sep' is not a function"),
    ],
)
def test_metaverse_app_refuses_a_planner_that_does_not_load(
    tmp_path: Path, planner: str, message: str
) -> None:
    """Before serving: otherwise every steward's page would fail, the operator seeing nothing."""
    command = [sys.executable, "-m", "metaverse_kit.cli", "app"]
    command += ["--workspace", str(tmp_path / "ws"), "--planner", planner]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"metaverse app: error: {message}\n"
    assert not (tmp_path / "ws").exists()


def test_the_feeds_warnings_follow_the_activity_status(workspace: mk.Workspace) -> None:
    """A damaged Capture block the tail left out warned in the feed's thread only (the
    server's log): the Activity tab shows it under its status."""
    emit_sample_history(workspace)
    app = StewardApp(workspace, planner=None)
    try:
        app.widget  # noqa: B018  (built as the page shows it; the feed starts)
        assert app.feed is not None and app.feed.on_change is not None
        app.feed.warnings.append(mk.CaptureFileWarning("lake/0/x.avro has damaged blocks"))
        app.feed.on_change()
        assert "Following the hub" in app.live_status.value
        assert "⚠ lake/0/x.avro has damaged blocks" in app.live_status.value
    finally:
        if app.feed is not None:
            app.feed.close()
