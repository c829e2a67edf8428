"""The native channel grammar: `{datatype}:{exchange}:{BASE/QUOTE}`, `{datatype}:{exchange}` (every
symbol of the exchange) or `{datatype}:*` (every symbol of every exchange).

`Status.stream` carries channels in this form, and the native endpoint's clients subscribe with it.
Symbols accept `/` or `-` (Luzia's SDK writes `BTC-USDT`); the canonical form uses `/`.
A channel is ASCII, checked before any case mapping (`schemas.instruments` says why).
Never: accepts non-ASCII text, or echoes more than a bounded prefix of a rejected channel.
"""

from __future__ import annotations

from schemas.events import DATATYPES
from schemas.instruments import InstrumentError, canonical_exchange, canonical_symbol, shown


class ChannelError(ValueError):
    """Not a channel of this grammar; the message says which part is wrong."""


#: Parsed channels, by their text: clients toggling subscriptions send the same few strings again
#: and again, and parsing was ~40 % of a subscribe storm's cost. Bounded in entries and in the
#: length of what is kept (a hostile client's long unique names are parsed, never kept).
_parsed: dict[str, tuple[str, str | None, str | None]] = {}
_PARSED_LIMIT = 65_536
_CACHED_LENGTH = 96


def parse_channel(text: str) -> tuple[str, str | None, str | None]:
    """`trade:Binance:btc-usdt` → (`trade`, `binance`, `BTC/USDT`); `trade:binance` → (…, None);
    `trade:*` → (`trade`, None, None)."""
    try:
        return _parsed[text]
    except (KeyError, TypeError):  # TypeError: not hashable, so not a channel either
        pass
    parsed = _parse_channel(text)
    if len(text) <= _CACHED_LENGTH:
        if len(_parsed) >= _PARSED_LIMIT:
            _parsed.clear()  # rare: more distinct channels than any app asks for
        _parsed[text] = parsed
    return parsed


def _parse_channel(text: str) -> tuple[str, str | None, str | None]:
    if not isinstance(text, str):
        raise ChannelError("a channel is a string")
    if not text.isascii():  # before `.lower()`: the Kelvin sign would become `k`
        raise ChannelError(f"{shown(text)}: a channel is ASCII text")
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ChannelError(f"{shown(text)}: expected datatype:exchange[:BASE/QUOTE]")
    datatype = parts[0].strip().lower()
    if datatype not in DATATYPES:
        raise ChannelError(f"{shown(text)}: unknown data type {shown(parts[0])} (known: {', '.join(DATATYPES)})")
    if parts[1].strip() == "*":
        if len(parts) == 3:
            raise ChannelError(f"{shown(text)}: '*' (every exchange) takes no symbol")
        return datatype, None, None
    try:
        exchange = canonical_exchange(parts[1])
        symbol = canonical_symbol(parts[2]) if len(parts) == 3 else None
    except InstrumentError as exc:
        raise ChannelError(f"{shown(text)}: {exc}") from None
    return datatype, exchange, symbol


def format_channel(datatype: str, exchange: str | None, symbol: str | None) -> str:
    if exchange is None:
        return f"{datatype}:*"
    return f"{datatype}:{exchange}" if symbol is None else f"{datatype}:{exchange}:{symbol}"
