"""A flooding client against a whole gateway over memory streams, under fake time: each endpoint
answers with its protocol's error and then a close frame naming the reason, and a bystander client
on the same stream keeps receiving throughout."""

from __future__ import annotations

import json

import trio
from trio_websocket import ConnectionClosed

from gateway.config import parse
from providers.coinapi import server as coinapi_server
from tests.support.gateway import start_memory_gateway

HANG_GUARD = 30  # seconds of fake time; a hang guard, never a speed assertion

CONFIG = """
[limits]
messages_per_second = 1
message_burst = 3
flood_strikes = 2
[providers.coinapi]
kind = "coinapi"
emulate = true
emulator_rate = 50
[routes]
trade = ["coinapi"]
ticker = ["coinapi"]
"""


async def _trades(ws, count: int) -> int:
    seen = 0
    while seen < count:
        if json.loads(await ws.get_message())["type"] == "trade":
            seen += 1
    return seen


async def _drain(ws) -> tuple[list[dict], tuple[int, str]]:
    """Every message until the close, and the close frame's (code, reason)."""
    seen: list[dict] = []
    try:
        while True:
            seen.append(json.loads(await ws.get_message()))
    except ConnectionClosed as closed:
        return seen, (closed.reason.code, closed.reason.reason)


async def _closed(ws) -> tuple[int, str]:
    return (await _drain(ws))[1]


async def test_native_and_luzia_floods_end_in_a_close_while_a_bystander_keeps_receiving(autojump_clock, nursery):
    gateway = await start_memory_gateway(nursery, parse(CONFIG))
    with trio.fail_after(HANG_GUARD):
        bystander = await gateway.connect("/stream")
        await bystander.send_message('{"type":"subscribe","channels":["trade:binance:BTC/USDT"]}')
        assert json.loads(await bystander.get_message())["type"] == "subscribed"
        native = await gateway.connect("/stream")
        for _ in range(5):  # the burst, then two strikes in a row
            await native.send_message('{"type":"ping"}')
        replies = [json.loads(await native.get_message()) for _ in range(5)]
        assert [r.get("code", r["type"]) for r in replies] == ["pong"] * 3 + ["RATE_LIMITED"] * 2
        assert await _closed(native) == (1008, "too many messages")
        luzia = await gateway.connect("/v1/ws")
        assert json.loads(await luzia.get_message())["type"] == "connected"
        for _ in range(5):
            await luzia.send_message('{"type":"ping"}')
        replies = [json.loads(await luzia.get_message()) for _ in range(5)]
        assert [r.get("code", r["type"]) for r in replies] == ["pong"] * 3 + ["RATE_LIMITED"] * 2
        assert await _closed(luzia) == (1008, "too many messages")
        assert await _trades(bystander, 5) == 5  # still served
    counters = gateway.server.app.ctx.counters
    assert (counters.flood_closed, counters.rate_limited) == (2, 4)


async def test_a_coinapi_flood_and_a_silent_coinapi_socket_each_get_the_error_then_the_close(autojump_clock, nursery):
    gateway = await start_memory_gateway(nursery, parse(CONFIG))
    hello = json.dumps({"type": "hello", "subscribe_data_type": ["trade"], "subscribe_filter_symbol_id": ["BINANCE_"]})
    with trio.fail_after(HANG_GUARD):
        silent = await gateway.connect("/v1/")
        start = trio.current_time()
        flooder = await gateway.connect("/v1/")
        for _ in range(4):
            await flooder.send_message(hello)
        messages, close = await _drain(flooder)
        assert close == (1008, "Too many messages: at most 1 small ones per second (each 256 bytes counts as one).")
        assert messages[-1] == {"type": "error", "message": "Too many messages: at most 1 small ones per second (each 256 bytes counts as one)."}
        assert all(m["type"] == "trade" for m in messages[:-1])
        assert json.loads(await silent.get_message()) == {"type": "error", "message": coinapi_server.NO_FIRST_MESSAGE}
        assert trio.current_time() - start == 10.0  # limits.auth_deadline_seconds, the default
        assert await _closed(silent) == (1008, coinapi_server.NO_FIRST_MESSAGE)
