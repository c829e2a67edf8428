"""The CoinAPI V1 subscription model: which (data type, symbol id) a hello/subscribe/unsubscribe
sequence selects. Used by the emulator and by the gateway's CoinAPI-compatible endpoint.

Owns: filter matching, the per-connection scope and the server's request validation texts.
Must never: do I/O or know about canonical instruments (it speaks CoinAPI ids only).

Our reading of the spec, where it is terse:
- `subscribe_filter_symbol_id` items are prefixes; a trailing `$` makes the item an exact id.
- `subscribe_filter_exchange_id` items select every symbol of that exchange (exact exchange id).
- `subscribe_filter_asset_id`: an asset (`BTC`) selects symbols whose base or quote it is; a pair
  (`BTC/USD`) selects symbols with exactly that base and quote (not `USD/BTC`). Indexes have no
  base/quote, so asset filters never select them.
- Items inside one list are OR'd, and the lists are a UNION: a symbol is selected if any non-empty
  list selects it (the documented "all COINBASE and ITBIT symbols and additionally two BITSTAMP/
  BITFINEX symbols" example; we apply the same union to the asset list).
- An empty or absent list filters nothing; with no non-empty list at all, EVERY symbol matches.
- Ids are upper case at CoinAPI, so filter items and ids are compared case-insensitively.
- `subscribe_data_type` applies to the whole filtered set of its message. The scope keeps one
  filter per data type: `hello` replaces all, `subscribe` unions its filter into each of its data
  types, `unsubscribe` removes its items from each of its data types (a message with no filter
  lists removes the data types entirely; a data type whose lists all become empty is removed,
  since an empty filter would mean "everything"). Subtracting items from an everything-filter
  cannot be expressed and leaves it as it is.
- `subscribe_filter_period_id` is a set of OHLCV periods kept the same way; empty means every period.
- `heartbeat`: set by `hello`; `subscribe` can switch it on; `unsubscribe` leaves it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from providers.coinapi import wire
from providers.coinapi.symbols import SymbolIdError, parse_symbol_id

#: Data types the server accepts in `subscribe_data_type`.
DATA_TYPES: Final = frozenset(
    {"trade", "quote", "book", "book5", "book20", "book50", "book_l3", "ohlcv", "exrate", "asset", "exchange", "symbol"}
)
DATA_TYPE_REQUIRED: Final = "Parameter subscribe_data_type is required."
INVALID_API_KEY: Final = "Invalid API key"  # CoinAPI's own text
#: CoinAPI documents no text for malformed JSON or an unknown message type; this one is ours.
INVALID_MESSAGE: Final = "Invalid message: not a JSON object with a known type."
_CACHE_LIMIT: Final = 65_536  # memoized match results per filter; cleared beyond this


def _upper(items: Iterable[str] | None) -> frozenset[str]:
    return frozenset(item.upper() for item in items or ())


def _exchange_and_assets(symbol_id: str) -> tuple[str, str | None, str | None]:
    try:
        sid = parse_symbol_id(symbol_id)
    except SymbolIdError:
        return symbol_id.split("_", 1)[0], None, None
    return sid.exchange, sid.base, sid.quote


@dataclass(frozen=True)
class SubscriptionFilter:
    """The symbol selection of one message (or of one data type in a scope). Immutable; `matches`
    is memoized because it runs once per data frame on the hot path."""

    symbol_ids: frozenset[str] = frozenset()  # prefixes; trailing `$`: exact
    exchange_ids: frozenset[str] = frozenset()
    asset_ids: frozenset[str] = frozenset()  # `BTC` or `BTC/USD`
    _cache: dict[str, bool] = field(default_factory=dict, compare=False, repr=False, hash=False)

    @classmethod
    def from_hello(cls, message: wire.Hello | wire.Subscribe | wire.Unsubscribe) -> SubscriptionFilter:
        return cls.of(
            message.subscribe_filter_symbol_id, message.subscribe_filter_exchange_id, message.subscribe_filter_asset_id
        )

    @classmethod
    def of(
        cls,
        symbol_ids: Iterable[str] | None = None,
        exchange_ids: Iterable[str] | None = None,
        asset_ids: Iterable[str] | None = None,
    ) -> SubscriptionFilter:
        return cls(_upper(symbol_ids), _upper(exchange_ids), _upper(asset_ids))

    @property
    def everything(self) -> bool:
        """No list filters anything: every symbol matches."""
        return not (self.symbol_ids or self.exchange_ids or self.asset_ids)

    def matches(self, symbol_id: str) -> bool:
        found = self._cache.get(symbol_id)
        if found is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            found = self._cache[symbol_id] = self.everything or self._selects(symbol_id.upper())
        return found

    def _selects(self, symbol_id: str) -> bool:
        if any(_symbol_item_matches(item, symbol_id) for item in self.symbol_ids):
            return True
        if not (self.exchange_ids or self.asset_ids):
            return False
        exchange, base, quote = _exchange_and_assets(symbol_id)
        return exchange in self.exchange_ids or any(_asset_item_matches(a, base, quote) for a in self.asset_ids)

    def union(self, other: SubscriptionFilter) -> SubscriptionFilter:
        if self.everything or other.everything:
            return SubscriptionFilter()
        return SubscriptionFilter(
            self.symbol_ids | other.symbol_ids, self.exchange_ids | other.exchange_ids, self.asset_ids | other.asset_ids
        )

    def without(self, other: SubscriptionFilter) -> SubscriptionFilter | None:
        """Remove `other`'s items; None when nothing is left selected (see the module header)."""
        if other.everything:
            return None
        if self.everything:
            return self
        left = SubscriptionFilter(
            self.symbol_ids - other.symbol_ids, self.exchange_ids - other.exchange_ids, self.asset_ids - other.asset_ids
        )
        return None if left.everything else left


