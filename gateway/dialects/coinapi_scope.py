"""CoinAPI V1 subscriptions on the gateway: which hub data type serves each CoinAPI data type, the
stream keys that cover a client's scope, and the refusals of what this gateway cannot produce. Pure.

Owns: the CoinAPI data type → hub data type table, the covering `StreamKey`s of a scope, and the
refusal texts for data types the configured routes cannot serve.
Must never: do I/O, or decide symbol matching itself — `providers.coinapi.grammar` does that, and
the session's delivery step applies it exactly to every event the covering keys bring in.

Covering keys: the hub delivers a stream key's events and the session filters them, so the keys
only have to be a superset, as narrow as the filter allows (every key is an upstream subscription):
- an exact SPOT id (`BITSTAMP_SPOT_BTC_USD$`) → that symbol; an exact id of anything else (PERP,
  FTS, OPT, IDX, a suffixed id) → nothing, since the gateway's instruments are plain SPOT pairs;
- a prefix that pins the exchange (`BITSTAMP_`, `BITSTAMP_SPOT_BTC`) → that exchange; one that pins a
  kind other than SPOT (`BINANCEFTS_PERP_`) → nothing; one without `_` (`BIT`) → every exchange
  (`grammar.prefix_exchange`);
- an exchange id → that exchange;
- an asset filter (any exchange may list the asset), or no filter at all → every exchange.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from providers.coinapi.grammar import SubscriptionFilter, SymbolMapper, Unpinned, prefix_exchange
from providers.coinapi.server import Scope
from schemas.instruments import InstrumentError
from schemas.streams import StreamKey

#: CoinAPI data types the gateway can produce, and the hub data type each is made from.
HUB_DATATYPE: Final = {
    "trade": "trade",
    "quote": "quote",
    "book": "book",
    "book5": "book",
    "book20": "book",
    "book50": "book",
}
#: The update-limit family (`providers.coinapi.server.UPDATE_LIMITS`) of each hub data type.
LIMIT_FAMILY: Final = {"quote": "quote", "book": "book_snapshot"}
#: CoinAPI's book data types, in the order their frames go out for one book event.
BOOK_KINDS: Final = ("book", "book5", "book20", "book50")


def refusal(data_type: str, hub_refusal: Callable[[str], str | None]) -> str | None:
    """The `error` text refusing a CoinAPI data type this gateway cannot produce, or None.
    `hub_refusal` is `Hub.refusal`: why a hub data type cannot be served, naming its providers."""
    datatype = HUB_DATATYPE.get(data_type)
    if datatype is None:
        return f"Data type {data_type} is not available from this gateway."
    why = hub_refusal(datatype)
    return None if why is None else f"Data type {data_type} is not available: {why}."


def covering_keys(scope: Scope, mapper: SymbolMapper) -> frozenset[StreamKey]:
    """The narrowest set of stream keys whose events include every one the scope selects."""
    keys: set[StreamKey] = set()
    for data_type, selection in scope.filters.items():
        datatype = HUB_DATATYPE.get(data_type)
        if datatype is not None:
            keys |= _covering(datatype, selection, mapper)
    return frozenset(keys)


def _covering(datatype: str, selection: SubscriptionFilter, mapper: SymbolMapper) -> set[StreamKey]:
    every = {StreamKey(datatype, None, None)}
    if selection.everything or selection.asset_ids:
        return every
    exchanges = {_canonical(exchange_id, mapper) for exchange_id in selection.exchange_ids}
    symbols: set[tuple[str, str]] = set()
    for item in selection.symbol_ids:
        if item.endswith("$"):
            instrument = mapper.instrument(item[:-1])
            if instrument is not None:
                symbols.add(instrument)
            continue
        pinned = prefix_exchange(item)
        if pinned is Unpinned.EVERY:
            return every
        if isinstance(pinned, str):
            exchanges.add(_canonical(pinned, mapper))
    exchanges.discard(None)
    keys = {StreamKey(datatype, exchange, None) for exchange in exchanges}
    keys |= {StreamKey(datatype, exchange, symbol) for exchange, symbol in symbols if exchange not in exchanges}
    return keys


def _canonical(exchange_id: str, mapper: SymbolMapper) -> str | None:
    """The canonical exchange whose events carry `exchange_id`; None when none does (`OKX`: the
    canonical `okx` is `OKEX` at CoinAPI), so no key is wasted on it."""
    try:
        exchange = mapper.exchanges.to_canonical(exchange_id)
    except InstrumentError:
        return None
    return exchange if mapper.exchanges.to_coinapi(exchange) == exchange_id else None
