"""A loopback AMQP 1.0 endpoint on 127.0.0.1 that plays an Event Hubs namespace for the real SDK.

The real ``EventHubProducerClient`` connects to it with a ``UseDevelopmentEmulator=true``
connection string (plain AMQP, SASL ANONYMOUS), puts its token on ``$cbs``, reads partition ids
on ``$management`` and sends batches on a sender link. The real ``EventHubConsumerClient``
attaches receiver links to ``<hub>/ConsumerGroups/<group>/Partitions/<id>`` with the selector
filter of its starting position (offset, sequence number or enqueued time, ``>`` or ``>=``),
grants credit with flow frames, and gets each stored event as a transfer carrying the
annotations the service sets (sequence number, offset, enqueued time, partition key).
Frames are decoded and encoded with the SDK's own codec (``_pyamqp._decode`` / ``_encode``)
and performatives, always full length, because azure-eventhub 5.15.1 reads performative fields
by position (see ``shared/notes/eventhubs-loopback.md``).

Switches (attributes, changeable between sends) make it misbehave on purpose:

- ``reject``: the next N event transfers are settled as Rejected (``EventDataSendError``);
- ``drop``: the next N event transfers close the socket instead of being settled;
- ``drop_after_accept``: the next N event transfers are stored, then the socket is closed
  before the disposition goes out (the SDK resends: a duplicate, as in production);
- ``hold``: event transfers are stored but never settled (the sender waits; tests kill it);
- ``cbs_status``: the status code CBS answers put-token with (202; 401 refuses the token).

Everything accepted is in ``events`` (body, properties, application properties, annotations)
and in its partition's log (``log``), numbered as the service numbers it. ``publish()`` stores
an event directly (with a chosen enqueued time); receivers attached for a consumer group not
in ``consumer_groups`` are refused (``amqp:not-found``); ``receivers`` records every receiver
attach (group, partition, selector).
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from azure.eventhub._pyamqp import performatives as perf
from azure.eventhub._pyamqp._decode import decode_frame, decode_payload
from azure.eventhub._pyamqp._encode import encode_frame, encode_payload
from azure.eventhub._pyamqp.constants import HEADER_FRAME, SASL_HEADER_FRAME
from azure.eventhub._pyamqp.endpoints import Source, Target
from azure.eventhub._pyamqp.error import AMQPError
from azure.eventhub._pyamqp.message import Message, Properties
from azure.eventhub._pyamqp.outcomes import Accepted, Rejected
from azure.eventhub._pyamqp.types import TYPE, VALUE, AMQPTypes

from metaverse_kit.backends.local.hub import partition_for_key

_BATCH_FORMAT = 0x80013700
_SECRET = "bG9vcGJhY2sta2V5LW5vdC1hLXJlYWwtc2VjcmV0"


@dataclass
class ReceivedEvent:
    """One event the endpoint accepted."""

    body: bytes
    message_id: str | None
    content_type: str | None
    application_properties: dict[str, Any]
    partition_key: str | None
    target: str
    partition: str = ""
    sequence_number: int = -1
    offset: int = -1
    enqueued_ms: int = 0


@dataclass
class _Link:
    name: str
    handle: int
    client_is_sender: bool
    address: str
    delivery_count: int = 0


_SELECTOR = re.compile(
    r"amqp\.annotation\.x-opt-(offset|sequence-number|enqueued-time) (>=|>) '([^']*)'"
)
_RECEIVER = re.compile(r"/ConsumerGroups/([^/]+)/Partitions/([^/]+)$")


@dataclass
class _Receiver:
    """A receiver link of a client: where it reads, from which position, with what credit."""

    conn: socket.socket
    session: _Session
    link: _Link
    partition: str
    selector: str
    cursor: int = 0
    credit: int = 0
    delivery_count: int = 0

    def wants(self, event: ReceivedEvent) -> bool:
        m = _SELECTOR.search(self.selector)
        if m is None:
            return True
        kind, op, text = m.groups()
        if kind == "offset":
            if text in ("-1", "@latest"):
                return True  # NOTE: @latest is applied by the cursor set at attach time
            value, own = int(text), event.offset
        elif kind == "sequence-number":
            value, own = int(text), event.sequence_number
        else:
            value, own = int(text), event.enqueued_ms
        return own >= value if op == ">=" else own > value


def _strings(value: Any) -> list[str]:
    """Every text inside a decoded AMQP value (the filter of a source is nested deep)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return [bytes(value).decode("utf-8")]
        except UnicodeDecodeError:
            return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


