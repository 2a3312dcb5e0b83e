"""BatchEmitter: one event per row of a pandas DataFrame or an Arrow table, with per-row results.

Every row is built and validated before anything is sent. Rows that cannot be built or do not fit
the schema are reported (with every problem and its path) and not sent; the others are sent in
chunks with a progress bar, and a row whose send failed says why. Nothing is half-sent
silently::

    def build(row):
        return mk.mce(row["urn"], [mk.aspects.ownership([row["owner"]]),
                                   mk.aspects.global_tags(row["tags"])])

    batch = BatchEmitter(ws, df, build=build)
    batch                         # progress bar and result table
    results = batch.emit()        # [RowResult(row=0, urn=..., status="sent", ...), ...]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from metaverse_kit.backends.protocols import Receipt
from metaverse_kit.errors import (
    ConfigurationError,
    EmitError,
    MetaverseError,
    MetaverseWarning,
    warnings_to,
)
from metaverse_kit.events.avro import AvroSchema
from metaverse_kit.events.strict import check_definition
from metaverse_kit.events.validation import validate as validate_record
from metaverse_kit.widgets._common import (
    WidgetController,
    click_once,
    esc,
    html_table,
    message_html,
    warnings_html,
)

if TYPE_CHECKING:
    import pandas as pd

    from metaverse_kit.workspace import Workspace

__all__ = ["STATUSES", "BatchEmitter", "RowResult"]

#: What can happen to a row: built and valid (not sent yet), invalid, sent, failed to send,
#: or held back because other rows were invalid and ``all_or_nothing`` was asked for.
STATUSES = ("valid", "invalid", "sent", "failed", "held")

_MAX_SHOWN = 500


@dataclass(frozen=True)
class RowResult:
    """What happened to one row: its event's urn, status, error, and where it landed."""

    row: int
    urn: str | None
    status: str
    error: str = ""
    receipt: Receipt | None = None

    @property
    def partition(self) -> str | None:
        """The partition the event landed in (None when not sent)."""
        return self.receipt.partition if self.receipt else None

    @property
    def sequence_number(self) -> int | None:
        """The event's sequence number in its partition (None when not sent or not told)."""
        return self.receipt.sequence_number if self.receipt else None


def rows_of(data: Any) -> list[dict[str, Any]]:
    """The rows of a pandas DataFrame, an Arrow table or record batch, or an iterable of dicts.

    Values come back as plain Python values (lists, ints, strings), not numpy scalars. A
    DataFrame's missing value (NaN, None, ``pd.NA``, ``NaT`` in a cell) comes back as None,
    which a nullable field takes as null; a NaN in an Arrow table is a number, not a missing
    value (Arrow has nulls for those), and validation refuses it naming its field. Raises
    :class:`ConfigurationError` for anything else.
    """
    import pyarrow as pa

    if isinstance(data, (pa.Table, pa.RecordBatch)):
        return data.to_pylist()
    if type(data).__name__ == "DataFrame" and hasattr(data, "to_dict"):
        try:
            return pa.Table.from_pandas(data, preserve_index=False).to_pylist()
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            # NOTE: columns Arrow cannot type (mixed objects) still work, with pandas' values;
            # a missing cell is None there too, as Arrow makes it: a NaN that a column of
            # numbers held for an empty cell became null or NaN by what the other columns held.
            cells = data.astype(object)
            return list(cells.where(data.notna(), None).to_dict("records"))
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        rows = list(data)
        if all(isinstance(r, Mapping) for r in rows):
            return [dict(r) for r in rows]
    raise ConfigurationError(
        "A batch is a pandas DataFrame, a pyarrow Table or RecordBatch, or a list of dicts; "
        f"got {type(data).__name__}"
    )


