"""BulkEditor: a steward's bulk edit from a CSV or Excel sheet, row by row, with per-row results.

Upload a sheet; every row is planned by a **row planner** (a function given to the editor):
it reads the row, looks up the entity's latest values in the lake, and says what event the row
makes, the diff against those latest values, or why the row is refused. The editor shows each
row's validation and diff, emits the valid rows (through :class:`BatchEmitter`, in chunks, each
row's outcome kept), and offers the per-row results as a CSV download::

    editor = BulkEditor(ws)                      # DataHub csv-enricher's columns
    editor = BulkEditor(ws, planner=my_planner)  # my_planner(ws, rows) -> [RowPlan, ...]
    editor.load("edits.csv", data)               # or the upload button
    editor.plans                                 # one RowPlan per row
    editor.emit()                                # [RowResult(...), ...]
    editor.results_csv()                         # what the download link holds

The planner's contract is :data:`RowPlanner`; the sheet's columns are whatever it reads. The
default, :func:`csv_enricher_planner`, reads DataHub csv-enricher's layout with the planner the
``csv`` ingestion source uses (:mod:`metaverse_kit.ingest.csv_plan`): one home for what a row
means, whether it comes from ``metaverse ingest`` or from this upload.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import dataclasses
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from metaverse_kit.errors import (
    CaptureFileWarning,
    ConfigurationError,
    MetaverseError,
    ValidationError,
    warn,
)
from metaverse_kit.ingest.source import repeated_columns, text_encoding, text_problem
from metaverse_kit.widgets._common import (
    DOCTOR_ADVICE,
    WidgetController,
    esc,
    html_table,
    message_html,
    replay_skipping,
)

if TYPE_CHECKING:
    from metaverse_kit.widgets.batch_emitter import RowResult
    from metaverse_kit.workspace import Workspace

__all__ = ["BulkEditor", "RowPlan", "RowPlanner", "csv_enricher_planner", "read_sheet"]

_MAX_SHOWN = 500


@dataclass(frozen=True)
class RowPlan:
    """What one row of a sheet makes: its event, or why it is refused; the diff it makes.

    ``row`` is the row's number in the sheet (1 is the first row under the header); ``event``
    is the MCE to emit (None when refused); ``problems`` says why a row is refused (empty when
    valid); ``diff`` holds ``(field path, latest value, new value)`` for what changes.
    """

    row: int
    urn: str | None
    event: Mapping[str, Any] | None
    problems: tuple[str, ...] = ()
    diff: tuple[tuple[str, Any, Any], ...] = ()

    @property
    def valid(self) -> bool:
        """Whether the row makes an event and has no problem."""
        return self.event is not None and not self.problems

    @property
    def unchanged(self) -> bool:
        """Whether the row is fine but changes nothing (the lake already holds what it sets)."""
        return self.event is None and not self.problems


#: ``planner(ws, rows) -> plans``: one :class:`RowPlan` per row (a dict of column -> text).
RowPlanner = Callable[["Workspace", Sequence[Mapping[str, str]]], Iterable[RowPlan]]

_EDITS = ("glossary_terms", "tags", "owners", "ownership_type", "description", "domain")


def _at(record: Any, path: str) -> Any:
    """The value at a changed-field path (``tags[tag=urn:li:tag:PII]``, ``owners``, ``a.b``) of
    an aspect record, for showing: an item named in brackets shows as its name, a list of
    named items as their names; None where the record has nothing there."""
    import re

    from metaverse_kit.history.questions import ITEM_KEYS

    def named(value: Any) -> Any:
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            key = next((k for k in ITEM_KEYS if k in value[0]), None)
            return [v.get(key) for v in value] if key else value
        return value

    value = record
    segments = re.findall(r"[^.\[\]]+(?:\[[^\]]*\])?", path)
    for n, segment in enumerate(segments, start=1):
        m = re.fullmatch(r"([^\[]+)(?:\[(?:([^=\]]+)=)?([^\]]*)\])?", segment)
        if m is None or not isinstance(value, Mapping):
            return None
        value = value.get(m[1])
        if m[3] is None or not isinstance(value, list):
            continue
        if m[2] is None:  # by position: paths[2]
            index = int(m[3]) if m[3].isdigit() else -1
            value = value[index] if 0 <= index < len(value) else None
            continue
        found = [v for v in value if isinstance(v, Mapping) and str(v.get(m[2])) == m[3]]
        if not found:
            return None
        # NOTE: an item named by the path shows as its name; a field inside it as that field.
        value = m[3] if n == len(segments) else found[0]
    return named(value)


def csv_enricher_planner(ws: Workspace, rows: Sequence[Mapping[str, str]]) -> list[RowPlan]:
    """The toolkit's row planner: DataHub csv-enricher's columns, against the lake's latest values.

    ``resource, subresource, glossary_terms, tags, owners, ownership_type, description,
    domain``; each row is applied, as the ``csv`` ingestion source applies it, to the latest
    value of each aspect it touches (tags, owners and terms added to those there). A row that
    sets nothing is refused; one whose values the lake already holds is unchanged.
    """
    from metaverse_kit.events.aspects import mce
    from metaverse_kit.ingest.csv_plan import plan_rows
    from metaverse_kit.ingest.lake_state import LakeState

    # NOTE: around damaged Capture files (the intact blocks are read), as the other widgets
    # read the history: one such file refused every sheet with advice meant for programmers.
    events, skipped = replay_skipping(ws)
    if skipped:
        warn(
            CaptureFileWarning(
                f"{len(skipped)} damaged part(s) of Capture files (such as {skipped[0].path}) "
                "were left out of the values this sheet is planned on. " + DOCTOR_ADVICE
            )
        )
    state = LakeState(events, pipeline_name="steward-app", source_type="csv")
    plans = []
    for row, plan in zip(rows, plan_rows(rows, state.latest, first_line=1), strict=True):
        if plan.problems:
            plans.append(RowPlan(plan.line, plan.urn, None, plan.problems))
        elif not any((row.get(k) or "").strip() for k in _EDITS):
            sets = "glossary_terms, tags, owners or description"
            plans.append(
                RowPlan(plan.line, plan.urn, None, (f"the row sets nothing: fill {sets}",))
            )
        elif not plan.aspects:
            plans.append(RowPlan(plan.line, plan.urn, None))
        else:
            assert plan.urn is not None
            diff = tuple(
                (f"{c.aspect}.{path}", _at(c.before, path), _at(c.after, path))
                for c in plan.changes
                for path in c.changed_fields
            )
            plans.append(RowPlan(plan.line, plan.urn, mce(plan.urn, list(plan.aspects)), (), diff))
    return plans


def _column(path: str, columns: Iterable[str]) -> str | None:
    """The column of a sheet an event's field (``aspects[1].description``,
    ``aspects[0].tags[2].tag``) comes from: the nearest name on its path that is a column's,
    ignoring case and underscores (``glossaryTerms`` is ``glossary_terms``); None if none is.
    """
    named = {c.replace("_", "").lower(): c for c in columns}
    for name in reversed(re.findall(r"[A-Za-z_]\w*", re.sub(r"\[[^\]]*\]", "", path))):
        column = named.get(name.replace("_", "").lower())
        if column is not None:
            return column
    return None


def _refuse_repeats(name: str, header: Sequence[str]) -> None:
    named = repeated_columns([h if h else f"<unnamed {i}>" for i, h in enumerate(header)])
    if named:
        raise ConfigurationError(
            f"{name} names a column more than once in its first row: {named}; keep one column "
            "of each name (a list's items go in one cell, separated by '|')"
        )


def read_sheet(name: str, data: bytes) -> list[dict[str, str]]:
    """The rows of a CSV (UTF-8, or UTF-16 with a byte order mark) or Excel (``.xlsx``, first
    sheet) file: column -> text.

    The first row names the columns; blank rows are skipped. Raises
    :class:`ConfigurationError` naming the file when it is not one of those, has no header,
    names a column twice (one of the cells would be lost), is not readable (a byte that does
    not decode, named by its line and byte offset; a quote never closed), or has a row with a
    non-empty cell under no column name (often a list typed with commas: the cell would be
    lost), naming those rows. :meth:`BulkEditor.load` refuses just such rows instead.
    """
    rows = _sheet_rows(name, data)
    refused = [problem for _, problem in rows if problem]
    if refused:
        listed = "\n".join(f"  - {p}" for p in refused)
        raise ConfigurationError(f"{name} is not read, for cells it would lose:\n{listed}")
    return [row for row, _ in rows]


def _sheet_rows(name: str, data: bytes) -> list[tuple[dict[str, str], str | None]]:
    """Each non-blank row of a sheet (see :func:`read_sheet`) with why it is refused, or None.

    A row is refused when a non-empty cell stands under no column name (beyond the header, or
    under an empty header cell): reading it as the others would lose that cell. Empty ones (a
    trailing separator) lose nothing and are allowed.
    """
    lower = name.lower()
    if lower.endswith(".csv"):
        return _csv_rows(name, data)
    if lower.endswith((".xlsx", ".xlsm")):
        return _excel_rows(name, data)
    raise ConfigurationError(f"{name}: upload a .csv or an .xlsx file")


def _csv_rows(name: str, data: bytes) -> list[tuple[dict[str, str], str | None]]:
    """:func:`_sheet_rows` of a CSV file (comma-separated; UTF-8 with or without a byte order
    mark, or UTF-16 with one, as the ``csv`` ingestion source reads)."""
    problem = text_problem([data])
    if problem:
        raise ConfigurationError(f"{name} {problem}")
    text = data.decode(text_encoding(data))
    # NOTE: csv.reader, not DictReader, which skips blank lines itself: a refused row is named
    # by the line its record starts on, as the csv ingestion source names it. newline="":
    # lines end at \r too (a Mac's CSV), which the reader refused as a newline in a field.
    # strict: a quote never closed took the rest of the file into one cell, and '"a"b' was
    # read as 'ab'; both are refused with the line of their record.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out: list[tuple[dict[str, str], str | None]] = []
    start = 1
    try:
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            # NOTE: a file with blank lines above its header is not empty, as it was called.
            said = "line 1 names no column" if text.strip() else "is empty"
            raise ConfigurationError(f"{name} {said}: the first row must name the columns")
        _refuse_repeats(name, header)
        while True:
            start = reader.line_num + 1
            cells = next(reader, None)
            if cells is None:
                return out
            if not cells:  # [] is a blank line
                continue
            unnamed = _unnamed(header, cells)
            problem = _unnamed_problem(f"{name} line {start}", header, unnamed) if unnamed else None
            # NOTE: a short row lacks the last columns: they read as empty cells.
            padded = cells + [""] * (len(header) - len(cells))
            out.append(({h: v.strip() for h, v in zip(header, padded, strict=False) if h}, problem))
    except csv.Error as exc:
        raise ConfigurationError(
            f"{name} line {start}: the file stops being readable CSV in the record that starts "
            f"here: {exc} (often a quote opened and never closed)"
        ) from None


def _excel_rows(name: str, data: bytes) -> list[tuple[dict[str, str], str | None]]:
    """:func:`_sheet_rows` of an Excel workbook's first sheet.

    A row is also refused when a cell holds a formula without the value it computes (a
    workbook written by a program, never saved by Excel): it would read as empty.
    """
    # PERF: read once with the formulas, which a workbook without any needs no more; one with
    # formulas is read again for the values Excel saved with them.
    from openpyxl.worksheet.formula import ArrayFormula, DataTableFormula

    title, rows = _read_book(name, data, data_only=False)
    # NOTE: a text cell starting with "=" reads as a formula too: it costs a second read only.
    formulas = [
        (r, c)
        for r, values in enumerate(rows)
        for c, v in enumerate(values)
        if (isinstance(v, str) and v.startswith("="))
        or isinstance(v, (ArrayFormula, DataTableFormula))
    ]
    uncomputed: dict[int, list[int]] = {}  # row index -> column indexes, from 0
    if formulas:
        _, computed = _read_book(name, data, data_only=True)
        # NOTE: a formula computing "" is saved with an empty value of type "str"; one never
        # computed has none (openpyxl writes such formulas, Excel computes them when opened).
        for r, c in formulas:
            if c >= len(computed[r]) or (computed[r][c][0] is None and computed[r][c][1] != "str"):
                uncomputed.setdefault(r, []).append(c)
        rows = [tuple(value for value, _ in row) for row in computed]
    if not rows or not any(rows[0]):
        raise ConfigurationError(f"{name} is empty: the first row must name the columns")
    header = [str(h).strip() if h is not None else "" for h in rows[0]]
    lost = uncomputed.get(0)
    if lost:
        raise ConfigurationError(
            f"{name}, sheet {title!r}: {_uncomputed(lost, 1)} in the header: open the workbook "
            "in Excel and save it (Excel computes its formulas then), or type the column names"
        )
    _refuse_repeats(name, header)
    out: list[tuple[dict[str, str], str | None]] = []
    for number, values in enumerate(rows[1:], start=2):
        lost = uncomputed.get(number - 1)
        if not lost and not any(v not in (None, "") for v in values):
            continue
        cells = ["" if v is None else str(v) for v in values]
        unnamed = _unnamed(header, cells)
        problems = []
        if lost:
            named = ", ".join(
                f"{_uncomputed([c], number)} ({header[c] or 'no column'})"
                if c < len(header)
                else _uncomputed([c], number)
                for c in lost
            )
            problems.append(
                f"{name} row {number} (sheet {title!r}): {named} holds a formula without "
                "its value, which would read as empty: the workbook was written by a program "
                "that does not compute formulas; open it in Excel and save it, or type the "
                "value in place of the formula"
            )
        if unnamed:
            problems.append(_unnamed_problem(f"{name} row {number}", header, unnamed, excel=True))
        problem = "; ".join(problems) or None
        out.append(({h: v.strip() for h, v in zip(header, cells, strict=False) if h}, problem))
    return out


def _read_book(name: str, data: bytes, *, data_only: bool) -> tuple[str, list[tuple[Any, ...]]]:
    """The title and rows of a workbook's first sheet: its cells' values with the formulas
    (``data_only=False``), or (value, data type) pairs with the values Excel saved."""
    try:
        from openpyxl import load_workbook
    except ImportError:
        from metaverse_kit.errors import MissingDependencyError

        raise MissingDependencyError("Reading Excel sheets", ["openpyxl"], extra="app") from None
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=data_only)
    except Exception as exc:  # openpyxl raises many types for a damaged file
        raise ConfigurationError(f"{name} is not a readable Excel workbook: {exc}") from None
    try:
        sheet = book.worksheets[0]
        if data_only:
            rows = [tuple((c.value, c.data_type) for c in row) for row in sheet.iter_rows()]
        else:
            rows = list(sheet.iter_rows(values_only=True))
        return str(sheet.title), rows
    finally:
        book.close()


def _uncomputed(columns: Sequence[int], row: int) -> str:
    """The names of cells of a sheet's row (``cell C2``, ``cells A1, B1``), columns from 0."""
    from openpyxl.utils import get_column_letter

    named = ", ".join(f"{get_column_letter(c + 1)}{row}" for c in columns)
    return f"cell{'s' if len(columns) > 1 else ''} {named}"


