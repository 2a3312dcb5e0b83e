"""HistoryExplorer: browse the lake's history: events over time, the catalogue as of a time, audits.

::

    explorer = HistoryExplorer(ws)                     # the whole history
    explorer = HistoryExplorer(ws, start="2026-01-01") # replays only from then on
    explorer                                           # shows it; the replay runs in the background
    explorer.wait()                                    # in a script or test: until it is loaded
    explorer.aspect.value = "ownership"                # filters, as a user sets them
    explorer.events                                    # the filtered (event, aspect) rows
    explorer.select_entity(urn)                        # its audit trail and per-change diffs
    explorer = HistoryExplorer(ws, live=True)          # plus what the hub receives now

With ``live=True`` a :class:`~metaverse_kit.widgets.live_feed.LiveFeed` follows the hub and its
rows join the events shown, each marked captured or live (see that module); ``close()`` stops it.

What is replayed: the time range and the partition are passed to ``ws.replay_batches``, so the
lake prunes files by path before opening them. A narrower range or one partition of what is
already loaded is cut in memory, without a replay; a wider one replays again. The other filters
(entity type, platform, urn text, aspect) never replay. The catalogue "as of" a time and an
entity's audit trail need the history from its beginning: when the range has a start, that
earlier part is replayed once, on first use of those views.

Replays run in a background thread, feeding a progress bar per Capture file, so the notebook
stays usable while a long history loads; :meth:`HistoryExplorer.wait` blocks until it is done.

The timeline is a Vega-Lite v5 chart, which JupyterLab (and Notebook 7, VS Code) render
natively, in the notebook's light or dark theme, without a plotting package. Tables are plain
HTML styled by the notebook's theme: nothing here sets a colour.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import ipywidgets as W
import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit.errors import (
    ConfigurationError,
    MetaverseError,
    MetaverseWarning,
    warnings_to,
)
from metaverse_kit.history import questions as q
from metaverse_kit.history.decode import check_options
from metaverse_kit.history.replay import ReplayProgress, SkippedPart
from metaverse_kit.widgets._common import (
    Quiet,
    WidgetController,
    esc,
    html_table,
    skipped_html,
    warnings_html,
)

if TYPE_CHECKING:
    from metaverse_kit.workspace import Workspace

__all__ = ["VEGA_LITE_MIME", "HistoryExplorer"]

#: The output type JupyterLab renders Vega-Lite v5 charts from.
VEGA_LITE_MIME = "application/vnd.vegalite.v5+json"

_ALL = "(all)"
# NOTE: a Dropdown shows nothing for the value None (it means "no selection"), so "(all)" is the
# value ""; None, set from code, means "(all)" as well.
_ANY = ""
# NOTE: a SelectionSlider cannot hold None; this stands for "no events in range".
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_SLIDER_STOPS = 400
_CHART_WIDTH = 640
_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")


# -- loading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Range:
    """What one replay covers: ``start``/``end`` (None: unbounded) and partitions (None: all)."""

    start: datetime | None
    end: datetime | None
    partitions: tuple[str, ...] | None

    def covers(self, other: _Range) -> bool:
        starts = self.start is None or (other.start is not None and other.start >= self.start)
        ends = self.end is None or (other.end is not None and other.end <= self.end)
        parts = self.partitions is None or (
            other.partitions is not None and set(other.partitions) <= set(self.partitions)
        )
        return starts and ends and parts


@dataclass
class _Load:
    """One background replay: its range, progress, and the aspects table it produced."""

    range: _Range
    thread: threading.Thread | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    aspects: pa.Table | None = None
    events: int = 0
    undecoded: int = 0
    files: int = 0
    skipped: list[SkippedPart] = field(default_factory=list)
    #: What the replay warned of (a partition with no Capture file), shown in the status line.
    warnings: list[MetaverseWarning] = field(default_factory=list)


def _replay(
    ws: Workspace,
    load: _Load,
    report: Callable[[int, int, int, int], None],
    on_bad_file: str,
) -> None:
    """Replay ``load.range`` batch by batch, exploding aspects as it goes (runs in a thread)."""
    r = load.range
    pieces: list[pa.Table] = []
    offset = 0

    def on_file(p: ReplayProgress) -> None:
        report(p.bytes_done, p.bytes_total, p.files_done, p.files_total)

    stream = ws.replay_batches(
        r.start, r.end, r.partitions, progress=False, on_bad_file=on_bad_file, on_file=on_file
    )
    # NOTE: the widget lists what was skipped itself, below the status; no summary warning too.
    stream.warn_on_skip = False
    total = sum(f.size for f in stream.files)
    report(0, total, 0, len(stream.files))
    try:
        for batch in stream:
            if load.cancelled.is_set():
                return
            table = pa.Table.from_batches([batch])
            # PERF: explode each file's batch as it arrives; the raw events are not kept.
            rows = q.aspects(table)
            rows = rows.set_column(
                rows.schema.get_field_index("event_index"),
                "event_index",
                pc.add(rows.column("event_index"), offset),
            )
            pieces.append(rows)
            offset += batch.num_rows
            load.undecoded += batch.num_rows - int(
                pc.sum(pc.is_null(batch.column("decode_error"))).as_py() or 0
            )
    finally:
        stream.close()
    load.events = offset
    load.files = len(stream.files)
    load.skipped = list(stream.skipped_files)
    if pieces:
        load.aspects = q.in_replay_order(pa.concat_tables(pieces))
    else:
        load.aspects = q.aspects(stream.schema.empty_table())
    report(total, total, len(stream.files), len(stream.files))


# -- value helpers -------------------------------------------------------------------------------


def value_at(record: Any, path: str) -> Any:
    """The value at a path of :func:`~metaverse_kit.history.changed_fields` in an aspect record.

    Returns None when the path leads nowhere (the field, item or key is absent).
    """
    current = record
    for name, key in _PATH_TOKEN.findall(path):
        if current is None:
            return None
        if name:
            current = current.get(name) if isinstance(current, dict) else None
        elif (
            isinstance(current, list)
            and "=" in key
            and not (current and isinstance(current[0], tuple))
        ):
            field_name, _, wanted = key.partition("=")
            found = [i for i in current if isinstance(i, dict) and i.get(field_name) == wanted]
            current = found[0] if found else None
        elif isinstance(current, list) and current and isinstance(current[0], tuple):
            current = dict(current).get(key)
        elif isinstance(current, list) and key.isdigit():
            index = int(key)
            current = current[index] if index < len(current) else None
        else:
            current = None
    return current


def _short(value: Any, limit: int = 80) -> str:
    if value is None:
        return "—"
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        value = dict(value)
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(path: str, value: Any) -> str:
    """A diff cell: audit stamps (epoch milliseconds in a ``...time`` field) also as UTC time."""
    last = path.rpartition(".")[2].lower()
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and last.endswith("time")
        and 10**11 < value < 10**14
    ):
        when = datetime.fromtimestamp(value / 1000, UTC)
        return f"{_time_text(when)} UTC ({value})"
    return _short(value)


def _urn_tail(urn: str) -> str:
    return urn.rpartition(":")[2]


def brief(aspect: str, record: dict[str, Any] | None) -> str:
    """A one-line summary of an aspect record for tables (owners, tags, description...)."""
    if record is None:
        return "—"
    if aspect == "ownership":
        return ", ".join(
            f"{_urn_tail(o['owner'])} ({o['type']})" for o in record.get("owners") or []
        )
    if aspect == "globalTags":
        return ", ".join(_urn_tail(t["tag"]) for t in record.get("tags") or []) or "(none)"
    if aspect == "glossaryTerms":
        return ", ".join(_urn_tail(t["urn"]) for t in record.get("terms") or []) or "(none)"
    if aspect == "status":
        return "removed" if record.get("removed") else "active"
    if record.get("description"):
        return _short(record["description"])
    shown = [
        f"{k}={_short(v, 30)}"
        for k, v in record.items()
        if v not in (None, [], {}, "") and not isinstance(v, (dict, list))
    ]
    return _short(", ".join(shown)) or "—"


def _time_text(t: datetime | None) -> str:
    return "—" if t is None else t.strftime("%Y-%m-%d %H:%M:%S")


# -- paging --------------------------------------------------------------------------------------


class _Pager:
    """Previous / next buttons and a label over a table of ``total`` rows."""

    def __init__(self, page_size: int, on_change: Callable[[], None]) -> None:
        self.page_size = page_size
        self.page = 0
        self.total = 0
        self._on_change = on_change
        self.previous = W.Button(description="◀ Previous", layout=W.Layout(width="auto"))
        self.next = W.Button(description="Next ▶", layout=W.Layout(width="auto"))
        self.label = W.Label()
        self.previous.on_click(lambda _: self.go(self.page - 1))
        self.next.on_click(lambda _: self.go(self.page + 1))
        self.box = W.HBox([self.previous, self.label, self.next])

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))

    def reset(self, total: int) -> None:
        self.total = total
        self.page = min(self.page, self.pages - 1)
        self._sync()

    def go(self, page: int) -> None:
        self.page = max(0, min(page, self.pages - 1))
        self._sync()
        self._on_change()

    def window(self) -> tuple[int, int]:
        start = self.page * self.page_size
        return start, min(self.page_size, max(0, self.total - start))

    def _sync(self) -> None:
        first, n = self.window()
        self.label.value = (
            f"rows {first + 1}–{first + n} of {self.total}" if n else f"0 of {self.total} rows"
        )
        self.previous.disabled = self.page == 0
        self.next.disabled = self.page >= self.pages - 1


# -- the explorer --------------------------------------------------------------------------------


class HistoryExplorer(WidgetController):
    """Explore a workspace's history: a timeline, paged events, state as of a time, audit trails.

    ``start``/``end`` (datetime, ISO text; naive is UTC) and ``partition`` (one partition id)
    bound the first replay; the range widgets change them later. ``page_size`` is the rows per
    table page.
    Filters are ipywidgets to set by hand or in code (``explorer.aspect.value = "ownership"``):
    ``start_time``, ``end_time``, ``partition``, ``entity_type``, ``platform``, ``urn_text``,
    ``aspect``; ``as_of`` is the "state as of" slider and ``include_removed`` its checkbox.

    Raises :class:`~metaverse_kit.history.HistoryInputError` for a start or end that is not a
    time or a partition the hub does not have, :class:`~metaverse_kit.ConfigurationError` for a
    ``page_size`` below 1; replay errors show in the widget and are raised again by :meth:`wait`.
    ``on_bad_file``: ``"skip"`` (default) replays around damaged Capture files (keeping their
    intact blocks) and lists what it skipped below the status line (:attr:`skipped_files`);
    ``"raise"`` stops at the first and shows the error.
    """

    def __init__(
        self,
        ws: Workspace,
        *,
        start: Any = None,
        end: Any = None,
        partition: str | int | None = None,
        page_size: int = 20,
        on_bad_file: str = "skip",
        live: bool = False,
    ) -> None:
        if page_size < 1:
            raise ConfigurationError(f"page_size must be at least 1, not {page_size}")
        check_options(decoder="auto", on_bad_file=on_bad_file)
        self._ws = ws
        self._on_bad_file = on_bad_file
        self._quiet = Quiet()
        self._lock = threading.RLock()
        self._main: _Load | None = None
        self._base: _Load | None = None
        self._running: list[_Load] = []
        #: The ranges replayed so far, oldest first: what the lake was asked for.
        self.replays: list[tuple[datetime | None, datetime | None, tuple[str, ...] | None]] = []
        self._events = q.empty_aspects()
        self._state = self._events
        self._trail: pa.Table | None = None
        self._entity: str | None = None
        self.chart_spec: dict[str, Any] = {}
        start_utc = q.as_utc(start, "start") if start is not None else None
        end_utc = q.as_utc(end, "end") if end is not None else None

        # Filters that replay.
        self.start_time = W.DatetimePicker(description="From", value=start_utc)
        self.end_time = W.DatetimePicker(description="To", value=end_utc)
        partition_ids = ws.hub.partition_ids()
        choices = [(_ALL, _ANY)] + [(p, p) for p in partition_ids]
        if partition is not None and str(partition) not in partition_ids:
            raise q.HistoryInputError(
                f"the event hub has no partition {partition!r}; it has {', '.join(partition_ids)}"
            )
        self.partition = W.Dropdown(
            description="Partition",
            options=choices,
            value=_ANY if partition is None else str(partition),
        )
        # Filters applied in memory.
        self.entity_type = W.Dropdown(description="Entity", options=[(_ALL, _ANY)])
        self.platform = W.Dropdown(description="Platform", options=[(_ALL, _ANY)])
        self.aspect = W.Dropdown(description="Aspect", options=[(_ALL, _ANY)])
        self.urn_text = W.Text(
            description="URN", placeholder="part of a urn", continuous_update=False
        )
        self.reload_button = W.Button(description="Reload", icon="refresh", tooltip="Replay again")
        self.progress = W.FloatProgress(value=0, min=0, max=1, description="Replay")
        self.status = W.HTML()
        self.skipped_html = W.HTML()
        # Events tab.
        self.chart = W.Output()
        self.events_html = W.HTML()
        self.events_pager = _Pager(page_size, self._render_events)
        # State tab.
        self.as_of = W.SelectionSlider(
            description="As of",
            options=[("—", _NO_TIME)],
            disabled=True,
            continuous_update=False,
            layout=W.Layout(width="90%"),
        )
        self.include_removed = W.Checkbox(description="Include removed entities", value=False)
        self.state_html = W.HTML()
        self.state_pager = _Pager(page_size, self._render_state)
        # Entity tab.
        self.entity_urn = W.Combobox(
            description="Entity",
            placeholder="urn:li:...",
            ensure_option=False,
            layout=W.Layout(width="90%"),
        )
        self.entity_html = W.HTML()
        self.tabs = W.Tab(
            children=[
                W.VBox([self.chart, self.events_pager.box, self.events_html]),
                W.VBox(
                    [
                        W.HBox([self.as_of, self.include_removed]),
                        self.state_pager.box,
                        self.state_html,
                    ]
                ),
                W.VBox([self.entity_urn, self.entity_html]),
            ],
            titles=("Events", "State as of", "Entity"),
        )

        for w in (self.start_time, self.end_time, self.partition):
            w.observe(self._on_range, names="value")
        for w in (self.entity_type, self.platform, self.aspect, self.urn_text):
            w.observe(self._on_filter, names="value")
        self.as_of.observe(self._on_as_of, names="value")
        self.include_removed.observe(self._on_as_of, names="value")
        self.entity_urn.observe(self._on_entity, names="value")
        self.tabs.observe(self._on_tab, names="selected_index")
        self.reload_button.on_click(lambda _: self.refresh())
        self.live: Any = None
        if live:
            self.live = self._start_live()

    # -- layout ---------------------------------------------------------------------------------

    def _build(self) -> W.Widget:
        ranges = W.HBox([self.start_time, self.end_time, self.partition, self.reload_button])
        filters = W.HBox([self.entity_type, self.platform, self.aspect, self.urn_text])
        status = [self.progress, self.status] + ([self.live_status] if self.live else [])
        box = W.VBox([ranges, filters, W.HBox(status), self.skipped_html, self.tabs])
        if self._main is None:
            self.refresh()
        return box

    # -- public API -----------------------------------------------------------------------------

    @property
    def events(self) -> pa.Table:
        """The (event, aspect) rows the filters keep, in replay order (see ``history.aspects``).

        Loads the history first (blocking) if it has not been loaded yet.
        """
        if self._main is None:
            self.refresh(block=True)
        self.wait()
        return self._events

    @property
    def state(self) -> pa.Table:
        """The catalogue as of the slider's time, with the filters applied (``state_as_of``)."""
        self.events  # noqa: B018 - loads the history when nothing is loaded yet
        self._ensure_base(block=True)
        with self._lock:
            self._update_state()
        return self._state

    @property
    def entity_trail(self) -> pa.Table | None:
        """The audit trail of the selected entity (``history.audit_trail``), or None."""
        self.wait()
        return self._trail

    @property
    def entity_diffs(self) -> list[dict[str, Any]]:
        """Per change of the selected entity: time, aspect, change, actor, ``late`` and its
        ``(path, before, after)``s.

        Oldest first, one entry per write in the audit trail (writes that changed nothing
        have no fields). ``late`` marks a write that reached the hub after a newer write of the
        same aspect (see ``history.audit_trail``): its value never became the current one.
        """
        trail = self.entity_trail
        return [] if trail is None else self.entity_diffs_of(trail)

    @property
    def page_rows(self) -> list[dict[str, Any]]:
        """The rows on the event table's current page, as shown."""
        first, n = self.events_pager.window()
        rows = self._events.slice(first, n)
        out = []
        for r in rows.to_pylist():
            out.append(
                {
                    "time": r["enqueued_time"],
                    "partition": r["partition"],
                    "sequence_number": r["sequence_number"],
                    "urn": r["urn"],
                    "aspect": r["aspect"],
                    "change": r["change"],
                    "value": brief(r["aspect"], q.aspect_record(r["value"])),
                    "source": r.get("source", "captured"),
                }
            )
        return out

    def refresh(self, *, block: bool = False) -> None:
        """Replay the time range and partition now (also what Reload does).

        The replay runs in a background thread; ``block=True`` waits for it.
        """
        self._start_main(self._range(), force=True)
        if block:
            self.wait()

    def wait(self, timeout: float | None = None) -> None:
        """Block until every running replay is done; raise the error one of them hit.

        Raises ``TimeoutError`` when ``timeout`` seconds pass first.
        """
        while True:
            with self._lock:
                running = list(self._running)
            if not running:
                break
            for load in running:
                if load.thread is not None:
                    load.thread.join(timeout)
                    if load.thread.is_alive():
                        raise TimeoutError(f"the replay did not finish within {timeout} s")
                with self._lock:
                    if load in self._running:
                        self._running.remove(load)
        for finished in (self._main, self._base):
            if finished is not None and finished.error is not None:
                raise finished.error

    @property
    def skipped_files(self) -> list[SkippedPart]:
        """The damaged files and blocks the current replay skipped (see ``mk.skipped_files``)."""
        self.wait()
        return [] if self._main is None else list(self._main.skipped)

    def select_entity(self, urn: str) -> None:
        """Show ``urn`` in the entity view: its audit trail, each change with its diff."""
        if not isinstance(urn, str) or not urn.startswith("urn:"):
            raise q.HistoryInputError(f"select_entity takes a URN, not {urn!r}")
        with self._lock:
            with self._quiet():
                self.entity_urn.value = urn
                self.tabs.selected_index = 2
            self._entity = urn
            self._ensure_base(block=False)
            self._show_entity()

    def set_as_of(self, when: Any) -> None:
        """Move the "state as of" slider to the last stop at or before ``when``."""
        moment = q.as_utc(when, "when")
        stops = [v for _, v in self.as_of.options if v is not _NO_TIME and v <= moment]
        if not stops:
            raise q.HistoryInputError(
                f"{moment.isoformat()} is before the first event of the range shown"
            )
        self.as_of.value = stops[-1]

    def close(self) -> None:
        """Stop the live feed (with ``live=True``) and close the widget."""
        if self.live is not None:
            self.live.close()
        if "widget" in self.__dict__:
            self.widget.close()

    def _start_live(self) -> Any:
        from metaverse_kit.widgets.live_feed import LiveFeed

        self.live_status = W.HTML("<i>live: following the hub…</i>")
        return LiveFeed(self._ws, on_change=self._live_changed)

    def _live_changed(self) -> None:
        """Rows arrived or were captured (called from the feed's thread: values only)."""
        feed = self.live
        if feed is None:
            return
        if feed.error is not None:
            self.live_status.value = f"<b>✖ live: {esc(feed.error)}</b>"
            return
        rows = feed.rows
        waiting = int(pc.sum(pc.equal(rows.column("source"), "live")).as_py() or 0)
        # NOTE: the feed's warnings (a damaged Capture block the tail left out) follow the
        # status: from the feed's thread a Python warning reaches no steward.
        self.live_status.value = esc(
            f"live: {rows.num_rows} aspect writes received"
            + (f", {waiting} not yet captured" if waiting else "")
        ) + warnings_html(feed.warnings[-3:])
        with self._lock:
            self._refresh_options()
            self._apply_filters()

    # -- loading --------------------------------------------------------------------------------

    def _range(self) -> _Range:
        start = self.start_time.value
        end = self.end_time.value
        start = q.as_utc(start, "start") if start is not None else None
        end = q.as_utc(end, "end") if end is not None else None
        if start is not None and end is not None and start > end:
            raise q.HistoryInputError(f"From ({start}) is after To ({end})")
        part = self.partition.value or None
        return _Range(start, end, None if part is None else (part,))

    def _spawn(self, load: _Load, on_done: Callable[[_Load], None]) -> None:
        def report(done: int, total: int, files_done: int, files: int) -> None:
            if load.cancelled.is_set():
                return
            self.progress.max = max(total, 1)
            self.progress.value = min(done, self.progress.max)
            self.status.value = esc(f"replaying {files_done} of {files} Capture files…")

        def run() -> None:
            try:
                # NOTE: shown under the status (see warnings_html); given on this thread a
                # Python warning would name threading.py.
                with warnings_to(load.warnings.append):
                    _replay(self._ws, load, report, self._on_bad_file)
                if not load.cancelled.is_set():
                    on_done(load)
            except BaseException as exc:  # shown in the widget, raised again by wait()
                load.error = exc
                self.status.value = f"<b>✖ {esc(type(exc).__name__)}: {esc(exc)}</b>"
            finally:
                load.done.set()

        r = load.range
        self.replays.append((r.start, r.end, r.partitions))
        load.thread = threading.Thread(target=run, name="history-replay", daemon=True)
        with self._lock:
            self._running.append(load)
        load.thread.start()

    def _start_main(self, wanted: _Range, *, force: bool) -> None:
        with self._lock:
            if not force and self._main is not None and self._main.range.covers(wanted):
                # NOTE: a narrower range or one partition of what is loaded: cut in memory.
                self._apply_filters()
                return
            if self._main is not None:
                self._main.cancelled.set()
            if self._base is not None and (
                force or not self._base.range.covers(_Range(None, wanted.end, wanted.partitions))
            ):
                self._base.cancelled.set()
                self._base = None
            self._main = _Load(wanted)
            self._spawn(self._main, self._main_done)

    def _main_done(self, load: _Load) -> None:
        with self._lock:
            if load is not self._main:
                return
            if load.range.start is None:
                # The main replay has the whole history up to its end: it is the base too.
                if self._base is not None and self._base is not load:
                    self._base.cancelled.set()
                self._base = load
            self._refresh_options()
            self._apply_filters()
            self._show_entity()
            skipped = len(load.skipped)
            parts = f"; {skipped} damaged part{'s' if skipped != 1 else ''} skipped"
            self.status.value = esc(
                f"{load.events} events from {load.files} Capture files"
                + (f"; {load.undecoded} could not be decoded" if load.undecoded else "")
                + (parts if skipped else "")
            ) + warnings_html(load.warnings)
            self.skipped_html.value = skipped_html(load.skipped)

    def _ensure_base(self, *, block: bool) -> None:
        """Load the history from its beginning when the views that need it are used."""
        with self._lock:
            main = self._main
            if main is None:
                return
            wanted = _Range(None, main.range.end, main.range.partitions)
            if self._base is None or not self._base.range.covers(wanted):
                if main.range.start is None:
                    self._base = main
                else:
                    self._base = _Load(wanted)
                    self._spawn(self._base, self._base_done)
        if block:
            self.wait()

    def _base_done(self, load: _Load) -> None:
        with self._lock:
            if load is self._base:
                self._update_state()
                self._show_entity()

    # -- filters --------------------------------------------------------------------------------

    def _loaded(self) -> pa.Table | None:
        main = self._main
        loaded = None if main is None or main.aspects is None else main.aspects
        if loaded is not None and self.live is not None:
            return self.live.merged(loaded)
        return loaded

    def _refresh_options(self) -> None:
        table = self._loaded()
        if table is None:
            return

        def options(column: str) -> list[tuple[str, str | None]]:
            values = sorted(v for v in pc.unique(table.column(column)).to_pylist() if v)
            return [(_ALL, _ANY)] + [(v, v) for v in values]

        with self._quiet():
            for widget, column in (
                (self.entity_type, "entity_type"),
                (self.platform, "platform"),
                (self.aspect, "aspect"),
            ):
                current = widget.value
                widget.options = options(column)
                known = {v for _, v in widget.options}
                widget.value = current if current and current in known else _ANY

    def _mask(self, table: pa.Table, r: _Range | None) -> pa.Table:
        conditions = []
        times = table.column("enqueued_time")
        if r is not None and r.start is not None:
            conditions.append(pc.greater_equal(times, q.time_scalar(r.start, times, round_up=True)))
        if r is not None and r.end is not None:
            conditions.append(pc.less_equal(times, q.time_scalar(r.end, times)))
        if r is not None and r.partitions is not None:
            conditions.append(pc.is_in(table.column("partition"), pa.array(r.partitions)))
        for widget, column in (
            (self.entity_type, "entity_type"),
            (self.platform, "platform"),
            (self.aspect, "aspect"),
        ):
            if widget.value:
                conditions.append(pc.equal(table.column(column), widget.value))
        text = self.urn_text.value.strip()
        if text:
            conditions.append(pc.match_substring(table.column("urn"), text, ignore_case=True))
        if not conditions:
            return table
        mask = conditions[0]
        for c in conditions[1:]:
            mask = pc.and_(mask, c)
        return table.filter(pc.fill_null(mask, False))

    def _apply_filters(self) -> None:
        table = self._loaded()
        if table is None:
            return
        self._events = self._mask(table, self._range())
        self.events_pager.reset(self._events.num_rows)
        self._render_events()
        self._render_chart()
        self._refresh_slider()
        with self._quiet():
            self.entity_urn.options = sorted(pc.unique(self._events.column("urn")).to_pylist())
        self._update_state()

    def _refresh_slider(self) -> None:
        times = pc.unique(self._events.column("enqueued_time")).to_pylist()
        times.sort()
        if len(times) > _MAX_SLIDER_STOPS:
            step = len(times) / (_MAX_SLIDER_STOPS - 1)
            times = [times[round(i * step)] for i in range(_MAX_SLIDER_STOPS - 1)] + [times[-1]]
        current = self.as_of.value
        options = [(_time_text(t), t) for t in times] or [("—", _NO_TIME)]
        with self._quiet():
            self.as_of.disabled = not times
            self.as_of.options = options
            values = [v for _, v in options]
            if current in values:
                self.as_of.value = current
            else:
                self.as_of.value = values[-1]

    # -- rendering ------------------------------------------------------------------------------

    def _render_events(self) -> None:
        rows = [
            (
                _time_text(r["time"]),
                r["partition"],
                r["sequence_number"],
                r["urn"],
                r["aspect"],
                r["change"],
                r["value"],
            )
            for r in self.page_rows
        ]
        headers = ["Enqueued (UTC)", "Partition", "Seq", "URN", "Aspect", "Change", "Value"]
        if self.live is not None:
            headers.append("Source")
            sources = [page["source"] for page in self.page_rows]
            rows = [(*row, source) for row, source in zip(rows, sources, strict=True)]  # type: ignore[misc]
        self.events_html.value = (
            "<div class='jp-RenderedHTMLCommon'>" + html_table(headers, rows) + "</div>"
            if rows
            else "<i>No events match the filters.</i>"
        )

    def _render_chart(self) -> None:
        self.chart_spec = timeline_spec(self._events)
        self.chart.outputs = (
            {
                "output_type": "display_data",
                "data": {
                    VEGA_LITE_MIME: self.chart_spec,
                    "text/plain": f"<timeline of {self._events.num_rows} aspect writes>",
                },
                "metadata": {},
            },
        )

    def _update_state(self) -> None:
        base = self._base
        when = self.as_of.value
        if base is None or base.aspects is None or when is _NO_TIME:
            self._state = self._events.slice(0, 0)
            self.state_html.value = (
                "<i>Loading the history before this range…</i>"
                if base is not None and base.aspects is None
                else "<i>No events in range.</i>"
            )
            self.state_pager.reset(0)
            return
        state = q.state_as_of(base.aspects, when, include_removed=self.include_removed.value)
        r = self._range()
        self._state = self._mask(state, _Range(None, None, r.partitions))
        self.state_pager.reset(self._state.num_rows)
        self._render_state()

    def _render_state(self) -> None:
        first, n = self.state_pager.window()
        rows = [
            (
                r["urn"],
                r["aspect"],
                brief(r["aspect"], q.aspect_record(r["value"])),
                _time_text(r["enqueued_time"]),
                "removed" if r["removed"] else "",
            )
            for r in self._state.slice(first, n).to_pylist()
        ]
        when = self.as_of.value
        entities = pc.count_distinct(self._state.column("urn")).as_py()
        removed = pc.count_distinct(
            self._state.filter(self._state.column("removed")).column("urn")
        ).as_py()
        caption = (
            f"The catalogue as of {_time_text(when)} UTC: {self._state.num_rows} aspects of "
            f"{entities} entities" + (f", {removed} of them removed" if removed else "")
        )
        self.state_html.value = (
            "<div class='jp-RenderedHTMLCommon'>"
            + html_table(["URN", "Aspect", "Value", "Written (UTC)", ""], rows, caption=caption)
            + "</div>"
        )

    def _show_entity(self) -> None:
        urn = self._entity
        base = self._base
        if urn is None:
            self.entity_html.value = "<i>Pick an entity above, or call select_entity(urn).</i>"
            return
        if base is None or base.aspects is None:
            self.entity_html.value = f"<i>Loading the history of {esc(urn)}…</i>"
            return
        r = self._range()
        history = base.aspects
        if r.partitions is not None:
            history = history.filter(pc.is_in(history.column("partition"), pa.array(r.partitions)))
        self._trail = q.audit_trail(history, urn)
        self.entity_html.value = _trail_html(urn, self.entity_diffs_of(self._trail))

    @staticmethod
    def entity_diffs_of(trail: pa.Table) -> list[dict[str, Any]]:
        """The per-change diffs of an audit trail (see :attr:`entity_diffs`)."""
        out = []
        for row in trail.to_pylist():
            old, new = q.aspect_record(row["previous_value"]), q.aspect_record(row["value"])
            out.append(
                {
                    "time": row["enqueued_time"],
                    "aspect": row["aspect"],
                    "change": row["change"],
                    "actor": row["actor"],
                    "late": bool(row["late"]),
                    "fields": [
                        (p, value_at(old, p), value_at(new, p)) for p in row["changed_fields"]
                    ],
                }
            )
        return out

    # -- observers ------------------------------------------------------------------------------
    # NOTE: each observer checks the quiet switch under the lock: the replay thread holds the lock
    # for as long as it refreshes widgets quietly, so a user's change made meanwhile waits for
    # the refresh to end instead of being taken for one of its own.

    def _on_range(self, change: Any) -> None:
        with self._lock:
            if self._quiet:
                return
            if change["new"] is None and change["owner"] is self.partition:
                with self._quiet():
                    self.partition.value = _ANY
            try:
                wanted = self._range()
            except MetaverseError as exc:
                self.status.value = f"<b>✖ {esc(exc)}</b>"
                return
            self._start_main(wanted, force=False)

    def _on_filter(self, change: Any) -> None:
        with self._lock:
            if self._quiet:
                return
            if change["new"] is None and isinstance(change["owner"], W.Dropdown):
                with self._quiet():
                    change["owner"].value = _ANY  # show "(all)" rather than an empty box
            try:
                self._apply_filters()
            except MetaverseError as exc:
                # NOTE: From after To is said in the status, as when it was set; the filters
                # apply again once the range is fixed.
                self.status.value = f"<b>✖ {esc(exc)}</b>"

    def _on_as_of(self, _: Any) -> None:
        with self._lock:
            if self._quiet:
                return
            self._ensure_base(block=False)
            self._update_state()

    def _on_entity(self, change: Any) -> None:
        with self._lock:
            if self._quiet:
                return
            value = (change["new"] or "").strip()
            if value.startswith("urn:"):
                self.select_entity(value)

    def _on_tab(self, change: Any) -> None:
        with self._lock:
            if change["new"] in (1, 2):
                self._ensure_base(block=False)