class BatchEmitter(WidgetController):
    """Emit one event per row of ``data``, built by ``build(row) -> record``.

    ``schema`` defaults to the built-in MCE schema (:meth:`Workspace.schema_definition` says
    what it takes; one that is not valid Avro raises :class:`SchemaParseError`); without
    ``build`` each row must be a record already. ``chunk_size`` events are sent per call to
    :meth:`Workspace.emit`. With ``all_or_nothing=True`` no row is sent while any row is invalid.
    """

    def __init__(
        self,
        ws: Workspace,
        data: Any = None,
        *,
        build: Callable[[dict[str, Any]], Any] | None = None,
        schema: Any = None,
        chunk_size: int = 100,
        all_or_nothing: bool = False,
    ) -> None:

        if chunk_size < 1:
            raise ConfigurationError(f"chunk_size must be at least 1, got {chunk_size}")
        self.ws = ws
        self.data = data
        self.build = build
        self.definition = ws.schema_definition(schema)
        # NOTE: every row would pass validation against a definition the registry refuses,
        # then every send would fail; say so before any row is checked.
        check_definition(self.definition)
        self.avro = AvroSchema(self.definition)
        self.chunk_size = chunk_size
        self.all_or_nothing = all_or_nothing
        self.results: list[RowResult] = []
        #: What the last emit's sends warned of (a damaged Capture file set aside), shown with
        #: the summary.
        self.warnings: list[MetaverseWarning] = []
        self._records: dict[int, Any] = {}
        # Whether the last emit sent rows or left them in the outbox: the Emit button stays off
        # until the rows are checked again (the same rows again would be sent twice).
        self._spent = False
        self.progress = W.IntProgress(value=0, min=0, max=1, description="Rows")
        self.summary = W.HTML("")
        self.table = W.HTML("")
        self.check_button = W.Button(description="Validate rows", icon="check")
        self.emit_button = W.Button(
            description="Emit rows", icon="paper-plane", button_style="primary"
        )
        self.check_button.on_click(lambda *_: self._clicked(self.check))
        click_once(
            self.emit_button, lambda: self._clicked(self.emit), ready=lambda: not self._spent
        )

    def _build(self) -> W.Widget:
        return W.VBox(
            [
                W.HBox([self.check_button, self.emit_button]),
                self.progress,
                self.summary,
                self.table,
            ]
        )

    def _clicked(self, action: Callable[[], list[RowResult]]) -> None:
        try:
            action()
        except MetaverseError as exc:
            self.summary.value = message_html(str(exc), ok=False)

    def _take(self, data: Any, build: Callable[[dict[str, Any]], Any] | None) -> list[dict]:
        if data is not None:
            self.data = data
        if build is not None:
            self.build = build
        if self.data is None:
            raise ConfigurationError("No rows: pass a DataFrame or an Arrow table as data=")
        return rows_of(self.data)

    def check(self, data: Any = None, *, build: Callable | None = None) -> list[RowResult]:
        """Build and validate every row, send nothing; return and show one result per row.

        The Emit button, off after an emit, is on again.
        """
        self._spent = False
        self.emit_button.disabled = False
        return self._check(data, build)

    def _check(self, data: Any, build: Callable | None) -> list[RowResult]:
        rows = self._take(data, build)
        results: list[RowResult] = []
        self._records = {}
        self.progress.max = max(len(rows), 1)
        self.progress.value = 0
        self.progress.description = "Checked"
        for i, row in enumerate(rows):
            results.append(self._check_row(i, row))
        self.progress.value = len(rows)
        self._show(results)
        return results

    def _check_row(self, i: int, row: dict[str, Any]) -> RowResult:
        from metaverse_kit.workspace import partition_key_of

        try:
            record = self.build(row) if self.build is not None else row
        except Exception as exc:
            # NOTE: build is the user's code; one bad row must not stop the others being checked.
            return RowResult(
                i, _urn_hint(row), "invalid", f"build failed: {type(exc).__name__}: {exc}"
            )
        urn = partition_key_of(record) or _urn_hint(row)
        problems = validate_record(record, self.avro)
        if problems:
            return RowResult(i, urn, "invalid", "; ".join(str(p) for p in problems))
        self._records[i] = record
        return RowResult(i, urn, "valid")

    def emit(self, data: Any = None, *, build: Callable | None = None) -> list[RowResult]:
        """Validate every row, then send the valid ones; return and show one result per row.

        Invalid rows are reported and not sent (with ``all_or_nothing``, nothing is sent
        then). A failed send marks its rows ``failed`` with the reason; the events stay in
        the workspace's outbox, from which ``ws.outbox.retry()`` sends them again. Once rows
        were sent or kept in the outbox, the Emit button stays off until :meth:`check` (the
        Validate rows button): the same rows again would be sent twice.
        """
        results = self._check(data, build)
        invalid = sum(r.status == "invalid" for r in results)
        if invalid and self.all_or_nothing:
            results = [
                r
                if r.status == "invalid"
                else RowResult(
                    r.row, r.urn, "held", f"not sent: {invalid} other row(s) are invalid"
                )
                for r in results
            ]
            self._show(results)
            return results
        self.warnings = []
        by_row = {r.row: r for r in results}
        todo = [r.row for r in results if r.status == "valid"]
        self.progress.max = max(len(todo), 1)
        self.progress.value = 0
        self.progress.description = "Sent"
        for start in range(0, len(todo), self.chunk_size):
            chunk = todo[start : start + self.chunk_size]
            for row, outcome in zip(chunk, self._send(chunk), strict=True):
                by_row[row] = RowResult(row, by_row[row].urn, *outcome)
            self.progress.value = min(start + len(chunk), len(todo))
            self._show([by_row[r.row] for r in results])
        results = [by_row[r.row] for r in results]
        if todo:
            self._spent = True
            self.emit_button.disabled = True
        self._show(results)
        return results

    def _send(self, rows: list[int]) -> list[tuple[str, str, Receipt | None]]:
        records = [self._records[r] for r in rows]
        try:
            # NOTE: shown with the summary (see warnings_html).
            with warnings_to(self.warnings.append):
                receipts = self.ws.emit(records, schema=self.definition)
        except EmitError as exc:
            failed = {i: e for i, e in exc.failures}
            sent = iter(exc.receipts)
            out: list[tuple[str, str, Receipt | None]] = []
            for i in range(len(rows)):
                if i in failed:
                    out.append(("failed", f"{type(failed[i]).__name__}: {failed[i]}", None))
                else:
                    receipt = next(sent, None)
                    out.append(("sent", "", receipt if isinstance(receipt, Receipt) else None))
            return out
        except MetaverseError as exc:
            return [("failed", f"{type(exc).__name__}: {exc}", None)] * len(rows)
        return [("sent", "", r) for r in receipts]

    def results_frame(self) -> pd.DataFrame:
        """The per-row results as a pandas DataFrame (row, urn, status, error, partition, ...)."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "row": r.row,
                    "urn": r.urn,
                    "status": r.status,
                    "error": r.error,
                    "partition": r.partition,
                    "sequence_number": r.sequence_number,
                }
                for r in self.results
            ],
            columns=["row", "urn", "status", "error", "partition", "sequence_number"],
        ).astype({"sequence_number": "Int64"})

    def _show(self, results: list[RowResult]) -> None:
        self.results = results
        counts = {s: sum(r.status == s for r in results) for s in STATUSES}
        said = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        bad = counts["invalid"] + counts["failed"] + counts["held"]
        self.summary.value = message_html(
            f"{len(results)} rows: {said or 'none'}", ok=not bad
        ) + warnings_html(self.warnings)
        # NOTE: rows that need attention first, so a long batch does not hide them.
        ordered = sorted(results, key=lambda r: (r.status in ("sent", "valid"), r.row))
        shown = ordered[:_MAX_SHOWN]
        more = len(ordered) - len(shown)
        self.table.value = html_table(
            ["row", "urn", "status", "error", "partition", "sequence number"],
            [
                [
                    r.row,
                    r.urn or "",
                    r.status,
                    r.error,
                    "" if r.partition is None else r.partition,
                    "" if r.sequence_number is None else r.sequence_number,
                ]
                for r in shown
            ],
        ) + (f"<i>{esc(more)} more rows: see batch.results_frame()</i>" if more else "")


def _urn_hint(row: Mapping[str, Any]) -> str | None:
    value = row.get("urn")
    return value if isinstance(value, str) else None
