"""``connect()`` and the :class:`Workspace` it returns: one registry, hub and lake, used together.

Data flows one way: widgets and notebooks -> workspace -> backend parts. The workspace knows
the event model (validation, encoding, the partition key of an MCE) and the history (replay);
the backends know only bytes, schemas and files.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Unpack

import pyarrow as pa

from metaverse_kit._files import can_write
from metaverse_kit.backends import check_options, load_backend
from metaverse_kit.backends.protocols import (
    MAX_EVENT_BYTES,
    BackendParts,
    CaptureFile,
    EventHub,
    Lake,
    OutgoingEvent,
    Receipt,
    Schema,
    SchemaProperties,
    SchemaRegistry,
    oversized,
)
from metaverse_kit.capture import EMITTED_TIME_PROPERTY
from metaverse_kit.config import default_backend
from metaverse_kit.errors import (
    ConfigurationError,
    MetaverseError,
    MetaverseWarning,
    SchemaNotFoundError,
    warn,
    warnings_to,
)
from metaverse_kit.events.avro import AvroSchema
from metaverse_kit.events.codec import content_type_for, encode_bodies

if TYPE_CHECKING:
    from metaverse_kit.history.replay import ReplayOptions, ReplayStream
    from metaverse_kit.history.tail import Tail
    from metaverse_kit.outbox import Outbox

__all__ = ["Workspace", "connect", "partition_key_of"]


def connect(
    backend: str | None = None, /, *, path: str | Path | None = None, **options: Any
) -> Workspace:
    """Open a workspace on a backend: ``"local"`` (the default) or ``"azure"``.

    ``connect()`` opens the local workspace at ``$METAVERSE_HOME`` or ``./.metaverse``,
    creating it when missing; ``connect(path="my-workspace")`` opens (or creates) that one.
    Other keyword options go to the backend's ``factory.create`` (see its docstring); an
    unknown option raises :class:`ConfigurationError` naming the options it takes.
    """
    name = backend or default_backend(workspace=path)
    factory = load_backend(name)
    if path is not None:
        options["path"] = path
    check_options(name, factory, options)
    ws = Workspace(factory.create(**options))
    if ws.path is not None:
        from metaverse_kit.history.cache import remove_leftovers

        # NOTE: the backend's factory removes the hub's leftovers of dead processes; the
        # replay's (cache entries, the native reader's temporary copies) are history's to know.
        remove_leftovers(ws.path / "cache" / "replay")
    return ws


def _event_list(events: Any) -> list[Any]:
    """The events of a batch, or TypeError naming what was given instead of events."""
    # NOTE: a str or bytes is iterable, and a long one used to be taken as a million "events";
    # a DataFrame iterates over its column names.
    table = type(events).__name__ == "DataFrame"
    if (
        table
        or isinstance(events, (str, bytes, bytearray, memoryview, int, float, complex))
        or not isinstance(events, Iterable)
    ):
        hint = "; pass df.to_dict('records') or use BatchEmitter" if table else ""
        raise TypeError(
            "emit() takes an event (a dict) or a list of events, not "
            f"{type(events).__name__} {_preview(events)}{hint}"
        )
    return list(events)


def _preview(value: Any) -> str:
    import reprlib

    # NOTE: reprlib cuts long strings before building their repr (a 1 MB str took 3 ms).
    return " ".join(reprlib.repr(value).split())


def _message_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs as 32 hex digits, the form of ``uuid4().hex``."""
    # PERF: one urandom call for the batch; uuid.uuid4() per event took 5 µs each.
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])
    text = raw.hex()
    return [text[i : i + 32] for i in range(0, 32 * count, 32)]


_INT64 = range(-(2**63), 2**63)


