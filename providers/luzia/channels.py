"""Luzia's channel grammar: `ticker:{exchange}:{symbol}` (one symbol) and `ticker:{exchange}` (all).

Owns: parsing channel names and formatting them canonically (lower-case exchange id, upper-case
`BASE/QUOTE`; `/` and `-` are the same separator on input, `/` on output).
Never: knows which exchanges or symbols exist (the server, or the emulator's market, decides),
and never does I/O. Pure, so Hypothesis can hammer it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final, NamedTuple

from schemas.instruments import InstrumentError, canonical_exchange, canonical_symbol

#: The only channel kind Luzia has.
KIND: Final = "ticker"


class ChannelError(ValueError):
    """Text that is not a Luzia channel."""


class Channel(NamedTuple):
    exchange: str  # canonical lower-case id
    symbol: str | None  # canonical BASE/QUOTE; None: every ticker of the exchange

    def __str__(self) -> str:
        return format_channel(self.exchange, self.symbol)


def format_channel(exchange: str, symbol: str | None = None) -> str:
    """Canonical ids in, channel name out; no validation (that is `parse_channel`'s job)."""
    if symbol is None:
        return f"{KIND}:{exchange}"
    return f"{KIND}:{exchange}:{symbol}"


@lru_cache(maxsize=8192)
def parse_channel(text: str) -> Channel:
    """`ticker:Binance:btc-usdt` → Channel("binance", "BTC/USDT"); ChannelError if malformed.

    Cached: the same few channel names come back on every (re)subscribe and every server reply.
    """
    if not isinstance(text, str) or text != "".join(text.split()):
        raise ChannelError(f"not a channel (whitespace or not text): {text!r}")
    kind, _, rest = text.partition(":")
    if kind != KIND or not rest:
        raise ChannelError(f"not a {KIND} channel: {text!r}")
    exchange, sep, symbol = rest.partition(":")
    try:
        return Channel(canonical_exchange(exchange), canonical_symbol(symbol) if sep else None)
    except InstrumentError as exc:
        raise ChannelError(f"malformed channel {text!r}: {exc}") from None


def canonical_channel(text: str) -> str:
    """Any accepted spelling → the canonical name (`ticker:binance:BTC-USDT` → `ticker:binance:BTC/USDT`)."""
    return str(parse_channel(text))