def _symbol_item_matches(item: str, symbol_id: str) -> bool:
    if item.endswith("$"):
        return symbol_id == item[:-1]
    return symbol_id.startswith(item)


def _asset_item_matches(item: str, base: str | None, quote: str | None) -> bool:
    if base is None:
        return False
    if "/" in item:
        return item == f"{base}/{quote}"
    return item in (base, quote)


@dataclass(frozen=True)
class Scope:
    """What one connection is subscribed to. Immutable: `apply` returns the next scope."""

    filters: dict[str, SubscriptionFilter] = field(default_factory=dict)  # data type → filter
    periods: frozenset[str] = frozenset()  # OHLCV periods; empty: every period
    heartbeat: bool = False

    @property
    def data_types(self) -> frozenset[str]:
        return frozenset(self.filters)

    def wants(self, data_type: str, symbol_id: str) -> bool:
        selection = self.filters.get(data_type)
        return selection is not None and selection.matches(symbol_id)

    def wants_period(self, period_id: str) -> bool:
        return not self.periods or period_id.upper() in self.periods

    def apply(self, message: wire.ClientMessage) -> Scope:
        """The scope after `message` (assumed valid: see `validate_request`)."""
        selection = SubscriptionFilter.from_hello(message)
        types = message.subscribe_data_type or []
        periods = _upper(message.subscribe_filter_period_id)
        if isinstance(message, wire.Hello):
            return Scope({t: selection for t in types}, periods, message.heartbeat)
        if isinstance(message, wire.Subscribe):
            merged = dict(self.filters)
            for t in types:
                merged[t] = merged[t].union(selection) if t in merged else selection
            return Scope(merged, self.periods | periods, self.heartbeat or message.heartbeat)
        return Scope(self._without(types, selection), self.periods - periods, self.heartbeat)

    def _without(self, types: list[str], selection: SubscriptionFilter) -> dict[str, SubscriptionFilter]:
        remaining = dict(self.filters)
        for t in types:
            if t in remaining:
                left = remaining[t].without(selection)
                if left is None:
                    del remaining[t]
                else:
                    remaining[t] = left
        return remaining


def validate_request(message: wire.ClientMessage) -> str | None:
    """The server's error text for a request it refuses, or None. The first text is CoinAPI's
    own; the unknown-data-type text is ours (CoinAPI documents that it is an error, not its words)."""
    if not message.subscribe_data_type:
        return DATA_TYPE_REQUIRED
    unknown = [t for t in message.subscribe_data_type if t not in DATA_TYPES]
    if unknown:
        return f"Parameter subscribe_data_type contains an unknown data type: {unknown[0]}."
    return None
