"""One accepted WebSocket client on the gateway's port: the handshake, a reader and a writer.

The reader feeds wsproto (client frames are masked and may be fragmented) and hands each complete
message to the dialect session. The writer is the only task that writes to the socket: it waits on
the client's `Outbox` and sends everything queued in one `send_all`, so a client costs one syscall
per batch, not per event. Dialects never touch the socket.
"""

from __future__ import annotations

import logging
from typing import Protocol

import h11
import trio
import wsproto
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Request, TextMessage
from wsproto.utilities import RemoteProtocolError

from gateway.outbox import DroppedWindow, Outbox
from gateway.wsframe import close_frame

log = logging.getLogger(__name__)

#: A client message larger than this is not a subscription request: close with 1009.
MAX_CLIENT_MESSAGE = 64 * 1024
#: How long a closing client gets to take its last frames before the socket is cut.
CLOSE_GRACE_SECONDS = 2.0
_RECEIVE_CHUNK = 65536
#: A client whose socket accepts nothing for this long is gone (asleep, half-open, stuck): it is
#: cut off, which releases its subscriptions. Short stalls are the outbox policy's business.
WRITE_STALL_SECONDS = 30.0
#: Clients are pinged when quiet; any frame from them (a pong, a message) proves they are there.
PING_INTERVAL_SECONDS = 30.0
SILENT_CLIENT_SECONDS = 75.0


class Session(Protocol):
    """What a dialect provides for one connection.

    Optional extras, looked up with getattr: `async def background(self)` runs while the client is
    connected (timers: heartbeats, per-client conflation); `def goodbye_frames(self) -> list[bytes]`
    goes out before the close frame of a planned shutdown (Luzia SERVER_SHUTDOWN, CoinAPI reconnect).
    """

    def on_message(self, message: str | bytes) -> None: ...

    def gap_frames(self, dropped: list[DroppedWindow]) -> list[bytes]: ...

    def on_close(self) -> None: ...


