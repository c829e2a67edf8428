"""Luzia's vocabulary: the channel grammar and the tiers. Pure.

Owns: parsing channel names (`ticker:{exchange}:{symbol}` one symbol, `ticker:{exchange}` every
symbol of the exchange) and formatting them canonically (lower-case exchange id, upper-case
`BASE/QUOTE`; `/` and `-` are the same separator on input, `/` on output); which instrument a
channel covers; and the tiers' documented limits.
Channels are ASCII, checked before any case mapping (`schemas.instruments` says why).
Never: knows which exchanges or symbols exist (a server's catalog decides), or does I/O.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final, NamedTuple

import msgspec

from schemas.instruments import InstrumentError, canonical_exchange, canonical_symbol, shown

#: The only channel kind Luzia has.
KIND: Final = "ticker"
#: Channel names up to this long are cached; a longer one is no real channel, and caching it
#: would let a client fill the cache with 64 KiB names (8,192 of them: 512 MiB).
_CACHED_LENGTH: Final = 96

Need = tuple[str, str | None]  # (exchange, symbol); symbol None: every symbol of the exchange


class ChannelError(ValueError):
    """Text that is not a Luzia channel."""


class Channel(NamedTuple):
    exchange: str  # canonical lower-case id
    symbol: str | None  # canonical BASE/QUOTE; None: every ticker of the exchange

    def __str__(self) -> str:
        return format_channel(self.exchange, self.symbol)

    def covers(self, exchange: str, symbol: str) -> bool:
        """Whether a ticker of this instrument belongs to this channel."""
        return self.exchange == exchange and self.symbol in (None, symbol)


def format_channel(exchange: str, symbol: str | None = None) -> str:
    """Canonical ids in, channel name out; no validation (that is `parse_channel`'s job)."""
    if symbol is None:
        return f"{KIND}:{exchange}"
    return f"{KIND}:{exchange}:{symbol}"


def parse_channel(text: str) -> Channel:
    """`ticker:Binance:btc-usdt` → Channel("binance", "BTC/USDT"); ChannelError if malformed.

    Cached: the same few channel names come back on every (re)subscribe and every server reply.
    """
    if not isinstance(text, str):
        raise ChannelError(f"not a channel (not text): {shown(text)}")
    return _parse_cached(text) if len(text) <= _CACHED_LENGTH else _parse(text)


@lru_cache(maxsize=8192)
def _parse_cached(text: str) -> Channel:
    return _parse(text)


def _parse(text: str) -> Channel:
    if not text.isascii() or text != "".join(text.split()):
        raise ChannelError(f"not a channel (whitespace or not ASCII): {shown(text)}")
    kind, _, rest = text.partition(":")
    if kind != KIND or not rest:
        raise ChannelError(f"not a {KIND} channel: {shown(text)}")
    exchange, sep, symbol = rest.partition(":")
    try:
        return Channel(canonical_exchange(exchange), canonical_symbol(symbol) if sep else None)
    except InstrumentError as exc:
        raise ChannelError(f"malformed channel {shown(text)}: {exc}") from None


def canonical_channel(text: str) -> str:
    """Any accepted spelling → the canonical name (`ticker:binance:BTC-USDT` → `ticker:binance:BTC/USDT`)."""
    return str(parse_channel(text))


class TierLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one API key may open: WebSocket connections, and subscriptions on each."""

    connections: int
    subscriptions: int


#: From Luzia's API page. Free has no WebSocket access at all.
TIER_LIMITS: Final = {
    "free": TierLimits(connections=0, subscriptions=0),
    "pro": TierLimits(connections=5, subscriptions=50),
    "enterprise": TierLimits(connections=25, subscriptions=500),
}


def tier_limits(tier: str) -> TierLimits:
    try:
        return TIER_LIMITS[tier]
    except KeyError:
        raise ValueError(f"unknown Luzia tier {tier!r}; expected one of {sorted(TIER_LIMITS)}") from None
