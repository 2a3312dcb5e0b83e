"""The boundaries every backend implements: a schema registry, an event hub, a lake, a consumer.

Each backend folder (``local/``, ``azure/``) has ``registry.py``, ``hub.py``, ``lake.py`` and a
``factory.py`` that builds the three from keyword options. Everything above the backends (the
workspace, the history, the widgets) talks only to these protocols and the plain data classes
here, so a user's code carries over unchanged from the local workspace to Azure.

What a backend *can* do is part of the contract too, so that callers ask instead of probing:

==========================================  ===============  ===============================
capability                                  local            azure
==========================================  ===============  ===============================
``SchemaRegistry.lists_all_schemas``        True             False (``listing_note`` says why)
``SchemaRegistry.can_create_groups``        True             False (portal, ARM or ``az``)
``EventHub.clock``                          settable clock   None (the service stamps times)
``BackendFactory.OPTIONS``                  its ``create``   its ``create`` keyword options
==========================================  ===============  ===============================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

# NOTE: the file format owns the description of its files; the protocols only use it.
from metaverse_kit.capture import CaptureFile

__all__ = [
    "COMPATIBILITY_MODES",
    "MAX_EVENT_BYTES",
    "BackendFactory",
    "BackendParts",
    "CaptureFile",
    "EventChunk",
    "EventConsumer",
    "EventHub",
    "Lake",
    "OutgoingEvent",
    "Receipt",
    "Schema",
    "SchemaGroup",
    "SchemaProperties",
    "SchemaRegistry",
    "StartPosition",
]

#: The compatibility modes of an Azure Schema Registry group, spelled as the service does.
COMPATIBILITY_MODES = ("None", "Backward", "Forward")


@dataclass(frozen=True)
class SchemaProperties:
    """Where a schema version lives; the fields of ``azure.schemaregistry.SchemaProperties``."""

    id: str
    format: str
    group_name: str
    name: str
    version: int


@dataclass(frozen=True)
class Schema:
    """A schema's definition (JSON text) and properties, like ``azure.schemaregistry.Schema``."""

    definition: str
    properties: SchemaProperties


@dataclass(frozen=True)
class SchemaGroup:
    """A schema group: its name, the compatibility mode new versions are held to, its format."""

    name: str
    compatibility: str = "Backward"
    format: str = "Avro"


@runtime_checkable
class SchemaRegistry(Protocol):
    """A schema registry with Azure Schema Registry's model: groups, named schemas, versions."""

    #: True when :meth:`list_schemas` lists every schema of a group (False on Azure, whose
    #: service cannot list them: then it lists the schemas this toolkit knows of).
    lists_all_schemas: bool
    #: Why the listing may be incomplete, for the UI to show ("" when it is complete).
    listing_note: str
    #: True when :meth:`create_group` can create groups (False on Azure: portal, ARM or ``az``).
    can_create_groups: bool

    def create_group(
        self, group_name: str, *, compatibility: str = "Backward", exist_ok: bool = True
    ) -> SchemaGroup:
        """Create a schema group. Raises ``ConfigurationError`` for an invalid name or mode, or
        where the backend cannot create groups (``can_create_groups`` is False)."""
        ...

    def register_schema(
        self, group_name: str, definition: str, *, name: str | None = None, format: str = "Avro"
    ) -> SchemaProperties:
        """Register ``definition`` as the next version of its schema (named by its Avro full name).

        Registering a definition that is already there returns its existing properties.
        Raises ``IncompatibleSchemaError`` when it breaks the group's compatibility mode.
        """
        ...

    def get_schema(
        self,
        schema_id: str | None = None,
        *,
        group_name: str | None = None,
        name: str | None = None,
        version: int | None = None,
    ) -> Schema:
        """A schema by id, or by group, name and version. Raises ``SchemaNotFoundError``."""
        ...

    def get_schema_properties(
        self, group_name: str, definition: str, *, name: str | None = None, format: str = "Avro"
    ) -> SchemaProperties:
        """The properties of an already registered definition. Raises ``SchemaNotFoundError``."""
        ...

    def list_groups(self) -> list[str]:
        """The names of the schema groups."""
        ...

    def get_group(self, group_name: str) -> SchemaGroup:
        """A group's properties (its compatibility mode). Raises ``SchemaNotFoundError``."""
        ...

    def list_schemas(self, group_name: str) -> list[str]:
        """The schema names in a group that this registry can list."""
        ...

    def list_versions(self, group_name: str, name: str) -> list[int]:
        """The version numbers of a schema, oldest first."""
        ...

    def close(self) -> None:
        """Release connections and file handles."""
        ...


@dataclass(frozen=True)
class OutgoingEvent:
    """One encoded event on its way to the hub."""

    body: bytes
    content_type: str
    partition_key: str
    message_id: str
    properties: Mapping[str, Any] = field(default_factory=dict)


#: The largest event Event Hubs takes on the Standard and Premium tiers (Capture needs one of
#: them; Basic takes 256 KB): 1 MiB, its properties counted (see :func:`event_size`).
MAX_EVENT_BYTES = 1_048_576


def event_size(event: OutgoingEvent) -> int:
    """About what Event Hubs counts of ``event`` against :data:`MAX_EVENT_BYTES`: the body,
    the partition key and the application properties' names and values as text (the AMQP
    framing adds a few dozen bytes more)."""
    return len(event.body) + len(event.partition_key.encode()) + _properties_size(event.properties)


def _properties_size(properties: Mapping[str, Any]) -> int:
    return sum(len(str(k).encode()) + len(str(v).encode()) for k, v in properties.items())


