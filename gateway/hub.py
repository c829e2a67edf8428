"""The hub: local demand in, upstream demand out; normalized events in, frames out.

Owns who is subscribed to what, which source serves each data type (via `router`), and the fan-out.
Rules:
- `publish` is the sources' sink: synchronous, it never awaits and never waits on a client.
- Subscribers are indexed by the `StreamKey`s they asked for. An event on stream `s` reaches exactly
  the subscribers of `s.covering_keys()` (three dict look-ups); a status or gap reaches the
  subscribers of its stream and of the streams that cover it, found through per-exchange and
  per-data-type indexes. No path scans every subscription.
- Demand is counted per key (subscribers plus `hold`s). Only a key's first holder and its last
  release change upstream demand; the changes of one `batch()` reach each source as one
  `update_wanted(added, removed)`, so work is proportional to what changed, never to all demand.
- Only the source currently serving a data type reaches clients: during a route change the old
  source's late events are dropped rather than interleaved. Sources push their health: a
  provider-level `Status` (stream None) makes the hub re-read `usable` and re-route.
- Seams: a `Codec` is pure (event in, frame out), and `Frames` encodes each event at most once per
  codec name, however many subscribers share it; a `Subscriber`'s `deliver` is the dialect's own
  delivery step (filter, throttle, queue); a `Tap` observes every routed event in-process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Final, Protocol

from gateway.outbox import Outbox
from gateway.router import choose_providers, split_by_source
from providers.base import Source
from schemas import Book, Event, Gap, MarketEvent, Quote, Status, Ticker, Trade
from schemas.channels import ChannelError
from schemas.streams import Stream, StreamKey

log = logging.getLogger(__name__)

DATATYPE_OF: Final[dict[type, str]] = {Trade: "trade", Quote: "quote", Ticker: "ticker", Book: "book"}


class Codec(Protocol):
    """How one output format shows events. Pure: no side effects, no state."""

    @property
    def name(self) -> str:
        """Keys the per-event frame cache: codecs of the same name make the same bytes."""

    def frame(self, event: Event) -> bytes | None:
        """The complete WebSocket frame for `event`, or None when this format cannot show it."""


class Frames:
    """One event's frames, built at most once per codec name and shared by every subscriber.

    A codec that raises (a value its format cannot write, a bug) is counted in `failures` under its
    name and that event is skipped for that codec only; the error never reaches the source."""

    __slots__ = ("_failures", "_made", "event")

    def __init__(self, event: Event, failures: Failures | None = None) -> None:
        self.event = event
        self._made: dict[str, bytes | None] = {}
        self._failures = failures

    def of(self, codec: Codec) -> bytes | None:
        name = codec.name
        try:
            return self._made[name]
        except KeyError:
            pass
        try:
            data = codec.frame(self.event)
        except Exception as exc:  # noqa: BLE001 -- the containment boundary; Failures.record logs it
            data = None
            if self._failures is not None:
                self._failures.record(f"encode:{name}", exc)
        self._made[name] = data
        return data


class Failures:
    """Errors the hub contained instead of letting them reach a source's reader: per place
    (`encode:<codec>`, `deliver`, `notify`, `tap`, `publish`), counted, and logged with a traceback
    the first time and then once per `LOG_EVERY` (a per-event bug must not flood the log)."""

    LOG_EVERY: Final = 10_000

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def record(self, where: str, exc: BaseException) -> None:
        if where not in self.counts and len(self.counts) >= _FAILURE_PLACES_LIMIT:
            where = "other"
        count = self.counts[where] = self.counts.get(where, 0) + 1
        if count == 1 or count % self.LOG_EVERY == 0:
            log.error("contained an error in %s (%d so far); the event was skipped there", where, count, exc_info=exc)


#: Distinct failure places kept (codec names are few; bounded anyway).
_FAILURE_PLACES_LIMIT: Final = 64


class Subscriber(Protocol):
    """A local client session of some dialect. Hashable by identity."""

    def deliver(self, event: MarketEvent, stream: Stream, frames: Frames) -> None:
        """An event of a stream this subscriber asked for: filter, throttle, queue — never block."""

    def notify(self, event: Status | Gap, frames: Frames) -> None:
        """A control event about one of its streams, or about the source serving one of its data types."""


class Tap(Protocol):
    """An in-process observer (REST cache, metrics, recorder, bus): sees every routed market event
    and every control event. Must not block. Demand for what it needs: `Hub.hold`."""

    def on_event(self, event: Event) -> None: ...


def queue_market(outbox: Outbox, event: MarketEvent, stream: Stream, data: bytes) -> None:
    """The usual last delivery step: trades are kept (or dropped with a gap); the rest is latest-wins."""
    if stream.datatype == "trade":
        outbox.put_trade(stream, data, event.ts_exchange or event.ts_gateway)
    else:
        outbox.put_latest(stream, data)


class CodecSubscriber:
    """The plain delivery: every event of a subscribed stream, framed by one codec, into one outbox."""

    outbox: Outbox
    codec: Codec

    def deliver(self, event: MarketEvent, stream: Stream, frames: Frames) -> None:
        data = frames.of(self.codec)
        if data is None:
            return
        # `queue_market`, inlined: this runs once per event per client.
        if stream.datatype == "trade":
            self.outbox.put_trade(stream, data, event.ts_exchange or event.ts_gateway)
        else:
            self.outbox.put_latest(stream, data)

    def notify(self, event: Status | Gap, frames: Frames) -> None:
        data = frames.of(self.codec)
        if data is not None:
            self.outbox.put_control(data)


Clients = dict[Subscriber, None]  # an ordered set


class Hub:
    def __init__(self, routes: Mapping[str, list[str]], *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.routes = {datatype: list(names) for datatype, names in routes.items()}
        self.sources: dict[str, Source] = {}
        self.serving: dict[str, str | None] = {}
        self._clock_ns = clock_ns
        self._clients: dict[StreamKey, Clients] = {}  # ask → its subscribers
        self._client_keys_by_exchange: dict[tuple[str, str], set[StreamKey]] = {}  # keys naming an exchange
        self._client_keys_by_datatype: dict[str, set[StreamKey]] = {}
        self._subscriptions_of: dict[Subscriber, int] = {}
        self._holders: dict[StreamKey, int] = {}  # subscribers + holds, per key
        self._demand_by_datatype: dict[str, set[StreamKey]] = {}
        self._added: set[StreamKey] = set()  # demand changes not yet told to the sources
        self._removed: set[StreamKey] = set()
        self._batch_depth = 0
        self._settling = False  # `_settle` is telling sources now
        self._reroute_wanted = False
        self._taps: list[Tap] = []
        self.events_in = 0
        self.events_unrouted = 0
        self.failures = Failures()

    def add_source(self, source: Source) -> None:
        self.add_sources([source])

    def add_sources(self, sources: Iterable[Source]) -> None:
        """Sources are added after the hub exists, because the hub's `publish` is their sink.
        Added together, they are routed once: no data type is first given to a stand-in."""
        for source in sources:
            self.sources[source.name] = source
        self.refresh_routes()

    def add_tap(self, tap: Tap) -> None:
        self._taps.append(tap)

    def remove_tap(self, tap: Tap) -> None:
        self._taps.remove(tap)

    # ----- configuration questions --------------------------------------------------------

    def routed(self, datatype: str) -> bool:
        """Whether the config routes this data type to a source able to serve it at all."""
        return self.refusal(datatype) is None

    def refusal(self, datatype: str) -> str | None:
        """Why this data type cannot be served by configuration (not by health), naming the
        configured providers; None when some provider in its route can serve it."""
        names = self.routes.get(datatype)
        if not names:
            return f"no provider is configured for {datatype} (see [routes])"
        if any(n in self.sources and datatype in self.sources[n].datatypes for n in names):
            return None
        kinds = ", ".join(f"{n} ({self.sources[n].kind})" if n in self.sources else n for n in names)
        return f"{datatype} is routed to {kinds}, which cannot provide {datatype}"

    # ----- demand -------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Many (un)subscribes, one `update_wanted` per source."""
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0:
                self._settle()

    def subscribe(self, client: Subscriber, key: StreamKey) -> None:
        clients = self._clients.get(key)
        if clients is None:
            clients = self._clients[key] = {}
            self._index(key)
        elif client in clients:
            return
        clients[client] = None
        self._subscriptions_of[client] = self._subscriptions_of.get(client, 0) + 1
        self.hold(key)

    def unsubscribe(self, client: Subscriber, key: StreamKey) -> None:
        clients = self._clients.get(key)
        if clients is None or client not in clients:
            return
        del clients[client]
        if not clients:
            del self._clients[key]
            self._unindex(key)
        left = self._subscriptions_of[client] - 1
        if left:
            self._subscriptions_of[client] = left
        else:
            del self._subscriptions_of[client]
        self.release(key)

    def hold(self, key: StreamKey) -> None:
        """Demand for `key` without a subscriber (a tap that needs the stream upstream)."""
        count = self._holders.get(key, 0)
        self._holders[key] = count + 1
        if count == 0:
            self._demand_by_datatype.setdefault(key.datatype, set()).add(key)
            if key in self._removed:
                self._removed.discard(key)
            else:
                self._added.add(key)
            self._changed()

    def release(self, key: StreamKey) -> None:
        count = self._holders.get(key, 0)
        if count == 0:
            return
        if count > 1:
            self._holders[key] = count - 1
            return
        del self._holders[key]
        self._demand_by_datatype[key.datatype].discard(key)
        if key in self._added:
            self._added.discard(key)
        else:
            self._removed.add(key)
        self._changed()

    def demand(self) -> frozenset[StreamKey]:
        return frozenset(self._holders)

    def demand_count(self) -> int:
        return len(self._holders)

    def demanded(self, key: StreamKey) -> bool:
        """Whether `key` is wanted already (by a subscriber or a hold): subscribing to it adds no
        stream, so the `[limits] max_streams` cap does not apply to it."""
        return key in self._holders

    def room_for(self, keys: Iterable[StreamKey], max_streams: int) -> bool:
        """Whether adding `keys` keeps the demand within `max_streams` distinct streams."""
        new = sum(1 for key in set(keys) if key not in self._holders)
        return new == 0 or len(self._holders) + new <= max_streams

    def subscriber_count(self, key: StreamKey) -> int:
        return len(self._clients.get(key, ()))

    def client_count(self) -> int:
        """Subscribers with at least one subscription."""
        return len(self._subscriptions_of)

    def _index(self, key: StreamKey) -> None:
        self._client_keys_by_datatype.setdefault(key.datatype, set()).add(key)
        if key.exchange is not None:
            self._client_keys_by_exchange.setdefault((key.datatype, key.exchange), set()).add(key)

    def _unindex(self, key: StreamKey) -> None:
        self._client_keys_by_datatype[key.datatype].discard(key)
        if key.exchange is not None:
            self._client_keys_by_exchange[(key.datatype, key.exchange)].discard(key)

    def _changed(self) -> None:
        if not self._batch_depth:
            self._settle()

    def _settle(self) -> None:
        """Tell the sources what changed, and re-route as often as pushed health asks, until
        nothing is left to do. Never re-entered: a source may publish, subscribe or push its
        health from inside `update_wanted`; that is only recorded, and handled by this loop next,
        so no source is ever told a split worked out before the routes changed."""
        if self._settling:
            return
        self._settling = True
        try:
            while True:
                if self._reroute_wanted:
                    self._reroute_wanted = False
                    self._reroute()
                elif self._added or self._removed:
                    self._flush()
                else:
                    return
        finally:
            self._settling = False

    def _flush(self) -> None:
        """Tell each source what changed for it since the last flush."""
        if not (self._added or self._removed):
            return
        added, removed, self._added, self._removed = self._added, self._removed, set(), set()
        gained, lost = split_by_source(added, self.serving), split_by_source(removed, self.serving)
        for name in gained.keys() | lost.keys():
            self.sources[name].update_wanted(gained.get(name, set()), lost.get(name, set()))

    # ----- routes -------------------------------------------------------------------------

    def refresh_routes(self) -> None:
        """Re-choose the serving source of each data type from the sources' `usable`; move the
        demand of each data type whose source changed, and tell its clients."""
        self._reroute_wanted = True
        self._settle()

    def _reroute(self) -> None:
        self._flush()  # pending changes belong to the sources serving now
        serving = choose_providers(self.routes, self.sources.values())
        changed = [dt for dt, name in serving.items() if self.serving.get(dt) != name]
        previous, self.serving = self.serving, serving
        for datatype in changed:
            keys = self._demand_by_datatype.get(datatype, set())
            old, new = previous.get(datatype), serving[datatype]
            if keys and old is not None:
                self.sources[old].update_wanted(set(), set(keys))
            if keys and new is not None:
                self.sources[new].update_wanted(set(keys), set())
            if datatype in previous:  # the first choice is configuration, not news
                self._announce_route(datatype, new)

    def _announce_route(self, datatype: str, name: str | None) -> None:
        reason = f"{datatype} now served by {name}" if name else f"no usable provider for {datatype}"
        log.info("route: %s", reason)
        status = Status(
            provider=name or "gateway", ts_gateway=self._clock_ns(), state="connected" if name else "disconnected", reason=reason
        )
        self._notify(self._clients_of_datatype(datatype), status)

    # ----- fan-out ------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        """The sink every source calls, once per normalized event. It never raises: whatever goes
        wrong past this point (a codec, a dialect's delivery step, a tap) is contained, counted in
        `failures` and skips only what it concerns; a source's reader must never die of it."""
        self.events_in += 1
        try:
            datatype = DATATYPE_OF.get(type(event))
            if datatype is None:
                self._publish_control(event)  # type: ignore[arg-type]
                return
            market: MarketEvent = event  # type: ignore[assignment]
            if self.serving.get(datatype) != market.provider:
                self.events_unrouted += 1
                return
            self._publish_market(datatype, event, market)
        except Exception as exc:  # noqa: BLE001 -- the containment boundary; Failures.record logs it
            self.failures.record("publish", exc)

    def _publish_market(self, datatype: str, event: Event, market: MarketEvent) -> None:
        for tap in self._taps:
            self._tap(tap, event)
        exchange = market.exchange
        clients: dict[tuple[str, str | None, str | None], Clients] = self._clients  # type: ignore[assignment]
        # Plain tuples: equal to the StreamKeys they look up, and cheaper to build on this path.
        exact = clients.get((datatype, exchange, market.symbol))
        wide = clients.get((datatype, exchange, None))
        every = clients.get((datatype, None, None))
        if not (exact or wide or every):
            return
        stream = Stream(datatype, exchange, market.symbol)
        frames = Frames(event, self.failures)
        if exact:
            for client in exact:
                self._deliver(client, market, stream, frames)
        if wide:
            for client in wide:
                if not (exact and client in exact):
                    self._deliver(client, market, stream, frames)
        if every:
            for client in every:
                if not ((exact and client in exact) or (wide and client in wide)):
                    self._deliver(client, market, stream, frames)

    def _deliver(self, client: Subscriber, market: MarketEvent, stream: Stream, frames: Frames) -> None:
        try:  # free unless it raises (Python 3.11 zero-cost exceptions)
            client.deliver(market, stream, frames)
        except Exception as exc:  # noqa: BLE001 -- the containment boundary; Failures.record logs it
            self.failures.record("deliver", exc)

    def _tap(self, tap: Tap, event: Event) -> None:
        try:
            tap.on_event(event)
        except Exception as exc:  # noqa: BLE001 -- the containment boundary; Failures.record logs it
            self.failures.record("tap", exc)

    def _publish_control(self, event: Status | Gap) -> None:
        for tap in self._taps:
            self._tap(tap, event)
        if isinstance(event, Gap):
            self._notify(self._clients_of(event.datatype, event.exchange, event.symbol), event)
        elif event.stream:
            try:
                key = StreamKey.parse(event.stream)
            except ChannelError:
                return
            self._notify(self._clients_of(*key), event)
        else:  # about a whole provider: its clients hear it, then routes follow its health
            self._notify(self._clients_served_by(event.provider), event)
            self.refresh_routes()

    def _notify(self, clients: Clients, event: Status | Gap) -> None:
        frames = Frames(event, self.failures)
        for client in clients:
            try:
                client.notify(event, frames)
            except Exception as exc:  # noqa: BLE001 -- the containment boundary; Failures.record logs it
                self.failures.record("notify", exc)

    def _clients_of(self, datatype: str, exchange: str | None, symbol: str | None) -> Clients:
        """Subscribers of a stream and of the streams that cover it (a None part covers all)."""
        if exchange is None:
            return self._clients_of_datatype(datatype)
        if symbol is None:
            keys: list[StreamKey] = [*self._client_keys_by_exchange.get((datatype, exchange), ())]
            keys.append(StreamKey(datatype, None, None))
        else:
            keys = list(Stream(datatype, exchange, symbol).covering_keys())
        return self._union(keys)

    def _clients_of_datatype(self, datatype: str) -> Clients:
        return self._union(self._client_keys_by_datatype.get(datatype, ()))

    def _clients_served_by(self, provider: str) -> Clients:
        keys = [
            key
            for datatype, name in self.serving.items()
            if name == provider
            for key in self._client_keys_by_datatype.get(datatype, ())
        ]
        return self._union(keys)

    def _union(self, keys: object) -> Clients:
        found: Clients = {}
        for key in keys:  # type: ignore[attr-defined]
            clients = self._clients.get(key)
            if clients:
                found.update(clients)
        return found
