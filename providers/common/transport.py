"""The one place an adapter touches the network: an upstream WebSocket, with every library
exception (trio-websocket, wsproto, OSError, Trio's broken streams) mapped here, once, into
`providers.common.errors.TransportError`. Nothing outside this module imports trio-websocket's
client side, so adapters and the reconnect loop only ever see the project's own errors.

`open_transport(connector, url, headers)` is an async context manager yielding a `Transport`.
It owns the nursery of the library's background reader, because trio-websocket raises a refused
upgrade (`ConnectionRejected`) from that reader task, into that nursery: mapping it here is the
only way it arrives as `TransportError(status=...)`. Leaving the block closes politely: a close
frame and `close_timeout` seconds for the reply (0 when the peer is believed dead); the reader
is shielded until then, so even a cancelled session reads that reply instead of timing out.

A `Connector` opens the library connection; `connect_tcp` is the real one, tests pass one over
memory streams (`tests.support.memory`) so fake time drives everything.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)

from providers.common.errors import TransportError
from providers.common.outliving import start_outliving_nursery

Headers = list[tuple[bytes, bytes]]
Connector = Callable[[trio.Nursery, str, Headers], Awaitable[WebSocketConnection]]

#: A peer that does not answer our close frame within this long is cut off.
CLOSE_TIMEOUT: Final = 1.0
#: For a server side whose reader task is cancelled along with it (an emulator being stopped): no
#: reply could be read, so the close frame gets this long to leave and nobody waits for an answer.
#: (`open_transport` keeps its own reader alive through the close instead.)
CANCELLED_CLOSE_PATIENCE: Final = 0.05
#: Library exceptions that mean "the network or the peer went away".
_LIBRARY_ERRORS: Final = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, HandshakeError, ConnectionClosed)


def mapped(exc: BaseException) -> BaseException:
    """The project's error for a library exception (others are returned as they are)."""
    if isinstance(exc, ConnectionRejected):
        return TransportError(f"upgrade refused with HTTP {exc.status_code}", status=exc.status_code)
    if isinstance(exc, ConnectionClosed):
        code = exc.reason.code if exc.reason is not None else None
        return TransportError(f"connection closed (code {code})", code=code)
    if isinstance(exc, _LIBRARY_ERRORS):
        return TransportError(f"connection failed: {type(exc).__name__}")
    return exc


def _mapped_group(group: BaseExceptionGroup) -> BaseExceptionGroup:
    """The same group with every library leaf replaced by its `TransportError`."""
    leaves = [_mapped_group(e) if isinstance(e, BaseExceptionGroup) else mapped(e) for e in group.exceptions]
    return group.derive(leaves)


class Transport:
    """One open upstream WebSocket; every method raises only `TransportError` (and Cancelled)."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self.peer_dead = False  # set by liveness code: do not wait for a close reply

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except _LIBRARY_ERRORS as exc:
            raise mapped(exc) from None

    async def send(self, text: str) -> None:
        try:
            await self._ws.send_message(text)
        except _LIBRARY_ERRORS as exc:
            raise mapped(exc) from None

    async def ping(self) -> None:
        """A transport ping; returns when its pong arrived."""
        try:
            await self._ws.ping()
        except _LIBRARY_ERRORS as exc:
            raise mapped(exc) from None

    @property
    def closed(self) -> bool:
        return self._ws.closed is not None

    async def close(self, patience: float = CLOSE_TIMEOUT) -> None:
        """The polite close: a close frame and up to `patience` seconds for the reply. Shielded,
        because it runs while the session is being cancelled; a cancelled close still closes."""
        if self.peer_dead:
            patience = 0.0
        with trio.move_on_after(patience, shield=True), contextlib.suppress(*_LIBRARY_ERRORS):
            await self._ws.aclose()


@asynccontextmanager
async def open_transport(
    connector: Connector, url: str, headers: Headers, *, close_timeout: float = CLOSE_TIMEOUT
) -> AsyncIterator[Transport]:
    """Connect; yield the transport; close politely on the way out. Library errors, wherever they
    surface (the connect, the reader task, the close), leave as `TransportError`."""
    # The library's reader task runs in a nursery that outlives the session's cancellation, so a
    # session cancelled from outside (a shutdown, a retired slot) still reads the reply to its
    # close frame; it stops once the close is over, or at once if anything fails before that.
    reader_may_stop = trio.Event()
    try:
        async with trio.open_nursery() as host:
            try:
                reader = await start_outliving_nursery(host, reader_may_stop)
                try:
                    ws = await connector(reader, url, headers)
                except _LIBRARY_ERRORS as exc:
                    raise mapped(exc) from None
                transport = Transport(ws)
                try:
                    yield transport
                finally:
                    await transport.close(close_timeout)
            finally:
                reader_may_stop.set()
    except BaseExceptionGroup as group:
        raise _mapped_group(group) from None


#: The largest provider message read. Every message below it is the decoders' business (decoded,
#: or counted as malformed and skipped); one above it makes the library close the connection with
#: 1009, which then reconnects — the one frame that can end a connection. Real messages are far
#: smaller (a CoinAPI book50 snapshot is a few KiB); 16 MiB bounds the memory one frame may take.
MAX_PROVIDER_MESSAGE: Final = 16 * 1024 * 1024


async def connect_tcp(nursery: trio.Nursery, url: str, headers: Headers) -> WebSocketConnection:
    """The production connector: a real socket (TLS for wss://)."""
    return await connect_websocket_url(nursery, url, extra_headers=headers, max_message_size=MAX_PROVIDER_MESSAGE)
