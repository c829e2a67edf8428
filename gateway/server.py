"""The gateway's one port: each TCP connection carries either plain HTTP requests or one WebSocket.

h11 parses the request. An `Upgrade: websocket` request goes to the app's WebSocket route for its
path (a dialect session) and the connection becomes a `WebSocketPeer`; anything else is answered by
the app's HTTP routes, with keep-alive. This module owns sockets, timeouts and the edge's caps
(`[limits]`), never protocol logic; who may connect is decided by `gateway.guard`, and no route
runs for a request that policy refused. A malformed request is answered with its HTTP status in
the project's own words, never with a traceback in the log, and never echoes client input.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

import h11
import msgspec
import trio

from gateway.config import Limits, ServerConfig
from gateway.guard import BUSY, WRONG_ORIGIN, ConnectionCount, Policy, Refusal, check_handshake, parse_target
from gateway.outbox import Outbox
from gateway.wspeer import Session, WebSocketPeer

log = logging.getLogger(__name__)

#: A connection over a cap gets this long to send its request head before its 503 (see
#: `_refuse_connection`); short, because such a connection is not counted against any cap.
BUSY_READ_SECONDS = 1.0
_RECEIVE_CHUNK = 65536


@dataclass
class HttpRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names


@dataclass
class HttpResponse:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(status: int, body: object, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    return HttpResponse(status, msgspec.json.encode(body), headers=headers or [])


class App(Protocol):
    def websocket_session(self, peer: WebSocketPeer, request: HttpRequest) -> Session | HttpResponse:
        """The dialect session for this upgrade, or the HTTP response refusing it."""

    async def http(self, request: HttpRequest) -> HttpResponse: ...


def is_websocket_upgrade(request: HttpRequest) -> bool:
    return request.headers.get("upgrade", "").lower() == "websocket"


class _HeadTooLarge(h11.RemoteProtocolError):
    """The request head grew past `max_request_head_bytes`, however its bytes arrived."""


class Server:
    """Serves `app` on one listener; tracks live WebSocket peers so shutdown can close them.

    Before any route runs, every connection is counted against the connection caps, every request
    must fit the head limit, have an origin-form target and a Host this gateway answers to, and an
    upgrade must be a valid RFC 6455 handshake from an allowed Origin (`gateway.guard`)."""

    def __init__(self, app: App, server: ServerConfig | None = None, limits: Limits | None = None) -> None:
        self.app = app
        self.config = server or ServerConfig()
        self.limits = limits or Limits()
        self.client_buffer = self.config.client_buffer
        self.socket_buffer = self.config.client_socket_buffer
        self.policy = Policy.build(self.config.host, self.config.allowed_hosts, self.config.allowed_origins)
        self.connections = ConnectionCount(self.limits.max_connections, self.limits.max_connections_per_address)
        self._refusing = 0  # over-cap connections being answered 503 right now
        self._unproven: dict[_Slot, None] = {}  # ordered oldest first: see `_evict_unproven`
        self.heavy_gate = trio.Lock()  # heavy client reads take turns (wspeer.HEAVY_READ_BYTES)
        self.peers: set[WebSocketPeer] = set()
        self._peer_left = trio.Event()
        self.port: int | None = None

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self.handle_stream, listeners)
            task_status.started(self.port)

    def close_all(self, code: int, reason: str) -> None:
        """A planned shutdown: every client gets its dialect's goodbye, then a close frame."""
        for peer in list(self.peers):
            peer.shutdown(code, reason)

    async def handle_stream(self, stream: trio.abc.Stream, address: str | None = None) -> None:
        """One accepted connection; `address` is the client's IP (read from the socket when not
        given: tests over memory streams pass one to exercise the per-address cap)."""
        address = address if address is not None else _peer_host(stream)
        refusal = self.connections.admit(address)
        if refusal is not None and await self._evict_unproven(None if refusal is BUSY else address):
            refusal = self.connections.admit(address)
        try:
            if refusal is None:
                await self._serve_admitted(stream, address)
            elif self._refusing < self.limits.max_connections:  # answering refusals is bounded too
                await self._refuse_connection(stream, refusal)
        finally:
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await stream.aclose()

    async def _serve_admitted(self, stream: trio.abc.Stream, address: str | None) -> None:
        slot = _Slot(address)
        self._unproven[slot] = None
        try:
            with slot.scope:
                await self._serve(stream, slot)
        finally:
            self._unproven.pop(slot, None)
            if not slot.evicted:  # an evicted slot is handed over by its evictor (`_evict_unproven`)
                self.connections.release(address)
            slot.gone.set()

    async def _evict_unproven(self, address: str | None) -> bool:
        """At a cap, make room by closing the oldest connection (of `address`, or of anyone when
        None) that has proven nothing yet: a request head still arriving, an idle keep-alive, a
        CoinAPI socket that has not sent its hello. Keyless sockets then cannot lock out a client
        with a key: its new connection takes the place of one of theirs, and once it is served
        (or has sent its first message) it is never evicted. False when there is none."""
        victim = next((slot for slot in self._unproven if address is None or slot.address == address), None)
        if victim is None:
            return False
        del self._unproven[victim]
        victim.evicted = True
        victim.scope.cancel()
        with trio.move_on_after(EVICTION_WAIT_SECONDS):
            await victim.gone.wait()
        if not victim.gone.is_set():
            victim.evicted = False  # not gone in time: it releases its own place when it goes
            return False
        # A hand-over: the place is released here and the caller admits itself with no await in
        # between, so a newcomer that evicted nobody cannot take the place freed for this one.
        self.connections.release(victim.address)
        return True

    async def _refuse_connection(self, stream: trio.abc.Stream, refusal: Refusal) -> None:
        """Over a connection cap: read the request head briefly (a socket closed with unread input
        is reset, and the client would miss the answer), then 503 with Retry-After."""
        self._refusing += 1
        try:
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_request_head_bytes)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
                await self._next_request(stream, conn, BUSY_READ_SECONDS)
            await _send_refusal(stream, refusal)
        finally:
            self._refusing -= 1

    async def _serve(self, stream: trio.abc.Stream, slot: _Slot) -> None:
        if self.socket_buffer and isinstance(stream, trio.SocketStream):
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_buffer)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_request_head_bytes)
        try:
            while True:
                self._unproven[slot] = None  # waiting for a request: evictable at a cap
                request = await self._next_request(stream, conn, self.limits.request_timeout_seconds)
                if request is None:
                    return
                self._unproven.pop(slot, None)  # a request is being served
                parsed = self._admit(request)
                if isinstance(parsed, Refusal):
                    await _send_refusal(stream, parsed)
                    return
                if is_websocket_upgrade(parsed):
                    await self._upgrade(stream, conn, request, parsed, slot)
                    return
                response = await self.app.http(parsed)
                if not await self._respond(stream, conn, response, head_only=parsed.method == "HEAD"):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except h11.RemoteProtocolError as exc:
            status = 431 if isinstance(exc, _HeadTooLarge) else exc.error_status_hint
            await _send_refusal(stream, Refusal(status, _WORDING.get(status, "malformed HTTP request")))
        except Exception:
            log.exception("connection from a client failed; closing only that connection")

    def _admit(self, request: h11.Request) -> HttpRequest | Refusal:
        """The request as routes see it, or why no route may see it."""
        target = parse_target(request.target.decode("latin-1"))
        if isinstance(target, Refusal):
            return target
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        refusal = self.policy.check_host(headers.get("host"))
        if refusal is not None:
            return refusal
        parsed = HttpRequest(request.method.decode("ascii", "replace"), target.path, target.query, headers)
        origins = [v.decode("latin-1") for k, v in request.headers if k == b"origin"]
        if len(origins) > 1:
            return WRONG_ORIGIN
        origin = origins[0] if origins else None
        if not is_websocket_upgrade(parsed):
            return self.policy.check_page(origin, headers.get("sec-fetch-site")) or parsed
        return check_handshake(parsed.method, headers) or self.policy.check_origin(origin) or parsed

    async def _next_request(self, stream: trio.abc.Stream, conn: h11.Connection, timeout: float) -> h11.Request | None:
        """The next request head, or None when the client is done or too slow.

        h11's own bound covers only a head still incomplete when more bytes are needed; a whole
        oversized head arriving in one read would pass it, so the head's bytes are counted here."""
        limit = self.limits.max_request_head_bytes
        buffered = len(conn.trailing_data[0])  # pipelined bytes already read belong to this head
        with trio.move_on_after(timeout):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    if buffered > limit:
                        raise _HeadTooLarge("request head too large", 431)
                    data = bytes(await stream.receive_some(_RECEIVE_CHUNK))
                    buffered += len(data)
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    if buffered - len(conn.trailing_data[0]) > limit:
                        raise _HeadTooLarge("request head too large", 431)
                    return event
                elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return None
        return None

    async def _upgrade(self, stream: trio.abc.Stream, conn: h11.Connection, request: h11.Request, parsed: HttpRequest,
                       slot: _Slot) -> None:
        outbox = Outbox(limit=self.client_buffer, control_bytes=self.limits.max_pending_control_bytes)
        peer = WebSocketPeer(stream, request, outbox, limits=self.limits, heavy_gate=self.heavy_gate)
        if peer.check_upgrade() is not None:
            await _send_refusal(stream, Refusal(400, "not a valid WebSocket upgrade"))
            return
        session = self.app.websocket_session(peer, parsed)
        if isinstance(session, HttpResponse):
            await self._respond(stream, conn, session)
            return
        # Consume the request's end so h11 hands over whatever the client sent after the head.
        while conn.next_event() not in (h11.PAUSED, h11.NEED_DATA):
            pass
        trailing, _ = conn.trailing_data
        try:
            await peer.accept(trailing)
        except BaseException:
            session.on_close()  # it may already hold subscriptions or a connection slot
            raise
        if getattr(session, "authenticates_on_first_message", False):
            # CoinAPI: the key comes with the hello, so until then the socket has proven nothing.
            self._unproven[slot] = None
            peer.on_first_message = lambda: self._unproven.pop(slot, None)
        self.peers.add(peer)
        try:
            await peer.run(session)
        finally:
            self.peers.discard(peer)
            self._peer_left.set()
            self._peer_left = trio.Event()

    async def wait_all_closed(self) -> None:
        """Until no WebSocket client is connected (re-checked each time one leaves, no polling)."""
        while self.peers:
            await self._peer_left.wait()

    async def _respond(self, stream: trio.abc.Stream, conn: h11.Connection, response: HttpResponse, head_only: bool = False) -> bool:
        """Send `response` (without its body for HEAD); True when the connection can carry another request."""
        with trio.move_on_after(self.limits.request_timeout_seconds) as body_deadline:
            while conn.their_state is h11.SEND_BODY:  # we read no request bodies: skip to the end
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(bytes(await stream.receive_some(_RECEIVE_CHUNK)))
        if body_deadline.cancelled_caught:
            return False
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            *response.headers,
        ]
        await stream.send_all(conn.send(h11.Response(status_code=response.status, headers=headers)))
        body = b"" if head_only else conn.send(h11.Data(data=response.body))
        await stream.send_all(body + conn.send(h11.EndOfMessage()))
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
            return False
        conn.start_next_cycle()
        return True


