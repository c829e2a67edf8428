"""What received tickers mean for the wanted streams: routing, staleness, gaps, and the statuses
about them. Pure: the monotonic time (`now`, seconds) is passed in, the wall clock (`clock_ns`,
for event times) is injected.

Owns: the wanted streams (a stream of every exchange expanded to each configured exchange, so
downstream of here a stream always names its exchange), which channel serves each, what a ticker
of one instrument feeds (the ticker and/or the quote derived from it, of which wanted streams),
staleness per served stream, and the events about all of that: `Status(rejected, stream=...)`
for a stream no channel serves (once, until it is served again), `Status(stale|recovered)`,
`Gap(cause="stale")` for a silent window that ended, and `Gap(cause="reconnect")` for the
streams of a connection that was lost.
Never: plans channels (`client.Planner` does), does I/O, or scans every wanted stream for one
change: each call costs what it changes (staleness is ordered by last data, so a check looks only
at the streams that went stale).

Tens of thousands of streams can go stale in the same second (an exchange-wide channel goes
quiet), and every `stale` status goes through the hub to its clients: `report_stale(now, limit)`
takes at most `limit` of them from the tracker (`newly_stale(now, limit)`), so the adapter can
yield between slices. A stream that delivers, or stops being wanted, before its turn was never
stale at all (as if the check had come a moment later).

Gap bounds are the wall-clock time of the moment that ends the gap (`clock_ns`), minus the silent
window as measured on the monotonic clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, Literal, NamedTuple

from providers.common.staleness import StalenessTracker
from providers.luzia.grammar import Need, format_channel
from schemas import Event, Gap, Status
from schemas.streams import StreamKey

#: Why a stream is unserved when the server refused none of its channels.
DOES_NOT_FIT: Final = "does not fit the tier's limits"

GapCause = Literal["stale", "reconnect"]


class Route(NamedTuple):
    """What a ticker of one instrument feeds."""

    ticker: bool
    quote: bool
    keys: tuple[StreamKey, ...]  # the wanted streams it keeps fresh


def expand_every_exchange(wanted: Iterable[StreamKey], exchanges: Iterable[str]) -> frozenset[StreamKey]:
    """Each stream of every exchange → that data type, exchange-wide, on each of `exchanges`; the
    rest as they are (the hub hands `ticker:kraken`'s events to `ticker:*` clients)."""
    names = tuple(exchanges)
    streams: set[StreamKey] = set()
    for key in wanted:
        if key.exchange is None:
            streams.update(StreamKey(key.datatype, exchange, None) for exchange in names)
        else:
            streams.add(key)
    return frozenset(streams)


class Streams:
    """The adapter's wanted streams and what serves them; see the module header."""

    def __init__(
        self,
        provider: str,
        sink: Callable[[Event], None],
        clock_ns: Callable[[], int],
        *,
        stale_after: float,
        exchanges: Iterable[str],
    ) -> None:
        self.provider, self._sink, self._clock_ns = provider, sink, clock_ns
        self.exchanges = tuple(dict.fromkeys(exchanges))
        self.staleness: StalenessTracker[StreamKey] = StalenessTracker(stale_after)
        self._refs: dict[StreamKey, int] = {}  # stream → wanted keys that expand to it
        self._of_need: dict[Need, set[StreamKey]] = {}  # wanted streams, per need
        self._needs_per_exchange: dict[str, int] = {}
        self._served: dict[Need, str] = {}  # need → the channel delivering it
        self._unserved: set[Need] = set()  # needs the planner could not serve (new ones: neither)
        self._needs_of: dict[str, set[Need]] = {}  # channel → the needs it delivers
        self._routes: dict[Need, Route] = {}  # served needs only
        self._refusals: dict[str, str] = {}  # channel → why the server refused it
        self._reported: set[StreamKey] = set()  # unserved streams already reported

    # ---- demand ---------------------------------------------------------------------------------

    def want(self, key: StreamKey, now: float | None) -> list[Need]:
        """A wanted key (counted by the caller: once per key); the needs that are new."""
        new: list[Need] = []
        for stream in self._expand(key):
            self._refs[stream] = self._refs.get(stream, 0) + 1
            if self._refs[stream] > 1:
                continue
            need = (stream.exchange or "", stream.symbol)
            streams = self._of_need.setdefault(need, set())
            streams.add(stream)
            if len(streams) == 1:
                new.append(need)
                self._needs_per_exchange[need[0]] = self._needs_per_exchange.get(need[0], 0) + 1
            elif need in self._served or need in self._unserved:
                self._show(need, now)  # joins a need already planned: served or reported as it is
        return new

    def unwant(self, key: StreamKey) -> list[Need]:
        """A key no longer wanted; the needs nobody wants any more."""
        gone: list[Need] = []
        for stream in self._expand(key):
            refs = self._refs.get(stream, 0) - 1
            if refs > 0:
                self._refs[stream] = refs
                continue
            self._refs.pop(stream, None)
            need = (stream.exchange or "", stream.symbol)
            streams = self._of_need.get(need, set())
            streams.discard(stream)
            self.staleness.remove((stream,))
            self._reported.discard(stream)
            if streams:
                self._show(need, None)
            else:
                self._forget(need)
                gone.append(need)
        return gone

    def _forget(self, need: Need) -> None:
        self._of_need.pop(need, None)
        self._unserve(need)
        self._unserved.discard(need)
        self._refusals.pop(format_channel(*need), None)
        exchange = need[0]
        left = self._needs_per_exchange.get(exchange, 1) - 1
        if left:
            self._needs_per_exchange[exchange] = left
        else:
            self._needs_per_exchange.pop(exchange, None)
            self._refusals.pop(format_channel(exchange), None)

    def _expand(self, key: StreamKey) -> Iterable[StreamKey]:
        if key.exchange is None:
            return (StreamKey(key.datatype, exchange, None) for exchange in self.exchanges)
        return (key,)

    @property
    def wanted_streams(self) -> int:
        return len(self._refs)

    # ---- serving --------------------------------------------------------------------------------

    def refuse(self, channel: str, reason: str) -> None:
        """The server refused `channel`: its unserved streams will say why."""
        self._refusals[channel] = reason

    def serve(self, need: Need, channel: str | None, now: float | None) -> None:
        """`channel` delivers `need` now (None: nothing does); a need nobody wants is ignored."""
        if need not in self._of_need:
            return
        if channel is None:
            self._unserve(need)
            self._unserved.add(need)
        elif self._served.get(need) != channel:
            self._unserved.discard(need)
            self._unserve(need, keep_clock=True)
            self._served[need] = channel
            self._needs_of.setdefault(channel, set()).add(need)
        self._show(need, now)

    def _unserve(self, need: Need, *, keep_clock: bool = False) -> None:
        channel = self._served.pop(need, None)
        if channel is not None:
            needs = self._needs_of.get(channel, set())
            needs.discard(need)
            if not needs:
                self._needs_of.pop(channel, None)
        if not keep_clock:
            for stream in self._routes.pop(need, Route(False, False, ())).keys:
                self.staleness.remove((stream,))

    def _show(self, need: Need, now: float | None) -> None:
        """Bring routing and staleness in line with the need's streams; report what is unserved."""
        streams = sorted(self._of_need.get(need, ()))
        if need not in self._served:
            self._routes.pop(need, None)
            for stream in streams:
                self.staleness.remove((stream,))
                self._report_unserved(stream)
            return
        datatypes = {s.datatype for s in streams}
        self._routes[need] = Route("ticker" in datatypes, "quote" in datatypes, tuple(streams))
        for stream in streams:
            self._reported.discard(stream)
            if now is not None:
                self.staleness.add((stream,), now)

    def _report_unserved(self, stream: StreamKey) -> None:
        if stream in self._reported:
            return
        self._reported.add(stream)
        exchange = stream.exchange or ""
        why = self._refusals.get(format_channel(exchange, stream.symbol)) or self._refusals.get(format_channel(exchange))
        self._status("rejected", stream=stream.channel(), reason=why or DOES_NOT_FIT)

    def start(self, now: float) -> None:
        """The adapter runs from `now` on: every served stream's silence counts from here."""
        for route in self._routes.values():
            for stream in route.keys:
                self.staleness.add((stream,), now)

    def channel_of(self, need: Need) -> str | None:
        return self._served.get(need)

    # ---- tickers --------------------------------------------------------------------------------

    def route(self, exchange: str, symbol: str) -> Route | None:
        """What a ticker of this instrument feeds: its own streams and its exchange's wide ones."""
        exact = self._routes.get((exchange, symbol))
        wide = self._routes.get((exchange, None))
        if exact is None or wide is None:
            return exact or wide
        return Route(exact.ticker or wide.ticker, exact.quote or wide.quote, exact.keys + wide.keys)

    def seen(self, keys: tuple[StreamKey, ...], now: float) -> None:
        """Data for these streams at `now`: a stale one recovers, with a gap for its silence."""
        for key in keys:
            since = self.staleness.seen(key, now)
            if since is not None:
                self._status("recovered", stream=key.channel())
                self._gap(key, since, now, "stale")

    def report_stale(self, now: float, limit: int) -> bool:
        """A `stale` status for at most `limit` of the streams silent for `stale_after` at `now`,
        oldest first; True if there may be more."""
        keys = self.staleness.newly_stale(now, limit)
        reason = f"no data for {self.staleness.stale_after:g} s"
        for key in keys:
            self._status("stale", stream=key.channel(), reason=reason)
        return len(keys) == limit

    def reconnect_gaps(self, channels: Iterable[str], since: float, now: float) -> None:
        """The connection carrying `channels` was lost at `since` and is back at `now`."""
        for channel in channels:
            for need in self._needs_of.get(channel, ()):
                for key in sorted(self._of_need.get(need, ())):
                    self._gap(key, since, now, "reconnect")

    # ---- events ---------------------------------------------------------------------------------

    def _gap(self, key: StreamKey, since: float, now: float, cause: GapCause) -> None:
        ts = self._clock_ns()
        window = round((now - since) * 1e9)
        gap = Gap(
            provider=self.provider,
            ts_gateway=ts,
            datatype=key.datatype,
            exchange=key.exchange or "",  # expanded: always named
            symbol=key.symbol,
            from_ts=ts - window,
            to_ts=ts,
            cause=cause,
        )
        self._sink(gap)

    def _status(self, state: Literal["rejected", "stale", "recovered"], *, stream: str, reason: str | None = None) -> None:
        self._sink(Status(provider=self.provider, ts_gateway=self._clock_ns(), state=state, stream=stream, reason=reason))