def _unnamed(header: Sequence[str], cells: Sequence[str]) -> list[tuple[int, str]]:
    """The non-empty cells (column number from 1, text) of a row under no column name."""
    return [
        (i, c.strip())
        for i, c in enumerate(cells, start=1)
        if c.strip() and (i > len(header) or not header[i - 1])
    ]


def _unnamed_problem(
    where: str, header: Sequence[str], unnamed: Sequence[tuple[int, str]], *, excel: bool = False
) -> str:
    """Why a row with cells under no column name is refused, and how such a row is fixed."""
    if excel:
        from openpyxl.utils import get_column_letter

        found = ", ".join(f"{c!r} (column {get_column_letter(i)})" for i, c in unnamed)
        advice = ""
    else:
        found = ", ".join(f"{c!r} (column {i})" for i, c in unnamed)
        advice = 'quote a cell that holds a comma ("a, b"); '
    return (
        f"{where}: cells under no column of the header ({', '.join(h for h in header if h)}): "
        f"{found}; the row is refused, those cells would be lost: {advice}a list's items go "
        "in one cell, separated by '|' (PII|Finance)"
    )


class BulkEditor(WidgetController):
    """Plan, check, emit and report a sheet of edits (see the module notes).

    ``planner`` is a :data:`RowPlanner`; ``chunk_size`` rows are sent per call to the hub.
    ``on_emitted(urns)`` is called with the urns of the rows sent. Raises
    :class:`ConfigurationError` when ``planner`` is not callable.
    """

    def __init__(
        self,
        ws: Workspace,
        *,
        planner: RowPlanner = csv_enricher_planner,
        chunk_size: int = 100,
        on_emitted: Callable[[list[str]], None] | None = None,
    ) -> None:
        if not callable(planner):
            raise ConfigurationError(f"planner must be a function, not {type(planner).__name__}")
        self.ws = ws
        self.planner = planner
        self.chunk_size = chunk_size
        self.on_emitted = on_emitted
        self.name = ""
        self.plans: list[RowPlan] = []
        self.results: list[RowResult] = []
        # NOTE: plans once emitted are spent: emitting them again would send every row twice.
        self._spent = False
        self.upload = W.FileUpload(
            accept=".csv,.xlsx", multiple=False, description="Upload CSV or Excel"
        )
        self.upload.layout.width = "auto"
        self.emit_button = W.Button(
            description="Emit valid rows",
            icon="paper-plane",
            button_style="primary",
            disabled=True,
        )
        self.summary = W.HTML("")
        self.table = W.HTML("")
        self.download = W.HTML("")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="Sent")
        self.progress.layout.visibility = "hidden"
        self.upload.observe(self._uploaded, names="value")
        self.emit_button.on_click(self._emit_clicked)

    def _build(self) -> W.Widget:
        return W.VBox(
            [
                W.HBox([self.upload, self.emit_button]),
                self.progress,
                self.summary,
                self.download,
                self.table,
            ]
        )

    # -- what it does ---------------------------------------------------------------------------

    def load(self, name: str, data: bytes) -> list[RowPlan]:
        """Read a sheet and plan every row; show and return the plans.

        A row with a non-empty cell under no column name (beyond the header: often a list
        typed with commas), or with an Excel formula no program has computed, is refused with
        the cells, not planned. A planned row whose event the workspace would refuse
        (:meth:`Workspace.check <metaverse_kit.workspace.Workspace.check>`) is refused with
        the reason, named by its column where the event's field says which. Raises
        :class:`ConfigurationError` for a file that cannot be read, and what the planner
        raises; either is shown, and leaves nothing loaded (the previous sheet's plans are
        dropped and Emit is disabled).
        """
        try:
            read = _sheet_rows(name, data)
            if not read:
                raise ConfigurationError(f"{name} has a header but no row to apply")
            plans = self._plan(read)
        except Exception as exc:
            # NOTE: the previous sheet's plans go too: Emit sent them after a failed upload,
            # under a summary that said the new file was not loaded.
            self._unload()
            said = str(exc) if isinstance(exc, MetaverseError) else f"{type(exc).__name__}: {exc}"
            self.summary.value = message_html(
                f"Not loaded: {said.rstrip('.')}. Nothing is loaded now: upload the fixed file.",
                ok=False,
            )
            raise
        self.name = name
        self.plans = plans
        self.results = []
        self._spent = False
        valid = sum(p.valid for p in self.plans)
        unchanged = sum(p.unchanged for p in self.plans)
        refused = len(self.plans) - valid - unchanged
        self.summary.value = message_html(
            f"{name}: {len(read)} rows, {valid} valid"
            + (f", {unchanged} unchanged" if unchanged else "")
            + (f", {refused} refused (reasons below)" if refused else ""),
            ok=not refused,
        )
        self.emit_button.description = f"Emit {valid} valid rows"
        self.emit_button.disabled = valid == 0
        self.download.value = ""
        self.progress.layout.visibility = "hidden"
        self._show()
        return self.plans

    def _plan(self, read: Sequence[tuple[dict[str, str], str | None]]) -> list[RowPlan]:
        """One plan per row read: refused as read, or the planner's, checked by the workspace.

        A refused row is not given to the planner, so no later row of its entity is planned on
        top of what it set (its change reached the lake through that later row). A row whose
        event the workspace refuses is held back the same way: the rows kept are planned again
        without it, until no new row is refused (each round holds back at least one more).
        """
        refused: dict[int, tuple[str | None, tuple[str, ...]]] = {
            i: (None, (problem,)) for i, (_, problem) in enumerate(read) if problem is not None
        }
        while True:
            kept = [i for i in range(len(read)) if i not in refused]
            rows = [read[i][0] for i in kept]
            planned = list(self.planner(self.ws, rows)) if rows else []
            if len(planned) != len(rows):
                raise ConfigurationError(
                    f"the row planner returned {len(planned)} plans for {len(rows)} rows"
                )
            columns = {column for row in rows for column in row}
            found = self._check(planned, columns)
            if not found:
                break
            refused.update({kept[k]: (planned[k].urn, problems) for k, problems in found.items()})
        if not refused:
            return planned
        # NOTE: the rows planned get their numbers in the whole sheet.
        plans = iter(planned)
        return [
            RowPlan(i + 1, refused[i][0], None, refused[i][1])
            if i in refused
            else dataclasses.replace(next(plans), row=i + 1)
            for i in range(len(read))
        ]

    def _check(self, plans: Sequence[RowPlan], columns: set[str]) -> dict[int, tuple[str, ...]]:
        """The problems, by place in ``plans``, of the valid plans whose events the workspace
        would refuse to emit; each named by the row's column its field comes from, if any."""
        valid = [k for k, p in enumerate(plans) if p.valid]
        if not valid:
            return {}
        try:
            # PERF: one check of all the events, which names every problem of every event.
            self.ws.check([e for k in valid if (e := plans[k].event) is not None])
        except ValidationError as exc:
            found: dict[int, list[str]] = {}
            for problem in exc.problems:
                m = re.fullmatch(r"events\[(\d+)\]\.?(.*)", problem.path, re.DOTALL)
                if m is None:
                    raise  # about no one event: nothing a row of the sheet can fix
                column = _column(m[2], columns)
                said = f"{column or m[2] or 'the event'}: {problem.message}"
                found.setdefault(valid[int(m[1])], []).append(said)
            return {k: tuple(problems) for k, problems in found.items()}
        return {}

    def emit(self) -> list[RowResult]:
        """Send the valid rows' events; one result per row of the sheet, shown and returned.

        Refused rows are ``invalid`` with their problems; a row whose send failed is
        ``failed`` with the reason (its event waits in the workspace's outbox). The plans are
        then spent: raises :class:`ConfigurationError` when no sheet is loaded, or when its
        rows were emitted already (load a sheet again to emit again).
        """
        from metaverse_kit.widgets.batch_emitter import BatchEmitter, RowResult

        if not self.plans:
            raise ConfigurationError("no sheet is loaded: upload a CSV or Excel file first")
        if self._spent:
            raise ConfigurationError(
                f"the rows of {self.name} were emitted already: upload a sheet to emit again "
                "(the same one is planned against the lake anew)"
            )
        # NOTE: spent from the first send on, even if one fails: what was sent is in the lake
        # and what failed waits in the outbox; sending again would duplicate both.
        self._spent = True
        self.emit_button.disabled = True
        valid = [p for p in self.plans if p.valid]
        self.progress.layout.visibility = "visible"
        sender = BatchEmitter(
            self.ws,
            [{"event": p.event} for p in valid],
            build=lambda r: r["event"],
            chunk_size=self.chunk_size,
        )
        sender.progress = self.progress
        sent = {p.row: r for p, r in zip(valid, sender.emit(), strict=True)}
        self.results = [
            RowResult(p.row, p.urn, sent[p.row].status, sent[p.row].error, sent[p.row].receipt)
            if p.row in sent
            else RowResult(p.row, p.urn, "unchanged", "the lake already holds what it sets")
            if p.unchanged
            else RowResult(p.row, p.urn, "invalid", "; ".join(p.problems) or "no event")
            for p in self.plans
        ]
        statuses = ("sent", "invalid", "unchanged")
        counts = {s: sum(r.status == s for r in self.results) for s in statuses}
        failed = len(self.results) - sum(counts.values())
        self.summary.value = message_html(
            f"{counts['sent']} emitted, {counts['invalid']} refused"
            + (f", {counts['unchanged']} unchanged" if counts["unchanged"] else "")
            + (f", {failed} failed to send (kept in the outbox)" if failed else ""),
            ok=not (counts["invalid"] or failed),
        )
        self.emit_button.disabled = True
        encoded = base64.b64encode(self.results_csv().encode()).decode()
        stem = self.name.rsplit(".", 1)[0] or "bulk-edit"
        self.download.value = (
            f"<a download='{esc(stem)}-results.csv' href='data:text/csv;base64,{encoded}'>"
            "⬇ Download the per-row results (CSV)</a>"
        )
        self._show()
        if self.on_emitted is not None:
            self.on_emitted([r.urn for r in self.results if r.status == "sent" and r.urn])
        return self.results

    def _unload(self) -> None:
        """Drop the sheet loaded, its plans and results: nothing to emit, nothing shown."""
        self.name = ""
        self.plans = []
        self.results = []
        self._spent = False
        self.emit_button.description = "Emit valid rows"
        self.emit_button.disabled = True
        self.progress.layout.visibility = "hidden"
        self.table.value = ""
        self.download.value = ""

    def results_csv(self) -> str:
        """The per-row results as CSV text: row, urn, status, reason, partition, sequence."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["row", "urn", "status", "reason", "partition", "sequence_number"])
        for r in self.results:
            writer.writerow(
                [
                    r.row,
                    r.urn or "",
                    r.status,
                    r.error,
                    "" if r.partition is None else r.partition,
                    "" if r.sequence_number is None else r.sequence_number,
                ]
            )
        return out.getvalue()

    # -- the widget -----------------------------------------------------------------------------

    def _show(self) -> None:
        by_row = {r.row: r for r in self.results}
        ordered = sorted(self.plans, key=lambda p: (p.valid, p.row))
        rows = []
        for p in ordered[:_MAX_SHOWN]:
            result = by_row.get(p.row)
            status = (
                result.status
                if result
                else "valid"
                if p.valid
                else "unchanged"
                if p.unchanged
                else "refused"
            )
            reason = "; ".join(p.problems) if p.problems else (result.error if result else "")
            changes = "; ".join(
                f"{path}: {_short(old)} → {_short(new)}" for path, old, new in p.diff
            )
            rows.append([p.row, p.urn or "", status, reason, changes or "—"])
        more = len(ordered) - _MAX_SHOWN
        self.table.value = (
            "<div class='jp-RenderedHTMLCommon'>"
            + html_table(["row", "urn", "status", "reason", "change (latest → new)"], rows)
            + (f"<i>{more} more rows in the download</i>" if more > 0 else "")
            + "</div>"
        )

    def _uploaded(self, change: dict) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0]
        with contextlib.suppress(MetaverseError):  # NOTE: load showed it
            self.load(str(item["name"]), bytes(item["content"]))

    def _emit_clicked(self, *_: Any) -> None:
        if self.emit_button.disabled:
            # NOTE: ipywidgets runs the click handlers whatever `disabled` says: a double
            # click's second message left the browser before the first click disabled it.
            return
        try:
            self.emit()
        except MetaverseError as exc:
            self.summary.value = message_html(f"Not emitted: {exc}", ok=False)


def _short(value: Any, limit: int = 60) -> str:
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value) or "(none)"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
