"""The Azure consumer: ``EventHubConsumerClient.receive_batch`` in a background thread.

The SDK's receive call blocks, so it runs in a thread of ours (one for all partitions, or one
per partition when only some are followed) and its callback puts what it received on a queue;
:meth:`AzureEventConsumer.receive` takes from the queue. Each received batch becomes a Capture
archive (the record Capture would write for each event), so the replay's decoder reads it.

Checkpoints: ``checkpoint="<container>"`` stores checkpoints and partition ownership with
``azure-eventhub-checkpointstoreblob`` in that blob container of the lake's storage account
(created when missing). A stored checkpoint wins over the start position, so a tail opened
again with the same container and consumer group resumes after what it handed out. The
events of a batch are checkpointed once the tail asks for the next one, never from the SDK's
thread, so an event is not marked handled before the user saw it.

Closing closes the client, which ends every receive call, then joins our threads and the
SDK's load-balancing thread (its ``load_balancing_interval``, 2 s here, bounds the wait), so
nothing keeps running once :meth:`close` returns.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from metaverse_kit.backends.azure._errors import translate_eventhub_error
from metaverse_kit.backends.protocols import CaptureFile, EventChunk, StartPosition
from metaverse_kit.capture import append_events, enqueued_ms, format_enqueued_time
from metaverse_kit.errors import ConfigurationError, MissingDependencyError, ServiceError
from metaverse_kit.redact import redact

__all__ = ["AzureEventConsumer", "capture_record", "consumer_opener"]

_log = logging.getLogger(__name__)
_SKIPPED = {"x-opt-sequence-number", "x-opt-offset"}
#: Seconds between the SDK's ownership claims; also the longest wait for its thread at close.
LOAD_BALANCING_INTERVAL = 2.0


def _text_or(value: Any) -> Any:
    """A value Capture's property maps hold: long, double, string, bytes or null."""
    if value is None or (isinstance(value, (int, float, str)) and not isinstance(value, bool)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value)
    if isinstance(value, datetime):
        return enqueued_ms(value)
    return str(value)


def _key(key: Any) -> str:
    return key.decode("utf-8", "replace") if isinstance(key, (bytes, bytearray)) else str(key)


def capture_record(event: Any) -> dict[str, Any]:
    """The record Capture writes for a received ``azure.eventhub.EventData``."""
    system = {
        _key(k): _text_or(v)
        for k, v in (event.system_properties or {}).items()
        if _key(k) not in _SKIPPED
    }
    properties = {_key(k): _text_or(v) for k, v in (event.properties or {}).items()}
    body = event.body
    data = bytes(body) if isinstance(body, (bytes, bytearray)) else b"".join(body)
    return {
        "SequenceNumber": event.sequence_number,
        "Offset": str(event.offset),
        "EnqueuedTimeUtc": format_enqueued_time(event.enqueued_time),
        "SystemProperties": {k: v for k, v in system.items() if v is not None},
        "Properties": properties,
        "Body": data,
    }


def _receive_error(exc: BaseException, eventhub: str) -> Exception:
    from azure.eventhub.exceptions import AuthenticationError

    if isinstance(exc, AuthenticationError):
        return ServiceError(
            f"Receiving from {eventhub}: the event hub refused the credentials "
            f"({redact(str(exc).strip().splitlines()[0] if str(exc).strip() else exc)}). "
            "The identity needs the Azure Event Hubs Data Receiver role, or the connection "
            "string's policy the Listen claim"
        )
    if "amqp:not-found" in str(exc):
        return ServiceError(
            f"Receiving from {eventhub}: not found ({redact(str(exc).strip().splitlines()[0])}). "
            "Check the consumer group exists (az eventhubs eventhub consumer-group list)"
        )
    if isinstance(exc, Exception):
        return translate_eventhub_error(exc, what=f"Receiving from {eventhub}")
    return ServiceError(f"Receiving from {eventhub}: {redact(exc)}")


def _sdk_position(position: StartPosition) -> tuple[Any, bool]:
    """The SDK's starting position for ours, and whether it is inclusive."""
    if position == "earliest":
        return "-1", False
    if position == "latest":
        return "@latest", False
    return position, True