def _check_properties(properties: Mapping[str, Any] | None) -> None:
    """Refuse application properties the hub, Capture or the outbox cannot carry, before anything
    is written: every problem, with the property's name and what to do."""
    from metaverse_kit.errors import FieldProblem, ValidationError
    from metaverse_kit.events.semantics import string_problem

    if properties is None:
        return
    if not isinstance(properties, Mapping):
        raise TypeError(f"properties= takes a mapping of names to values, not {type(properties)}")
    problems = []
    for key, value in properties.items():
        where = f"properties[{key!r}]"
        why = None
        if not isinstance(key, str) or not key:
            why = "a property name is non-empty text"
        elif value is None:
            # Capture's property values are nullable and AMQP carries null: a None is kept
            # (it is how a caller emits without the emit-time stamp, as other producers do).
            pass
        elif isinstance(value, bool):
            # NOTE: checked before int: bool is an int to Python, not to Avro's long.
            why = "give a boolean as text ('true' or 'false')"
        elif isinstance(value, int) and value not in _INT64:
            why = "an integer must fit in 64 bits; give it as text"
        elif not isinstance(value, (str, int, float)):
            why = (
                f"a property value is text or a number (as Capture stores it), not "
                f"{type(value).__name__}; encode bytes as text (base64, say)"
            )
        if why is None and isinstance(key, str) and key:
            why = string_problem(key) or (string_problem(value) if isinstance(value, str) else None)
        if why is None and key == EMITTED_TIME_PROPERTY and value is not None:
            why = _emitted_time_problem(value)
        if why:
            problems.append(FieldProblem(where, why))
    if problems:
        raise ValidationError(problems, what="properties= argument")


#: Epoch milliseconds of the last instant of year 9999: later emitted times fit no timestamp.
_LAST_MS = 253_402_300_799_999


def _emitted_time_problem(value: Any) -> str | None:
    """What is wrong with a caller's own emitted time, or None.

    NOTE: history orders one aspect's writes by it and reads it as epoch milliseconds: text
    such as "yesterday", a negative number or one past year 9999 became a missing time
    (NaT) in the audit trail without a word.
    """
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    if not text.isdigit() or int(text) > _LAST_MS:
        return (
            "the time an event was emitted is epoch milliseconds, a whole number from 0 to "
            f"{_LAST_MS} (as text or a number), got {value!r}"
        )
    return None


def _check_partition_key(partition_key: Any) -> None:
    """Refuse a ``partition_key=`` the hub cannot carry, before anything is written.

    NOTE: checked here, not by the hub: the outbox writes the events first, and a key the hub
    then refused (a number, text that is not UTF-8) stayed there for good, failing each retry.
    """
    from metaverse_kit.errors import FieldProblem, ValidationError
    from metaverse_kit.events.semantics import string_problem

    if partition_key is None:
        return
    why = (
        f"a partition key is text, not {type(partition_key).__name__}"
        if not isinstance(partition_key, str)
        else "a partition key is non-empty text (None: each event's urn)"
        if not partition_key
        else string_problem(partition_key)
    )
    if why:
        raise ValidationError([FieldProblem("partition_key", why)], what="partition_key= argument")


def _check_sizes(events: Sequence[OutgoingEvent], *, single: bool) -> None:
    """Refuse events larger than Event Hubs takes, before anything is written.

    NOTE: the hub refuses them too (the local hub as Azure's), but only after the outbox
    wrote them, where they stayed for good: every retry failed the same way.
    """
    from metaverse_kit.errors import FieldProblem, ValidationError

    problems = [
        FieldProblem(
            "" if single else f"events[{i}]",
            f"the event is {size} bytes encoded with its properties, more than Event Hubs takes "
            f"({MAX_EVENT_BYTES} bytes on Standard and Premium): split its aspects over several "
            "events",
        )
        for i, size in oversized(events)
    ]
    if problems:
        raise ValidationError(problems, what="event" if single else "batch of events")


def _with_emitted_time(properties: Mapping[str, Any] | None) -> dict[str, Any]:
    """The application properties of an emit, stamped with the time the user emitted it.

    Set here, before the outbox, so a retry keeps the original time (history orders writes of
    one aspect by it). A caller's own ``metaverse-emitted-time`` (epoch ms, a number or digits)
    is kept: re-emitting an old history keeps its times.
    """
    # NOTE: as text: the Event Hubs SDK sends a Python int as a 32-bit AMQP int, which epoch
    # milliseconds overflow; history reads digits whatever their Avro type.
    now = str(round(datetime.now(UTC).timestamp() * 1000))
    return {EMITTED_TIME_PROPERTY: now, **dict(properties or {})}


def _items(events: Any) -> tuple[list[Any], bool]:
    """The events of an emit as a list, and whether one event (a mapping) was given."""
    single = isinstance(events, Mapping)
    return ([events] if single else _event_list(events)), single


