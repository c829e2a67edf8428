"""CoinAPI V1, the client side: what to ask the server for, given the wanted streams. Pure.

Owns: the mapping of wanted stream keys to an upstream scope, kept as counted filter sets so that
one added or removed key costs O(1) (`Planner.add` / `remove`); and, per upstream connection
(`LinkScope`), the one message that brings the server up to date: pure additions go out as a
`subscribe` of just the added filters, emptying as an `unsubscribe` of what was sent (a hello
cannot say "nothing"), anything else as a replacing `hello`, whose semantics do not depend on how
the server merges filters. A hello costs the size of the scope by nature; it is only built when
sent, and the caller coalesces bursts (and obeys `server.HelloLimiter`, the server's own rule).
Must never: do I/O or read a clock, send a hello with no filter list (CoinAPI reads that as
"every symbol of every exchange") unless a stream of every exchange is wanted, or plan a message
outside CoinAPI's limits, whatever is wanted:
- every message fits `MAX_MESSAGE_BYTES` and `MAX_MESSAGE_ITEMS`: a scope too big for one hello
  goes out as a hello of what fits, then `subscribe`s of the rest (the caller paces them by
  `server.HelloLimiter`, so a 20,000-symbol scope takes a few windows); an `unsubscribe` is split
  the same way;
- a connection's scope holds at most `MAX_SYMBOL_FILTERS` exact symbol filters, and at most
  `MAX_SCOPE_ITEMS` filter items counted once per data type (as a server counts them): beyond, the
  exchanges with the most wanted symbols are asked for exchange-wide (one entry instead of
  hundreds; the router drops what nobody wants), until the rest fits;
- at most `MAX_EXCHANGE_FILTERS` exchanges: a key naming one more (or an id longer than CoinAPI's)
  cannot fit and is refused (`Planner.add` returns it, the adapter reports it `rejected`), never
  sent to fail for everyone. Accepted keys therefore always fit: with every exchange collapsed,
  the scope is at most `MAX_EXCHANGE_FILTERS` short entries.
These constants are the defaults of `Limits` (configurable: `CoinApiPolicy.limits`).

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
from typing import Annotated, Final, NamedTuple

import msgspec

from providers.coinapi import server, wire
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
#: Largest client message we send. CoinAPI documents no limit; 64 KiB is the frame size WebSocket
#: servers and the proxies in front of them commonly accept without special configuration (and
#: this gateway's own default `limits.max_message_bytes`), so no hello is too big to be read.
MAX_MESSAGE_BYTES: Final = 64 * 1024
#: Exact symbol filters one connection asks for. CoinAPI documents no number; a scope of this many
#: is already several hellos, and collapsing the largest exchanges keeps it there.
MAX_SYMBOL_FILTERS: Final = 5_000
#: Distinct exchanges one scope may name: CoinAPI lists about 400; more is not a real scope.
MAX_EXCHANGE_FILTERS: Final = 500
#: Filter items in one message, and in a connection's whole scope counted per data type: CoinAPI
#: documents neither, so we keep inside what our own stand-in (`server.py`, which the emulator and
#: the gateway's CoinAPI endpoint run) accepts; a server refusing them would end the connection.
MAX_MESSAGE_ITEMS: Final = server.MAX_FILTER_ITEMS
MAX_SCOPE_ITEMS: Final = server.MAX_SCOPE_ITEMS


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What one upstream connection may be asked (defaults: the constants above, with reasons)."""

    max_message_bytes: Annotated[int, msgspec.Meta(ge=4 * 1024)] = MAX_MESSAGE_BYTES
    max_symbol_filters: Annotated[int, msgspec.Meta(ge=1)] = MAX_SYMBOL_FILTERS
    max_exchange_filters: Annotated[int, msgspec.Meta(ge=1)] = MAX_EXCHANGE_FILTERS
    max_message_items: Annotated[int, msgspec.Meta(ge=16)] = MAX_MESSAGE_ITEMS
    max_scope_items: Annotated[int, msgspec.Meta(ge=64)] = MAX_SCOPE_ITEMS


