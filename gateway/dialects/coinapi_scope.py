"""CoinAPI V1 subscriptions on the gateway: which hub data type serves each CoinAPI data type, the
stream keys that cover a client's scope, where a client's key comes from. Pure.

Owns: the CoinAPI data type → hub data type table, the covering `StreamKey`s of a scope, the
refusal texts for data types this gateway cannot produce, and the endpoint's paths and key sources.
Must never: do I/O, or decide symbol matching itself — `providers.coinapi.filters` does that, and
the session's `accepts` applies it exactly to every event the covering keys bring in.

Covering keys: the hub delivers a stream key's events and the session filters them, so the keys
only have to be a superset, as narrow as the filter allows (every key is an upstream subscription):
- an exact SPOT id (`BITSTAMP_SPOT_BTC_USD$`) → that symbol; an exact id of anything else (PERP,
  FTS, OPT, IDX, a suffixed id) → nothing, since the gateway's instruments are plain SPOT pairs;
- a prefix that pins the exchange (`BITSTAMP_`, `BITSTAMP_SPOT_BTC`) → that exchange; one that pins a
  kind other than SPOT (`BINANCEFTS_PERP_`) → nothing; one without `_` (`BIT`) → every exchange;
- an exchange id → that exchange;
- an asset filter (any exchange may list the asset), or no filter at all → every exchange.
A prefix pins the exchange before its first complete kind token (`A_B_SPOT_` → `A_B`), else its
first token (`BITSTAMP_` → `BITSTAMP`): CoinAPI's exchange ids have no `_`, so an exchange whose
mapped id has one is reached by exact ids, exchange ids, its kind-spelling prefixes, or no filter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from gateway.context import bearer_token
from gateway.server import HttpRequest
from schemas.streams import StreamKey
from providers.coinapi.filters import Scope, SubscriptionFilter
from providers.coinapi.symbols import KINDS, SymbolMapper
from schemas.instruments import InstrumentError

#: CoinAPI data types the gateway can produce, and the hub data type each is made from.
HUB_DATATYPE: Final = {
    "trade": "trade",
    "quote": "quote",
    "book": "book",
    "book5": "book",
    "book20": "book",
    "book50": "book",
}
#: CoinAPI's book data types, in the order their frames go out for one book event.
BOOK_KINDS: Final = ("book", "book5", "book20", "book50")
PATHS: Final = frozenset({"/", "/v1", "/v1/"})
_KEY_PATHS: Final = ("/APIKEY-", "/v1/APIKEY-")
_EVERY: Final = object()  # a prefix any exchange's ids may start with


def serves_path(path: str) -> bool:
    return path in PATHS or path.startswith(_KEY_PATHS)


def upgrade_key(request: HttpRequest) -> str | None:
    """The key carried by the upgrade request: `/APIKEY-<key>` path, `X-CoinAPI-Key`,
    `Authorization` (bare or `Bearer`), or `?apikey=` — the first one present."""
    for prefix in _KEY_PATHS:
        if request.path.startswith(prefix):
            return request.path[len(prefix) :].rstrip("/") or None
    return request.headers.get("x-coinapi-key") or bearer_token(request) or request.query.get("apikey") or None


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
        if pinned is _EVERY:
            return every
        if pinned is not None:
            exchanges.add(_canonical(pinned, mapper))  # type: ignore[arg-type]
    exchanges.discard(None)
    keys = {StreamKey(datatype, exchange, None) for exchange in exchanges}
    keys |= {StreamKey(datatype, exchange, symbol) for exchange, symbol in symbols if exchange not in exchanges}
    return keys


def prefix_exchange(prefix: str) -> str | object | None:
    """The CoinAPI exchange id a symbol id prefix pins; `_EVERY` when it pins none; None when no
    plain SPOT id can start with it."""
    complete = prefix.split("_")[:-1]  # the last part may be cut short
    if not complete:
        return _EVERY
    for position in range(1, len(complete)):
        if complete[position] in KINDS:
            return "_".join(complete[:position]) if complete[position] == "SPOT" else None
    return complete[0]


def _canonical(exchange_id: str, mapper: SymbolMapper) -> str | None:
    """The canonical exchange whose events carry `exchange_id`; None when none does (`OKX`: the
    canonical `okx` is `OKEX` at CoinAPI), so no key is wasted on it."""
    try:
        exchange = mapper.exchanges.to_canonical(exchange_id)
    except InstrumentError:
        return None
    return exchange if mapper.exchanges.to_coinapi(exchange) == exchange_id else None
