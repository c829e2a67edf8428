"""Subscription planning for the upstream CoinAPI connection: what to ask for, and when.

Owns: the wanted set → upstream scope mapping, the choice of hello / subscribe / unsubscribe that
moves the server from what it has to what we want, and the hello rate limiter.
Must never: do I/O or read a clock (times are passed in), or send a hello with no filter list
(CoinAPI reads that as "every symbol of every exchange") unless a stream of every exchange is wanted.

Mapping: a symbol stream becomes an exact symbol filter (`BINANCE_SPOT_BTC_USDT$`); an
exchange-wide stream becomes an exchange filter (and makes that exchange's symbol filters
redundant); a stream of every exchange (`StreamKey(dt, None, None)`) drops the filter lists
altogether (`everything`), since one hello's filters apply to all of its data types. Data types
are the union of what the streams need: `ticker` is derived from `trade`, `quote` and the `1DAY`
`ohlcv`; `book` comes from `book50` (the deepest fixed-depth snapshot, which the gateway slices
for shallower clients). CoinAPI applies the data types to the whole filtered set, so the adapter
receives more than it wants and drops the rest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Set
from dataclasses import dataclass, field
from typing import Final

from schemas.streams import StreamKey
from providers.coinapi import wire
from providers.coinapi.symbols import SymbolMapper
from schemas.instruments import InstrumentError

#: Upstream data types each of our data types needs.
UPSTREAM_TYPES: Final = {
    "trade": ("trade",),
    "quote": ("quote",),
    "ticker": ("trade", "quote", "ohlcv"),
    "book": ("book50",),
}
#: The only OHLCV period the ticker needs: CoinAPI's calendar-day (UTC) candle.
TICKER_PERIOD: Final = "1DAY"
#: CoinAPI's limit: 10 hello/subscribe messages per 10 seconds per IP.
HELLO_LIMIT: Final = 10
HELLO_WINDOW: Final = 10.0


@dataclass(frozen=True)
class UpstreamScope:
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


def scope_for(wanted: Set[StreamKey], mapper: SymbolMapper) -> UpstreamScope:
    """The upstream scope that delivers every wanted stream (streams we cannot map are skipped)."""
    types: set[str] = set()
    exchanges: set[str] = set()
    symbols: dict[str, str] = {}  # symbol filter → its CoinAPI exchange id
    everything = False
    for key in wanted:
        if key.datatype not in UPSTREAM_TYPES:
            continue
        if key.exchange is None:
            everything = True
        else:
            try:
                _add_key(key, mapper, exchanges, symbols)
            except InstrumentError:
                continue
        types.update(UPSTREAM_TYPES[key.datatype])
    periods = frozenset({TICKER_PERIOD}) if "ohlcv" in types else frozenset()
    if everything:
        return UpstreamScope(frozenset(types), period_ids=periods, everything=True)
    kept = frozenset(s for s, exchange in symbols.items() if exchange not in exchanges)
    return UpstreamScope(frozenset(types), kept, frozenset(exchanges), periods)


def _add_key(key: StreamKey, mapper: SymbolMapper, exchanges: set[str], symbols: dict[str, str]) -> None:
    assert key.exchange is not None
    exchange_id = mapper.exchanges.to_coinapi(key.exchange)
    if key.symbol is None:
        exchanges.add(exchange_id)
    else:
        symbols[mapper.symbol_id(key.exchange, key.symbol) + "$"] = exchange_id


def _fields(scope: UpstreamScope, heartbeat: bool) -> dict:
    return {
        "heartbeat": heartbeat,
        "subscribe_data_type": sorted(scope.data_types),
        "subscribe_filter_symbol_id": sorted(scope.symbol_ids) or None,
        "subscribe_filter_exchange_id": sorted(scope.exchange_ids) or None,
        "subscribe_filter_period_id": sorted(scope.period_ids) or None,
    }


def hello(scope: UpstreamScope, apikey: str | None) -> wire.Hello:
    """The message that replaces the server's scope with `scope` (heartbeats on, so a silent
    connection can be told from a dead one)."""
    return wire.Hello(apikey=apikey, **_fields(scope, True))


def plan_update(sent: UpstreamScope | None, target: UpstreamScope, apikey: str | None) -> wire.ClientMessage | None:
    """The one message that moves the server from `sent` to `target`, or None if nothing to do.

    Pure additions (same data types and periods) are a `subscribe` of the new filters; emptying
    the scope is an `unsubscribe` of everything sent (a hello cannot say "nothing"); anything
    else is a replacing `hello`, whose semantics do not depend on how the server merges filters.
    """
    if target == sent or (target.empty and (sent is None or sent.empty)):
        return None
    if target.empty:
        return wire.Unsubscribe(**_fields(sent, False))  # type: ignore[arg-type]
    if sent is None or sent.empty or not _only_adds(sent, target):
        return hello(target, apikey)
    added = UpstreamScope(target.data_types, target.symbol_ids - sent.symbol_ids, target.exchange_ids - sent.exchange_ids)
    return wire.Subscribe(**_fields(added, True))


def _only_adds(sent: UpstreamScope, target: UpstreamScope) -> bool:
    return (
        target.data_types == sent.data_types
        and target.period_ids == sent.period_ids
        and target.everything == sent.everything
        and target.symbol_ids >= sent.symbol_ids
        and target.exchange_ids >= sent.exchange_ids
    )


@dataclass
class HelloLimiter:
    """A sliding window: at most `limit` messages in any `window` seconds. A message at time t
    is allowed when fewer than `limit` were recorded in (t - window, t]. Pure: times passed in."""

    limit: int = HELLO_LIMIT
    window: float = HELLO_WINDOW
    _sent: deque[float] = field(default_factory=deque)

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()

    def delay(self, now: float) -> float:
        """Seconds to wait before the next message is allowed (0: now)."""
        self._expire(now)
        if len(self._sent) < self.limit:
            return 0.0
        return self._sent[-self.limit] + self.window - now

    def allow(self, now: float) -> bool:
        """Record a message at `now` if it is allowed; False (nothing recorded) if it is not."""
        if self.delay(now) > 0:
            return False
        self._sent.append(now)
        return True

    def record(self, now: float) -> None:
        self._expire(now)
        self._sent.append(now)
