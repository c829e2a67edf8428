"""A whole gateway over memory streams: the configured emulators in-process, adapters reaching
them through `memory_connector`, and clients handed straight to the server's stream handler.
Everything runs under `autojump_clock`, so tests of the full path assert exact fake times and
never wait on real sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio
import trio.testing
from trio_websocket import WebSocketConnection, wrap_client_stream

from gateway.app import Gateway, UpstreamRoutes, run_gateway
from gateway.config import Config
from gateway.server import Server
from providers.registry import KINDS, Emulator
from tests.support.memory import memory_connector


async def memory_upstream(config: Config, nursery: trio.Nursery) -> tuple[dict[str, Emulator], UpstreamRoutes]:
    emulators: dict[str, Emulator] = {}
    routes: UpstreamRoutes = {}
    for name, provider in config.providers.items():
        assert provider.emulate, "a memory gateway has only emulated providers"
        kind = KINDS[provider.kind]
        emulators[name] = emulator = kind.make_emulator(provider.emulator_rate)
        routes[name] = (f"ws://{name}.test{kind.emulator_path}", memory_connector(emulator.handle_stream, nursery))
    return emulators, routes


def _single(group: BaseExceptionGroup) -> BaseException:
    """What `trio_websocket.open_websocket` does: one failure comes out as itself."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    return leaf


@dataclass
class MemoryClient:
    """Reaches one `Server` over memory streams, as a client on the network would."""

    server: Server
    nursery: trio.Nursery

    def stream(self) -> trio.abc.Stream:
        client_end, server_end = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.server.handle_stream, server_end)
        return client_end

    async def connect(self, path: str = "/stream", headers: list[tuple[bytes, bytes]] | None = None) -> WebSocketConnection:
        """A trio-websocket client (it answers pings itself), living in the test's nursery."""
        return await wrap_client_stream(self.nursery, self.stream(), "127.0.0.1", path, extra_headers=headers)

    @asynccontextmanager
    async def websocket(
        self, path: str = "/stream", headers: list[tuple[bytes, bytes]] | None = None
    ) -> AsyncIterator[WebSocketConnection]:
        """Like `open_websocket_url`: its own reader nursery, closed on the way out; a refused
        upgrade raises `ConnectionRejected` itself."""
        try:
            async with trio.open_nursery() as nursery:
                ws = await wrap_client_stream(nursery, self.stream(), "127.0.0.1", path, extra_headers=headers)
                try:
                    yield ws
                finally:
                    await ws.aclose()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise _single(group) from None

    async def http(self, path: str, extra: bytes = b"", method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        """One HTTP/1.1 request: (status, lower-case headers, body)."""
        stream = self.stream()
        request = b"%s %s HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n%s\r\n"
        await stream.send_all(request % (method.encode(), path.encode(), extra))
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body


@dataclass
class MemoryGateway(MemoryClient):
    gateway: Gateway | None = None

    @property
    def hub(self):
        return self.gateway.hub


async def start_memory_gateway(nursery: trio.Nursery, config: Config, **options) -> MemoryGateway:
    gateway = await nursery.start(partial(run_gateway, config, upstream=memory_upstream, listen=False, **options))
    return MemoryGateway(gateway.server, nursery, gateway)
