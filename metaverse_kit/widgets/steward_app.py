"""StewardApp: the page a steward opens (``metaverse app``): four tabs, no code.

- **Browse**: the registry's groups, schemas, versions and fields (:class:`SchemaBrowser`).
- **Compose**: pick an entity of the catalogue as a template and an aspect, load its latest
  value, edit it in the generated form, validate, emit, read the receipt
  (:class:`EventComposer`).
- **Bulk edit**: a CSV or Excel sheet planned row by row (:class:`BulkEditor` with the row
  planner the app was given).
- **Activity**: what the hub receives now (a :class:`LiveFeed`), and the recent history of the
  entities touched from this page.

``metaverse app`` serves ``notebooks/steward_app.ipynb`` with Voila, whose one code cell is
``StewardApp.from_environment()``. On Azure every visitor acts with the server's
``DefaultAzureCredential``, not their own; the page says so.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import ipywidgets as W
import pyarrow.compute as pc

from metaverse_kit.errors import ConfigurationError, MetaverseError
from metaverse_kit.history import questions as q
from metaverse_kit.widgets._common import (
    DOCTOR_ADVICE,
    WidgetController,
    esc,
    html_table,
    message_html,
    replay_skipping,
    skipped_html,
    warnings_html,
)
from metaverse_kit.widgets.bulk_editor import csv_enricher_planner

if TYPE_CHECKING:
    from metaverse_kit.widgets.bulk_editor import RowPlanner
    from metaverse_kit.widgets.live_feed import LiveFeed
    from metaverse_kit.workspace import Workspace

__all__ = ["StewardApp", "load_planner"]

_TABS = ("Browse", "Compose", "Bulk edit", "Activity")
_RECENT = 8
_FOLLOWING = "Following the hub: new events appear here as they arrive."


def load_planner(path: str) -> RowPlanner:
    """The row planner named ``"package.module:function"``.

    Raises :class:`ConfigurationError` when it cannot be imported or is not callable.
    """
    module, _, name = path.partition(":")
    if not module or not name:
        raise ConfigurationError(f"a planner is named 'package.module:function', not {path!r}")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"Cannot load the row planner {path!r}: {exc}") from None
    if not callable(found):
        raise ConfigurationError(f"The row planner {path!r} is not a function")
    return found


class StewardApp(WidgetController):
    """The steward app's four tabs over one workspace (see the module notes).

    ``planner`` is the Bulk edit tab's row planner (default: DataHub csv-enricher's columns,
    :func:`~metaverse_kit.widgets.bulk_editor.csv_enricher_planner`; None: the tab says it is
    not available); ``live`` follows the hub in the Activity tab.
    """

    def __init__(
        self,
        ws: Workspace,
        *,
        planner: RowPlanner | None = csv_enricher_planner,
        live: bool = True,
    ) -> None:
        from metaverse_kit.widgets.event_composer import EventComposer
        from metaverse_kit.widgets.schema_browser import SchemaBrowser

        self.ws = ws
        self.touched: list[str] = []
        self.browser = SchemaBrowser(ws)
        self.composer = EventComposer(ws)
        self.bulk = self._bulk_editor(planner)
        self.feed: LiveFeed | None = None
        self.activity = W.HTML("<i>Nothing received yet.</i>")
        self.recent = W.HTML("<i>No entity touched from this page yet.</i>")
        self.live_status = W.HTML("")
        self.template_urn = W.Dropdown(description="Entity", options=[])
        self.template_urn.layout.width = "70%"
        self.template_aspect = W.Dropdown(description="Aspect", options=[])
        self.template_button = W.Button(description="Load latest value", icon="history")
        self.template_message = W.HTML("")
        self._state: Any = None
        self.template_urn.observe(self._template_picked, names="value")
        self.template_button.on_click(self._load_template)
        self._wrap_composer_emit()
        self._refresh_templates()
        if live:
            self._start_feed()

    @classmethod
    def from_environment(cls) -> StewardApp:
        """The app on the configured workspace (``mk.connect()``), with the configured planner.

        ``metaverse app`` sets them for its kernels: the workspace and ``$METAVERSE_PLANNER``
        (see :func:`metaverse_kit.config.app_planner`).
        """
        from metaverse_kit.config import app_planner
        from metaverse_kit.workspace import connect

        name = app_planner()
        return cls(connect(), planner=load_planner(name) if name else csv_enricher_planner)

    def close(self) -> None:
        """Stop following the hub and close the workspace."""
        if self.feed is not None:
            self.feed.close()
        self.ws.close()

    # -- the page -------------------------------------------------------------------------------

    def _build(self) -> W.Widget:
        d = self.ws.description
        where = ", ".join(
            f"{k} {v}" for k, v in d.items() if k in ("namespace", "eventhub", "path")
        )
        credential = (
            "Everyone using this page acts with <b>the server's DefaultAzureCredential</b> "
            "(its az login or managed identity), not their own."
            if self.ws.backend == "azure"
            else "A local workspace on the server."
        )
        header = W.HTML(
            f"<h2 style='margin:0'>Metadata steward</h2><div>{esc(self.ws.backend)} workspace: "
            f"{esc(where)}. {credential}</div>"
        )
        compose = W.VBox(
            [
                W.HTML("<b>Start from an entity of the catalogue</b>"),
                W.HBox([self.template_urn, self.template_aspect, self.template_button]),
                self.template_message,
                self.composer.widget,
            ]
        )
        activity = W.VBox(
            [
                self.live_status,
                W.HTML("<b>Received now</b> (newest first)"),
                self.activity,
                W.HTML("<b>Recent history of the entities touched here</b>"),
                self.recent,
            ]
        )
        bulk = (
            self.bulk.widget
            if self.bulk is not None
            else W.HTML(
                "<i>Bulk edit is not available: the server has no row planner configured "
                "(metaverse app --planner module:function).</i>"
            )
        )
        tabs = W.Tab(children=[self.browser.widget, compose, bulk, activity], titles=_TABS)
        return W.VBox([header, tabs])

    def _bulk_editor(self, planner: RowPlanner | None) -> Any:
        if planner is None:
            return None
        from metaverse_kit.widgets.bulk_editor import BulkEditor

        return BulkEditor(self.ws, planner=planner, on_emitted=self._touched)

    # -- compose --------------------------------------------------------------------------------

    def _refresh_templates(self) -> None:
        try:
            # NOTE: around damaged files, listed for the steward: one such file left Compose
            # with no template and advice only a programmer could follow.
            events, skipped = replay_skipping(self.ws)
        except MetaverseError as exc:
            self.template_message.value = message_html(f"History not readable: {exc}", ok=False)
            return
        self.template_message.value = skipped_html(skipped, advice=DOCTOR_ADVICE)
        state = q.state_as_of(events, datetime.now(UTC)) if events.num_rows else None
        urns = sorted(pc.unique(state.column("urn")).to_pylist()) if state is not None else []
        self._state = state
        self.template_urn.options = urns
        self.template_urn.value = urns[0] if urns else None

    def _template_picked(self, change: dict) -> None:
        from metaverse_kit.events.aspects import ASPECT_NAMES, allowed_aspects

        urn = change["new"]
        if not urn:
            self.template_aspect.options = []
            return
        try:
            allowed = [ASPECT_NAMES.get(a, a.rpartition(".")[2]) for a in allowed_aspects(urn)]
        except MetaverseError:
            allowed = []
        state = self._state
        have = (
            set(state.filter(pc.equal(state.column("urn"), urn)).column("aspect").to_pylist())
            if state is not None
            else set()
        )
        # Aspects the entity has come first: those are the ones a steward edits.
        options = sorted(allowed, key=lambda a: (a not in have, a))
        self.template_aspect.options = options
        self.template_aspect.value = options[0] if options else None

    def _load_template(self, *_: Any) -> None:
        urn, aspect = self.template_urn.value, self.template_aspect.value
        if not urn or not aspect:
            self.template_message.value = message_html("Pick an entity and an aspect.", ok=False)
            return
        try:
            self.composer.load_latest(urn, aspect)
        except MetaverseError as exc:
            self.template_message.value = message_html(f"Not loaded: {exc}", ok=False)
        else:
            self.template_message.value = message_html(
                f"Loaded the latest {aspect} of {urn}: edit the form below, then Emit.", ok=True
            )

    def _wrap_composer_emit(self) -> None:
        emit: Callable[[], Any] = self.composer.emit

        def emit_and_note() -> Any:
            receipts = emit()
            self._touched([r.partition_key for r in receipts if r.partition_key])
            return receipts

        self.composer.emit = emit_and_note  # type: ignore[method-assign]

    # -- activity -------------------------------------------------------------------------------

    def _start_feed(self) -> None:
        from metaverse_kit.widgets.live_feed import LiveFeed

        try:
            self.feed = LiveFeed(self.ws, on_change=self._feed_changed)
        except MetaverseError as exc:
            self.live_status.value = message_html(f"Not following the hub: {exc}", ok=False)
            return
        self.live_status.value = esc(_FOLLOWING)

    def _feed_changed(self) -> None:
        """Called from the feed's thread: only widget values are set."""
        feed = self.feed
        if feed is None:
            return
        if feed.error is not None:
            self.live_status.value = message_html(f"Stopped following: {feed.error}", ok=False)
            return
        if feed.warnings:
            # NOTE: a damaged Capture block the tail left out: from the feed's thread a Python
            # warning reaches no steward, only the server's log.
            self.live_status.value = esc(_FOLLOWING) + warnings_html(feed.warnings[-3:])
        rows = feed.rows
        newest = rows.slice(max(0, rows.num_rows - 50)).to_pylist()[::-1]
        self.activity.value = _rows_html(newest, source=True)
        self._show_recent()

    def _touched(self, urns: list[str]) -> None:
        for urn in urns:
            if urn in self.touched:
                self.touched.remove(urn)
            self.touched.insert(0, urn)
        self._show_recent()

    def _show_recent(self) -> None:
        if not self.touched:
            return
        try:
            history = q.aspects(replay_skipping(self.ws)[0])
        except MetaverseError as exc:
            self.recent.value = message_html(f"History not readable: {exc}", ok=False)
            return
        if self.feed is not None:
            history = self.feed.merged(history)
        parts = []
        for urn in self.touched[:10]:
            rows = history.filter(pc.equal(history.column("urn"), urn))
            rows = rows.slice(max(0, rows.num_rows - _RECENT)).to_pylist()[::-1]
            parts.append(
                f"<h4>{esc(urn)}</h4>" + _rows_html(rows, source="source" in history.column_names)
            )
        self.recent.value = "".join(parts)


def _rows_html(rows: list[dict[str, Any]], *, source: bool) -> str:
    from metaverse_kit.widgets.history_explorer import brief

    if not rows:
        return "<i>Nothing yet.</i>"
    headers = ["Enqueued (UTC)", "URN", "Aspect", "Value"] + (["Source"] if source else [])
    body = [
        [
            r["enqueued_time"].strftime("%Y-%m-%d %H:%M:%S"),
            r["urn"],
            r["aspect"],
            brief(r["aspect"], q.aspect_record(r["value"])),
        ]
        + ([r.get("source", "captured")] if source else [])
        for r in rows
    ]
    return "<div class='jp-RenderedHTMLCommon'>" + html_table(headers, body) + "</div>"