#: Longest exchange id we ask for (CoinAPI's are ≤ 12 characters, `BINANCEFTSC`).
MAX_EXCHANGE_ID_CHARS: Final = 32
#: Room kept in every message for the JSON around the filter lists (keys, brackets, data types).
_ENVELOPE_BYTES: Final = 512


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

    def __init__(self, mapper: SymbolMapper, limits: Limits | None = None) -> None:
        self._mapper = mapper
        self.limits = limits = limits or Limits()
        self._budget = limits.max_message_bytes - _ENVELOPE_BYTES  # for the filter lists of a message
        self._entries: dict[StreamKey, _Entry | None] = {}  # None: a key this provider does not serve
        self._types: dict[str, int] = {}  # upstream data type → keys needing it
        self._symbols: dict[str, int] = {}  # symbol filter → keys naming it
        self._symbol_exchange: dict[str, str] = {}  # symbol filter → its exchange id
        self._symbols_of: dict[str, set[str]] = {}  # exchange id → its symbol filters
        self._exchanges: dict[str, int] = {}  # exchange id → exchange-wide keys
        self._exchange_refs: dict[str, int] = {}  # exchange id → keys naming it (either kind)
        self._every = 0  # keys of every exchange
        self._links: list[LinkScope] = []

    # ------------------------------------------------------------------ the wanted set

    def add(self, keys: Iterable[StreamKey]) -> list[StreamKey]:
        """Want `keys` too; returns those refused because they cannot fit CoinAPI's limits."""
        refused: list[StreamKey] = []
        for key in keys:
            if key not in self._entries:
                entry = self._entries[key] = self._entry(key)
                if entry is not None and not self._fits(entry):
                    self._entries[key] = None
                    refused.append(key)
                elif entry is not None:
                    self._count(entry)
        return refused

    def _fits(self, entry: _Entry) -> bool:
        exchange_id = entry.exchange_id
        if exchange_id is None:
            return True
        if len(exchange_id) > MAX_EXCHANGE_ID_CHARS or len(entry.symbol_id or "") > wire.MAX_ID_CHARS:
            return False
        return exchange_id in self._exchange_refs or len(self._exchange_refs) < self.limits.max_exchange_filters

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
            return
        self._exchange_refs[entry.exchange_id] = self._exchange_refs.get(entry.exchange_id, 0) + 1
        if entry.symbol_id is None:
            self._exchanges[entry.exchange_id] = count = self._exchanges.get(entry.exchange_id, 0) + 1
            if count == 1:
                for link in self._links:
                    link.added_exchanges.add(entry.exchange_id)
        else:
            self._symbols[entry.symbol_id] = count = self._symbols.get(entry.symbol_id, 0) + 1
            if count == 1:
                self._symbol_exchange[entry.symbol_id] = entry.exchange_id
                self._symbols_of.setdefault(entry.exchange_id, set()).add(entry.symbol_id)
                for link in self._links:
                    link.added_symbols.add(entry.symbol_id)

    def _uncount(self, entry: _Entry) -> None:
        for t in entry.types:
            _decrement(self._types, t)
        if entry.exchange_id is None:
            self._every -= 1
            return
        _decrement(self._exchange_refs, entry.exchange_id)
        if entry.symbol_id is None:
            if _decrement(self._exchanges, entry.exchange_id):
                for link in self._links:
                    link.exchange_gone(entry.exchange_id)
        elif _decrement(self._symbols, entry.symbol_id):
            del self._symbol_exchange[entry.symbol_id]
            of_exchange = self._symbols_of[entry.exchange_id]
            of_exchange.discard(entry.symbol_id)
            if not of_exchange:
                del self._symbols_of[entry.exchange_id]
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
        """The scope that delivers every wanted stream (keys we cannot map are skipped), with the
        largest exchanges collapsed to exchange filters beyond `max_symbol_filters`. O(scope)."""
        types = frozenset(self._types)
        periods = frozenset({TICKER_PERIOD}) if "ohlcv" in types else frozenset()
        if self._every:
            return UpstreamScope(types, period_ids=periods, everything=True)
        exchanges = set(self._exchanges)
        by_exchange = {e: symbols for e, symbols in self._symbols_of.items() if e not in exchanges}
        count = sum(len(symbols) for symbols in by_exchange.values())
        room = self._entries_room(types, periods)
        for exchange_id in sorted(by_exchange, key=lambda e: (-len(by_exchange[e]), e)):
            if count <= self.limits.max_symbol_filters and count + len(exchanges) <= room:
                break
            exchanges.add(exchange_id)
            count -= len(by_exchange.pop(exchange_id))
        symbols = frozenset(s for of_exchange in by_exchange.values() for s in of_exchange)
        return UpstreamScope(types, symbols, frozenset(exchanges), periods)

    def _entries_room(self, types: frozenset[str], periods: frozenset[str]) -> int:
        """Symbol and exchange filters a scope may hold: a server counts each once per data type."""
        return self.limits.max_scope_items // max(1, len(types)) - len(periods)

    def _room(self, apikey: str | None = None) -> _Room:
        """What one message has for its filter lists (the period filter is one item)."""
        return _Room(self._budget - len(apikey or ""), self.limits.max_message_items - 1)

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
        """The one message that brings `link`'s server up to date (None: it is), taken as sent.
        A scope too big for one message is brought there by several: call until `pending` is False."""
        if self.empty:
            return self._unsubscribe_all(link)
        types = frozenset(self._types)
        periods = frozenset({TICKER_PERIOD}) if "ohlcv" in types else frozenset()
        everything = self._every > 0
        if (
            link.empty
            or link.replace
            or (types, periods, everything) != (link.data_types, link.period_ids, link.everything)
            or self._too_big(link, types, periods)  # time to collapse
        ):
            return self._hello(link, apikey)
        return self._subscribe_added(link)

    def _too_big(self, link: LinkScope, types: frozenset[str], periods: frozenset[str]) -> bool:
        """Whether the additions would take `link` past the limits (then a hello collapses)."""
        symbols = len(link.symbol_ids) + len(link.added_symbols)
        entries = symbols + len(link.exchange_ids) + len(link.added_exchanges)
        return symbols > self.limits.max_symbol_filters or entries > self._entries_room(types, periods)

    def _hello(self, link: LinkScope, apikey: str | None) -> wire.Hello:
        """A hello of as much of the target as fits one message; the rest is left to `subscribe`s."""
        target = self.target()
        room = self._room(apikey)
        exchanges, symbols = room.take(sorted(target.exchange_ids)), room.take(sorted(target.symbol_ids))
        first = UpstreamScope(target.data_types, frozenset(symbols), frozenset(exchanges), target.period_ids, target.everything)
        link.reset_to(first)
        link.added_exchanges.update(target.exchange_ids - first.exchange_ids)
        link.added_symbols.update(target.symbol_ids - first.symbol_ids)
        return hello(first, apikey)

    def _subscribe_added(self, link: LinkScope) -> wire.Subscribe | None:
        """Pure additions: a `subscribe` of the added filters that fit one message, with the data
        types as they are; symbols under an exchange filter (wanted or sent) are left out."""
        if link.everything:
            link.added_symbols.clear()
            link.added_exchanges.clear()
            return None
        room = self._room()
        exchanges = room.take(sorted(link.added_exchanges))
        link.added_exchanges.difference_update(exchanges)
        link.exchange_ids.update(exchanges)
        covered = [s for s in link.added_symbols if self._covered(link, s)]
        link.added_symbols.difference_update(covered)
        symbols = room.take(sorted(link.added_symbols))
        link.added_symbols.difference_update(symbols)
        link.symbol_ids.update(symbols)
        if not (symbols or exchanges):
            return None
        return wire.Subscribe(
            heartbeat=True,
            subscribe_data_type=sorted(link.data_types),
            subscribe_filter_symbol_id=symbols or None,
            subscribe_filter_exchange_id=exchanges or None,
        )

    def _covered(self, link: LinkScope, symbol_id: str) -> bool:
        exchange_id = self._symbol_exchange[symbol_id]
        return exchange_id in self._exchanges or exchange_id in link.exchange_ids

    def _unsubscribe_all(self, link: LinkScope) -> wire.Unsubscribe | None:
        """An `unsubscribe` of what the server has, as much as fits one message; the link is empty
        once all of it went (until then a returning demand replaces the scope with a hello)."""
        if link.empty:
            return None
        room = self._room()
        exchanges, symbols = room.take(sorted(link.exchange_ids)), room.take(sorted(link.symbol_ids))
        message = wire.Unsubscribe(
            subscribe_data_type=sorted(link.data_types),
            subscribe_filter_symbol_id=symbols or None,
            subscribe_filter_exchange_id=exchanges or None,
            subscribe_filter_period_id=sorted(link.period_ids) or None,
        )
        link.exchange_ids.difference_update(exchanges)
        link.symbol_ids.difference_update(symbols)
        if link.exchange_ids or link.symbol_ids:
            link.replace = True
        else:
            link.reset_to(UpstreamScope())
        return message


@dataclass
class _Room:
    """What is left of one message: bytes for its filter lists, and filter items."""

    bytes: int
    items: int

    def take(self, items: Iterable[str]) -> list[str]:
        """The leading `items` that still fit, taken out of the room."""
        taken: list[str] = []
        for item in items:
            cost = len(item.encode()) + 3  # the quotes and the comma
            if cost > self.bytes or self.items == 0:
                break
            taken.append(item)
            self.bytes -= cost
            self.items -= 1
        return taken


def _decrement(counts: dict[str, int], key: str) -> bool:
    """Count one fewer; True when that was the last."""
    left = counts[key] - 1
    if left:
        counts[key] = left
        return False
    del counts[key]
    return True
