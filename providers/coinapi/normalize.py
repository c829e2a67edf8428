"""CoinAPI wire messages → normalized `schemas` events. Pure: provider name, instrument and
receive time are passed in.

Owns: field mapping, side mapping, the "0 means unknown" rules, fixed-depth book snapshots
(`book5/20/50` → `Book`) and the per-symbol ticker builder.
Must never: invent a value CoinAPI did not send (unknown is None), go through float, or pass on a
value outside `providers.common.values`' bounds: prices in [0, 10^12], sizes and volumes in
[0, 10^18] (finite, at most 40 digits: msgspec reads `"NaN"`, `"Infinity"`, `1E+100` and
5000-digit numbers as Decimals), times as ASCII ISO-8601 within 2009..2100 (years 0001 or 9999
are not market times, and stay inside int64 ns). Such a message is a `MalformedFrame`, checked
before any state changes. A derived percentage outside the bounds (a last price far from a
near-zero open) is unknown (None), not a malformed frame: no single value sent was wrong.

Ticker: CoinAPI V1 has no ticker message, so `TickerBuilder` derives one per symbol from trades
(`last`), quotes (`bid`, `ask`) and the `1DAY` OHLCV candle (`open`, `high`, `low`, `volume`).
CoinAPI's day candle is the UTC calendar day, not a rolling 24 h window: these statistics are
"since 00:00 UTC". `quote_volume` is never known. `change` = last − open and `change_percent`
= change / open × 100 (6 decimals) once both are known.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Final

from providers.coinapi import wire
from providers.common.errors import MalformedFrame
from providers.common.values import require_price, require_signed, require_size, require_ts
from schemas import Book, BookLevel, Quote, Ticker, Trade
from schemas.timeutil import NS_PER_S, TimestampError, parse_iso_ns

_SIDES: Final = {"BUY": "buy", "BUY_ESTIMATED": "buy", "SELL": "sell", "SELL_ESTIMATED": "sell"}
_ZERO: Final = Decimal(0)
_DAY_NS: Final = 86_400 * NS_PER_S
_PERCENT_STEP: Final = Decimal("0.000001")
_WIDE: Final = Context(prec=60)  # quantize never fails for lack of precision


def timestamp(text: str) -> int:
    """A wire time → int ns within the plausible window; raises MalformedFrame. ASCII only: the
    parser's `\\d` and `int()` would read other scripts' digits as a time."""
    if not text.isascii():
        raise MalformedFrame("a time with non-ASCII characters")
    try:
        ns = parse_iso_ns(text)
    except TimestampError:
        raise MalformedFrame("not an ISO-8601 time") from None
    require_ts(ns)
    return ns


def to_trade(msg: wire.Trade, *, provider: str, exchange: str, symbol: str, ts_gateway: int) -> Trade | None:
    """None for a size-0 trade: CoinAPI uses it to mark an index tick, not a trade."""
    require_price(msg.price)
    require_size(msg.size)
    ts_exchange, ts_provider = timestamp(msg.time_exchange), timestamp(msg.time_coinapi)
    if msg.size == _ZERO:
        return None
    return Trade(
        provider=provider,
        ts_gateway=ts_gateway,
        exchange=exchange,
        symbol=symbol,
        ts_exchange=ts_exchange,
        ts_provider=ts_provider,
        sequence=msg.sequence,
        price=msg.price,
        size=msg.size,
        side=_SIDES.get(msg.taker_side, "unknown"),  # type: ignore[arg-type]
        trade_id=msg.uuid,
    )


def _size(value: Decimal | None) -> Decimal | None:
    return None if value is None or value == _ZERO else value


def to_quote(msg: wire.Quote, *, provider: str, exchange: str, symbol: str, ts_gateway: int) -> Quote:
    """A size of 0 means CoinAPI does not know it: None."""
    require_price(msg.bid_price, msg.ask_price)
    require_size(msg.bid_size, msg.ask_size)
    return Quote(
        provider=provider,
        ts_gateway=ts_gateway,
        exchange=exchange,
        symbol=symbol,
        ts_exchange=timestamp(msg.time_exchange),
        ts_provider=timestamp(msg.time_coinapi),
        sequence=msg.sequence,
        bid_price=msg.bid_price,
        bid_size=_size(msg.bid_size),
        ask_price=msg.ask_price,
        ask_size=_size(msg.ask_size),
    )


def _levels(levels: list[wire.BookLevel]) -> tuple[BookLevel, ...]:
    for level in levels:
        require_price(level.price)
        require_size(level.size)
    return tuple(BookLevel(level.price, level.size) for level in levels)


def to_book(msg: wire.BookTop, *, provider: str, exchange: str, symbol: str, ts_gateway: int) -> Book:
    """A top-N snapshot is complete for its depth (no deltas): one Book, best levels first, as sent."""
    return Book(
        provider=provider,
        ts_gateway=ts_gateway,
        exchange=exchange,
        symbol=symbol,
        ts_exchange=timestamp(msg.time_exchange),
        ts_provider=timestamp(msg.time_coinapi),
        sequence=msg.sequence,
        bids=_levels(msg.bids),
        asks=_levels(msg.asks),
    )


def is_daily(msg: wire.Ohlcv) -> bool:
    """The `1DAY` candle, named or (when `period_id` is absent) told by its length."""
    if msg.period_id is not None:
        return msg.period_id.isascii() and msg.period_id.upper() == "1DAY"
    return timestamp(msg.time_period_end) - timestamp(msg.time_period_start) == _DAY_NS


@dataclass
class TickerBuilder:
    """The ticker state of one symbol; each update returns the new Ticker snapshot."""

    provider: str
    exchange: str
    symbol: str
    last: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    volume: Decimal | None = None
    _period_start: int | None = None

    def on_trade(self, trade: Trade) -> Ticker:
        self.last = trade.price
        return self._ticker(trade.ts_gateway, trade.ts_exchange, trade.ts_provider)

    def on_quote(self, quote: Quote) -> Ticker:
        self.bid, self.ask = quote.bid_price, quote.ask_price
        return self._ticker(quote.ts_gateway, quote.ts_exchange, quote.ts_provider)

    def on_ohlcv(self, msg: wire.Ohlcv, ts_gateway: int) -> Ticker | None:
        """None for another period or an older day's candle (which must not overwrite today's)."""
        if not is_daily(msg):
            return None
        start = timestamp(msg.time_period_start)
        if self._period_start is not None and start < self._period_start:
            return None
        require_price(msg.price_open, msg.price_high, msg.price_low)
        require_size(msg.volume_traded)
        ts_exchange = timestamp(msg.time_close) if msg.time_close else None
        self._period_start = start
        self.open, self.high, self.low, self.volume = msg.price_open, msg.price_high, msg.price_low, msg.volume_traded
        return self._ticker(ts_gateway, ts_exchange, None)

    def _ticker(self, ts_gateway: int, ts_exchange: int | None, ts_provider: int | None) -> Ticker:
        change = percent = None
        if self.last is not None and self.open is not None:
            change = self.last - self.open
            if self.open != _ZERO:
                percent = _signed_or_none((change * 100 / self.open).quantize(_PERCENT_STEP, context=_WIDE))
        return Ticker(
            provider=self.provider,
            ts_gateway=ts_gateway,
            exchange=self.exchange,
            symbol=self.symbol,
            ts_exchange=ts_exchange,
            ts_provider=ts_provider,
            last=self.last,
            bid=self.bid,
            ask=self.ask,
            open=self.open,
            high=self.high,
            low=self.low,
            volume=self.volume,
            change=change,
            change_percent=percent,
        )


def _signed_or_none(value: Decimal) -> Decimal | None:
    """A derived value within the signed bounds, or None (unknown)."""
    try:
        require_signed(value)
    except MalformedFrame:
        return None
    return value
