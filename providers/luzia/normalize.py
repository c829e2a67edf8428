"""Luzia wire tickers → normalized `schemas` events. Pure: the receive time is passed in.

Owns: the field mapping (Luzia's names → ours), timestamp conversion, and deriving a `Quote` from
the ticker's best bid/ask.
Never: invents a value (a field Luzia did not send is None, never 0), reads a clock, or does I/O.
Luzia has no sequence numbers and no bid/ask sizes, so those stay None.

`ts_exchange` is `data.timestamp` (the exchange observation); `ts_provider` is the outer
`timestamp` (when Luzia sent it). A well-typed ticker whose content still cannot be normalized (a
bad symbol, a bad timestamp) raises `MalformedFrame`: counted and skipped like a broken frame.

Every value passed on is checked with `providers.common.values` (bounds in its docstring):
last/bid/ask/open/high/low/close are prices, volume and quote volume are sizes, change and change
percent are signed, both timestamps must lie in 2009..2100 (after the ms → ns conversion, which
is exact for any int, so a huge or negative one is refused rather than wrapped). Timestamp text
must be ASCII: regex digits and `int()` read other scripts' digits as numbers, which no provider means.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TypedDict

from providers.common.errors import MalformedFrame
from providers.common.values import require_price, require_signed, require_size, require_ts
from providers.luzia import wire
from schemas import Quote, Ticker
from schemas.instruments import InstrumentError, canonical_exchange, canonical_symbol
from schemas.timeutil import TimestampError, parse_any_ns


@lru_cache(maxsize=8192)
def _instrument(exchange: str, symbol: str) -> tuple[str, str]:
    # ASCII before any case mapping: `"\u212araken".lower()` is "kraken" (the Kelvin sign).
    if not (exchange.isascii() and symbol.isascii()):
        raise MalformedFrame("exchange or symbol is not ASCII")
    try:
        return canonical_exchange(exchange), canonical_symbol(symbol)
    except InstrumentError as exc:
        raise MalformedFrame(str(exc)) from None


def instrument_of(msg: wire.Ticker) -> tuple[str, str]:
    """(exchange, BASE/QUOTE), canonical; cached because the same few pairs repeat all day."""
    return _instrument(msg.exchange, msg.symbol)


def _ns(value: wire.Timestamp | None) -> int | None:
    if value is None:
        return None
    try:  # ASCII digits only: the parser refuses other scripts' digits itself
        ns = parse_any_ns(value)
    except TimestampError as exc:
        raise MalformedFrame(f"bad timestamp: {exc}") from None
    require_ts(ns)
    return ns


def _checked(data: wire.TickerData) -> None:
    require_price(data.last, data.bid, data.ask, data.high, data.low, data.open, data.close)
    require_size(data.volume, data.quoteVolume)
    require_signed(data.change, data.changePercent)


class _Head(TypedDict):
    """What the ticker and the quote of one message share."""

    provider: str
    ts_gateway: int
    exchange: str
    symbol: str
    ts_exchange: int | None
    ts_provider: int | None


def events(msg: wire.Ticker, *, provider: str, ts_gateway: int, ticker: bool, quote: bool) -> list[Ticker | Quote]:
    """The ticker and/or the quote one message carries, in that order: the instrument, both times
    and every value are read and checked once, however many of the two are wanted. No quote when
    the message has neither bid nor ask."""
    data = msg.data
    exchange, symbol = instrument_of(msg)
    head = _Head(provider=provider, ts_gateway=ts_gateway, exchange=exchange, symbol=symbol,
                 ts_exchange=_ns(data.timestamp), ts_provider=_ns(msg.timestamp))
    out: list[Ticker | Quote] = []
    if ticker:
        _checked(data)
        last = data.last if data.last is not None else data.close
        out.append(Ticker(**head, last=last, bid=data.bid, ask=data.ask, open=data.open, high=data.high, low=data.low,
                          volume=data.volume, quote_volume=data.quoteVolume, change=data.change,
                          change_percent=data.changePercent))
    if quote and (data.bid is not None or data.ask is not None):
        if not ticker:
            require_price(data.bid, data.ask)
        out.append(Quote(**head, bid_price=data.bid, ask_price=data.ask))
    return out


def ticker_event(msg: wire.Ticker, *, provider: str, ts_gateway: int) -> Ticker:
    (event,) = events(msg, provider=provider, ts_gateway=ts_gateway, ticker=True, quote=False)
    assert type(event) is Ticker
    return event


def quote_event(msg: wire.Ticker, *, provider: str, ts_gateway: int) -> Quote | None:
    """The best bid/ask a ticker carries, as a Quote; None when it carries neither side."""
    found = events(msg, provider=provider, ts_gateway=ts_gateway, ticker=False, quote=True)
    return found[0] if found and type(found[0]) is Quote else None
