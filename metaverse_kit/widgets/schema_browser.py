"""SchemaBrowser: groups, schemas and versions of the registry, their fields, and what changed.

Pick a group, filter its schemas by name (or by field name), pick a schema and a version, and read
its fields table, raw definition, id and the group's compatibility mode; compare two versions;
open the schema in an :class:`~metaverse_kit.widgets.EventComposer` with one click::

    browser = SchemaBrowser(ws)
    browser.select("metadata", "com.linkedin.pegasus2avro.mxe.MetadataChangeEvent")
    browser.selected            # SchemaProperties(id=..., version=...)
    browser.compare(1, 2)       # Comparison(added=[...], removed=[...], changed=[...], ...)

PERF: nothing is fetched before it is looked at. Opening the browser lists the groups and one
page of the first group's schema names; a definition is read when its schema is selected (or,
for the field-name filter, when asked for); the fields table shows one page of rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from metaverse_kit.backends.protocols import Schema, SchemaProperties
from metaverse_kit.errors import MetaverseError, SchemaNotFoundError
from metaverse_kit.events.avro import AvroSchema, FieldInfo
from metaverse_kit.events.compatibility import breaking_changes
from metaverse_kit.widgets._common import (
    Quiet,
    WidgetController,
    esc,
    html_list,
    html_table,
    message_html,
)

if TYPE_CHECKING:
    from metaverse_kit.widgets.event_composer import EventComposer
    from metaverse_kit.workspace import Workspace

__all__ = ["Comparison", "SchemaBrowser"]


@dataclass(frozen=True)
class Comparison:
    """What changed between two versions of a schema, and whether the group's mode allows it.

    ``added`` and ``removed`` are field paths; ``changed`` holds ``(path, before, after)`` with
    a short description of the type, default and nullability on each side. ``breaking`` lists
    what breaks the group's compatibility mode (empty when compatible).
    """

    name: str
    old_version: int
    new_version: int
    mode: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[tuple[str, str, str]] = field(default_factory=list)
    breaking: list[str] = field(default_factory=list)

    @property
    def compatible(self) -> bool:
        """True when the newer version may follow the older one under the group's mode."""
        return not self.breaking


def _describe(f: FieldInfo) -> str:
    default = f" = {json.dumps(f.default)}" if f.has_default else ""
    return f"{f.type}{default}"


