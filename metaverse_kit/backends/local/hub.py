"""The local event hub: Event Hubs' partitions and sequence numbers, plus Capture, in a folder.

Each ``send`` assigns every event a partition (a stable hash of its partition key), the next
sequence number and offset of that partition, and an enqueued time that never goes backwards
within the partition, as the service does. It then writes the events into Capture-format Avro
files at the default Capture path of their time window.

Crash safety: new file contents are first written to temporary files, then a journal naming
every rename and the new partition state is written in one step (the commit point), then the
renames happen. A crash before the journal leaves everything as it was; after it, the next
hub to open finishes the renames. A process-wide lock (``flock``) serialises writers, so two
processes emitting at once lose nothing and never reuse a sequence number.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from metaverse_kit._files import atomic_write, locked
from metaverse_kit.backends.protocols import OutgoingEvent, Receipt
from metaverse_kit.capture import (
    append_events,
    capture_path,
    enqueued_ms,
    format_enqueued_time,
)
from metaverse_kit.errors import ConfigurationError
from metaverse_kit.names import path_segment

__all__ = ["LocalEventHub", "partition_for_key"]

# Offsets are byte positions in the partition's log; a fixed allowance stands in for the AMQP
# envelope around each body so offsets grow the way the service's do.
_ENVELOPE_BYTES = 96


def partition_for_key(key: str, partition_count: int) -> int:
    """The partition a key maps to: stable across processes, machines and Python versions."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % partition_count


