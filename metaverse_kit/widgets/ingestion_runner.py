"""IngestionRunner: pick a source, fill its config in a generated form, preview the diff, emit.

::

    runner = IngestionRunner(ws, source="sql", config={"url": "sqlite:///shop.db"})
    runner                        # the widget
    runner.preview()              # a dry run: what each entity would get, field by field
    runner.emit()                 # the real run, with a progress bar and the report

The form is generated from the source's config dataclass
(:func:`metaverse_kit.ingest.config_fields`): text, numbers, check boxes, a list of choices,
lists as comma-separated text, mappings as ``key=value`` lines, secrets hidden. Problems with
the recipe or the source (a wrong key, an unreachable database) are shown, not raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from metaverse_kit.errors import MetaverseError, MetaverseWarning, warnings_to
from metaverse_kit.ingest import (
    ConfigField,
    EntityChange,
    IngestReport,
    RecipeError,
    available_sources,
    config_fields,
    get_source,
    ingest,
)
from metaverse_kit.widgets._common import (
    WidgetController,
    esc,
    html_list,
    message_html,
    warnings_html,
)

if TYPE_CHECKING:
    from metaverse_kit.workspace import Workspace

__all__ = ["IngestionRunner"]

_SECRET_WORDS = ("password", "secret", "connection_string", "token", "key")
_MAX_SHOWN = 200
_SIGNS = {"added": "+", "changed": "~", "removed": "−", "failed": "!"}


def _input(field: ConfigField, value: Any) -> W.Widget:
    """One input for one config key, set to ``value`` (or the field's default)."""
    value = field.default if value is None else value
    common = {
        "description": field.name,
        "tooltip": field.help or None,
        "style": {"description_width": "140px"},
        "layout": W.Layout(width="560px"),
    }
    if field.kind == "bool":
        return W.Checkbox(value=bool(value), indent=False, **common)
    if field.kind == "choice":
        return W.Dropdown(options=list(field.choices), value=value, **common)
    if field.kind == "int":
        return W.Text(
            value="" if value is None else str(value), placeholder="a whole number", **common
        )
    if field.kind == "float":
        return W.Text(value="" if value is None else str(value), placeholder="a number", **common)
    if field.kind == "list":
        return W.Text(value=", ".join(value or []), placeholder="comma-separated", **common)
    if field.kind == "dict":
        text = "\n".join(f"{k}={v}" for k, v in (value or {}).items())
        return W.Textarea(value=text, placeholder="key=value, one per line", **common)
    secret = any(word in field.name.lower() for word in _SECRET_WORDS)
    cls = W.Password if secret else W.Text
    return cls(value="" if value is None else str(value), placeholder=field.help or "", **common)


def _read(field: ConfigField, widget: W.Widget) -> tuple[bool, Any]:
    """(given, value) of one input; an empty optional input is not given."""
    value = widget.value
    if field.kind in ("bool", "choice"):
        return True, value
    text = str(value).strip()
    if not text:
        return False, None
    if field.kind == "list":
        return True, [part.strip() for part in text.split(",") if part.strip()]
    if field.kind == "dict":
        pairs = [line.partition("=") for line in text.splitlines() if line.strip()]
        return True, {k.strip(): v.strip() for k, _, v in pairs}
    if field.kind in ("int", "float"):
        try:
            return True, int(text) if field.kind == "int" else float(text)
        except ValueError:
            return True, text  # parse_config names the key and what was expected
    return True, text


class IngestionRunner(WidgetController):
    """Run an ingestion from a notebook: source, generated config form, Preview, Emit.

    ``source``, ``config`` and ``pipeline_name`` fill the form. :meth:`preview` and
    :meth:`emit` return the :class:`~metaverse_kit.ingest.IngestReport` (or None when the
    recipe or the source failed; the widget says why).
    """

    def __init__(
        self,
        ws: Workspace,
        *,
        source: str | None = None,
        config: Mapping[str, Any] | None = None,
        pipeline_name: str | None = None,
    ) -> None:
        self.ws = ws
        self.sources = {name: why for name, why in available_sources().items() if why is None}
        self.report: IngestReport | None = None
        #: What the last run's emits warned of (a damaged Capture file set aside), shown under
        #: its report (not the source's warnings: those are in the report).
        self.warnings: list[MetaverseWarning] = []
        self.inputs: dict[str, W.Widget] = {}
        self.fields: list[ConfigField] = []
        self.source_picker = W.Dropdown(
            options=list(self.sources),
            value=source if source in self.sources else next(iter(self.sources)),
            description="Source",
        )
        self.about = W.HTML()
        self.form = W.VBox()
        self.pipeline = W.Text(
            value=pipeline_name or "",
            description="Pipeline",
            placeholder="a name for this source and config (default: from the source)",
            layout=W.Layout(width="560px"),
            style={"description_width": "140px"},
        )
        self.preview_button = W.Button(
            description="Preview",
            icon="eye",
            tooltip="A dry run: what would be emitted, per entity",
        )
        self.emit_button = W.Button(
            description="Emit",
            icon="paper-plane",
            button_style="primary",
            tooltip="Run the ingestion and emit what changed",
        )
        self.progress = W.IntProgress(
            value=0, min=0, max=1, description="Entities", layout=W.Layout(width="560px")
        )
        self.message = W.HTML()
        self.changes = W.HTML()
        self.preview_button.on_click(lambda *_: self.preview())
        self.emit_button.on_click(lambda *_: self.emit())
        self.source_picker.observe(lambda *_: self._make_form(None), names="value")
        self._make_form(config)

    # -- the form -----------------------------------------------------------------------------

    def _make_form(self, config: Mapping[str, Any] | None) -> None:
        cls = get_source(self.source_picker.value)
        self.fields = config_fields(cls.config_class)
        given = dict(config or {})
        self.inputs = {f.name: _input(f, given.get(f.name)) for f in self.fields}
        self.form.children = list(self.inputs.values())
        required = [f.name for f in self.fields if f.required]
        self.about.value = f"<b>{esc(cls.description or self.source_picker.value)}</b>" + (
            f"<br>Required: {esc(', '.join(required))}" if required else ""
        )

    @property
    def config(self) -> dict[str, Any]:
        """The source config as the form holds it (empty optional inputs left out)."""
        out = {}
        for field in self.fields:
            given, value = _read(field, self.inputs[field.name])
            if given:
                out[field.name] = value
        return out

    @property
    def recipe(self) -> dict[str, Any]:
        """The recipe the buttons run (what ``metaverse ingest`` would read from YAML)."""
        recipe: dict[str, Any] = {
            "source": {"type": self.source_picker.value, "config": self.config}
        }
        if self.pipeline.value.strip():
            recipe["pipeline_name"] = self.pipeline.value.strip()
        return recipe

    # -- running ------------------------------------------------------------------------------

    def _run(self, *, dry_run: bool) -> IngestReport | None:
        self.preview_button.disabled = self.emit_button.disabled = True
        self.progress.value = 0
        self.progress.max = max(1, self.report.entities_seen if self.report else 1)
        self.progress.bar_style = "info"
        self.message.value = message_html("Running…", ok=True)

        def step(change: EntityChange) -> None:
            self.progress.value += 1
            if self.progress.value >= self.progress.max:
                self.progress.max = self.progress.value + 1

        self.warnings = []
        try:
            # NOTE: shown under the report (see warnings_html).
            with warnings_to(self.warnings.append):
                report = ingest(
                    self.ws, self.recipe, dry_run=dry_run, progress=False, on_change=step
                )
        except RecipeError as exc:
            self.progress.bar_style = "danger"
            self.message.value = message_html("The recipe has problems:", ok=False) + html_list(
                exc.problems
            )
            return None
        except MetaverseError as exc:
            self.progress.bar_style = "danger"
            self.message.value = message_html(" ".join(str(exc).split()), ok=False) + warnings_html(
                self.warnings
            )
            return None
        finally:
            self.preview_button.disabled = self.emit_button.disabled = False
        self.report = report
        self.progress.max = max(1, self.progress.value)
        self.progress.bar_style = "danger" if report.failures.total else "success"
        self._show(report)
        return report

    def preview(self) -> IngestReport | None:
        """A dry run: shows (and returns) what each entity would get; emits nothing."""
        return self._run(dry_run=True)

    def emit(self) -> IngestReport | None:
        """The real run: emits what changed and shows (and returns) the report."""
        return self._run(dry_run=False)

    def _show(self, report: IngestReport) -> None:
        verb = "would emit" if report.dry_run else "emitted"
        summary = (
            f"{report.entities_seen} entities: {report.entities_added} added, "
            f"{report.entities_changed} changed, {report.entities_unchanged} unchanged, "
            f"{report.entities_removed} removed; {report.events_emitted} events {verb}"
        )
        problems = ""
        if report.failures.total:
            problems += f"<b>{report.failures.total} failed</b>" + html_list(report.failures)
        if report.warnings.total:
            problems += f"<b>{report.warnings.total} warnings</b>" + html_list(report.warnings)
        title = "Preview" if report.dry_run else f"Run {report.run_id}"
        self.message.value = (
            message_html(f"{title}: {summary}", ok=not report.failures.total)
            + problems
            + warnings_html(self.warnings)
        )
        rows = []
        for change in report.changes[:_MAX_SHOWN]:
            aspects = "".join(
                f"<div>{esc(a.kind)} <code>{esc(a.aspect)}</code>"
                + (f": {esc(', '.join(a.changed_fields[:12]))}" if a.changed_fields else "")
                + "</div>"
                for a in change.aspects
            )
            rows.append(
                f"<tr><td>{esc(_SIGNS.get(change.kind, ''))} {esc(change.kind)}</td>"
                f"<td><code>{esc(change.urn)}</code></td><td>{aspects}</td></tr>"
            )
        more = len(report.changes) - _MAX_SHOWN
        tail = f"<p>… and {more} more</p>" if more > 0 else ""
        self.changes.value = (
            "<table class='mk-ingest-changes'><thead><tr><th style='text-align:left'>change</th>"
            "<th style='text-align:left'>entity</th><th style='text-align:left'>aspects</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{tail}"
            if rows
            else self._nothing_changed(report)
        )

    @staticmethod
    def _nothing_changed(report: IngestReport) -> str:
        if not report.entities_restated:
            return "<p>Nothing to emit: the lake already holds what the source reports.</p>"
        # NOTE: "nothing to emit" beside "3 events emitted" read as a contradiction.
        verb = "would emit" if report.dry_run else "emitted"
        return (
            "<p>Nothing changed: the lake already holds what the source reports. The run "
            f"{verb} {report.entities_restated} events all the same, so that the lake records "
            "this pipeline's fingerprint or ownership of those entities.</p>"
        )

    def _build(self) -> W.Widget:
        buttons = W.HBox([self.preview_button, self.emit_button])
        return W.VBox(
            [
                self.source_picker,
                self.about,
                self.form,
                self.pipeline,
                buttons,
                self.progress,
                self.message,
                self.changes,
            ]
        )
