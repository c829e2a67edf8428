"""`/v1/ws` speaks Luzia, against a whole gateway with both providers emulated, over memory streams
under fake time: the handshake, one answer per channel, every error code in its situation, tickers
from whichever provider `[routes] ticker` names, the connection limit, local keys, and the shutdown
notice. (The loopback test of this endpoint is in test_luzia_rest: an SDK switching by base URL.)"""

from __future__ import annotations

import json
import re
from collections import Counter
from decimal import Decimal

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected

from schemas.streams import StreamKey
from tests.gateway.luzia_support import HANG_GUARD, receive, replies, send, start

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
TICKER_FIELDS = ["symbol", "exchange", "last", "bid", "ask", "high", "low", "open", "close", "volume", "quoteVolume",
                 "change", "changePercent", "timestamp"]


PATH = "/v1/ws"


async def test_connected_then_one_answer_per_channel_in_order_echoing_the_clients_spelling(autojump_clock, nursery):
    gateway = await start(nursery)
    luzia = gateway.gateway.emulators["luzia"]
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket(PATH) as ws:
            assert await receive(ws) == {
                "type": "connected", "message": "Connected to Luzia WebSocket API", "tier": "local",
                "limits": {"maxSubscriptions": 3},
            }
            channels = ["ticker:binance:BTC/USDT", "ticker:binance:BTC-USDT", "nonsense", "ticker:coinbase",
                        "ticker:kraken:BTC/USD", "ticker:okx:BTC/USDT"]
            await send(ws, {"type": "subscribe", "channels": channels})
            assert await replies(ws, 6) == [
                {"type": "subscribed", "channel": "ticker:binance:BTC/USDT"},
                {"type": "subscribed", "channel": "ticker:binance:BTC-USDT"},  # the same channel: counted once
                {"type": "error", "code": "INVALID_CHANNEL", "message": "Invalid channel: nonsense"},
                {"type": "subscribed", "channel": "ticker:coinbase"},
                {"type": "subscribed", "channel": "ticker:kraken:BTC/USD"},
                {"type": "error", "code": "SUBSCRIPTION_LIMIT", "message": "Subscription limit exceeded (max 3 for local tier)"},
            ]
            wanted = {"ticker:binance:BTC/USDT", "ticker:coinbase", "ticker:kraken:BTC/USD"}
            await luzia.stats.wait_for(lambda: set(luzia.active_channels()) == wanted)  # upstream follows
            await send(ws, {"type": "unsubscribe", "channels": ["ticker:kraken:BTC-USD", "ticker:bitstamp:BTC/USD", "x:y"]})
            await send(ws, {"type": "subscribe", "channels": ["ticker:okx:BTC-USDT"]})
            assert await replies(ws, 4) == [
                {"type": "unsubscribed", "channel": "ticker:kraken:BTC-USD"},
                {"type": "unsubscribed", "channel": "ticker:bitstamp:BTC/USD"},  # never subscribed: still answered
                {"type": "error", "code": "INVALID_CHANNEL", "message": "Invalid channel: x:y"},
                {"type": "subscribed", "channel": "ticker:okx:BTC-USDT"},  # room again
            ]
        await luzia.stats.wait_for(lambda: not luzia.active_channels())  # gone: upstream released
    assert not gateway.hub.demand()


async def test_every_malformed_message_gets_its_documented_error_and_ping_gets_pong(autojump_clock, nursery):
    gateway = await start(nursery)
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket(PATH) as ws:
            await receive(ws)
            for message in ['{"type":"subscribe"', '{"channels":["ticker:binance"]}', '{"type":"subscribe"}',
                            '{"type":"subscribe","channels":[]}', '{"type":"hello"}', '{"type":"ping"}']:
                await send(ws, message)
            answers = [await receive(ws) for _ in range(6)]
    assert [(a["type"], a.get("code")) for a in answers] == [
        ("error", "INVALID_JSON"), ("error", "INVALID_REQUEST"), ("error", "INVALID_REQUEST"),
        ("error", "INVALID_REQUEST"), ("error", "UNKNOWN_TYPE"), ("pong", None),
    ]
    assert all(isinstance(a.get("message"), str) for a in answers[:5])
    assert ISO_MS.fullmatch(answers[5]["timestamp"])


