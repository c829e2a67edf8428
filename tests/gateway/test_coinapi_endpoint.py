"""The CoinAPI-compatible endpoint through the whole gateway, over memory streams under fake time
(both providers emulated in-process; `tests.support.gateway`), with real trio-websocket clients:
every refused key and bad message (error, then the close), no acknowledgement, heartbeats,
per-stream sequences shared by clients, union filters, books by depth, the quote limit,
`reconnect` on shutdown, a CoinAPI client served by Luzia data, and a client that vanishes.

Exact timing (heartbeat after 1 s, the quote limit) is asserted in test_coinapi_session.py; waits
here are bounded by `fail_after` (fake seconds) only as a hang guard. Real sockets: the few tests
in test_coinapi_loopback.py and test_coinapi_howto_clients.py.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from gateway.config import parse
from tests.gateway.coinapi_support import GUID
from tests.support.gateway import MemoryGateway, start_memory_gateway

HANG_GUARD = 30  # fake seconds

PROVIDERS = """
[providers.coinapi]
kind = "coinapi"
emulate = true
emulator_rate = 50
[providers.luzia]
kind = "luzia"
emulate = true
emulator_rate = 50
"""
COINAPI_ROUTES = '[routes]\ntrade = ["coinapi"]\nquote = ["coinapi"]\nbook = ["coinapi"]\n'
LUZIA_ROUTES = '[routes]\ntrade = ["luzia"]\nquote = ["luzia"]\nticker = ["luzia"]\n'
KEYS_ENV = "MDGATEWAY_TEST_LOCAL_KEYS"
BITSTAMP_TRADES = {"subscribe_data_type": ["trade"], "subscribe_filter_symbol_id": ["BITSTAMP_SPOT_BTC_USD$"]}


async def start(nursery, routes: str = COINAPI_ROUTES, local_keys: bool = False) -> MemoryGateway:
    server = f'[server]\nlocal_keys_env = "{KEYS_ENV}"\n' if local_keys else ""
    config = parse(server + PROVIDERS + routes)
    return await start_memory_gateway(nursery, config, environ={KEYS_ENV: f"{GUID},another-key-0123456"})


def hello(kind: str = "hello", **fields) -> str:
    return json.dumps({"type": kind, **fields})


async def until(ws, predicate, limit: int = 5000) -> list[dict]:
    """Messages up to and including the first one `predicate` accepts."""
    seen = []
    for _ in range(limit):
        seen.append(json.loads(await ws.get_message()))
        if predicate(seen[-1], seen):
            return seen
    raise AssertionError(f"not found in {limit} messages")


async def error_then_close(ws) -> tuple[dict, int]:
    error = json.loads(await ws.get_message())
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    return error, closed.value.reason.code


async def test_a_refused_key_is_an_error_after_the_first_message_then_the_close(autojump_clock, nursery) -> None:
    gateway = await start(nursery, local_keys=True)
    attempts = [
        ("/v1/", None, hello(apikey="wrong", **BITSTAMP_TRADES)),
        ("/v1/", [(b"X-CoinAPI-Key", b"wrong")], hello(**BITSTAMP_TRADES)),
        ("/APIKEY-wrong", None, hello(**BITSTAMP_TRADES)),
        ("/", None, hello(**BITSTAMP_TRADES)),  # no key at all
    ]
    with trio.fail_after(HANG_GUARD):
        for path, headers, first in attempts:
            async with gateway.websocket(path, headers) as ws:
                await ws.send_message(first)
                assert await error_then_close(ws) == ({"message": "Invalid API key", "type": "error"}, 1008)
    assert not gateway.hub.demand()


async def test_without_local_keys_any_key_or_none_works(autojump_clock, nursery) -> None:
    gateway = await start(nursery)
    with trio.fail_after(HANG_GUARD):
        for first in (hello(**BITSTAMP_TRADES), hello(apikey="YOUR_API_KEY", **BITSTAMP_TRADES)):
            async with gateway.websocket("/v1/") as ws:
                await ws.send_message(first)
                assert json.loads(await ws.get_message())["type"] == "trade"


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ("{not json", "Invalid message: not a JSON object with a known type."),
        ('{"type":"hello","apikey":"k"}', "Parameter subscribe_data_type is required."),
        ('{"type":"hello","subscribe_data_type":["trade","candles"]}',
         "Parameter subscribe_data_type contains an unknown data type: candles."),
        ('{"type":"hello","subscribe_data_type":["ohlcv"]}', "Data type ohlcv is not available from this gateway."),
    ],
)
async def test_a_bad_message_is_an_error_then_the_close(autojump_clock, nursery, message, text) -> None:
    gateway = await start(nursery)
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket("/v1/") as ws:
            await ws.send_message(message)
            assert await error_then_close(ws) == ({"message": text, "type": "error"}, 1008)


async def test_heartbeats_when_nothing_else_is_sent(autojump_clock, nursery) -> None:
    gateway = await start(nursery)
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket("/") as ws:
            await ws.send_message(hello(heartbeat=True, subscribe_data_type=["trade"],
                                        subscribe_filter_symbol_id=["NOWHERE_SPOT_BTC_USD$"]))
            sent_at = trio.current_time()
            assert json.loads(await ws.get_message()) == {"type": "hearbeat"}
            assert trio.current_time() == sent_at + 1.0  # after one second of silence


async def test_sequences_are_consecutive_per_stream_and_the_same_for_every_client(autojump_clock, nursery) -> None:
    gateway = await start(nursery)
    request = hello(subscribe_data_type=["trade", "quote"], subscribe_filter_symbol_id=["BITSTAMP_", "COINBASE_SPOT_BTC_USD$"])
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket("/v1") as a, gateway.websocket("/v1") as b:
            await a.send_message(request)
            await b.send_message(request)
            received = [await until(ws, lambda m, seen: len(seen) >= 120) for ws in (a, b)]
    numbers = [defaultdict(list) for _ in received]
    for mine, messages in zip(numbers, received, strict=True):
        for m in messages:
            mine[(m["type"], m["symbol_id"])].append(m["sequence"])
    assert set(numbers[0]) == {(t, s) for t in ("trade", "quote") for s in ("BITSTAMP_SPOT_BTC_USD", "COINBASE_SPOT_BTC_USD")}
    for mine in numbers:
        for stream, sequence in mine.items():
            assert sequence == list(range(sequence[0], sequence[0] + len(sequence))), stream
    assert "00000000-0000-0000-0000-000000000000" not in json.dumps(received)  # the provider's (emulated) key
    by_uuid = [{m["uuid"]: m["sequence"] for m in messages if m["type"] == "trade"} for messages in received]
    shared = by_uuid[0].keys() & by_uuid[1].keys()
    assert shared and all(by_uuid[0][u] == by_uuid[1][u] for u in shared)


async def test_the_documented_union_of_exchange_and_symbol_filters(autojump_clock, nursery) -> None:
    gateway = await start(nursery)
    expected = {"COINBASE_SPOT_BTC_USD", "COINBASE_SPOT_ETH_USD", "COINBASE_SPOT_ETH_USDT", "BITSTAMP_SPOT_BTC_USD",
                "BITFINEX_SPOT_BTC_LTC"}
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket("/v1/") as ws:
            await ws.send_message(hello(subscribe_data_type=["trade"], subscribe_filter_exchange_id=["COINBASE", "ITBIT"],
                                        subscribe_filter_symbol_id=["BITSTAMP_SPOT_BTC_USD$", "BITFINEX_SPOT_BTC_LTC$"]))
            seen = await until(ws, lambda m, seen: {x["symbol_id"] for x in seen} >= expected)
    assert {m["symbol_id"] for m in seen} == expected
    (scope,) = gateway.gateway.emulators["coinapi"].scopes.values()  # one upstream hello covering exactly that
    assert scope.filters["trade"].exchange_ids == {"COINBASE", "ITBIT"}
    assert scope.filters["trade"].symbol_ids == {"BITSTAMP_SPOT_BTC_USD$", "BITFINEX_SPOT_BTC_LTC$"}


async def test_an_asset_filter_is_every_exchange_upstream_and_exactly_the_asset_downstream(autojump_clock, nursery) -> None:
    gateway = await start(nursery)
    expected = {"BINANCE_SPOT_ETH_USDT", "COINBASE_SPOT_ETH_USD", "COINBASE_SPOT_ETH_USDT"}
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket("/") as ws:
            await ws.send_message(hello(subscribe_data_type=["trade"], subscribe_filter_asset_id=["ETH"]))
            seen = await until(ws, lambda m, seen: {x["symbol_id"] for x in seen} >= expected)
    assert {m["symbol_id"] for m in seen} == expected
    (scope,) = gateway.gateway.emulators["coinapi"].scopes.values()
    assert scope.filters["trade"].everything


async def test_book5_book20_and_book50_have_their_depth(autojump_clock, nursery) -> None:
    gateway = await start(nursery)
    kinds = {"book5": 5, "book20": 20, "book50": 50}
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket("/v1/") as ws:
            await ws.send_message(hello(subscribe_data_type=list(kinds), subscribe_filter_symbol_id=["BITSTAMP_SPOT_BTC_USD$"]))
            seen = await until(ws, lambda m, seen: {x["type"] for x in seen} >= set(kinds))
    for message in seen:
        assert message["symbol_id"] == "BITSTAMP_SPOT_BTC_USD" and list(message)[-1] == "type"
        assert len(message["asks"]) == len(message["bids"]) == kinds[message["type"]]
        assert message["asks"][0]["price"] > message["bids"][0]["price"]
    for kind in kinds:  # a fresh gateway: each stream numbered from 1
        numbers = [m["sequence"] for m in seen if m["type"] == kind]
        assert numbers == list(range(1, len(numbers) + 1))


async def test_the_quote_limit_conflates_per_connection(autojump_clock, nursery) -> None:
    gateway = await start(nursery)
    symbol = {"subscribe_data_type": ["quote"], "subscribe_filter_symbol_id": ["BITSTAMP_SPOT_BTC_USD$"]}
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket("/v1/") as limited, gateway.websocket("/v1/") as every:
            await limited.send_message(hello(subscribe_update_limit_ms_quote=200, **symbol))
            await every.send_message(hello(**symbol))
            few = await until(limited, lambda m, seen: len(seen) >= 4)
            last = few[-1]["sequence"]
            many = await until(every, lambda m, seen: m["sequence"] >= last)
    numbers = [m["sequence"] for m in few]
    assert numbers == sorted(set(numbers)) and numbers[-1] - numbers[0] + 1 > len(numbers)  # conflated: jumps
    assert len(many) > len(few)


async def test_a_planned_shutdown_sends_reconnect_then_closes(autojump_clock, nursery) -> None:
    gateway = await start(nursery)
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket("/v1/") as ws:
            await ws.send_message(hello(**BITSTAMP_TRADES))
            await ws.get_message()
            nursery.start_soon(gateway.gateway.shutdown)
            received: list[dict] = []
            with pytest.raises(ConnectionClosed) as closed:
                await _receive_until_closed(ws, received)
    goodbye = received[-1]
    assert goodbye["type"] == "reconnect" and goodbye["within_seconds"] == 2 and goodbye["before_time"].endswith("Z")
    assert len(goodbye["before_time"]) == len("2020-08-06T19:19:09.7035429Z")
    assert closed.value.reason.code == 1001


async def _receive_until_closed(ws, into: list[dict]) -> None:
    while True:
        into.append(json.loads(await ws.get_message()))


async def test_a_coinapi_client_gets_quotes_from_luzia_tickers_and_is_told_what_cannot_be_had(autojump_clock, nursery) -> None:
    gateway = await start(nursery, routes=LUZIA_ROUTES)
    with trio.fail_after(HANG_GUARD):
        async with gateway.websocket("/v1/") as ws:
            await ws.send_message(hello(subscribe_data_type=["quote"], subscribe_filter_symbol_id=["BINANCE_SPOT_BTC_USDT$"]))
            quote = json.loads(await ws.get_message())
        for data_type, why in (("trade", "trade is routed to luzia (luzia), which cannot provide trade"),
                               ("book20", "no provider is configured for book (see [routes])")):
            async with gateway.websocket("/v1/") as ws:
                await ws.send_message(hello(subscribe_data_type=["quote", data_type]))
                text = f"Data type {data_type} is not available: {why}."
                assert await error_then_close(ws) == ({"message": text, "type": "error"}, 1008)
    assert (quote["type"], quote["symbol_id"], quote["bid_size"], quote["ask_size"]) == ("quote", "BINANCE_SPOT_BTC_USDT", 0, 0)
    assert 0 < quote["bid_price"] <= quote["ask_price"] and quote["sequence"] >= 1
    assert gateway.hub.serving["quote"] == "luzia"


async def test_a_client_that_vanishes_frees_its_subscriptions(autojump_clock, nursery) -> None:
    """The how-to scripts are killed, not closed: the gateway sees EOF without a close frame."""
    gateway = await start(nursery)
    with trio.fail_after(HANG_GUARD):
        stream = gateway.stream()
        upgrade = (b"GET /v1/ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        payload = hello(**BITSTAMP_TRADES).encode()
        await stream.send_all(upgrade + bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
        received = b""
        while b'"type":"trade"' not in received:
            chunk = await stream.receive_some(65536)
            assert chunk, received  # EOF: the gateway refused or closed (a loop on b"" would never end)
            received += chunk
        assert gateway.hub.demand()
        await stream.aclose()  # no close frame
        while gateway.hub.demand():
            await trio.testing.wait_all_tasks_blocked()
        async with gateway.websocket("/v1/") as ws:
            await ws.send_message(hello(**BITSTAMP_TRADES))
            assert json.loads(await ws.get_message())["type"] == "trade"