class SchemaBrowser(WidgetController):
    """Browse the workspace's schema registry: groups, schemas (filtered, paged), versions.

    ``page_size`` is how many schema names the list shows at once and ``max_field_rows`` how
    many rows of a fields table are shown before asking to narrow the filter. Raises what the
    registry raises when it cannot be listed.
    """

    def __init__(self, ws: Workspace, *, page_size: int = 50, max_field_rows: int = 300) -> None:
        self.ws = ws
        self.registry = ws.registry
        self.page_size = page_size
        self.max_field_rows = max_field_rows
        self.schema: Schema | None = None
        self.composer: EventComposer | None = None
        self._composer_props: SchemaProperties | None = None
        self.comparison: Comparison | None = None
        self._quiet = Quiet()
        self._names: dict[str, list[str]] = {}
        self._schemas: dict[tuple[str, str, int], Schema] = {}
        self._field_paths: dict[str, list[str]] = {}
        self._matches: list[str] = []
        self.page = 0
        self._make_controls()
        self.refresh()

    def refresh(self) -> None:
        """List the registry's groups again (and the schemas of the group shown)."""
        groups = self.registry.list_groups()
        current = self.group.value
        with self._quiet():
            self.group.options = groups
            preferred = self.ws.schema_group if self.ws.schema_group in groups else None
            if current in groups:
                self.group.value = current
            else:
                self.group.value = preferred or (groups[0] if groups else None)
        self._group_changed()

    # -- programmatic API -------------------------------------------------------------------

    @property
    def selected(self) -> SchemaProperties | None:
        """The properties (id, group, name, version) of the schema version selected, if any."""
        return self.schema.properties if self.schema else None

    @property
    def matches(self) -> list[str]:
        """The schema names of the group that the filter lets through (all pages)."""
        return list(self._matches)

    def select(self, group_name: str, name: str, version: int | None = None) -> SchemaProperties:
        """Select a schema version (default: the latest) and show it; return its properties.

        Raises :class:`SchemaNotFoundError` when the group, schema or version does not exist.
        """
        if group_name not in self.group.options:
            self.refresh()
        if group_name not in self.group.options:
            raise SchemaNotFoundError(
                f"No schema group {group_name!r}; groups: {', '.join(self.group.options)}"
            )
        versions = self.registry.list_versions(group_name, name)
        if not versions:
            raise SchemaNotFoundError(f"No schema {name!r} in the group {group_name!r}")
        if version is not None and version not in versions:
            raise SchemaNotFoundError(
                f"{name!r} has no version {version} in {group_name!r}; versions: "
                f"{', '.join(map(str, versions))}"
            )
        with self._quiet():
            if self.group.value != group_name:
                self.group.value = group_name
                self._group_changed()
            # NOTE: a registry that cannot list every schema (Azure) learns names as they are used.
            names = self._names.setdefault(group_name, [])
            if name not in names:
                names.append(name)
                names.sort()
            if name not in self._matches:
                self.filter.value = ""
                self._apply_filter()
            self._show_page(self._matches.index(name) // self.page_size)
            self.schemas.value = name
            self._set_versions(versions)
            self.versions.value = version if version is not None else versions[-1]
        self._version_changed()
        assert self.selected is not None
        return self.selected

    def compare(self, old_version: int, new_version: int) -> Comparison:
        """Compare two versions of the selected schema under the group's compatibility mode."""
        if self.schema is None:
            raise SchemaNotFoundError("Select a schema first: browser.select(group, name)")
        props = self.schema.properties
        old = self._get(props.group_name, props.name, old_version)
        new = self._get(props.group_name, props.name, new_version)
        old_fields = {f.path: f for f in AvroSchema(old.definition).walk_fields()}
        new_fields = {f.path: f for f in AvroSchema(new.definition).walk_fields()}
        mode = self._compatibility(props.group_name)
        changed = [
            (p, _describe(old_fields[p]), _describe(new_fields[p]))
            for p in new_fields
            if p in old_fields and _describe(old_fields[p]) != _describe(new_fields[p])
        ]
        result = Comparison(
            name=props.name,
            old_version=old_version,
            new_version=new_version,
            mode=mode,
            added=[p for p in new_fields if p not in old_fields],
            removed=[p for p in old_fields if p not in new_fields],
            changed=changed,
            breaking=breaking_changes(new.definition, old.definition, mode),
        )
        self.comparison = result
        with self._quiet():
            self.compare_old.value, self.compare_new.value = old_version, new_version
        self.compare_box.value = _comparison_html(result)
        return result

    def open_in_composer(self) -> EventComposer:
        """Open the selected schema version in an EventComposer, shown under the browser."""
        from metaverse_kit.widgets.event_composer import EventComposer

        if self.schema is None:
            raise SchemaNotFoundError("Select a schema first: browser.select(group, name)")
        self.composer = EventComposer(self.ws, self.schema)
        self._composer_props = self.schema.properties
        self.composer_box.children = (self.composer.widget,)
        self.message.value = ""
        return self.composer

    # -- the registry, cached -----------------------------------------------------------------

    def _get(self, group: str, name: str, version: int) -> Schema:
        key = (group, name, version)
        if key not in self._schemas:
            self._schemas[key] = self.registry.get_schema(
                group_name=group, name=name, version=version
            )
        return self._schemas[key]

    def _compatibility(self, group: str) -> str:
        return self.registry.get_group(group).compatibility

    def _field_names(self, group: str, name: str) -> list[str]:
        key = f"{group}/{name}"
        if key not in self._field_paths:
            versions = self.registry.list_versions(group, name)
            schema = self._get(group, name, versions[-1])
            self._field_paths[key] = [
                f.path.lower() for f in AvroSchema(schema.definition).walk_fields()
            ]
        return self._field_paths[key]

    # -- the widget -----------------------------------------------------------------------------

    def _make_controls(self) -> None:
        self.group = W.Dropdown(description="Group", options=[])
        self.group_info = W.HTML("")
        self.filter = W.Text(
            description="Filter",
            placeholder="part of a schema or field name",
            continuous_update=False,
        )
        self.fields_too = W.Checkbox(
            description="match field names too (reads each schema's latest version)",
            indent=False,
        )
        self.fields_too.layout.width = "auto"
        self.schemas = W.Select(options=[], rows=10, description="Schemas")
        self.schemas.layout.width = "100%"
        self.prev_page = W.Button(icon="chevron-left", tooltip="Previous page")
        self.next_page = W.Button(icon="chevron-right", tooltip="Next page")
        for b in (self.prev_page, self.next_page):
            b.layout.width = "3em"
        self.page_label = W.Label("")
        self.versions = W.Dropdown(description="Version", options=[])
        self.info = W.HTML("")
        # NOTE: DataHub's MCE has hundreds of fields; scrolling keeps the composer below in view.
        self.fields_table = W.HTML("", layout=W.Layout(max_height="32em", overflow="auto"))
        self.definition = W.HTML("", layout=W.Layout(max_height="32em", overflow="auto"))
        self.compare_old = W.Dropdown(description="Older", options=[])
        self.compare_new = W.Dropdown(description="Newer", options=[])
        self.compare_button = W.Button(description="Compare", icon="exchange")
        self.compare_box = W.HTML("")
        self.open_button = W.Button(
            description="Open in composer",
            icon="edit",
            button_style="primary",
            tooltip="Fill and emit an event of this schema version",
            layout=W.Layout(width="auto"),
        )
        self.message = W.HTML("")
        self.composer_box = W.VBox()
        self.details = W.Tab(
            children=[
                self.fields_table,
                self.definition,
                W.VBox(
                    [
                        W.HBox([self.compare_old, self.compare_new, self.compare_button]),
                        self.compare_box,
                    ]
                ),
            ],
            titles=("Fields", "Definition", "Compare versions"),
        )
        self.group.observe(self._group_changed, names="value")
        self.filter.observe(self._filter_changed, names="value")
        self.fields_too.observe(self._filter_changed, names="value")
        self.schemas.observe(self._schema_changed, names="value")
        self.versions.observe(self._version_changed, names="value")
        self.details.observe(self._tab_changed, names="selected_index")
        self.prev_page.on_click(lambda *_: self._show_page(self.page - 1))
        self.next_page.on_click(lambda *_: self._show_page(self.page + 1))
        self.compare_button.on_click(self._compare_clicked)
        self.open_button.on_click(self._open_clicked)

    def _build(self) -> W.Widget:
        return W.VBox(
            [
                W.HBox([self.group, self.group_info]),
                W.HBox([self.filter, self.fields_too]),
                self.schemas,
                W.HBox([self.prev_page, self.page_label, self.next_page]),
                W.HBox([self.versions, self.open_button]),
                self.info,
                self.message,
                self.details,
                self.composer_box,
            ]
        )

    def _group_changed(self, *_: Any) -> None:
        if self._quiet and _:
            return
        group = self.group.value
        if group is None:
            self.group_info.value = "<i>No schema groups yet: emit an event to create one.</i>"
            return
        self._names[group] = sorted(self.registry.list_schemas(group))
        mode = self._compatibility(group)
        info = f"compatibility: <b>{esc(mode)}</b>, {len(self._names[group])} schemas"
        if not self.registry.lists_all_schemas:
            note = (
                self.registry.listing_note or "This registry cannot list every schema of a group."
            )
            info += f"<br><i>{esc(note)}</i>"
        self.group_info.value = info
        self._apply_filter()
        self._show_page(0)

    def _filter_changed(self, *_: Any) -> None:
        if self._quiet:
            return
        self._apply_filter()
        self._show_page(0)
        if self.schema is not None:
            self._show_fields()

    def _apply_filter(self) -> None:
        group = self.group.value
        names = self._names.get(group, []) if group else []
        text = self.filter.value.strip().lower()
        if not text:
            self._matches = list(names)
            return
        out = []
        for name in names:
            if text in name.lower() or (
                self.fields_too.value and any(text in p for p in self._field_names(group, name))
            ):
                out.append(name)
        self._matches = out

    def _show_page(self, page: int) -> None:
        pages = max(1, -(-len(self._matches) // self.page_size))
        self.page = min(max(page, 0), pages - 1)
        start = self.page * self.page_size
        shown = self._matches[start : start + self.page_size]
        with self._quiet():
            keep = self.schemas.value if self.schemas.value in shown else None
            self.schemas.options = shown
            self.schemas.value = keep
        self.page_label.value = (
            f"{start + 1}–{start + len(shown)} of {len(self._matches)}"
            if shown
            else "no schemas match"
        )
        self.prev_page.disabled = self.page == 0
        self.next_page.disabled = self.page >= pages - 1

    def _set_versions(self, versions: list[int]) -> None:
        with self._quiet():
            self.versions.options = versions
            self.compare_old.options = versions
            self.compare_new.options = versions
            if versions:
                self.compare_old.value = versions[-2] if len(versions) > 1 else versions[-1]
                self.compare_new.value = versions[-1]

    def _schema_changed(self, *_: Any) -> None:
        if self._quiet or self.schemas.value is None:
            return
        versions = self.registry.list_versions(self.group.value, self.schemas.value)
        self._set_versions(versions)
        with self._quiet():
            self.versions.value = versions[-1] if versions else None
        self._version_changed()

    def _version_changed(self, *_: Any) -> None:
        if self._quiet or self.schemas.value is None or self.versions.value is None:
            return
        try:
            self.schema = self._get(self.group.value, self.schemas.value, self.versions.value)
        except MetaverseError as exc:
            self.message.value = message_html(str(exc), ok=False)
            return
        props = self.schema.properties
        self.message.value = self._stale_composer_note(props)
        self.info.value = html_table(
            ["name", "version", "id", "group", "compatibility", "format"],
            [
                [
                    props.name,
                    props.version,
                    props.id,
                    props.group_name,
                    self._compatibility(props.group_name),
                    props.format,
                ]
            ],
        )
        self.compare_box.value = ""
        self._tab_changed()

    def _stale_composer_note(self, props: SchemaProperties) -> str:
        # NOTE: the composer keeps what the steward typed, so it stays; but it must not pass
        # for a form of the version now selected, which may have other fields.
        if self.composer is None or self._composer_props is None:
            return ""
        shown = self._composer_props
        if (shown.group_name, shown.name, shown.version) == (
            props.group_name,
            props.name,
            props.version,
        ):
            return ""
        return message_html(
            f"The composer below is still for version {shown.version} of {shown.name} "
            f"(group {shown.group_name}): press Open in composer for version {props.version} "
            f"of {props.name}.",
            ok=False,
        )

    def _tab_changed(self, *_: Any) -> None:
        # PERF: only the tab in view is rendered; DataHub's MCE has thousands of field rows.
        if self.schema is None:
            return
        index = self.details.selected_index
        if index == 0 or index is None:
            self._show_fields()
        elif index == 1:
            pretty = json.dumps(json.loads(self.schema.definition), indent=2)
            self.definition.value = f"<pre style='margin:0'>{esc(pretty)}</pre>"

    def fields(self) -> list[FieldInfo]:
        """The fields of the selected version (nested, dotted paths) the filter lets through."""
        if self.schema is None:
            return []
        text = self.filter.value.strip().lower()
        rows = list(AvroSchema(self.schema.definition).walk_fields())
        if text and text not in self.schema.properties.name.lower():
            rows = [f for f in rows if text in f.path.lower() or text in f.doc.lower()] or rows
        return rows

    def _show_fields(self) -> None:
        rows = self.fields()
        shown = rows[: self.max_field_rows]
        table = html_table(
            ["path", "type", "default", "nullable", "doc"],
            [
                [
                    f.path,
                    f.type,
                    json.dumps(f.default) if f.has_default else "—",
                    "yes" if f.nullable else "no",
                    f.doc,
                ]
                for f in shown
            ],
        )
        more = len(rows) - len(shown)
        note = (
            f"<i>{more} more fields: type part of a field name in the filter.</i>" if more else ""
        )
        self.fields_table.value = table + note

    def _compare_clicked(self, *_: Any) -> None:
        try:
            self.compare(self.compare_old.value, self.compare_new.value)
        except MetaverseError as exc:
            self.compare_box.value = message_html(str(exc), ok=False)

    def _open_clicked(self, *_: Any) -> None:
        try:
            self.open_in_composer()
        except MetaverseError as exc:
            self.message.value = message_html(str(exc), ok=False)


def _comparison_html(c: Comparison) -> str:
    parts = [f"<b>{esc(c.name)}</b>: version {c.old_version} → {c.new_version}"]
    if c.compatible:
        parts.append(message_html(f"compatible under the group's mode ({c.mode})", ok=True))
    else:
        parts.append(message_html(f"breaks the group's mode ({c.mode})", ok=False))
        parts.append(html_list(c.breaking))
    parts.append(f"<b>added</b> ({len(c.added)})" + html_list(c.added))
    parts.append(f"<b>removed</b> ({len(c.removed)})" + html_list(c.removed))
    parts.append(
        f"<b>changed</b> ({len(c.changed)})" + html_table(["path", "before", "after"], c.changed)
        if c.changed
        else "<b>changed</b> (0)"
    )
    return "<br>".join(parts)