@dataclass
class _Session:
    channel: int
    links: dict[int, _Link] = field(default_factory=dict)
    next_outgoing_id: int = 0
    partial: dict[int, tuple[list[Any], bytearray]] = field(default_factory=dict)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8")
    return str(value)


def _address(terminus: Any) -> str:
    """The address of a decoded source or target (a described list, or its fields)."""
    if isinstance(terminus, dict):
        terminus = next(iter(terminus.values()))
    if isinstance(terminus, (list, tuple)) and terminus:
        return _text(terminus[0]) or ""
    return ""


class LoopbackEventHubs:
    """An Event Hubs namespace on 127.0.0.1 speaking just enough AMQP 1.0 for the producer."""

    def __init__(
        self,
        *,
        eventhub: str = "eh-loopback",
        partitions: tuple[str, ...] = ("0", "1"),
        max_message_size: int = 1024 * 1024,
    ) -> None:
        self.eventhub = eventhub
        self.partitions = partitions
        self.max_message_size = max_message_size
        self.reject = 0
        self.drop = 0
        self.drop_after_accept = 0
        self.cbs_status = 202
        self.hold = False
        self.events: list[ReceivedEvent] = []
        self.log: dict[str, list[ReceivedEvent]] = {p: [] for p in partitions}
        self.consumer_groups: set[str] = {"$Default"}
        self.receivers: list[tuple[str, str, str]] = []
        self._receivers: list[_Receiver] = []
        self._wire = threading.RLock()
        self._round_robin = 0
        self.tokens: list[tuple[str, str]] = []
        self.transfers = 0
        self.connections = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="amqp-loopback", daemon=True)
        self._thread.start()

    @property
    def connection_string(self) -> str:
        """A connection string for the real SDK (the key is a made-up one, masked in output)."""
        return (
            f"Endpoint=sb://127.0.0.1:{self.port}/;SharedAccessKeyName=RootManageSharedAccessKey;"
            f"SharedAccessKey={_SECRET};EntityPath={self.eventhub};UseDevelopmentEmulator=true"
        )

    secret = _SECRET

    def close(self) -> None:
        """Stop listening and close every connection."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.close()
        for s in list(self._sockets):
            with contextlib.suppress(OSError):
                s.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackEventHubs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sockets ----------------------------------------------------------------------------

    def _accept(self) -> None:
        self._server.settimeout(0.1)
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self.connections += 1
            self._sockets.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("peer closed")
            data += chunk
        return bytes(data)

    def _send(self, conn: socket.socket, channel: int, frame: Any, frame_type: bytes = b"\x00"):
        header, body = encode_frame(frame, frame_type=frame_type)
        with self._wire:
            conn.sendall(header + struct.pack(">H", channel) + (body or b""))

    def _frame(self, conn: socket.socket) -> tuple[int, int, list[Any]] | None:
        header = self._read(conn, 8)
        size = struct.unpack(">I", header[:4])[0]
        channel = struct.unpack(">H", header[6:8])[0]
        if size == 8:
            return None
        body = self._read(conn, size - 8)
        offset = header[4] * 4 - 8
        code, fields = decode_frame(memoryview(body)[offset:])
        return channel, code, fields

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._handshake(conn)
            sessions: dict[int, _Session] = {}
            while True:
                frame = self._frame(conn)
                if frame is None:
                    continue
                channel, code, fields = frame
                if not self._handle(conn, sessions, channel, code, fields):
                    return
        except (ConnectionError, OSError):
            return
        except Exception as exc:  # a bug here must show in the test, not hang it
            self.errors.append(repr(exc))
        finally:
            with self._wire:
                self._receivers = [r for r in self._receivers if r.conn is not conn]
            with contextlib.suppress(OSError):
                conn.close()

    def _handshake(self, conn: socket.socket) -> None:
        header = self._read(conn, 8)
        if header == SASL_HEADER_FRAME:
            conn.sendall(SASL_HEADER_FRAME)
            self._send(conn, 0, perf.SASLMechanism([b"ANONYMOUS", b"MSSBCBS"]), b"\x01")
            self._frame(conn)  # sasl-init
            self._send(conn, 0, perf.SASLOutcome(0, None), b"\x01")
            header = self._read(conn, 8)
        if header != HEADER_FRAME:
            raise ConnectionError(f"unexpected protocol header {header!r}")
        conn.sendall(HEADER_FRAME)

    # -- performatives ----------------------------------------------------------------------

    def _handle(
        self, conn: socket.socket, sessions: dict[int, _Session], channel: int, code: int, f: list
    ) -> bool:
        if code == 0x10:  # open
            self._send(
                conn,
                0,
                perf.OpenFrame("loopback", None, 65536, 255, None, None, None, None, None, None),
            )
        elif code == 0x11:  # begin
            sessions[channel] = _Session(channel)
            self._send(
                conn, channel, perf.BeginFrame(channel, 0, 65536, 65536, 255, None, None, None)
            )
        elif code == 0x12:  # attach
            self._attach(conn, sessions[channel], f)
        elif code == 0x13:  # flow
            self._flow(sessions[channel], f)
        elif code == 0x14:  # transfer
            return self._transfer(conn, sessions[channel], f)
        elif code == 0x15:  # disposition
            pass
        elif code == 0x16:  # detach
            session = sessions.get(channel)
            with self._wire:
                self._receivers = [
                    r
                    for r in self._receivers
                    if not (r.session is session and r.link.handle == f[0])
                ]
            if session is not None and f[0] in session.links:
                with contextlib.suppress(OSError):
                    self._send(conn, channel, perf.DetachFrame(f[0], True, None))
        elif code == 0x17:  # end
            sessions.pop(channel, None)
            with contextlib.suppress(OSError):
                self._send(conn, channel, perf.EndFrame(None))
        elif code == 0x18:  # close
            with contextlib.suppress(OSError):
                self._send(conn, 0, perf.CloseFrame(None))
            return False
        return True

    def _attach(self, conn: socket.socket, session: _Session, f: list) -> None:
        name, handle, role = _text(f[0]) or "", f[1], f[2]
        client_is_sender = not role  # role False: the client is the sender
        address = _address(f[6] if client_is_sender else f[5])
        session.links[handle] = _Link(name, handle, client_is_sender, address)
        source = Source(address=_address(f[5]) or address)
        target = Target(address=_address(f[6]) or address)
        self._send(
            conn,
            session.channel,
            perf.AttachFrame(
                name,
                handle,
                not client_is_sender,
                f[3],
                f[4],
                source,
                target,
                None,
                None,
                None if client_is_sender else 0,
                self.max_message_size,
                None,
                None,
                None,
            ),
        )
        if client_is_sender:
            self._send(
                conn,
                session.channel,
                perf.FlowFrame(0, 65536, session.next_outgoing_id, 65536, handle, 0, 1000),
            )
            return
        m = _RECEIVER.search(address)
        if m is None:
            return
        group, partition = m[1], m[2]
        selector = next((t for t in _strings(f[5]) if _SELECTOR.search(t)), "")
        with self._wire:
            self.receivers.append((group, partition, selector))
            if group not in self.consumer_groups or partition not in self.log:
                what = "consumer group" if group not in self.consumer_groups else "partition"
                error = AMQPError(
                    b"amqp:not-found",
                    f"The messaging entity '{address}' could not be found: no {what} "
                    f"{group if what == 'consumer group' else partition}".encode(),
                    None,
                )
                self._send(conn, session.channel, perf.DetachFrame(handle, True, error))
                return
            receiver = _Receiver(conn, session, session.links[handle], partition, selector)
            if "'@latest'" in selector:
                receiver.cursor = len(self.log[partition])
            self._receivers.append(receiver)

    def _flow(self, session: _Session, f: list) -> None:
        handle = f[4]
        with self._wire:
            for r in self._receivers:
                if r.session is session and r.link.handle == handle:
                    r.credit = (f[5] or 0) + (f[6] or 0) - r.delivery_count
                    self._pump(r)

    def _pump(self, r: _Receiver) -> None:
        """Send ``r`` the events it has credit for (holding ``_wire``)."""
        log = self.log[r.partition]
        while r.credit > 0 and r.cursor < len(log):
            event = log[r.cursor]
            r.cursor += 1
            if not r.wants(event):
                continue
            annotations: dict[bytes, Any] = {
                b"x-opt-sequence-number": {TYPE: AMQPTypes.long, VALUE: event.sequence_number},
                b"x-opt-offset": {TYPE: AMQPTypes.string, VALUE: str(event.offset)},
                b"x-opt-enqueued-time": {TYPE: AMQPTypes.timestamp, VALUE: event.enqueued_ms},
            }
            if event.partition_key is not None:
                annotations[b"x-opt-partition-key"] = {
                    TYPE: AMQPTypes.string,
                    VALUE: event.partition_key,
                }
            message = Message(
                message_annotations=annotations,
                properties=Properties(message_id=event.message_id, content_type=event.content_type),
                application_properties=dict(event.application_properties) or None,
                data=[event.body],
            )
            try:
                self._deliver(r.conn, r.session, r.link, message)
            except OSError:
                return
            r.credit -= 1
            r.delivery_count += 1

    def publish(
        self,
        partition: str,
        body: bytes,
        *,
        enqueued_ms: int | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
        partition_key: str | None = None,
        application_properties: dict[str, Any] | None = None,
    ) -> ReceivedEvent:
        """Store an event in ``partition`` as if a producer sent it; receivers get it."""
        event = ReceivedEvent(
            body=body,
            message_id=message_id or uuid.uuid4().hex,
            content_type=content_type,
            application_properties=dict(application_properties or {}),
            partition_key=partition_key,
            target=f"{self.eventhub}/Partitions/{partition}",
        )
        with self._lock:
            self._store(event, partition, enqueued_ms)
        return event

    def _store(self, event: ReceivedEvent, partition: str, enqueued_ms: int | None) -> None:
        """Number ``event`` in ``partition``'s log as the service does, and feed receivers."""
        with self._wire:
            log = self.log[partition]
            last = log[-1] if log else None
            event.partition = partition
            event.sequence_number = len(log)
            event.offset = 0 if last is None else last.offset + len(last.body) + 96
            event.enqueued_ms = (
                enqueued_ms
                if enqueued_ms is not None
                else max(int(time.time() * 1000), last.enqueued_ms if last else 0)
            )
            log.append(event)
            for r in self._receivers:
                if r.partition == partition:
                    self._pump(r)

    def _partition_of(self, target: str, key: str | None) -> str:
        m = re.search(r"/Partitions/([^/]+)$", target)
        if m:
            return m[1]
        if key:
            return self.partitions[partition_for_key(key, len(self.partitions))]
        self._round_robin += 1
        return self.partitions[self._round_robin % len(self.partitions)]

    def _deliver(self, conn: socket.socket, session: _Session, link: _Link, message: Message):
        """Send ``message`` on ``link`` as one settled transfer (the client receives it)."""
        payload = bytearray()
        encode_payload(payload, message)
        with self._wire:
            self._send(
                conn,
                session.channel,
                perf.TransferFrame(
                    handle=link.handle,
                    delivery_id=session.next_outgoing_id,
                    delivery_tag=uuid.uuid4().bytes,
                    message_format=0,
                    settled=True,
                    more=False,
                    rcv_settle_mode=None,
                    state=None,
                    resume=None,
                    aborted=None,
                    batchable=None,
                    payload=bytes(payload),
                ),
            )
            session.next_outgoing_id += 1
            link.delivery_count += 1

    def _reply(self, conn: socket.socket, session: _Session, node: str, message: Message) -> None:
        for link in session.links.values():
            if not link.client_is_sender and link.address == node:
                self._deliver(conn, session, link, message)
                return
        self.errors.append(f"no receiver link on {node}")

    def _settle(self, conn: socket.socket, channel: int, delivery_id: int, state: Any) -> None:
        self._send(
            conn, channel, perf.DispositionFrame(True, delivery_id, delivery_id, True, state, None)
        )

    def _transfer(self, conn: socket.socket, session: _Session, f: list) -> bool:
        handle = f[0]
        first, buffer = session.partial.get(handle, (f, bytearray()))
        buffer += bytes(f[11])
        if f[5]:  # more frames of the same delivery follow
            session.partial[handle] = (first, buffer)
            return True
        session.partial.pop(handle, None)
        delivery_id, settled, message_format = first[1], first[4], first[3]
        link = session.links[handle]
        request = decode_payload(memoryview(bytes(buffer)))
        if link.address == "$cbs":
            return self._cbs(conn, session, delivery_id, settled, request)
        if link.address == "$management":
            return self._management(conn, session, delivery_id, settled, request)
        return self._events(conn, session, link, delivery_id, message_format, request)

    def _response(self, request: Message, status: int, value: Any = None) -> Message:
        return Message(
            properties=Properties(correlation_id=request.properties.message_id),
            application_properties={b"status-code": status, b"status-description": b"done"},
            value=value,
        )

    def _cbs(self, conn, session, delivery_id, settled, request) -> bool:
        props = request.application_properties or {}
        self.tokens.append((_text(props.get(b"name")) or "", _text(request.value) or ""))
        if not settled:
            self._settle(conn, session.channel, delivery_id, Accepted())
        self._reply(conn, session, "$cbs", self._response(request, self.cbs_status))
        return True

    def _management(self, conn, session, delivery_id, settled, request) -> bool:
        if not settled:
            self._settle(conn, session.channel, delivery_id, Accepted())
        value = {
            b"name": self.eventhub.encode(),
            b"created_at": {TYPE: AMQPTypes.timestamp, VALUE: int(time.time() * 1000)},
            b"partition_ids": [p.encode() for p in self.partitions],
        }
        self._reply(conn, session, "$management", self._response(request, 200, value))
        return True

    def _events(self, conn, session, link, delivery_id, message_format, request) -> bool:
        with self._lock:
            self.transfers += 1
            if self.drop > 0:
                self.drop -= 1
                conn.close()
                return False
            if self.reject > 0:
                self.reject -= 1
                error = AMQPError(b"amqp:internal-error", b"loopback rejects this batch", None)
                self._settle(conn, session.channel, delivery_id, Rejected(error))
                return True
            inner = (
                [decode_payload(memoryview(bytes(d))) for d in request.data or []]
                if message_format == _BATCH_FORMAT
                else [request]
            )
            for message in inner:
                props = message.properties
                annotations = message.message_annotations or {}
                event = ReceivedEvent(
                    body=b"".join(bytes(d) for d in message.data or []),
                    message_id=_text(props.message_id) if props else None,
                    content_type=_text(props.content_type) if props else None,
                    application_properties={
                        _text(k) or "": v for k, v in (message.application_properties or {}).items()
                    },
                    partition_key=_text(annotations.get(b"x-opt-partition-key")),
                    target=link.address,
                )
                self.events.append(event)
                self._store(event, self._partition_of(link.address, event.partition_key), None)
            if self.drop_after_accept > 0:
                self.drop_after_accept -= 1
                conn.close()
                return False
            if self.hold:
                return True
        self._settle(conn, session.channel, delivery_id, Accepted())
        return True
