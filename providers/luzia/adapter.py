"""LuziaAdapter: the gateway's handle on one configured Luzia provider.

Owns: the wanted set and its plan (channels per connection slot; a stream of every exchange is
expanded to the exchange-wide channel of each of `exchanges`), one reconnect loop per slot in
use, routing received tickers to the wanted streams (the ticker and/or the quote derived from it),
staleness per wanted stream, the Status and Gap events about all of that, and the health snapshot.
Never: awaits the sink (it is synchronous and must not block), emits an event for a stream nobody
wants, lets the API key reach a log line, an exception or health, or gives up on a valid config.

Events: `Status(connected|disconnected|rejected)` per connection (stream None, reason names the
connection), `Status(rejected, stream=...)` for a wanted stream the server refused or that does
not fit the tier, `Status(stale|recovered, stream=...)` per wanted stream, `Gap(cause="reconnect")`
for the streams of a connection that was lost (last frame before the loss → `connected` again),
and `Gap(cause="stale")` for the silent window of a stream that came back. Gap bounds are the
receive-clock (`time.time_ns`) time of the frame that ends the gap, minus the silent window as
measured on Trio's clock.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Set
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Final, NamedTuple

import trio

from providers.base import ConnectionHealth, ConnectionStateName, EventSink, ProviderError, ProviderHealth
from schemas.streams import StreamKey
from providers.common.backoff import Backoff
from providers.common.signal import Wakeup
from providers.common.liveness import IdleDeadline, StalenessTracker, trio_now
from providers.common.reconnect import AUTH_RETRY_SECONDS, RETRYABLE, LinkState, classify, reconnect_forever
from providers.common.transport import Connector, connect_tcp
from providers.luzia import normalize, session, wire
from providers.luzia.channels import ChannelError, canonical_channel, format_channel
from providers.luzia.planner import (
    DEFAULT_EXCHANGE_WIDE_THRESHOLD,
    Plan,
    TierLimits,
    plan_subscriptions,
    tier_limits,
)
from schemas import Event, Gap, Status
from schemas.instruments import canonical_exchange

log = logging.getLogger(__name__)

DEFAULT_URL: Final = "wss://api.luzia.dev/v1/ws"
#: How often staleness is checked: a stream is reported at most this late.
STALE_CHECK_SECONDS: Final = 1.0
#: The exchanges a stream of every exchange (`StreamKey(dt, None, None)`, native `ticker:*`) is
#: expanded to: Luzia has no channel for "everything", so it is one `ticker:{exchange}` per
#: exchange. An exchange the server does not list is refused (INVALID_CHANNEL) like any channel.
DEFAULT_EXCHANGES: Final = ("binance", "coinbase", "kraken", "bitstamp", "bitfinex", "okx", "bybit")
#: Which connection states win when health sums up the slots (best first).
_STATE_RANK: Final = ("connected", "connecting", "backoff", "auth_rejected", "stopped")


def websocket_url(base: str) -> str:
    """Luzia's SDK rule: a REST base URL (`https://api.luzia.dev`) → its WebSocket URL
    (`wss://api.luzia.dev/v1/ws`); a ws:// or wss:// URL is used as given."""
    if base.startswith(("ws://", "wss://")):
        return base
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            return ws + base[len(http) :].rstrip("/") + "/v1/ws"
    raise ValueError(f"not an http(s) or ws(s) URL: {base!r}")


@dataclass(eq=False)
class _Slot:
    """One upstream connection slot (the tier allows a fixed number)."""

    id: int
    backoff: Backoff
    link: LinkState = field(default_factory=LinkState)
    desired: frozenset[str] = frozenset()  # the channels the plan puts here
    wake: Wakeup = field(default_factory=Wakeup)  # `desired` changed
    running: bool = False
    scope: trio.CancelScope | None = None
    conn: session.LuziaConnection | None = None  # the current or last connection
    lost_at: float | None = None  # trio time of the last frame before a connection was lost


class _Retired(Exception):
    """A slot's connection is no longer needed: ends its session, and its reconnect loop."""


class _Route(NamedTuple):
    """What a ticker frame of one instrument feeds."""

    ticker: bool
    quote: bool
    keys: tuple[StreamKey, ...]  # wanted streams it keeps fresh


