"""LiveFeed: what the hub receives now, as rows of ``history.aspects``, marked captured or live.

A feed runs ``ws.tail()`` in a background thread and keeps one row per (event, aspect) it
received, with a ``source`` column: ``"captured"`` when the event is already in a Capture file
(the local hub writes Capture at once), ``"live"`` when it was received from the hub before
Capture wrote it (Azure: Capture writes when its time window closes, after up to 15 minutes).
Every ``recheck`` seconds, while some rows are live, the lake is replayed from the oldest of
them, and each live row whose message id Capture has written since is replaced by its
captured copy. :meth:`LiveFeed.merged` puts a replayed history and the feed together, the
replayed (captured) row winning for a message id both have.

The thread only calls ``on_change``; widgets it drives set values from it, and never display
or clear outputs (ipywidgets' rule for threads). The toolkit's warnings given in the thread (a
damaged Capture block the tail left out, see :mod:`~metaverse_kit.history.tail`) or while the
tail opens (a file or folder of the lake it cannot read) are kept in :attr:`LiveFeed.warnings`
for the widget to show, not written to a stderr no steward reads.
Close the feed (or its widget) to stop it.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit.errors import ConfigurationError, MetaverseError, MetaverseWarning, warnings_to
from metaverse_kit.history import questions as q

if TYPE_CHECKING:
    from metaverse_kit.workspace import Workspace

__all__ = ["SOURCES", "LiveFeed"]

#: The values of the ``source`` column.
SOURCES = ("captured", "live")


def _with_source(rows: pa.Table, source: pa.Array | str) -> pa.Table:
    if isinstance(source, str):
        source = pa.repeat(pa.scalar(source, pa.string()), rows.num_rows)
    if "source" in rows.column_names:
        rows = rows.drop_columns(["source"])
    return rows.append_column("source", source)


def aspects_with_source(events: pa.Table) -> pa.Table:
    """``history.aspects`` of replayed or tailed events, plus ``source`` (captured or live)."""
    rows = q.aspects(events)
    captured = pc.is_valid(events.column("capture_file")) if events.num_rows else pa.array([])
    labels = pc.if_else(captured, "captured", "live") if events.num_rows else pa.array([])
    source = pc.take(labels, rows.column("event_index")) if rows.num_rows else pa.array([])
    return _with_source(rows, source.cast(pa.string()))


class LiveFeed:
    """Rows of what ``ws.tail()`` receives, in a background thread (see the module notes).

    ``start`` is the tail's start position (default ``"latest"``: from now on). ``on_change``
    is called (from the feed's thread) after rows were added or replaced, or a warning was
    kept (once as the thread starts, for those kept while the tail opened); ``recheck`` is
    the seconds between looks for captured copies of live rows (more than 0). Raises
    :class:`ConfigurationError` for a wrong ``recheck`` or ``on_change`` and what ``ws.tail``
    raises for a wrong ``start``; errors while running are kept in :attr:`error`
    and end the feed.
    """

    def __init__(
        self,
        ws: Workspace,
        *,
        start: Any = "latest",
        on_change: Callable[[], None] | None = None,
        recheck: float = 30.0,
    ) -> None:
        # NOTE: checked here: in the feed's thread a wrong value stopped the feed with a
        # TypeError naming no option ("'>=' not supported between 'float' and 'str'").
        if isinstance(recheck, bool) or not isinstance(recheck, (int, float)) or not recheck > 0:
            raise ConfigurationError(
                f"recheck= is the seconds between looks for captured copies of live rows, a "
                f"number above 0; not {recheck!r}"
            )
        if on_change is not None and not callable(on_change):
            raise ConfigurationError(
                f"on_change= takes a function called with no arguments, or None; not {on_change!r}"
            )
        self.ws = ws
        self.on_change = on_change
        self.recheck = recheck
        #: The error that stopped the feed, if one did.
        self.error: BaseException | None = None
        #: The toolkit's warnings given while receiving (damaged Capture blocks left out), oldest
        #: first.
        self.warnings: list[MetaverseWarning] = []
        #: When the lake was last replayed for captured copies (``time.monotonic()``).
        self.last_recheck = time.monotonic()
        self._lock = threading.Lock()
        self._rows: pa.Table | None = None
        self._stop = threading.Event()
        # NOTE: as the thread's: a Python warning here reached no steward of the app, and where
        # warnings are errors it stopped the feed from opening.
        with warnings_to(self.warnings.append):
            self._tail = ws.tail(start=start)
        self._thread = threading.Thread(target=self._run, name="live-feed", daemon=True)
        self._thread.start()
        # NOTE: a Voila kernel exits without closing widgets; close the tail (and its
        # connections) at exit anyway, without keeping the feed alive for it.
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            feed = ref()
            if feed is not None:
                feed.close()

        self._atexit = close_at_exit
        atexit.register(close_at_exit)

    def __repr__(self) -> str:
        rows = self.rows
        live = int(pc.sum(pc.equal(rows.column("source"), "live")).as_py() or 0)
        state = "stopped" if self._stop.is_set() else "running"
        return f"<LiveFeed {state}: {rows.num_rows} aspect rows, {live} live>"

    def __enter__(self) -> LiveFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """Whether the feed still receives."""
        return self._thread.is_alive()

    @property
    def rows(self) -> pa.Table:
        """Every (event, aspect) row received so far, oldest first, with ``source``."""
        with self._lock:
            if self._rows is None:
                from metaverse_kit.history.questions import empty_aspects

                return _with_source(empty_aspects(), "captured")
            return self._rows

    def merged(self, captured: pa.Table) -> pa.Table:
        """``captured`` (aspects of a replay) and the feed's rows it does not have, in order.

        A row of the feed whose message id ``captured`` holds is left out: the captured copy
        replaces it. Both get the ``source`` column.
        """
        base = _with_source(captured, "captured")
        rows = self.rows
        if not rows.num_rows:
            return base
        known = pc.drop_null(base.column("message_id")).unique()
        extra = rows.filter(pc.invert(pc.fill_null(pc.is_in(rows["message_id"], known), False)))
        if not extra.num_rows:
            return base
        extra = extra.cast(base.schema) if extra.schema != base.schema else extra
        return q.in_replay_order(pa.concat_tables([base, extra]))

    def _run(self) -> None:
        with warnings_to(self._warned):
            self._receive()

    def _warned(self, warning: MetaverseWarning) -> None:
        self.warnings.append(warning)
        if self.on_change is not None and not self._stop.is_set():
            self.on_change()

    def _receive(self) -> None:
        try:
            if self.warnings and self.on_change is not None and not self._stop.is_set():
                self.on_change()  # for the warnings kept while the tail opened
            while not self._stop.is_set():
                batches = self._tail.read(1.0)
                changed = False
                if batches:
                    self._add(aspects_with_source(pa.Table.from_batches(batches)))
                    changed = True
                if time.monotonic() - self.last_recheck >= self.recheck:
                    changed = self.check_captured() or changed
                if changed and self.on_change is not None and not self._stop.is_set():
                    self.on_change()
        except BaseException as exc:  # kept for the widget to show; the feed stops
            if not self._stop.is_set():
                self.error = exc
                if self.on_change is not None:
                    self.on_change()
        finally:
            self._tail.close()

    def _add(self, rows: pa.Table) -> None:
        with self._lock:
            if self._rows is None:
                self._rows = rows
            else:
                self._rows = pa.concat_tables([self._rows, rows.cast(self._rows.schema)])

    def check_captured(self) -> bool:
        """Replace live rows whose events Capture has written since; True when any was."""
        self.last_recheck = time.monotonic()
        rows = self.rows
        live = rows.filter(pc.equal(rows.column("source"), "live"))
        if not live.num_rows:
            return False
        since = pc.min(live.column("enqueued_time")).as_py() - timedelta(seconds=1)
        try:
            events = self.ws.replay(start=since, progress=False)
        except MetaverseError:
            return False  # NOTE: no lake configured or not readable yet: try again later
        ids = pc.drop_null(live.column("message_id")).unique()
        events = events.filter(pc.fill_null(pc.is_in(events.column("message_id"), ids), False))
        if not events.num_rows:
            return False
        captured = aspects_with_source(events)
        with self._lock:
            assert self._rows is not None
            replaced = pc.is_in(self._rows["message_id"], events["message_id"])
            keep = pc.invert(pc.fill_null(replaced, False))
            self._rows = q.in_replay_order(
                pa.concat_tables([self._rows.filter(keep), captured.cast(self._rows.schema)])
            )
        return True

    def close(self) -> None:
        """Stop receiving; the thread and the tail's connections end before this returns."""
        self._stop.set()
        self._tail.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        atexit.unregister(self._atexit)
