"""The durable outbox: events are written to disk before they are sent and removed once sent.

Every ``Workspace.emit`` writes its encoded events to ``<workspace>/outbox/<batch>.json``
(atomically) before the hub is called, and removes them when the hub has taken them. Events the
hub could not take stay there, with the error, until :meth:`Outbox.retry` sends them or
:meth:`Outbox.discard` drops them. Whatever moment a process dies at, each event is either sent
or in the outbox; it may be both (sent, and the process died before removing it), and then a
retry sends it again with the same message id, which replay recognises as a duplicate.

An entry is ``unconfirmed`` while a send of it has begun and the hub has not answered: found
so in a batch no live process holds, it was left by a process that stopped while sending it
(killed, a kernel restart), and the hub may have it. :meth:`Outbox.retry` marks what it sends
so before the send (a retry stopped half-way is such a leftover too), and warns with an
:class:`~metaverse_kit.errors.InterruptedSendWarning` naming the batches when it sends such
events again.

While a batch is being sent, its process holds an exclusive lock on ``<batch>.lock``, so a
retry in another process or notebook skips it instead of sending it twice, and
:meth:`Outbox.sending` tells such a batch from one a killed process left.

A batch file is one JSON object, by columns so that a batch of 100,000 events is written
without an object per event (format 2)::

    {"format": 2, "count": 3,
     "shared": {"schema_id": "...", "content_type": "avro/binary+...", "properties": {...},
                "created": "2026-03-02T08:00:01.123456+00:00", "attempts": 0, "last_error": null,
                "unconfirmed": true},
     "columns": {"message_id": ["...", "...", "..."], "partition_key": ["...", "...", "..."]},
     "bodies": ["<base64>", "<base64>", "<base64>"]}

Each entry field (those of :meth:`OutboxEntry.to_obj` but the body) is in ``shared`` when every
entry of the batch has the same value, else in ``columns`` with one value per entry, in order;
``bodies`` holds the entries' bodies in base64. ``unconfirmed`` may be missing (files of earlier
versions): then an entry never tried (``attempts`` 0) is unconfirmed. Files of format 1
(``{"format": 1, "events": [<OutboxEntry.to_obj()>, ...]}``, written by earlier versions) are
read as well.

A retry may send an event long after it was emitted, after newer writes of the same aspect
reached the lake. History keeps the newer value (it orders writes by their emit time, see
``history.questions``), and :meth:`Outbox.retry` says so with a
:class:`~metaverse_kit.errors.LateEventWarning` naming each such event.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import contextlib
import fcntl
import functools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaverse_kit._files import atomic_write, held, writing
from metaverse_kit.backends.protocols import EventHub, OutgoingEvent, Receipt, SchemaRegistry
from metaverse_kit.capture import EMITTED_TIME_PROPERTY
from metaverse_kit.errors import (
    ConfigurationError,
    EmitError,
    InterruptedSendWarning,
    LateEventWarning,
    MetaverseError,
    MetaverseWarning,
    ServiceError,
    warn,
)
from metaverse_kit.redact import redact

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Outbox", "OutboxEntry"]

_FORMAT = 2
#: What each entry of a batch file has besides its body (see the module docstring).
_FIELDS = (
    "message_id",
    "schema_id",
    "content_type",
    "partition_key",
    "properties",
    "created",
    "attempts",
    "last_error",
)
#: Entry fields a batch file may lack (files of earlier versions); see :meth:`OutboxEntry.from_obj`.
_OPTIONAL = ("unconfirmed",)
_DAMAGED_HINT = (
    "Its events are not sent until it is repaired or moved out of the outbox folder (move it "
    "aside to keep it); the other batches are sent and discarded as usual."
)
_log = logging.getLogger(__name__)


class _NewerFormat(ValueError):
    """A batch file of a format this version does not know (a newer metaverse-kit's)."""


_END_OF_TIME = datetime(9999, 12, 31, tzinfo=UTC)


@dataclass(frozen=True)
class OutboxEntry:
    """One event waiting in the outbox, with the last error that kept it there.

    ``unconfirmed``: a send of it began and the hub has not answered (see the module notes);
    in a batch no live process sends (:meth:`Outbox.sending`), the hub may already have it.
    """

    message_id: str
    schema_id: str
    content_type: str
    partition_key: str
    body: bytes = field(repr=False)
    properties: dict[str, Any]
    created: datetime
    attempts: int
    last_error: str | None
    batch: str
    unconfirmed: bool = False

    def event(self) -> OutgoingEvent:
        """The event as the hub takes it (same body, content type and message id)."""
        return OutgoingEvent(
            body=self.body,
            content_type=self.content_type,
            partition_key=self.partition_key,
            message_id=self.message_id,
            properties=dict(self.properties),
        )

    def to_obj(self) -> dict[str, Any]:
        """The JSON form of the entry (its fields in an outbox file, the body in base64)."""
        return {
            "message_id": self.message_id,
            "schema_id": self.schema_id,
            "content_type": self.content_type,
            "partition_key": self.partition_key,
            "body": base64.b64encode(self.body).decode("ascii"),
            "properties": dict(self.properties),
            "created": self.created.isoformat(),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "unconfirmed": self.unconfirmed,
        }

    @classmethod
    def from_obj(cls, obj: dict[str, Any], *, batch: str) -> OutboxEntry:
        """Read the JSON form kept on disk (without ``unconfirmed``, an entry never tried is)."""
        attempts = int(obj.get("attempts", 0))
        return cls(
            message_id=obj["message_id"],
            schema_id=obj["schema_id"],
            content_type=obj["content_type"],
            partition_key=obj["partition_key"],
            body=base64.b64decode(obj["body"]),
            properties=dict(obj.get("properties") or {}),
            created=datetime.fromisoformat(obj["created"]),
            attempts=attempts,
            last_error=obj.get("last_error"),
            batch=batch,
            # NOTE: earlier versions kept no such field; their test was "never tried".
            unconfirmed=bool(obj.get("unconfirmed", attempts == 0)),
        )


def _plain(value: object) -> dict[str, Any]:
    """A mapping that is not a dict (emit's read-only properties) as the JSON object it is."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _batch_file(
    count: int, fields: dict[str, Sequence[Any]], bodies: Iterable[bytes], *, shared: dict[str, Any]
) -> bytes:
    """The bytes of a batch file (format 2) of ``count`` entries.

    ``fields`` maps entry fields to one value per entry; those with one value for all go to
    ``shared`` (beside the given ``shared`` ones), the others to ``columns``.
    """
    columns: dict[str, Sequence[Any]] = {}
    shared = dict(shared)
    for name, values in fields.items():
        first = values[0]
        if all(v is first for v in values) or all(v == first for v in values):
            shared[name] = first
        else:
            columns[name] = values
    head = json.dumps(
        {"format": _FORMAT, "count": count, "shared": shared, "columns": columns},
        separators=(",", ":"),
        default=_plain,
    )
    # PERF: base64 text needs no JSON escaping, so the bodies are joined as they are; through
    # json.dumps every character was scanned (3 us an event of 200 bytes, a tenth of an emit).
    text = b'","'.join([binascii.b2a_base64(body, newline=False) for body in bodies])
    return b"".join((head[:-1].encode("utf-8"), b',"bodies":["', text, b'"]}'))


def _entries(data: Any, batch: str) -> list[OutboxEntry]:
    """The entries of a parsed batch file (format 1 or 2); ValueError when it is not one."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    version = data.get("format", 1)
    if version == 1:
        # NOTE: no default: an object without events is no batch, and must not read as empty.
        return [OutboxEntry.from_obj(e, batch=batch) for e in data["events"]]
    if version != _FORMAT:
        raise _NewerFormat(f"format {version!r}, which this version of metaverse-kit cannot read")
    count, shared, columns = data["count"], data["shared"], data["columns"]
    bodies = data["bodies"]
    if any(len(values) != count for values in (bodies, *columns.values())):
        raise ValueError(f"a column does not have the {count} values of the batch")
    missing = set(_FIELDS) - set(shared) - set(columns)
    if missing:
        raise ValueError(f"no {', '.join(sorted(missing))}")
    return [
        OutboxEntry.from_obj(
            {**shared, **{name: values[i] for name, values in columns.items()}, "body": body},
            batch=batch,
        )
        for i, body in enumerate(bodies)
    ]


def _describe(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _batch_lock(path: Path, *, wait: bool) -> Iterator[bool]:
    """Hold ``path``'s exclusive lock (yields False, holding nothing, when busy and not ``wait``).

    The lock file is removed on release; the inode check makes sure the lock held is on the
    file that is at ``path`` now, not on one a finished holder removed.
    """
    while True:
        with writing(path.parent):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


class Outbox:
    """The events of a workspace that were not (or not yet) taken by its event hub.

    ``folder`` holds one JSON file per emitted batch; ``hub`` is the event hub retries go to.
    ``history`` (a function returning the replayed events table) and ``registry`` let
    :meth:`retry` warn about events older than a write already in the lake.
    """

    def __init__(
        self,
        folder: str | Path,
        hub: EventHub,
        *,
        history: Callable[[], pa.Table] | None = None,
        registry: SchemaRegistry | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.hub = hub
        self._history = history
        self._registry = registry

    def __repr__(self) -> str:
        # NOTE: a repr that raises breaks the notebook's display of the workspace too.
        try:
            return f"<Outbox {self.folder}: {len(self)} events>"
        except MetaverseError:
            return f"<Outbox {self.folder}: a batch file cannot be read, see outbox.list()>"

    def __len__(self) -> int:
        return len(self.list())

    # -- files ----------------------------------------------------------------------------------

    def _batches(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("*.json") if not p.name.startswith("."))

    def _read(self, path: Path) -> list[OutboxEntry]:
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return []
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            # NOTE: atomic_write leaves no torn file when a process dies, but the first write of
            # a batch is not fsynced: after a power loss it can be empty. Or it was edited.
            raise ConfigurationError(
                f"The outbox file {path} is not valid JSON ({exc}): it was edited, or cut short "
                f"by a power loss. {_DAMAGED_HINT}"
            ) from exc
        try:
            return _entries(data, path.stem)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise ConfigurationError(
                f"The outbox file {path} is not an outbox batch ({type(exc).__name__}: {exc}). "
                + (
                    "It was written by a newer metaverse-kit: upgrade to read it."
                    if isinstance(exc, _NewerFormat)
                    else _DAMAGED_HINT
                )
            ) from exc

    def _readable(self, path: Path, *, quiet: bool = False) -> list[OutboxEntry] | None:
        """The entries of ``path``, or None (with a warning unless ``quiet``) when unreadable.

        NOTE: one damaged batch must not keep every other event in the outbox from being sent
        or discarded; it stays on disk and each retry or discard names it again.
        """
        try:
            return self._read(path)
        except ConfigurationError as exc:
            if not quiet:
                warn(MetaverseWarning(str(exc)))
            return None

    def _write(self, path: Path, entries: Sequence[OutboxEntry], *, durable: bool = True) -> None:
        if not entries:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        fields: dict[str, Sequence[Any]] = {
            name: [getattr(e, name) for e in entries]
            for name in (*_FIELDS, *_OPTIONAL)
            if name != "created"
        }
        fields["created"] = [e.created.isoformat() for e in entries]
        data = _batch_file(len(entries), fields, [e.body for e in entries], shared={})
        atomic_write(path, data, durable=durable)

    @staticmethod
    def _failed(
        entries: Sequence[OutboxEntry], failures: dict[int, BaseException]
    ) -> list[OutboxEntry]:
        """The entries that failed, with the failure counted. ``entries`` are as they were
        before the send: one the hub refused is as unconfirmed as it was then."""
        return [
            replace(e, attempts=e.attempts + 1, last_error=_describe(failures[i]))
            for i, e in enumerate(entries)
            if i in failures
        ]

    def _send(
        self,
        path: Path,
        events: Sequence[OutgoingEvent],
        schema_ids: Sequence[str],
        entries: Callable[[], builtins.list[OutboxEntry]],
        *,
        keep: Sequence[OutboxEntry] = (),
    ) -> tuple[list[Receipt], dict[int, BaseException]]:
        """Send ``events`` (on disk at ``path``, lock held); keep ``keep`` and what failed.

        ``entries`` makes the outbox entries of ``events``, needed only when some fail.
        """
        try:
            receipts = self.hub.send(events, schema_ids=schema_ids)
        except EmitError as exc:
            failures = {i: error for i, error in exc.failures}
            self._write(path, [*keep, *self._failed(entries(), failures)])
            return [r for r in exc.receipts if isinstance(r, Receipt)], failures
        except ServiceError as exc:
            failures = dict.fromkeys(range(len(events)), exc)
            self._write(path, [*keep, *self._failed(entries(), failures)])
            return [], failures
        except Exception as exc:
            failed = self._failed(entries(), dict.fromkeys(range(len(events)), exc))
            self._write(path, [*keep, *failed])
            exc.add_note(f"The events are kept in the outbox {self.folder}; see ws.outbox.list()")
            raise
        self._write(path, keep)
        return receipts, {}

    # -- the workspace's verbs ------------------------------------------------------------------

    def send(self, events: Sequence[OutgoingEvent], *, schema_ids: Sequence[str]) -> list[Receipt]:
        """Write ``events`` to the outbox, send them, and remove those the hub took.

        Raises :class:`EmitError` (``failures`` with the indexes of ``events``, ``receipts`` of
        those sent); the failed events stay in the outbox.
        """
        if not events:
            return []
        with writing(self.folder.parent):
            self.folder.mkdir(parents=True, exist_ok=True)
        if len(schema_ids) != len(events):
            raise ValueError(f"{len(events)} events but {len(schema_ids)} schema ids")
        now = datetime.now(UTC)
        batch = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        path = self.folder / f"{batch}.json"

        def entries() -> builtins.list[OutboxEntry]:
            return [
                OutboxEntry(
                    message_id=event.message_id,
                    schema_id=schema_id,
                    content_type=event.content_type,
                    partition_key=event.partition_key,
                    body=event.body,
                    properties=dict(event.properties),
                    created=now,
                    attempts=0,
                    last_error=None,
                    batch=batch,
                    # NOTE: never sent before: one the hub refused is not in the lake.
                    unconfirmed=False,
                )
                for event, schema_id in zip(events, schema_ids, strict=True)
            ]

        # PERF: by columns, straight from the events: no object per event.
        data = _batch_file(
            len(events),
            {
                "message_id": [e.message_id for e in events],
                "schema_id": list(schema_ids),
                "content_type": [e.content_type for e in events],
                "partition_key": [e.partition_key for e in events],
                "properties": [e.properties for e in events],
            },
            [e.body for e in events],
            shared={
                "created": now.isoformat(),
                "attempts": 0,
                "last_error": None,
                "unconfirmed": True,
            },
        )
        with _batch_lock(self.folder / f"{batch}.lock", wait=True):
            # NOTE: not fsynced: a process that dies leaves it all the same, and the hub's own
            # fsync makes what it takes durable; what it refuses is written again, durably.
            atomic_write(path, data, durable=False)
            del data
            receipts, failures = self._send(path, events, schema_ids, entries)
        if failures:
            pairs = sorted(failures.items())
            raise EmitError(
                f"{len(pairs)} of {len(events)} events were not sent ({pairs[0][1]}); they are "
                "kept in the outbox: ws.outbox.retry() sends them again, ws.outbox.list() "
                "shows them",
                failures=pairs,
                receipts=receipts,
            )
        return receipts

    def list(self) -> list[OutboxEntry]:
        """Every event in the outbox, oldest batch first (including batches being sent now)."""
        return [entry for path in self._batches() for entry in self._read(path)]

    def sending(self, batch: str) -> bool:
        """Whether a live process is sending this batch right now (an emit, or a retry).

        ``batch`` is an entry's :attr:`OutboxEntry.batch`. Such a batch is no leftover: it
        leaves the outbox when the hub takes its events, and :meth:`retry` and :meth:`discard`
        skip it meanwhile. Reads only (works on a workspace the user cannot write).
        """
        return held(self.folder / f"{batch}.lock")

    def retry(self, message_ids: Iterable[str] | None = None) -> builtins.list[Receipt]:
        """Send the events in the outbox again (all, or those with these message ids).

        Batches another process is sending right now are skipped. Returns the receipts of the
        events sent; raises :class:`EmitError` whose ``failures`` index the attempted events in
        the order of :meth:`list`, and which carries the receipts of those sent. Warns with an
        :class:`InterruptedSendWarning` naming the batches of the events it sent that a stopped
        process had begun to send (they may now be in the lake twice), with a
        :class:`MetaverseWarning` about damaged batch files (skipped), and with
        :class:`LateEventWarning` for each event older than a write of the same aspect already
        in the lake: it is sent all the same, and history keeps the newer write.
        """
        wanted = None if message_ids is None else set(message_ids)
        # NOTE: not the batches another process sends now: this retry skips them, and their
        # events were named as late by the retry that sends them (and again, counted twice).
        self._warn_late(
            [
                e
                for path in self._batches()
                if not self.sending(path.stem)
                for e in self._readable(path, quiet=True) or ()
                if wanted is None or e.message_id in wanted
            ]
        )
        all_receipts: list[Receipt] = []
        all_failures: list[tuple[int, BaseException]] = []
        attempted = 0
        resent: list[tuple[str, datetime, list[str]]] = []
        for path in self._batches():
            with _batch_lock(path.with_suffix(".lock"), wait=False) as held:
                if not held:
                    continue
                entries = self._readable(path)
                if entries is None:
                    continue
                picked = [wanted is None or e.message_id in wanted for e in entries]
                chosen = [e for e, p in zip(entries, picked, strict=True) if p]
                if not chosen:
                    continue
                # PERF: by position: `e not in chosen` compared every entry with every chosen
                # one (a retry of a batch of 8,000 events took 6 s, of 100,000 a quarter hour).
                others = [e for e, p in zip(entries, picked, strict=True) if not p]
                # NOTE: unconfirmed and not locked: a process stopped (killed, a kernel restart)
                # after it handed these to the hub and before it could remove them.
                unsure = [i for i, e in enumerate(chosen) if e.unconfirmed]
                if len(unsure) < len(chosen):
                    # NOTE: so that this retry, stopped half-way, leaves them marked too (only
                    # never-tried events were taken for such leftovers).
                    marked = [
                        replace(e, unconfirmed=True) if p else e
                        for e, p in zip(entries, picked, strict=True)
                    ]
                    self._write(path, marked, durable=False)
                receipts, failures = self._send(
                    path,
                    [e.event() for e in chosen],
                    [e.schema_id for e in chosen],
                    functools.partial(builtins.list, chosen),
                    keep=others,
                )
                sent = [chosen[i].message_id for i in unsure if i not in failures]
                if sent:
                    resent.append((path.stem, chosen[0].created, sent))
                all_receipts.extend(receipts)
                all_failures.extend((attempted + i, e) for i, e in sorted(failures.items()))
                attempted += len(chosen)
        if resent:
            self._warn_resent(resent)
        if all_failures:
            raise EmitError(
                f"{len(all_failures)} of {attempted} events in the outbox could not be sent "
                f"({all_failures[0][1]}); they stay there",
                failures=all_failures,
                receipts=all_receipts,
            )
        return all_receipts

    def discard(self, message_ids: Iterable[str]) -> int:
        """Drop these events from the outbox without sending them; returns how many were dropped.

        Events in a batch being sent right now are not dropped.
        """
        wanted = set(message_ids)
        dropped = 0
        for path in self._batches():
            with _batch_lock(path.with_suffix(".lock"), wait=False) as held:
                if not held:
                    continue
                entries = self._readable(path)
                if entries is None:
                    continue
                kept = [e for e in entries if e.message_id not in wanted]
                if len(kept) != len(entries):
                    dropped += len(entries) - len(kept)
                    self._write(path, kept)
        return dropped

    def _warn_resent(self, resent: Sequence[tuple[str, datetime, Sequence[str]]]) -> None:
        """Warn that the events ``resent`` ((batch, emitted, message ids) each) may now be in
        the lake twice.

        NOTE: a warning, not a log line: a steward in a notebook sees no log. It does not stop
        the retry (a retry after a crash is the expected way out); ``metaverse doctor`` names
        such batches before.
        """
        count = sum(len(ids) for _, _, ids in resent)
        ids = [i for _, _, batch_ids in resent for i in batch_ids]
        batches = "; ".join(
            f"batch {batch} ({len(batch_ids)} event{'s' if len(batch_ids) != 1 else ''} emitted "
            f"{created:%Y-%m-%d %H:%M:%S} UTC)"
            for batch, created, batch_ids in resent[:5]
        ) + (f"; and {len(resent) - 5} more batches" if len(resent) > 5 else "")
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        message = (
            f"ws.outbox.retry() sent {count} event(s) again that a process had begun to send "
            f"when it stopped (killed, or a kernel restart) before the hub answered: {batches}. "
            "The hub may have taken them then, so the lake may hold them twice, with the same "
            f"message id ({shown}). Replay keeps the first copy of each, so history is the "
            "same; mk.duplicates_dropped(ws.replay()) counts the copies left out, and "
            "ws.replay(dedup=False) shows them all"
        )
        # NOTE: the log line too, for a job whose log is read rather than its warnings.
        _log.warning(
            "%d retried event(s) were left by a process that stopped while sending them "
            "(%s): the hub may have taken them already, so the lake may hold them twice, "
            "with the same message id; replay keeps one copy",
            count,
            shown,
        )
        warn(InterruptedSendWarning(message))

    # -- late retries ---------------------------------------------------------------------------

    def _warn_late(self, entries: Sequence[OutboxEntry]) -> None:
        """Warn about the entries older than a write of the same (urn, aspect) in the lake."""
        stamped = [e for e in entries if str(e.properties.get(EMITTED_TIME_PROPERTY)).isdigit()]
        if not stamped or self._history is None or self._registry is None:
            return
        import pyarrow.compute as pc

        from metaverse_kit.history.questions import HistoryInputError, aspects, state_as_of

        try:
            pending = aspects(self._as_events(stamped))
            if not pending.num_rows:
                return
            # NOTE: the last write of each aspect in history's order is the newest one made.
            latest = state_as_of(self._history(), _END_OF_TIME, include_removed=True)
        except HistoryInputError:
            return  # not MCEs: no aspects to compare
        except MetaverseError as exc:
            # NOTE: a lake that cannot be read (none configured, a service error) must not stop
            # the retry; the check is a courtesy, the events are what matters.
            _log.info("not checking the retried events against the lake: %s", exc)
            return
        latest = latest.filter(pc.is_in(latest.column("urn"), value_set=pending.column("urn")))
        columns = ["urn", "aspect", "emitted_time", "enqueued_time"]
        newest = {
            (r["urn"], r["aspect"]): r["emitted_time"] or r["enqueued_time"]
            for r in latest.select(columns).to_pylist()
        }
        late = []
        for r in pending.select([*columns[:3], "message_id"]).to_pylist():
            newer, emitted = newest.get((r["urn"], r["aspect"])), r["emitted_time"]
            if newer is not None and emitted is not None and newer > emitted:
                late.append(
                    f"{r['message_id']} ({r['aspect']} of {r['urn']}, emitted "
                    f"{emitted:%Y-%m-%d %H:%M:%S.%f}"[:-3]
                    + f" UTC; the lake has a write made {newer:%Y-%m-%d %H:%M:%S.%f}"[:-3]
                    + " UTC)"
                )
        if late:
            shown = "; ".join(late[:5]) + (f"; and {len(late) - 5} more" if len(late) > 5 else "")
            warn(
                LateEventWarning(
                    f"{len(late)} retried event(s) are older than a write of the same aspect "
                    f"already in the lake: {shown}. They are sent; history keeps the newer "
                    "writes and audit_trail() marks these late=True"
                )
            )

    def _as_events(self, entries: Sequence[OutboxEntry]) -> pa.Table:
        """The entries as an events table (as replay makes them), to ask history questions of."""
        from metaverse_kit.capture import append_events, format_enqueued_time
        from metaverse_kit.events.builtin import mce_definition
        from metaverse_kit.history.replay import PayloadSchema, decode_capture_file

        registry = self._registry
        assert registry is not None
        now = datetime.now(UTC)
        data = append_events(
            None,
            [
                {
                    "SequenceNumber": i,
                    "Offset": "0",
                    "EnqueuedTimeUtc": format_enqueued_time(now),
                    "SystemProperties": {
                        "x-opt-enqueued-time": round(now.timestamp() * 1000),
                        "content-type": e.content_type,
                        "message-id": e.message_id,
                    },
                    "Properties": dict(e.properties),
                    "Body": e.body,
                }
                for i, e in enumerate(entries)
            ],
        )

        def lookup(schema_id: str) -> str | None:
            try:
                return registry.get_schema(schema_id).definition
            except Exception:  # an unknown id: the event decodes to an error row, no aspect
                return None

        import pyarrow as pa

        batch = decode_capture_file(
            data, payload=PayloadSchema(mce_definition()), schemas=lookup, path="the outbox"
        )
        return pa.Table.from_batches([batch])