def oversized(
    events: Sequence[OutgoingEvent], *, limit: int = MAX_EVENT_BYTES
) -> list[tuple[int, int]]:
    """``(index, size)`` of the events larger than ``limit`` (see :func:`event_size`)."""
    # PERF: an emit's events share one properties mapping: its size is counted once.
    shared: dict[int, int] = {}
    found = []
    for i, event in enumerate(events):
        props = shared.get(id(event.properties))
        if props is None:
            props = shared[id(event.properties)] = _properties_size(event.properties)
        size = len(event.body) + len(event.partition_key.encode()) + props
        if size > limit:
            found.append((i, size))
    return found


@dataclass(frozen=True)
class Receipt:
    """Where an emitted event landed.

    ``sequence_number``, ``offset`` and ``enqueued_time`` are None when the service does not
    tell them at send time (Azure Event Hubs does not); ``location`` is the Capture file the event
    is (local) or will be (Azure, approximately) archived in.
    """

    partition: str | None
    sequence_number: int | None
    offset: str | None
    enqueued_time: datetime | None
    schema_id: str
    content_type: str
    partition_key: str
    message_id: str
    location: str | None = None

    def __str__(self) -> str:
        return (
            f"MCE Published: partition {self.partition}, sequence number "
            f"{self.sequence_number}, offset {self.offset}, schema id {self.schema_id}"
        )


@runtime_checkable
class EventHub(Protocol):
    """An event hub: takes encoded events and says where each landed."""

    namespace: str
    name: str

    @property
    def clock(self) -> Callable[[], datetime] | None:
        """What stamps enqueued times; None where the service stamps them (Azure Event Hubs).

        Where it is not None it can be replaced: tests and the demo simulate a history so.
        """
        ...

    def partition_ids(self) -> list[str]:
        """The hub's partition ids."""
        ...

    def send(self, events: Sequence[OutgoingEvent], *, schema_ids: Sequence[str]) -> list[Receipt]:
        """Send events (in order per partition key); one receipt per event.

        Raises ``EmitError`` carrying the receipts of what was sent and the per-event failures.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class Lake(Protocol):
    """Where Capture archives are: lists them (pruned by partition and time) and reads them."""

    root: str

    def list_files(
        self,
        *,
        partitions: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[CaptureFile]:
        """Capture files that may hold events of these partitions in [start, end], in order."""
        ...

    def read_bytes(self, file: CaptureFile) -> bytes:
        """The whole content of one file."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


#: Where a consumer starts in one partition: ``"earliest"``, ``"latest"``, a time (the events
#: enqueued at or after it, an aware UTC datetime) or a sequence number (that event and after).
StartPosition = int | str | datetime


@dataclass(frozen=True)
class EventChunk:
    """Events a consumer received from one partition, as a Capture archive (Avro container).

    Both backends hand over the bytes Capture writes, so one decoder reads the lake, the tail
    and anything copied from Azure. ``path`` is the Capture file the events were read from, ""
    when they were received from the hub before Capture wrote them (``file`` then says which
    namespace, event hub and partition). Rows enqueued before ``min_time`` or numbered below
    ``min_sequence`` are before the consumer's start position: the reader drops them.
    ``offset`` says where ``data``'s blocks are in that file: a byte position in ``data`` past
    its header is ``offset`` bytes further on in the file (the blocks handed over before them;
    0 when ``data`` holds the file from its start, or no file's bytes).
    """

    data: bytes
    partition: str
    path: str = ""
    file: CaptureFile | None = None
    min_sequence: int | None = None
    min_time: datetime | None = None
    offset: int = 0


@runtime_checkable
class EventConsumer(Protocol):
    """Follows an event hub: hands over the events of its partitions as they arrive.

    Opened by a backend's ``open_consumer(positions={partition id: StartPosition},
    consumer_group=..., checkpoint=...)`` for the partitions in ``positions`` (a stored
    checkpoint wins over the position); a context manager. :meth:`close` may be called from
    another thread and wakes a :meth:`receive` that is waiting.
    """

    def receive(self, *, timeout: float) -> list[EventChunk]:
        """The events that arrived since the last call, waiting up to ``timeout`` seconds.

        Returns [] when none came in time or the consumer was closed. Raises
        :class:`~metaverse_kit.errors.ServiceError` when the hub refused or lost the stream.
        """
        ...

    def checkpoint(self) -> None:
        """Record every event received so far as handled (when opened with a checkpoint name).

        A consumer opened again with the same checkpoint name and consumer group resumes after
        them. Without a checkpoint name it does nothing.
        """
        ...

    def close(self) -> None:
        """Stop receiving and release connections and threads; safe to call twice."""
        ...


@dataclass
class BackendParts:
    """What a backend's ``factory.create()`` hands the workspace.

    Its registry, hub and lake, the schema group events are registered in, a secret-free
    description (backend, namespace, event hub, lake) for reprs and widgets, and how to open a
    consumer of the hub.
    """

    name: str
    registry: SchemaRegistry
    hub: EventHub
    lake: Lake
    schema_group: str
    description: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    #: ``open_consumer(*, positions, consumer_group, checkpoint) -> EventConsumer`` (see
    #: :class:`EventConsumer`); None when the backend cannot follow its hub.
    open_consumer: Callable[..., EventConsumer] | None = None


@runtime_checkable
class BackendFactory(Protocol):
    """A backend's ``factory`` module: what ``connect()`` loads by name.

    ``OPTIONS`` names every keyword option ``create`` takes, so ``connect()`` refuses unknown
    options up front with the list of known ones.
    """

    OPTIONS: tuple[str, ...]

    def create(self, **options: Any) -> BackendParts:
        """Build the backend's parts from keyword options."""
        ...
