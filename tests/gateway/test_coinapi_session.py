"""The CoinAPI endpoint's session without sockets, on a real hub: scope → stream keys, exactly the
selected symbols delivered (against a reference filter), errors then close, keys, sequences shared
across clients, book depths, translation of Luzia-style quotes, and — under fake time — heartbeats
and `subscribe_update_limit_ms_quote` at their exact times."""

from __future__ import annotations

import json

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import parse
from gateway.dialects.coinapi import CoinApiSession
from gateway.dialects.coinapi_scope import Coverage, covering_keys
from gateway.server import HttpRequest
from providers.coinapi import wire
from providers.coinapi.grammar import ExchangeMap, SymbolMapper, prefix_exchange
from providers.coinapi.server import Scope
from schemas.streams import StreamKey
from tests.gateway.coinapi_support import (
    GUID,
    FakePeer,
    book,
    hello,
    make_endpoint,
    make_hub,
    make_session,
    messages,
    quote,
    split_frames,
    trade,
)
from tests.gateway.fakes import FakeAdapter
from tests.providers.coinapi.test_grammar import reference_matches

# ----- the reference: the spec's filter rules, written out plainly --------------------------

COINAPI_IDS = {"binance": "BINANCE", "coinbase": "COINBASE", "bitstamp": "BITSTAMP", "bitfinex": "BITFINEX", "okx": "OKEX",
               "binancefts": "BINANCEFTS"}
INSTRUMENTS = [(ex, sym) for ex in COINAPI_IDS for sym in ("BTC/USD", "BTC/USDT", "ETH/USD", "ETH/BTC", "BTC/LTC")]


def reference_symbol_id(exchange: str, symbol: str) -> str:
    base, quote_ = symbol.split("/")
    return f"{COINAPI_IDS[exchange]}_SPOT_{base}_{quote_}"


def reference_selects(symbol_id: str, symbols: list[str], exchanges: list[str], assets: list[str]) -> bool:
    """The grammar's plainly written reference; ids compare upper-case."""
    return reference_matches(symbol_id, *([item.upper() for item in items] for items in (symbols, exchanges, assets)))


OTHER_IDS = ["BINANCEFTS_PERP_BTC_USDT", "BITSTAMP_SPOT_BTC_USD_2", "COINBASE_IDX_BTC", "KRAKEN_SPOT_BTC_USD"]
UNIVERSE = sorted({reference_symbol_id(*i) for i in INSTRUMENTS} | set(OTHER_IDS))
symbol_items = st.sampled_from(UNIVERSE).flatmap(
    lambda sid: st.sampled_from([sid[:n] for n in range(len(sid) + 1)] + [sid + "$", sid.lower() + "$", sid[:-1] + "$"])
)
assets = st.sampled_from(["BTC", "USD", "ETH", "LTC", "usdt"])
filters = st.tuples(
    st.lists(symbol_items, max_size=3),
    st.lists(st.sampled_from(["BITSTAMP", "OKEX", "OKX", "coinbase", "KRAKEN", "BINANCEFTS"]), max_size=2),
    st.lists(assets | st.tuples(assets, assets).map("/".join), max_size=2),
)
data_types = st.lists(st.sampled_from(["trade", "quote"]), min_size=1, max_size=2, unique=True)
events = st.lists(
    st.tuples(st.sampled_from(["trade", "quote"]), st.sampled_from(INSTRUMENTS)), min_size=1, max_size=25
)


def _request(kind: str, types: list[str], lists) -> str:
    symbols, exchanges, asset_ids = lists
    return json.dumps({"type": kind, "subscribe_data_type": types, "subscribe_filter_symbol_id": symbols,
                       "subscribe_filter_exchange_id": exchanges, "subscribe_filter_asset_id": asset_ids})


