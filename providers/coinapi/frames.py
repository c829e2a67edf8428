"""The emulator's pure core: the shared tick history and CoinAPI frames built from market ticks.

Owns: `Feed` (every connection reads the same ticks of an instrument, in the same order, so two
overlapping connections deliver the same trades with the same uuids, as the real service does),
trade uuids, quotes, top-N books, full-book snapshot/deltas and OHLCV candles.
Must never: do I/O, read a clock (times are passed in), or keep per-connection state (that lives
with the connection in `emulator.py`).
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from providers.coinapi import wire
from providers.common.market import Instrument, Market, Tick
from schemas.timeutil import NS_PER_S, format_iso_ns

#: Ticks kept per instrument for connections that read behind the head; a connection further
#: behind than this skips ahead (like a real server dropping a slow consumer's backlog).
HISTORY: Final = 4096
#: CoinAPI's own receive time, this long after the exchange time (a fixed, plausible latency).
COINAPI_LATENCY_NS: Final = 5_000_000
#: OHLCV periods the emulator produces, with their length in seconds.
PERIODS: Final = {"1SEC": 1, "1MIN": 60, "5MIN": 300, "1HRS": 3600, "1DAY": 86_400}
BOOK_DEPTH: Final = 20  # levels of the full `book` stream
TOP_N: Final = {"book5": 5, "book20": 20, "book50": 50}
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

    def __init__(self, market: Market) -> None:
        self.market = market
        self._history: dict[Instrument, _History] = {}

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


def _times(tick: Tick) -> tuple[str, str]:
    # The tick is generated at send time: that is CoinAPI's stamp; the exchange's came a little earlier.
    return format_iso_ns(tick.time_ns - COINAPI_LATENCY_NS), format_iso_ns(tick.time_ns)


def trade(tick: Tick, symbol_id: str, sequence: int, seed: int) -> wire.Trade:
    exchange_time, coinapi_time = _times(tick)
    return wire.Trade(
        time_exchange=exchange_time,
        time_coinapi=coinapi_time,
        uuid=trade_uuid(seed, symbol_id, tick.trade_id),
        price=tick.price,
        size=tick.size,
        taker_side="BUY" if tick.taker_buys else "SELL",
        symbol_id=symbol_id,
        sequence=sequence,
    )


def quote(tick: Tick, symbol_id: str, sequence: int) -> wire.Quote:
    exchange_time, coinapi_time = _times(tick)
    return wire.Quote(
        symbol_id=symbol_id,
        sequence=sequence,
        time_exchange=exchange_time,
        time_coinapi=coinapi_time,
        ask_price=tick.ask,
        ask_size=tick.ask_size,
        bid_price=tick.bid,
        bid_size=tick.bid_size,
    )


def _step(price: Decimal) -> Decimal:
    """One unit of the price's last decimal place: the level spacing of the emulated book."""
    return Decimal(1).scaleb(price.as_tuple().exponent)  # type: ignore[arg-type]


def book_levels(tick: Tick, depth: int) -> tuple[list[wire.BookLevel], list[wire.BookLevel]]:
    """(bids best first, asks best first), built around the tick's best bid and ask."""
    step = _step(tick.bid)
    bids = [
        wire.BookLevel(tick.bid - step * i, tick.bid_size + i)
        for i in range(depth)
        if tick.bid - step * i > 0
    ]
    asks = [wire.BookLevel(tick.ask + step * i, tick.ask_size + i) for i in range(depth)]
    return bids, asks


def book_top(kind: str, tick: Tick, symbol_id: str, sequence: int) -> wire.Book5 | wire.Book20 | wire.Book50:
    cls = {"book5": wire.Book5, "book20": wire.Book20, "book50": wire.Book50}[kind]
    bids, asks = book_levels(tick, TOP_N[kind])
    exchange_time, coinapi_time = _times(tick)
    return cls(
        symbol_id=symbol_id, sequence=sequence, time_exchange=exchange_time, time_coinapi=coinapi_time, asks=asks, bids=bids
    )


BookState = tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]  # (bids, asks): price → size


def _changes(before: dict[Decimal, Decimal], after: dict[Decimal, Decimal], best_first_high: bool) -> list[wire.BookLevel]:
    changed = {p: s for p, s in after.items() if before.get(p) != s}
    changed.update({p: Decimal(0) for p in before if p not in after})  # size 0 removes a level
    return [wire.BookLevel(p, changed[p]) for p in sorted(changed, reverse=best_first_high)]


def book_update(previous: BookState | None, tick: Tick, symbol_id: str, sequence: int) -> tuple[wire.Book, BookState]:
    """The full-book stream: a snapshot first, then deltas of the levels that changed."""
    bids, asks = book_levels(tick, BOOK_DEPTH)
    state = ({level.price: level.size for level in bids}, {level.price: level.size for level in asks})
    exchange_time, coinapi_time = _times(tick)
    common = dict(symbol_id=symbol_id, sequence=sequence, time_exchange=exchange_time, time_coinapi=coinapi_time)
    if previous is None:
        return wire.Book(is_snapshot=True, asks=asks, bids=bids, **common), state
    delta = wire.Book(
        is_snapshot=False, asks=_changes(previous[1], state[1], False), bids=_changes(previous[0], state[0], True), **common
    )
    return delta, state


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
