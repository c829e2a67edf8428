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
Each filter item (and an everything-filter) *contributes* one such key; the covering keys are the
contributions reduced: every exchange's key makes the rest of its hub data type redundant, and an
exchange's key the symbol keys of that exchange (across CoinAPI data types sharing a hub data type).
`covering_keys` computes them from a whole scope (the reference); `Coverage` keeps them up to date
by counting contributions, so a request costs what it changes, not the size of the scope (a
client toggling one symbol beside thousands held must not stall the hub's other clients).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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
    raw: set[StreamKey] = set()
    for data_type, selection in scope.filters.items():
        raw.update(contributions(data_type, selection, mapper))
    every = {key.datatype for key in raw if key.exchange is None}
    exchanges = {(key.datatype, key.exchange) for key in raw if key.symbol is None}
    return frozenset(key for key in raw if _effective(key, every, exchanges))


def _effective(key: StreamKey, every: set[str] | dict[str, int], exchanges: set | dict) -> bool:
    if key.exchange is None:
        return True
    if key.datatype in every:
        return False
    return key.symbol is None or (key.datatype, key.exchange) not in exchanges


def contributions(data_type: str, selection: SubscriptionFilter, mapper: SymbolMapper) -> Iterator[StreamKey]:
    """The key each item of one data type's filter contributes (items that cover nothing, none)."""
    datatype = HUB_DATATYPE.get(data_type)
    if datatype is None:
        return
    if selection.everything:
        yield StreamKey(datatype, None, None)
        return
    yield from _item_keys(datatype, selection.symbol_ids, selection.exchange_ids, selection.asset_ids, mapper)


def _item_keys(
    datatype: str, symbol_ids: Iterable[str], exchange_ids: Iterable[str], asset_ids: Iterable[str], mapper: SymbolMapper
) -> Iterator[StreamKey]:
    for item in symbol_ids:
        key = _symbol_item_key(datatype, item, mapper)
        if key is not None:
            yield key
    for exchange_id in exchange_ids:
        exchange = _canonical(exchange_id, mapper)
        if exchange is not None:
            yield StreamKey(datatype, exchange, None)
    for _ in asset_ids:  # any exchange may list the asset
        yield StreamKey(datatype, None, None)


def _symbol_item_key(datatype: str, item: str, mapper: SymbolMapper) -> StreamKey | None:
    if item.endswith("$"):
        instrument = mapper.instrument(item[:-1])
        return None if instrument is None else StreamKey(datatype, *instrument)
    pinned = prefix_exchange(item)
    if pinned is Unpinned.EVERY:
        return StreamKey(datatype, None, None)
    if isinstance(pinned, str):
        exchange = _canonical(pinned, mapper)
        return None if exchange is None else StreamKey(datatype, exchange, None)
    return None


class Coverage:
    """The covering keys of a connection's scope, kept up to date per request.

    Counts each contribution (`contributions`) and keeps the reduced set in `keys`. `update` takes
    the scope before and after a request and returns the keys that became covered and those that
    stopped being covered; only the data types whose filter changed are looked at, and within
    them only the items added or removed (set differences, done in C). An exchange key or an
    every-exchange key appearing or going re-examines the keys it shadows: that many hub
    subscriptions change anyway."""

    def __init__(self, mapper: SymbolMapper) -> None:
        self.mapper = mapper
        self.keys: set[StreamKey] = set()
        self._count: dict[StreamKey, int] = {}
        self._every: dict[str, int] = {}  # hub data type → contributions of its every-exchange key
        self._exchanges: dict[tuple[str, str | None], int] = {}  # (datatype, exchange) → exchange-key count
        self._under: dict[tuple[str, str | None], set[StreamKey]] = {}  # (datatype, exchange) → symbol keys
        self._of_datatype: dict[str, set[StreamKey]] = {}  # hub data type → its keys with a count

    def update(self, before: Scope, after: Scope) -> tuple[set[StreamKey], set[StreamKey]]:
        was: dict[StreamKey, bool] = {}  # each key touched: whether it was covered before
        for data_type in before.filters.keys() | after.filters.keys():
            old, new = before.filters.get(data_type), after.filters.get(data_type)
            if old is new:
                continue  # untouched by this request (Scope.apply keeps unchanged filters as they are)
            gone, came = _changed_items(data_type, old, new, self.mapper)
            for key in gone:
                self._drop(key, was)
            for key in came:
                self._add(key, was)
        # A key can go out and back in (or the reverse) within one request: the net change counts.
        added = {key for key, covered in was.items() if not covered and key in self.keys}
        removed = {key for key, covered in was.items() if covered and key not in self.keys}
        return added, removed

    def _add(self, key: StreamKey, was: dict[StreamKey, bool]) -> None:
        count = self._count.get(key, 0)
        self._count[key] = count + 1
        if count:
            return
        self._index(key, +1)
        if key.exchange is None:
            self._every[key.datatype] = 1
            self._resettle(self._of_datatype.get(key.datatype, ()), was)
        elif key.symbol is None:
            self._exchanges[(key.datatype, key.exchange)] = 1
            self._resettle(self._under.get((key.datatype, key.exchange), ()), was)
        self._settle(key, was)

    def _drop(self, key: StreamKey, was: dict[StreamKey, bool]) -> None:
        count = self._count.get(key, 0) - 1
        if count > 0:
            self._count[key] = count
            return
        del self._count[key]
        self._index(key, -1)
        self._settle(key, was)
        if key.exchange is None:
            del self._every[key.datatype]
            self._resettle(self._of_datatype.get(key.datatype, ()), was)
        elif key.symbol is None:
            del self._exchanges[(key.datatype, key.exchange)]
            self._resettle(self._under.get((key.datatype, key.exchange), ()), was)

    def _index(self, key: StreamKey, step: int) -> None:
        """Index `key` (step +1) or drop it from the indexes (step -1): by data type, and symbol
        keys also by (data type, exchange)."""
        by_datatype = self._of_datatype.get(key.datatype)
        if by_datatype is None:
            by_datatype = self._of_datatype[key.datatype] = set()
        under = None
        if key.symbol is not None:
            under = self._under.get((key.datatype, key.exchange))
            if under is None:
                under = self._under[(key.datatype, key.exchange)] = set()
        if step > 0:
            by_datatype.add(key)
            if under is not None:
                under.add(key)
        else:
            by_datatype.discard(key)
            if under is not None:
                under.discard(key)

    def _resettle(self, keys: Iterable[StreamKey], was: dict[StreamKey, bool]) -> None:
        """Re-judge the keys a wider key shadows, after it appeared or went."""
        for key in list(keys):
            self._settle(key, was)

    def _settle(self, key: StreamKey, was: dict[StreamKey, bool]) -> None:
        """Put `key` in or out of `keys` by the reduction rule, remembering where it started."""
        wanted = key in self._count and _effective(key, self._every, self._exchanges)
        if wanted != (key in self.keys):
            was.setdefault(key, not wanted)
            if wanted:
                self.keys.add(key)
            else:
                self.keys.discard(key)


def _changed_items(
    data_type: str, old: SubscriptionFilter | None, new: SubscriptionFilter | None, mapper: SymbolMapper
) -> tuple[list[StreamKey], list[StreamKey]]:
    """The contributions a filter change takes away and brings."""
    if old is None or new is None or old.everything or new.everything:
        return ([*contributions(data_type, old, mapper)] if old is not None else [],
                [*contributions(data_type, new, mapper)] if new is not None else [])
    datatype = HUB_DATATYPE.get(data_type)
    if datatype is None:
        return [], []
    gone = _item_keys(datatype, old.symbol_ids - new.symbol_ids, old.exchange_ids - new.exchange_ids,
                      old.asset_ids - new.asset_ids, mapper)
    came = _item_keys(datatype, new.symbol_ids - old.symbol_ids, new.exchange_ids - old.exchange_ids,
                      new.asset_ids - old.asset_ids, mapper)
    return [*gone], [*came]


def _canonical(exchange_id: str, mapper: SymbolMapper) -> str | None:
    """The canonical exchange whose events carry `exchange_id`; None when none does (`OKX`: the
    canonical `okx` is `OKEX` at CoinAPI), so no key is wasted on it."""
    try:
        exchange = mapper.exchanges.to_canonical(exchange_id)
    except InstrumentError:
        return None
    return exchange if mapper.exchanges.to_coinapi(exchange) == exchange_id else None
