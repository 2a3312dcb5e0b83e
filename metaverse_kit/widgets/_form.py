"""An ipywidgets form generated from any Avro record schema.

:class:`AvroForm` turns a schema into input widgets: text boxes for strings and integers (with the
ranges of ``int`` and ``long``), number boxes, checkboxes, bytes as hex or base64, dropdowns for
enums, an on/off toggle for a nullable union, a branch selector for a union of several branches,
arrays with add / remove / reorder, maps as key/value rows, and nested records as collapsible
sections. Defaults are filled in; docs are tooltips; URN fields get a builder.

PERF: nothing is built before it is shown. A nested record's fields are made when its section is
opened, a union makes only the branch picked, an array only the items it holds. DataHub's full
MCE schema (a union of about 20 snapshots, each with a union of aspects) thus opens in a few
dozen widgets. A record shows the inputs of :data:`FIELDS_PAGE` fields at a time (a button adds
the next ones), so a record of thousands of fields opens in a fraction of a second.

The form always knows which branch of each union the user picked, so :attr:`AvroForm.value`
names every record branch as a fastavro ``("full.Name", {...})`` tuple and nothing is ever
re-guessed from field names.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from metaverse_kit.errors import FieldProblem, ValidationError
from metaverse_kit.events.avro import (
    AvroSchema,
    branch_index,
    dict_branches,
    kind_branches,
    whole_number_text,
)
from metaverse_kit.events.urns import (
    DEFAULT_ENV,
    FABRIC_TYPES,
    InvalidUrnError,
    make_data_platform_urn,
    make_dataset_urn,
    make_glossary_node_urn,
    make_group_urn,
    make_tag_urn,
    make_term_urn,
    make_user_urn,
    parse_urn,
)
from metaverse_kit.widgets._common import Quiet, esc

__all__ = [
    "URN_KINDS",
    "AvroForm",
    "blank_value",
    "default_value",
    "is_urn_field",
    "pick_branch",
    "split_path",
]

_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_DIGITS = re.compile(r"[+-]?\d+")
#: How much of a value typed into an input its problem message quotes.
_SHOWN_CHARS = 60
#: How many fields of a record get inputs at a time; a "more fields" button adds the next ones.
FIELDS_PAGE = 100
_LABEL_WIDTH = "14em"

#: Entity kinds the URN helper builds, with the builder and the parts it asks for.
URN_KINDS: dict[str, tuple[Callable[..., str], tuple[str, ...]]] = {
    "dataset": (make_dataset_urn, ("platform", "name", "env")),
    "corpuser": (make_user_urn, ("name",)),
    "corpGroup": (make_group_urn, ("name",)),
    "tag": (make_tag_urn, ("name",)),
    "glossaryTerm": (make_term_urn, ("name",)),
    "glossaryNode": (make_glossary_node_urn, ("name",)),
    "dataPlatform": (make_data_platform_urn, ("name",)),
}


# -- values -------------------------------------------------------------------------------------


def default_value(avro: AvroSchema, default: Any, t: Any) -> Any:
    """Turn a field's ``default`` (Avro JSON) into the fastavro form of type ``t``."""
    return avro.default_value(t, default)


def blank_value(avro: AvroSchema, t: Any, _seen: tuple[str, ...] = ()) -> Any:
    """The value a new, empty input of type ``t`` starts with (defaults included)."""
    r = avro.resolve(t)
    if isinstance(r, list):
        # NOTE: a branch that would recurse into a record being built is skipped, so a
        # recursive schema still has a finite blank value.
        for b in r:
            rb = avro.resolve(b)
            if isinstance(rb, dict) and rb.get("name") in _seen:
                continue
            if avro.never_written(b) is not None:
                # NOTE: a branch no value of which can be written: the next one starts.
                continue
            value = blank_value(avro, b, _seen)
            return (avro.branch_name(rb), value) if _is_record(avro, b) else value
        return None
    kind = avro.kind(r)
    if kind == "record":
        never = avro.never_written(r)
        if never is not None:
            # NOTE: reached without a union, array or map on the way (those leave it out).
            raise ValidationError(
                [FieldProblem("", f"no record of this schema can be written: {never}")],
                what="schema",
            )
        seen = (*_seen, r["name"])
        return {
            f["name"]: default_value(avro, f["default"], f["type"])
            if "default" in f
            else blank_value(avro, f["type"], seen)
            for f in r["fields"]
        }
    if kind == "enum":
        return r.get("default", r["symbols"][0] if r["symbols"] else "")
    if kind == "fixed":
        return bytes(r["size"])
    return {
        "null": None,
        "boolean": False,
        "int": 0,
        "long": 0,
        "float": 0.0,
        "double": 0.0,
        "bytes": b"",
        "string": "",
        "array": [],
        "map": {},
    }.get(kind)