def _check_ticker(message: dict, route: str) -> None:
    data = message["data"]
    assert list(message) == ["type", "exchange", "symbol", "data", "timestamp"]
    assert list(data) == TICKER_FIELDS
    assert (data["exchange"], data["symbol"]) == (message["exchange"], message["symbol"])
    assert ISO_MS.fullmatch(message["timestamp"]) and ISO_MS.fullmatch(data["timestamp"])
    assert data["close"] == data["last"]
    for name in TICKER_FIELDS[2:-1]:  # a number, or null where unknown: never a made-up 0
        assert data[name] is None or isinstance(data[name], (int, Decimal)), name
        if name not in ("change", "changePercent"):
            assert data[name] is None or data[name] > 0, name
    if data["bid"] is not None and data["ask"] is not None:
        assert data["bid"] < data["ask"]
    if route == "coinapi":
        assert data["quoteVolume"] is None  # CoinAPI never says it: null
    else:
        assert None not in (data["last"], data["bid"], data["ask"], data["quoteVolume"])


@pytest.mark.parametrize("route", ["luzia", "coinapi"])
async def test_tickers_in_luzias_shape_whichever_provider_serves_them(autojump_clock, nursery, route):
    gateway = await start(nursery, route)
    tickers: list[dict] = []
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket(PATH) as ws:
            await receive(ws)
            await send(ws, {"type": "subscribe", "channels": ["ticker:binance:BTC-USDT", "ticker:coinbase"]})
            assert [m["type"] for m in await replies(ws, 2)] == ["subscribed", "subscribed"]
            while len(tickers) < 20 or len({t["exchange"] for t in tickers}) < 2 or not any(
                t["data"]["last"] is not None for t in tickers if t["exchange"] == "binance"
            ):
                message = _decimal_json(await ws.get_message())
                assert message["type"] == "ticker"
                tickers.append(message)
        await _released(gateway, route)
    instruments = {(t["exchange"], t["symbol"]) for t in tickers}
    assert ("binance", "BTC/USDT") in instruments
    assert {ex for ex, _ in instruments} == {"binance", "coinbase"}  # nothing unasked for
    assert {sym for ex, sym in instruments if ex == "binance"} == {"BTC/USDT"}
    previous: dict[tuple, dict] = {}
    for message in tickers:
        _check_ticker(message, route)
        data, key = message["data"], (message["exchange"], message["symbol"])
        before = previous.get(key)
        previous[key] = data
        # Last within bid/ask. A derived (CoinAPI) ticker takes bid/ask from the latest quote, which
        # may be a step ahead of the last trade; the ticker a trade produces has both of one step.
        fresh_trade = route == "luzia" or (before is not None and before["last"] != data["last"])
        if fresh_trade and None not in (data["last"], data["bid"], data["ask"]):
            assert data["bid"] <= data["last"] <= data["ask"]


async def _released(gateway, route: str) -> None:
    """Until the provider has dropped every upstream subscription (the client has gone)."""
    emulator = gateway.gateway.emulators[route]
    if route == "luzia":
        await emulator.stats.wait_for(lambda: not emulator.active_channels())
    else:
        await emulator.stats.wait_for(lambda: not any(scope.filters for scope in emulator.scopes.values()))


def _decimal_json(text: str) -> dict:
    return json.loads(text, parse_float=Decimal)


async def test_the_connection_limit_rejects_the_next_connection_until_one_leaves(autojump_clock, nursery):
    gateway = await start(nursery, max_connections=2)
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket(PATH) as first, gateway.websocket(PATH) as second:
            assert (await receive(first))["type"] == (await receive(second))["type"] == "connected"
            async with gateway.websocket(PATH) as third:
                assert await receive(third) == {
                    "type": "error", "code": "CONNECTION_REJECTED", "message": "Connection limit exceeded (max 2 for local tier)",
                }
                with pytest.raises(ConnectionClosed) as closed:
                    await third.get_message()
                assert closed.value.reason.code == 1008
            await first.aclose()
            await trio.testing.wait_all_tasks_blocked()  # the gateway has seen `first` go
            async with gateway.websocket(PATH) as fourth:
                assert (await receive(fourth))["type"] == "connected"


