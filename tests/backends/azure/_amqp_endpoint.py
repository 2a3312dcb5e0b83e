"""A loopback AMQP 1.0 endpoint on 127.0.0.1 that plays an Event Hubs namespace for the real SDK.

The real ``EventHubProducerClient`` connects to it with a ``UseDevelopmentEmulator=true``
connection string (plain AMQP, SASL ANONYMOUS), puts its token on ``$cbs``, reads partition ids
on ``$management`` and sends batches on a sender link. Frames are decoded and encoded with the
SDK's own codec (``_pyamqp._decode`` / ``_encode``) and performatives, always full length,
because azure-eventhub 5.15.1 reads performative fields by position
(see ``shared/notes/eventhubs-loopback.md``).

Switches (attributes, changeable between sends) make it misbehave on purpose:

- ``reject``: the next N event transfers are settled as Rejected (``EventDataSendError``);
- ``drop``: the next N event transfers close the socket instead of being settled;
- ``drop_after_accept``: the next N event transfers are stored, then the socket is closed
  before the disposition goes out (the SDK resends: a duplicate, as in production);
- ``hold``: event transfers are stored but never settled (the sender waits; tests kill it);
- ``cbs_status``: the status code CBS answers put-token with (202; 401 refuses the token).

Everything accepted is in ``events`` (body, properties, application properties, annotations).
"""

from __future__ import annotations

import contextlib
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


@dataclass
class _Link:
    name: str
    handle: int
    client_is_sender: bool
    address: str
    delivery_count: int = 0


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
            pass
        elif code == 0x14:  # transfer
            return self._transfer(conn, sessions[channel], f)
        elif code == 0x15:  # disposition
            pass
        elif code == 0x16:  # detach
            session = sessions.get(channel)
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

    def _reply(self, conn: socket.socket, session: _Session, node: str, message: Message) -> None:
        for link in session.links.values():
            if not link.client_is_sender and link.address == node:
                payload = bytearray()
                encode_payload(payload, message)
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
                self.events.append(
                    ReceivedEvent(
                        body=b"".join(bytes(d) for d in message.data or []),
                        message_id=_text(props.message_id) if props else None,
                        content_type=_text(props.content_type) if props else None,
                        application_properties={
                            _text(k) or "": v
                            for k, v in (message.application_properties or {}).items()
                        },
                        partition_key=_text(annotations.get(b"x-opt-partition-key")),
                        target=link.address,
                    )
                )
            if self.drop_after_accept > 0:
                self.drop_after_accept -= 1
                conn.close()
                return False
            if self.hold:
                return True
        self._settle(conn, session.channel, delivery_id, Accepted())
        return True