def _shown(text: str) -> str:
    """``text`` quoted for a problem message, cut short: a pasted 10 MB string stays out of it."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text)} characters)"


def _text(value: Any) -> str:
    """``str(value)`` for a text box, never raising: an integer of more digits than Python
    converts to text (``sys.get_int_max_str_digits()``) shows its first digits and its length."""
    try:
        return str(value)
    except ValueError:
        if isinstance(value, int):
            return whole_number_text(value)
        return f"a {type(value).__name__} holding an integer too long to show"


def _repr60(value: Any) -> str:
    """``repr(value)`` cut to 60 characters for a message, never raising (see :func:`_text`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return whole_number_text(value)
    try:
        return repr(value)[:60]
    except ValueError:
        return f"a {type(value).__name__} holding an integer too long to show"


def _is_record(avro: AvroSchema, t: Any) -> bool:
    return avro.kind(t) == "record"


def is_urn_field(field: dict | None) -> bool:
    """True when a record field holds URNs: DataHub marks them, or the name ends in urn/Urn."""
    if not field:
        return False
    java = field.get("java")
    if "Urn" in field or (isinstance(java, dict) and "Urn" in str(java.get("class", ""))):
        return True
    name = str(field.get("name", ""))
    return name.endswith(("urn", "Urn"))


def _load_error(path: str, message: str) -> ValidationError:
    return ValidationError([FieldProblem(path, message)], what="record to load")


def _never_note(text: str) -> W.HTML:
    """Why an input offers less than its type (a branch left out, a list that stays empty)."""
    return W.HTML(f"<i>⚠ {esc(text)}</i>" if text else "")


def _sub(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def pick_branch(avro: AvroSchema, branches: list, value: Any, path: str) -> tuple[int, Any]:
    """Which branch of a union a loaded value names, and the value inside it.

    Takes ``None``, a ``("full.Name" or "Name", {...})`` tuple, a dict only one record (or map)
    branch can hold, or a plain value; a branch of which no value can ever be written
    (:meth:`AvroSchema.never_written`) is never picked. Raises :class:`ValidationError` with the
    path otherwise.
    """
    index, inner = _pick_branch(avro, branches, value, path)
    never = avro.never_written(branches[index])
    if never is not None:
        raise _load_error(path, never)
    return index, inner


def _pick_branch(avro: AvroSchema, branches: list, value: Any, path: str) -> tuple[int, Any]:
    names = [avro.branch_name(avro.resolve(b)) for b in branches]
    if value is None:
        if "null" in names:
            return names.index("null"), None
        raise _load_error(path, f"must not be null (one of {', '.join(names)})")
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        index = branch_index(avro, branches, value[0])
        if index is None:
            raise _load_error(
                path, f"{value[0]!r} is not a branch of this union ({', '.join(names)})"
            )
        return index, value[1]
    if isinstance(value, dict):
        fits = dict_branches(avro, branches, value)
        if len(fits) == 1:
            return fits[0], value
        which = (
            "no branch" if not fits else f"several branches ({', '.join(names[i] for i in fits)})"
        )
        raise _load_error(
            path,
            f"a dict with fields {', '.join(map(repr, value))} fits {which}; "
            f'name the branch with a ("full.Name", {{...}}) tuple',
        )
    # NOTE: a whole number typed into a form may fill a float or double branch too; a text
    # may be an enum's or a string's, and an enum without symbols takes none.
    fits = [i for i in kind_branches(avro, branches, value) if not avro.never_written(branches[i])]
    if fits:
        return fits[0], value
    raise _load_error(path, f"{_repr60(value)} fits no branch of {', '.join(names)}")


# -- the form -----------------------------------------------------------------------------------


class _Context:
    """What every node of one form shares: the schema, the change signal, the last problems."""

    def __init__(self, avro: AvroSchema) -> None:
        self.avro = avro
        self.quiet = Quiet()
        self.listeners: list[Callable[[], None]] = []
        self.marks: dict[str, list[str]] = {}

    def changed(self, *_: Any) -> None:
        if self.quiet:
            return
        for listener in list(self.listeners):
            listener()


class _Node:
    """One input of the form. ``path`` is never stored: paths change when array items move."""

    widget: W.Widget

    def __init__(self, ctx: _Context, t: Any, field: dict | None) -> None:
        self.ctx = ctx
        self.t = t
        self.field = field
        self.error = W.HTML("")

    def get(self) -> Any:
        raise NotImplementedError

    def set(self, value: Any, path: str) -> None:
        raise NotImplementedError

    def form_problems(self, path: str) -> list[FieldProblem]:
        """Problems only the form sees (text that is not a number, a malformed URN)."""
        return []

    def mark(self, path: str) -> None:
        """Show the problems of ``ctx.marks`` that belong to this input and below."""
        self._show([f"{path or '<record>'}: {m}" for m in self.ctx.marks.get(path, [])])

    def _show(self, messages: list[str]) -> None:
        self.error.value = "".join(f"<div>⚠ {esc(m)}</div>" for m in messages)

    def child(self, segment: str | int) -> _Node:
        """The input one path segment below (a field name, an item index, a map key)."""
        raise KeyError(segment)


class _Scalar(_Node):
    """A primitive input. A loaded value of the wrong type is kept as it is until edited."""

    _foreign: Any = None
    _has_foreign = False

    def _watch(self, widget: W.Widget) -> None:
        widget.observe(self._edited, names="value")

    def _edited(self, *_: Any) -> None:
        if not self.ctx.quiet:
            self._has_foreign = False
        self.ctx.changed()

    def _keep_foreign(self, value: Any) -> None:
        self._foreign, self._has_foreign = value, True


class _StringNode(_Scalar):
    def __init__(self, ctx: _Context, t: Any, field: dict | None, *, urn: bool) -> None:
        super().__init__(ctx, t, field)
        self.urn = urn
        self.text = W.Text(
            continuous_update=False,
            placeholder="urn:li:..." if urn else "",
            layout=W.Layout(width="100%"),
        )
        self._watch(self.text)
        self.helper: _UrnHelper | None = None
        if urn:
            self.helper_button = W.ToggleButton(
                description="URN builder",
                icon="wrench",
                tooltip="Build the URN from an entity kind, a platform, a name and an environment",
                layout=W.Layout(width="auto", flex="0 0 auto"),
            )
            self.helper_box = W.VBox()
            self.helper_button.observe(self._toggle_helper, names="value")
            self.widget = W.VBox([W.HBox([self.text, self.helper_button]), self.helper_box])
        else:
            self.widget = self.text

    def _toggle_helper(self, change: dict) -> None:
        if change["new"] and self.helper is None:
            kinds = (self.field or {}).get("entityTypes") or []
            self.helper = _UrnHelper(self, kinds=[k for k in kinds if k in URN_KINDS])
        self.helper_box.children = (self.helper.widget,) if change["new"] and self.helper else ()

    def get(self) -> Any:
        return self._foreign if self._has_foreign else self.text.value

    def set(self, value: Any, path: str) -> None:
        self._has_foreign = False
        if isinstance(value, str):
            self.text.value = value
        else:
            self.text.value = "" if value is None else _text(value)
            self._keep_foreign(value)

    def form_problems(self, path: str) -> list[FieldProblem]:
        value = self.get()
        if not self.urn or not isinstance(value, str):
            return []
        if not value:
            return [FieldProblem(path, "a URN is required here, like urn:li:corpuser:jdoe")]
        try:
            parse_urn(value)
        except InvalidUrnError as exc:
            return [FieldProblem(path, str(exc))]
        return []


class _UrnHelper:
    """Entity kind, platform, name and environment, turned into a URN by ``make_*_urn``."""

    def __init__(self, target: _StringNode, *, kinds: list[str]) -> None:
        self.target = target
        options = kinds + [k for k in URN_KINDS if k not in kinds]
        self.kind = W.Dropdown(options=options, value=options[0], description="Entity")
        self.platform = W.Text(description="Platform", placeholder="hive")
        self.name = W.Text(description="Name", placeholder="db.table or jdoe")
        self.env = W.Dropdown(options=list(FABRIC_TYPES), value=DEFAULT_ENV, description="Env")
        self.build_button = W.Button(description="Use this URN", icon="check")
        self.message = W.HTML("")
        self.kind.observe(self._kind_changed, names="value")
        self.build_button.on_click(self.build)
        self._kind_changed()
        self.widget = W.VBox(
            [self.kind, self.platform, self.name, self.env, self.build_button, self.message]
        )

    def _kind_changed(self, *_: Any) -> None:
        parts = URN_KINDS[self.kind.value][1]
        for name in ("platform", "env"):
            getattr(self, name).layout.display = None if name in parts else "none"

    def build(self, *_: Any) -> str | None:
        """Build the URN into the field; a bad part shows why and changes nothing."""
        make, parts = URN_KINDS[self.kind.value]
        args = [getattr(self, p).value for p in parts]
        try:
            urn = make(*args)
        except InvalidUrnError as exc:
            self.message.value = f"⚠ {esc(exc)}"
            return None
        self.message.value = ""
        self.target.set(urn, "")
        self.target.ctx.changed()
        return urn


class _IntNode(_Scalar):
    def __init__(self, ctx: _Context, t: Any, field: dict | None, *, kind: str) -> None:
        super().__init__(ctx, t, field)
        self.kind = kind
        lo, hi = _INT_RANGE[kind]
        # NOTE: a text box, not IntText: JavaScript numbers cannot hold every long exactly.
        self.text = W.Text(
            continuous_update=False,
            placeholder=f"whole number, {lo}..{hi}",
            tooltip=f"{kind}: a whole number from {lo} to {hi}",
        )
        self._watch(self.text)
        logical = self.t.get("logicalType") if isinstance(self.t, dict) else None
        if logical in ("timestamp-millis", "timestamp-micros"):
            self.now = W.Button(description="now", tooltip="The current time", icon="clock")
            factor = 1000 if logical == "timestamp-millis" else 1_000_000
            self.now.on_click(
                lambda *_: setattr(self.text, "value", str(int(time.time() * factor)))
            )
            self.widget = W.HBox([self.text, self.now])
        else:
            self.widget = self.text

    def get(self) -> Any:
        if self._has_foreign:
            return self._foreign
        text = self.text.value.strip().replace("_", "")
        try:
            return int(text)
        except ValueError:
            return self.text.value

    def set(self, value: Any, path: str) -> None:
        self._has_foreign = False
        text = "" if value is None else _text(value)
        self.text.value = text
        # NOTE: an integer too long to show whole is kept as it is (validation refuses it).
        if isinstance(value, bool) or not isinstance(value, int) or not _DIGITS.fullmatch(text):
            self._keep_foreign(value)

    def form_problems(self, path: str) -> list[FieldProblem]:
        value = self.get()
        if isinstance(value, str) and not self._has_foreign:
            if _DIGITS.fullmatch(value.strip().replace("_", "")):
                # NOTE: int() refuses more digits than sys.get_int_max_str_digits().
                lo, hi = _INT_RANGE[self.kind]
                return [
                    FieldProblem(
                        path,
                        f"{_shown(value)} is out of the {self.kind} range {lo}..{hi}",
                    )
                ]
            return [FieldProblem(path, f"{_shown(value)} is not a whole number ({self.kind})")]
        return []


class _FloatNode(_Scalar):
    def __init__(self, ctx: _Context, t: Any, field: dict | None) -> None:
        super().__init__(ctx, t, field)
        self.number = W.FloatText(continuous_update=False)
        self._watch(self.number)
        self.widget = self.number

    def get(self) -> Any:
        return self._foreign if self._has_foreign else float(self.number.value)

    def set(self, value: Any, path: str) -> None:
        self._has_foreign = False
        number = _as_float(value)
        if number is not None and math.isfinite(number):
            self.number.value = number
        else:
            # NOTE: kept as it is, and refused by validation beside the input: NaN or an
            # infinity is no number the browser's input takes (Jupyter sends it as the text
            # 'nan'), and float() of an integer past a double raises OverflowError.
            self._keep_foreign(value)


def _as_float(value: Any) -> float | None:
    """``value`` as the float a number input holds, or None when it is no number one holds."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


class _BoolNode(_Scalar):
    def __init__(self, ctx: _Context, t: Any, field: dict | None) -> None:
        super().__init__(ctx, t, field)
        self.checkbox = W.Checkbox(indent=False, layout=W.Layout(width="auto"))
        self._watch(self.checkbox)
        self.widget = self.checkbox

    def get(self) -> Any:
        return self._foreign if self._has_foreign else bool(self.checkbox.value)

    def set(self, value: Any, path: str) -> None:
        self._has_foreign = False
        if isinstance(value, bool):
            self.checkbox.value = value
        else:
            self._keep_foreign(value)


class _BytesNode(_Scalar):
    def __init__(self, ctx: _Context, t: Any, field: dict | None, *, size: int | None) -> None:
        super().__init__(ctx, t, field)
        self.size = size
        self.text = W.Text(continuous_update=False, placeholder="hex, like 00ff")
        self.encoding = W.Dropdown(
            options=["hex", "base64"], value="hex", layout=W.Layout(width="7em")
        )
        self._watch(self.text)
        self._bytes = b""
        self.encoding.observe(self._recode, names="value")
        self.widget = W.HBox([self.text, self.encoding])

    def _decode(self, text: str, encoding: str | None = None) -> bytes:
        if (encoding or self.encoding.value) == "hex":
            return bytes.fromhex(text)
        return base64.b64decode(text, validate=True)

    def _encode(self, data: bytes) -> str:
        return data.hex() if self.encoding.value == "hex" else base64.b64encode(data).decode()

    def _recode(self, change: dict) -> None:
        self.text.placeholder = "hex, like 00ff" if change["new"] == "hex" else "base64, like AP8="
        try:
            data = self._decode(self.text.value.strip(), change["old"])
        except (ValueError, binascii.Error):
            self.ctx.changed()
            return
        with self.ctx.quiet():
            self.text.value = self._encode(data)
        self.ctx.changed()

    def get(self) -> Any:
        if self._has_foreign:
            return self._foreign
        try:
            return self._decode(self.text.value.strip())
        except (ValueError, binascii.Error):
            return self.text.value

    def set(self, value: Any, path: str) -> None:
        self._has_foreign = False
        if isinstance(value, (bytes, bytearray)):
            self.text.value = self._encode(bytes(value))
        else:
            self.text.value = "" if value is None else str(value)
            self._keep_foreign(value)

    def form_problems(self, path: str) -> list[FieldProblem]:
        value = self.get()
        if isinstance(value, str) and not self._has_foreign:
            return [FieldProblem(path, f"{_shown(value)} is not valid {self.encoding.value}")]
        if self.size is not None and isinstance(value, bytes) and len(value) != self.size:
            return [FieldProblem(path, f"expected {self.size} bytes, got {len(value)}")]
        return []


class _EnumNode(_Scalar):
    def __init__(self, ctx: _Context, t: Any, field: dict | None) -> None:
        super().__init__(ctx, t, field)
        resolved = ctx.avro.resolve(t)
        self.dropdown = W.Dropdown(options=list(resolved["symbols"]))
        self._watch(self.dropdown)
        self.widget = self.dropdown

    def get(self) -> Any:
        return self._foreign if self._has_foreign else self.dropdown.value

    def set(self, value: Any, path: str) -> None:
        self._has_foreign = False
        if value in self.dropdown.options:
            self.dropdown.value = value
        else:
            self.dropdown.index = None
            self._keep_foreign(value)


class _NullNode(_Node):
    def __init__(self, ctx: _Context, t: Any, field: dict | None) -> None:
        super().__init__(ctx, t, field)
        self.widget = W.HTML("<i>null</i>")

    def get(self) -> Any:
        return None

    def set(self, value: Any, path: str) -> None:
        if value is not None:
            raise _load_error(path, f"expected null, got {_repr60(value)}")


def _icon_button(icon: str, tooltip: str) -> W.Button:
    # NOTE: in a row beside a wide item the buttons would shrink to "↑.."; they keep their size.
    return W.Button(icon=icon, tooltip=tooltip, layout=W.Layout(width="auto", flex="0 0 auto"))


class _ArrayNode(_Node):
    def __init__(self, ctx: _Context, t: Any, field: dict | None) -> None:
        super().__init__(ctx, t, field)
        self.items_type = ctx.avro.resolve(t)["items"]
        self.items: list[_Node] = []
        self.rows: list[W.Widget] = []
        self.box = W.VBox()
        self.add_button = W.Button(
            description="Add", icon="plus", tooltip=f"Add a {ctx.avro.label(self.items_type)}"
        )
        # NOTE: said beside the list, with Add off: adding an item raised inside the click
        # handler, where nobody sees it (the list just stayed empty).
        self.never = ctx.avro.never_written(self.items_type)
        self.add_button.disabled = self.never is not None
        self.note = _never_note(f"This list stays empty: {self.never}" if self.never else "")
        self.add_button.on_click(lambda *_: None if self.never else self.add())
        self.widget = W.VBox([self.box, self.add_button, self.note])
        self._path = ""

    def _row(self, node: _Node) -> W.Widget:
        up = _icon_button("arrow-up", "Move up")
        down = _icon_button("arrow-down", "Move down")
        remove = _icon_button("trash", "Remove")
        up.on_click(lambda *_: self.move(self.items.index(node), -1))
        down.on_click(lambda *_: self.move(self.items.index(node), +1))
        remove.on_click(lambda *_: self.remove(self.items.index(node)))
        body = W.VBox([node.widget, node.error], layout=W.Layout(flex="1 1 auto"))
        return W.HBox([body, up, down, remove])

    def _refresh(self) -> None:
        self.box.children = tuple(self.rows)

    def add(self, value: Any = None, *, blank: bool = True) -> _Node:
        """Append an item (a blank one unless ``value`` is given) and return its input.

        Raises :class:`ValidationError` when no item of the list's type can be written.
        """
        if self.never is not None:
            raise _load_error(self._path, f"{self.never}; this list stays empty")
        node = make_node(self.ctx, self.items_type, self.field, lazy=False)
        with self.ctx.quiet():
            item_path = f"{self._path}[{len(self.items)}]"
            node.set(blank_value(self.ctx.avro, self.items_type) if blank else value, item_path)
        self.items.append(node)
        self.rows.append(self._row(node))
        self._refresh()
        self.ctx.changed()
        return node

    def remove(self, index: int) -> None:
        """Remove the item at ``index``."""
        del self.items[index]
        del self.rows[index]
        self._refresh()
        self.ctx.changed()

    def move(self, index: int, step: int) -> None:
        """Move the item at ``index`` up (``step=-1``) or down (``+1``); the ends stay put."""
        other = index + step
        if not 0 <= other < len(self.items):
            return
        for seq in (self.items, self.rows):
            seq[index], seq[other] = seq[other], seq[index]
        self._refresh()
        self.ctx.changed()

    def get(self) -> Any:
        return [node.get() for node in self.items]

    def set(self, value: Any, path: str) -> None:
        if not isinstance(value, (list, tuple)):
            raise _load_error(path, f"expected a list, got {type(value).__name__} {_repr60(value)}")
        self._path = path
        self.items, self.rows = [], []
        with self.ctx.quiet():
            for item in value:
                self.add(item, blank=False)
        self._refresh()

    def form_problems(self, path: str) -> list[FieldProblem]:
        out = []
        for i, node in enumerate(self.items):
            out.extend(node.form_problems(f"{path}[{i}]"))
        return out

    def mark(self, path: str) -> None:
        super().mark(path)
        for i, node in enumerate(self.items):
            node.mark(f"{path}[{i}]")

    def child(self, segment: str | int) -> _Node:
        if not isinstance(segment, int):
            raise KeyError(segment)
        return self.items[segment]


class _MapNode(_Node):
    def __init__(self, ctx: _Context, t: Any, field: dict | None) -> None:
        super().__init__(ctx, t, field)
        self.values_type = ctx.avro.resolve(t)["values"]
        self.entries: list[tuple[W.Text, _Node, W.Widget]] = []
        self.box = W.VBox()
        self.add_button = W.Button(description="Add entry", icon="plus", tooltip="Add a key")
        self.never = ctx.avro.never_written(self.values_type)
        self.add_button.disabled = self.never is not None
        self.note = _never_note(f"This map stays empty: {self.never}" if self.never else "")
        self.add_button.on_click(lambda *_: None if self.never else self.add())
        self.widget = W.VBox([self.box, self.add_button, self.note])
        self._path = ""

    def add(self, key: str = "", value: Any = None, *, blank: bool = True) -> tuple[W.Text, _Node]:
        """Append a key/value row and return its key box and value input.

        Raises :class:`ValidationError` when no value of the map's type can be written.
        """
        if self.never is not None:
            raise _load_error(self._path, f"{self.never}; this map stays empty")
        key_box = W.Text(value=key, placeholder="key", continuous_update=False)
        key_box.layout.width = "12em"
        key_box.observe(self.ctx.changed, names="value")
        node = make_node(self.ctx, self.values_type, self.field, lazy=False)
        with self.ctx.quiet():
            value_path = f"{self._path}[{key!r}]"
            node.set(blank_value(self.ctx.avro, self.values_type) if blank else value, value_path)
        remove = _icon_button("trash", "Remove")
        body = W.VBox([node.widget, node.error], layout=W.Layout(flex="1 1 auto"))
        row = W.HBox([key_box, body, remove])
        entry = (key_box, node, row)
        remove.on_click(lambda *_: self.remove(self.entries.index(entry)))
        self.entries.append(entry)
        self.box.children = tuple(e[2] for e in self.entries)
        self.ctx.changed()
        return key_box, node

    def remove(self, index: int) -> None:
        """Remove the row at ``index``."""
        del self.entries[index]
        self.box.children = tuple(e[2] for e in self.entries)
        self.ctx.changed()

    def get(self) -> Any:
        return {key.value: node.get() for key, node, _ in self.entries}

    def set(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise _load_error(path, f"expected a dict, got {type(value).__name__} {_repr60(value)}")
        self._path = path
        self.entries = []
        with self.ctx.quiet():
            for k, v in value.items():
                self.add(str(k), v, blank=False)
        self.box.children = tuple(e[2] for e in self.entries)

    def form_problems(self, path: str) -> list[FieldProblem]:
        out: list[FieldProblem] = []
        seen: set[str] = set()
        for key, node, _ in self.entries:
            if key.value in seen:
                out.append(FieldProblem(path, f"the key {key.value!r} appears twice"))
            seen.add(key.value)
            out.extend(node.form_problems(f"{path}[{key.value!r}]"))
        return out

    def mark(self, path: str) -> None:
        super().mark(path)
        for key, node, _ in self.entries:
            node.mark(f"{path}[{key.value!r}]")

    def child(self, segment: str | int) -> _Node:
        for key, node, _ in self.entries:
            if key.value == segment:
                return node
        raise KeyError(segment)


class _RecordNode(_Node):
    """A record's fields. When ``lazy``, a collapsed section whose fields are made on opening."""

    def __init__(self, ctx: _Context, t: Any, field: dict | None, *, lazy: bool) -> None:
        super().__init__(ctx, t, field)
        self.record = ctx.avro.resolve(t)
        self.nodes: dict[str, _Node] | None = None
        # PERF: a record of thousands of fields would take seconds and tens of thousands of
        # widgets to show; fields past the first FIELDS_PAGE keep their value here until the
        # "more fields" button (or form.node()) makes their inputs.
        self.unbuilt: dict[str, Any] = {}
        self.more_button = W.Button(icon="chevron-down", layout=W.Layout(width="auto"))
        self.more_button.on_click(lambda *_: self.build_more())
        self.extra: dict[str, Any] = {}
        self.pending: Any = None
        self._path = ""
        self.body = W.VBox()
        self.lazy = lazy
        if lazy:
            self.section = W.Accordion(children=[self.body], titles=(self._title(0),))
            self.section.selected_index = None
            self.section.observe(self._opened, names="selected_index")
            self.widget = self.section
        else:
            self.widget = self.body

    def _title(self, problems: int) -> str:
        type_label = self.ctx.avro.label(self.record["name"])
        title = type_label if self.field is None else f"{self.field['name']} ({type_label})"
        if problems:
            title += f" ⚠ {problems} problem{'s' if problems != 1 else ''}"
        return title

    def _opened(self, change: dict) -> None:
        if change["new"] is not None:
            self.build()

    @property
    def built(self) -> bool:
        """Whether the fields' inputs exist yet."""
        return self.nodes is not None

    def build(self) -> None:
        """Make the fields' inputs, filled with the value held so far."""
        if self.nodes is not None:
            return
        self.nodes = {}
        self.rows: dict[str, W.Widget] = {}
        self.unbuilt = {f["name"]: None for f in self.record["fields"]}
        pending, self.pending = self.pending, None
        self._fill(pending, self._path)
        self.build_more()

    def build_more(self, name: str | None = None) -> None:
        """Make the inputs of the next :data:`FIELDS_PAGE` fields not shown yet (or of one)."""
        assert self.nodes is not None
        todo = [
            f
            for f in self.record["fields"]
            if f["name"] in self.unbuilt and (name is None or f["name"] == name)
        ][:FIELDS_PAGE]
        with self.ctx.quiet():
            for f in todo:
                node = make_node(self.ctx, f["type"], f, lazy=True)
                node.set(self.unbuilt.pop(f["name"]), _sub(self._path, f["name"]))
                self.nodes[f["name"]] = node
                self.rows[f["name"]] = self._row(f, node)
        self._show_more()
        self.mark(self._path)

    def _show_more(self, problems: int = 0) -> None:
        left = len(self.unbuilt)
        self.more_button.description = (
            f"Show {min(left, FIELDS_PAGE)} more fields ({left} not shown yet)"
            + (f" ⚠ {problems} problem{'s' if problems != 1 else ''}" if problems else "")
        )
        rows = tuple(self.rows[f["name"]] for f in self.record["fields"] if f["name"] in self.rows)
        self.body.children = (*rows, self.more_button) if left else rows

    def _row(self, f: dict, node: _Node) -> W.Widget:
        avro = self.ctx.avro
        required = "default" not in f
        doc = str(f.get("doc", "")).strip()
        tip = f"{f['name']}: {avro.label(f['type'])}{'' if not required else ' (required)'}"
        if doc:
            tip += f"\n{doc}"
        label = W.Label(
            f"{f['name']}{' *' if required else ''}",
            tooltip=tip,
            layout=W.Layout(width=_LABEL_WIDTH, flex="0 0 auto"),
        )
        if isinstance(node, _RecordNode) and node.lazy:
            return W.VBox([node.widget, node.error])
        body = W.VBox([node.widget, node.error], layout=W.Layout(flex="1 1 auto"))
        return W.HBox([label, body])

    def _fill(self, value: dict, path: str) -> None:
        assert self.nodes is not None
        for f in self.record["fields"]:
            name = f["name"]
            if name in value:
                v = value[name]
            elif "default" in f:
                v = default_value(self.ctx.avro, f["default"], f["type"])
            else:
                v = blank_value(self.ctx.avro, f["type"])
            if name in self.unbuilt:
                self.unbuilt[name] = v
            else:
                self.nodes[name].set(v, _sub(path, name))

    def _check_shape(self, value: Any, path: str) -> dict:
        if isinstance(value, tuple) and len(value) == 2 and value[0] == self.record["name"]:
            value = value[1]
        if not isinstance(value, dict):
            raise _load_error(
                path,
                f"expected a {self.ctx.avro.label(self.record['name'])} record (a dict), "
                f"got {type(value).__name__} {_repr60(value)}",
            )
        return value

    def set(self, value: Any, path: str) -> None:
        value = self._check_shape(value, path)
        names = {f["name"] for f in self.record["fields"]}
        # NOTE: unknown fields are kept (and reported by validation), never dropped silently.
        self.extra = {k: v for k, v in value.items() if k not in names}
        self._path = path
        if self.nodes is None and self.lazy:
            # Check the shape now, so a bad load fails at once rather than when opened.
            _check_value_shape(self.ctx.avro, value, self.record["name"], path)
            self.pending = value
            return
        if self.nodes is None:
            self.pending = value
            self.build()
        else:
            self._fill(value, path)

    def get(self) -> Any:
        if self.nodes is None:
            base = self.pending if self.pending is not None else {}
            out = {}
            for f in self.record["fields"]:
                if f["name"] in base:
                    out[f["name"]] = base[f["name"]]
                elif "default" in f:
                    out[f["name"]] = default_value(self.ctx.avro, f["default"], f["type"])
                else:
                    out[f["name"]] = blank_value(self.ctx.avro, f["type"])
        else:
            nodes = self.nodes
            out = {
                f["name"]: nodes[f["name"]].get() if f["name"] in nodes else self.unbuilt[f["name"]]
                for f in self.record["fields"]
            }
        out.update(self.extra)
        return out

    def form_problems(self, path: str) -> list[FieldProblem]:
        if self.nodes is None:
            return _value_form_problems(self.ctx.avro, self.get(), self.record["name"], path)
        out = []
        for f in self.record["fields"]:
            name = f["name"]
            if name in self.nodes:
                out.extend(self.nodes[name].form_problems(_sub(path, name)))
            else:
                out.extend(
                    _value_form_problems(
                        self.ctx.avro, self.unbuilt[name], f["type"], _sub(path, name), field=f
                    )
                )
        return out

    def mark(self, path: str) -> None:
        self._path = path
        super().mark(path)
        if self.lazy:
            below = [p for p in self.ctx.marks if _under(p, path)]
            self.section.set_title(0, self._title(sum(len(self.ctx.marks[p]) for p in below)))
        if self.nodes is not None:
            for name, node in self.nodes.items():
                node.mark(_sub(path, name))
            if self.unbuilt:
                prefix = f"{path}." if path else ""
                self._show_more(
                    sum(
                        len(m)
                        for p, m in self.ctx.marks.items()
                        if _field_below(p, prefix) in self.unbuilt
                    )
                )

    def child(self, segment: str | int) -> _Node:
        if self.lazy and self.section.selected_index is None:
            self.section.selected_index = 0
        self.build()
        assert self.nodes is not None
        if str(segment) in self.unbuilt:
            self.build_more(str(segment))
        return self.nodes[str(segment)]


_FIELD_NAME = re.compile(r"[^.\[\]]+")


def _field_below(p: str, prefix: str) -> str | None:
    """The name of the field right under ``prefix`` (a record's path and a dot) in ``p``."""
    if not p.startswith(prefix):
        return None
    m = _FIELD_NAME.match(p, len(prefix))
    return m.group() if m else None


def _under(p: str, path: str) -> bool:
    if not path:
        return True
    return p == path or p.startswith((path + ".", path + "["))


class _NullableNode(_Node):
    """``[null, T]``: an on/off toggle; T's input is made when first switched on."""

    def __init__(self, ctx: _Context, t: Any, field: dict | None, *, inner: Any) -> None:
        super().__init__(ctx, t, field)
        self.inner_type = inner
        self.inner: _Node | None = None
        label = ctx.avro.label(inner)
        self.toggle = W.Checkbox(
            value=False, description=f"set ({label})", indent=False, tooltip=f"null or a {label}"
        )
        self.toggle.layout.width = "auto"
        self.box = W.VBox()
        # NOTE: a record that can never be written is said beside the toggle, which stays off:
        # switching it on raised inside the click handler, where nobody sees it.
        self.never = ctx.avro.never_written(inner)
        self.toggle.disabled = self.never is not None
        self.note = _never_note(f"This field stays null: {self.never}" if self.never else "")
        self.toggle.observe(self._switched, names="value")
        self.widget = W.VBox([self.toggle, self.note, self.box])
        self._path = ""

    def _ensure_inner(self) -> _Node:
        if self.inner is None:
            self.inner = make_node(self.ctx, self.inner_type, self.field, lazy=False)
            with self.ctx.quiet():
                self.inner.set(blank_value(self.ctx.avro, self.inner_type), self._path)
        return self.inner

    def _switched(self, change: dict) -> None:
        if change["new"] and self.never is not None:
            with self.ctx.quiet():
                self.toggle.value = False
            return
        if change["new"]:
            inner = self._ensure_inner()
            self.box.children = (inner.widget, inner.error)
        else:
            self.box.children = ()
        self.ctx.changed()

    def get(self) -> Any:
        if not self.toggle.value or self.inner is None:
            return None
        value = self.inner.get()
        avro = self.ctx.avro
        if _is_record(avro, self.inner_type):
            return (avro.branch_name(avro.resolve(self.inner_type)), value)
        return value

    def set(self, value: Any, path: str) -> None:
        self._path = path
        if value is None:
            self.toggle.value = False
            return
        if self.never is not None:
            raise _load_error(path, f"{self.never}; this field stays null")
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
            pick_branch(self.ctx.avro, ["null", self.inner_type], value, path)
            value = value[1]
        inner = self._ensure_inner()
        inner.set(value, path)
        self.toggle.value = True

    def form_problems(self, path: str) -> list[FieldProblem]:
        if self.toggle.value and self.inner is not None:
            return self.inner.form_problems(path)
        return []

    def mark(self, path: str) -> None:
        if self.toggle.value and self.inner is not None:
            self._show([])
            self.inner.mark(path)
        else:
            super().mark(path)

    def child(self, segment: str | int) -> _Node:
        if self.never is not None:
            raise KeyError(segment)
        if not self.toggle.value:
            self.toggle.value = True
        return self._ensure_inner().child(segment)


class _UnionNode(_Node):
    """A union of several branches: a branch selector and the picked branch's input."""

    def __init__(self, ctx: _Context, t: Any, field: dict | None) -> None:
        super().__init__(ctx, t, field)
        avro = ctx.avro
        self.branches: list = list(avro.resolve(t))
        self.names = [avro.branch_name(avro.resolve(b)) for b in self.branches]
        shorts = [n.rpartition(".")[2] for n in self.names]
        labels = [
            "— none —" if n == "null" else (s if shorts.count(s) == 1 else n)
            for n, s in zip(self.names, shorts, strict=True)
        ]
        # NOTE: a branch no value of which can be written is left out of the choice, and said
        # under it: picking it raised inside the widget's handler, where nobody sees it. The
        # type has a branch that can be written, or no input of it would be made.
        self.never = {i: why for i, b in enumerate(self.branches) if (why := avro.never_written(b))}
        options = [(label, i) for i, label in enumerate(labels) if i not in self.never]
        self.selector = W.Dropdown(
            options=options,
            value=options[0][1],
            tooltip="Which kind of value this is",
        )
        self.note = _never_note(
            "; ".join(f"Left out of the choice: {why}" for why in self.never.values())
        )
        self.nodes: dict[int, _Node] = {}
        self.box = W.VBox()
        self.selector.observe(self._picked, names="value")
        self.widget = W.VBox([self.selector, self.note, self.box])
        self._path = ""

    @property
    def branch(self) -> str:
        """The full name (or primitive type) of the branch picked."""
        return self.names[self.selector.value]

    def _node(self, index: int) -> _Node:
        node = self.nodes.get(index)
        if node is None:
            b = self.branches[index]
            node = make_node(self.ctx, b, self.field, lazy=False)
            with self.ctx.quiet():
                node.set(blank_value(self.ctx.avro, b), self._path)
            self.nodes[index] = node
        return node

    def _picked(self, change: dict) -> None:
        node = self._node(change["new"])
        self.box.children = (node.widget, node.error)
        self.ctx.changed()

    def pick(self, branch: str) -> _Node:
        """Pick a branch by full or short name and return its input.

        Raises KeyError for a branch the union does not have, or one that can never be written.
        """
        for i, n in enumerate(self.names):
            if branch in (n, n.rpartition(".")[2]):
                if i in self.never:
                    raise KeyError(f"{branch!r} cannot be picked: {self.never[i]}")
                self.selector.value = i
                return self._node(i)
        raise KeyError(f"{branch!r} is not a branch of this union ({', '.join(self.names)})")

    def get(self) -> Any:
        index = self.selector.value
        node = self._node(index)
        value = node.get()
        b = self.branches[index]
        if _is_record(self.ctx.avro, b):
            return (self.names[index], value)
        # A plain value is written to the first branch it fits, so name it when that is not ours.
        first = next(
            (i for i, c in enumerate(self.branches) if _fits_plain(self.ctx.avro, value, c)), None
        )
        return value if first == index else (self.names[index], value)

    def set(self, value: Any, path: str) -> None:
        self._path = path
        index, inner = pick_branch(self.ctx.avro, self.branches, value, path)
        node = self._node(index)
        node.set(inner, path)
        with self.ctx.quiet():
            self.selector.value = index
        self.box.children = (node.widget, node.error)

    def form_problems(self, path: str) -> list[FieldProblem]:
        return self._node(self.selector.value).form_problems(path)

    def mark(self, path: str) -> None:
        self._show([])
        self._node(self.selector.value).mark(path)

    def child(self, segment: str | int) -> _Node:
        return self._node(self.selector.value).child(segment)


def _fits_plain(avro: AvroSchema, value: Any, t: Any) -> bool:
    from metaverse_kit.events.validation import check_type

    if avro.kind(t) in ("record", "map", "union"):
        return False
    return not check_type(avro, value, t)[1]


def make_node(ctx: _Context, t: Any, field: dict | None, *, lazy: bool) -> _Node:
    """The input for a value of Avro type ``t`` (``field`` is the record field it sits in)."""
    avro = ctx.avro
    r = avro.resolve(t)
    if isinstance(r, list):
        others = [b for b in r if b != "null"]
        if len(r) == 2 and len(others) == 1:
            return _NullableNode(ctx, t, field, inner=others[0])
        return _UnionNode(ctx, t, field)
    kind = avro.kind(r)
    if kind == "record":
        return _RecordNode(ctx, t, field, lazy=lazy)
    if kind == "array":
        return _ArrayNode(ctx, r, field)
    if kind == "map":
        return _MapNode(ctx, r, field)
    if kind == "enum":
        return _EnumNode(ctx, r, field)
    if kind == "fixed":
        return _BytesNode(ctx, r, field, size=int(r["size"]))
    if kind == "string":
        return _StringNode(ctx, r, field, urn=is_urn_field(field))
    if kind in ("int", "long"):
        return _IntNode(ctx, r, field, kind=kind)
    if kind in ("float", "double"):
        return _FloatNode(ctx, r, field)
    if kind == "boolean":
        return _BoolNode(ctx, r, field)
    if kind == "bytes":
        return _BytesNode(ctx, r, field, size=None)
    if kind == "null":
        return _NullNode(ctx, r, field)
    raise ValueError(f"unsupported Avro type {kind!r}")  # pragma: no cover - PRIMITIVES is closed


def _check_value_shape(avro: AvroSchema, value: Any, t: Any, path: str) -> None:
    """Raise what loading ``value`` into an input of type ``t`` would raise, building nothing."""
    r = avro.resolve(t)
    if isinstance(r, list):
        index, inner = pick_branch(avro, r, value, path)
        _check_value_shape(avro, inner, r[index], path)
        return
    kind = avro.kind(r)
    if kind == "record":
        never = avro.never_written(r)
        if never is not None:
            # NOTE: loading it would build inputs until a field has no value, then fail there.
            raise _load_error(path, never)
        if isinstance(value, tuple) and len(value) == 2 and value[0] == r["name"]:
            value = value[1]
        if not isinstance(value, dict):
            raise _load_error(
                path, f"expected a {avro.label(r['name'])} record (a dict), got {_repr60(value)}"
            )
        for f in r["fields"]:
            if f["name"] in value:
                _check_value_shape(avro, value[f["name"]], f["type"], _sub(path, f["name"]))
    elif kind == "array":
        if not isinstance(value, (list, tuple)):
            raise _load_error(path, f"expected a list, got {_repr60(value)}")
        for i, item in enumerate(value):
            _check_value_shape(avro, item, r["items"], f"{path}[{i}]")
    elif kind == "map":
        if not isinstance(value, dict):
            raise _load_error(path, f"expected a dict, got {_repr60(value)}")
        for k, item in value.items():
            _check_value_shape(avro, item, r["values"], f"{path}[{k!r}]")
    elif kind == "null" and value is not None:
        raise _load_error(path, f"expected null, got {_repr60(value)}")


def _value_form_problems(
    avro: AvroSchema, value: Any, t: Any, path: str, *, field: dict | None = None
) -> list[FieldProblem]:
    """The form's own checks (URN fields) on a value held by a section not opened yet.

    ``field`` is the record field ``value`` sits in, when it has one.
    """
    out: list[FieldProblem] = []

    def walk(v: Any, t: Any, path: str, field: dict | None) -> None:
        r = avro.resolve(t)
        if isinstance(r, list):
            if isinstance(v, tuple) and len(v) == 2:
                for b in r:
                    if avro.branch_name(avro.resolve(b)) == v[0]:
                        walk(v[1], b, path, field)
                return
            for b in r:
                if b != "null" and _fits_plain(avro, v, b):
                    walk(v, b, path, field)
                    return
                if avro.kind(b) == "record" and isinstance(v, dict):
                    walk(v, b, path, field)
                    return
            return
        kind = avro.kind(r)
        if kind == "record" and isinstance(v, dict):
            for f in r["fields"]:
                if f["name"] in v:
                    walk(v[f["name"]], f["type"], _sub(path, f["name"]), f)
        elif kind == "array" and isinstance(v, list):
            for i, item in enumerate(v):
                walk(item, r["items"], f"{path}[{i}]", field)
        elif kind == "map" and isinstance(v, dict):
            for k, item in v.items():
                walk(item, r["values"], f"{path}[{k!r}]", field)
        elif kind == "string" and is_urn_field(field) and isinstance(v, str):
            if not v:
                out.append(FieldProblem(path, "a URN is required here, like urn:li:corpuser:jdoe"))
            else:
                try:
                    parse_urn(v)
                except InvalidUrnError as exc:
                    out.append(FieldProblem(path, str(exc)))

    walk(value, t, path, field)
    return out


_SEGMENT = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]|\[('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\]")


def split_path(path: str) -> list[str | int]:
    """Split ``a.b[0].c['key']`` into ``["a", "b", 0, "c", "key"]``."""
    import ast

    out: list[str | int] = []
    pos = 0
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if m is None:
            raise KeyError(f"cannot read the field path {path!r} at {path[pos:]!r}")
        name, index, key = m.groups()
        out.append(
            name if name is not None else int(index) if index is not None else ast.literal_eval(key)
        )
        pos = m.end()
    return out


class AvroForm:
    """An ipywidgets form for records of one Avro record schema.

    ``form.widget`` is the form; ``form.value`` the record in the form ``Workspace.emit`` takes
    (setting it loads a record, raising :class:`ValidationError` with the path when a part of it
    cannot be shown, such as a list where a record belongs or a dict that fits several union
    branches). ``form.node(path)`` reaches one input (opening sections on the way), for tests
    and power users. Listeners added with :meth:`on_change` run after every edit.

    Raises :class:`ValidationError` for a schema that is not a record, or whose record holds
    itself with no null, array or map on the way (no record of it can be written).
    """

    def __init__(self, schema: AvroSchema | str | dict) -> None:
        self.avro = AvroSchema.of(schema)
        if self.avro.kind(self.avro.root) != "record":
            raise ValidationError(
                [
                    FieldProblem(
                        "", f"a form needs a record schema, got {self.avro.label(self.avro.root)}"
                    )
                ],
                what="schema",
            )
        self._ctx = _Context(self.avro)
        self.root = make_node(self._ctx, self.avro.root, None, lazy=False)
        with self._ctx.quiet():
            self.root.set(blank_value(self.avro, self.avro.root), "")
        self.widget = W.VBox([self.root.widget, self.root.error])

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every edit of the form."""
        self._ctx.listeners.append(listener)

    @property
    def value(self) -> Any:
        """The record the form holds, union branches as ``("full.Name", {...})`` tuples."""
        return self.root.get()

    @value.setter
    def value(self, record: Any) -> None:
        _check_value_shape(self.avro, record, self.avro.root, "")
        with self._ctx.quiet():
            self.root.set(record, "")
        self._ctx.changed()

    def form_problems(self) -> list[FieldProblem]:
        """Problems only the form sees: text that is not a number or bytes, malformed URNs."""
        return self.root.form_problems("")

    def show_problems(self, problems: list[FieldProblem]) -> None:
        """Show each problem beside its field (sections not opened count them in their title)."""
        marks: dict[str, list[str]] = {}
        for p in problems:
            marks.setdefault(p.path, []).append(p.message)
        self._ctx.marks = marks
        self.root.mark("")

    def node(self, path: str) -> Any:
        """The input at a field path such as ``proposedSnapshot.aspects[0].owners``.

        Sections on the way are opened and unions pass through to the branch picked.
        Raises KeyError for a path the form does not hold.
        """
        node: _Node = self.root
        done = ""
        for segment in split_path(path):
            try:
                node = node.child(segment)
            except (KeyError, IndexError):
                where = f"under {done}" if done else "at the top"
                # NOTE: no quotes in the message: str(KeyError) shows its repr.
                raise KeyError(
                    f"The form has no field {path}: nothing named {segment} {where}"
                ) from None
            if isinstance(segment, int):
                done += f"[{segment}]"
            else:
                done += f".{segment}" if done else segment
        return node
