"""Whatever a CoinAPI server (or a client of the CoinAPI-compatible endpoint) sends, the decoders
and the normalization have three outcomes only: normalized events whose values are within
`providers.common.values`' bounds and that every output encoder can write, a `MalformedFrame`
(counted by the adapter), or an `UnknownMessage`. Nothing else may leave: no RecursionError,
UnicodeError, ValueError, InvalidOperation or OverflowError."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from providers.coinapi import normalize, wire
from providers.coinapi.grammar import SymbolMapper
from providers.coinapi.streams import StreamRouter
from providers.common import values
from providers.common.errors import MalformedFrame, UnknownMessage
from schemas import Book, Event, Gap, Quote, Ticker, Trade, json_encoder, msgpack_encoder
from schemas.streams import StreamKey
from tests.providers.coinapi.hostile import (
    BASE_FRAMES,
    PATHOLOGICAL,
    SYMBOL,
    TIME_TEXTS,
    frame_of,
    hostile_frames,
    json_trees,
)

WANTED = [StreamKey(datatype, "coinbase", "BTC/USD") for datatype in ("trade", "quote", "ticker", "book")]
NOW_NS = 1_736_873_398_000_000_000


def _router(events: list[Event]) -> StreamRouter:
    router = StreamRouter("capi", SymbolMapper(), events.append, stale_after=30.0)
    router.add(WANTED, 0.0)
    return router


def _check_event(event: Event) -> None:
    """Every value within the bounds, and every output encoder able to write it."""
    json_encoder.encode(event)
    msgpack_encoder.encode(event)
    if isinstance(event, Trade):
        values.require_price(event.price)
        values.require_size(event.size)
    elif isinstance(event, Quote):
        values.require_price(event.bid_price, event.ask_price)
        values.require_size(event.bid_size, event.ask_size)
    elif isinstance(event, Book):
        for level in (*event.bids, *event.asks):
            values.require_price(level.price)
            values.require_size(level.size)
    elif isinstance(event, Ticker):
        values.require_price(event.last, event.bid, event.ask, event.open, event.high, event.low)
        values.require_size(event.volume)
        values.require_signed(event.change, event.change_percent)
    if not isinstance(event, Gap):
        values.require_ts(event.ts_gateway, getattr(event, "ts_exchange", None), getattr(event, "ts_provider", None))


def outcome(frame: str | bytes, router: StreamRouter | None = None, events: list[Event] | None = None) -> str:
    """What the adapter makes of one server frame: "events", "malformed" or "unknown"."""
    events = [] if events is None else events
    router = router or _router(events)
    try:
        message = wire.decode_server(frame)
        if isinstance(message, UnknownMessage):
            return "unknown"
        router.route({}, message, NOW_NS, 1.0)
    except MalformedFrame:
        return "malformed"
    for event in events:
        _check_event(event)
    return "events"


@given(hostile_frames())
def test_a_hostile_field_in_a_valid_frame_is_events_or_a_malformed_frame(frame: str) -> None:
    assert outcome(frame) in {"events", "malformed", "unknown"}


@given(json_trees)
@example("[" * 100_000)
@example('{"type":"trade",' + '"a":[' * 50_000)
def test_any_json_tree_as_a_whole_frame_is_malformed_unknown_or_events(tree: str) -> None:
    assert outcome(tree) in {"events", "malformed", "unknown"}
    assert outcome(tree.encode()) in {"events", "malformed", "unknown"}


@given(json_trees)
def test_any_json_tree_as_a_client_message_is_a_message_unknown_or_malformed(tree: str) -> None:
    """What the emulator and the gateway's CoinAPI endpoint read (`server.py` answers a
    MalformedFrame with CoinAPI's `error`)."""
    for frame in (tree, frame_of("hello", {"subscribe_data_type": tree}), frame_of("subscribe", {"apikey": tree})):
        message = _client_outcome(frame)
        assert isinstance(message, (wire.Hello, wire.Subscribe, wire.Unsubscribe, UnknownMessage, MalformedFrame))


def _client_outcome(frame: str | bytes) -> object:
    """The decoded client message, or the MalformedFrame raised (whose text is ours and short:
    never an echo of the whole frame)."""
    try:
        return wire.decode_client(frame)
    except MalformedFrame as exc:
        assert len(str(exc)) <= wire.MAX_REASON_CHARS  # noqa: PT017 -- the text of what was raised
        return exc


