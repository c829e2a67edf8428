"""CoinAPI Market Data WebSocket V1: the upstream adapter, the emulator, and the pure protocol
pieces (wire Structs, symbol ids, hello filters, normalization, subscription planning) that the
gateway's CoinAPI-compatible endpoint reuses."""

from providers.coinapi.denormalize import quote_message, trade_message
from providers.coinapi.emulator import CoinApiEmulator, run_standalone
from providers.coinapi.filters import Scope, SubscriptionFilter, validate_request
from providers.coinapi.session import CoinApiAdapter
from providers.coinapi.symbols import ExchangeMap, SymbolId, SymbolMapper, format_symbol_id, parse_symbol_id

__all__ = [
    "CoinApiAdapter",
    "CoinApiEmulator",
    "ExchangeMap",
    "Scope",
    "SubscriptionFilter",
    "SymbolId",
    "SymbolMapper",
    "format_symbol_id",
    "parse_symbol_id",
    "quote_message",
    "run_standalone",
    "trade_message",
    "validate_request",
]
