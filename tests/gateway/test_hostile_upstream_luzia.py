"""A hostile Luzia upstream, through the whole gateway over memory streams under fake time: the
gateway stays up, counts every hostile frame in `/healthz`, keeps the provider's free text out of
health and client messages, and a client of another stream keeps receiving; a run of malformed
frames reconnects the connection, and its clients are told of the gap."""

from __future__ import annotations

import json

import trio

from gateway.config import parse
from providers.common.counters import MALFORMED_RUN_LIMIT
from tests.providers.luzia.hostile import HOSTILE_FRAMES
from tests.support.gateway import MemoryGateway, start_memory_gateway

HANG_GUARD = 60  # fake seconds; a hang guard, never a speed assertion
KEY_TEXT = "lz_local_emulator"  # the key the gateway uses for an emulated Luzia (providers.registry)

CONFIG = """
[server]
allowed_hosts = ["gateway.test"]  # the name tests.support.gateway connects by
[providers.luzia]
kind = "luzia"
emulate = true
emulator_rate = 20
[routes]
ticker = ["luzia"]
quote = ["luzia"]
"""


async def _start(nursery) -> tuple[MemoryGateway, object]:
    gateway = await start_memory_gateway(nursery, parse(CONFIG))
    return gateway, gateway.gateway.emulators["luzia"]


async def _subscribe(ws, channel: str) -> None:
    await ws.send_message(json.dumps({"type": "subscribe", "channels": [channel]}))


async def _tickers(ws, count: int) -> list[dict]:
    """The next `count` tickers (other messages are returned among them)."""
    seen: list[dict] = []
    while sum(1 for m in seen if m["type"] == "ticker") < count:
        seen.append(json.loads(await ws.get_message()))
    return seen


async def _health(gateway: MemoryGateway) -> dict:
    status, _, body = await gateway.http("/healthz")
    assert status == 200
    return json.loads(body)


async def test_hostile_frames_at_full_rate_are_counted_and_other_clients_keep_receiving(autojump_clock, nursery):
    gateway, emulator = await _start(nursery)
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket() as ws_btc, gateway.websocket() as ws_eth:
            await _subscribe(ws_btc, "ticker:binance:BTC/USDT")
            await _subscribe(ws_eth, "ticker:coinbase:ETH/USDT")
            await _tickers(ws_btc, 1)
            emulator.rate = 0  # as fast as the emulator can send
            emulator.interleave = HOSTILE_FRAMES  # one before every ticker frame, on every connection
            btc = await _tickers(ws_btc, 50)
            eth = await _tickers(ws_eth, 50)
            health = await _health(gateway)
    luzia = health["providers"]["luzia"]
    assert luzia["state"] == "connected" and luzia["reconnects"] == 0
    assert 100 <= luzia["malformed_frames"] <= emulator.interleaved_sent  # the rest still in flight
    assert health["contained_errors"] == {}  # nothing reached an encoder it could crash
    for messages, symbol in ((btc, "BTC/USDT"), (eth, "ETH/USDT")):
        tickers = [m for m in messages if m["type"] == "ticker"]
        assert {m["symbol"] for m in tickers} == {symbol}
        assert all(m["last"] not in ("NaN", "Infinity") and len(m["last"]) < 40 for m in tickers)
        assert not [m for m in messages if m["type"] == "status" and m["state"] == "disconnected"]


async def test_a_run_of_malformed_frames_reconnects_and_its_clients_hear_of_the_gap(autojump_clock, nursery):
    gateway, emulator = await _start(nursery)
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket() as ws:
            await _subscribe(ws, "ticker:binance:BTC/USDT")
            await _tickers(ws, 1)
            for _ in range(MALFORMED_RUN_LIMIT):
                await emulator.inject('{"type":"ticker","exchange":')
            seen = await _tickers(ws, 2)
            health = await _health(gateway)
    gaps = [m for m in seen if m["type"] == "gap"]
    assert [(g["cause"], g["symbol"]) for g in gaps] == [("reconnect", "BTC/USDT")]
    luzia = health["providers"]["luzia"]
    assert luzia["reconnects"] == 1 and luzia["malformed_frames"] == MALFORMED_RUN_LIMIT
    assert f"{MALFORMED_RUN_LIMIT} malformed frames in a row" in luzia["last_error"]


async def test_the_providers_free_text_reaches_neither_health_nor_clients(autojump_clock, nursery):
    gateway, emulator = await _start(nursery)
    said = f"Internal error for key {KEY_TEXT}: <script>alert(1)</script>"
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket() as ws:
            await _subscribe(ws, "ticker:binance:BTC/USDT")
            await _tickers(ws, 1)
            await emulator.inject(json.dumps({"type": "error", "code": "INVALID_REQUEST", "message": said}))
            await emulator.inject(json.dumps({"type": "error", "code": "SERVER_SHUTDOWN", "message": said}))
            seen = await _tickers(ws, 2)  # after the reconnect the shutdown caused
            health = await _health(gateway)
    texts = json.dumps(health) + json.dumps(seen)
    assert "<script>" not in texts and KEY_TEXT not in texts and "Internal error" not in texts
    assert "SERVER_SHUTDOWN" in health["providers"]["luzia"]["last_error"]
    statuses = [m for m in seen if m["type"] == "status" and m["state"] == "disconnected"]
    assert statuses and all("SERVER_SHUTDOWN" in m["reason"] for m in statuses)