@given(data_types, filters, st.none() | st.tuples(data_types, filters), events)
def test_delivers_exactly_what_the_reference_filter_selects(types, first, second, stream) -> None:
    """hello (and maybe a subscribe adding to it), then a stream of events through the real hub:
    the covering stream keys bring each selected event in, `accepts` keeps exactly those."""
    session = make_session()
    session.on_message(_request("hello", types, first))
    wanted = {t: [first] for t in types}
    if second is not None:
        session.on_message(_request("subscribe", second[0], second[1]))
        for t in second[0]:
            wanted.setdefault(t, []).append(second[1])
    for datatype, (exchange, symbol) in stream:
        session.hub.publish((trade if datatype == "trade" else quote)(exchange=exchange, symbol=symbol))
    got = [(m["type"], m["symbol_id"]) for m in messages(session)]
    expected = [
        (datatype, reference_symbol_id(*instrument))
        for datatype, instrument in stream
        if any(reference_selects(reference_symbol_id(*instrument), *lists) for lists in wanted.get(datatype, ()))
    ]
    assert got == expected


# ----- stream keys -------------------------------------------------------------------------


def _keys(datatype="trade", symbols=(), exchanges=(), asset_ids=()) -> set[StreamKey]:
    message = wire.Hello(subscribe_data_type=[datatype], subscribe_filter_symbol_id=list(symbols),
                         subscribe_filter_exchange_id=list(exchanges), subscribe_filter_asset_id=list(asset_ids))
    return set(covering_keys(Scope().apply(message), SymbolMapper(ExchangeMap({"gate_io": "GATE_IO"}))))


def test_the_narrowest_covering_stream_keys() -> None:
    every = {StreamKey("trade", None, None)}
    assert _keys(symbols=["BITSTAMP_SPOT_BTC_USD$", "okex_spot_btc_usdt$"]) == {
        StreamKey("trade", "bitstamp", "BTC/USD"), StreamKey("trade", "okx", "BTC/USDT")}
    assert _keys(symbols=["BITSTAMP_", "BITSTAMP_SPOT_BTC_USD$", "COINBASE_SPOT_ETH"]) == {
        StreamKey("trade", "bitstamp", None), StreamKey("trade", "coinbase", None)}
    assert _keys(exchanges=["KRAKEN", "OKX"], symbols=["KRAKEN_SPOT_BTC_USD$"]) == {StreamKey("trade", "kraken", None)}
    assert _keys(symbols=["GATE_IO_SPOT_"]) == {StreamKey("trade", "gate_io", None)}  # an exchange id with `_`
    assert _keys(symbols=["BINANCEFTS_PERP_", "BITSTAMP_SPOT_BTC_USD_2$", "COINBASE_IDX_BTC$"]) == set()  # never SPOT
    assert _keys(datatype="book20", symbols=["BIT"]) == {StreamKey("book", None, None)}  # BITSTAMP, BITFINEX, ...
    assert _keys(asset_ids=["BTC"], exchanges=["KRAKEN"]) == every
    assert _keys() == every
    assert prefix_exchange("A_B_SPOT_BTC") == "A_B" and prefix_exchange("BITSTAMP_SP") == "BITSTAMP"


def test_scope_changes_move_the_hub_subscriptions() -> None:
    session = make_session()
    hub, adapter = session.hub, session.hub.sources["ca"]
    session.on_message(hello(subscribe_data_type=["trade", "book5"], subscribe_filter_symbol_id=["BITSTAMP_SPOT_BTC_USD$"]))
    assert adapter.wanted == {StreamKey("trade", "bitstamp", "BTC/USD"), StreamKey("book", "bitstamp", "BTC/USD")}
    session.on_message(json.dumps({"type": "subscribe", "subscribe_data_type": ["quote"], "subscribe_filter_exchange_id": ["COINBASE"]}))
    assert StreamKey("quote", "coinbase", None) in adapter.wanted and len(adapter.wanted) == 3
    session.on_message(json.dumps({"type": "unsubscribe", "subscribe_data_type": ["trade", "book5"]}))
    assert adapter.wanted == {StreamKey("quote", "coinbase", None)}
    session.on_message(hello(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["KRAKEN_SPOT_BTC_USD$"]))
    assert adapter.wanted == {StreamKey("trade", "kraken", "BTC/USD")}  # hello replaces everything
    assert messages(session) == []  # CoinAPI acknowledges nothing
    session.on_close()
    assert adapter.wanted == frozenset() and not hub.demand()


