"""Luzia's REST ticker paths on the gateway's port: each path and its errors against a whole gateway
with emulated providers over memory streams (fake time), the SDK's base-URL switch over real
loopback (this endpoint's one real-socket test, REST and WebSocket), and the REST watches' tap,
holds and keep-alive under fake time."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from functools import partial

import pytest
import trio
from trio_websocket import open_websocket_url

from gateway.app import run_gateway
from gateway.config import parse
from gateway.dialects.luzia import LuziaEndpoint
from gateway.dialects.luzia_rest import TickerWatches, TooManyWatches
from gateway.hub import Hub
from schemas import Quote, Status, Ticker
from schemas.streams import StreamKey
from tests.gateway.fakes import FakeAdapter
from tests.gateway.luzia_support import HANG_GUARD, config_text, get, http_get, receive, send
from tests.gateway.luzia_support import start as start_memory

UUIDISH = re.compile(r"[0-9a-f-]{36}")
BTC = StreamKey("ticker", "binance", "BTC/USDT")


@pytest.fixture
async def start(autojump_clock, nursery):
    """Starts gateways over memory streams; afterwards releases their REST watches, and checks that
    the upstream subscriptions they held are gone with them."""
    gateways = []

    async def start_gateway(route="luzia", environ=None, **options):
        gateways.append(await start_memory(nursery, route, environ, **options))
        return gateways[-1]

    yield start_gateway
    for gateway in gateways:
        (endpoint,) = [e for e in gateway.server.app.endpoints if isinstance(e, LuziaEndpoint)]
        endpoint.watches.release_expired(math.inf)
        assert not gateway.hub.demand()
        luzia = gateway.gateway.emulators["luzia"]
        with trio.fail_after(HANG_GUARD):
            await luzia.stats.wait_for(lambda luzia=luzia: luzia.stats.connections_open == 0)


def _luzia_error(body: dict, reason: str) -> None:
    assert list(body) == ["error", "message", "correlationId", "details"]
    assert body["error"] == reason and body["message"] and UUIDISH.fullmatch(body["correlationId"])
    assert isinstance(body["details"], dict)


@pytest.mark.parametrize("route", ["luzia", "coinapi"])
async def test_a_ticker_nobody_watched_is_subscribed_and_served_when_its_first_value_arrives(start, route):
    gateway = await start(route)
    assert not gateway.hub.demand()
    with trio.fail_after(HANG_GUARD):
        status, headers, body = await get(gateway, "/v1/ticker/binance/BTC-USDT")
    assert status == 200 and headers["content-type"] == "application/json"
    assert (body["symbol"], body["exchange"]) == ("BTC/USDT", "binance")
    assert body["last"] is not None and body["close"] == body["last"]
    assert gateway.hub.demand() == {BTC}  # held for the next request: one upstream subscription
    if route == "luzia":
        assert set(gateway.gateway.emulators["luzia"].active_channels()) == {"ticker:binance:BTC/USDT"}
    with trio.fail_after(HANG_GUARD):
        again = await get(gateway, "/v1/ticker/BINANCE/btc-usdt")
    assert again[0] == 200 and gateway.hub.demand() == {BTC}


async def test_ticker_lists_by_exchange_and_by_symbols_paginate(start):
    gateway = await start()
    with trio.fail_after(HANG_GUARD):
        status, _, body = await get(gateway, "/v1/tickers?exchange=binance&symbols=SOL-USDT,BTC-USDT,SOL/USDT")
        assert status == 200
        assert [t["symbol"] for t in body["tickers"]] == ["SOL/USDT", "BTC/USDT"]  # as asked, once each
        assert (body["total"], body["limit"], body["offset"]) == (2, 20, 0)
        _, _, page = await get(gateway, "/v1/tickers?exchange=binance&symbols=SOL-USDT,BTC-USDT&limit=1&offset=1")
        assert ([t["symbol"] for t in page["tickers"]], page["total"], page["limit"], page["offset"]) == (["BTC/USDT"], 2, 1, 1)
        status, _, wide = await get(gateway, "/v1/tickers/binance?limit=500")
        assert status == 200 and wide["limit"] == 50  # Luzia's maximum page
        assert wide["tickers"] and {t["exchange"] for t in wide["tickers"]} == {"binance"}
        symbols = [t["symbol"] for t in wide["tickers"]]
        assert symbols == sorted(symbols) and wide["total"] == len(symbols)
        _, _, cached = await get(gateway, "/v1/tickers?symbols=BTC-USDT")  # no exchange: what is watched
        assert [(t["exchange"], t["symbol"]) for t in cached["tickers"]] == [("binance", "BTC/USDT")]
        _, _, exchanges = await get(gateway, "/v1/exchanges")
    assert {"id": "binance", "name": "binance", "status": "operational", "websiteUrl": None} in exchanges["exchanges"]


async def test_numbers_are_json_numbers_with_every_digit(start):
    gateway = await start()
    with trio.fail_after(HANG_GUARD):
        _, _, raw = await gateway.http("/v1/ticker/binance/ETH-USDT")
    body = raw.decode()
    assert re.search(r'"last":\d+\.\d\d,', body)  # a number on the 0.01 grid, trailing zeros kept
    assert '"last":"' not in body


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/ticker/binance/BTCUSDT", "symbol"),
        ("/v1/ticker/bin%21ance/BTC-USDT", "exchange"),
        ("/v1/tickers/binance?limit=abc", "limit"),
        ("/v1/tickers/binance?limit=0", "limit"),
        ("/v1/tickers/binance?offset=-1", "offset"),
        ("/v1/tickers?exchange=binance&symbols=BTC-USDT,nonsense", "symbol"),
    ],
)
async def test_validation_errors_are_400_in_luzias_error_shape(start, path, field):
    gateway = await start()
    with trio.fail_after(HANG_GUARD):
        status, _, body = await get(gateway, path)
    assert status == 400
    _luzia_error(body, "Bad Request")
    assert field in body["details"]
    assert not gateway.hub.demand()  # a bad request subscribes nothing


async def test_unknown_symbol_is_404_with_a_json_body_as_soon_as_the_provider_refuses_it(start):
    gateway = await start(rest_wait=30)  # the refusal ends the wait, not the 30 s
    with trio.fail_after(HANG_GUARD):
        status, _, body = await get(gateway, "/v1/ticker/binance/DOGE-USDT")
        assert status == 404
        _luzia_error(body, "Not Found")
        assert body["details"]["symbol"] == "DOGE/USDT" and "INVALID_CHANNEL" in body["details"]["reason"]
        status, _, body = await get(gateway, "/v1/ticker/binance")
    assert status == 404
    _luzia_error(body, "Not Found")


async def test_not_yet_seen_is_404_when_there_is_no_time_to_wait_and_the_subscription_stays(start):
    gateway = await start(rest_wait=0)
    luzia = gateway.gateway.emulators["luzia"]
    with trio.fail_after(HANG_GUARD):
        status, _, body = await get(gateway, "/v1/ticker/kraken/BTC-USD")
        assert status == 404
        _luzia_error(body, "Not Found")
        await luzia.stats.wait_for(lambda: "ticker:kraken:BTC/USD" in luzia.active_channels())


async def test_local_keys_make_rest_401_without_the_right_bearer_key(start):
    gateway = await start(keys_env="LOCAL_KEYS", environ={"LOCAL_KEYS": "lz_local_a_0123456"})
    with trio.fail_after(HANG_GUARD):
        for headers in ({}, {"Authorization": "Bearer lz_wrong"}):
            status, _, body = await get(gateway, "/v1/ticker/binance/BTC-USDT", headers)
            assert status == 401
            _luzia_error(body, "Unauthorized")
        assert not gateway.hub.demand()
        status, _, _ = await get(gateway, "/v1/exchanges", {"Authorization": "Bearer lz_local_a_0123456"})
    assert status == 200


async def test_no_ticker_route_is_503(start):
    gateway = await start(route=None)
    with trio.fail_after(HANG_GUARD):
        status, _, body = await get(gateway, "/v1/ticker/binance/BTC-USDT")
    assert status == 503
    _luzia_error(body, "Service Unavailable")


async def test_an_sdk_switches_by_base_url_alone(nursery):
    """Luzia's SDKs derive the WebSocket URL from the REST base URL: both on one host:port. Over
    real loopback, with the real gateway's listener: this endpoint's one real-socket test."""
    gateway = await nursery.start(partial(run_gateway, parse(config_text()), port=0))
    base_url = f"http://127.0.0.1:{gateway.port}"
    ws_url = base_url.replace("https://", "wss://").replace("http://", "ws://") + "/v1/ws"  # the SDK's rule
    auth = {"Authorization": "Bearer lz_any_key"}  # SDKs always send one; no local keys: accepted
    with trio.fail_after(HANG_GUARD):
        status, _, ticker = await http_get(gateway.port, "/v1/ticker/coinbase/ETH-USD", auth)
        assert status == 200 and ticker["symbol"] == "ETH/USD"
        async with open_websocket_url(ws_url, extra_headers=[(b"Authorization", b"Bearer lz_any_key")]) as ws:
            assert (await receive(ws))["type"] == "connected"
            await send(ws, {"type": "subscribe", "channels": ["ticker:coinbase:ETH-USD"]})
            assert await receive(ws) == {"type": "subscribed", "channel": "ticker:coinbase:ETH-USD"}
            message = await receive(ws)
    assert (message["type"], message["exchange"], message["symbol"]) == ("ticker", "coinbase", "ETH/USD")
    assert list(message["data"]) == list(ticker)  # REST and WebSocket: the same ticker object
    (endpoint,) = [e for e in gateway.server.app.endpoints if isinstance(e, LuziaEndpoint)]
    endpoint.watches.release_expired(math.inf)  # so the upstream connection closes politely before teardown
    luzia = gateway.emulators["luzia"]
    with trio.fail_after(HANG_GUARD):
        await luzia.stats.wait_for(lambda: luzia.stats.connections_open == 0)


# ----- the REST watches under fake time (no sockets) ----------------------------------------


def _ticker(symbol="BTC/USDT", last="1.5", exchange="binance") -> Ticker:
    return Ticker(provider="lz", ts_gateway=1, exchange=exchange, symbol=symbol, last=Decimal(last) if last else None)


@pytest.fixture
def hub_and_adapter():
    hub = Hub({"ticker": ["lz"], "quote": ["lz"]})
    adapter = FakeAdapter("lz", {"ticker", "quote"})
    hub.add_source(adapter)
    return hub, adapter


async def test_a_watch_lives_keepalive_seconds_after_its_last_request(autojump_clock, nursery, hub_and_adapter):
    hub, adapter = hub_and_adapter
    watches = TickerWatches(hub, keepalive=60.0)
    await nursery.start(watches.run)
    watches.watch([BTC], trio.current_time())
    assert adapter.wanted == {BTC}
    hub.publish(_ticker())
    assert [t.last for t in watches.lookup(BTC)] == [Decimal("1.5")]
    await trio.sleep_until(30.0)
    watches.watch([BTC], trio.current_time())  # a request at 30 s: the watch now ends at 90 s
    await trio.sleep_until(89.9)
    assert adapter.wanted == {BTC}
    await trio.sleep_until(90.0)
    await trio.testing.wait_all_tasks_blocked()
    assert adapter.wanted == frozenset() and not len(watches)
    assert watches.lookup(BTC) == []  # its values go with it: nothing stale is ever served


async def test_waiting_ends_on_a_priced_ticker_on_refusal_or_at_the_deadline(autojump_clock, nursery, hub_and_adapter):
    hub, _ = hub_and_adapter
    watches = TickerWatches(hub)
    eth = StreamKey("ticker", "binance", "ETH/USDT")
    watches.watch([BTC, eth], 0.0)

    async def publish_later():
        await trio.sleep(1.0)
        hub.publish(_ticker(last=None))  # derived, no last price yet: keep waiting
        await trio.sleep(1.0)
        hub.publish(_ticker())
        await trio.sleep(1.0)
        hub.publish(Status(provider="lz", ts_gateway=1, state="rejected", stream="ticker:binance:ETH/USDT", reason="nope"))

    nursery.start_soon(publish_later)
    await watches.wait_first([BTC, eth], deadline=10.0)
    assert trio.current_time() == 3.0 and watches.refusal(eth) == "nope"
    dot = StreamKey("ticker", "binance", "DOT/USDT")
    watches.watch([dot], trio.current_time())
    await watches.wait_first([dot], deadline=5.0)
    assert trio.current_time() == 5.0 and watches.lookup(dot) == []


async def test_too_many_watched_streams_is_refused_with_the_time_until_one_ends(hub_and_adapter):
    hub, _ = hub_and_adapter
    watches = TickerWatches(hub, keepalive=60.0, max_streams=2)
    watches.watch([BTC], 0.0)
    watches.watch([StreamKey("ticker", "binance", "ETH/USDT")], 10.0)
    with pytest.raises(TooManyWatches) as refused:
        watches.watch([StreamKey("ticker", "kraken", "BTC/USD")], 20.0)
    assert refused.value.retry_after == 40.0
    watches.watch([BTC], 20.0)  # renewing what is watched is always fine
    watches.watch([StreamKey("ticker", "kraken", "BTC/USD")], 70.0)  # the ETH watch ended at 70 s
    assert len(watches) == 2


def test_the_tap_keeps_only_watched_tickers_and_notes_every_exchange_tickers_come_from(hub_and_adapter):
    hub, adapter = hub_and_adapter
    watches = TickerWatches(hub)
    watches.watch([BTC], 0.0)
    assert adapter.wanted == {BTC}  # held: demand without a subscriber
    hub.publish(_ticker(exchange="kraken", symbol="BTC/USD"))  # routed, for somebody else
    hub.publish(Quote(provider="lz", ts_gateway=1, exchange="okx", symbol="BTC/USDT", bid_price=Decimal(1)))
    hub.publish(_ticker())
    assert list(watches.latest) == [("binance", "BTC/USDT")]
    assert watches.exchanges == {"binance", "kraken"}  # what `/v1/exchanges` lists
    hub.publish(Ticker(provider="other", ts_gateway=1, exchange="bitstamp", symbol="BTC/USD"))  # not routed
    assert "bitstamp" not in watches.exchanges
    watches.release_expired(math.inf)
    assert adapter.wanted == frozenset() and not watches.latest


async def test_a_symbol_that_never_gets_data_leaves_nothing_behind_when_its_watch_ends(autojump_clock, nursery, hub_and_adapter):
    """Polling symbols that never get a value must not grow anything: a released watch takes its
    waiter with it, and whoever still waits on it stops waiting."""
    hub, _ = hub_and_adapter
    watches = TickerWatches(hub, keepalive=5.0)
    await nursery.start(watches.run)
    keys = [StreamKey("ticker", "binance", f"C{i}/USDT") for i in range(50)]
    watches.watch(keys, trio.current_time())
    await watches.wait_first(keys, deadline=trio.current_time() + 1.0)  # nothing comes
    assert trio.current_time() == 1.0
    late = StreamKey("ticker", "binance", "LATE/USDT")
    watches.watch([late], trio.current_time())
    await watches.wait_first([late], deadline=100.0)  # its watch ends (at 6 s) before the deadline
    assert trio.current_time() == 6.0
    assert not len(watches) and not watches._waiters
