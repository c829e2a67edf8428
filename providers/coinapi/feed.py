"""The emulated market as CoinAPI messages: the shared tick history, and one connection's view of
it. Pure: times are passed in.

Owns: `Feed` (every connection reads the same ticks of an instrument, in the same order, so two
overlapping connections deliver the same trades with the same uuids, as the real service does),
trade uuids, quotes, top-N books, full-book snapshot/deltas and OHLCV candles, and
`ConnectionFeed`: what one connection has read of each instrument, its full books and candles,
numbered by its own `server.Sequencer`.
Must never: do I/O, read a clock, or decide what a connection is subscribed to (that is its
`server.Scope`, passed in).
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from providers.coinapi import denormalize, wire
from providers.coinapi.grammar import SymbolMapper
from providers.coinapi.server import Scope, Sequencer
from providers.common.market import Instrument, Market, Tick
from schemas import Book, BookLevel, Quote, Trade
from schemas.timeutil import NS_PER_S, format_iso_ns

#: Ticks kept per instrument for connections that read behind the head; a connection further
#: behind than this skips ahead (like a real server dropping a slow consumer's backlog).
HISTORY: Final = 4096
#: The provider name of the normalized events the emulated market is first built as (never sent).
PROVIDER: Final = "coinapi"
#: CoinAPI's own receive time, this long after the exchange time (a fixed, plausible latency).
COINAPI_LATENCY_NS: Final = 5_000_000
#: Seconds between updates of an open OHLCV period.
OHLCV_EVERY: Final = 5.0
#: OHLCV periods the emulator produces, with their length in seconds.
PERIODS: Final = {"1SEC": 1, "1MIN": 60, "5MIN": 300, "1HRS": 3600, "1DAY": 86_400}
BOOK_DEPTH: Final = 20  # levels of the full `book` stream
TOP_N: Final = {"book5": 5, "book20": 20, "book50": 50}
#: The data types the emulator produces one numbered message of per step (ohlcv: see `_candles_of`).
_NUMBERED: Final = frozenset({"trade", "quote", "book", *TOP_N})
_NAMESPACE: Final = uuid.UUID("6f1c1b9e-3c1a-4c55-9a59-1d3a2b2f7e10")


def trade_uuid(seed: int, symbol_id: str, trade_id: int) -> str:
    """Deterministic: the same trade has the same uuid on every connection."""
    return str(uuid.uuid5(_NAMESPACE, f"{seed}:{symbol_id}:{trade_id}"))


@dataclass
class _History:
    ticks: deque[Tick]
    base: int = 0  # index of ticks[0]
    first_time_ns: int | None = None


class Feed:
    """The market's ticks by index, per instrument, generated on first read."""

    def __init__(self, market: Market, mapper: SymbolMapper | None = None) -> None:
        self.market = market
        self.mapper = mapper or SymbolMapper()
        self._history: dict[Instrument, _History] = {}
        self._symbol_ids: dict[Instrument, str] = {}

    def symbol_id(self, instrument: Instrument) -> str:
        found = self._symbol_ids.get(instrument)
        if found is None:
            found = self._symbol_ids[instrument] = self.mapper.symbol_id(instrument.exchange, instrument.symbol)
        return found

    def _of(self, instrument: Instrument) -> _History:
        history = self._history.get(instrument)
        if history is None:
            history = self._history[instrument] = _History(deque(maxlen=HISTORY))
        return history

    def head(self, instrument: Instrument) -> int:
        """The index of the next tick not generated yet."""
        history = self._of(instrument)
        return history.base + len(history.ticks)

    def first_time_ns(self, instrument: Instrument) -> int | None:
        return self._of(instrument).first_time_ns

    def tick(self, instrument: Instrument, index: int, time_ns: int) -> tuple[Tick, int]:
        """Tick `index` (generating it at `time_ns` if it is the head); a reader that fell out of
        the history gets the oldest kept tick instead. Returns (tick, its index)."""
        history = self._of(instrument)
        index = max(index, history.base)
        if index >= self.head(instrument):
            tick = self.market.step(instrument, time_ns)
            if len(history.ticks) == history.ticks.maxlen:
                history.base += 1
            history.ticks.append(tick)
            if history.first_time_ns is None:
                history.first_time_ns = time_ns
            return tick, self.head(instrument) - 1
        return history.ticks[index - history.base], index


