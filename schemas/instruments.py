"""Instrument identity: canonical exchange ids and symbols.

Canonical forms: exchange ids are lower-case (`binance`, `okx`); symbols are upper-case
`BASE/QUOTE` (`BTC/USDT`). Provider-specific ids (CoinAPI `BINANCE_SPOT_BTC_USDT`) are mapped in
the provider's own package, never here.
Identifiers are ASCII, checked BEFORE any case mapping: Unicode case mapping turns `ß` into `SS`,
the Kelvin sign (U+212A) into `k` and dotless `ı` into `I`, so a non-ASCII spelling must never
become the id of a real exchange or asset.
Never: accepts a non-ASCII identifier, or echoes more than `SHOWN_CHARS` of rejected text.
"""

from __future__ import annotations

import re
from typing import Final

_EXCHANGE = re.compile(r"[a-z0-9][a-z0-9_.]{0,31}", re.ASCII)
_ASSET = re.compile(r"[A-Z0-9][A-Z0-9.]{0,19}", re.ASCII)
#: Rejected text is echoed in error messages up to this many characters (a client's 64 KiB
#: channel name is not worth 64 KiB of reply).
SHOWN_CHARS: Final = 64


class InstrumentError(ValueError):
    """An exchange id or symbol that has no canonical form."""


def shown(text: object) -> str:
    """`repr` of client text for an error message, cut to `SHOWN_CHARS` characters."""
    if isinstance(text, str) and len(text) > SHOWN_CHARS:
        return repr(text[:SHOWN_CHARS]) + "…"
    return repr(text)


def ascii_text(text: object) -> str:
    """`text` if it is an ASCII string; InstrumentError otherwise (case mapping comes after)."""
    if not isinstance(text, str) or not text.isascii():
        raise InstrumentError(f"not an ASCII identifier: {shown(text)}")
    return text


def canonical_exchange(text: str) -> str:
    """`Binance` → `binance`; raises InstrumentError for anything that is not an id."""
    exchange = ascii_text(text).strip().lower()
    if not _EXCHANGE.fullmatch(exchange):
        raise InstrumentError(f"not an exchange id: {shown(text)}")
    return exchange


def canonical_symbol(text: str) -> str:
    """`btc-usdt` or `BTC/USDT` → `BTC/USDT`; `/` and `-` are the same separator."""
    parts = ascii_text(text).strip().upper().replace("-", "/").split("/")
    if len(parts) != 2 or not all(_ASSET.fullmatch(p) for p in parts):
        raise InstrumentError(f"not a BASE/QUOTE symbol: {shown(text)}")
    return f"{parts[0]}/{parts[1]}"


def split_symbol(symbol: str) -> tuple[str, str]:
    """Canonical `BASE/QUOTE` → (`BASE`, `QUOTE`)."""
    base, _, quote = symbol.partition("/")
    return base, quote
