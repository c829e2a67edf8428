"""CoinAPI V1, the client side: what to ask the server for, given the wanted streams. Pure.

Owns: the mapping of wanted stream keys to an upstream scope, kept as counted filter sets so that
one added or removed key costs O(1) (`Planner.add` / `remove`); and, per upstream connection
(`LinkScope`), the one message that brings the server up to date: pure additions go out as a
`subscribe` of just the added filters, emptying as an `unsubscribe` of what was sent (a hello
cannot say "nothing"), anything else as a replacing `hello`, whose semantics do not depend on how
the server merges filters. A hello costs the size of the scope by nature; it is only built when
sent, and the caller coalesces bursts (and obeys `server.HelloLimiter`, the server's own rule).
Must never: do I/O or read a clock, or send a hello with no filter list (CoinAPI reads that as
"every symbol of every exchange") unless a stream of every exchange is wanted.

Mapping: a symbol stream becomes an exact symbol filter (`BINANCE_SPOT_BTC_USDT$`); an
exchange-wide stream an exchange filter (which makes that exchange's symbol filters redundant: a
hello leaves them out; a `subscribe` adding the exchange leaves the server's ones alone, since
they select nothing more); a stream of every exchange (`StreamKey(dt, None, None)`) drops the
filter lists altogether, since one hello's filters apply to all of its data types. Data types are
the union of what the streams need: `ticker` is derived from `trade`, `quote` and the `1DAY`
`ohlcv`; `book` comes from `book50` (the deepest fixed-depth snapshot, which the gateway slices
for shallower clients). CoinAPI applies the data types to the whole filtered set, so the adapter
receives more than it wants and drops the rest (`streams.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

from providers.coinapi import wire
from providers.coinapi.grammar import SymbolMapper
from schemas.instruments import InstrumentError
from schemas.streams import StreamKey

#: Upstream data types each of our data types needs.
UPSTREAM_TYPES: Final = {
    "trade": ("trade",),
    "quote": ("quote",),
    "ticker": ("trade", "quote", "ohlcv"),
    "book": ("book50",),
}
#: The only OHLCV period the ticker needs: CoinAPI's calendar-day (UTC) candle.
TICKER_PERIOD: Final = "1DAY"


@dataclass(frozen=True)
class UpstreamScope:
    """A snapshot of a scope: what a hello asks for."""

    data_types: frozenset[str] = frozenset()
    symbol_ids: frozenset[str] = frozenset()  # exact filters, with the trailing `$`
    exchange_ids: frozenset[str] = frozenset()
    period_ids: frozenset[str] = frozenset()
    everything: bool = False  # no filter lists: every symbol of every exchange

    @property
    def empty(self) -> bool:
        return not self.data_types or not (self.everything or self.symbol_ids or self.exchange_ids)

    @property
    def entries(self) -> int:
        """Upstream subscription entries (filter items; "everything" is one), as health reports them."""
        return 1 if self.everything else len(self.symbol_ids) + len(self.exchange_ids)


def hello(scope: UpstreamScope, apikey: str | None) -> wire.Hello:
    """The message that replaces the server's scope with `scope` (heartbeats on, so a silent
    connection can be told from a dead one)."""
    return wire.Hello(
        apikey=apikey,
        heartbeat=True,
        subscribe_data_type=sorted(scope.data_types),
        subscribe_filter_symbol_id=sorted(scope.symbol_ids) or None,
        subscribe_filter_exchange_id=sorted(scope.exchange_ids) or None,
        subscribe_filter_period_id=sorted(scope.period_ids) or None,
    )


class _Entry(NamedTuple):
    """What one wanted key asks of the server."""

    types: tuple[str, ...]
    symbol_id: str | None  # an exact symbol filter (`..._BTC_USDT$`), or None
    exchange_id: str | None  # the key's CoinAPI exchange id; None: every exchange


class LinkScope:
    """What the server of one upstream connection has (after every message planned for it), and
    what was added to the wanted set since. Changed only by its `Planner`."""

    def __init__(self) -> None:
        self.data_types: frozenset[str] = frozenset()
        self.period_ids: frozenset[str] = frozenset()
        self.everything = False
        self.symbol_ids: set[str] = set()
        self.exchange_ids: set[str] = set()
        self.replace = False  # something the server has is no longer wanted: a hello is due
        self.added_symbols: set[str] = set()
        self.added_exchanges: set[str] = set()

    @property
    def empty(self) -> bool:
        return not self.data_types

    @property
    def entries(self) -> int:
        if self.empty:
            return 0
        return 1 if self.everything else len(self.symbol_ids) + len(self.exchange_ids)

    def reset_to(self, scope: UpstreamScope) -> None:
        self.data_types, self.period_ids, self.everything = scope.data_types, scope.period_ids, scope.everything
        self.symbol_ids, self.exchange_ids = set(scope.symbol_ids), set(scope.exchange_ids)
        self.replace = False
        self.added_symbols.clear()
        self.added_exchanges.clear()

    def symbol_gone(self, symbol_id: str, exchange_id: str) -> None:
        if symbol_id in self.added_symbols:
            self.added_symbols.discard(symbol_id)
        elif symbol_id in self.symbol_ids and not self.everything and exchange_id not in self.exchange_ids:
            self.replace = True  # (under a sent exchange filter it selects nothing more: harmless)

    def exchange_gone(self, exchange_id: str) -> None:
        if exchange_id in self.added_exchanges:
            self.added_exchanges.discard(exchange_id)
        elif exchange_id in self.exchange_ids and not self.everything:
            self.replace = True


class Planner:
    """The wanted set as counted filter sets, and the messages that move each connection's server
    scope to it."""

    def __init__(self, mapper: SymbolMapper) -> None:
        self._mapper = mapper
        self._entries: dict[StreamKey, _Entry | None] = {}  # None: a key this provider cannot serve
        self._types: dict[str, int] = {}  # upstream data type → keys needing it
        self._symbols: dict[str, int] = {}  # symbol filter → keys naming it
        self._symbol_exchange: dict[str, str] = {}  # symbol filter → its exchange id
        self._exchanges: dict[str, int] = {}  # exchange id → exchange-wide keys
        self._every = 0  # keys of every exchange
        self._links: list[LinkScope] = []

    # ------------------------------------------------------------------ the wanted set

    def add(self, keys: Iterable[StreamKey]) -> None:
        for key in keys:
            if key not in self._entries:
                entry = self._entries[key] = self._entry(key)
                if entry is not None:
                    self._count(entry)

    def remove(self, keys: Iterable[StreamKey]) -> None:
        for key in keys:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._uncount(entry)

    def _entry(self, key: StreamKey) -> _Entry | None:
        types = UPSTREAM_TYPES.get(key.datatype)
        if types is None:
            return None
        if key.exchange is None:
            return _Entry(types, None, None)
        try:
            exchange_id = self._mapper.exchanges.to_coinapi(key.exchange)
            symbol_id = None if key.symbol is None else self._mapper.symbol_id(key.exchange, key.symbol) + "$"
        except InstrumentError:
            return None
        return _Entry(types, symbol_id, exchange_id)

    def _count(self, entry: _Entry) -> None:
        for t in entry.types:
            self._types[t] = self._types.get(t, 0) + 1
        if entry.exchange_id is None:
            self._every += 1
        elif entry.symbol_id is None:
            self._exchanges[entry.exchange_id] = count = self._exchanges.get(entry.exchange_id, 0) + 1
            if count == 1:
                for link in self._links:
                    link.added_exchanges.add(entry.exchange_id)
        else:
            self._symbols[entry.symbol_id] = count = self._symbols.get(entry.symbol_id, 0) + 1
            if count == 1:
                self._symbol_exchange[entry.symbol_id] = entry.exchange_id
                for link in self._links:
                    link.added_symbols.add(entry.symbol_id)

    def _uncount(self, entry: _Entry) -> None:
        for t in entry.types:
            _decrement(self._types, t)
        if entry.exchange_id is None:
            self._every -= 1
        elif entry.symbol_id is None:
            if _decrement(self._exchanges, entry.exchange_id):
                for link in self._links:
                    link.exchange_gone(entry.exchange_id)
        elif _decrement(self._symbols, entry.symbol_id):
            del self._symbol_exchange[entry.symbol_id]
            for link in self._links:
                link.symbol_gone(entry.symbol_id, entry.exchange_id)

    @property
    def wanted(self) -> int:
        """Keys wanted (served or not)."""
        return len(self._entries)

    @property
    def empty(self) -> bool:
        """Nothing this provider can serve is wanted."""
        return not self._types

    def target(self) -> UpstreamScope:
        """The scope that delivers every wanted stream (keys we cannot map are skipped). O(scope)."""
        types = frozenset(self._types)
        periods = frozenset({TICKER_PERIOD}) if "ohlcv" in types else frozenset()
        if self._every:
            return UpstreamScope(types, period_ids=periods, everything=True)
        exchanges = self._exchanges
        symbols = frozenset(s for s, e in self._symbol_exchange.items() if e not in exchanges)
        return UpstreamScope(types, symbols, frozenset(exchanges), periods)

    # ------------------------------------------------------------------ connections

    def attach(self) -> LinkScope:
        """A new upstream connection, whose server has nothing yet."""
        link = LinkScope()
        self._links.append(link)
        return link

    def detach(self, link: LinkScope) -> None:
        if link in self._links:
            self._links.remove(link)

    def pending(self, link: LinkScope) -> bool:
        """Whether `update` may have a message for `link` (O(1): nothing is built)."""
        if self.empty:
            return not link.empty
        types = frozenset(self._types)
        return (
            link.empty
            or link.replace
            or types != link.data_types
            or (self._every > 0) != link.everything
            or bool(link.added_symbols or link.added_exchanges)
        )

    def update(self, link: LinkScope, apikey: str | None) -> wire.ClientMessage | None:
        """The one message that brings `link`'s server up to date (None: it is), taken as sent."""
        if self.empty:
            return self._unsubscribe_all(link)
        types = frozenset(self._types)
        periods = frozenset({TICKER_PERIOD}) if "ohlcv" in types else frozenset()
        everything = self._every > 0
        if link.empty or link.replace or (types, periods, everything) != (link.data_types, link.period_ids, link.everything):
            target = self.target()
            link.reset_to(target)
            return hello(target, apikey)
        return self._subscribe_added(link)

    def _subscribe_added(self, link: LinkScope) -> wire.Subscribe | None:
        """Pure additions: a `subscribe` of just the added filters, with the data types as they are."""
        exchanges = self._exchanges
        symbols = sorted(s for s in link.added_symbols if self._symbol_exchange[s] not in exchanges)
        added_exchanges = sorted(link.added_exchanges)
        link.added_symbols.clear()
        link.added_exchanges.clear()
        if link.everything or not (symbols or added_exchanges):
            return None
        link.symbol_ids.update(symbols)
        link.exchange_ids.update(added_exchanges)
        return wire.Subscribe(
            heartbeat=True,
            subscribe_data_type=sorted(link.data_types),
            subscribe_filter_symbol_id=symbols or None,
            subscribe_filter_exchange_id=added_exchanges or None,
        )

    def _unsubscribe_all(self, link: LinkScope) -> wire.Unsubscribe | None:
        if link.empty:
            return None
        message = wire.Unsubscribe(
            subscribe_data_type=sorted(link.data_types),
            subscribe_filter_symbol_id=sorted(link.symbol_ids) or None,
            subscribe_filter_exchange_id=sorted(link.exchange_ids) or None,
            subscribe_filter_period_id=sorted(link.period_ids) or None,
        )
        link.reset_to(UpstreamScope())
        return message


def _decrement(counts: dict[str, int], key: str) -> bool:
    """Count one fewer; True when that was the last."""
    left = counts[key] - 1
    if left:
        counts[key] = left
        return False
    del counts[key]
    return True
