"""Normalized `schemas.Ticker` → Luzia's ticker message and REST ticker object. Pure.

What the gateway's Luzia-compatible endpoint sends, whichever provider the ticker came from, and
what the emulator's feed sends too, so both speak with one voice.
Never: invents a value. A field the gateway was not told is `null`, never 0; `close` is `last`
(Luzia's close of a rolling window is the last price); numbers go out as JSON numbers with every
digit of the Decimal (`wire.encoder`).

Times are ISO-8601 UTC with milliseconds, as Luzia's docs show. `data.timestamp` is the observation
time: the exchange's, else the provider's, else the gateway's receive time (Luzia's SDKs type it as
a non-null string, so it is never null). The outer `timestamp` is when the gateway received it.
"""

from __future__ import annotations

from providers.luzia import wire
from schemas import Ticker
from schemas.timeutil import format_iso_ns


def observed_ns(ticker: Ticker) -> int:
    for ns in (ticker.ts_exchange, ticker.ts_provider):
        if ns is not None:
            return ns
    return ticker.ts_gateway


def ticker_data(ticker: Ticker) -> wire.TickerData:
    """The REST ticker object (also the `data` of a ticker message)."""
    return wire.TickerData(
        symbol=ticker.symbol,
        exchange=ticker.exchange,
        last=ticker.last,
        bid=ticker.bid,
        ask=ticker.ask,
        high=ticker.high,
        low=ticker.low,
        open=ticker.open,
        close=ticker.last,
        volume=ticker.volume,
        quoteVolume=ticker.quote_volume,
        change=ticker.change,
        changePercent=ticker.change_percent,
        timestamp=format_iso_ns(observed_ns(ticker), 3),
    )


def ticker_message(ticker: Ticker) -> wire.Ticker:
    sent = format_iso_ns(ticker.ts_gateway, 3)
    return wire.Ticker(exchange=ticker.exchange, symbol=ticker.symbol, data=ticker_data(ticker), timestamp=sent)
