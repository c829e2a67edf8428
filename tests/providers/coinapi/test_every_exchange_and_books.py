"""The adapter's streams of every exchange (`StreamKey(dt, None, None)`: no filter upstream) and
its `book` data type (`book50` upstream → `schemas.Book`), against the emulator under fake time,
plus the planning rules behind them."""

from __future__ import annotations

import trio
from hypothesis import given
from hypothesis import strategies as st

from providers.coinapi import client, feed, wire
from providers.coinapi.grammar import SymbolMapper
from providers.coinapi.server import Scope
from providers.common.emulator import FaultScript
from providers.common.market import DEFAULT_INSTRUMENTS, Instrument
from schemas import Book, BookLevel
from schemas.streams import StreamKey
from tests.providers.coinapi.support import KEY, ScriptedServer, plan_history, set_wanted

MAPPER = SymbolMapper()
EVERY_TRADE = StreamKey("trade", None, None)


async def test_a_stream_of_every_exchange_is_a_hello_without_filters(autojump_clock, nursery, emulator, make_adapter, recorder):
    adapter = make_adapter()
    set_wanted(adapter, {EVERY_TRADE, StreamKey("quote", "kraken", "BTC/USD")})
    await nursery.start(adapter.run)
    await trio.sleep(0.6)
    (hello,) = emulator.connections[0].messages
    assert hello == {"type": "hello", "apikey": KEY, "heartbeat": True, "subscribe_data_type": ["quote", "trade"]}
    assert {(t.exchange, t.symbol) for t in recorder.trades} == {(i.exchange, i.symbol) for i in DEFAULT_INSTRUMENTS}
    assert {(q.exchange, q.symbol) for q in recorder.quotes} == {("kraken", "BTC/USD")}  # the rest is dropped
    assert adapter.health().subscriptions == 1
    set_wanted(adapter, {StreamKey("quote", "kraken", "BTC/USD")})  # no longer everything: a replacing hello
    await trio.sleep(0.2)
    assert emulator.connections[0].messages[-1]["subscribe_filter_symbol_id"] == ["KRAKEN_SPOT_BTC_USD$"]


async def test_a_lost_connection_is_a_gap_per_exchange_of_an_every_exchange_stream(
    autojump_clock, nursery, emulator, make_adapter, recorder
):
    emulator.instruments = [Instrument("kraken", "BTC/USD"), Instrument("okx", "BTC/USDT")]
    emulator.faults.add(FaultScript(drop_after_frames=4))  # two steps of two trades, then dropped
    adapter = make_adapter()
    set_wanted(adapter, {EVERY_TRADE})
    await nursery.start(adapter.run)
    await trio.sleep(5)
    assert emulator.stats.connections_opened == 2
    gaps = recorder.gaps
    assert [(g.cause, g.datatype, g.exchange, g.symbol) for g in gaps] == [
        ("reconnect", "trade", "kraken", None), ("reconnect", "trade", "okx", None)]


async def test_a_book_stream_is_book50_upstream_and_book_events_out(autojump_clock, nursery, emulator, make_adapter, recorder):
    adapter = make_adapter()
    assert "book" in adapter.datatypes
    set_wanted(adapter, {StreamKey("book", "bitstamp", "BTC/USD")})
    await nursery.start(adapter.run)
    await trio.sleep(0.6)  # steps at 0, 0.25, 0.5
    (hello,) = emulator.connections[0].messages
    assert (hello["subscribe_data_type"], hello["subscribe_filter_symbol_id"]) == (["book50"], ["BITSTAMP_SPOT_BTC_USD$"])
    books = recorder.of(Book)
    assert [(b.exchange, b.symbol, b.sequence) for b in books] == [("bitstamp", "BTC/USD", n) for n in (1, 2, 3)]
    instrument = Instrument("bitstamp", "BTC/USD")
    tick = emulator.feed.tick(instrument, emulator.feed.head(instrument) - 1, 0)[0]
    bids, asks = feed.book_levels(tick, 50)
    assert books[-1].bids == tuple(BookLevel(level.price, level.size) for level in bids)
    assert books[-1].asks == tuple(BookLevel(level.price, level.size) for level in asks)
    assert len(books[-1].asks) == 50 and books[-1].asks[0].price == tick.ask and books[-1].bids[0].price == tick.bid


def _book50(sequence: int) -> str:
    return wire.encode_server(wire.Book50(
        symbol_id="KRAKEN_SPOT_BTC_USD", sequence=sequence, time_exchange="2025-01-14T16:49:58.3318050Z",
        time_coinapi="2025-01-14T16:49:58.3368845Z", asks=[wire.BookLevel(1, 2)], bids=[]))


async def test_a_book_sequence_jump_is_a_book_gap(autojump_clock, nursery, make_adapter, recorder) -> None:
    adapter = make_adapter(ScriptedServer([[_book50(1), _book50(2), 1.0, _book50(6)]]))
    set_wanted(adapter, {StreamKey("book", "kraken", None)})
    await nursery.start(adapter.run)
    await trio.sleep(2)
    (gap,) = recorder.gaps
    assert (gap.cause, gap.datatype, gap.exchange, gap.symbol, gap.missed) == ("sequence", "book", "kraken", "BTC/USD", 3)
    assert [(b.sequence, b.bids, b.asks) for b in recorder.of(Book)][-1] == (6, (), (BookLevel(1, 2),))


def test_an_empty_book_side_is_encoded_not_left_out() -> None:
    assert '"bids":[]' in _book50(1)


SYMBOLS = [("binance", "BTC/USDT"), ("okx", "BTC/USDT"), ("coinbase", "BTC/USD")]
UNIVERSE = [MAPPER.symbol_id(ex, sym) for ex, sym in SYMBOLS] + ["KRAKEN_SPOT_BTC_USD"]
keys = st.builds(
    lambda datatype, pick, width: StreamKey(
        datatype, None if width == 2 else SYMBOLS[pick][0], SYMBOLS[pick][1] if width == 0 else None
    ),
    st.sampled_from(["trade", "quote", "ticker", "book"]),
    st.integers(0, len(SYMBOLS) - 1),
    st.integers(0, 2),
)


def _delivered(messages: list[wire.ClientMessage]) -> set[tuple[str, str]]:
    scope = Scope()
    for message in messages:
        scope = scope.apply(message)
    return {(t, s) for t in ("trade", "quote", "ohlcv", "book50") for s in UNIVERSE if scope.wants(t, s)}


@given(st.lists(st.frozensets(keys, max_size=5), min_size=1, max_size=5))
def test_planned_messages_reach_the_target_scope_with_every_exchange_streams(history) -> None:
    planner, messages = plan_history(history, MAPPER)
    final = planner.target()
    expected = set() if final.empty else _delivered([client.hello(final, "k")])
    assert _delivered(messages) == expected
    if any(key.exchange is None for key in history[-1]):
        assert final.everything and expected == {(t, s) for t in final.data_types for s in UNIVERSE}
