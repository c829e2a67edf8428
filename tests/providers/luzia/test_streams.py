"""What tickers mean for the wanted streams (`streams.Streams`), pure: routing to the ticker and the
derived quote, statuses about unserved and silent streams, and gaps with exact bounds."""

from __future__ import annotations

from providers.luzia.streams import DOES_NOT_FIT, Route, Streams
from schemas import Gap, Status
from schemas.streams import StreamKey

BTC_TICKER = StreamKey("ticker", "binance", "BTC/USDT")
BTC_QUOTE = StreamKey("quote", "binance", "BTC/USDT")
BINANCE = StreamKey("ticker", "binance", None)
EVERY = StreamKey("ticker", None, None)
NS = 1_000_000_000


def _streams(events: list) -> Streams:
    return Streams("lz", events.append, lambda: 100 * NS, stale_after=30.0, exchanges=("binance", "kraken"))


def test_a_ticker_feeds_its_own_streams_and_its_exchanges_wide_ones():
    events: list = []
    streams = _streams(events)
    assert streams.want(BTC_QUOTE, 0.0) == [("binance", "BTC/USDT")]
    assert streams.want(BTC_TICKER, 0.0) == []  # the same need: planned once
    assert streams.want(EVERY, 0.0) == [("binance", None), ("kraken", None)]
    streams.serve(("binance", "BTC/USDT"), "ticker:binance", 0.0)
    assert streams.route("binance", "BTC/USDT") == Route(True, True, (BTC_QUOTE, BTC_TICKER))
    assert streams.route("binance", "ETH/USDT") is None
    streams.serve(("binance", None), "ticker:binance", 0.0)
    assert streams.route("binance", "BTC/USDT") == Route(True, True, (BTC_QUOTE, BTC_TICKER, BINANCE))
    assert streams.route("binance", "ETH/USDT") == Route(True, False, (BINANCE,))
    assert streams.route("kraken", "BTC/USD") is None  # wanted, but nothing serves it yet
    assert streams.unwant(BTC_QUOTE) == [] and streams.route("binance", "BTC/USDT").quote is False
    assert not events


def test_an_unserved_stream_is_reported_once_with_the_servers_reason():
    events: list = []
    streams = _streams(events)
    streams.want(BTC_TICKER, 0.0)
    streams.refuse("ticker:binance:BTC/USDT", "INVALID_CHANNEL: Invalid channel: ticker:binance:BTC/USDT")
    streams.serve(("binance", "BTC/USDT"), None, 0.0)
    streams.serve(("binance", "BTC/USDT"), None, 1.0)
    streams.want(BTC_QUOTE, 2.0)  # joins the unserved need: reported too
    assert [(e.state, e.stream, e.reason) for e in events] == [
        ("rejected", "ticker:binance:BTC/USDT", "INVALID_CHANNEL: Invalid channel: ticker:binance:BTC/USDT"),
        ("rejected", "quote:binance:BTC/USDT", "INVALID_CHANNEL: Invalid channel: ticker:binance:BTC/USDT"),
    ]
    streams.want(StreamKey("ticker", "kraken", "BTC/USD"), 0.0)
    streams.serve(("kraken", "BTC/USD"), None, 0.0)
    assert events[-1].reason == DOES_NOT_FIT


def test_a_silent_stream_goes_stale_and_recovers_with_a_gap_of_its_silence():
    events: list = []
    streams = _streams(events)
    streams.want(BTC_TICKER, 10.0)
    streams.serve(("binance", "BTC/USDT"), "ticker:binance:BTC/USDT", 10.0)
    assert not streams.report_stale(39.9, 10)
    assert not events
    assert not streams.report_stale(40.0, 10)  # one, and no more to come
    assert not streams.report_stale(41.0, 10)  # said once
    assert [(e.state, e.stream) for e in events] == [("stale", "ticker:binance:BTC/USDT")]
    streams.seen((BTC_TICKER,), 45.5)
    status, gap = events[1:]
    assert (status.state, type(gap), gap.cause, gap.to_ts - gap.from_ts, gap.to_ts) == ("recovered", Gap, "stale", 35_500_000_000, 100 * NS)
    assert streams.staleness.stale_count == 0


def test_moving_to_another_channel_keeps_the_streams_clock():
    streams = _streams([])
    streams.want(BTC_TICKER, 0.0)
    streams.serve(("binance", "BTC/USDT"), "ticker:binance:BTC/USDT", 0.0)
    streams.serve(("binance", "BTC/USDT"), "ticker:binance", 20.0)  # collapsed to the exchange-wide channel
    assert streams.staleness.newly_stale(30.0) == [BTC_TICKER]


def test_a_reconnect_gap_covers_exactly_the_streams_of_the_channels_that_were_lost():
    events: list = []
    streams = _streams(events)
    for key in (BTC_TICKER, BTC_QUOTE, StreamKey("ticker", "kraken", "BTC/USD")):
        streams.want(key, 0.0)
    streams.serve(("binance", "BTC/USDT"), "ticker:binance:BTC/USDT", 0.0)
    streams.serve(("kraken", "BTC/USD"), "ticker:kraken:BTC/USD", 0.0)
    streams.reconnect_gaps({"ticker:binance:BTC/USDT", "ticker:okx"}, 1.0, 3.25)
    assert [(g.datatype, g.exchange, g.symbol, g.to_ts - g.from_ts) for g in events] == [
        ("quote", "binance", "BTC/USDT", 2_250_000_000),
        ("ticker", "binance", "BTC/USDT", 2_250_000_000),
    ]
    assert all(isinstance(g, Gap) and g.cause == "reconnect" for g in events)


def test_a_need_nobody_wants_any_more_is_forgotten_with_its_refusal():
    events: list = []
    streams = _streams(events)
    streams.want(BTC_TICKER, 0.0)
    streams.refuse("ticker:binance:BTC/USDT", "nope")
    assert streams.unwant(BTC_TICKER) == [("binance", "BTC/USDT")]
    streams.serve(("binance", "BTC/USDT"), None, 0.0)  # a late answer about a need that went: ignored
    streams.want(BTC_TICKER, 0.0)
    streams.serve(("binance", "BTC/USDT"), None, 0.0)
    assert [e.reason for e in events if isinstance(e, Status)] == [DOES_NOT_FIT]


def _many(events: list, count: int) -> tuple[Streams, list[StreamKey]]:
    streams = _streams(events)
    keys = [StreamKey("ticker", "binance", f"X{i}/USDT") for i in range(count)]
    for key in keys:
        streams.want(key, 0.0)
        streams.serve((key.exchange, key.symbol), "ticker:binance", 0.0)
    return streams, keys


def test_streams_going_stale_together_are_told_in_slices_oldest_first():
    events: list = []
    streams, keys = _many(events, 1000)
    told = []
    while streams.report_stale(30.0, 128):
        told.append(len(events))
    told.append(len(events))
    assert told == [128, 256, 384, 512, 640, 768, 896, 1000]
    assert [e.stream for e in events] == [k.channel() for k in keys]
    assert streams.staleness.stale_count == 1000


def test_a_stream_that_delivers_or_goes_before_its_turn_is_never_told_stale():
    events: list = []
    streams, keys = _many(events, 3)
    assert streams.report_stale(30.0, 1)  # X0 told; X1 and X2 wait for the next slice
    streams.seen((keys[1],), 30.5)  # fresh again before its turn: never stale, no gap
    assert streams.unwant(keys[2]) == [("binance", "X2/USDT")]
    assert not streams.report_stale(30.0, 1)
    assert [(e.state, e.stream) for e in events] == [("stale", "ticker:binance:X0/USDT")]
