"""Decoding Luzia frames and normalizing tickers: exact decimals, both timestamp forms, unknown
types skipped, malformed frames refused, and one decode per ticker."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.common.errors import MalformedFrame, UnknownMessage
from providers.luzia import normalize, wire
from schemas import Quote, Ticker, json_encoder
from schemas.timeutil import format_iso_ns

# Plain decimal notation as a JSON number: integer digits, optional fraction, within the price
# bounds of `providers.common.values` (0..10^12).
decimal_text = st.from_regex(r"(0|[1-9][0-9]{0,11})(\.[0-9]{1,12})?", fullmatch=True)
ns_ms = st.integers(1_230_768_000_000, 4_102_444_800_000).map(lambda ms: ms * 1_000_000)  # 2009..2100, whole ms


def _ticker_frame(number: str = "1", data_ts: str = '"2024-01-23T10:13:20.000Z"', outer_ts: str = '"2024-01-23T10:13:20.050Z"') -> str:
    return (
        '{"type":"ticker","exchange":"binance","symbol":"BTC/USDT","data":{"symbol":"BTC/USDT",'
        f'"exchange":"binance","last":{number},"bid":{number},"ask":{number},"timestamp":{data_ts}}},'
        f'"timestamp":{outer_ts}}}'
    )


@given(decimal_text)
def test_a_json_number_comes_out_as_the_same_decimal_string(text):
    message = wire.decode_server(_ticker_frame(text))
    event = normalize.ticker_event(message, provider="lz", ts_gateway=1)
    assert event.last == Decimal(text)
    encoded = msgspec.json.decode(json_encoder.encode(event))
    # The same digits and exponent (a zero with seven decimals is written `0E-7`, as Python does).
    exact = Decimal(text).as_tuple()
    assert Decimal(encoded["last"]).as_tuple() == Decimal(encoded["bid"]).as_tuple() == Decimal(encoded["ask"]).as_tuple() == exact


@given(st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=-10**12, max_value=10**12))
def test_wire_encode_decode_keeps_any_decimal_exactly(value):
    data = wire.TickerData(last=value)
    frame = wire.encode(wire.Ticker(exchange="binance", symbol="BTC/USDT", data=data))
    assert wire.decode_server(frame).data.last == value


@given(ns_ms)
def test_iso_and_unix_ms_timestamps_give_the_same_nanoseconds(ns):
    iso = f'"{format_iso_ns(ns, 3)}"'
    ms = str(ns // 1_000_000)
    from_iso = normalize.ticker_event(wire.decode_server(_ticker_frame(data_ts=iso, outer_ts=ms)), provider="lz", ts_gateway=0)
    from_ms = normalize.ticker_event(wire.decode_server(_ticker_frame(data_ts=ms, outer_ts=iso)), provider="lz", ts_gateway=0)
    assert from_iso.ts_exchange == from_ms.ts_exchange == ns
    assert from_iso.ts_provider == from_ms.ts_provider == ns


def test_absent_fields_are_none_never_zero():
    frame = '{"type":"ticker","exchange":"kraken","symbol":"BTC-USD","data":{"last":1.5}}'
    message = wire.decode_server(frame)
    ticker = normalize.ticker_event(message, provider="lz", ts_gateway=7)
    assert (ticker.exchange, ticker.symbol, ticker.last) == ("kraken", "BTC/USD", Decimal("1.5"))
    assert ticker.bid is ticker.change is ticker.change_percent is ticker.volume is None
    assert ticker.ts_exchange is ticker.ts_provider is None
    assert normalize.quote_event(message, provider="lz", ts_gateway=7) is None  # no bid, no ask: no quote


def test_quote_has_prices_but_no_sizes():
    quote = normalize.quote_event(wire.decode_server(_ticker_frame("2.50")), provider="lz", ts_gateway=7)
    assert (quote.bid_price, quote.ask_price, quote.bid_size, quote.ask_size) == (Decimal("2.50"), Decimal("2.50"), None, None)
    assert quote.sequence is None


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"announcement","text":"hello"}',
        '{"type":"trade","exchange":"binance"}',
        '{"type":"","x":1}',
    ],
)
def test_unknown_types_are_reported_as_such(frame):
    assert wire.decode_server(frame) == UnknownMessage(msgspec.json.decode(frame)["type"])


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        '{"type":"ticker","exchange":"binance",',
        "[1,2]",
        '{"no":"type"}',
        '{"type":5}',
        '{"type":"ticker","exchange":"binance","symbol":"BTC/USDT"}',  # no data
        '{"type":"ticker","exchange":"binance","symbol":"BTC/USDT","data":{"last":"abc"}}',
        '{"type":"subscribed"}',
        '{"type":"error","message":"no code"}',
    ],
)
def test_malformed_frames_raise(frame):
    with pytest.raises(MalformedFrame):
        wire.decode_server(frame)


@pytest.mark.parametrize(
    "frame",
    [
        _ticker_frame(data_ts='"yesterday"'),
        _ticker_frame(outer_ts="1.5"),
        _ticker_frame().replace('"symbol":"BTC/USDT","data"', '"symbol":"BTCUSDT","data"'),
    ],
)
def test_well_typed_but_unusable_tickers_raise_malformed_frame(frame):
    with pytest.raises(MalformedFrame):
        normalize.ticker_event(wire.decode_server(frame), provider="lz", ts_gateway=0)


def test_unknown_fields_are_ignored():
    message = wire.decode_server('{"type":"subscribed","channel":"ticker:binance","extra":{"x":[1]}}')
    assert message == wire.Subscribed(channel="ticker:binance")


class _Counting:
    def __init__(self, decoder):
        self.decoder, self.calls = decoder, 0

    def decode(self, frame):
        self.calls += 1
        return self.decoder.decode(frame)


def test_a_ticker_is_decoded_exactly_once(monkeypatch):
    server, by_type = _Counting(wire._server_decoder), _Counting(wire._type_decoder)
    monkeypatch.setattr(wire, "_server_decoder", server)
    monkeypatch.setattr(wire, "_type_decoder", by_type)
    for _ in range(3):
        assert type(wire.decode_server(_ticker_frame())) is wire.Ticker
    assert (server.calls, by_type.calls) == (3, 0)
    wire.decode_server('{"type":"announcement"}')  # only the unusual path looks twice
    assert (server.calls, by_type.calls) == (4, 1)


def test_client_messages_are_compact_json():
    assert wire.encode(wire.Subscribe(channels=["ticker:binance:BTC/USDT"])) == (
        '{"type":"subscribe","channels":["ticker:binance:BTC/USDT"]}'
    )
    assert wire.encode(wire.Ping()) == '{"type":"ping"}'


@pytest.mark.parametrize("value", ['"NaN"', '"Infinity"', '"-Infinity"', '"sNaN"'])
def test_a_ticker_with_a_non_finite_number_is_a_malformed_frame(value):
    """msgspec reads these as Decimals; JSON has no NaN, so none may reach an encoder."""
    head = '{"type":"ticker","exchange":"binance","symbol":"BTC/USDT","data":'
    message = wire.decode_server(head + '{"last":' + value + ',"bid":1}}')
    with pytest.raises(MalformedFrame):
        normalize.ticker_event(message, provider="lz", ts_gateway=1)
    bid_only = wire.decode_server(head + '{"bid":' + value + "}}")
    with pytest.raises(MalformedFrame):
        normalize.quote_event(bid_only, provider="lz", ts_gateway=1)


def test_one_message_gives_the_ticker_and_the_quote_wanted_with_the_same_times():
    message = wire.decode_server(_ticker_frame("2.5"))
    ticker, quote = normalize.events(message, provider="lz", ts_gateway=7, ticker=True, quote=True)
    assert (type(ticker), type(quote)) == (Ticker, Quote)
    assert (ticker.ts_exchange, ticker.ts_provider) == (quote.ts_exchange, quote.ts_provider) == (1706004800000000000, 1706004800050000000)
    assert normalize.events(message, provider="lz", ts_gateway=7, ticker=False, quote=False) == []
    no_sides = wire.decode_server('{"type":"ticker","exchange":"kraken","symbol":"BTC-USD","data":{"last":1.5}}')
    assert normalize.events(no_sides, provider="lz", ts_gateway=7, ticker=False, quote=True) == []
