"""Every protocol, fed by either provider: {native, Luzia, CoinAPI client} × {routes → Luzia,
routes → CoinAPI}. Each cell receives correct data or the protocol's documented refusal; switching
`[routes]` changes nothing for an app but the native stream's `provider` field.
The whole gateway over memory streams under fake time (both emulators in-process); waits are
bounded by a hang guard only, in fake seconds.
"""

import json
from contextlib import AsyncExitStack

import pytest
import trio
from trio_websocket import ConnectionClosed

from gateway.config import parse
from tests.support.gateway import start_memory_gateway

HANG_GUARD = 30

CONFIG = """
[providers.luzia]
kind = "luzia"
emulate = true
emulator_rate = 40
[providers.coinapi]
kind = "coinapi"
emulate = true
emulator_rate = 40
[routes]
trade = ["{p}"]
quote = ["{p}"]
ticker = ["{p}"]
"""
BTC = ("binance", "BTC/USDT")


async def _gateway(nursery, provider):
    return await start_memory_gateway(nursery, parse(CONFIG.format(p=provider)))


async def _next(ws, predicate, limit=2000):
    for _ in range(limit):
        message = json.loads(await ws.get_message())
        if predicate(message):
            return message
    raise AssertionError("not received")


def _is_market(kind):
    return lambda m: m.get("type") == kind and (m.get("exchange"), m.get("symbol")) == BTC


@pytest.mark.parametrize("provider", ["luzia", "coinapi"])
async def test_native_client(autojump_clock, nursery, provider):
    gateway = await _gateway(nursery, provider)
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket("/stream") as ws:
            await ws.send_message(json.dumps({"type": "subscribe", "channels": [
                "quote:binance:BTC/USDT", "ticker:binance:BTC/USDT", "trade:binance:BTC/USDT"]}))
            replies = [json.loads(await ws.get_message()) for _ in range(3)]
            quote = await _next(ws, _is_market("quote"))
            ticker = await _next(ws, _is_market("ticker"))
    assert quote["provider"] == ticker["provider"] == provider
    assert quote["bid_price"] is not None and quote["ask_price"] is not None
    if provider == "luzia":  # a ticker-only provider: quotes from ticker bid/ask, sizes unknown
        assert quote["bid_size"] is None and quote["ask_size"] is None
        assert [r["type"] for r in replies] == ["subscribed", "subscribed", "error"]
        assert replies[2]["code"] == "NO_ROUTE" and "luzia" in replies[2]["message"] and "trade" in replies[2]["message"]
    else:
        assert [r["type"] for r in replies] == ["subscribed"] * 3
        assert quote["bid_size"] is not None


@pytest.mark.parametrize("provider", ["luzia", "coinapi"])
async def test_luzia_client(autojump_clock, nursery, provider):
    gateway = await _gateway(nursery, provider)
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket("/v1/ws") as ws:
            assert json.loads(await ws.get_message())["type"] == "connected"
            await ws.send_message('{"type":"subscribe","channels":["ticker:binance:BTC-USDT"]}')
            assert json.loads(await ws.get_message()) == {"type": "subscribed", "channel": "ticker:binance:BTC-USDT"}
            ticker = await _next(ws, lambda m: m["type"] == "ticker" and m["data"]["last"] is not None)
    assert (ticker["exchange"], ticker["symbol"]) == BTC
    assert ticker["data"]["symbol"] == "BTC/USDT" and ticker["data"]["close"] == ticker["data"]["last"]


@pytest.mark.parametrize("provider", ["luzia", "coinapi"])
async def test_coinapi_client_quotes(autojump_clock, nursery, provider):
    gateway = await _gateway(nursery, provider)
    hello = {"type": "hello", "apikey": "73034021-0000-0000-0000-000000000000", "subscribe_data_type": ["quote"],
             "subscribe_filter_symbol_id": ["BINANCE_SPOT_BTC_USDT$"]}
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket("/v1/") as ws:
            await ws.send_message(json.dumps(hello))
            quote = await _next(ws, lambda m: m["type"] == "quote")
    assert quote["symbol_id"] == "BINANCE_SPOT_BTC_USDT"
    assert quote["bid_price"] > 0 and quote["ask_price"] > 0


@pytest.mark.parametrize("provider", ["luzia", "coinapi"])
async def test_coinapi_client_trades(autojump_clock, nursery, provider):
    gateway = await _gateway(nursery, provider)
    hello = {"type": "hello", "apikey": "k", "subscribe_data_type": ["trade"],
             "subscribe_filter_symbol_id": ["BINANCE_SPOT_BTC_USDT$"]}
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket("/v1/") as ws:
            await ws.send_message(json.dumps(hello))
            first = json.loads(await ws.get_message())
            if provider == "luzia":  # trades cannot come from a ticker-only provider: refused, then closed
                assert first["type"] == "error"
                assert "trade" in first["message"] and "luzia" in first["message"]
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
                return
            trade = first if first["type"] == "trade" else await _next(ws, lambda m: m["type"] == "trade")
    assert trade["symbol_id"] == "BINANCE_SPOT_BTC_USDT" and trade["price"] > 0


async def test_ten_clients_in_three_protocols_share_one_upstream_subscription(autojump_clock, nursery):
    gateway = await _gateway(nursery, "luzia")
    luzia = gateway.gateway.emulators["luzia"]
    hello = json.dumps({"type": "hello", "apikey": "k", "subscribe_data_type": ["quote"],
                        "subscribe_filter_symbol_id": ["BINANCE_SPOT_BTC_USDT$"]})
    with trio.fail_after(HANG_GUARD):
        async with AsyncExitStack() as stack:
            for _ in range(4):
                ws = await stack.enter_async_context(gateway.websocket("/stream"))
                await ws.send_message('{"type":"subscribe","channels":["quote:binance:BTC/USDT","ticker:binance:BTC/USDT"]}')
                await _next(ws, _is_market("ticker"))
            for _ in range(3):
                ws = await stack.enter_async_context(gateway.websocket("/v1/ws"))
                await ws.send_message('{"type":"subscribe","channels":["ticker:binance:BTC/USDT"]}')
                await _next(ws, lambda m: m["type"] == "ticker")
            for _ in range(3):
                ws = await stack.enter_async_context(gateway.websocket("/"))
                await ws.send_message(hello)
                await _next(ws, lambda m: m["type"] == "quote")
            # Ten clients, two data types, three protocols: one channel upstream, on one connection.
            assert luzia.active_channels() == {"ticker:binance:BTC/USDT": 1}
            assert luzia.stats.connections_open == 1
        await luzia.stats.wait_for(lambda: not luzia.active_channels())
    assert not gateway.hub.demand()
