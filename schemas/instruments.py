"""Instrument identity: canonical exchange ids and symbols.

Canonical forms: exchange ids are lower-case (`binance`, `okx`); symbols are upper-case
`BASE/QUOTE` (`BTC/USDT`). Provider-specific ids (CoinAPI `BINANCE_SPOT_BTC_USDT`) are mapped in
the provider's own package, never here.
"""

from __future__ import annotations

import re

_EXCHANGE = re.compile(r"[a-z0-9][a-z0-9_.]{0,31}")
_ASSET = re.compile(r"[A-Z0-9][A-Z0-9.]{0,19}")


class InstrumentError(ValueError):
    """An exchange id or symbol that has no canonical form."""


def canonical_exchange(text: str) -> str:
    """`Binance` → `binance`; raises InstrumentError for anything that is not an id."""
    exchange = text.strip().lower()
    if not _EXCHANGE.fullmatch(exchange):
        raise InstrumentError(f"not an exchange id: {text!r}")
    return exchange


def canonical_symbol(text: str) -> str:
    """`btc-usdt` or `BTC/USDT` → `BTC/USDT`; `/` and `-` are the same separator."""
    parts = text.strip().upper().replace("-", "/").split("/")
    if len(parts) != 2 or not all(_ASSET.fullmatch(p) for p in parts):
        raise InstrumentError(f"not a BASE/QUOTE symbol: {text!r}")
    return f"{parts[0]}/{parts[1]}"


def split_symbol(symbol: str) -> tuple[str, str]:
    """Canonical `BASE/QUOTE` → (`BASE`, `QUOTE`)."""
    base, _, quote = symbol.partition("/")
    return base, quote