class WebSocketPeer:
    def __init__(self, stream: trio.abc.Stream, request: h11.Request, outbox: Outbox) -> None:
        self.stream = stream
        self.request = request
        self.outbox = outbox
        self._ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        self.remote = _remote_address(stream)  # (host, port) of the client, kept for logs and tests
        outbox.on_overflow = self._overflowed
        self._parts: list[str | bytes] = []
        self._size = 0
        self.close_code: int | None = None
        self.session: Session | None = None
        self._scope = trio.CancelScope()
        self._reader_done = False
        self._last_heard = trio.current_time()
        self._writer_done = False

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.request.headers}

    def check_upgrade(self) -> str | None:
        """Validate the upgrade request; the reason it is not a valid one, or None."""
        try:
            self._ws.initiate_upgrade_connection(list(self.request.headers), self.request.target)
            event = next(self._ws.events())
        except (RemoteProtocolError, h11.LocalProtocolError) as exc:  # h11: e.g. HTTP/1.0 without Host
            return str(exc)
        return None if isinstance(event, Request) else "not a WebSocket upgrade"

    async def accept(self, trailing: bytes) -> None:
        """Answer 101 and start speaking WebSocket; `trailing` is what the client sent after the request."""
        await self.stream.send_all(self._ws.send(AcceptConnection()))
        if trailing:
            self._ws.receive_data(trailing)

    def shutdown(self, code: int, reason: str) -> None:
        """A planned close: the dialect's goodbye (if it has one) and then the close frame."""
        goodbye = getattr(self.session, "goodbye_frames", None)
        if goodbye is not None and self.close_code is None:
            for frame in goodbye():
                self.outbox.put_control(frame)
        self.close(code, reason)

    async def _keepalive(self) -> None:
        """Ping a quiet client; one silent past SILENT_CLIENT_SECONDS (no pong, no message) is gone —
        asleep, or half-open behind a NAT — and is cut off so its upstream subscriptions are freed."""
        while True:
            await trio.sleep(PING_INTERVAL_SECONDS)
            if trio.current_time() - self._last_heard >= SILENT_CLIENT_SECONDS:
                log.info("client %s silent for %.0f s: disconnecting", self.remote, SILENT_CLIENT_SECONDS)
                self.close(1001, "no pong")
                self._finish_soon()
                return
            self.outbox.put_control(self._ws.send(Ping(b"mdgateway")))

    def _overflowed(self) -> None:
        """The client let more replies pile up than its outbox allows: it reads nothing; cut it off."""
        log.info("client %s is not reading: disconnecting", self.remote)
        if self.close_code is None:
            self.close_code = 1008
        self._scope.cancel()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Queue a close frame after whatever is pending; the writer sends it and stops."""
        if self.close_code is None:
            self.close_code = code
            self.outbox.close(close_frame(code, reason))

    async def run(self, session: Session) -> None:
        """Serve until the client closes, the connection breaks, or `close()` was called."""
        self.session = session
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._writer, session)
                nursery.start_soon(self._keepalive)
                background = getattr(session, "background", None)
                if background is not None:
                    nursery.start_soon(background)
                await self._reader(session)
                self._reader_done = True
                self.close(1000)
                self._finish_soon()
        finally:
            session.on_close()
            with trio.move_on_after(CLOSE_GRACE_SECONDS) as cleanup:
                cleanup.shield = True
                await self.stream.aclose()

    def _finish_soon(self) -> None:
        """Once both directions are done the connection is over; until then, a grace period."""
        if self._reader_done and self._writer_done:
            self._scope.cancel()
        else:
            self._scope.deadline = min(self._scope.deadline, trio.current_time() + CLOSE_GRACE_SECONDS)

    async def _reader(self, session: Session) -> None:
        if not self._handle_events(session):  # frames the client sent along with its upgrade request
            return
        while True:
            try:
                data = bytes(await self.stream.receive_some(_RECEIVE_CHUNK))
                self._last_heard = trio.current_time()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            self._ws.receive_data(data or None)
            if not self._handle_events(session) or not data:
                return

    def _handle_events(self, session: Session) -> bool:
        """Process what wsproto parsed; False once the conversation is over."""
        for event in self._ws.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                if not self._collect(event, session):
                    return False
            elif isinstance(event, Ping):
                self.outbox.put_control(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self.close_code is None:
                    self.close_code = event.code
                    # A dropped connection (EOF, 1006) has no close handshake left to answer.
                    answer = self._ws.send(event.response()) if self._ws.state is ConnectionState.REMOTE_CLOSING else None
                    self.outbox.close(answer)
                return False
        return True

    def _collect(self, event: TextMessage | BytesMessage, session: Session) -> bool:
        data: str | bytes = bytes(event.data) if isinstance(event, BytesMessage) else event.data
        self._parts.append(data)
        self._size += len(data)
        if self._size > MAX_CLIENT_MESSAGE:
            self.close(1009, "message too big")
            return False
        if event.message_finished:
            parts, self._parts, self._size = self._parts, [], 0
            session.on_message(_joined(parts))
        return True

    async def _writer(self, session: Session) -> None:
        outbox = self.outbox
        try:
            while True:
                await outbox.wait()
                frames, dropped = outbox.take()
                if dropped:
                    frames.extend(session.gap_frames(dropped))
                if frames:
                    with trio.move_on_after(WRITE_STALL_SECONDS) as stall:
                        await self.stream.send_all(b"".join(frames))
                    if stall.cancelled_caught:  # a client that reads nothing for this long is gone
                        log.info("client %s stalled for %.0f s: disconnecting", self.remote, WRITE_STALL_SECONDS)
                        break
                if outbox.closed and not len(outbox):
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        self._writer_done = True
        self._finish_soon()


def _joined(parts: list[str | bytes]) -> str | bytes:
    """One message from its fragments (all text or all bytes: wsproto keeps a message one kind)."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], str):
        return "".join(p for p in parts if isinstance(p, str))
    return b"".join(p for p in parts if isinstance(p, bytes))


def _remote_address(stream: trio.abc.Stream) -> tuple[str, int] | None:
    """The client's address, read once at accept (a closing socket can no longer say)."""
    try:
        return tuple(stream.socket.getpeername()[:2]) if isinstance(stream, trio.SocketStream) else None
    except OSError:
        return None
