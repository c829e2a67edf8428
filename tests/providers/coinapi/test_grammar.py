"""CoinAPI's grammar: symbol ids (round trips, rejections), the canonical ↔ CoinAPI mapping, filter
matching against an obviously-correct reference, and what a symbol id prefix pins."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.coinapi import wire
from providers.coinapi.grammar import (
    KINDS,
    ExchangeMap,
    SubscriptionFilter,
    SymbolId,
    SymbolIdError,
    SymbolMapper,
    Unpinned,
    format_symbol_id,
    parse_symbol_id,
    prefix_exchange,
)
from providers.coinapi.server import request_filter

token = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=8).filter(lambda t: t not in KINDS)
exchange = st.lists(token, min_size=1, max_size=2).map("_".join)  # an id with `_` must parse too
suffix = st.none() | st.lists(token, min_size=1, max_size=2).map("_".join)
date = st.dates().map(lambda d: d.strftime("%y%m%d"))
strike = st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False, allow_infinity=False).map(
    lambda d: format(d.normalize(), "f")
)


@st.composite
def symbol_ids(draw) -> SymbolId:
    kind = draw(st.sampled_from(sorted(KINDS)))
    ex = draw(exchange)
    if kind == "IDX":
        return SymbolId(ex, kind, index_id=draw(st.lists(token, min_size=1, max_size=3).map("_".join)))
    base, quote, tail = draw(token), draw(token), draw(suffix)
    if kind in ("SPOT", "PERP"):
        return SymbolId(ex, kind, base, quote, suffix=tail)
    if kind == "FTS":
        return SymbolId(ex, kind, base, quote, draw(date), suffix=tail)
    return SymbolId(ex, kind, base, quote, draw(date), draw(strike), draw(st.sampled_from("CP")), suffix=tail)


@given(symbol_ids())
def test_generated_ids_round_trip(sid: SymbolId) -> None:
    text = format_symbol_id(sid)
    assert parse_symbol_id(text) == sid
    assert format_symbol_id(parse_symbol_id(text)) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BINANCE_SPOT_BTC_USDT", SymbolId("BINANCE", "SPOT", "BTC", "USDT")),
        ("BITSTAMP_SPOT_BTC_USD_2", SymbolId("BITSTAMP", "SPOT", "BTC", "USD", suffix="2")),
        ("BINANCEFTS_PERP_ETH_USDT", SymbolId("BINANCEFTS", "PERP", "ETH", "USDT")),
        ("BITMEX_FTS_BTC_USD_250328", SymbolId("BITMEX", "FTS", "BTC", "USD", "250328")),
        ("DERIBIT_OPT_BTC_USD_250328_100000_C", SymbolId("DERIBIT", "OPT", "BTC", "USD", "250328", "100000", "C")),
        ("BITMEX_IDX_BXBT", SymbolId("BITMEX", "IDX", index_id="BXBT")),
    ],
)
def test_documented_shapes_parse(text: str, expected: SymbolId) -> None:
    assert parse_symbol_id(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "BINANCE",
        "BINANCE_BTC_USDT",  # no kind
        "SPOT_BTC_USDT",  # the first part is the exchange, and no kind follows it
        "BINANCE_SPOT_BTC",  # missing quote
        "BINANCE__SPOT_BTC_USDT",  # empty part
        "BINANCE_SPOT_BTC_USDT_",  # empty suffix
        "BITMEX_FTS_BTC_USD_2503",  # expiry not YYMMDD
        "DERIBIT_OPT_BTC_USD_250328_100000_X",  # not C or P
        "DERIBIT_OPT_BTC_USD_250328_C",  # strike missing
        "BITMEX_IDX",  # index id missing
        "BINANCE_SPOT_BTC_US DT",
    ],
)
def test_malformed_ids_are_rejected(text: str) -> None:
    with pytest.raises(SymbolIdError):
        parse_symbol_id(text)


@given(st.text(max_size=30))
def test_parsing_arbitrary_text_raises_only_symbol_id_error(text: str) -> None:
    try:
        sid = parse_symbol_id(text)
    except SymbolIdError:
        return
    assert format_symbol_id(sid) == text


def test_exchange_map_defaults_overrides_and_fallback() -> None:
    exchanges = ExchangeMap({"cryptocom": "CRYPTOCOM", "okx": "OKX"})
    assert exchanges.to_coinapi("binance") == "BINANCE"
    assert exchanges.to_coinapi("okx") == "OKX"  # the override wins over the default OKEX
    assert exchanges.to_canonical("OKX") == "okx"
    assert ExchangeMap().to_coinapi("okx") == "OKEX" and ExchangeMap().to_canonical("OKEX") == "okx"
    assert exchanges.to_coinapi("gateio") == "GATEIO" and exchanges.to_canonical("GATEIO") == "gateio"
    assert ExchangeMap().to_canonical("BINANCEFTS") == "binancefts"


def test_mapper_maps_plain_spot_ids_only() -> None:
    mapper = SymbolMapper()
    assert mapper.symbol_id("binance", "BTC/USDT") == "BINANCE_SPOT_BTC_USDT"
    assert mapper.symbol_id("okx", "btc-usdt") == "OKEX_SPOT_BTC_USDT"
    assert mapper.instrument("BINANCE_SPOT_BTC_USDT") == ("binance", "BTC/USDT")
    assert mapper.instrument("OKEX_SPOT_ETH_USDT") == ("okx", "ETH/USDT")
    assert mapper.instrument("BINANCEFTS_PERP_BTC_USDT") is None  # a different instrument
    assert mapper.instrument("BINANCE_SPOT_BTC_USDT_2") is None  # CoinAPI's duplicate, not the plain pair
    assert mapper.instrument("garbage") is None


@given(token, token, st.sampled_from(["binance", "okx", "coinbase", "kraken", "someexchange"]))
def test_mapper_round_trips_canonical_spot_symbols(base: str, quote: str, exchange_name: str) -> None:
    mapper = SymbolMapper()
    symbol_id = mapper.symbol_id(exchange_name, f"{base}/{quote}")
    assert mapper.instrument(symbol_id) == (exchange_name, f"{base}/{quote}")


# ---------------------------------------------------------------------------- filters

EXCHANGES = ["BINANCE", "BINANCEFTS", "COINBASE", "BITSTAMP"]
ASSETS = ["BTC", "USD", "USDT", "ETH"]
SYMBOL_IDS = sorted(
    {f"{ex}_SPOT_{b}_{q}" for ex in EXCHANGES for b in ASSETS for q in ASSETS if b != q}
    | {"BINANCEFTS_PERP_BTC_USDT", "BITSTAMP_SPOT_BTC_USD_2", "COINBASE_IDX_BTC", "BITMEX_FTS_BTC_USD_250328"}
)


def reference_matches(symbol_id: str, symbols: list[str], exchanges: list[str], assets: list[str]) -> bool:
    """The spec read literally: union of the non-empty lists; nothing given → everything."""
    if not (symbols or exchanges or assets):
        return True
    parts = symbol_id.split("_")
    exchange_id = parts[0]
    base_quote = (parts[2], parts[3]) if parts[1] != "IDX" else None
    for item in symbols:
        if item.endswith("$") and symbol_id == item[:-1]:
            return True
        if not item.endswith("$") and symbol_id.startswith(item):
            return True
    if exchange_id in exchanges:
        return True
    for item in assets:
        if base_quote is None:
            continue
        if "/" in item and item == f"{base_quote[0]}/{base_quote[1]}":
            return True
        if "/" not in item and item in base_quote:
            return True
    return False


prefixes = st.sampled_from(SYMBOL_IDS).flatmap(
    lambda sid: st.sampled_from([sid[:n] for n in range(len(sid) + 1)] + [sid + "$", sid[:-1] + "$"])
)
pairs = st.tuples(st.sampled_from(ASSETS), st.sampled_from(ASSETS)).map("/".join)
filter_lists = st.tuples(
    st.lists(prefixes, max_size=3),
    st.lists(st.sampled_from([*EXCHANGES, "KRAKEN"]), max_size=2),
    st.lists(st.sampled_from(ASSETS) | pairs, max_size=2),
)


@given(filter_lists, st.sampled_from(SYMBOL_IDS))
def test_matching_agrees_with_the_reference(lists, symbol_id: str) -> None:
    symbols, exchanges, assets = lists
    selection = SubscriptionFilter.of(symbols, exchanges, assets)
    assert selection.matches(symbol_id) == reference_matches(symbol_id, symbols, exchanges, assets)
    assert selection.matches(symbol_id) == reference_matches(symbol_id, symbols, exchanges, assets)  # memoized


def test_documented_union_example() -> None:
    """"all symbols from COINBASE and ITBIT and additionally two BITSTAMP/BITFINEX symbols"."""
    hello = wire.Hello(
        subscribe_data_type=["trade"],
        subscribe_filter_exchange_id=["COINBASE", "ITBIT"],
        subscribe_filter_symbol_id=["BITSTAMP_SPOT_BTC_USD$", "BITFINEX_SPOT_BTC_LTC$"],
    )
    selection = request_filter(hello)
    assert selection.matches("COINBASE_SPOT_ETH_USD") and selection.matches("ITBIT_SPOT_BTC_USD")
    assert selection.matches("BITSTAMP_SPOT_BTC_USD") and selection.matches("BITFINEX_SPOT_BTC_LTC")
    assert not selection.matches("BITSTAMP_SPOT_ETH_USD")
    assert not selection.matches("BITSTAMP_SPOT_BTC_USD_2")  # `$` is exact, not a prefix


def test_prefix_exact_exchange_and_asset_items() -> None:
    assert SubscriptionFilter.of(["BITSTAMP_SPOT_BTC_USD"]).matches("BITSTAMP_SPOT_BTC_USD_2")
    assert not SubscriptionFilter.of(["BITSTAMP_SPOT_BTC_USD$"]).matches("BITSTAMP_SPOT_BTC_USDT")
    assert not SubscriptionFilter.of(exchange_ids=["BINANCE"]).matches("BINANCEFTS_PERP_BTC_USDT")
    assert SubscriptionFilter.of(asset_ids=["BTC/USD"]).matches("KRAKEN_SPOT_BTC_USD")
    assert not SubscriptionFilter.of(asset_ids=["USD/BTC"]).matches("KRAKEN_SPOT_BTC_USD")
    assert SubscriptionFilter.of(asset_ids=["usd"]).matches("KRAKEN_SPOT_BTC_USD")  # case-insensitive
    assert SubscriptionFilter.of([], [], []).matches("ANYTHING_SPOT_A_B")  # empty lists filter nothing


def test_what_a_symbol_id_prefix_pins() -> None:
    assert prefix_exchange("A_B_SPOT_BTC") == "A_B" and prefix_exchange("BITSTAMP_SP") == "BITSTAMP"
    assert prefix_exchange("BIT") is Unpinned.EVERY and prefix_exchange("") is Unpinned.EVERY
    assert prefix_exchange("BINANCEFTS_PERP_") is Unpinned.NONE
    assert prefix_exchange("bitstamp_spot_") == "BITSTAMP"
