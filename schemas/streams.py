"""The vocabulary of local demand: what a client may ask for, and the concrete stream an event is on.

- `StreamKey` is an *ask*: one data type on one symbol, on every symbol of an exchange (symbol
  None), or on every symbol of every exchange (exchange and symbol None). Clients subscribe with
  it, the hub counts demand by it, adapters are told which of them are wanted.
- `Stream` is *concrete*: one data type of one instrument, the stream a market event is on.
  `covering_keys()` lists the three asks that include it, narrowest first; the hub's index is
  keyed by asks, so an event reaches exactly the clients of those three keys.
Both are plain tuples of the same three fields, so `Stream("trade", "binance", "BTC/USDT")` and
`StreamKey("trade", "binance", "BTC/USDT")` are equal and hash alike: one dict serves both.
"""

from __future__ import annotations

from typing import NamedTuple

from schemas.channels import format_channel, parse_channel


class StreamKey(NamedTuple):
    """What a client may ask for: wildcards (None) allowed for the exchange and the symbol."""

    datatype: str  # "trade" | "quote" | "ticker" | "book"
    exchange: str | None  # canonical lower-case; None: every exchange
    symbol: str | None  # canonical BASE/QUOTE; None: every symbol of the exchange

    def channel(self) -> str:
        """The native channel name: `trade:binance:BTC/USDT`, `trade:binance` or `trade:*`."""
        return format_channel(self.datatype, self.exchange, self.symbol)

    @classmethod
    def parse(cls, channel: str) -> StreamKey:
        """A native channel → its key; raises `schemas.channels.ChannelError`."""
        return cls(*parse_channel(channel))

    @property
    def concrete(self) -> bool:
        return self.exchange is not None and self.symbol is not None


class Stream(NamedTuple):
    """One data type of one instrument: where a market event belongs."""

    datatype: str
    exchange: str
    symbol: str

    def covering_keys(self) -> tuple[StreamKey, StreamKey, StreamKey]:
        """The asks that include this stream, narrowest first."""
        return (
            StreamKey(self.datatype, self.exchange, self.symbol),
            StreamKey(self.datatype, self.exchange, None),
            StreamKey(self.datatype, None, None),
        )

    def channel(self) -> str:
        return format_channel(self.datatype, self.exchange, self.symbol)