def _trail_html(urn: str, diffs: list[dict[str, Any]]) -> str:
    if not diffs:
        return f"<i>No aspect of {esc(urn)} was written in this history.</i>"
    parts = [f"<div class='jp-RenderedHTMLCommon'><h4>{esc(urn)}</h4>"]
    for d in diffs:
        fields = d["fields"]
        summary = (
            f"{_time_text(d['time'])} · {d['aspect']} · {d['change']}"
            + (f" · by {d['actor']}" if d["actor"] else "")
            + (" · late: a newer write had already reached the hub" if d["late"] else "")
            + (
                f" · {len(fields)} field{'s' if len(fields) != 1 else ''}"
                if fields
                else " · same value again"
            )
        )
        body = (
            html_table(
                ["Field", "Before", "After"],
                [(p, _shown(p, b), _shown(p, a)) for p, b, a in fields],
            )
            if fields
            else "<i>This write repeated the previous value.</i>"
        )
        parts.append(f"<details><summary>{esc(summary)}</summary>{body}</details>")
    parts.append("</div>")
    return "".join(parts)


def _bin_unit(table: pa.Table) -> str:
    times = table.column("enqueued_time")
    low, high = pc.min_max(times).values()
    if low.as_py() is None:
        return "day"
    span = high.as_py() - low.as_py()
    days = span.total_seconds() / 86400
    if days <= 3:
        return "hour"
    if days <= 120:
        return "day"
    if days <= 3 * 365:
        return "week"
    return "month"


