"""Whatever a Luzia server sends, the decoder and the normalization have three outcomes only:
normalized events whose values are within `providers.common.values`' bounds and that every output
encoder can write (native JSON and MessagePack, and Luzia's own framing of a ticker), a
`MalformedFrame` (counted by the adapter), or an `UnknownMessage`. The same for what a client of a
Luzia server sends (`decode_client`): a request, `MalformedFrame` (`NotJson` for INVALID_JSON), or
`UnknownMessage`. Nothing else may leave: no RecursionError, UnicodeError, ValueError,
InvalidOperation or OverflowError."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from providers.common import values
from providers.common.errors import MalformedFrame, UnknownMessage
from providers.luzia import denormalize, normalize, wire
from schemas import Quote, Ticker, json_encoder, msgpack_encoder
from tests.providers.luzia.hostile import (
    BASE_FRAMES,
    HOSTILE_FRAMES,
    LUZIA_TIMES,
    NUMBER_TEXTS,
    PATHOLOGICAL,
    STRING_TEXTS,
    TICKER_DATA,
    TIME_TEXTS,
    frame_of,
    hostile_frames,
    hostile_requests,
    json_trees,
)

PRICES = ("last", "bid", "ask", "high", "low", "open", "close")


def _check_event(event: Ticker | Quote) -> None:
    """Every value within the bounds, and every output encoder able to write it."""
    json_encoder.encode(event)
    msgpack_encoder.encode(event)
    values.require_ts(event.ts_gateway, event.ts_exchange, event.ts_provider)
    if isinstance(event, Ticker):
        values.require_price(event.last, event.bid, event.ask, event.open, event.high, event.low)
        values.require_size(event.volume, event.quote_volume)
        values.require_signed(event.change, event.change_percent)
        wire.encode(denormalize.ticker_message(event))  # what the Luzia-compatible endpoint sends
    else:
        values.require_price(event.bid_price, event.ask_price)


def outcome(frame: str | bytes) -> str:
    """What the adapter makes of one server frame: "events", "message", "malformed" or "unknown"."""
    try:
        message = wire.decode_server(frame)
        if isinstance(message, UnknownMessage):
            return "unknown"
        if type(message) is not wire.Ticker:
            return "message"
        normalize.instrument_of(message)
        events = [normalize.ticker_event(message, provider="lz", ts_gateway=values.MIN_TS_NS)]
        quote = normalize.quote_event(message, provider="lz", ts_gateway=values.MIN_TS_NS)
    except MalformedFrame:
        return "malformed"
    for event in [*events, quote] if quote is not None else events:
        _check_event(event)
    return "events"


def test_the_base_frames_are_valid():
    for kind, fields in BASE_FRAMES.items():
        assert outcome(frame_of(kind, fields)) == ("events" if kind == "ticker" else "message")


@given(hostile_frames())
@example('{"type":"pong","timestamp":' + "9" * 5000 + "}")
@example('{"type":"connected","tier":{"a":' + "[" * 500 + "]" * 500 + "}}")
def test_a_hostile_server_frame_has_one_of_the_three_outcomes(frame):
    outcome(frame)  # raises if anything else leaves
    outcome(frame.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("frame", HOSTILE_FRAMES, ids=range(len(HOSTILE_FRAMES)))
def test_each_class_of_hostile_frame_is_malformed(frame):
    assert outcome(frame) == "malformed"


@pytest.mark.parametrize("frame", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_a_pathological_server_frame_is_malformed_or_unknown(frame):
    assert outcome(frame) in ("malformed", "unknown")


@pytest.mark.parametrize(
    "frame",
    [
        frame_of("ticker", BASE_FRAMES["ticker"], {"last": "1", "x": "[" * 100_000 + "]" * 100_000}),
        '{"type":"ticker","exchange":' + "[" * 100_000,
        '{"type":"zz","x":' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"type":"ping","x":"\ud800"}',
        b'{"type":"ticker","exchange":"\xff"}',
        frame_of("ticker", {**BASE_FRAMES["ticker"], "symbol": '"' + "B" * 10_000 + '/USDT"'}),
        frame_of("subscribed", {"channel": '"ticker:binance:' + "A" * 10_000 + '"'}),
        frame_of("connected", {"limits": '{"maxSubscriptions":' + "9" * 5000 + "}"}),
    ],
    ids=["deep-unread", "deep-truncated", "deep-unknown", "surrogate", "bad-utf8", "long-symbol", "long-channel", "huge-limit"],
)
def test_hand_built_hostile_frames_are_malformed(frame):
    assert outcome(frame) == "malformed"


@pytest.mark.parametrize("text", NUMBER_TEXTS + STRING_TEXTS + ("-1", "-0.5", "1E+12", "1000000000000.1"))
@pytest.mark.parametrize("field", [*PRICES, "volume", "change"])
def test_an_extreme_value_in_a_read_field_is_refused_or_within_bounds(field, text):
    data = {**TICKER_DATA, field: text}
    assert outcome(frame_of("ticker", BASE_FRAMES["ticker"], data)) in ("events", "malformed")


@pytest.mark.parametrize("text", ['"NaN"', '"Infinity"', "1E+100", "9" * 5000, "-1", "1E-40"])
def test_a_price_no_market_has_is_a_malformed_frame(text):
    for field in PRICES:
        assert outcome(frame_of("ticker", BASE_FRAMES["ticker"], {**TICKER_DATA, field: text})) == "malformed"


#: Of the hostile times, the one a Luzia ticker may carry: Unix ms of 2025 is Luzia's other form.
_PLAUSIBLE = {"1736873398000"}


@pytest.mark.parametrize("text", [t for t in TIME_TEXTS + LUZIA_TIMES if t not in _PLAUSIBLE])
@pytest.mark.parametrize("where", ["outer", "data"])
def test_a_timestamp_no_market_has_is_a_malformed_frame(where, text):
    fields, data = dict(BASE_FRAMES["ticker"]), dict(TICKER_DATA)
    (fields if where == "outer" else data)["timestamp"] = text
    assert outcome(frame_of("ticker", fields, data)) == "malformed"


@pytest.mark.parametrize(
    ("field", "text"),
    [("message", "12"), ("tier", "[1,{}]"), ("message", "9" * 5000), ("tier", "1e400")],
)
def test_fields_nobody_reads_take_anything(field, text):
    message = wire.decode_server(frame_of("connected", {**BASE_FRAMES["connected"], field: text}))
    assert type(message) is wire.Connected and message.limits == wire.Limits(maxSubscriptions=50)


def test_a_pong_and_a_tickers_inner_ids_are_not_read():
    assert type(wire.decode_server('{"type":"pong","timestamp":{"odd":[1e400]}}')) is wire.Pong
    data = {**TICKER_DATA, "symbol": "12", "exchange": "9" * 5000}
    assert outcome(frame_of("ticker", BASE_FRAMES["ticker"], data)) == "events"


# ---- what a client of a Luzia server sends ------------------------------------------------------


def client_outcome(frame: str | bytes) -> str:
    try:
        message = wire.decode_client(frame)
    except wire.NotJson:
        return "INVALID_JSON"
    except MalformedFrame:
        return "INVALID_REQUEST"
    if isinstance(message, UnknownMessage):
        assert isinstance(message.type, str) and len(message.type) <= wire.MAX_TYPE_LENGTH
        return "UNKNOWN_TYPE"
    if type(message) is not wire.Ping:
        assert message.channels and all(isinstance(c, str) for c in message.channels)
    return "request"


@given(hostile_requests())
@example('{"type":"subscribe","channels":["ticker:binance:BTC/USDT"],"x":' + "[" * 100_000 + "}")
def test_a_hostile_client_request_has_one_of_the_outcomes(frame):
    client_outcome(frame)
    client_outcome(frame.encode("utf-8", "surrogatepass"))


@given(json_trees)
def test_any_json_tree_as_a_whole_request_has_one_of_the_outcomes(tree):
    assert client_outcome(tree) in ("INVALID_JSON", "INVALID_REQUEST", "UNKNOWN_TYPE", "request")


@pytest.mark.parametrize(
    ("frame", "answer"),
    [
        ("[" * 100_000, "INVALID_JSON"),
        ("{" * 100_000, "INVALID_JSON"),
        ('{"type":"subscribe","channels":' + "[" * 100_000, "INVALID_JSON"),
        ('{"type":"ping","x":"\ud800"}', "INVALID_JSON"),
        (b"\xff\xfe", "INVALID_JSON"),
        (b'{"type":"ping","x":"\xc3\x28"}', "INVALID_JSON"),
        ("not json", "INVALID_JSON"),
        ("", "INVALID_JSON"),
        ("[1]", "INVALID_REQUEST"),
        ('{"type":5}', "INVALID_REQUEST"),
        ('{"type":"' + "t" * 100_000 + '"}', "UNKNOWN_TYPE"),  # named by its first MAX_TYPE_LENGTH characters
        ('{"type":"subscribe"}', "INVALID_REQUEST"),
        ('{"type":"subscribe","channels":[]}', "INVALID_REQUEST"),
        ('{"type":"subscribe","channels":[1]}', "INVALID_REQUEST"),
        ('{"type":"subscribe","channels":"ticker:binance"}', "INVALID_REQUEST"),
        ('{"type":"trade"}', "UNKNOWN_TYPE"),
        ('{"type":"ping","x":' + "9" * 5000 + "}", "request"),
        ('{"type":"unsubscribe","channels":["anything"]}', "request"),
    ],
)
def test_hand_built_client_requests_get_luzias_answer(frame, answer):
    assert client_outcome(frame) == answer


@given(st.sampled_from(["subscribe", "unsubscribe"]), st.lists(st.text(max_size=20), min_size=1, max_size=5))
def test_a_well_formed_request_decodes_to_itself(kind, channels):
    frame = msgspec.json.encode({"type": kind, "channels": channels})
    message = wire.decode_client(frame)
    assert type(message) is (wire.Subscribe if kind == "subscribe" else wire.Unsubscribe)
    assert message.channels == channels
