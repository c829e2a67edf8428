"""LuziaAdapter: the `providers.base.Source` of one configured Luzia provider. A Trio shell over
`client` (what to subscribe where), `streams` (what tickers mean for the wanted streams) and
`connection` (one upstream connection), under `providers.common.reconnect`.

Owns: the wanted keys, one reconnect loop per connection slot in use, turning received tickers into
events of the wanted streams (the ticker and/or the quote derived from it), the connection-level
statuses, the pushed health, and the health snapshot.
Never: awaits the sink (it is synchronous and must not block), emits an event for a stream nobody
wants, lets the API key reach a log line, an exception or health (every text goes through its
`Redactor`), classifies a failure (the reconnect loop does), reads the wall clock but through
`clock_ns`, or gives up on a valid config.

Events: `Status(connected|disconnected|rejected)` per connection (stream None, the reason names the
connection); `usable` is False from a refused key until a connection is accepted again (slot 0
keeps probing at the slow auth retry even when the hub has moved all demand away), and every
change of it is followed by one of these. The stream-level events come from `streams`.
`update_wanted` costs what it changes: the planner, the streams and the slots it touches.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from functools import partial
from typing import Final, Literal

import trio
import trio.lowlevel

from providers.base import ConnectionHealth, ConnectionStateName, EventSink, ProviderHealth
from providers.common.backoff import Backoff
from providers.common.counters import FrameCounters
from providers.common.errors import MalformedFrame
from providers.common.liveness import trio_now
from providers.common.reconnect import RETRYABLE, Failure, LinkState, reconnect_forever
from providers.common.redact import Redactor, url_without_credentials
from providers.common.signal import Wakeup
from providers.common.transport import Connector, connect_tcp
from providers.luzia import normalize, wire
from providers.luzia.client import DEFAULT_URL, Planner, detail, error_code, websocket_url
from providers.luzia.connection import LuziaConnection
from providers.luzia.grammar import Need, tier_limits
from providers.luzia.policy import LuziaPolicy
from providers.luzia.streams import Streams
from schemas import Status
from schemas.instruments import canonical_exchange
from schemas.streams import StreamKey

log = logging.getLogger(__name__)

#: How often staleness is checked: a stream is reported at most this late.
STALE_CHECK_SECONDS: Final = 1.0
#: Stale statuses told in one go before yielding to the event loop. Each costs the hub ~15 µs
#: (indexing, one encode per codec, every client's queue), so 40,000 streams going stale at once
#: stalled every client for 0.6-0.9 s in one step; a slice of this size is a step of ~1 ms.
STALE_REPORT_SLICE: Final = 64
#: A provider's error texts are logged at most this often per connection slot: each costs a
#: redaction (~1 ms for a few hundred characters against a long key), and a provider repeating an
#: error at full rate must flood neither the log nor the CPU. The rest are counted in the next line.
ERROR_LOG_INTERVAL: Final = 1.0
#: Which connection states win when health sums up the slots (best first).
_STATE_RANK: Final[tuple[ConnectionStateName, ...]] = ("connected", "connecting", "backoff", "auth_rejected", "stopped")


@dataclass(eq=False)
class _Slot:
    """One upstream connection slot (the tier allows a fixed number)."""

    id: int
    backoff: Backoff
    link: LinkState = field(default_factory=LinkState)
    wake: Wakeup = field(default_factory=Wakeup)  # its planned channels changed
    running: bool = False
    scope: trio.CancelScope | None = None
    conn: LuziaConnection | None = None  # the current or last connection
    lost_at: float | None = None  # Trio time of the last frame before a connection was lost
    errors_logged_at: float = -math.inf  # when a provider error text was last logged
    errors_unlogged: int = 0  # provider errors since then whose text was not logged


class _Retired(Exception):
    """A slot's connection is no longer needed: ends its session, and its reconnect loop."""


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
        policy: LuziaPolicy | None = None,
        connector: Connector = connect_tcp,
        rng: random.Random | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.policy = policy = policy or LuziaPolicy()
        limits = policy.limits or tier_limits(policy.tier)
        if limits.connections < 1 or limits.subscriptions < 1:
            raise ValueError(f"Luzia tier {policy.tier!r} has no WebSocket access; use pro or enterprise")
        if not api_key:
            raise ValueError("Luzia api_key is empty")
        self.name, self.tier, self._url = name, policy.tier, websocket_url(url or DEFAULT_URL)
        self._sink, self._connector, self._clock_ns = sink, connector, clock_ns
        self._headers = [(b"Authorization", f"Bearer {api_key}".encode())]
        # The `lz_` prefix is public (every key has it); masking the rest leaves `lz_***` in a
        # text, which tells an operator a key was echoed without saying which.
        self._redact = Redactor(api_key.removeprefix("lz_") or api_key)
        self._counters = FrameCounters()
        self._planner = Planner(limits, threshold=policy.exchange_wide_threshold)
        exchanges = [canonical_exchange(e) for e in policy.exchanges]
        self._streams = Streams(name, sink, clock_ns, stale_after=policy.stale_after, exchanges=exchanges)
        rng = rng or random.Random()
        self._slots = [_Slot(i, Backoff.of(policy.backoff, rng)) for i in range(limits.connections)]
        self._wanted: set[StreamKey] = set()  # as the gateway asked
        self._key_refused = False
        self._nursery: trio.Nursery | None = None
        self._last_error: str | None = None

    def __repr__(self) -> str:  # never the key
        return f"LuziaAdapter(name={self.name!r}, url={url_without_credentials(self._url)!r}, tier={self.tier!r})"

    # ---- the gateway's side ---------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self._key_refused

    @property
    def wanted(self) -> Set[StreamKey]:
        """The streams wanted now (a live, read-only view)."""
        return self._wanted

    def update_wanted(self, added: Set[StreamKey], removed: Set[StreamKey]) -> None:
        """Streams newly wanted and no longer wanted: the planner moves only what they change, and
        only the connections whose channels changed are woken (each then syncs once)."""
        now = trio_now()
        for key in removed:
            if key in self._wanted:
                self._wanted.discard(key)
                for need in self._streams.unwant(key):
                    self._planner.remove(*need)
        for key in added:
            if key.datatype in self.datatypes and key not in self._wanted:
                self._wanted.add(key)
                for need in self._streams.want(key, now):
                    self._planner.add(*need)
        self._apply(now)

    def health(self) -> ProviderHealth:
        now = trio_now()
        connections = [self._slot_health(slot, now) for slot in self._slots if slot.running]
        states = {c.state for c in connections}
        ages = [c.last_message_age_s for c in connections if c.last_message_age_s is not None]
        return ProviderHealth(
            name=self.name,
            kind=self.kind,
            state=next((s for s in _STATE_RANK if s in states), "stopped"),
            usable=self.usable,
            wanted=len(self._wanted),
            subscriptions=sum(c.subscriptions for c in connections),
            connections=connections,
            last_message_age_s=min(ages) if ages else None,
            reconnects=sum(slot.link.reconnects for slot in self._slots),
            malformed_frames=self._counters.malformed,
            unknown_messages=self._counters.unknown,
            stale_streams=self._streams.staleness.stale_count,
            last_error=self._last_error,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                self._streams.start(trio.current_time())
                nursery.start_soon(self._watch_staleness)
                for slot in self._slots:
                    self._reconcile(slot)
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None

    # ---- planning -------------------------------------------------------------------------------

    def _apply(self, now: float | None) -> None:
        """Bring the streams and the slots in line with what the planner changed."""
        dirty, touched = self._planner.changes()
        for need in sorted(touched, key=_need_order):
            self._streams.serve(need, self._planner.serving(*need), now)
        for index in sorted(dirty):
            slot = self._slots[index]
            slot.wake.fire()
            self._reconcile(slot)

    def _reconcile(self, slot: _Slot) -> None:
        """Start the slot's reconnect loop if it has channels; stop it if it has none left."""
        if self._nursery is None:
            return
        wanted = self._wants_running(slot)
        if wanted and not slot.running:
            slot.running = True
            self._nursery.start_soon(self._run_slot, slot)
        elif not wanted and slot.scope is not None:
            if slot.conn is not None and slot.conn.live:
                slot.wake.fire()  # `_keep_synced` retires it, with a polite close
            else:
                slot.scope.cancel()  # nothing open to be polite to

    def _wants_running(self, slot: _Slot) -> bool:
        """A slot runs while it has channels. While our key is refused, slot 0 runs even without:
        the hub moves demand away from an unusable source, and this probe (at the slow auth
        retry) is how the adapter notices that the key is accepted again."""
        return bool(self._planner.slot(slot.id)) or (slot.id == 0 and self._key_refused)

    def _lower_limit(self, subscriptions: int, evict: tuple[str, ...] = ()) -> bool:
        """The server allows fewer subscriptions per connection than the tier says: believe it."""
        subscriptions = max(1, subscriptions)
        if subscriptions >= self._planner.limits.subscriptions:
            return False
        log.warning("%s: server allows %d subscriptions per connection", self.name, subscriptions)
        self._planner.lower_limit(subscriptions, evict=evict)
        return True

    # ---- one connection slot --------------------------------------------------------------------

    async def _run_slot(self, slot: _Slot) -> None:
        try:
            while self._wants_running(slot):
                await self._slot_until_retired(slot)
                slot.lost_at = None  # closed as surplus: nothing was lost
        finally:
            slot.running, slot.scope = False, None
            slot.link.state = "stopped"

    async def _slot_until_retired(self, slot: _Slot) -> None:
        retired = False
        with trio.CancelScope() as slot.scope:
            try:
                await reconnect_forever(
                    partial(self._session, slot),
                    slot.link,
                    slot.backoff,
                    auth_retry=self.policy.auth_retry,
                    describe=f"luzia {self.name}#{slot.id}",
                    redact=self._redact,
                    on_failure=partial(self._failed, slot),
                )
            except* _Retired:
                retired = True
            except* RETRYABLE:
                # A connection error that raced with the slot being cancelled or retired rides out
                # with it; the slot is gone, so it is moot. Anything else still propagates.
                if not (slot.scope.cancel_called or retired):
                    raise

    async def _session(self, slot: _Slot, mark_healthy: Callable[[], None]) -> None:
        slot.conn = conn = LuziaConnection(
            self._counters,
            self._clock_ns,
            self._redact,
            on_ticker=self._on_ticker,
            on_error=partial(self._on_error, slot),
            on_dropped=slot.wake.fire,
        )
        serve = partial(self._serve, slot, mark_healthy)
        await conn.run(self._connector, self._url, self._headers, self.policy.connect_timeout, serve)

    async def _serve(self, slot: _Slot, mark_healthy: Callable[[], None], conn: LuziaConnection, hello: wire.Connected) -> None:
        self._on_connected(slot, hello, mark_healthy)  # the hub may hand demand back right here
        if not self._planner.slot(slot.id):
            raise _Retired  # a probe that found the key accepted, and nothing to carry
        await conn.sync(self._planner.slot(slot.id))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.heartbeat, self.policy.ping_interval, self.policy.pong_timeout)
            nursery.start_soon(self._keep_synced, slot, conn)
            await conn.read(self.policy.idle_timeout)

    def _on_connected(self, slot: _Slot, hello: wire.Connected, mark_healthy: Callable[[], None]) -> None:
        mark_healthy()
        self._key_refused = False  # `usable` says it before the status does
        self._status("connected", reason=f"connection {slot.id}")
        now = trio.current_time()
        if slot.lost_at is not None:
            self._streams.reconnect_gaps(self._planner.slot(slot.id), slot.lost_at, now)
            slot.lost_at = None
        limit = hello.limits.maxSubscriptions if hello.limits else None
        if limit is not None and self._lower_limit(limit):
            self._apply(now)

    def _failed(self, slot: _Slot, failure: Failure) -> None:
        """The reconnect loop's verdict on one session (the link already says the new state)."""
        reason = f"connection {slot.id}: {failure.reason}"
        self._last_error = reason
        if slot.conn is not None and slot.conn.connected:
            slot.lost_at = slot.conn.last_frame_at
            self._status("disconnected", reason=reason)
        if failure.kind == "auth":
            self._key_refused = True
            self._status("rejected", reason=reason)
            self._reconcile(self._slots[0])  # the probe, should demand move away

    async def _keep_synced(self, slot: _Slot, conn: LuziaConnection) -> None:
        """Every change of the slot's channels since the last sync goes out as one sync."""
        while True:
            await slot.wake.wait()
            planned = self._planner.slot(slot.id)
            if not planned:
                raise _Retired  # the transport closes politely on the way out; `_run_slot` ends
            await conn.sync(planned)

    # ---- frames ---------------------------------------------------------------------------------

    def _on_ticker(self, message: wire.Ticker, ts_gateway: int) -> bool:
        """A decoded ticker's events to the sink; False (malformed: the connection counts it) if
        its content cannot be normalized. Nothing is emitted from a ticker that fails halfway."""
        try:
            route = self._streams.route(*normalize.instrument_of(message))
            if route is None:
                return True
            events = normalize.events(message, provider=self.name, ts_gateway=ts_gateway, ticker=route.ticker, quote=route.quote)
        except MalformedFrame as exc:
            if log.isEnabledFor(logging.DEBUG):  # the redaction costs more than the frame
                log.debug("%s: skipped a ticker: %s", self.name, self._redact(str(exc)))
            return False
        self._streams.seen(route.keys, trio.current_time())
        for event in events:
            self._sink(event)
        return True

    def _on_error(self, slot: _Slot, conn: LuziaConnection, message: wire.Error) -> None:
        """An error that does not end the session. Health and statuses name only its code; what
        Luzia said goes to the log, bounded and redacted."""
        code = error_code(message)
        self._last_error = f"connection {slot.id}: the provider reported {code}"
        said = detail(message)
        self._log_error(slot, code, said)
        if message.code in ("INVALID_CHANNEL", "SUBSCRIPTION_LIMIT"):
            channel = conn.subs.blame(said)
            if channel is not None:
                conn.subs.refused(channel)
                self._channel_refused(slot, conn, channel, message.code)

    def _log_error(self, slot: _Slot, code: str, said: str | None) -> None:
        now = trio.current_time()
        if now - slot.errors_logged_at < ERROR_LOG_INTERVAL:
            slot.errors_unlogged += 1
            return
        more = f"; {slot.errors_unlogged} more errors since the last line" if slot.errors_unlogged else ""
        slot.errors_logged_at, slot.errors_unlogged = now, 0
        log.warning("%s: connection %d: %s%s%s", self.name, slot.id, code, f" ({self._redact(said)!r})" if said else "", more)

    def _channel_refused(self, slot: _Slot, conn: LuziaConnection, channel: str, code: str) -> None:
        """INVALID_CHANNEL: never again (until no longer wanted). SUBSCRIPTION_LIMIT: learn the real
        limit and move the channel; refuse it only if there was nothing to learn (no retry loop)."""
        if channel not in self._planner.slot(slot.id):
            return  # already planned elsewhere; this answers a subscribe sent before the move
        if code == "INVALID_CHANNEL" or not self._lower_limit(len(conn.subs.confirmed), evict=(channel,)):
            self._streams.refuse(channel, f"refused by the provider ({code})")
            self._planner.exclude(channel)
        self._apply(trio.current_time())

    # ---- staleness and small helpers ------------------------------------------------------------

    async def _watch_staleness(self) -> None:
        while True:
            await trio.sleep(STALE_CHECK_SECONDS)
            now = trio.current_time()  # one check, however many slices: it ends
            while self._streams.report_stale(now, STALE_REPORT_SLICE):
                await trio.lowlevel.checkpoint()  # let the clients' writers (and everyone else) run

    def _status(self, state: Literal["connected", "disconnected", "rejected"], *, reason: str) -> None:
        self._sink(Status(provider=self.name, ts_gateway=self._clock_ns(), state=state, reason=reason))

    def _slot_health(self, slot: _Slot, now: float | None) -> ConnectionHealth:
        conn = slot.conn
        state: ConnectionStateName = slot.link.state
        last = conn.last_frame_at if conn is not None else None
        return ConnectionHealth(
            id=slot.id,
            state=state,
            subscriptions=len(conn.subs.confirmed) if conn is not None and state == "connected" else 0,
            last_message_age_s=None if last is None or now is None else now - last,
        )


def _need_order(need: Need) -> tuple[str, str]:
    return need[0], need[1] or ""
