"""The hub: local demand in, upstream subscriptions out; normalized events in, frames out.

Owns who is subscribed to what, which provider serves each data type (via `router.plan`), and the
fan-out. Rules:
- `publish` is the adapters' sink: synchronous, it never awaits and never waits on a client. Each
  event is encoded at most once per output codec, and the same bytes go to every client of that codec.
- A stream wanted by any number of local clients is one upstream subscription; the last
  unsubscribe releases it.
- Only the provider currently serving a data type reaches clients: during a route change the
  old provider's late events are dropped rather than interleaved.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

from gateway.outbox import Outbox
from gateway.router import ProviderInfo, plan
from providers.base import Adapter
from schemas.streams import StreamKey
from schemas import Book, Event, Gap, Quote, Status, Ticker, Trade
from schemas.channels import ChannelError, parse_channel

log = logging.getLogger(__name__)

_DATATYPE_OF: dict[type, str] = {Trade: "trade", Quote: "quote", Ticker: "ticker", Book: "book"}


class Codec(Protocol):
    """How one output format shows events; `name` keys the per-event frame cache."""

    name: str

    def frame(self, event: Event) -> bytes | None:
        """The complete WebSocket frame for `event`, or None when this format cannot show it."""


class Subscriber(Protocol):
    outbox: Outbox
    codec: Codec
    # None, or a per-client test for dialects whose subscriptions are finer than stream keys
    # (a CoinAPI symbol-id prefix): the hub subscribes the covering stream, the client filters.
    accepts: Callable[[Event], bool] | None


class Hub:
    def __init__(self, routes: Mapping[str, list[str]]) -> None:
        self.routes = {datatype: list(names) for datatype, names in routes.items()}
        self.adapters: dict[str, Adapter] = {}
        self._subscribers: dict[tuple, dict[Subscriber, None]] = {}  # stream → ordered set of clients
        self._asked: dict[str, frozenset[StreamKey]] = {}
        self.serving: dict[str, str | None] = {}
        self.events_in = 0
        self.events_unrouted = 0
        self._batch_depth = 0
        self._dirty = False

    def add_adapter(self, adapter: Adapter) -> None:
        """Adapters are added after the hub exists, because the hub's `publish` is their sink."""
        self.adapters[adapter.name] = adapter
        self._asked[adapter.name] = frozenset()
        self.refresh_routes()

    # ----- demand -------------------------------------------------------------------------

    def routed(self, datatype: str) -> bool:
        """Whether the config routes this data type to a provider able to serve it at all."""
        return self.refusal(datatype) is None

    def refusal(self, datatype: str) -> str | None:
        """Why this data type cannot be served by configuration (not by health), naming the
        configured providers; None when some provider in its route can serve it."""
        names = self.routes.get(datatype)
        if not names:
            return f"no provider is configured for {datatype} (see [routes])"
        able = [n for n in names if n in self.adapters and datatype in self.adapters[n].datatypes]
        if able:
            return None
        kinds = ", ".join(f"{n} ({self.adapters[n].kind})" if n in self.adapters else n for n in names)
        return f"{datatype} is routed to {kinds}, which cannot provide {datatype}"

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Many (un)subscribes, one re-plan: a client's thousand channels must not cost a thousand."""
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0 and self._dirty:
                self.refresh_routes()

    def _demand_changed(self) -> None:
        if self._batch_depth:
            self._dirty = True
        else:
            self.refresh_routes()

    def subscribe(self, client: Subscriber, key: StreamKey) -> None:
        clients = self._subscribers.setdefault(key, {})
        clients[client] = None
        if len(clients) == 1:
            self._demand_changed()

    def unsubscribe(self, client: Subscriber, key: StreamKey) -> None:
        clients = self._subscribers.get(key)
        if clients is None or client not in clients:
            return
        del clients[client]
        if not clients:
            del self._subscribers[key]
            self._demand_changed()

    def demand(self) -> frozenset[StreamKey]:
        return frozenset(StreamKey(*key) for key in self._subscribers)

    def subscriber_count(self, key: StreamKey) -> int:
        return len(self._subscribers.get(key, ()))

    def client_count(self) -> int:
        return len({client for clients in self._subscribers.values() for client in clients})

    def refresh_routes(self) -> None:
        """Re-plan from the current demand and provider health; tell adapters only what changed."""
        self._dirty = False
        infos = [ProviderInfo(n, a.datatypes, a.health().usable) for n, a in self.adapters.items()]
        new = plan(self.demand(), self.routes, infos)
        changed = {dt: name for dt, name in new.serving.items() if self.serving.get(dt) != name}
        self.serving = new.serving
        for name, wanted in new.wanted.items():
            if wanted != self._asked.get(name):
                self._asked[name] = wanted
                self.adapters[name].set_wanted(wanted)
        for datatype, name in changed.items():
            self._announce_route(datatype, name)

    def _announce_route(self, datatype: str, name: str | None) -> None:
        clients = self._clients_of(datatype, None, None)
        if not clients:
            return
        reason = f"{datatype} now served by {name}" if name else f"no usable provider for {datatype}"
        state = "connected" if name else "disconnected"
        log.info("route: %s", reason)
        _put_control_all(clients, Status(provider=name or "gateway", ts_gateway=time.time_ns(), state=state, reason=reason))

    # ----- fan-out ------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        """The sink every adapter calls, once per normalized event."""
        self.events_in += 1
        datatype = _DATATYPE_OF.get(type(event))
        if datatype is None:
            self._publish_control(event)
            return
        if self.serving.get(datatype) != event.provider:
            self.events_unrouted += 1
            return
        exact = self._subscribers.get((datatype, event.exchange, event.symbol))
        wide = self._subscribers.get((datatype, event.exchange, None))
        every = self._subscribers.get((datatype, None, None))
        if not (exact or wide or every):
            return
        frames: dict[str, bytes | None] = {}
        key = (datatype, event.exchange, event.symbol)
        if exact:
            for client in exact:
                _deliver(client, key, event, frames, datatype)
        if wide:
            for client in wide:
                if not exact or client not in exact:
                    _deliver(client, key, event, frames, datatype)
        if every:
            for client in every:
                if not (exact and client in exact) and not (wide and client in wide):
                    _deliver(client, key, event, frames, datatype)

    def _publish_control(self, event: Event) -> None:
        if isinstance(event, Gap):
            clients = self._clients_of(event.datatype, event.exchange, event.symbol)
        elif isinstance(event, Status) and event.stream:
            try:
                clients = self._clients_of(*parse_channel(event.stream))
            except ChannelError:
                clients = self._clients_served_by(event.provider)
        else:
            clients = self._clients_served_by(event.provider)
        _put_control_all(clients, event)

    def _clients_of(self, datatype: str, exchange: str | None, symbol: str | None) -> dict[Subscriber, None]:
        """Clients of a stream and of the streams that cover it; None matches any."""
        return {
            c: None
            for (dt, ex, sym), cs in self._subscribers.items()
            if dt == datatype
            and (exchange is None or ex is None or ex == exchange)
            and (symbol is None or sym is None or sym == symbol)
            for c in cs
        }

    def _clients_served_by(self, provider: str) -> dict[Subscriber, None]:
        datatypes = {dt for dt, name in self.serving.items() if name == provider}
        return {c: None for key, cs in self._subscribers.items() if key[0] in datatypes for c in cs}


def _frame_for(client: Subscriber, event: Event, frames: dict[str, bytes | None]) -> bytes | None:
    codec = client.codec
    try:
        return frames[codec.name]
    except KeyError:
        data = frames[codec.name] = codec.frame(event)
        return data


def _deliver(client: Subscriber, key: Hashable, event: Event, frames: dict[str, bytes | None], datatype: str) -> None:
    accepts = client.accepts
    if accepts is not None and not accepts(event):
        return
    data = _frame_for(client, event, frames)
    if data is None:
        return
    if datatype == "trade":
        client.outbox.put_trade(key, data, event.ts_exchange or event.ts_gateway)
    else:
        client.outbox.put_latest(key, data)


def _put_control_all(clients: dict[Subscriber, None], event: Event) -> None:
    """A control event (status, gap) to each client, encoded once per codec like market events."""
    frames: dict[str, bytes | None] = {}
    for client in clients:
        data = _frame_for(client, event, frames)
        if data is not None:
            client.outbox.put_control(data)