@pytest.mark.parametrize("frame", PATHOLOGICAL, ids=lambda f: repr(f[:24]))
def test_pathological_frames_never_escape_either_decoder(frame: str | bytes) -> None:
    assert outcome(frame) in {"malformed", "unknown"}
    message = _client_outcome(frame)
    assert isinstance(message, MalformedFrame) or (isinstance(message, UnknownMessage) and len(message.type) <= wire.MAX_ID_CHARS)


def _trade(**fields: str) -> str:
    return frame_of("trade", {**BASE_FRAMES["trade"], **fields})


@pytest.mark.parametrize(
    "price", ['"NaN"', '"Infinity"', '"-Infinity"', '"sNaN"', "1E+100", "-1", "1" + "0" * 13, "9" * 5000, "1E-31", "0." + "1" * 50]
)
def test_a_price_outside_the_bounds_is_a_malformed_frame(price: str) -> None:
    assert outcome(_trade(price=price)) == "malformed"
    assert outcome(frame_of("quote", {**BASE_FRAMES["quote"], "bid_price": price})) == "malformed"
    assert outcome(frame_of("book5", {**BASE_FRAMES["book5"], "asks": f'[{{"price":{price},"size":1}}]'})) == "malformed"


@pytest.mark.parametrize("size", ['"NaN"', "1E+19", "-0.5", "9" * 5000])
def test_a_size_outside_the_bounds_is_a_malformed_frame(size: str) -> None:
    assert outcome(_trade(size=size)) == "malformed"
    assert outcome(frame_of("ohlcv", {**BASE_FRAMES["ohlcv"], "volume_traded": size})) == "malformed"


@pytest.mark.parametrize("time", [t for t in TIME_TEXTS if "+99:99" not in t])  # (that one is a time in the window)
def test_a_time_no_market_has_is_a_malformed_frame(time: str) -> None:
    assert outcome(_trade(time_exchange=time)) == "malformed"
    assert outcome(frame_of("quote", {**BASE_FRAMES["quote"], "time_coinapi": time})) == "malformed"
    assert outcome(frame_of("ohlcv", {**BASE_FRAMES["ohlcv"], "time_period_start": time, "period_id": "null"})) == "malformed"


@pytest.mark.parametrize(
    ("field", "value"),
    [("sequence", "-1"), ("sequence", str(2**63)), ("uuid", '"' + "u" * 200 + '"'), ("symbol_id", '"' + "S" * 200 + '"')],
)
def test_ids_and_sequences_beyond_their_bounds_are_malformed(field: str, value: str) -> None:
    assert outcome(_trade(**{field: value})) == "malformed"


def test_the_valid_frames_become_events_and_wrong_types_in_unread_fields_do_not_matter() -> None:
    events: list[Event] = []
    router = _router(events)
    for kind in ("trade", "quote", "book5", "ohlcv"):
        assert outcome(frame_of(kind, {**BASE_FRAMES[kind], "unread": "[[{}]]", "new": "1E+400"}), router, events) == "events"
    assert [type(e).__name__ for e in events] == ["Trade", "Ticker", "Quote", "Ticker", "Book", "Ticker"]
    assert outcome(frame_of("exrate", {"rate": '"NaN-ish"', "x": "[" * 10 + "]" * 10})) == "unknown"


def test_a_ticker_percentage_beyond_the_bounds_is_unknown_not_a_malformed_trade() -> None:
    """A near-zero open and a huge last: no single value sent was wrong, the ratio is unknown."""
    builder = normalize.TickerBuilder("capi", "coinbase", "BTC/USD")
    day = wire.decode_server(frame_of("ohlcv", {**BASE_FRAMES["ohlcv"], "price_open": "1E-30"}))
    assert isinstance(day, wire.Ohlcv)
    builder.on_ohlcv(day, NOW_NS)
    trade = Trade(provider="capi", ts_gateway=NOW_NS, exchange="coinbase", symbol="BTC/USD", price=Decimal(10**12), size=Decimal(1))
    ticker = builder.on_trade(trade)
    assert ticker.change == Decimal(10**12) - Decimal("1E-30") and ticker.change_percent is None
    msgspec.json.encode(ticker)


@given(st.sampled_from(sorted(BASE_FRAMES)), st.binary(max_size=64))
def test_bytes_that_are_not_utf8_inside_a_frame_are_malformed(kind: str, junk: bytes) -> None:
    frame = frame_of(kind, BASE_FRAMES[kind]).encode().replace(SYMBOL.encode(), b"\xc3\x28" + junk, 1)
    assert outcome(frame) in {"malformed", "events", "unknown"}