def test_the_endpoints_exchange_map_names_exchanges_for_its_clients() -> None:
    config = parse('[endpoints.coinapi]\nexchange_map = { okx = "OKX" }\n[providers.ca]\nkind = "coinapi"\nemulate = true')
    session = make_session(make_endpoint(config=config))
    session.on_message(hello(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["OKX_SPOT_BTC_USDT$"]))
    assert session.keys == {StreamKey("trade", "okx", "BTC/USDT")}
    session.hub.publish(trade(exchange="okx", symbol="BTC/USDT"))
    assert [m["symbol_id"] for m in messages(session)] == ["OKX_SPOT_BTC_USDT"]


# ----- errors, then close ------------------------------------------------------------------

LUZIA_ROUTES = {"trade": ["lz"], "quote": ["lz"], "book": ["lz"]}


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ("{not json", "Invalid message: not a JSON object with a known type."),
        ('["hello"]', "Invalid message: not a JSON object with a known type."),
        ('{"type":"helo","subscribe_data_type":["trade"]}', "Invalid message: not a JSON object with a known type."),
        ('{"type":"hello","subscribe_data_type":"trade"}', "Invalid message: not a JSON object with a known type."),
        ('{"type":"hello"}', "Parameter subscribe_data_type is required."),
        ('{"type":"subscribe","subscribe_data_type":[]}', "Parameter subscribe_data_type is required."),
        ('{"type":"hello","subscribe_data_type":["trades"]}', "Parameter subscribe_data_type contains an unknown data type: trades."),
        ('{"type":"hello","subscribe_data_type":["trade","ohlcv"]}', "Data type ohlcv is not available from this gateway."),
    ],
)
def test_a_bad_request_is_an_error_then_the_close(message: str, text: str) -> None:
    session = make_session()
    session.on_message(message)
    assert messages(session) == [{"message": text, "type": "error"}, ("close", 1008)]
    assert session.peer.closed_with == (1008, text) and not session.hub.demand()
    session.on_message(hello(subscribe_data_type=["trade"]))  # after the error: ignored
    assert messages(session) == [] and not session.hub.demand()


def test_what_the_configured_provider_cannot_produce_is_refused_naming_it() -> None:
    luzia = FakeAdapter("lz", {"ticker", "quote"})
    luzia.kind = "luzia"
    endpoint = make_endpoint(make_hub(LUZIA_ROUTES, [luzia]))
    quotes = make_session(endpoint)
    quotes.on_message(hello(subscribe_data_type=["quote"]))
    assert messages(quotes) == [] and luzia.wanted == {StreamKey("quote", None, None)}
    for data_type, datatype in (("trade", "trade"), ("book20", "book")):
        session = make_session(endpoint)
        session.on_message(hello(subscribe_data_type=["quote", data_type]))
        text = f"Data type {data_type} is not available: {datatype} is routed to lz (luzia), which cannot provide {datatype}."
        assert messages(session) == [{"message": text, "type": "error"}, ("close", 1008)]
    unrouted = make_session(make_endpoint(make_hub({"trade": ["ca"]}, [FakeAdapter("ca", {"trade"})])))
    unrouted.on_message(hello(subscribe_data_type=["book5"]))
    assert messages(unrouted)[0]["message"] == "Data type book5 is not available: no provider is configured for book (see [routes])."


