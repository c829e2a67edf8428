"""The Luzia dialect's pure part: client requests and their error codes, reply frames, and the
translation of normalized tickers into Luzia's ticker shape (exact numbers, nulls, times)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.dialects.luzia_proto import (
    LuziaCodec,
    RequestError,
    connected_frame,
    error_frame,
    parse_request,
    pong_frame,
    ticker_data,
)
from providers.luzia import normalize, wire
from schemas import Gap, Quote, Status, Ticker

T0 = 1_706_004_800_000_000_000  # 2024-01-23T10:13:20Z


def payload(frame: bytes) -> bytes:
    """The payload of one unmasked server frame."""
    assert frame[0] == 0x81  # FIN + text
    length = frame[1]
    return frame[2:] if length < 126 else frame[4:] if length == 126 else frame[10:]


def full_ticker(**overrides) -> Ticker:
    fields = dict(
        provider="lz", ts_gateway=T0 + 50_000_000, exchange="binance", symbol="BTC/USDT", ts_exchange=T0,
        last=Decimal("67432.10"), bid=Decimal("67430.00"), ask=Decimal("67434.20"), high=Decimal("68100.00"),
        low=Decimal("66800.00"), open=Decimal("67000.00"), volume=Decimal("12345.67"),
        quote_volume=Decimal("832456789.12"), change=Decimal("432.10"), change_percent=Decimal("0.645"),
    )
    return Ticker(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("message", "code", "text"),
    [
        ("{not json", "INVALID_JSON", "Invalid JSON"),
        (b"\xff", "INVALID_JSON", "Invalid JSON"),
        ("[1, 2]", "INVALID_REQUEST", "Missing required field: type"),
        ('{"channels": ["ticker:binance"]}', "INVALID_REQUEST", "Missing required field: type"),
        ('{"type": 7}', "INVALID_REQUEST", "Missing required field: type"),
        ('{"type": "subscribe"}', "INVALID_REQUEST", "Missing required field: channels"),
        ('{"type": "subscribe", "channels": []}', "INVALID_REQUEST", "Missing required field: channels"),
        ('{"type": "unsubscribe", "channels": "ticker:binance"}', "INVALID_REQUEST", "Missing required field: channels"),
        ('{"type": "subscribe", "channels": [1]}', "INVALID_REQUEST", "Missing required field: channels"),
        ('{"type": "hello"}', "UNKNOWN_TYPE", "Unknown message type: hello"),
    ],
)
def test_each_bad_message_earns_its_error_code(message, code, text):
    with pytest.raises(RequestError) as caught:
        parse_request(message)
    assert (caught.value.code, str(caught.value)) == (code, text)


def test_requests_parse_into_luzias_own_structs():
    assert parse_request('{"type":"ping"}') == wire.Ping()
    assert parse_request(b'{"type":"subscribe","channels":["ticker:binance:BTC-USDT"],"extra":1}') == wire.Subscribe(
        channels=["ticker:binance:BTC-USDT"]
    )
    assert parse_request('{"type":"unsubscribe","channels":["x"]}') == wire.Unsubscribe(channels=["x"])


def test_reply_frames_are_luzias_documented_messages():
    assert json.loads(payload(connected_frame("pro", 50))) == {
        "type": "connected", "message": "Connected to Luzia WebSocket API", "tier": "pro", "limits": {"maxSubscriptions": 50},
    }
    assert json.loads(payload(pong_frame(T0 + 123_456_789))) == {"type": "pong", "timestamp": "2024-01-23T10:13:20.123Z"}
    error = {"type": "error", "code": "SUBSCRIPTION_LIMIT", "message": "x"}
    assert json.loads(payload(error_frame("SUBSCRIPTION_LIMIT", "x"))) == error


def test_a_full_ticker_is_the_documented_frame_byte_for_byte():
    expected = (
        '{"type":"ticker","exchange":"binance","symbol":"BTC/USDT","data":{"symbol":"BTC/USDT","exchange":"binance",'
        '"last":67432.10,"bid":67430.00,"ask":67434.20,"high":68100.00,"low":66800.00,"open":67000.00,'
        '"close":67432.10,"volume":12345.67,"quoteVolume":832456789.12,"change":432.10,"changePercent":0.645,'
        '"timestamp":"2024-01-23T10:13:20.000Z"},"timestamp":"2024-01-23T10:13:20.050Z"}'
    )
    assert payload(LuziaCodec().frame(full_ticker())).decode() == expected  # the example on Luzia's API page


def test_unknown_fields_are_null_never_zero_and_close_follows_last():
    partial = Ticker(provider="ca", ts_gateway=T0, exchange="kraken", symbol="BTC/USD", bid=Decimal("1.5"))
    data = json.loads(payload(LuziaCodec().frame(partial)))["data"]
    assert data["bid"] == 1.5
    unknown = ("last", "ask", "high", "low", "open", "close", "volume", "quoteVolume", "change", "changePercent")
    assert all(data[name] is None for name in unknown)
    assert data["timestamp"] == "2024-01-23T10:13:20.000Z"  # no exchange time: the receive time


def test_observation_time_prefers_exchange_then_provider_time():
    ticker = full_ticker(ts_exchange=None, ts_provider=T0 + 7_000_000)
    assert ticker_data(ticker).timestamp == "2024-01-23T10:13:20.007Z"
    assert ticker_data(full_ticker()).timestamp == "2024-01-23T10:13:20.000Z"


def test_codec_shows_only_tickers_and_notes_their_exchanges():
    codec = LuziaCodec()
    others = [
        Quote(provider="ca", ts_gateway=T0, exchange="okx", symbol="BTC/USDT", bid_price=Decimal(1)),
        Status(provider="lz", ts_gateway=T0, state="rejected", stream="ticker:okx:BTC/USDT"),
        Gap(provider="lz", ts_gateway=T0, datatype="ticker", exchange="okx", symbol=None, from_ts=0, to_ts=1, cause="reconnect"),
    ]
    assert [codec.frame(e) for e in others] == [None, None, None]
    codec.frame(full_ticker())
    assert codec.exchanges == {"binance"}


prices = st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=8)


@given(last=prices, bid=prices | st.none(), volume=prices | st.none())
def test_numbers_keep_every_digit_through_our_own_luzia_decoder(last, bid, volume):
    ticker = full_ticker(last=last, bid=bid, volume=volume)
    decoded = wire.decode_server(payload(LuziaCodec().frame(ticker)))
    back = normalize.ticker_event(decoded, provider="lz", ts_gateway=ticker.ts_gateway)
    assert (back.last, back.bid, back.volume) == (last, bid, volume)
    assert str(back.last) == str(last)  # the same digits, not just the same value
    assert (back.exchange, back.symbol, back.ts_exchange, back.ts_provider) == ("binance", "BTC/USDT", T0, T0 + 50_000_000)
