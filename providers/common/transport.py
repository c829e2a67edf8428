"""How an adapter opens a WebSocket: the one place where the network is touched, so tests can
swap in memory streams (and fake time) without the adapter knowing.

A `Connector` takes the nursery that will own the connection's background reader, the URL and
the upgrade headers, and returns an open trio-websocket connection. Connect failures are mapped to
`TransportError` here. A refused upgrade is the exception: trio-websocket raises `ConnectionRejected`
from its reader task into that nursery, so `reconnect.classify` recognises it where sessions end.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable

import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
    wrap_client_stream,
)

Headers = list[tuple[bytes, bytes]]
Connector = Callable[[trio.Nursery, str, Headers], Awaitable[WebSocketConnection]]
StreamHandler = Callable[[trio.abc.Stream], Awaitable[None]]

#: Exceptions that mean "the network or the peer went away": retry with backoff.
TRANSPORT_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, HandshakeError, ConnectionClosed)


class TransportError(Exception):
    """Connecting failed, or the connection broke; `status` is the HTTP status of a refused upgrade."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


async def connect_tcp(nursery: trio.Nursery, url: str, headers: Headers) -> WebSocketConnection:
    """The production connector: a real socket (TLS for wss://)."""
    try:
        return await connect_websocket_url(nursery, url, extra_headers=headers)
    except TRANSPORT_ERRORS as exc:
        raise TransportError(f"cannot connect: {type(exc).__name__}") from None


def memory_connector(serve: StreamHandler, handler_nursery: trio.Nursery) -> Connector:
    """A connector whose every connection is a fresh in-memory stream pair, the far end served by
    `serve` (an emulator's stream handler) in `handler_nursery`. Works under `autojump_clock`."""

    async def connect(nursery: trio.Nursery, url: str, headers: Headers) -> WebSocketConnection:
        client_end, server_end = trio.testing.memory_stream_pair()
        handler_nursery.start_soon(serve, server_end)
        parts = urllib.parse.urlsplit(url)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            return await wrap_client_stream(
                nursery, client_end, parts.hostname or "localhost", resource, extra_headers=headers
            )
        except TRANSPORT_ERRORS as exc:
            raise TransportError(f"cannot connect: {type(exc).__name__}") from None

    return connect