def test_a_luzia_quote_without_sizes_is_a_coinapi_quote_with_size_zero() -> None:
    session = make_session()
    session.on_message(hello(subscribe_data_type=["quote"], subscribe_filter_symbol_id=["BITSTAMP_SPOT_BTC_USD$"]))
    session.hub.publish(quote(bid="67000.1", ask="67000.2", sizes=False))
    (frame,) = messages(session)
    assert frame == {"symbol_id": "BITSTAMP_SPOT_BTC_USD", "sequence": 1, "time_exchange": "2025-01-14T16:49:58.0000000Z",
                     "time_coinapi": "2025-01-14T16:49:58.0000000Z", "ask_price": 67000.2, "ask_size": 0,
                     "bid_price": 67000.1, "bid_size": 0, "type": "quote"}


# ----- keys ----------------------------------------------------------------------------------


def _request_with(path="/v1/", headers=None, query=None) -> HttpRequest:
    return HttpRequest("GET", path, query or {}, headers or {})


def upgrade_key(request: HttpRequest) -> str | None:
    """The key the endpoint's session takes from the upgrade request."""
    session = make_endpoint().open_session(FakePeer(), request)
    assert isinstance(session, CoinApiSession)
    return session.protocol.upgrade_key


async def test_every_place_a_key_can_come_from() -> None:  # in a Trio run: sessions read its clock
    assert upgrade_key(_request_with(f"/APIKEY-{GUID}")) == GUID
    assert upgrade_key(_request_with(f"/v1/APIKEY-{GUID}/")) == GUID
    assert upgrade_key(_request_with(headers={"x-coinapi-key": GUID})) == GUID
    assert upgrade_key(_request_with(headers={"authorization": GUID})) == GUID
    assert upgrade_key(_request_with(headers={"authorization": f"Bearer {GUID}"})) == GUID
    assert upgrade_key(_request_with(query={"apikey": GUID})) == GUID
    assert upgrade_key(_request_with()) is None
    endpoint = make_endpoint()
    assert all(endpoint.serves_websocket(p) for p in ("/", "/v1", "/v1/", f"/APIKEY-{GUID}"))
    assert not any(endpoint.serves_websocket(p) for p in ("/stream", "/v1/ws", "/v2/", "/favicon.ico"))


@pytest.mark.parametrize(
    ("upgrade", "in_hello", "ok"),
    [(GUID, None, True), (None, GUID, True), ("wrong", GUID, True), (GUID, "YOUR_API_KEY", True),
     (None, None, False), ("wrong", None, False), (None, "wrong", False), ("wrong", "also wrong", False)],
)
def test_with_local_keys_one_acceptable_key_is_enough(upgrade, in_hello, ok) -> None:
    session = make_session(make_endpoint(local_keys=frozenset({GUID})), key=upgrade)
    fields = {"subscribe_data_type": ["trade"]} | ({"apikey": in_hello} if in_hello else {})
    session.on_message(hello(**fields))
    expected = [] if ok else [{"message": "Invalid API key", "type": "error"}, ("close", 1008)]
    assert messages(session) == expected


def test_without_local_keys_any_key_or_none_is_accepted() -> None:
    for upgrade, in_hello in ((None, None), ("anything", "YOUR_API_KEY")):
        session = make_session(key=upgrade)
        session.on_message(hello(apikey=in_hello, subscribe_data_type=["trade"]))
        assert messages(session) == [] and session.keys


# ----- frames and sequences --------------------------------------------------------------


def test_a_trade_frame_has_coinapi_fields_type_last_and_seven_digit_times() -> None:
    session = make_session()
    session.on_message(hello(subscribe_data_type=["trade"]))
    session.hub.publish(trade(price="95495.96"))
    frames, _ = session.outbox.take()
    ((_, payload),) = split_frames(frames[0])
    text = payload.decode()
    assert text == ('{"time_exchange":"2025-01-14T16:49:58.3318050Z","time_coinapi":"2025-01-14T16:49:58.3368050Z",'
                    '"uuid":"u-1","price":95495.96,"size":0.25,"taker_side":"BUY","symbol_id":"BITSTAMP_SPOT_BTC_USD",'
                    '"sequence":1,"type":"trade"}')