class LuziaAdapter:
    kind = "luzia"
    datatypes = frozenset({"ticker", "quote"})  # quote: derived from the ticker's bid/ask

    def __init__(
        self,
        name: str,
        *,
        url: str | None = DEFAULT_URL,  # a ws(s):// URL, or a REST base URL (SDK rule); None: Luzia's
        api_key: str,
        sink: EventSink,
        tier: str = "pro",
        limits: TierLimits | None = None,
        connector: Connector = connect_tcp,
        rng: random.Random | None = None,
        ping_interval: float = session.PING_INTERVAL,
        pong_timeout: float = session.PONG_TIMEOUT,
        idle_timeout: float = 60.0,
        stale_after: float = 30.0,
        connect_timeout: float = session.CONNECT_TIMEOUT,
        exchange_wide_threshold: int | None = DEFAULT_EXCHANGE_WIDE_THRESHOLD,
        backoff_initial: float = 1.0,
        backoff_factor: float = 2.0,
        backoff_cap: float = 30.0,
        stable_after: float = 60.0,
        auth_retry: float = AUTH_RETRY_SECONDS,
        exchanges: Iterable[str] = DEFAULT_EXCHANGES,  # what a stream of every exchange covers
    ) -> None:
        self._limits = limits or tier_limits(tier)
        if self._limits.connections < 1 or self._limits.subscriptions < 1:
            raise ValueError(f"Luzia tier {tier!r} has no WebSocket access; use pro or enterprise")
        if not api_key:
            raise ValueError("Luzia api_key is empty")
        self.name, self.tier, self._url = name, tier, websocket_url(url or DEFAULT_URL)
        self._api_key, self._sink, self._connector = api_key, sink, connector
        self._headers = [(b"Authorization", f"Bearer {api_key}".encode())]
        self._ping_interval, self._pong_timeout = ping_interval, pong_timeout
        self._idle_timeout, self._stale_after = idle_timeout, stale_after
        self._connect_timeout, self._auth_retry = connect_timeout, auth_retry
        self._threshold = exchange_wide_threshold
        self._exchanges = tuple(dict.fromkeys(canonical_exchange(e) for e in exchanges))
        rng = rng or random.Random()
        self._slots = [
            _Slot(i, Backoff(backoff_initial, backoff_factor, backoff_cap, stable_after, rng))
            for i in range(self._limits.connections)
        ]
        self._wanted: frozenset[StreamKey] = frozenset()  # as the gateway asked
        self._streams: frozenset[StreamKey] = frozenset()  # the same, every-exchange keys expanded
        self._plan = Plan(tuple(frozenset() for _ in self._slots), frozenset())
        self._routes: dict[tuple[str, str | None], _Route] = {}
        self._served: dict[StreamKey, str] = {}  # wanted stream → the channel delivering it
        self._refused: dict[str, str] = {}  # channel → why the server refused it
        self._reported_unserved: set[StreamKey] = set()
        self._staleness = StalenessTracker(stale_after)
        self._nursery: trio.Nursery | None = None
        self._malformed = self._unknown = 0
        self._last_error: str | None = None

    def __repr__(self) -> str:  # never the key
        return f"LuziaAdapter(name={self.name!r}, url={self._url!r}, tier={self.tier!r})"

    # ---- the gateway's side ---------------------------------------------------------------------

    def set_wanted(self, wanted: Set[StreamKey]) -> None:
        """Replace the wanted set: re-plan, and wake the connections whose channels changed."""
        self._wanted = frozenset(k for k in wanted if k.datatype in self.datatypes)
        self._streams = expand_every_exchange(self._wanted, self._exchanges)
        asked = {format_channel(k.exchange, k.symbol) for k in self._streams}
        asked |= {format_channel(k.exchange) for k in self._streams}
        self._refused = {c: why for c, why in self._refused.items() if c in asked}
        self._replan()

    def health(self) -> ProviderHealth:
        now = trio_now()
        connections = [self._slot_health(slot, now) for slot in self._slots if slot.running]
        states = {c.state for c in connections}
        state = next((s for s in _STATE_RANK if s in states), "stopped")
        ages = [c.last_message_age_s for c in connections if c.last_message_age_s is not None]
        return ProviderHealth(
            name=self.name,
            kind=self.kind,
            state=state,
            usable=state != "auth_rejected",
            wanted=len(self._wanted),
            subscriptions=sum(c.subscriptions for c in connections),
            connections=connections,
            last_message_age_s=min(ages) if ages else None,
            reconnects=sum(slot.link.reconnects for slot in self._slots),
            malformed_frames=self._malformed,
            unknown_messages=self._unknown,
            stale_streams=self._staleness.stale_count,
            last_error=self._last_error,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                self._staleness.want(self._served, trio.current_time())
                nursery.start_soon(self._watch_staleness)
                self._reconcile()
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None

    # ---- planning -------------------------------------------------------------------------------

    def _replan(self) -> None:
        needs = {(k.exchange, k.symbol) for k in self._streams}
        previous = [slot.desired for slot in self._slots]
        self._plan = plan_subscriptions(
            needs, self._limits, previous=previous, exchange_wide_threshold=self._threshold, excluded=self._refused
        )
        for slot, channels in zip(self._slots, self._plan.connections):
            if channels != slot.desired:
                slot.desired = channels
                slot.wake.fire()
        self._route()
        self._reconcile()

    def _route(self) -> None:
        """Which wanted stream each channel serves, and what a ticker of each instrument feeds."""
        served: dict[StreamKey, str] = {}
        for key in sorted(self._streams, key=_key_order):
            channel = self._plan.serving(key.exchange, key.symbol)
            if channel is None:
                self._report_unserved(key)
            else:
                served[key] = channel
                self._reported_unserved.discard(key)
        self._reported_unserved &= self._streams
        self._served, self._routes = served, _routes(served)
        now = trio_now()
        if now is not None:
            self._staleness.want(served, now)

    def _report_unserved(self, key: StreamKey) -> None:
        if key in self._reported_unserved:
            return
        self._reported_unserved.add(key)
        channel = format_channel(key.exchange, key.symbol)
        why = self._refused.get(channel) or self._refused.get(format_channel(key.exchange))
        self._emit_status("rejected", stream=key.channel(), reason=why or "does not fit the tier's limits")

    def _reconcile(self) -> None:
        """Start a reconnect loop for each slot with channels; stop the ones left without."""
        if self._nursery is None:
            return
        for slot in self._slots:
            if slot.desired and not slot.running:
                slot.running = True
                self._nursery.start_soon(self._run_slot, slot)
            elif not slot.desired and slot.scope is not None:
                if slot.conn is not None and slot.conn.live:
                    slot.wake.fire()  # `_keep_synced` retires it, with a polite close
                else:
                    slot.scope.cancel()  # nothing open to be polite to

    def _lower_limit(self, subscriptions: int) -> bool:
        """The server allows fewer subscriptions per connection than the tier says: believe it."""
        subscriptions = max(1, subscriptions)
        if subscriptions >= self._limits.subscriptions:
            return False
        log.warning("%s: server allows %d subscriptions per connection", self.name, subscriptions)
        self._limits = replace(self._limits, subscriptions=subscriptions)
        return True

    # ---- one connection slot --------------------------------------------------------------------

    async def _run_slot(self, slot: _Slot) -> None:
        try:
            while slot.desired:
                await self._slot_until_retired(slot)
                slot.lost_at = None  # closed as surplus: nothing was lost
        finally:
            slot.running, slot.scope = False, None
            slot.link.state = "stopped"

    async def _slot_until_retired(self, slot: _Slot) -> None:
        retired = False
        try:
            with trio.CancelScope() as slot.scope:
                await reconnect_forever(
                    partial(self._session, slot),
                    slot.link,
                    slot.backoff,
                    redact=self._scrub,
                    auth_retry=self._auth_retry,
                    describe=f"luzia {self.name}#{slot.id}",
                )
        except* _Retired:
            retired = True
        except* RETRYABLE:
            # A connection error that raced with the slot being cancelled or retired rides out
            # with it; the slot is gone, so it is moot. Anything else still propagates.
            if not (slot.scope.cancel_called or retired):
                raise

    async def _session(self, slot: _Slot, mark_healthy) -> None:
        slot.conn = None
        try:
            await self._connection_life(slot, mark_healthy)
        except Exception as exc:  # noqa: BLE001 - reported here, re-raised for reconnect_forever
            self._attempt_failed(slot, exc)
            raise

    async def _connection_life(self, slot: _Slot, mark_healthy) -> None:
        await self._connection_in_nursery(slot, mark_healthy)

    async def _connection_in_nursery(self, slot: _Slot, mark_healthy) -> None:
        # The WebSocket's reader task lives in `transport`, apart from the session's own tasks, so
        # that when those fail (pong timeout, idle) the close handshake can still complete.
        async with trio.open_nursery() as transport:
            try:
                dispatch = partial(self._on_frame, slot)
                conn, hello = await session.open_connection(
                    self._connector, transport, self._url, self._headers, dispatch, self._connect_timeout
                )
                slot.conn = conn
                self._on_connected(slot, hello)
                mark_healthy()
                await self._serve(slot, conn)
            finally:
                if slot.conn is not None:
                    await slot.conn.close()
                transport.cancel_scope.cancel()

    async def _serve(self, slot: _Slot, conn: session.LuziaConnection) -> None:
        await conn.sync(slot.desired)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.heartbeat, self._ping_interval, self._pong_timeout)
            nursery.start_soon(self._keep_synced, slot, conn)
            await self._read(slot, conn)

    def _on_connected(self, slot: _Slot, hello: wire.Connected) -> None:
        self._emit_status("connected", reason=f"connection {slot.id}")
        if slot.lost_at is not None:
            self._reconnect_gaps(slot, slot.lost_at)
            slot.lost_at = None
        limit = hello.limits.maxSubscriptions if hello.limits else None
        if limit is not None and self._lower_limit(limit):
            self._replan()

    def _attempt_failed(self, slot: _Slot, exc: Exception) -> None:
        kind, cause = classify(exc)
        if kind == "bug":
            return
        reason = self._scrub(f"connection {slot.id}: {type(cause).__name__}: {cause}")
        self._last_error = reason
        if slot.conn is not None and slot.conn.connected:
            slot.lost_at = slot.conn.last_frame_at
            self._emit_status("disconnected", reason=reason)
        if kind == "auth":
            self._emit_status("rejected", reason=reason)

    async def _keep_synced(self, slot: _Slot, conn: session.LuziaConnection) -> None:
        while True:
            await slot.wake.wait()
            if not slot.desired:
                raise _Retired  # the session's `finally` closes politely; `_run_slot` ends the slot
            await conn.sync(slot.desired)

    async def _read(self, slot: _Slot, conn: session.LuziaConnection) -> None:
        """Every frame in; the idle deadline catches a socket that stays up but goes mute.
        Pongs don't count as data: the heartbeat has its own timeout."""
        idle = IdleDeadline(self._idle_timeout)
        with idle.scope:
            while True:
                if type(self._on_frame(slot, conn, await conn.ws.get_message())) is not wire.Pong:
                    idle.fed()
        raise ProviderError(f"connected but mute: no data for {self._idle_timeout:g} s")

    # ---- frames ---------------------------------------------------------------------------------

    def _on_frame(self, slot: _Slot, conn: session.LuziaConnection, text: str | bytes) -> object:
        """Decode once, act, return the message (None if malformed)."""
        ts_gateway = time.time_ns()
        conn.last_frame_at = trio.current_time()
        try:
            message = wire.decode_server(text)
        except wire.MalformedFrame as exc:
            self._malformed += 1
            log.debug("%s: skipped a malformed frame: %s", self.name, exc)
            return None
        kind = type(message)
        if kind is wire.Ticker:
            self._on_ticker(message, ts_gateway)
        elif kind is wire.Pong:
            conn.pong()
        elif kind is wire.Subscribed or kind is wire.Unsubscribed:
            self._on_ack(conn, message)
        elif kind is wire.Error:
            self._on_error(slot, conn, message)
        elif kind is wire.UnknownMessage:
            self._unknown += 1
        return message

    def _on_ticker(self, message: wire.Ticker, ts_gateway: int) -> None:
        try:
            instrument = normalize.instrument_of(message)
            route = self._routes.get(instrument) or self._routes.get((instrument[0], None))
            if route is None:
                return
            events = self._normalized(message, route, ts_gateway)
        except normalize.WireError:
            self._malformed += 1
            return
        self._mark_seen(route.keys, ts_gateway)
        for event in events:
            self._sink(event)

    def _normalized(self, message: wire.Ticker, route: _Route, ts_gateway: int) -> list[Event]:
        events: list[Event] = []
        if route.ticker:
            events.append(normalize.ticker_event(message, provider=self.name, ts_gateway=ts_gateway))
        if route.quote:
            quote = normalize.quote_event(message, provider=self.name, ts_gateway=ts_gateway)
            if quote is not None:
                events.append(quote)
        return events

    def _on_ack(self, conn: session.LuziaConnection, message: wire.Subscribed | wire.Unsubscribed) -> None:
        try:
            channel = canonical_channel(message.channel)
        except ChannelError:
            self._malformed += 1
            return
        if type(message) is wire.Subscribed:
            conn.subscribed(channel)
        else:
            conn.unsubscribed(channel)

    def _on_error(self, slot: _Slot, conn: session.LuziaConnection, message: wire.Error) -> None:
        fatal = session.session_error(message, self._scrub)
        if fatal is not None:
            raise fatal
        text = self._scrub(message.message or "")
        self._last_error = f"{message.code}: {text}"
        if message.code in ("INVALID_CHANNEL", "SUBSCRIPTION_LIMIT"):
            channel = conn.blame(text)
            if channel is not None:
                conn.refused(channel)
                self._channel_refused(slot, conn, channel, message.code, self._last_error)
                return
        log.warning("%s: connection %d: %s", self.name, slot.id, self._last_error)

    def _channel_refused(self, slot: _Slot, conn, channel: str, code: str, reason: str) -> None:
        """INVALID_CHANNEL: never again (until no longer wanted). SUBSCRIPTION_LIMIT: learn the real
        limit and move the channel; refuse it only if there was nothing to learn (no retry loop)."""
        if channel not in slot.desired:
            return  # already planned elsewhere; this answers a subscribe sent before the move
        if code == "INVALID_CHANNEL" or not self._lower_limit(len(conn.confirmed)):
            self._refused[channel] = reason
        slot.desired = slot.desired - {channel}
        self._replan()

    # ---- staleness and gaps ---------------------------------------------------------------------

    def _mark_seen(self, keys: tuple[StreamKey, ...], ts_gateway: int) -> None:
        now = trio.current_time()
        for key in keys:
            since = self._staleness.seen(key, now)
            if since is not None:
                self._emit_status("recovered", stream=key.channel())
                self._emit_gap(key, since, now, ts_gateway, "stale")

    async def _watch_staleness(self) -> None:
        while True:
            await trio.sleep(STALE_CHECK_SECONDS)
            for key in self._staleness.newly_stale(trio.current_time()):
                self._emit_status("stale", stream=key.channel(), reason=f"no data for {self._stale_after:g} s")

    def _reconnect_gaps(self, slot: _Slot, lost_at: float) -> None:
        now, ts = trio.current_time(), time.time_ns()
        for key, channel in self._served.items():
            if channel in slot.desired:
                self._emit_gap(key, lost_at, now, ts, "reconnect")

    def _emit_gap(self, key: StreamKey, since: float, now: float, ts: int, cause) -> None:
        window = round((now - since) * 1e9)
        self._sink(
            Gap(
                provider=self.name,
                ts_gateway=ts,
                datatype=key.datatype,
                exchange=key.exchange,
                symbol=key.symbol,
                from_ts=ts - window,
                to_ts=ts,
                cause=cause,
            )
        )

    # ---- small helpers --------------------------------------------------------------------------

    def _emit_status(self, state, *, stream: str | None = None, reason: str | None = None) -> None:
        self._sink(Status(provider=self.name, ts_gateway=time.time_ns(), state=state, stream=stream, reason=reason))

    def _scrub(self, text: str) -> str:
        """Whatever a server or library says, the key does not leave this object."""
        return text.replace(self._api_key, "lz_***")

    def _slot_health(self, slot: _Slot, now: float | None) -> ConnectionHealth:
        conn = slot.conn
        state: ConnectionStateName = slot.link.state
        last = conn.last_frame_at if conn is not None else None
        return ConnectionHealth(
            id=slot.id,
            state=state,
            subscriptions=len(conn.confirmed) if conn is not None and state == "connected" else 0,
            last_message_age_s=None if last is None or now is None else now - last,
        )


