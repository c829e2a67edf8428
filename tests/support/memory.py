"""A `Connector` over in-memory streams: every connection is a fresh stream pair whose far end
is served by an emulator's stream handler. Works under `autojump_clock`; tests only (it uses
`trio.testing`, which production code never imports)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable

import trio
import trio.testing
from trio_websocket import WebSocketConnection, wrap_client_stream

from providers.common.transport import MAX_PROVIDER_MESSAGE, Connector, Headers

StreamHandler = Callable[[trio.abc.Stream], Awaitable[None]]


def memory_connector(serve: StreamHandler, handler_nursery: trio.Nursery) -> Connector:
    async def connect(nursery: trio.Nursery, url: str, headers: Headers) -> WebSocketConnection:
        client_end, server_end = trio.testing.memory_stream_pair()
        handler_nursery.start_soon(serve, server_end)
        parts = urllib.parse.urlsplit(url)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return await wrap_client_stream(
            nursery, client_end, parts.hostname or "localhost", resource, extra_headers=headers, max_message_size=MAX_PROVIDER_MESSAGE
        )

    return connect