#: The project's wording for h11's refusals (h11's own text names parser internals).
_WORDING = {400: "malformed HTTP request", 431: "request head too large"}


#: How long a new connection waits for the one it evicted to be gone (its close is shielded).
EVICTION_WAIT_SECONDS = 1.0


class _Slot:
    """One admitted connection, as the eviction of unproven connections sees it."""

    __slots__ = ("address", "evicted", "gone", "scope")

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.evicted = False
        self.scope = trio.CancelScope()
        self.gone = trio.Event()


async def _send_refusal(stream: trio.abc.Stream, refusal: Refusal) -> None:
    """A refusal written directly (h11 cannot answer a head it never finished parsing), then the
    connection closes."""
    body = msgspec.json.encode({"message": refusal.message})
    lines = [f"HTTP/1.1 {refusal.status} {HTTPStatus(refusal.status).phrase}", "content-type: application/json",
             f"content-length: {len(body)}", "connection: close", *(f"{k}: {v}" for k, v in refusal.headers)]
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all("\r\n".join(lines).encode("ascii") + b"\r\n\r\n" + body)


def _peer_host(stream: trio.abc.Stream) -> str | None:
    """The client's IP address, for the per-address cap (None when the stream has no socket)."""
    try:
        return str(stream.socket.getpeername()[0]) if isinstance(stream, trio.SocketStream) else None
    except OSError:
        return None
