"""The ``csv`` source: stewards' bulk edits in DataHub csv-enricher's layout.

The file is read row by row (``csv.reader``) and each row planned by
:func:`metaverse_kit.ingest.csv_plan.plan_rows` against the lake's latest values: tags, owners
and terms are added to those already there (``replace: true``, or ``metaverse ingest
--replace``, sets them to the row's), descriptions replace. Consecutive rows about one entity
become one MCE. A row with a problem is reported with its line (the line its record starts on,
blank lines and multi-line cells counted) and column and skipped; the others are applied. So
is a row with non-empty cells under no column name (beyond the header, often a list typed with
the separator instead of the array delimiter), which would otherwise be lost; empty ones (a
trailing separator) are allowed. A header that names one of the columns twice is refused.
This source carries edits, not an inventory: it never soft-deletes.

The file is UTF-8 (with or without a byte order mark) or UTF-16 with a byte order mark; one that
is not (Excel's plain "CSV", in the Windows code page) is refused before any row is applied,
naming the line and the byte offset of the first byte that does not decode. A quote that is
never closed, or text after a closing quote, stops the reading at the record it is in (a CSV
reader would otherwise take the rest of the file into one cell, or drop the quote).
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from metaverse_kit.events import aspects as A
from metaverse_kit.events.urns import InvalidUrnError, make_user_urn
from metaverse_kit.ingest.csv_plan import COLUMNS, RowPlan, plan_rows
from metaverse_kit.ingest.source import (
    Source,
    SourceUnreachableError,
    WorkUnit,
    repeated_columns,
    text_encoding,
    text_problem,
)

__all__ = ["CsvConfig", "CsvSource"]


@dataclass
class CsvConfig:
    """Config of the ``csv`` source."""

    path: str = field(metadata={"help": "the CSV file (columns: " + ", ".join(COLUMNS) + ")"})
    replace: bool = field(
        default=False,
        metadata={"help": "set tags, owners and terms to the row's instead of adding to them"},
    )
    delimiter: str = field(default=",", metadata={"help": "the CSV's column separator"})
    array_delimiter: str = field(default="|", metadata={"help": "separates items in a list cell"})
    actor: str = field(
        default=A.DEFAULT_ACTOR, metadata={"help": "who the edits are stamped with (user or URN)"}
    )


def _text_problem(path: Path) -> str | None:
    """Where the file at ``path`` is not text in the encodings read (:func:`text_problem`)."""
    with path.open("rb") as f:
        return text_problem(iter(functools.partial(f.read, 1 << 20), b""))


class CsvSource(Source):
    """Applies a CSV of edits (see the module docstring)."""

    config_class = CsvConfig
    description = "Bulk edits from a CSV (DataHub csv-enricher columns): tags, owners, terms..."
    edits = True

    def identity(self) -> str:
        return str(Path(self.config.path).resolve())

    def open(self) -> None:
        path = Path(self.config.path)
        if not path.is_file():
            raise SourceUnreachableError(f"no CSV file at {path.resolve()}")
        if len(self.config.delimiter) != 1:
            raise SourceUnreachableError(
                f"source.config.delimiter must be one character, got {self.config.delimiter!r}"
            )
        if not self.config.array_delimiter:
            raise SourceUnreachableError(
                "source.config.array_delimiter must be the text that separates the items of a "
                "list cell, like '|' (the default) or ';'; got an empty text"
            )
        try:
            make_user_urn(self.config.actor)
        except InvalidUrnError as exc:
            raise SourceUnreachableError(
                f"source.config.actor must be a user name or an 'urn:li:corpuser:...' URN: {exc}"
            ) from None
        # NOTE: the whole file is decoded before a row is applied: decoded as it is read, a
        # byte that is not UTF-8 failed the block of lines around it, which named no line,
        # and half of a file in another encoding was applied.
        try:
            with path.open("rb") as f:
                self.encoding = text_encoding(f.read(4))
            problem = _text_problem(path)
        except OSError as exc:
            raise SourceUnreachableError(f"cannot read {path}: {exc}") from exc
        if problem:
            raise SourceUnreachableError(f"{path} {problem}")
        try:
            with path.open(newline="", encoding=self.encoding) as f:
                header = next(csv.reader(f, delimiter=self.config.delimiter), None)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise SourceUnreachableError(f"cannot read {path}: {exc}") from exc
        columns = [c.strip() for c in header or []]
        if "resource" not in columns:
            raise SourceUnreachableError(
                f"{path} has no 'resource' column in its header, line 1 "
                f"({', '.join(columns) or 'empty'}); "
                f"the csv source reads the columns {', '.join(COLUMNS)}"
            )
        # NOTE: only the columns read: an ignored one named twice (two empty names from
        # trailing separators) loses nothing.
        named = repeated_columns(columns, read=COLUMNS)
        if named:
            raise SourceUnreachableError(
                f"{path} names a column more than once in its header: {named}; "
                "keep one column of each name (a list's items go in one cell, separated by "
                f"{self.config.array_delimiter!r})"
            )
        # NOTE: unnamed columns (trailing separators) are not listed: a cell in one fails its row.
        unknown = [c for c in columns if c and c not in COLUMNS]
        if unknown:
            self.context.report.warnings.add(
                str(path), f"columns ignored: {', '.join(unknown)} (known: {', '.join(COLUMNS)})"
            )
        self.path = path

    def _rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        """(line the record starts on, column -> cell) of each row; unreadable CSV ends them, and
        a row with a non-empty cell under no column name is a failure, not yielded.

        Read with ``csv.reader``, not ``DictReader``: DictReader skips blank lines itself, so
        the line a record starts on could not be told from its ``line_num`` (where it ends).
        """
        with self.path.open(newline="", encoding=self.encoding) as f:
            # NOTE: strict: a quote never closed took the rest of the file into one cell, which
            # was applied, and '"a"b' was read as 'ab'; both now stop at the record's line.
            reader = csv.reader(f, delimiter=self.config.delimiter, strict=True)
            start = 1
            try:
                columns = [c.strip() for c in next(reader, [])]
                while True:
                    start = reader.line_num + 1
                    cells = next(reader, None)
                    if cells is None:
                        return
                    if not cells:  # [] is a blank line
                        continue
                    # NOTE: a short row lacks the last columns; empty cells the header names
                    # no column for (a trailing separator) hold nothing to lose.
                    unnamed = [
                        (i, c)
                        for i, c in enumerate(cells, start=1)
                        if c.strip() and (i > len(columns) or not columns[i - 1])
                    ]
                    if unnamed:
                        self.context.report.failures.add(
                            f"{self.path.name} line {start}", self._unnamed(columns, unnamed)
                        )
                        continue
                    yield start, dict(zip(columns, cells, strict=False))
            except csv.Error as exc:
                self.context.report.failures.add(
                    f"{self.path.name} line {start}",
                    f"the file stops being readable CSV in the record that starts here: {exc}; "
                    "the rows from here on were not read (often a quote opened and never "
                    "closed, which makes the rest of the file one cell)",
                )
            except UnicodeDecodeError:
                # NOTE: open() decoded the whole file: it changed since. The error came with
                # the block of lines around the byte, so the file is decoded again for its line.
                try:
                    problem = _text_problem(self.path) or "it decodes again"
                except OSError as exc:
                    problem = str(exc)
                self.context.report.failures.add(
                    str(self.path),
                    f"the file changed while it was read: {problem}; only the rows read "
                    "before that were applied",
                )

    def _unnamed(self, columns: list[str], cells: list[tuple[int, str]]) -> str:
        """Why a row with cells the header names no column for is not applied (they would be
        lost): the cells with their column numbers, and how such a row is usually fixed."""
        d, a = self.config.delimiter, self.config.array_delimiter
        named = ", ".join(c for c in columns if c)
        found = ", ".join(f"{c!r} (column {i})" for i, c in cells)
        return (
            f"cells under no column of the header ({named}): {found}; the row was not "
            f'applied. Quote a cell that holds the separator {d!r} ("a{d} b"); a list\'s items '
            f"go in one cell, separated by {a!r} (PII{a}Finance)"
        )

    def work_units(self) -> Iterator[WorkUnit]:
        report = self.context.report
        group: list[RowPlan] = []

        def unit() -> WorkUnit:
            first, last = group[0].line, group[-1].line
            lines = f"line {first}" if first == last else f"lines {first}-{last}"
            merged: dict[str, A.Aspect] = {}
            for plan in group:
                for aspect in plan.aspects:
                    # NOTE: a later row's value already includes the earlier rows' (planned on it).
                    merged[aspect[0]] = aspect
            assert group[0].urn is not None
            return WorkUnit(group[0].urn, list(merged.values()), where=f"{self.path.name} {lines}")

        plans = plan_rows(
            self._rows(),
            self.context.latest,
            replace=self.config.replace,
            actor=self.config.actor,
            now_ms=self.context.now_ms,
            array_delimiter=self.config.array_delimiter,
            # NOTE: the runner diffs what it emits, per entity; per-row diffs would be thrown away.
            diffs=False,
        )
        for plan in plans:
            if plan.problems:
                for problem in plan.problems:
                    report.failures.add(f"{self.path.name} line {plan.line}", problem)
                continue
            if group and group[0].urn != plan.urn:
                yield unit()
                group = []
            group.append(plan)
        if group:
            yield unit()