def _stamped(tick: Tick) -> dict[str, Any]:
    """What every normalized event of a tick carries. The tick is generated at send time: that is
    CoinAPI's stamp; the exchange's came a little earlier."""
    instrument = tick.instrument
    return {
        "provider": PROVIDER, "ts_gateway": tick.time_ns, "exchange": instrument.exchange, "symbol": instrument.symbol,
        "ts_exchange": tick.time_ns - COINAPI_LATENCY_NS, "ts_provider": tick.time_ns,
    }


# Trades, quotes and top-N books are built as normalized events and put on the wire by
# `denormalize`, the one mapping the gateway's CoinAPI endpoint uses too.


def trade(tick: Tick, symbol_id: str, sequence: int, seed: int) -> wire.Trade:
    event = Trade(
        **_stamped(tick), price=tick.price, size=tick.size, side="buy" if tick.taker_buys else "sell",
        trade_id=trade_uuid(seed, symbol_id, tick.trade_id),
    )
    return denormalize.trade_message(event, symbol_id, sequence)


def quote(tick: Tick, symbol_id: str, sequence: int) -> wire.Quote:
    event = Quote(**_stamped(tick), bid_price=tick.bid, bid_size=tick.bid_size, ask_price=tick.ask, ask_size=tick.ask_size)
    return denormalize.quote_message(event, symbol_id, sequence)


def _step(price: Decimal) -> Decimal:
    """One unit of the price's last decimal place: the level spacing of the emulated book."""
    return Decimal(1).scaleb(price.as_tuple().exponent)  # type: ignore[arg-type]


def book_levels(tick: Tick, depth: int) -> tuple[tuple[BookLevel, ...], tuple[BookLevel, ...]]:
    """(bids best first, asks best first), built around the tick's best bid and ask."""
    step = _step(tick.bid)
    bids = tuple(BookLevel(tick.bid - step * i, tick.bid_size + i) for i in range(depth) if tick.bid - step * i > 0)
    asks = tuple(BookLevel(tick.ask + step * i, tick.ask_size + i) for i in range(depth))
    return bids, asks


def book_top(kind: str, tick: Tick, symbol_id: str, sequence: int) -> wire.BookTop:
    bids, asks = book_levels(tick, TOP_N[kind])
    message = denormalize.book_message(Book(**_stamped(tick), bids=bids, asks=asks), kind, symbol_id, sequence)
    assert not isinstance(message, wire.Book), "a top-N kind"
    return message


BookState = tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]  # (bids, asks): price → size


def _changes(before: dict[Decimal, Decimal], after: dict[Decimal, Decimal], best_first_high: bool) -> list[wire.BookLevel]:
    changed = {p: s for p, s in after.items() if before.get(p) != s}
    changed.update({p: Decimal(0) for p in before if p not in after})  # size 0 removes a level
    return [wire.BookLevel(p, changed[p]) for p in sorted(changed, reverse=best_first_high)]


def book_update(previous: BookState | None, tick: Tick, symbol_id: str, sequence: int) -> tuple[wire.Book, BookState]:
    """The full-book stream: a snapshot first, then deltas of the levels that changed."""
    bid_levels, ask_levels = book_levels(tick, BOOK_DEPTH)
    state = ({level.price: level.size for level in bid_levels}, {level.price: level.size for level in ask_levels})
    if previous is None:
        bids, asks = _changes({}, state[0], True), _changes({}, state[1], False)
    else:
        bids, asks = _changes(previous[0], state[0], True), _changes(previous[1], state[1], False)
    message = wire.Book(
        symbol_id=symbol_id, sequence=sequence, time_exchange=format_iso_ns(tick.time_ns - COINAPI_LATENCY_NS),
        time_coinapi=format_iso_ns(tick.time_ns), is_snapshot=previous is None, asks=asks, bids=bids,
    )
    return message, state


@dataclass
class Candle:
    """One OHLCV period of one symbol as the emulator aggregates it."""

    period_id: str
    start_ns: int
    time_open_ns: int
    time_close_ns: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int

    def message(self, symbol_id: str, sequence: int) -> wire.Ohlcv:
        end_ns = self.start_ns + PERIODS[self.period_id] * NS_PER_S
        return wire.Ohlcv(
            symbol_id=symbol_id,
            sequence=sequence,
            period_id=self.period_id,
            time_period_start=format_iso_ns(self.start_ns),
            time_period_end=format_iso_ns(end_ns),
            time_open=format_iso_ns(self.time_open_ns),
            time_close=format_iso_ns(self.time_close_ns),
            price_open=self.open,
            price_high=self.high,
            price_low=self.low,
            price_close=self.close,
            volume_traded=self.volume,
            trades_count=self.trades,
        )


