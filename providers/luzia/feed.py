"""The emulated market as Luzia's ticker messages. Pure: the send time is passed in.

Owns: how one market step (`providers.common.market.Tick`) reads as a Luzia ticker: the last
price, best bid/ask, and the 24-hour statistics with change and change percent.
Never: draws from the market (the emulator steps it), reads a clock, or frames a message other than
through `denormalize`, so the emulator and the gateway's Luzia endpoint frame tickers alike.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from providers.common.market import Tick
from providers.luzia import denormalize, wire
from schemas import Ticker

PROVIDER: Final = "luzia"
_PERCENT: Final = Decimal("0.001")


def ticker(tick: Tick, sent_ns: int) -> Ticker:
    """A market step as the ticker Luzia would report; `sent_ns` is when it goes out."""
    instrument = tick.instrument
    change = tick.price - tick.open_24h
    return Ticker(
        provider=PROVIDER,
        ts_gateway=sent_ns,
        exchange=instrument.exchange,
        symbol=instrument.symbol,
        ts_exchange=tick.time_ns,
        last=tick.price,
        bid=tick.bid,
        ask=tick.ask,
        open=tick.open_24h,
        high=tick.high_24h,
        low=tick.low_24h,
        volume=tick.volume_24h,
        quote_volume=tick.quote_volume_24h,
        change=change,
        change_percent=_percent(change, tick.open_24h),
    )


def ticker_message(tick: Tick, sent_ns: int) -> wire.Ticker:
    """A market step as Luzia's ticker message: `data` is the REST ticker, times ISO with ms."""
    return denormalize.ticker_message(ticker(tick, sent_ns))


def _percent(change: Decimal, base: Decimal) -> Decimal:
    percent = (change * 100 / base).quantize(_PERCENT)
    return percent if percent else abs(percent)  # no "-0.000" on the wire
