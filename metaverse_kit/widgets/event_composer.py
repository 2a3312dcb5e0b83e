"""EventComposer: fill a form generated from an Avro schema, check it, and emit the event.

A steward starts from an empty form, from pasted or uploaded JSON, or from the latest value of an
entity's aspect in the history (read, modify, write: adding a tag keeps the tags already there),
sees the record as JSON while typing, sees every problem beside its field, and presses Emit to
learn where the event landed::

    composer = EventComposer(ws)          # the built-in MCE schema
    composer                              # shows the form
    urn = "urn:li:dataset:(urn:li:dataPlatform:hive,sales.orders,PROD)"
    composer.load_latest(urn, "globalTags")
    composer.validate()                   # [] when the record is valid
    composer.emit()                       # [Receipt(...)]: "MCE Published: partition ..."
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from metaverse_kit.backends.protocols import Receipt
from metaverse_kit.errors import (
    ConfigurationError,
    EmitError,
    FieldProblem,
    MetaverseError,
    MetaverseWarning,
    ValidationError,
    warnings_to,
)
from metaverse_kit.events.avro import AvroSchema
from metaverse_kit.events.jsonform import from_json, to_avro_json
from metaverse_kit.events.strict import check_definition
from metaverse_kit.events.validation import validate as validate_record
from metaverse_kit.history.arrow_types import from_arrow
from metaverse_kit.widgets._common import (
    DOCTOR_ADVICE,
    WidgetController,
    click_once,
    esc,
    json_preview,
    message_html,
    problems_html,
    replay_skipping,
    skipped_html,
    warnings_html,
)
from metaverse_kit.widgets._form import AvroForm, blank_value

if TYPE_CHECKING:
    from metaverse_kit.widgets.batch_emitter import BatchEmitter, RowResult
    from metaverse_kit.workspace import Workspace

__all__ = ["EventComposer", "from_arrow"]


class EventComposer(WidgetController):
    """A form for one event of ``schema`` (default: the built-in MCE schema); Validate; Emit.

    ``schema`` may be a registry ``Schema`` or ``SchemaProperties``, a definition, a schema id or
    a schema name in the workspace's group (see :meth:`Workspace.schema_definition`); a
    definition that is not valid Avro raises :class:`SchemaParseError`, and one whose records
    can never be written (a record holding itself with no null on the way) raises
    :class:`ValidationError`, before any form is built. Emitting goes through
    :meth:`Workspace.emit`, which registers the schema in the workspace's group when it is new.

    Programmatic use: :attr:`value` (get or set the record), :meth:`validate`, :meth:`emit`,
    :meth:`load_json`, :meth:`load_latest`, :meth:`emit_batch`; :attr:`form` reaches the inputs.
    """

    def __init__(self, ws: Workspace, schema: Any = None, *, value: Any = None) -> None:
        self.ws = ws
        self.definition = ws.schema_definition(schema)
        # NOTE: checked before a form is built: a definition the registry would refuse (a
        # name with spaces or markup in it) would otherwise be filled in, pass Validate, and
        # fail only at Emit.
        check_definition(self.definition)
        self.avro = AvroSchema(self.definition)
        self.form = AvroForm(self.avro)
        self.receipts: list[Receipt] = []
        #: What the last emit warned of (a damaged Capture file set aside), shown under it.
        self.warnings: list[MetaverseWarning] = []
        self.problems: list[FieldProblem] = []
        self.batch: BatchEmitter | None = None
        # The record the last emit sent, or left in the outbox: the Emit button stays off
        # while the form holds it (the same event again would be written twice).
        self._sent: Any = None
        self._make_controls()
        self.form.on_change(self._refresh)
        if value is not None:
            self.value = value
        else:
            self._refresh()

    # -- what the composer is for -------------------------------------------------------------

    @property
    def is_mce(self) -> bool:
        """Whether the schema is a MetadataChangeEvent (it has a ``proposedSnapshot``)."""
        return any(f["name"] == "proposedSnapshot" for f in self.avro.fields(self.avro.root))

    @property
    def value(self) -> Any:
        """The record in the form, as :meth:`Workspace.emit` takes it.

        Setting it loads a record into the form (union branches chosen by the names in its
        ``("full.Name", {...})`` tuples, or by the one branch a plain dict fits); raises
        :class:`ValidationError` when a part of it cannot be shown, leaving the form unchanged.
        """
        return self.form.value

    @value.setter
    def value(self, record: Any) -> None:
        self.form.value = record
        self._refresh()

    def validate(self) -> list[FieldProblem]:
        """Every problem of the record in the form, each with its field path; empty when valid.

        The problems are also shown beside their fields and listed under the form.
        """
        value = self.form.value
        problems = self.form.form_problems()
        seen = {p.path for p in problems}
        problems += [p for p in validate_record(value, self.avro) if p.path not in seen]
        problems += self._mce_problems(value)
        self.problems = problems
        self.form.show_problems(problems)
        self.problems_box.value = problems_html(problems)
        self.emit_button.disabled = bool(problems) or self._is_sent(value)
        return list(problems)

    def _is_sent(self, value: Any) -> bool:
        return self._sent is not None and value == self._sent

    def _emit_ready(self) -> bool:
        return not self.problems and not self._is_sent(self.form.value)

    def _mce_problems(self, value: Any) -> list[FieldProblem]:
        if not self.is_mce or not isinstance(value, dict):
            return []
        snapshot = value.get("proposedSnapshot")
        inner = snapshot[1] if isinstance(snapshot, tuple) and len(snapshot) == 2 else snapshot
        if isinstance(inner, dict) and inner.get("aspects") == []:
            return [
                FieldProblem(
                    "proposedSnapshot.aspects", "an MCE needs at least one aspect: add one"
                )
            ]
        return []

    def emit(self) -> list[Receipt]:
        """Validate and emit the record; show and return where it landed.

        Raises :class:`ValidationError` (nothing sent) when the record is invalid, and what
        :meth:`Workspace.emit` raises when sending fails; both are shown under the form too,
        and the form keeps its content. When the failed event is kept in the outbox, the
        message says so. Afterwards the Emit button stays off until the form changes: the
        same event again would be sent twice.
        """
        problems = self.validate()
        if problems:
            self.status.value = message_html(
                f"Not emitted: the record has {len(problems)} problem(s), listed below.", ok=False
            )
            raise ValidationError(problems, what="event")
        self.warnings = []
        record = self.form.value
        try:
            # NOTE: shown under the status (see warnings_html).
            with warnings_to(self.warnings.append):
                receipts = self.ws.emit(record, schema=self.definition)
        except (MetaverseError, OSError) as exc:
            notes = " ".join(getattr(exc, "__notes__", ()))
            text = f"Not emitted: {exc}" + (f" ({notes})" if notes else "")
            kept = _kept_in_outbox(exc)
            if kept:
                self._sent = record
                self.emit_button.disabled = True
            self.status.value = (
                message_html(text, ok=False)
                + (f"<br>⚠ {esc(_KEPT)}" if kept else "")
                + warnings_html(self.warnings)
            )
            raise
        self.receipts = receipts
        self._sent = record
        self.emit_button.disabled = True
        self.status.value = (
            "<br>".join(message_html(str(r), ok=True) for r in receipts)
            + f"<br>{esc(_EMITTED)}"
            + warnings_html(self.warnings)
        )
        return receipts

    def emit_batch(self, data: Any, *, build: Any = None) -> list[RowResult]:
        """Emit one event per row of a pandas DataFrame or Arrow table (see :class:`BatchEmitter`).

        ``build`` turns a row (a dict) into a record; without it each row must be a record.
        The batch panel (progress and per-row results) appears under the form.
        """
        from metaverse_kit.widgets.batch_emitter import BatchEmitter

        self.batch = BatchEmitter(self.ws, data, build=build, schema=self.definition)
        self.batch_box.children = (self.batch.widget,)
        return self.batch.emit()

    # -- starting points ------------------------------------------------------------------------

    def load_json(self, text: str | bytes) -> Any:
        """Load a record from JSON text (Avro's JSON encoding or the fastavro-like form).

        Raises :class:`ValidationError` when the text is not JSON or cannot be shown (nested
        too deeply, or a number with more digits than Python reads).
        """
        if isinstance(text, (bytes, bytearray, memoryview)):
            text = bytes(text).decode("utf-8")
        too_deep = _json_problem(
            "nested too deeply to read (lists or objects within each other more than about "
            f"{sys.getrecursionlimit()} levels); an event is never nested that deep"
        )
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _json_problem(
                f"not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
            ) from exc
        except RecursionError:
            # NOTE: from None: the chained traceback would be thousands of frames long.
            raise too_deep from None
        except ValueError as exc:
            # NOTE: json.loads refuses an integer longer than sys.get_int_max_str_digits().
            raise _json_problem(
                f"a number in it has more than {sys.get_int_max_str_digits()} digits, more "
                "than Python reads and more than any field of an event holds"
            ) from exc
        try:
            self.value = from_json(data, self.avro)
        except RecursionError:
            raise too_deep from None
        return self.value

    def load_latest(self, urn: str, aspect: str) -> Any:
        """Load the latest value of ``aspect`` of ``urn`` from the history into an MCE.

        ``aspect`` is DataHub's aspect name (``"globalTags"``), a short or a full record name.
        The whole aspect comes back, so adding a tag or an owner keeps the others (read,
        modify, write). Without history for it, the aspect starts empty. Raises
        :class:`ConfigurationError` when the schema is not an MCE, and ``InvalidUrnError`` /
        ``UnknownAspectError`` for a URN or aspect the MCE schema does not know. Damaged
        Capture files are read around (every intact block is replayed) and listed under the
        load message, with what to do about them.
        """
        from metaverse_kit.events.aspects import ASPECT_NAMES, allowed_aspects
        from metaverse_kit.events.urns import snapshot_for_urn
        from metaverse_kit.history import latest_aspect

        if not self.is_mce:
            raise ConfigurationError(
                "load_latest needs a MetadataChangeEvent schema; "
                f"this composer has {self.avro.name}"
            )
        snapshot = snapshot_for_urn(urn)
        full = _aspect_full_name(aspect, allowed_aspects(urn), ASPECT_NAMES)
        events, skipped = replay_skipping(self.ws)
        found = latest_aspect(events, urn, full)
        if found is None:
            record = blank_value(self.avro, full)
            note = f"No {aspect} in the history of {urn} yet: starting from an empty one."
        else:
            record = from_arrow(self.avro, found, full)
            note = f"Loaded the latest {aspect} of {urn}: change it, then Emit."
        self.value = {
            "auditHeader": None,
            "proposedSnapshot": (snapshot, {"urn": urn, "aspects": [(full, record)]}),
            "proposedDelta": None,
            "systemMetadata": None,
        }
        self.load_message.value = message_html(note, ok=True) + skipped_html(
            skipped,
            caption="Skipped (damaged), so the value loaded may be older than the latest one",
            advice=DOCTOR_ADVICE,
        )
        return self.value

    # -- the widget -----------------------------------------------------------------------------

    def _make_controls(self) -> None:
        self.validate_button = W.Button(
            description="Validate", icon="check", tooltip="Check the record against its schema"
        )
        self.emit_button = W.Button(
            description="Emit",
            icon="paper-plane",
            button_style="primary",
            tooltip="Send the event to the event hub",
        )
        self.validate_button.on_click(lambda *_: self.validate())
        click_once(self.emit_button, self._emit_clicked, ready=self._emit_ready)
        self.status = W.HTML("")
        self.problems_box = W.HTML("")
        self.preview = W.HTML("")
        self.batch_box = W.VBox()
        # Starting points.
        self.json_text = W.Textarea(
            placeholder="Paste a record as JSON (Avro's JSON encoding, e.g. DataHub's mce_files)",
            layout=W.Layout(width="100%", height="8em"),
        )
        self.json_button = W.Button(description="Load JSON", icon="upload")
        self.upload = W.FileUpload(accept=".json", multiple=False, description="JSON file")
        self.json_button.on_click(lambda *_: self._load_clicked(self.json_text.value))
        self.upload.observe(self._uploaded, names="value")
        self.history_urn = W.Text(
            description="URN", placeholder="urn:li:dataset:(urn:li:dataPlatform:hive,db.table,PROD)"
        )
        self.history_urn.layout.width = "100%"
        from metaverse_kit.events.aspects import ASPECT_NAMES

        self.history_aspect = W.Dropdown(
            options=sorted(set(ASPECT_NAMES.values())), value="globalTags", description="Aspect"
        )
        self.history_button = W.Button(description="Load latest", icon="history")
        self.history_button.on_click(self._history_clicked)
        self.load_message = W.HTML("")

    def _build(self) -> W.Widget:
        title = W.HTML(
            f"<b>{esc(self.avro.label(self.avro.root))}</b> — emitting to the "
            f"{esc(self.ws.schema_group)} group on the {esc(self.ws.backend)} backend"
        )
        sources = [W.VBox([self.json_text, W.HBox([self.json_button, self.upload])])]
        titles = ["From JSON"]
        if self.is_mce:
            sources.append(
                W.VBox([self.history_urn, W.HBox([self.history_aspect, self.history_button])])
            )
            titles.append("From history (latest value of an aspect)")
        start = W.Accordion(
            children=[
                W.Tab(children=sources, titles=tuple(titles)),
            ],
            titles=("Start from…",),
        )
        start.selected_index = None
        preview = W.Accordion(children=[self.preview], titles=("JSON preview",))
        preview.selected_index = 0
        return W.VBox(
            [
                title,
                start,
                self.load_message,
                self.form.widget,
                W.HBox([self.validate_button, self.emit_button]),
                self.status,
                self.problems_box,
                preview,
                self.batch_box,
            ]
        )

    def _refresh(self) -> None:
        self.validate()
        try:
            self.preview.value = json_preview(to_avro_json(self.form.value, self.avro))
        except ValueError:
            # NOTE: json.dumps refuses an integer of more digits than Python writes as text
            # (sys.get_int_max_str_digits()); validation has named the field holding it.
            self.preview.value = message_html(
                "No preview: the record holds an integer of more digits than Python writes "
                "as text (its field is named with the problems above).",
                ok=False,
            )

    def _emit_clicked(self, *_: Any) -> None:
        # NOTE: the message is already shown under the form; a button has nobody to raise to.
        with contextlib.suppress(MetaverseError, OSError):
            self.emit()

    def _load_clicked(self, text: str | bytes) -> None:
        try:
            self.load_json(text)
        except (MetaverseError, UnicodeDecodeError) as exc:
            self.load_message.value = message_html(f"Not loaded: {exc}", ok=False)
        else:
            self.load_message.value = message_html("Loaded the JSON into the form.", ok=True)

    def _uploaded(self, change: dict) -> None:
        files = change["new"]
        if files:
            self._load_clicked(bytes(files[0]["content"]))

    def _history_clicked(self, *_: Any) -> None:
        try:
            self.load_latest(self.history_urn.value.strip(), self.history_aspect.value)
        except MetaverseError as exc:
            self.load_message.value = message_html(f"Not loaded: {exc}", ok=False)


_KEPT = (
    "The event is kept in the outbox: ws.outbox.retry() sends it; emitting again would send "
    "it twice, so Emit stays off until the form changes."
)
_EMITTED = "Emit stays off until the form changes: the same event again would be written twice."


def _kept_in_outbox(exc: BaseException) -> bool:
    """Whether the failed emit left its event in the outbox, as the outbox says it did."""
    # NOTE: the outbox says so itself, in the two ways it has: an EmitError listing the events
    # that failed, or a note on what else the hub raised (Outbox._send). A refused write of the
    # outbox itself keeps nothing, and says nothing.
    if isinstance(exc, EmitError):
        return bool(exc.failures)
    return any("kept in the outbox" in note for note in getattr(exc, "__notes__", ()))


def _json_problem(text: str) -> ValidationError:
    return ValidationError([FieldProblem("", text)], what="JSON text")


def _aspect_full_name(aspect: str, allowed: tuple[str, ...], names: Mapping[str, str]) -> str:
    from metaverse_kit.events.aspects import UnknownAspectError

    for full in allowed:
        if aspect in (full, full.rpartition(".")[2], names.get(full)):
            return full
    raise UnknownAspectError(
        f"{aspect!r} is not an aspect this entity's snapshot holds; it holds "
        f"{', '.join(names.get(a, a) for a in allowed)}"
    )