def test_sequences_are_per_stream_and_the_same_for_every_client() -> None:
    endpoint = make_endpoint()
    early, late = make_session(endpoint), make_session(endpoint)
    early.on_message(hello(subscribe_data_type=["trade", "quote"]))
    hub = endpoint.ctx.hub
    hub.publish(trade())
    hub.publish(trade(exchange="coinbase"))
    late.on_message(hello(subscribe_data_type=["trade"], subscribe_filter_exchange_id=["BITSTAMP"]))
    for _ in range(2):
        hub.publish(trade())
        hub.publish(quote())
    seen = [(m["type"], m["symbol_id"], m["sequence"]) for m in messages(early)]
    assert seen == [("trade", "BITSTAMP_SPOT_BTC_USD", 1), ("trade", "COINBASE_SPOT_BTC_USD", 1),
                    ("trade", "BITSTAMP_SPOT_BTC_USD", 2), ("quote", "BITSTAMP_SPOT_BTC_USD", 1),
                    ("trade", "BITSTAMP_SPOT_BTC_USD", 3), ("quote", "BITSTAMP_SPOT_BTC_USD", 2)]
    assert [m["sequence"] for m in messages(late)] == [2, 3]  # joined later: the same numbers, consecutive
    assert endpoint.frames.built == 6  # each event encoded once for both


def _levels(message) -> tuple[str, int, int]:
    return message["type"], len(message["bids"]), len(message["asks"])


def test_book_depths_are_slices_of_the_book_and_need_that_depth() -> None:
    endpoint = make_endpoint()
    every_depth, five = make_session(endpoint), make_session(endpoint)
    every_depth.on_message(hello(subscribe_data_type=["book5", "book20", "book50"]))
    five.on_message(hello(subscribe_data_type=["book5"], subscribe_filter_symbol_id=["BITSTAMP_"]))
    endpoint.ctx.hub.publish(book(depth=50))
    endpoint.ctx.hub.publish(book(depth=20))
    endpoint.ctx.hub.publish(book(depth=3))
    got = messages(every_depth)
    assert [_levels(m) for m in got] == [("book5", 5, 5), ("book20", 20, 20), ("book50", 50, 50),
                                         ("book5", 5, 5), ("book20", 20, 20)]  # 3 levels: not even a book5
    assert got[0]["bids"][0] == {"price": 1000, "size": 1} and got[0]["asks"][4] == {"price": 1005, "size": 5}
    assert [m["sequence"] for m in got] == [1, 1, 1, 2, 2]
    assert [(m["type"], m["sequence"]) for m in messages(five)] == [("book5", 1), ("book5", 2)]


def test_different_depths_on_different_symbols() -> None:
    endpoint = make_endpoint()
    mixed, plain = make_session(endpoint), make_session(endpoint)
    mixed.on_message(hello(subscribe_data_type=["book5"], subscribe_filter_symbol_id=["BITSTAMP_SPOT_BTC_USD$"]))
    mixed.on_message(json.dumps({"type": "subscribe", "subscribe_data_type": ["book20", "book"],
                                 "subscribe_filter_symbol_id": ["COINBASE_SPOT_BTC_USD$"]}))
    plain.on_message(hello(subscribe_data_type=["book5"]))
    endpoint.ctx.hub.publish(book(exchange="bitstamp", depth=50))
    endpoint.ctx.hub.publish(book(exchange="coinbase", depth=30))
    got = messages(mixed)
    assert [(m["type"], m["symbol_id"]) for m in got] == [
        ("book5", "BITSTAMP_SPOT_BTC_USD"), ("book", "COINBASE_SPOT_BTC_USD"), ("book20", "COINBASE_SPOT_BTC_USD")]
    assert got[1]["is_snapshot"] is True and len(got[1]["bids"]) == 30
    assert [(m["symbol_id"], m["sequence"]) for m in messages(plain)] == [
        ("BITSTAMP_SPOT_BTC_USD", 1), ("COINBASE_SPOT_BTC_USD", 1)]
    assert endpoint.frames.built == 4  # the bitstamp book5 once for both clients; coinbase: book, book5, book20


