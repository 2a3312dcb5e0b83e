"""Azure Event Hubs through the official ``azure-eventhub`` producer client.

Events are grouped by partition key (an MCE's urn) and sent in ``EventDataBatch`` objects,
starting a new batch when one is full, so one entity's events stay in order on one partition.
Every event carries its content type (``avro/binary+<schema id>``) and a unique message id,
both in its AMQP properties and in its application properties (``content-type``,
``message-id``): the service is at-least-once, and replay recognises the duplicates that
retries can produce by their message id.

A batch that the service refuses fails its events and the later events of the same partition
key (sending them would break their order); other keys go on. A lost connection (after the
SDK's retries) fails the remaining batches at once rather than waiting for each to time out.
The failures are reported per event in an :class:`EmitError`; the workspace's outbox keeps the
failed events.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from metaverse_kit.backends.azure._errors import translate_eventhub_error
from metaverse_kit.backends.protocols import OutgoingEvent, Receipt
from metaverse_kit.errors import EmitError, MetaverseError, ServiceError, TransientServiceError
from metaverse_kit.redact import get_logger, redact

__all__ = ["AzureEventHub", "make_batches", "to_event_data"]

_log = get_logger(__name__)


def to_event_data(event: OutgoingEvent) -> Any:
    """The ``azure.eventhub.EventData`` of an outgoing event (content type and message id set)."""
    from azure.eventhub import EventData

    data = EventData(event.body)
    data.content_type = event.content_type
    data.message_id = event.message_id
    properties: dict[str | bytes, Any] = {k: v for k, v in event.properties.items()}
    properties["content-type"] = event.content_type
    properties["message-id"] = event.message_id
    data.properties = properties
    return data


def _fits(batch: Any, data: Any) -> bool:
    """Add ``data`` to ``batch``; False when the batch is full (``EventDataBatch.add`` raises)."""
    try:
        batch.add(data)
    except ValueError:
        return False
    return True


def make_batches(
    events: Sequence[OutgoingEvent], new_batch: Callable[[str | None], Any]
) -> tuple[list[tuple[Any, list[int]]], list[tuple[int, MetaverseError]]]:
    """Pack events into batches: one partition key per batch, a new batch when one is full.

    ``new_batch(partition_key)`` returns an empty ``EventDataBatch``. Returns the batches with
    the indexes of their events (in order), and the events too large for any batch.
    """
    keys: dict[str, list[int]] = {}
    for i, event in enumerate(events):
        keys.setdefault(event.partition_key, []).append(i)
    batches: list[tuple[Any, list[int]]] = []
    too_large: list[tuple[int, MetaverseError]] = []
    for key, indexes in keys.items():
        batch, members = new_batch(key or None), []
        for i in indexes:
            data = to_event_data(events[i])
            if _fits(batch, data):
                members.append(i)
                continue
            if members:
                batches.append((batch, members))
                batch, members = new_batch(key or None), []
                if _fits(batch, data):
                    members.append(i)
                    continue
            message_id = events[i].message_id
            too_large.append(
                (
                    i,
                    ServiceError(
                        f"Event {message_id} ({len(events[i].body)} bytes) is larger than the "
                        f"event hub's largest batch ({batch.max_size_in_bytes} bytes) and can "
                        "never be sent: make it smaller (fewer aspects per MCE), or drop it "
                        f"with ws.outbox.discard([{message_id!r}])"
                    ),
                )
            )
        if members:
            batches.append((batch, members))
    return batches, too_large


class AzureEventHub:
    """An Azure event hub, sent to with ``EventHubProducerClient``.

    ``credential`` is a ``TokenCredential`` (the identity needs Azure Event Hubs Data Sender).
    A connection string goes to :meth:`from_connection_string`. ``retry_total``,
    ``retry_backoff_factor`` and ``send_timeout`` (seconds, per batch) tune the SDK's retries.
    The client connects on first use and is closed by :meth:`close`.
    """

    #: None: the service stamps enqueued times; no clock of ours can.
    clock: Callable[[], datetime] | None = None

    def __init__(
        self,
        fully_qualified_namespace: str,
        eventhub: str,
        credential: Any,
        *,
        retry_total: int = 3,
        retry_backoff_factor: float = 0.8,
        send_timeout: float = 60.0,
    ) -> None:
        self.namespace = fully_qualified_namespace
        self.name = eventhub
        self.send_timeout = send_timeout
        self._options: dict[str, Any] = {
            "retry_total": retry_total,
            "retry_backoff_factor": retry_backoff_factor,
        }
        self._make: Callable[[], Any] = self._with_credential(credential)
        self._producer: Any = None

    def _with_credential(self, credential: Any) -> Callable[[], Any]:
        def make() -> Any:
            from azure.eventhub import EventHubProducerClient

            return EventHubProducerClient(self.namespace, self.name, credential, **self._options)

        return make

    @classmethod
    def from_connection_string(
        cls,
        conn_str: str,
        *,
        eventhub: str | None = None,
        retry_total: int = 3,
        retry_backoff_factor: float = 0.8,
        send_timeout: float = 60.0,
    ) -> AzureEventHub:
        """A hub from an Event Hubs connection string (``EntityPath`` or ``eventhub`` names it).

        Raises :class:`ConfigurationError` when the string is malformed or names no hub; the
        message never contains the key.
        """
        from metaverse_kit.backends.azure._connstr import parse_eventhub_connection_string

        namespace, entity = parse_eventhub_connection_string(conn_str)
        name = eventhub or entity
        if not name:
            from metaverse_kit.errors import ConfigurationError

            raise ConfigurationError(
                "The connection string has no EntityPath; name the event hub with "
                "eventhub=... (or $METAVERSE_EVENTHUB / $EVENTHUB)"
            )
        hub = cls(
            namespace,
            name,
            None,
            retry_total=retry_total,
            retry_backoff_factor=retry_backoff_factor,
            send_timeout=send_timeout,
        )

        def make() -> Any:
            from azure.eventhub import EventHubProducerClient

            return EventHubProducerClient.from_connection_string(
                conn_str, eventhub_name=name, **hub._options
            )

        hub._make = make
        return hub

    @property
    def _resource(self) -> str:
        return f"the event hub {self.name} in {self.namespace}"

    def __repr__(self) -> str:
        return f"AzureEventHub(namespace={self.namespace!r}, eventhub={self.name!r})"

    def __enter__(self) -> AzureEventHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the AMQP connection (a later send opens a new one)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close()
            except Exception as exc:  # closing must not hide the caller's own error
                _log.debug("closing the producer failed: %s", redact(exc))

    def _client(self) -> Any:
        if self._producer is None:
            try:
                self._producer = self._make()
            except ValueError as exc:
                from metaverse_kit.errors import ConfigurationError

                raise ConfigurationError(f"Cannot create the producer: {redact(exc)}") from None
        return self._producer

    def partition_ids(self) -> list[str]:
        """The hub's partition ids (a ``$management`` call; needs the Data Sender role)."""
        try:
            return list(self._client().get_partition_ids())
        except Exception as exc:
            raise translate_eventhub_error(
                exc, what=f"Reading the partitions of {self.name}", resource=self._resource
            ) from exc

    def send(self, events: Sequence[OutgoingEvent], *, schema_ids: Sequence[str]) -> list[Receipt]:
        """Send events in batches per partition key; one receipt per event, in order.

        Raises :class:`EmitError` with ``failures`` (index, error) for the events not sent and
        ``receipts`` for those that were; errors are :class:`TransientServiceError` when
        trying again may work.
        """
        if len(events) != len(schema_ids):
            raise ValueError("send() needs one schema id per event")
        if not events:
            return []
        producer = self._client()
        failures: list[tuple[int, BaseException]] = []
        try:
            batches, too_large = make_batches(
                events, lambda key: producer.create_batch(partition_key=key)
            )
        except Exception as exc:
            error = translate_eventhub_error(
                exc, what=f"Preparing a batch for {self.name}", resource=self._resource
            )
            raise EmitError(
                f"No event was sent to {self.name}: {error}",
                failures=[(i, error) for i in range(len(events))],
            ) from exc
        failures.extend(too_large)
        # NOTE: an event too large to send holds back only the later events of its key (to keep
        # their order); the earlier ones go, and each held-back event says which one blocks it.
        blocked: dict[str, int] = {}
        for i, _ in too_large:
            blocked.setdefault(events[i].partition_key, i)
        failed_keys: dict[str, BaseException] = {}
        sent: set[int] = set()
        lost: MetaverseError | None = None
        for batch, members in batches:
            key = events[members[0]].partition_key
            if (
                lost is None
                and key not in failed_keys
                and blocked.get(key, len(events)) < members[0]
            ):
                failed_keys[key] = ServiceError(
                    f"Not sent, to keep the order of the events of {key!r}: the earlier event "
                    f"{events[blocked[key]].message_id} of this key is too large to send; "
                    "discard it and retry"
                )
            if lost is not None or key in failed_keys:
                failures.extend((i, lost or failed_keys[key]) for i in members)
                continue
            try:
                producer.send_batch(batch, timeout=self.send_timeout)
            except Exception as exc:
                error = translate_eventhub_error(
                    exc, what=f"Sending to {self.name}", resource=self._resource
                )
                error.__cause__ = exc
                tried = error
                if isinstance(error, TransientServiceError):
                    # NOTE: the batch went out before the connection failed or the answer timed
                    # out; the hub may have it. Only the untried batches are surely not sent.
                    tried = TransientServiceError(
                        f"{error}. The hub may have taken these events before the answer was "
                        "lost: a retry can deliver them twice, with the same message id (replay "
                        "keeps one copy)"
                    )
                    tried.__cause__ = exc
                _log.warning("sending %d events to %s failed: %s", len(members), self.name, tried)
                failed_keys[key] = error
                failures.extend((i, tried) for i in members)
                if isinstance(error, TransientServiceError):
                    # NOTE: the connection is gone even after the SDK's retries; the remaining
                    # batches would each wait as long to fail, so they go to the outbox now,
                    # and the next send starts on a fresh client.
                    lost = error
                    self.close()
                continue
            sent.update(members)
        receipts = [
            Receipt(
                partition=None,
                sequence_number=None,
                offset=None,
                enqueued_time=None,
                schema_id=schema_ids[i],
                content_type=events[i].content_type,
                partition_key=events[i].partition_key,
                message_id=events[i].message_id,
            )
            for i in range(len(events))
            if i in sent
        ]
        if failures:
            failures.sort(key=lambda pair: pair[0])
            first = failures[0][1]
            raise EmitError(
                f"{len(failures)} of {len(events)} events could not be sent to {self.name}: "
                f"{first}",
                failures=failures,
                receipts=receipts,
            )
        return receipts