_TIME_UNITS = {
    "hour": "utcyearmonthdatehours",
    "day": "utcyearmonthdate",
    "week": "utcyearweek",
    "month": "utcyearmonth",
}


def timeline_spec(events: pa.Table) -> dict[str, Any]:
    """A Vega-Lite v5 stacked bar chart: aspect writes per hour/day/week/month, by aspect.

    Counted with Arrow (``floor_temporal`` then ``group_by``); the spec sets no colours, so
    JupyterLab's Vega renderer themes it.
    """
    unit = _bin_unit(events)
    if events.num_rows:
        bins = pc.floor_temporal(events.column("enqueued_time"), unit=unit)
        counted = (
            pa.table({"time": bins, "aspect": events.column("aspect")})
            .group_by(["time", "aspect"], use_threads=False)
            .aggregate([("aspect", "count")])
            .sort_by([("time", "ascending"), ("aspect", "ascending")])
        )
        values = [
            {"time": t.isoformat(), "aspect": a, "writes": n}
            for t, a, n in zip(
                counted.column("time").to_pylist(),
                counted.column("aspect").to_pylist(),
                counted.column("aspect_count").to_pylist(),
                strict=True,
            )
        ]
    else:
        values = []
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "description": f"Aspect writes per {unit}, by aspect",
        "width": _CHART_WIDTH,
        "height": 180,
        "data": {"values": values},
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "x": {
                "field": "time",
                "type": "temporal",
                "timeUnit": _TIME_UNITS[unit],
                "title": f"Enqueued (UTC), per {unit}",
            },
            "y": {"field": "writes", "type": "quantitative", "aggregate": "sum", "title": "Writes"},
            "color": {"field": "aspect", "type": "nominal", "title": "Aspect"},
        },
    }
