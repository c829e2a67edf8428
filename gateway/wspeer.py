"""One accepted WebSocket client on the gateway's port: the handshake, a reader, a writer, a watchdog.

The reader feeds wsproto (client frames are masked and may be fragmented) and hands each complete
message to the dialect session; a message is bounded in bytes and in fragments. The writer is the
only task that writes to the socket: it waits on the client's `Outbox` and sends everything queued
in one `send_all`, so a client costs one syscall per batch, not per event. The watchdog pings,
cuts silent clients and clients whose socket stopped accepting. Dialects never touch the socket.

Every way a connection ends on our side sends a close frame first (when the socket takes it
within CLOSE_GRACE_SECONDS): 1002 protocol violation, 1007 invalid UTF-8, 1009 message too big,
1008 too many fragments or not reading, 1001 silent or shutting down. Reasons are our own words.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Protocol

import h11
import trio
import wsproto
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Request, TextMessage
from wsproto.utilities import RemoteProtocolError

from gateway.config import Limits
from gateway.flood import TokenBucket
from gateway.outbox import DroppedWindow, Outbox
from gateway.wsframe import close_frame

log = logging.getLogger(__name__)

#: How long a closing client gets to take its last frames before the socket is cut.
CLOSE_GRACE_SECONDS = 2.0
_RECEIVE_CHUNK = 65536
#: Clients are pinged when quiet; any frame from them (a pong, a message) proves they are there.
#: One silent for SILENT_CLIENT_SECONDS is cut off at that moment, which frees its subscriptions.
PING_INTERVAL_SECONDS = 30.0
SILENT_CLIENT_SECONDS = 75.0
#: Close codes (RFC 6455 §7.4.1) and the project's own reasons for them: a client is never sent
#: wsproto's or the socket's wording.
NOT_READING = (1008, "not reading")
TOO_MANY_FRAGMENTS = (1008, "too many fragments in one message")
TOO_BIG = (1009, "message too big")
_PROTOCOL_REASONS = {1002: "protocol error", 1007: "invalid UTF-8 in a text message", 1009: TOO_BIG[1]}


class Session(Protocol):
    """What a dialect provides for one connection.

    Optional extras, looked up with getattr: `async def background(self)` runs while the client is
    connected (timers: heartbeats, per-client conflation); `def goodbye_frames(self) -> list[bytes]`
    goes out before the close frame of a planned shutdown (Luzia SERVER_SHUTDOWN, CoinAPI reconnect).
    """

    def on_message(self, message: str | bytes) -> None: ...

    def gap_frames(self, dropped: list[DroppedWindow]) -> list[bytes]: ...

    def on_close(self) -> None: ...


#: Events handled per scheduler pass while draining one read (see `_drain`).
EVENTS_PER_PASS: Final = 256
#: Frames a client may send per message of its message budget (`[limits] messages_per_second`,
#: `message_burst`): room for fragmented messages and keep-alive pings, not for a flood of tiny
#: frames, which is cut off with 1008 "too many frames".
FRAMES_PER_MESSAGE: Final = 4

#: A read this big may carry requests that cost milliseconds to apply (a 1,000-channel subscribe
#: takes ~10-20 ms). Such reads take turns through the server's `heavy_gate`, so that many at once
#: (bench/stress.py: 39 clients subscribing 1,000 channels each stalled every other client for
#: 0.7 s) cost the others one request's time per scheduler pass, not the sum of them all.
HEAVY_READ_BYTES: Final = 4096


class WebSocketPeer:
    """One client's WebSocket: a reader, a writer and a watchdog (pings, silence, stalled writes).

    "Not reading" is judged by bytes and time, never by how many replies a request earned: the
    outbox calls back once control bytes pile up past their bound, and the watchdog cuts a client
    whose socket accepted nothing for `write_stall_seconds` while a write was pending. Either way
    the client gets a close frame (1008 "not reading") if its socket takes it within the grace."""

    def __init__(self, stream: trio.abc.Stream, request: h11.Request, outbox: Outbox, *,
                 limits: Limits | None = None, remote: tuple[str, int] | None = None,
                 heavy_gate: trio.Lock | None = None) -> None:
        self.stream = stream
        self.heavy_gate = heavy_gate  # shared by every peer of one server: see HEAVY_READ_BYTES
        self._trailing = 0  # bytes the client sent along with its upgrade request
        self.on_first_message: Callable[[], object] | None = None  # called once, at the first message
        self.request = request
        self.outbox = outbox
        self.limits = limits or Limits()
        self._ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        self.remote = remote or _remote_address(stream)  # (host, port) of the client, for logs and tests
        outbox.on_overflow = self._control_overflow
        self._parts: list[str | bytes] = []  # bounded: max_message_bytes, max_message_fragments
        self._size = 0
        self._fragments = 0
        self.close_code: int | None = None
        self.session: Session | None = None
        self._scope = trio.CancelScope()
        self._reader_done = False
        self._last_heard = 0.0  # set when `run` starts: a peer is plain data until then
        self._sending_since: float | None = None  # when the write now in progress began
        self._writer_done = False
        # Frames, not messages: pings, pongs and empty continuation frames cost parsing but no
        # message token (the dialect's bucket sees only whole messages).
        limits = self.limits
        self._frames = TokenBucket(FRAMES_PER_MESSAGE * limits.messages_per_second,
                                   FRAMES_PER_MESSAGE * limits.message_burst, 0.0)

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
        await self.stream.send_all(self.accepted())
        if trailing:
            self._ws.receive_data(trailing)
            self._trailing = len(trailing)

    def accepted(self) -> bytes:
        """The 101 answer; from here on the peer speaks WebSocket."""
        return self._ws.send(AcceptConnection())

    def receive(self, data: bytes, session: Session, now: float = 0.0) -> bool:
        """Bytes from the client (b"" at EOF) into wsproto and on to `session` (`now`: for the
        frame bucket); False once the conversation is over. Pure: tests drive the framing with it."""
        self._ws.receive_data(data or None)
        return bool(self._handle_events(session, now=now))

    def shutdown(self, code: int, reason: str) -> None:
        """A planned close: the dialect's goodbye (if it has one) and then the close frame."""
        goodbye = getattr(self.session, "goodbye_frames", None)
        if goodbye is not None and self.close_code is None:
            for frame in goodbye():
                self.outbox.put_control(frame)
        self.close(code, reason)

    async def _watchdog(self) -> None:
        """Pings on a fixed grid; cuts a client silent for SILENT_CLIENT_SECONDS (no pong, no
        message: asleep, or half-open behind a NAT) at that moment, and one whose socket has
        accepted nothing for `write_stall_seconds`. Sleeps until the earliest of those times."""
        stall = self.limits.write_stall_seconds
        next_ping = trio.current_time() + PING_INTERVAL_SECONDS
        while True:
            now = trio.current_time()
            if now >= self._last_heard + SILENT_CLIENT_SECONDS:
                log.info("client %s silent for %.0f s: disconnecting", self.remote, SILENT_CLIENT_SECONDS)
                self.close(1001, "no pong")
                self._finish_soon()
                return
            sending_since = self._sending_since
            if sending_since is not None and now >= sending_since + stall:
                self._cut_off(f"accepted nothing for {stall:.0f} s")
                return
            if now >= next_ping:
                self.outbox.put_control(self._ws.send(Ping(b"mdgateway")))
                next_ping += PING_INTERVAL_SECONDS
            # With no write in progress, looking again `stall` from now is soon enough to catch the
            # exact deadline of any write that starts meanwhile (it cannot have stalled by then),
            # so a quiet client costs a wake-up per `stall` and per ping, nothing per write.
            stall_at = now + stall if sending_since is None else sending_since + stall
            await trio.sleep_until(min(next_ping, self._last_heard + SILENT_CLIENT_SECONDS, stall_at))

    def _control_overflow(self) -> None:
        """Replies and pongs piled up past their byte bound: the client reads nothing."""
        self._cut_off(f"{self.outbox.control_bytes} bytes of replies unread")

    def _cut_off(self, why: str) -> None:
        """End a client that is not reading: drop what it has not taken, send the close frame
        alone (if its socket takes it within the grace), free its subscriptions."""
        log.info("client %s is not reading (%s): disconnecting", self.remote, why)
        if self.close_code is None:
            self.close_code = NOT_READING[0]
        self.outbox.abort(close_frame(*NOT_READING))
        self._finish_soon()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Queue a close frame after whatever is pending; the writer sends it and stops."""
        if self.close_code is None:
            self.close_code = code
            self.outbox.close(close_frame(code, reason))

    async def run(self, session: Session) -> None:
        """Serve until the client closes, the connection breaks, or `close()` was called."""
        self.session = session
        self._last_heard = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._writer, session)
                nursery.start_soon(self._watchdog)
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
        # What the client sent along with its upgrade request is the first read, gated like any.
        if not await self._take(session, self._trailing):
            return
        while True:
            try:
                data = bytes(await self.stream.receive_some(_RECEIVE_CHUNK))
                self._last_heard = trio.current_time()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            # Heavy: a big read, or the end of a big message whose start came in earlier reads.
            heavy = len(data) + self._size
            self._ws.receive_data(data or None)
            if not await self._take(session, heavy) or not data:
                return

    async def _take(self, session: Session, size: int) -> bool:
        """Apply what wsproto holds now (`size`: the bytes it stands for); False once over."""
        if size >= HEAVY_READ_BYTES and self.heavy_gate is not None:
            # Acquiring yields, and a released gate wakes its next waiter only in a later
            # scheduler pass: heavy reads of many clients are applied one per pass, with the
            # upstream readers and client writers running between them.
            async with self.heavy_gate:
                return await self._drain(session)
        return await self._drain(session)

    async def _drain(self, session: Session) -> bool:
        """Everything wsproto can parse of what was read, `EVENTS_PER_PASS` at a time with a
        checkpoint between: 64 KiB of 6-byte frames is ~10,000 events (wsproto costs ~17 µs
        each), which in one step would stall every other client for 0.2 s."""
        while True:
            outcome = self._handle_events(session, trio.current_time(), EVENTS_PER_PASS)
            if outcome is not None:
                return outcome
            await trio.lowlevel.checkpoint()

    def _handle_events(self, session: Session, now: float, budget: int | None = None) -> bool | None:
        """Process what wsproto parsed: False once the conversation is over, True when all is
        handled, None when `budget` events were handled and more may wait (wsproto parses
        lazily, so what is left stays buffered until the next call). Every frame — pings and
        empty continuations included — takes a token of the connection's frame bucket."""
        for handled, event in enumerate(self._ws.events(), start=1):
            if self.close_code is not None:
                return False  # closing: nothing more the client sends is worth parsing
            if not self._frames.take(now):
                self._cut_for_frames()
                return False
            if isinstance(event, (TextMessage, BytesMessage)):
                if not self._collect(event, session):
                    return False
            elif isinstance(event, Ping):
                self.outbox.put_control(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._closed_by_client(event)
                return False
            if budget is not None and handled >= budget:
                return None
        return True

    def _cut_for_frames(self) -> None:
        log.info("client %s sent frames faster than %g/s: disconnecting", self.remote, self._frames.rate)
        self.close(1008, "too many frames")  # the reader stops; `run` then finishes the connection

    def _closed_by_client(self, event: CloseConnection) -> None:
        """The client's close frame, its EOF, or a protocol violation wsproto reported as a close."""
        if self.close_code is not None:
            return
        if self._ws.state is ConnectionState.OPEN:
            # wsproto's parse failure (1002, 1007): it sends nothing itself, so the client would
            # see only a dropped socket. It gets a close frame with our wording.
            code = int(event.code)
            self.close(code, _PROTOCOL_REASONS.get(code, "protocol error"))
            return
        self.close_code = event.code
        # A dropped connection (EOF, 1006) has no close handshake left to answer.
        answer = self._ws.send(event.response()) if self._ws.state is ConnectionState.REMOTE_CLOSING else None
        self.outbox.close(answer)

    def _collect(self, event: TextMessage | BytesMessage, session: Session) -> bool:
        data: str | bytes = bytes(event.data) if isinstance(event, BytesMessage) else event.data
        self._parts.append(data)
        self._size += len(data) if isinstance(data, bytes) else len(data.encode())  # bytes, not characters
        self._fragments += event.frame_finished  # empty fragments count too: each costs work
        if self._size > self.limits.max_message_bytes:
            self.close(*TOO_BIG)
            return False
        if self._fragments > self.limits.max_message_fragments:
            self.close(*TOO_MANY_FRAGMENTS)
            return False
        if event.message_finished:
            parts, self._parts, self._size, self._fragments = self._parts, [], 0, 0
            if self.on_first_message is not None:
                first, self.on_first_message = self.on_first_message, None
                first()
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
                    # No cancel scope per write: the watchdog reads this to judge a stalled socket.
                    self._sending_since = trio.current_time()
                    await self.stream.send_all(b"".join(frames))
                    self._sending_since = None
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
