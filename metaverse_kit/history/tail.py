"""The live end of the history: events decoded as the hub receives them.

:func:`open_tail` (``ws.tail()``) checks the start position, opens the backend's consumer
(:class:`~metaverse_kit.backends.protocols.EventConsumer`) and returns a :class:`Tail`: an
iterator of RecordBatches with exactly the columns of ``ws.replay()``, because every chunk a
consumer hands over is a Capture archive and is decoded by the replay's own decoder
(:func:`~metaverse_kit.history.replay.decode_capture_files`), here and nowhere else. A row's
``capture_file`` says where it came from: the Capture file it was read from (the local hub
writes Capture at once), or null for an event received from Azure before Capture wrote it.

Delivery is at least once, like the service's: an event whose message id was seen among the
last :data:`DEDUP_WINDOW` events is dropped (``dedup=False`` keeps it), and the count is in
each batch's schema metadata as in a replay. With ``checkpoint=``, what a tail handed out is
checkpointed when the next batch is asked for and when the tail is closed without an error,
so a tail opened again with the same name resumes after it.

A damaged block in a Capture file (its framing whole, its records not decoding) is left out
as ``replay(on_bad_file="skip")`` leaves it out: the file's intact blocks and every other
file's events are handed out, the part left out is listed in :attr:`Tail.skipped_files` and in
the batch's metadata (:func:`~metaverse_kit.history.decode.skipped_files`), its byte offset
counted from the start of the file, and a :class:`~metaverse_kit.errors.CaptureFileWarning`
names the file. So is a file that cannot be read at all (its Avro header damaged, no Capture
archive): it is listed with no offset, and the tail goes on with the other files. NOTE: the
consumer has moved past those blocks when they are decoded, so raising would lose the other
files' events read with them, and a tail resumed after the error would never show the damage
again.
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from metaverse_kit._time import utc_time
from metaverse_kit.backends.protocols import (
    EventChunk,
    EventConsumer,
    EventHub,
    SchemaRegistry,
    StartPosition,
)
from metaverse_kit.errors import CaptureFileWarning, ConfigurationError, warn
from metaverse_kit.history.decode import SkippedPart, skipped_files, with_skipped
from metaverse_kit.history.replay import (
    CaptureBytes,
    check_flag,
    decode_capture_files,
    dedup_batch,
    reader_schema,
    registry_lookup,
    with_dropped,
)
from metaverse_kit.names import no_such_partitions, partition_ids

__all__ = ["DEDUP_WINDOW", "Tail", "event_lines", "open_tail", "start_positions"]

#: How many recent message ids a tail remembers to drop duplicates (about 100 bytes each).
DEDUP_WINDOW = 100_000

# Event Hubs' rules: consumer groups 1-50 of letters, digits, ".", "-", "_" (and "$Default");
# checkpoints name a blob container: 3-63 of lowercase letters, digits and single hyphens.
_CONSUMER_GROUP = re.compile(r"^(\$Default|[A-Za-z0-9][A-Za-z0-9._-]{0,49})$")
_CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


def _position(value: Any, what: str) -> StartPosition:
    if isinstance(value, bool):
        raise ConfigurationError(f"{what} must be a position, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigurationError(f"{what}: a sequence number is 0 or more, not {value}")
        return value
    if isinstance(value, str) and value.strip().lower() in ("earliest", "latest"):
        return value.strip().lower()
    try:
        return utc_time(value, what, error=ConfigurationError)
    except ConfigurationError:
        raise ConfigurationError(
            f"{what} is 'earliest', 'latest', a time (datetime or ISO 8601 text such as "
            f"2026-03-02T08:00:00Z) or, per partition, a sequence number; not {value!r}"
        ) from None


def start_positions(
    start: Any, partitions: Sequence[str | int] | None, hub_partitions: Sequence[str]
) -> dict[str, StartPosition]:
    """The start position of each partition to follow, checked.

    ``start`` is ``"earliest"``, ``"latest"``, a time (naive means UTC), or a mapping of
    partition id to one of those or a sequence number (partitions it leaves out start at
    ``"latest"``). ``partitions`` limits the partitions followed (default: all of the hub's).
    Raises :class:`ConfigurationError` naming the partition or value that is wrong.
    """
    known = [str(p) for p in hub_partitions]
    ids = partition_ids(partitions)
    wanted = known if ids is None else list(ids)
    unknown = [p for p in wanted if p not in known]
    if isinstance(start, Mapping):
        unknown += [str(p) for p in start if str(p) not in known and str(p) not in unknown]
    if unknown:
        raise no_such_partitions(unknown, known)
    if not wanted:
        raise ConfigurationError("partitions= names no partition to follow")
    if isinstance(start, Mapping):
        given = {str(p): _position(v, f"start[{p!r}]") for p, v in start.items()}
        return {p: given.get(p, "latest") for p in wanted}
    if isinstance(start, int) and not isinstance(start, bool):
        raise ConfigurationError(
            "A sequence number starts one partition: pass start={partition id: number}"
        )
    position = _position(start, "start")
    return dict.fromkeys(wanted, position)


class Tail(Iterator[pa.RecordBatch]):
    """Events as they arrive, as RecordBatches with the columns of ``ws.replay()``.

    Iterating waits for the next events and stops once :meth:`close` is called (from any
    thread) or the ``with`` block ends; :meth:`read` waits at most a given time. Raises what
    the consumer raises (:class:`~metaverse_kit.errors.ServiceError` when the hub refused or
    lost the stream). See the module notes for duplicates and checkpoints.
    """

    def __init__(
        self,
        consumer: EventConsumer,
        *,
        registry: SchemaRegistry | None,
        schema_group: str | None = None,
        schema: Any = None,
        dedup: bool = True,
        wait: float = 1.0,
    ) -> None:
        self._consumer = consumer
        # NOTE: the same reader a replay of this workspace uses, so live and captured rows match.
        self._payload = reader_schema(schema, registry=registry, schema_group=schema_group)
        self._lookup = registry_lookup(registry)
        self._dedup = dedup
        self._seen: set[str] = set()
        self._order: deque[str] = deque()
        self._pending: deque[pa.RecordBatch] = deque()
        self._wait = wait
        self._closed = False
        #: Events dropped as duplicates so far.
        self.duplicates_dropped = 0
        #: Damaged parts of Capture files left out so far (see the module notes); an offset
        #: counts from the start of the file.
        self.skipped_files: list[SkippedPart] = []
        #: Events handed out so far.
        self.events = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Tail {state}: {self.events} events from {self._consumer!r}>"

    def __enter__(self) -> Tail:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(checkpoint=exc_type is None)

    def __iter__(self) -> Tail:
        return self

    def __next__(self) -> pa.RecordBatch:
        while True:
            if self._pending:
                return self._hand_out(self._pending.popleft())
            if self._closed:
                raise StopIteration
            self._fetch(self._wait)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def read(self, timeout: float = 0.0) -> list[pa.RecordBatch]:
        """The batches that arrive within ``timeout`` seconds (returns as soon as some do)."""
        if not self._pending and not self._closed:
            self._fetch(timeout)
        out = [self._hand_out(b) for b in self._pending]
        self._pending.clear()
        return out

    def _hand_out(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        self.events += batch.num_rows
        return batch

    def _fetch(self, timeout: float) -> None:
        # NOTE: asking for more means what was handed out before is handled: checkpoint it.
        self._consumer.checkpoint()
        chunks = self._consumer.receive(timeout=timeout)
        if chunks and not self._closed:
            self._pending.extend(self._decode(chunks))

    def _decode(self, chunks: list[EventChunk]) -> list[pa.RecordBatch]:
        batches = decode_capture_files(
            [CaptureBytes(c.data, c.path, c.file) for c in chunks],
            payload=self._payload,
            schemas=self._lookup,
            on_bad_file="skip",
        )
        out = []
        for chunk, batch in zip(chunks, batches, strict=True):
            skipped = [_in_file(s, chunk.offset) for s in skipped_files(batch)]
            if skipped:
                batch = with_skipped(batch, skipped)
                self.skipped_files.extend(skipped)
                _warn_damaged(chunk.path, skipped)
            batch = _after_start(batch, chunk)
            dropped = 0
            if self._dedup and batch.num_rows:
                batch, dropped = dedup_batch(batch, self._seen)
                self._forget_old(batch)
            self.duplicates_dropped += dropped
            if batch.num_rows:
                out.append(with_dropped(batch, dropped))
        return out

    def _forget_old(self, batch: pa.RecordBatch) -> None:
        self._order.extend(i for i in batch.column("message_id").to_pylist() if i is not None)
        while len(self._order) > DEDUP_WINDOW:
            self._seen.discard(self._order.popleft())

    def close(self, *, checkpoint: bool = True) -> None:
        """Stop the tail: a waiting iteration ends; connections and threads are released.

        With ``checkpoint`` (default), what was handed out is checkpointed first (when the tail
        has a checkpoint name); an error saving it (a
        :class:`~metaverse_kit.errors.ReadOnlyWorkspaceError`) is raised once the consumer is
        closed. Safe to call twice and from another thread.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if checkpoint:
                self._consumer.checkpoint()
        finally:
            # NOTE: a checkpoint that cannot be saved (a read-only workspace) left the consumer
            # open: its descriptors, and on Azure its threads and connections, for good.
            self._consumer.close()


def _in_file(part: SkippedPart, offset: int) -> SkippedPart:
    """``part`` of a chunk whose blocks are ``offset`` bytes further on in their file (see
    :class:`~metaverse_kit.backends.protocols.EventChunk`), its offset counted in the file.

    NOTE: a part with an offset is never in the header (a damaged header makes the whole file
    the part, with no offset), so every offset moves by the same amount.
    """
    if part.offset is None or not offset:
        return part
    return dataclasses.replace(part, offset=part.offset + offset)


def _warn_damaged(path: str, skipped: Sequence[SkippedPart]) -> None:
    """Warn that the tail left the damaged parts ``skipped`` of the file ``path`` out."""
    reasons = "; ".join(dict.fromkeys(s.reason for s in skipped))
    kept = skipped[-1].events_kept
    if all(s.offset is None for s in skipped) and not kept:
        warn(
            CaptureFileWarning(
                f"{path or 'A Capture file'} cannot be read ({reasons}); the tail left it out "
                "and goes on with the other files, and reads it again once it changes. "
                "`metaverse doctor` finds damaged Capture files (`--repair` moves one with "
                "nothing readable aside); move a file that is no Capture file out of the lake. "
                "tail.skipped_files lists what was left out"
            )
        )
        return
    warn(
        CaptureFileWarning(
            f"{path or 'A Capture file'} has damaged blocks the tail left out ({reasons}); "
            f"{kept} event{'s' if kept != 1 else ''} of its intact new blocks "
            f"{'were' if kept != 1 else 'was'} handed out. `metaverse doctor` finds damaged "
            "Capture files and `metaverse doctor --repair` rewrites them from their intact "
            "blocks; tail.skipped_files lists what was left out"
        )
    )


def _after_start(batch: pa.RecordBatch, chunk: EventChunk) -> pa.RecordBatch:
    """Drop the rows before the chunk's start position (a position inside a Capture file)."""
    conditions = []
    if chunk.min_sequence is not None:
        conditions.append(pc.greater_equal(batch.column("sequence_number"), chunk.min_sequence))
    if chunk.min_time is not None:
        times = batch.column("enqueued_time")
        conditions.append(pc.greater_equal(times, pa.scalar(chunk.min_time, times.type)))
    if not conditions:
        return batch
    mask = conditions[0]
    for c in conditions[1:]:
        mask = pc.and_(mask, c)
    return batch.filter(mask)


def open_tail(
    open_consumer: Callable[..., EventConsumer] | None,
    *,
    hub: EventHub,
    registry: SchemaRegistry | None,
    backend: str,
    schema_group: str | None = None,
    start: Any = "latest",
    partitions: Sequence[str | int] | None = None,
    consumer_group: str = "$Default",
    checkpoint: str | None = None,
    schema: Any = None,
    dedup: bool = True,
) -> Tail:
    """Check the options, open the backend's consumer and return a :class:`Tail` on it.

    Raises :class:`ConfigurationError` for a start position, partition, consumer group or
    checkpoint name that is wrong, or a backend that cannot follow its hub.
    """
    if open_consumer is None:
        raise ConfigurationError(f"The {backend} backend cannot follow its event hub (no consumer)")
    if not isinstance(consumer_group, str) or not _CONSUMER_GROUP.match(consumer_group):
        raise ConfigurationError(
            f"consumer_group {consumer_group!r} is not a consumer group name: 1 to 50 letters, "
            "digits, '.', '-' or '_' (or '$Default')"
        )
    if checkpoint is not None and (
        not isinstance(checkpoint, str) or not _CONTAINER.match(checkpoint)
    ):
        raise ConfigurationError(
            f"checkpoint {checkpoint!r} must name a blob container: 3 to 63 lowercase letters, "
            "digits and single hyphens, starting and ending with a letter or digit"
        )
    check_flag(dedup, "dedup")
    positions = start_positions(start, partitions, hub.partition_ids())
    consumer = open_consumer(
        positions=positions, consumer_group=consumer_group, checkpoint=checkpoint
    )
    try:
        return Tail(
            consumer, registry=registry, schema_group=schema_group, schema=schema, dedup=dedup
        )
    except BaseException:
        consumer.close()
        raise


def event_lines(batch: pa.RecordBatch | pa.Table) -> list[str]:
    """One line of text per event: time, partition and sequence number, urn, aspects, source.

    Events that did not decode show their content type and why. Used by ``metaverse tail``.
    """
    from metaverse_kit.history.questions import aspects

    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    names: dict[int, list[str]] = {}
    if "proposedSnapshot" in table.column_names:
        rows = aspects(table)
        for i, name in zip(
            rows.column("event_index").to_pylist(), rows.column("aspect").to_pylist(), strict=True
        ):
            names.setdefault(i, []).append(name)
    lines = []
    columns = ["enqueued_time", "partition", "sequence_number", "partition_key"]
    columns += ["content_type", "decode_error", "capture_file"]
    for i, row in enumerate(table.select(columns).to_pylist()):
        when = row["enqueued_time"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        what = (
            ", ".join(names.get(i, [])) or "(no aspect)"
            if row["decode_error"] is None
            else f"{row['content_type'] or 'no content type'}: {row['decode_error']}"
        )
        source = "captured" if row["capture_file"] else "live"
        lines.append(
            f"{when}  partition {row['partition']}  #{row['sequence_number']}  "
            f"{row['partition_key'] or '-'}  {what}  ({source})"
        )
    return lines
