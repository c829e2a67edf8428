"""Decoding (any field order, unknown and malformed frames), exact decimals and timestamps end
to end, and the normalization rules (sides, zero sizes, the derived ticker)."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.coinapi import normalize, wire
from providers.coinapi.denormalize import quote_message, trade_message
from providers.common.errors import MalformedFrame, UnknownMessage
from providers.common.values import MAX_TS_NS, MIN_TS_NS
from schemas import Quote, Trade, json_encoder
from schemas.timeutil import format_iso_ns, parse_iso_ns
from tests.providers.coinapi.support import trade_frame

CONTEXT = dict(provider="capi", exchange="coinbase", symbol="BTC/USD", ts_gateway=42)


def test_type_may_come_anywhere_in_the_object() -> None:
    first = '{"type":"trade",' + trade_frame("X_SPOT_A_B", 1, "u")[1:].replace(',"type":"trade"', "")
    assert wire.decode_server(first) == wire.decode_server(trade_frame("X_SPOT_A_B", 1, "u"))


def test_unknown_types_are_returned_and_malformed_frames_raised() -> None:
    """The one convention of every provider package (providers.common.errors)."""
    unknown = wire.decode_server('{"rate":1.5,"asset_id_base":"BTC","type":"exrate"}')
    assert unknown == UnknownMessage("exrate") and unknown.type == "exrate"
    assert wire.decode_client('{"type":"greet"}') == UnknownMessage("greet")
    deep = "[" * 100_000 + "]" * 100_000
    for frame in ['{"type":"trade"', "[1,2]", '{"no":"type"}', '{"type":7}', '{"type":"trade","price":1}', b"\xff", deep]:
        with pytest.raises(MalformedFrame):
            wire.decode_server(frame)
    for frame in ['{"type":"hello"', "[1,2]", '{"no":"type"}', '{"type":"hello","heartbeat":"yes"}', deep]:
        with pytest.raises(MalformedFrame):
            wire.decode_client(frame)


@pytest.mark.parametrize("value", ['"NaN"', '"Infinity"', '"-Infinity"'])
def test_a_number_that_is_not_finite_is_a_malformed_frame(value: str) -> None:
    """msgspec reads these as Decimals; no encoder of a CoinAPI number could write them back."""
    trade = wire.decode_server(trade_frame("COINBASE_SPOT_BTC_USD", 1, "u", price=value))
    with pytest.raises(MalformedFrame):
        normalize.to_trade(trade, **CONTEXT)
    quote = wire.decode_server('{"type":"quote","symbol_id":"S","time_exchange":"2025-01-14T16:49:58Z",'
                               f'"time_coinapi":"2025-01-14T16:49:58Z","bid_price":{value}}}')
    with pytest.raises(MalformedFrame):
        normalize.to_quote(quote, **CONTEXT)
    book = wire.decode_server('{"type":"book5","symbol_id":"S","time_exchange":"2025-01-14T16:49:58Z",'
                              f'"time_coinapi":"2025-01-14T16:49:58Z","asks":[{{"price":{value},"size":1}}],"bids":[]}}')
    with pytest.raises(MalformedFrame):
        normalize.to_book(book, **CONTEXT)


def test_unknown_fields_are_ignored() -> None:
    message = wire.decode_server('{"type":"hearbeat","new_field":{"x":[1]}}')
    assert message == wire.Hearbeat()


def test_server_frames_are_encoded_with_type_last() -> None:
    text = wire.encode_server(wire.Error(message="Invalid API key"))
    assert text == '{"message":"Invalid API key","type":"error"}'
    assert wire.encode_server(wire.Hearbeat()) == '{"type":"hearbeat"}'
    assert wire.encode_client(wire.Hello(subscribe_data_type=["trade"])) == '{"type":"hello","subscribe_data_type":["trade"]}'


# ≤ 19 digits and ≤ 9 decimals, as the spec says CoinAPI's numbers are.
wire_decimals = st.decimals(min_value=0, max_value=Decimal("9999999999.999999999"), places=9, allow_nan=False).flatmap(
    lambda d: st.integers(0, 9).map(lambda places: d.quantize(Decimal(1).scaleb(-places)))
)


@given(wire_decimals, wire_decimals.filter(lambda d: d != 0))
def test_decimals_are_exact_from_wire_number_to_normalized_string(price: Decimal, size: Decimal) -> None:
    price_text, size_text = format(price, "f"), format(size, "f")
    message = wire.decode_server(trade_frame("COINBASE_SPOT_BTC_USD", 1, "u", price=price_text, size=size_text))
    encoded = msgspec.json.decode(json_encoder.encode(normalize.to_trade(message, **CONTEXT)))
    for out, text in ((encoded["price"], price_text), (encoded["size"], size_text)):
        # Same digits and exponent. Python spells a Decimal below 1E-6 in E notation
        # (str(Decimal("0.0000005")) == "5E-7"), which is schemas.json_encoder's choice, not ours.
        assert Decimal(out).as_tuple() == Decimal(text).as_tuple()
        if Decimal(text).adjusted() >= -6:
            assert out == text


# 1970-01-01 .. 9999-12-31 (schemas.timeutil handles no earlier times; CoinAPI sends none), in ns.
ns_times = st.integers(min_value=0, max_value=253_402_300_799 * 10**9 + 999_999_899)


@given(ns_times)
def test_seven_digit_timestamps_are_exact_to_100_ns(ns: int) -> None:
    text = format_iso_ns(ns, 7)
    assert len(text.split(".")[1]) == 8  # seven digits and the Z
    assert parse_iso_ns(text) == ns - ns % 100  # truncated, never rounded


@given(st.integers(min_value=MIN_TS_NS, max_value=MAX_TS_NS - 100))
def test_timestamps_are_exact_through_decode_and_normalize(ns: int) -> None:
    frame = wire.encode_server(wire.Quote(symbol_id="S", time_exchange=format_iso_ns(ns), time_coinapi=format_iso_ns(ns + 100)))
    quote = normalize.to_quote(wire.decode_server(frame), **CONTEXT)
    assert (quote.ts_exchange, quote.ts_provider) == (ns - ns % 100, ns - ns % 100 + 100)


def _trade(side: str = "BUY", size: str = "1", price: str = "100") -> wire.Trade:
    return wire.decode_server(trade_frame("COINBASE_SPOT_BTC_USD", 9, "u1", price=price, size=size).replace("BUY", side))


@pytest.mark.parametrize(
    ("side", "expected"),
    [("BUY", "buy"), ("BUY_ESTIMATED", "buy"), ("SELL", "sell"), ("SELL_ESTIMATED", "sell"), ("UNKNOWN", "unknown"), ("NEW", "unknown")],
)
def test_taker_side_mapping(side: str, expected: str) -> None:
    assert normalize.to_trade(_trade(side), **CONTEXT).side == expected


def test_a_size_zero_trade_is_an_index_tick_not_a_trade() -> None:
    assert normalize.to_trade(_trade(size="0"), **CONTEXT) is None


def test_quote_size_zero_means_unknown() -> None:
    message = wire.Quote(
        symbol_id="S", time_exchange=format_iso_ns(MIN_TS_NS), time_coinapi=format_iso_ns(MIN_TS_NS),
        bid_price=Decimal("1.5"), bid_size=Decimal("0"), ask_price=Decimal("1.6"), ask_size=Decimal("0.0"),
    )
    quote = normalize.to_quote(message, **CONTEXT)
    assert (quote.bid_price, quote.bid_size, quote.ask_price, quote.ask_size) == (Decimal("1.5"), None, Decimal("1.6"), None)


def _day(start: str, open_: str, sequence: int = 1) -> wire.Ohlcv:
    end = format_iso_ns(parse_iso_ns(start) + 86_400 * 10**9)
    return wire.Ohlcv(
        symbol_id="S", sequence=sequence, time_period_start=start, time_period_end=end,  # no period_id: told by length
        price_open=Decimal(open_), price_high=Decimal("120"), price_low=Decimal("90"), volume_traded=Decimal("5.5"),
    )


def test_ticker_builder_derives_only_what_it_knows() -> None:
    builder = normalize.TickerBuilder("capi", "coinbase", "BTC/USD")
    first = builder.on_trade(normalize.to_trade(_trade(price="110"), **CONTEXT))
    assert (first.last, first.open, first.change, first.change_percent, first.bid) == (Decimal("110"), None, None, None, None)
    ticker = builder.on_ohlcv(_day("2025-01-14T00:00:00.0000000Z", "100"), ts_gateway=43)
    assert (ticker.open, ticker.high, ticker.low, ticker.volume) == (Decimal(100), Decimal(120), Decimal(90), Decimal("5.5"))
    assert (ticker.change, ticker.change_percent, ticker.quote_volume) == (Decimal(10), Decimal("10.000000"), None)
    assert ticker.ts_gateway == 43
    quote = Quote(provider="capi", ts_gateway=44, exchange="coinbase", symbol="BTC/USD", bid_price=Decimal(109), ask_price=Decimal(111))
    assert (builder.on_quote(quote).bid, builder.on_quote(quote).ask) == (Decimal(109), Decimal(111))
    assert builder.on_ohlcv(_day("2025-01-13T00:00:00.0000000Z", "50"), ts_gateway=45) is None  # yesterday's candle
    hourly = wire.Ohlcv(symbol_id="S", period_id="1HRS", time_period_start="2025-01-14T01:00:00Z", time_period_end="2025-01-14T02:00:00Z")
    assert builder.on_ohlcv(hourly, ts_gateway=46) is None
    assert builder.open == Decimal(100)


def test_change_percent_of_a_zero_open_is_unknown() -> None:
    builder = normalize.TickerBuilder("capi", "x", "A/B")
    builder.on_ohlcv(_day("2025-01-14T00:00:00Z", "0"), ts_gateway=1)
    ticker = builder.on_trade(Trade(provider="capi", ts_gateway=2, exchange="x", symbol="A/B", price=Decimal(3), size=Decimal(1)))
    assert (ticker.change, ticker.change_percent) == (Decimal(3), None)


# ---------------------------------------------------------------------------- the way back

positive_decimals = wire_decimals.filter(lambda d: d != 0)


@given(
    positive_decimals, positive_decimals, st.sampled_from(["buy", "sell", "unknown"]),
    st.integers(MIN_TS_NS, MAX_TS_NS - 10**9).map(lambda ns: ns - ns % 100),  # room for the latency before 2100
    st.integers(0, 10**9).map(lambda ns: ns - ns % 100),
)
def test_trades_survive_denormalize_encode_decode_normalize(price, size, side, ts_exchange, latency) -> None:
    event = Trade(
        provider="capi", ts_gateway=42, exchange="coinbase", symbol="BTC/USD", ts_exchange=ts_exchange,
        ts_provider=ts_exchange + latency, sequence=7, price=price, size=size, side=side, trade_id="t-1",
    )
    frame = wire.encode_server(trade_message(event, "COINBASE_SPOT_BTC_USD", 7))
    assert frame.endswith(',"type":"trade"}')
    assert normalize.to_trade(wire.decode_server(frame), **CONTEXT) == event


def test_quotes_map_unknown_sizes_to_zero_and_back() -> None:
    event = Quote(provider="capi", ts_gateway=MIN_TS_NS, exchange="coinbase", symbol="BTC/USD", bid_price=Decimal("1.5"), ask_price=Decimal("1.6"), ask_size=Decimal("2"))
    message = quote_message(event, "COINBASE_SPOT_BTC_USD", 3)
    assert (message.bid_size, message.ask_size, message.time_exchange) == (Decimal(0), Decimal(2), "2009-01-01T00:00:00.0000000Z")
    back = normalize.to_quote(wire.decode_server(wire.encode_server(message)), **{**CONTEXT, "ts_gateway": MIN_TS_NS})
    assert (back.bid_size, back.ask_size, back.bid_price, back.sequence) == (None, Decimal(2), Decimal("1.5"), 3)