class LocalEventHub:
    """An event hub with Capture, kept in folders of the workspace.

    ``lake_root`` receives the Capture files; ``state_root`` keeps each partition's next
    sequence number, offset and last enqueued time, the lock and the journal.
    """

    def __init__(
        self,
        lake_root: Path | str,
        state_root: Path | str,
        *,
        namespace: str,
        eventhub: str,
        partition_count: int = 4,
        window_seconds: int = 300,
        codec: str = "null",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if partition_count < 1:
            raise ConfigurationError(f"partition_count must be at least 1, not {partition_count}")
        if not 60 <= window_seconds <= 900:
            raise ConfigurationError(
                f"window_seconds must be between 60 and 900 (Capture's time window), "
                f"not {window_seconds}"
            )
        if codec not in ("null", "deflate"):
            raise ConfigurationError(f"codec must be 'null' or 'deflate', not {codec!r}")
        # NOTE: both names become folders of every Capture path written; checked where used.
        path_segment(namespace, what="namespace")
        path_segment(eventhub, what="event hub name")
        self.lake_root = Path(lake_root)
        self.state_root = Path(state_root)
        self.namespace = namespace
        self.name = eventhub
        self.partition_count = partition_count
        self.window = timedelta(seconds=window_seconds)
        self.codec = codec
        #: Stamps enqueued times; tests and the demo set it to simulate a history.
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._lock_path = self.state_root / ".lock"
        self._journal_path = self.state_root / "journal.json"
        self._state_path = self.state_root / "partitions.json"

    def __repr__(self) -> str:
        return (
            f"LocalEventHub(namespace={self.namespace!r}, eventhub={self.name!r}, "
            f"partitions={self.partition_count}, lake={str(self.lake_root)!r})"
        )

    def __enter__(self) -> LocalEventHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing stays open between calls; kept for the protocol."""

    def partition_ids(self) -> list[str]:
        """``"0"`` to ``"n-1"``, as Event Hubs names partitions."""
        return [str(i) for i in range(self.partition_count)]

    def partition_for(self, partition_key: str) -> str:
        """The partition id an event with this partition key goes to."""
        return str(partition_for_key(partition_key, self.partition_count))

    # -- state ----------------------------------------------------------------------------------

    def _read_state(self) -> dict[str, dict[str, int]]:
        try:
            return json.loads(self._state_path.read_text("utf-8"))
        except FileNotFoundError:
            return {}

    def _recover(self) -> None:
        """Finish a send whose journal was committed but whose renames did not all happen."""
        try:
            journal = json.loads(self._journal_path.read_text("utf-8"))
        except FileNotFoundError:
            return
        except json.JSONDecodeError:
            # The journal is written atomically, so a torn one cannot exist; refuse to guess.
            raise ConfigurationError(
                f"The hub journal {self._journal_path} is unreadable; inspect it by hand"
            ) from None
        for tmp, final in journal["renames"]:
            if os.path.exists(tmp):
                os.replace(tmp, final)
        atomic_write(self._state_path, json.dumps(journal["state"], sort_keys=True).encode())
        self._journal_path.unlink()

    # -- sending --------------------------------------------------------------------------------

    def send(self, events: Sequence[OutgoingEvent], *, schema_ids: Sequence[str]) -> list[Receipt]:
        """Append the events to their partitions and Capture files; one receipt per event."""
        if not events:
            return []
        with locked(self._lock_path):
            self._recover()
            state = self._read_state()
            receipts: list[Receipt] = []
            files: dict[str, list[dict[str, Any]]] = {}
            now = self.clock()
            if now.tzinfo is None:
                raise ConfigurationError("The hub's clock must return timezone-aware datetimes")
            for event, schema_id in zip(events, schema_ids, strict=True):
                partition = self.partition_for(event.partition_key or event.message_id)
                part = state.setdefault(
                    partition, {"next_sequence": 0, "next_offset": 0, "last_enqueued_ms": 0}
                )
                ms = max(enqueued_ms(now), part["last_enqueued_ms"])
                enqueued = datetime.fromtimestamp(ms / 1000, UTC)
                sequence, offset = part["next_sequence"], part["next_offset"]
                part.update(
                    next_sequence=sequence + 1,
                    last_enqueued_ms=ms,
                    next_offset=offset + len(event.body) + _ENVELOPE_BYTES,
                )
                window_start = datetime.fromtimestamp(
                    (ms // 1000)
                    // int(self.window.total_seconds())
                    * int(self.window.total_seconds()),
                    UTC,
                )
                relative = capture_path(self.namespace, self.name, partition, window_start)
                system: dict[str, Any] = {
                    "x-opt-enqueued-time": ms,
                    "content-type": event.content_type,
                    "message-id": event.message_id,
                }
                if event.partition_key:
                    system["x-opt-partition-key"] = event.partition_key
                properties = dict(event.properties)
                properties.setdefault("content-type", event.content_type)
                properties.setdefault("message-id", event.message_id)
                files.setdefault(relative, []).append(
                    {
                        "SequenceNumber": sequence,
                        "Offset": str(offset),
                        "EnqueuedTimeUtc": format_enqueued_time(enqueued),
                        "SystemProperties": system,
                        "Properties": properties,
                        "Body": event.body,
                    }
                )
                receipts.append(
                    Receipt(
                        partition=partition,
                        sequence_number=sequence,
                        offset=str(offset),
                        enqueued_time=enqueued,
                        schema_id=schema_id,
                        content_type=event.content_type,
                        partition_key=event.partition_key,
                        message_id=event.message_id,
                        location=str(self.lake_root / relative),
                    )
                )
            self._commit(files, state)
        return receipts

    def _commit(
        self, files: dict[str, list[dict[str, Any]]], state: dict[str, dict[str, int]]
    ) -> None:
        renames: list[tuple[str, str]] = []
        try:
            for relative, records in files.items():
                final = self.lake_root / relative
                try:
                    existing = final.read_bytes()
                except FileNotFoundError:
                    existing = None
                data = append_events(existing, records, codec=self.codec, where=str(final))
                tmp = final.with_name(f".{final.name}.{os.getpid()}.pending")
                atomic_write(tmp, data)
                renames.append((str(tmp), str(final)))
            atomic_write(
                self._journal_path, json.dumps({"renames": renames, "state": state}).encode()
            )
        except BaseException:
            for pending, _ in renames:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(pending)
            raise
        self._recover()
