"""Helpers for the Luzia-endpoint tests: a gateway config with both providers emulated, the whole
gateway over memory streams (fake time), a JSON GET over it or over loopback, and JSON WebSocket
helpers."""

from __future__ import annotations

import json

import trio

from gateway.config import parse
from tests.support.gateway import MemoryGateway, start_memory_gateway

HANG_GUARD = 30  # seconds (fake ones, mostly); a hang guard, never a speed assertion

_CONFIG = """
{server}
[endpoints.luzia]
tier = "local"
max_subscriptions = {max_subscriptions}
max_connections = {max_connections}
rest_wait_seconds = {rest_wait}
[providers.luzia]
kind = "luzia"
emulate = true
emulator_rate = 100
[providers.coinapi]
kind = "coinapi"
emulate = true
emulator_rate = 100
[routes]
trade = ["coinapi"]
{ticker_route}
"""


def config_text(route: str | None = "luzia", *, max_subscriptions=3, max_connections=2, rest_wait=20, keys_env=None) -> str:
    """`route`: the provider serving tickers (None: nothing routed for tickers). `rest_wait` is
    only a cap: REST answers as soon as the first value is in."""
    return _CONFIG.format(
        server=f'[server]\nlocal_keys_env = "{keys_env}"' if keys_env else "",
        max_subscriptions=max_subscriptions,
        max_connections=max_connections,
        rest_wait=rest_wait,
        ticker_route=f'ticker = ["{route}"]' if route else "",
    )


async def start(nursery, route: str | None = "luzia", environ: dict[str, str] | None = None, **options) -> MemoryGateway:
    """A whole gateway over memory streams (run it under `autojump_clock`)."""
    return await start_memory_gateway(nursery, parse(config_text(route, **options)), environ=environ)


async def get(gateway: MemoryGateway, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
    """(status, lower-case headers, decoded JSON body) of one GET over memory streams."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items()).encode()
    status, fields, body = await gateway.http(path, extra)
    return status, fields, json.loads(body)


async def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
    """(status, lower-case headers, decoded JSON body) of one GET on its own loopback connection."""
    lines = [f"GET {path} HTTP/1.1", "host: 127.0.0.1", "connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in parsed.items()}, json.loads(body)


async def send(ws, message: object) -> None:
    await ws.send_message(message if isinstance(message, str) else json.dumps(message))


async def receive(ws) -> dict:
    return json.loads(await ws.get_message())


async def replies(ws, count: int) -> list[dict]:
    """The next `count` messages that are not tickers (replies come in order among tickers)."""
    out = []
    while len(out) < count:
        message = await receive(ws)
        if message["type"] != "ticker":
            out.append(message)
    return out