def test_a_planned_shutdown_says_reconnect_first() -> None:
    session = make_session(wall_ns=lambda: 1_596_741_539_703_542_900)
    (frame,) = session.goodbye_frames()
    assert _json(frame) == {"within_seconds": 2, "before_time": "2020-08-06T19:19:01.7035429Z", "type": "reconnect"}
    assert session.gap_frames([]) == []  # no gap message in CoinAPI: the sequence jump says it


# ----- timers, under fake time --------------------------------------------------------------


def _json(data: bytes) -> dict:
    ((_, payload),) = split_frames(data)
    return json.loads(payload)


def _log(session) -> list[tuple[float, str]]:
    out = []
    for at, data in session.outbox.log:
        message = _json(data)
        out.append((at, message["type"] if message["type"] == "hearbeat" else f'{message["type"]}:{message["sequence"]}'))
    return out


async def test_a_heartbeat_after_each_second_of_silence(autojump_clock, nursery) -> None:
    session = make_session()
    nursery.start_soon(session.background)
    await trio.sleep(0.25)
    session.on_message(hello(heartbeat=True, subscribe_data_type=["trade"], subscribe_filter_symbol_id=["BITSTAMP_"]))
    await trio.sleep(2.5)
    session.hub.publish(trade())  # at 2.75
    await trio.sleep(1.5)
    session.on_message(hello(subscribe_data_type=["trade"]))  # heartbeat off again at 4.25
    await trio.sleep(3)
    assert _log(session) == [(1.25, "hearbeat"), (2.25, "hearbeat"), (2.75, "trade:1"), (3.75, "hearbeat")]


async def test_the_quote_limit_conflates_and_delivers_the_latest_at_the_end_of_the_interval(autojump_clock, nursery) -> None:
    endpoint = make_endpoint()
    limited, unlimited = make_session(endpoint), make_session(endpoint)
    nursery.start_soon(limited.background)
    limited.on_message(hello(subscribe_data_type=["quote"], subscribe_update_limit_ms_quote=1000))
    unlimited.on_message(hello(subscribe_data_type=["quote"]))
    start = trio.current_time()
    for at, exchange in [(0.0, "bitstamp"), (0.1, "bitstamp"), (0.2, "coinbase"), (0.4, "bitstamp"), (0.5, "coinbase"),
                         (1.5, "bitstamp"), (3.5, "bitstamp")]:
        await trio.sleep_until(start + at)
        endpoint.ctx.hub.publish(quote(exchange=exchange, bid=str(100 + at)))
    await trio.sleep(2)
    got = [(at - start, _json(data)) for at, data in limited.outbox.log]
    assert [(round(at, 9), m["symbol_id"][:4], m["sequence"], m["bid_price"]) for at, m in got] == [
        (0.0, "BITS", 1, 100.0),
        (0.2, "COIN", 1, 100.2),
        (1.0, "BITS", 3, 100.4),  # the latest of the interval, at its end; #2 was replaced
        (1.2, "COIN", 2, 100.5),
        (2.0, "BITS", 4, 101.5),  # held until the interval opened at 1.0 ended
        (3.5, "BITS", 5, 103.5),  # after a quiet interval: at once
    ]
    assert [_json(d)["sequence"] for _, d in unlimited.outbox.log if b"BITSTAMP" in d] == [1, 2, 3, 4, 5]


