"""What every steward widget shares: the controller base class and small HTML helpers.

The HTML written here carries no colours or fonts of its own: JupyterLab's light and dark themes
style it, as they style ipywidgets.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from metaverse_kit.errors import FieldProblem

if TYPE_CHECKING:
    import pyarrow as pa

    from metaverse_kit.history.decode import SkippedPart
    from metaverse_kit.workspace import Workspace

__all__ = [
    "WidgetController",
    "click_once",
    "html_list",
    "html_table",
    "json_preview",
    "message_html",
    "problems_html",
    "replay_skipping",
    "skipped_html",
    "warnings_html",
]

#: What a steward who cannot run commands is told to do about damaged Capture files.
DOCTOR_ADVICE = (
    "Ask whoever looks after this workspace (for the steward app: whoever runs its server) "
    "to run `metaverse doctor`, which finds and repairs damaged files."
)


class WidgetController:
    """Base class of the steward widgets: a plain object owning a lazily built ``.widget``.

    Subclasses implement ``_build()`` returning the ipywidgets container. Leaving the controller
    as the last expression of a notebook cell displays it, as does :meth:`show`.
    """

    def _build(self) -> W.Widget:
        raise NotImplementedError

    @cached_property
    def widget(self) -> W.Widget:
        """The ipywidgets container showing this controller, built on first use."""
        return self._build()

    def show(self) -> None:
        """Display the widget in the current notebook output."""
        from IPython.display import display

        display(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


class Quiet:
    """A re-entrant switch that silences observers during programmatic refreshes."""

    def __init__(self) -> None:
        self.depth = 0

    def __bool__(self) -> bool:
        return self.depth > 0

    @contextmanager
    def __call__(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1


def click_once(
    button: W.Button, action: Callable[[], object], *, ready: Callable[[], bool] | None = None
) -> None:
    """Call ``action`` on a click of ``button``: one click, one call (an emit button's wiring).

    The button is disabled while ``action`` runs, and a click arriving meanwhile is ignored,
    as is a click on a disabled button. Afterwards the button is enabled again when ``ready()``
    says so (default: always): a widget keeps it disabled after an emit until there is
    something new to emit. What ``action`` raises goes on (ipywidgets logs it).

    NOTE: ipywidgets calls the click handlers whatever ``disabled`` says in the kernel, and a
    double click's second 'click' message leaves the browser before the kernel's
    ``disabled=True`` reaches it. The kernel handles that message once the first run is over,
    so only a button still disabled then (``ready()`` false) makes it one emit, not two.
    """
    running = False

    def clicked(_: W.Button) -> None:
        nonlocal running
        if running or button.disabled:
            return
        running = True
        button.disabled = True
        try:
            action()
        finally:
            running = False
            button.disabled = not (ready() if ready is not None else True)

    button.on_click(clicked)


def esc(value: Any) -> str:
    """HTML-escape the text form of ``value``."""
    return html.escape(str(value), quote=True)


def html_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, caption: str | None = None
) -> str:
    """An HTML table (escaped cells), styled by the notebook's theme, not by us."""
    head = "".join(f"<th style='text-align:left'>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{esc(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    cap = f"<caption style='text-align:left'>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_list(items: Iterable[Any]) -> str:
    """An HTML bulleted list of escaped items."""
    return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def problems_html(problems: Sequence[FieldProblem]) -> str:
    """A summary of validation problems: a count, then each problem with its path."""
    if not problems:
        return ""
    count = len(problems)
    head = f"<b>{count} problem{'s' if count != 1 else ''}</b>"
    return head + html_list(str(p) for p in problems)


def message_html(text: str, *, ok: bool) -> str:
    """A one-line status message; ``ok`` picks the sign, the theme picks the colours."""
    sign = "✔" if ok else "✖"
    return f"<b>{sign} {esc(text)}</b>"


def warnings_html(found: Sequence[Warning]) -> str:
    """What a widget's work warned of, one line each, to follow its status line.

    NOTE: widgets run their work inside :func:`~metaverse_kit.errors.warnings_to` and show its
    warnings here: from a button's callback or a background thread a Python warning is not
    shown beside the widget (JupyterLab's log console at best, a served page's server log).
    """
    return "".join(f"<br>⚠ {esc(w)}" for w in found)


def replay_skipping(ws: Workspace) -> tuple[pa.Table, list[SkippedPart]]:
    """The workspace's whole history, replayed around damaged Capture files, and what was left out.

    Every intact block of a damaged file is replayed (``on_bad_file="skip"``); show the parts
    left out with :func:`skipped_html`. Raises what :meth:`Workspace.replay` raises otherwise.

    NOTE: one damaged file must not stop a steward's widget: it is listed beside the widget
    instead, with advice a steward can follow (not a ``on_bad_file=`` to pass).
    """
    stream = ws.replay_batches(progress=False, on_bad_file="skip")
    # NOTE: the widget lists what was skipped itself; no CaptureFileWarning too.
    stream.warn_on_skip = False
    try:
        table = stream.to_table()
    finally:
        stream.close()
    return table, list(stream.skipped_files)


def skipped_html(
    skipped: Sequence[SkippedPart],
    *,
    caption: str = "Skipped (damaged): every intact block of these files was replayed",
    advice: str = "",
) -> str:
    """The damaged Capture files (or blocks) a replay left out, as a table; empty when none.

    ``advice`` follows the table: what the reader can do about them.
    """
    if not skipped:
        return ""
    rows = [
        (p.path, "whole file" if p.offset is None else p.offset, p.reason, p.events_kept)
        for p in skipped
    ]
    table = html_table(("Capture file", "from byte", "why", "events kept"), rows, caption=caption)
    return table + (f"<div>⚠ {esc(advice)}</div>" if advice else "")


def json_preview(value: Any) -> str:
    """JSON data as an escaped, pre-formatted HTML block.

    A NaN or infinity (refused by validation, shown beside its field) is shown as a quoted note,
    not as the ``NaN`` JSON has no word for: a steward copying the preview gets JSON.
    """
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(value), indent=2, ensure_ascii=False, default=str)
    return f"<pre style='margin:0'>{esc(text)}</pre>"


def _finite(value: Any) -> Any:
    """``value`` with each NaN or infinity replaced by a string saying what it is."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} (not a number an event can carry)"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