def expand_every_exchange(wanted: Iterable[StreamKey], exchanges: Iterable[str]) -> frozenset[StreamKey]:
    """Each stream of every exchange → that data type, exchange-wide, on each of `exchanges`; the
    rest as they are. Downstream of this, a stream always names its exchange: routes, staleness,
    gaps and `rejected` statuses are per exchange (the hub hands `ticker:kraken`'s to `ticker:*`)."""
    exchanges = tuple(exchanges)
    streams = set()
    for key in wanted:
        if key.exchange is None:
            streams.update(StreamKey(key.datatype, exchange, None) for exchange in exchanges)
        else:
            streams.add(key)
    return frozenset(streams)


def _key_order(key: StreamKey) -> tuple[str, str, str]:
    return key.exchange, key.symbol or "", key.datatype


def _routes(served: dict[StreamKey, str]) -> dict[tuple[str, str | None], _Route]:
    """Per instrument: feed a ticker, a quote, and which wanted streams it keeps fresh. A symbol's
    route includes its exchange's whole-exchange streams; other symbols fall back to those."""
    keys_by: dict[tuple[str, str | None], list[StreamKey]] = {}
    for key in served:
        keys_by.setdefault((key.exchange, key.symbol), []).append(key)
    routes = {}
    for (exchange, symbol), keys in keys_by.items():
        if symbol is not None:
            keys = keys + keys_by.get((exchange, None), [])
        datatypes = {k.datatype for k in keys}
        routes[(exchange, symbol)] = _Route("ticker" in datatypes, "quote" in datatypes, tuple(keys))
    return routes