class AzureEventConsumer:
    """Receives the events of an Azure event hub in a background thread (see the module notes).

    ``client`` is an ``EventHubConsumerClient`` of the consumer group (with its checkpoint
    store when checkpoints are asked for); ``positions`` maps each partition id to follow to
    its start position and ``all_partitions`` is every partition of the hub. ``namespace`` is
    the namespace's short name, shown in the ``namespace`` column as Capture writes it.
    """

    def __init__(
        self,
        client: Any,
        *,
        namespace: str,
        eventhub: str,
        positions: Mapping[str, StartPosition],
        all_partitions: Sequence[str],
        checkpointing: bool = False,
        max_batch_size: int = 300,
    ) -> None:
        self.namespace = namespace
        self.eventhub = eventhub
        self.partitions = sorted(positions)
        self._client = client
        self._checkpointing = checkpointing
        self._queue: queue.Queue[Any] = queue.Queue()
        self._handed: dict[str, tuple[Any, Any]] = {}
        self._closed = threading.Event()
        self._lock = threading.Lock()
        before = set(threading.enumerate())
        sdk = {p: _sdk_position(v) for p, v in positions.items()}
        starting = {p: s[0] for p, s in sdk.items()}
        inclusive = {p: s[1] for p, s in sdk.items()}
        whole = set(positions) == {str(p) for p in all_partitions}
        targets: list[str | None] = [None] if whole else list(self.partitions)
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(target, starting, inclusive, max_batch_size),
                name=f"eventhub-tail-{eventhub}-{target or 'all'}",
                daemon=True,
            )
            for target in targets
        ]
        for thread in self._threads:
            thread.start()
        self._before = before

    def __repr__(self) -> str:
        return (
            f"AzureEventConsumer(eventhub={self.eventhub!r}, partitions={self.partitions}, "
            f"consumer_group={getattr(self._client, '_consumer_group', '?')!r})"
        )

    def __enter__(self) -> AzureEventConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the SDK's thread -----------------------------------------------------------------------

    def _run(
        self,
        partition: str | None,
        starting: dict[str, Any],
        inclusive: dict[str, bool],
        max_batch_size: int,
    ) -> None:
        try:
            self._client.receive_batch(
                self._on_batch,
                max_batch_size=max_batch_size,
                partition_id=partition,
                starting_position=starting,
                starting_position_inclusive=inclusive,
                on_error=self._on_error,
            )
        except Exception as exc:  # raised to the reader by receive()
            if not self._closed.is_set():
                self._queue.put(exc)

    def _on_batch(self, context: Any, events: list[Any]) -> None:
        if not events or self._closed.is_set():
            return
        partition = str(context.partition_id)
        data = append_events(None, [capture_record(e) for e in events])
        file = CaptureFile(
            path="",
            size=len(data),
            version="",
            namespace=self.namespace,
            eventhub=self.eventhub,
            partition=partition,
        )
        self._queue.put((EventChunk(data, partition, "", file), context, events[-1]))

    def _on_error(self, context: Any, error: Exception) -> None:
        if not self._closed.is_set():
            _log.debug("receiving from %s failed: %s", self.eventhub, redact(error))
            self._queue.put(error)

    # -- the reader's side ----------------------------------------------------------------------

    def receive(self, *, timeout: float) -> list[EventChunk]:
        """The batches received since the last call, waiting up to ``timeout`` s for one.

        Raises the service's refusal or a lost stream as :class:`ServiceError`.
        """
        chunks: list[EventChunk] = []
        try:
            item = self._queue.get(timeout=max(timeout, 0.001))
            while True:
                if self._closed.is_set():
                    return []
                if isinstance(item, BaseException):
                    raise _receive_error(item, self.eventhub) from item
                chunk, context, last = item
                chunks.append(chunk)
                self._handed[chunk.partition] = (context, last)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return chunks

    def checkpoint(self) -> None:
        """Checkpoint the last event handed out of each partition (with a checkpoint store)."""
        if not self._checkpointing or self._closed.is_set():
            self._handed.clear()
            return
        handed, self._handed = self._handed, {}
        for partition, (context, event) in handed.items():
            try:
                context.update_checkpoint(event)
            except Exception as exc:
                raise ServiceError(
                    f"Storing the checkpoint of partition {partition} failed: {redact(exc)}. "
                    "The identity needs Storage Blob Data Contributor on the checkpoint container"
                ) from exc

    def close(self) -> None:
        """Close the client and wait for the receiving threads (ours and the SDK's) to end."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
        self._queue.put(ServiceError("closed"))
        with contextlib.suppress(Exception):
            self._client.close()
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join(timeout=30)
        # NOTE: the SDK's load-balancing thread sleeps between claims and ends at its next
        # wake-up; waiting for it keeps a closed tail from leaving a thread behind.
        for thread in set(threading.enumerate()) - self._before:
            if "_load_balancing" in thread.name and thread is not current:
                thread.join(timeout=LOAD_BALANCING_INTERVAL * 1.5 + 1)


def _checkpoint_store(
    container: str,
    *,
    lake_url: str | None,
    credential: Any,
    storage_connection_string: str | None,
) -> Any:
    try:
        from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
    except ImportError:
        raise MissingDependencyError(
            "Checkpoints of a tail on Azure", ["azure-eventhub-checkpointstoreblob"]
        ) from None
    from azure.core.exceptions import AzureError, ResourceExistsError
    from azure.storage.blob import ContainerClient

    from metaverse_kit.backends.azure._errors import translate_http_error
    from metaverse_kit.backends.azure.lake import parse_lake_url, storage_retry_policy

    if storage_connection_string:
        client = ContainerClient.from_connection_string(storage_connection_string, container)
        store = BlobCheckpointStore.from_connection_string(storage_connection_string, container)
    elif lake_url:
        account, _, _ = parse_lake_url(lake_url)
        url = f"https://{account}.blob.core.windows.net"
        client = ContainerClient(
            url, container, credential=credential, retry_policy=storage_retry_policy()
        )
        store = BlobCheckpointStore(
            url, container, credential=credential, retry_policy=storage_retry_policy()
        )
    else:
        raise ConfigurationError(
            "checkpoint= stores checkpoints in a blob container of the lake's storage account; "
            "configure the lake (lake='abfss://...' or $METAVERSE_LAKE) first"
        )
    with client:
        try:
            client.create_container()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise translate_http_error(
                exc,
                what=f"Creating the checkpoint container {container}",
                role="Storage Blob Data Contributor",
            ) from exc
    return store


def consumer_opener(
    *,
    fully_qualified_namespace: str,
    eventhub: str,
    credential: Any,
    connection_string: str | None = None,
    lake_url: str | None = None,
    storage_connection_string: str | None = None,
    retry_total: int | None = None,
    retry_backoff_factor: float | None = None,
    partition_ids: Callable[[], list[str]],
) -> Callable[..., AzureEventConsumer]:
    """The ``open_consumer`` of an Azure workspace: its hub, credential (or connection string)
    and, for checkpoints, the lake's storage account."""
    options: dict[str, Any] = {"load_balancing_interval": LOAD_BALANCING_INTERVAL}
    if retry_total is not None:
        options["retry_total"] = retry_total
    if retry_backoff_factor is not None:
        options["retry_backoff_factor"] = retry_backoff_factor
    short = fully_qualified_namespace.split(".", 1)[0].split(":", 1)[0]

    def open_consumer(
        *,
        positions: Mapping[str, StartPosition],
        consumer_group: str = "$Default",
        checkpoint: str | None = None,
    ) -> AzureEventConsumer:
        from azure.eventhub import EventHubConsumerClient

        extra = dict(options)
        if checkpoint is not None:
            extra["checkpoint_store"] = _checkpoint_store(
                checkpoint,
                lake_url=lake_url,
                credential=credential,
                storage_connection_string=storage_connection_string,
            )
        try:
            if connection_string:
                client = EventHubConsumerClient.from_connection_string(
                    connection_string,
                    consumer_group=consumer_group,
                    eventhub_name=eventhub,
                    **extra,
                )
            else:
                client = EventHubConsumerClient(
                    fully_qualified_namespace, eventhub, consumer_group, credential, **extra
                )
        except ValueError as exc:
            raise ConfigurationError(f"Cannot create the consumer: {redact(exc)}") from None
        return AzureEventConsumer(
            client,
            namespace=short,
            eventhub=eventhub,
            positions=positions,
            all_partitions=partition_ids(),
            checkpointing=checkpoint is not None,
        )

    return open_consumer