async def test_local_keys_missing_is_401_wrong_is_connection_rejected_right_is_connected(autojump_clock, nursery):
    gateway = await start(nursery, keys_env="LOCAL_KEYS", environ={"LOCAL_KEYS": "lz_local_a_0123456,lz_local_b_0123456"})
    with trio.fail_after(HANG_GUARD):
        with pytest.raises(ConnectionRejected) as refused:
            async with gateway.websocket(PATH):
                pass
        assert refused.value.status_code == 401 and b'"message"' in refused.value.body
        wrong = [(b"Authorization", b"Bearer lz_not_ours")]
        async with gateway.websocket(PATH, headers=wrong) as ws:
            assert await receive(ws) == {"type": "error", "code": "CONNECTION_REJECTED", "message": "Invalid API key"}
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1008
        right = [(b"Authorization", b"Bearer lz_local_b_0123456")]
        async with gateway.websocket(PATH, headers=right) as ws:
            assert (await receive(ws))["type"] == "connected"


async def test_no_ticker_route_makes_every_channel_invalid(autojump_clock, nursery):
    gateway = await start(nursery, route=None)
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket(PATH) as ws:
            await receive(ws)
            await send(ws, {"type": "subscribe", "channels": ["ticker:binance:BTC/USDT"]})
            answer = await receive(ws)
    assert (answer["type"], answer["code"]) == ("error", "INVALID_CHANNEL")
    assert answer["message"].startswith("Invalid channel: ticker:binance:BTC/USDT")


async def test_gateway_shutdown_sends_server_shutdown_then_closes_going_away(autojump_clock, nursery):
    gateway = await start(nursery)
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket(PATH) as ws:
            await receive(ws)
            await send(ws, {"type": "subscribe", "channels": ["ticker:binance:BTC/USDT"]})
            assert (await receive(ws))["type"] == "subscribed"
            nursery.start_soon(gateway.gateway.shutdown)
            while (message := await receive(ws))["type"] == "ticker":
                pass
            assert message == {
                "type": "error", "code": "SERVER_SHUTDOWN", "message": "Server is shutting down, reconnect shortly",
            }
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    assert closed.value.reason.code == 1001
    assert not gateway.hub.demand()  # the session's streams were released with its goodbye


async def test_two_luzia_clients_share_one_upstream_subscription(autojump_clock, nursery):
    gateway = await start(nursery)
    luzia = gateway.gateway.emulators["luzia"]
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket(PATH) as a, gateway.websocket(PATH) as b:
            for ws, spelling in ((a, "ticker:binance:ETH/USDT"), (b, "ticker:binance:ETH-USDT")):
                await receive(ws)
                await send(ws, {"type": "subscribe", "channels": [spelling]})
            for ws in (a, b):
                while (await receive(ws))["type"] != "ticker":
                    pass
            assert luzia.active_channels() == Counter({"ticker:binance:ETH/USDT": 1})
            assert gateway.hub.subscriber_count(StreamKey("ticker", "binance", "ETH/USDT")) == 2
            await a.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert luzia.active_channels() == Counter({"ticker:binance:ETH/USDT": 1})  # b still wants it
        await luzia.stats.wait_for(lambda: not luzia.active_channels())  # both gone: released


async def test_a_request_naming_more_channels_than_replies_may_pile_up_is_answered_in_full(autojump_clock, nursery):
    """Every channel gets its answer even when one request names more channels than the outbox
    lets unread replies pile up (1024): one request's answers are one control item."""
    gateway = await start(nursery)
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket(PATH) as ws:
            await receive(ws)  # connected (limit 3)
            channels = [f"ticker:binance:C{i}-USDT" for i in range(1100)]
            await send(ws, {"type": "subscribe", "channels": channels})
            answers = await replies(ws, 1100)
            await send(ws, {"type": "ping"})
            assert (await receive(ws))["type"] == "pong"  # still connected
    assert Counter(a.get("code", a["type"]) for a in answers) == {"subscribed": 3, "SUBSCRIPTION_LIMIT": 1097}
