"""The gateway's one port: each TCP connection carries either plain HTTP requests or one WebSocket.

h11 parses the request. An `Upgrade: websocket` request goes to the app's WebSocket route for its
path (a dialect session) and the connection becomes a `WebSocketPeer`; anything else is answered by
the app's HTTP routes, with keep-alive. This module owns sockets and timeouts, never protocol logic.
"""

from __future__ import annotations

import logging
import socket
import urllib.parse
from dataclasses import dataclass, field
from typing import Protocol

import h11
import msgspec
import trio

from gateway.config import Limits, ServerConfig
from gateway.outbox import Outbox
from gateway.wspeer import Session, WebSocketPeer

log = logging.getLogger(__name__)

#: A client that has not sent a complete request head by then is dropped (slowloris guard).
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_REQUEST_HEAD = 16 * 1024
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


def parse_request(request: h11.Request) -> HttpRequest:
    target = urllib.parse.urlsplit(request.target.decode("latin-1"))
    query = dict(urllib.parse.parse_qsl(target.query, keep_blank_values=True))
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
    return HttpRequest(request.method.decode("ascii"), urllib.parse.unquote(target.path) or "/", query, headers)


def is_websocket_upgrade(request: HttpRequest) -> bool:
    return request.headers.get("upgrade", "").lower() == "websocket"


class Server:
    """Serves `app` on one listener; tracks live WebSocket peers so shutdown can close them."""

    def __init__(self, app: App, server: ServerConfig | None = None, limits: Limits | None = None) -> None:
        self.app = app
        self.config = server or ServerConfig()
        self.limits = limits or Limits()
        self.client_buffer = self.config.client_buffer
        self.socket_buffer = self.config.client_socket_buffer
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

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        if self.socket_buffer and isinstance(stream, trio.SocketStream):
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_buffer)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        try:
            while True:
                request = await self._next_request(stream, conn)
                if request is None:
                    return
                parsed = parse_request(request)
                if is_websocket_upgrade(parsed):
                    await self._upgrade(stream, conn, request, parsed)
                    return
                response = await self.app.http(parsed)
                if not await self._respond(stream, conn, response, head_only=parsed.method == "HEAD"):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except h11.RemoteProtocolError as exc:
            await _send_error(stream, conn, exc.error_status_hint, str(exc))
        except Exception:
            log.exception("connection from a client failed; closing only that connection")
        finally:
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await stream.aclose()

    async def _next_request(self, stream: trio.abc.Stream, conn: h11.Connection) -> h11.Request | None:
        """The next request head, or None when the client is done or too slow."""
        with trio.move_on_after(REQUEST_TIMEOUT_SECONDS):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(bytes(await stream.receive_some(_RECEIVE_CHUNK)))
                elif isinstance(event, h11.Request):
                    return event
                elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return None
        return None

    async def _upgrade(self, stream: trio.abc.Stream, conn: h11.Connection, request: h11.Request, parsed: HttpRequest) -> None:
        peer = WebSocketPeer(stream, request, Outbox(limit=self.client_buffer))
        problem = peer.check_upgrade()
        if problem is not None:
            await _send_error(stream, conn, 400, problem)
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
        with trio.move_on_after(REQUEST_TIMEOUT_SECONDS) as body_deadline:
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


async def _send_error(stream: trio.abc.Stream, conn: h11.Connection, status: int, reason: str) -> None:
    body = reason.encode()
    headers = [("content-type", "text/plain"), ("content-length", str(len(body))), ("connection", "close")]
    try:
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
        await stream.send_all(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
    except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
