"""Hello filter matching against an obviously-correct reference, and the scope's
hello/subscribe/unsubscribe semantics."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from providers.coinapi import wire
from providers.coinapi.filters import DATA_TYPE_REQUIRED, Scope, SubscriptionFilter, validate_request

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
    st.lists(st.sampled_from(EXCHANGES + ["KRAKEN"]), max_size=2),
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
    selection = SubscriptionFilter.from_hello(hello)
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


def _scope(*messages: wire.ClientMessage) -> Scope:
    scope = Scope()
    for message in messages:
        scope = scope.apply(message)
    return scope


def test_hello_replaces_subscribe_adds_unsubscribe_removes() -> None:
    scope = _scope(
        wire.Subscribe(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["A_SPOT_X_Y$"]),  # may come first
        wire.Subscribe(subscribe_data_type=["trade", "quote"], subscribe_filter_symbol_id=["B_SPOT_X_Y$"]),
    )
    assert scope.wants("trade", "A_SPOT_X_Y") and scope.wants("trade", "B_SPOT_X_Y")
    assert scope.wants("quote", "B_SPOT_X_Y") and not scope.wants("quote", "A_SPOT_X_Y")
    scope = scope.apply(wire.Unsubscribe(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["A_SPOT_X_Y$"]))
    assert not scope.wants("trade", "A_SPOT_X_Y") and scope.wants("trade", "B_SPOT_X_Y")
    scope = scope.apply(wire.Unsubscribe(subscribe_data_type=["trade"], subscribe_filter_symbol_id=["B_SPOT_X_Y$"]))
    assert scope.data_types == {"quote"}  # emptied, not widened to "everything"
    scope = scope.apply(wire.Hello(subscribe_data_type=["ohlcv"], subscribe_filter_period_id=["1day"]))
    assert scope.data_types == {"ohlcv"} and scope.wants("ohlcv", "ANY_SPOT_X_Y")
    assert scope.wants_period("1DAY") and not scope.wants_period("1MIN")


def test_heartbeat_is_set_by_hello_and_switched_on_by_subscribe() -> None:
    assert not _scope(wire.Hello(subscribe_data_type=["trade"])).heartbeat
    assert _scope(wire.Hello(subscribe_data_type=["trade"]), wire.Subscribe(heartbeat=True, subscribe_data_type=["quote"])).heartbeat
    assert not _scope(wire.Hello(heartbeat=True, subscribe_data_type=["trade"]), wire.Hello(subscribe_data_type=["trade"])).heartbeat


def test_request_validation_texts() -> None:
    assert validate_request(wire.Hello()) == DATA_TYPE_REQUIRED == "Parameter subscribe_data_type is required."
    assert validate_request(wire.Hello(subscribe_data_type=[])) == DATA_TYPE_REQUIRED
    assert "trades" in validate_request(wire.Hello(subscribe_data_type=["trade", "trades"]))
    assert validate_request(wire.Subscribe(subscribe_data_type=["book20", "ohlcv", "exrate"])) is None