def period_start(time_ns: int, period_id: str) -> int:
    length = PERIODS[period_id] * NS_PER_S
    return time_ns - time_ns % length


def candle_update(current: Candle | None, tick: Tick, period_id: str, first_time_ns: int) -> tuple[Candle | None, Candle]:
    """(the candle this tick closed, or None; the open candle including the tick). The day candle
    uses the tick's rolling statistics (the market's own 24 h view); shorter ones aggregate ticks."""
    start = period_start(tick.time_ns, period_id)
    closed = current if current is not None and current.start_ns < start else None
    if period_id == "1DAY":
        return closed, Candle(
            period_id, start, max(first_time_ns, start), tick.time_ns, tick.open_24h, tick.high_24h,
            tick.low_24h, tick.price, tick.volume_24h, tick.trade_id,
        )
    if current is None or closed is not None:
        return closed, Candle(period_id, start, tick.time_ns, tick.time_ns, tick.price, tick.price, tick.price, tick.price, tick.size, 1)
    current.high, current.low = max(current.high, tick.price), min(current.low, tick.price)
    current.close, current.time_close_ns = tick.price, tick.time_ns
    current.volume += tick.size
    current.trades += 1
    return None, current


class ConnectionFeed:
    """One connection's view of the shared `Feed`: where it reads each instrument (a connection
    subscribing later starts at the head), its full books and candles, and its sequence numbers."""

    def __init__(self, feed: Feed, seed: int, sequencer: Sequencer | None = None) -> None:
        self.feed, self.seed = feed, seed
        self.sequencer = sequencer or Sequencer()
        self._cursors: dict[Instrument, int] = {}
        self._books: dict[str, BookState] = {}
        self._candles: dict[tuple[str, str], Candle] = {}
        self._candle_sent_at: dict[tuple[str, str], float] = {}

    def step(self, instruments: Iterable[Instrument], scope: Scope, now: float, now_ns: int) -> list[wire.ServerMessage]:
        """One market step of every instrument the scope selects: their messages, in order."""
        out: list[wire.ServerMessage] = []
        for instrument in instruments:
            symbol_id = self.feed.symbol_id(instrument)
            types = sorted(t for t in scope.data_types if scope.wants(t, symbol_id))
            if not types:
                self._cursors.pop(instrument, None)  # a later subscription starts at the head again
                continue
            tick = self._next_tick(instrument, now_ns)
            for kind in types:
                out.extend(self._messages(kind, instrument, symbol_id, tick, scope, now))
        return out

    def _next_tick(self, instrument: Instrument, now_ns: int) -> Tick:
        index = self._cursors.get(instrument)
        tick, index = self.feed.tick(instrument, self.feed.head(instrument) if index is None else index, now_ns)
        self._cursors[instrument] = index + 1
        return tick

    def _messages(
        self, kind: str, instrument: Instrument, symbol_id: str, tick: Tick, scope: Scope, now: float
    ) -> list[wire.ServerMessage]:
        if kind == "ohlcv":
            return list(self._candles_of(instrument, symbol_id, tick, scope, now))
        if kind not in _NUMBERED:
            return []  # exrate, asset, exchange, symbol, book_l3: accepted, never produced
        sequence = self.sequencer.next(kind, symbol_id)
        if kind == "trade":
            return [trade(tick, symbol_id, sequence, self.seed)]
        if kind == "quote":
            return [quote(tick, symbol_id, sequence)]
        if kind in TOP_N:
            return [book_top(kind, tick, symbol_id, sequence)]
        update, self._books[symbol_id] = book_update(self._books.get(symbol_id), tick, symbol_id, sequence)
        return [update]

    def _candles_of(self, instrument: Instrument, symbol_id: str, tick: Tick, scope: Scope, now: float) -> list[wire.Ohlcv]:
        """A candle when first seen, when its period closes, and every 5 s while it is open."""
        out: list[wire.Ohlcv] = []
        first = self.feed.first_time_ns(instrument) or tick.time_ns
        for period in PERIODS:
            if not scope.wants_period(period):
                continue
            key = (symbol_id, period)
            closed, current = candle_update(self._candles.get(key), tick, period, first)
            self._candles[key] = current
            if closed is not None:
                out.append(closed.message(symbol_id, self.sequencer.next("ohlcv", symbol_id)))
            last = self._candle_sent_at.get(key)
            if closed is not None or last is None or now - last >= OHLCV_EVERY:
                out.append(current.message(symbol_id, self.sequencer.next("ohlcv", symbol_id)))
                self._candle_sent_at[key] = now
        return out