async def test_switching_the_limit_off_sends_what_was_held(autojump_clock, nursery) -> None:
    session = make_session()
    nursery.start_soon(session.background)
    session.on_message(hello(subscribe_data_type=["quote"], subscribe_update_limit_ms_quote=5000))
    session.hub.publish(quote(bid="1"))
    session.hub.publish(quote(bid="2"))
    await trio.sleep(1)
    session.on_message(json.dumps({"type": "subscribe", "subscribe_data_type": ["quote"]}))  # keeps the limit
    await trio.sleep(1)
    session.on_message(hello(subscribe_data_type=["quote"]))  # a hello without it: no limit
    session.hub.publish(quote(bid="3"))
    assert [(at, _json(d)["bid_price"]) for at, d in session.outbox.log] == [(0, 1), (2, 2), (2, 3)]


# ----- the covering keys, kept per request ----------------------------------------------------

_ITEMS = st.fixed_dictionaries({}, optional={
    "subscribe_filter_symbol_id": st.lists(st.sampled_from([
        "BITSTAMP_SPOT_BTC_USD$", "BITSTAMP_SPOT_ETH_USD$", "KRAKEN_SPOT_BTC_USD$", "BITSTAMP_", "KRAKEN_SPOT_ETH",
        "BIT", "BINANCEFTS_PERP_", "COINBASE_IDX_BTC$", "OKEX_SPOT_BTC_USDT$"]), max_size=4),
    "subscribe_filter_exchange_id": st.lists(st.sampled_from(["BITSTAMP", "KRAKEN", "OKX", "OKEX"]), max_size=2),
    "subscribe_filter_asset_id": st.lists(st.sampled_from(["BTC", "BTC/USD"]), max_size=1),
})
_REQUESTS = st.tuples(
    st.sampled_from([wire.Hello, wire.Subscribe, wire.Unsubscribe]),
    st.lists(st.sampled_from(["trade", "quote", "book", "book5", "book50", "ohlcv"]), min_size=1, max_size=3),
    _ITEMS,
).map(lambda t: t[0](subscribe_data_type=t[1], **t[2]))


@given(st.lists(_REQUESTS, max_size=12))
def test_the_kept_coverage_is_always_the_whole_scopes_covering_keys(requests) -> None:
    mapper = SymbolMapper()
    coverage, scope, held = Coverage(mapper), Scope(), set()
    for request in requests:
        after = scope.apply(request)
        added, removed = coverage.update(scope, after)
        assert not (added & removed) and not (added & held) and removed <= held  # real changes only
        held = (held | added) - removed
        scope = after
        assert coverage.keys == held == set(covering_keys(scope, mapper))


def test_toggling_one_symbol_beside_thousands_changes_one_key() -> None:
    mapper = SymbolMapper()
    big = wire.Hello(subscribe_data_type=["trade"],
                     subscribe_filter_symbol_id=[f"BITSTAMP_SPOT_A{i}_USD$" for i in range(3000)])
    coverage, scope = Coverage(mapper), Scope().apply(big)
    coverage.update(Scope(), scope)
    one = {"subscribe_data_type": ["trade"], "subscribe_filter_symbol_id": ["KRAKEN_SPOT_X_USD$"]}
    after = scope.apply(wire.Subscribe(**one))
    assert coverage.update(scope, after) == ({StreamKey("trade", "kraken", "X/USD")}, set())
    back = after.apply(wire.Unsubscribe(**one))
    assert coverage.update(after, back) == (set(), {StreamKey("trade", "kraken", "X/USD")})
    exchange = back.apply(wire.Subscribe(subscribe_data_type=["trade"], subscribe_filter_exchange_id=["BITSTAMP"]))
    added, removed = coverage.update(back, exchange)  # an exchange key shadows its 3,000 symbol keys
    assert added == {StreamKey("trade", "bitstamp", None)} and len(removed) == 3000
    assert coverage.keys == set(covering_keys(exchange, mapper))