def _outgoing(
    items: Sequence[Any],
    definition: str,
    content_type: str,
    *,
    single: bool,
    partition_key: str | None,
    properties: Mapping[str, Any] | None,
) -> list[OutgoingEvent]:
    """The checked, encoded events of an emit, stamped with its time; raises
    :class:`ValidationError` naming every event that does not fit the schema or is too large."""
    bodies = encode_bodies(
        items,
        definition,
        what="event" if single else "batch of events",
        prefix="" if single else "events",
    )
    # PERF: one read-only mapping for the whole batch, not a copy per event; positional
    # arguments build a (frozen) event in half the time keywords take.
    stamped = MappingProxyType(_with_emitted_time(properties))
    outgoing = [
        OutgoingEvent(
            body, content_type, partition_key or partition_key_of(record) or "", mid, stamped
        )
        for body, record, mid in zip(bodies, items, _message_ids(len(items)), strict=True)
    ]
    _check_sizes(outgoing, single=single)
    return outgoing


def partition_key_of(record: Any) -> str | None:
    """The partition key of an event: the urn of an MCE's snapshot, an MCP's entityUrn, a urn."""
    if not isinstance(record, Mapping):
        return None
    snapshot = record.get("proposedSnapshot")
    if isinstance(snapshot, tuple) and len(snapshot) == 2:
        snapshot = snapshot[1]
    if isinstance(snapshot, Mapping) and isinstance(snapshot.get("urn"), str):
        return str(snapshot["urn"])
    for key in ("entityUrn", "urn"):
        if isinstance(record.get(key), str):
            return str(record[key])
    return None


class Workspace:
    """A registry, an event hub and a lake, and the verbs users need across them.

    Use :func:`connect` to get one. A workspace is a context manager; closing it closes the
    backend's connections.
    """

    def __init__(self, parts: BackendParts) -> None:
        self._parts = parts
        self._schema_ids: dict[tuple[str, str], SchemaProperties] = {}

    def __repr__(self) -> str:
        d = self._parts.description
        shown = ", ".join(f"{k}={v!r}" for k, v in d.items() if k != "backend")
        return f"<Workspace {self.backend}: {shown}>"

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the registry, hub and lake."""
        for part in (self.hub, self.registry, self.lake):
            part.close()

    # -- parts ----------------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """``"local"``, ``"azure"``, or a custom backend's name."""
        return self._parts.name

    @property
    def registry(self) -> SchemaRegistry:
        """The schema registry."""
        return self._parts.registry

    @property
    def hub(self) -> EventHub:
        """The event hub events are emitted to."""
        return self._parts.hub

    @property
    def lake(self) -> Lake:
        """The Capture lake history is replayed from."""
        return self._parts.lake

    @property
    def schema_group(self) -> str:
        """The schema group events are registered in."""
        return self._parts.schema_group

    @property
    def path(self) -> Path | None:
        """The local workspace folder (None on other backends)."""
        return self._parts.path

    @functools.cached_property
    def outbox(self) -> Outbox:
        """Events not (yet) taken by the hub: ``list()``, ``retry()``, ``discard(ids)``.

        Kept in ``<workspace>/outbox`` (on Azure, the local state folder of the event hub).
        """
        from metaverse_kit.config import default_workspace_path
        from metaverse_kit.outbox import Outbox

        return Outbox(
            (self.path or default_workspace_path()) / "outbox",
            self.hub,
            history=lambda: self.replay(progress=False),
            registry=self.registry,
        )

    @property
    def description(self) -> dict[str, Any]:
        """Which backend, namespace, event hub and lake this workspace talks to; no secrets."""
        return dict(self._parts.description)

    # -- schemas --------------------------------------------------------------------------------

    def schema_definition(self, schema: Any = None) -> str:
        """The definition (JSON text) of ``schema``, in any form ``emit`` and the widgets take.

        ``schema`` is None (the built-in MCE schema), a registry ``Schema`` or
        ``SchemaProperties``, an :class:`AvroSchema`, a definition (JSON text or parsed), a
        schema id, or the name of a schema in this workspace's group (its latest version).
        Raises :class:`SchemaNotFoundError` when no schema has that id or name, and
        :class:`ConfigurationError` for anything else.
        """
        if schema is None:
            from metaverse_kit.events.builtin import mce_definition

            return mce_definition()
        if isinstance(schema, Schema):
            return schema.definition
        if isinstance(schema, SchemaProperties):
            return self.registry.get_schema(schema.id).definition
        if isinstance(schema, AvroSchema):
            return schema.canonical_text
        if isinstance(schema, (dict, list)):
            return AvroSchema(schema).canonical_text
        if isinstance(schema, str):
            text = schema.strip()
            if text.startswith(("{", "[", '"')):
                return text
            try:
                return self.registry.get_schema(text).definition
            except SchemaNotFoundError:
                pass
            group = self.schema_group
            versions = self.registry.list_versions(group, text)
            if not versions:
                known = ", ".join(self.registry.list_schemas(group)) or "none"
                raise SchemaNotFoundError(
                    f"No schema has the id or the name {text!r} in the group {group!r}; "
                    f"its schemas: {known}"
                ) from None
            latest = self.registry.get_schema(group_name=group, name=text, version=versions[-1])
            return latest.definition
        raise ConfigurationError(
            "schema= takes None (the built-in MCE schema), a registry Schema or "
            "SchemaProperties, a definition (JSON text or dict), a schema id or a schema name; "
            f"got {type(schema).__name__}"
        )

    def schema_properties(self, schema: Any = None) -> SchemaProperties:
        """The registry properties of ``schema`` in this workspace's group, registering it if new.

        ``schema`` is a definition, a registry ``Schema``, a schema id, or None for the built-in
        MCE schema.
        """
        definition = self.schema_definition(schema)
        key = (self.schema_group, definition)
        props = self._schema_ids.get(key)
        if props is None:
            try:
                props = self.registry.get_schema_properties(self.schema_group, definition)
            except SchemaNotFoundError:
                props = self.registry.register_schema(self.schema_group, definition)
            self._schema_ids[key] = props
        return props

    # -- emit -----------------------------------------------------------------------------------

    def emit(
        self,
        events: Mapping[str, Any] | Iterable[Mapping[str, Any]],
        *,
        schema: Any = None,
        partition_key: str | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> list[Receipt]:
        """Validate, encode and send one event or a list; one :class:`Receipt` per event.

        Every event is checked before anything is sent: one invalid event raises
        :class:`ValidationError` listing every problem of every event (paths start with
        ``events[i]`` for a list) and nothing is sent. ``schema`` defaults to the built-in MCE
        schema; ``partition_key`` defaults to each MCE's urn, so one entity's events stay in
        order. Every event carries the time it was emitted (the application property
        ``metaverse-emitted-time``, epoch ms as text), which history orders writes of one aspect by.
        Events are written to the outbox before they are sent and removed once sent;
        sending failures raise :class:`EmitError` with per-event details, and the failed
        events stay in :attr:`outbox`. Anything that is neither an event (a mapping) nor a
        sequence of events (a ``str``, ``bytes``, a number) raises :class:`TypeError`;
        ``properties`` values are text or numbers (others raise :class:`ValidationError` naming
        the property).
        """
        items, single = _items(events)
        if not items:
            return []
        _check_properties(properties)
        _check_partition_key(partition_key)
        props = self.schema_properties(schema)
        outgoing = _outgoing(
            items,
            self.registry.get_schema(props.id).definition,
            content_type_for(props.id),
            single=single,
            partition_key=partition_key,
            properties=properties,
        )
        # NOTE: through the outbox: written to disk before the send, removed once sent.
        return self.outbox.send(outgoing, schema_ids=[props.id] * len(outgoing))

    def check(
        self,
        events: Mapping[str, Any] | Iterable[Mapping[str, Any]],
        *,
        schema: Any = None,
        partition_key: str | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> None:
        """Raise what :meth:`emit` would raise before sending the same arguments, and nothing
        else: the events, their properties, partition key and size are checked; nothing is
        written, no schema registered (a dry run, a preview, a read-only workspace).

        A ``schema`` the group does not hold yet is checked as given (``emit`` would register
        it, which its compatibility rules may refuse).
        """
        items, single = _items(events)
        if not items:
            return
        _check_properties(properties)
        _check_partition_key(partition_key)
        _outgoing(
            items,
            self.schema_definition(schema),
            "",
            single=single,
            partition_key=partition_key,
            properties=properties,
        )

    # -- replay ---------------------------------------------------------------------------------

    def _replay_cache(self, cache: Any) -> Any:
        """``cache=True`` means the workspace's own cache folder when it has a folder.

        A workspace this user cannot write caches in the per-user cache folder instead.
        """
        if cache is True and self.path is not None:
            # NOTE: probed at the workspace's root, which exists: probing the cache folder would
            # create it before the replay has checked its arguments.
            return self.path / "cache" / "replay" if can_write(self.path) else True
        return cache

    def replay_batches(
        self,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        partitions: Sequence[str | int] | None = None,
        **options: Unpack[ReplayOptions],
    ) -> ReplayStream:
        """Stream the lake's history as RecordBatches, one per Capture file.

        The options are :class:`~metaverse_kit.history.replay.ReplayOptions`; ``cache=True``
        keeps decoded files in ``<workspace>/cache/replay`` (the per-user cache folder on
        backends without a workspace folder), and ``schema=None`` reads with the newest MCE
        version registered in this workspace's group.
        """
        from metaverse_kit.history.replay import replay_lake

        options["cache"] = self._replay_cache(options.get("cache", True))
        # NOTE: the replay's warnings wait for the partition check: a partition the hub does
        # not have was a warning that it had no file, then an error saying the same.
        held: list[MetaverseWarning] = []
        with warnings_to(held.append):
            stream = replay_lake(
                self.lake,
                registry=self.registry,
                schema_group=self.schema_group,
                start=start,
                end=end,
                partitions=partitions,
                **options,
            )
        self._check_partitions(partitions, stream.files)
        for warning in held:
            warn(warning)
        return stream

    def _check_partitions(
        self, partitions: Sequence[str | int] | None, files: Sequence[CaptureFile]
    ) -> None:
        """Refuse partition ids this workspace's hub does not have, as :meth:`tail` does.

        NOTE: asked of the hub only when a partition asked for has no file listed: a lake
        cannot tell a partition that does not exist from one that captured nothing in the
        range, and on Azure asking the hub is a call that needs a role the lake does not.
        A hub that cannot answer (offline, no role) leaves the replay as it is.
        """
        from metaverse_kit.names import no_such_partitions, partition_ids

        listed = {f.partition for f in files}
        missing = [p for p in partition_ids(partitions) or () if p not in listed]
        if not missing:
            return
        try:
            known = self.hub.partition_ids()
        except MetaverseError:
            return
        unknown = [p for p in missing if p not in known]
        if unknown:
            raise no_such_partitions(unknown, known)

    def replay(
        self,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        partitions: Sequence[str | int] | None = None,
        **options: Unpack[ReplayOptions],
    ) -> pa.Table:
        """Replay the lake's history into an Arrow table (options as :meth:`replay_batches`).

        Duplicates (same message id) are dropped unless ``dedup=False``.
        """
        return self.replay_batches(start, end, partitions, **options).to_table()

    # -- live -----------------------------------------------------------------------------------

    def tail(
        self,
        *,
        start: Any = "latest",
        partitions: Sequence[str | int] | None = None,
        consumer_group: str = "$Default",
        checkpoint: str | None = None,
        schema: Any = None,
        dedup: bool = True,
    ) -> Tail:
        """Follow the hub: RecordBatches of events as they arrive, with ``replay()``'s columns.

        ``start`` is ``"latest"`` (what arrives from now on), ``"earliest"``, a time, or a
        mapping of partition id to one of those or a sequence number; ``partitions`` limits
        the partitions followed. ``checkpoint`` names where progress is stored (on Azure a
        blob container of the lake's storage account; locally ``<workspace>/checkpoints``) so
        that a tail opened again with it resumes where the last one stopped. Use it in a
        ``with`` block, or call ``close()``. See :mod:`metaverse_kit.history.tail`. Raises
        :class:`ConfigurationError` for a wrong option.
        """
        from metaverse_kit.history.tail import open_tail

        return open_tail(
            self._parts.open_consumer,
            hub=self.hub,
            registry=self.registry,
            backend=self.backend,
            schema_group=self.schema_group,
            start=start,
            partitions=partitions,
            consumer_group=consumer_group,
            checkpoint=checkpoint,
            schema=schema,
            dedup=dedup,
        )
