"""The CoinAPI WebSocket V1 adapter: one upstream session kept alive, normalized events out.

Owns: the upstream connection(s) and their lifecycle — connect with the key, hello, coalesced and
rate-limited scope updates, decoding, reconnect gaps, make-before-break on the server's `reconnect`
notice, connection status events, health. What a decoded message becomes (wanted-set filtering,
tickers, books, sequence and staleness gaps, de-duplication) is `router.StreamRouter`'s. Timers are kept
apart: transport ping (dead peer), data idle per connection (connected but mute; heartbeats count
as data), staleness per wanted stream (the watchdog here, the rules in the router).
Must never: await the sink (it is synchronous), let the API key reach a log, an exception or health,
send a hello with an empty scope (CoinAPI would read it as "everything"; a stream of every exchange
asks for that on purpose, see `plan`), or exceed CoinAPI's 10 hello/subscribe per 10 s.

Shape: `run` = staleness watchdog + `reconnect_forever(_session)`. One `_session` is one logical
session; it may hop from connection to connection on `reconnect` notices without counting as a
reconnect. Every connection ("link") starts pending and becomes the active one on its first
frame; the previous active one is then retired (closed) and its later frames are dropped. Events
delivered twice during the overlap (same trade uuid, same quote time) are emitted once. The
session fails — and reconnect_forever backs off — when the last live link fails.
With nothing wanted there is no connection at all (health state "stopped").
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable, Mapping, Set
from typing import Final

import trio
from trio_websocket import ConnectionClosed

from providers.base import AuthRejected, ConnectionHealth, EventSink, ProviderError, ProviderHealth
from schemas.streams import StreamKey
from providers.coinapi import plan, wire
from providers.coinapi.router import StreamRouter
from providers.coinapi.symbols import ExchangeMap, SymbolMapper
from providers.common.backoff import Backoff
from providers.common.signal import Wakeup
from providers.common.liveness import IdleDeadline, trio_now
from providers.common.reconnect import AUTH_RETRY_SECONDS, LinkState, classify, reconnect_forever
from providers.common.transport import Connector, TransportError, connect_tcp
from schemas import Status
from schemas.timeutil import TimestampError

log = logging.getLogger(__name__)

DEFAULT_URL: Final = "wss://ws.coinapi.io/v1/"
#: Changes to the wanted set within this long go out as one message.
COALESCE_SECONDS: Final = 0.05
#: Added to CoinAPI's 10 s hello window: the server measures arrival times, which network
#: jitter moves closer together than our send times.
HELLO_WINDOW_MARGIN: Final = 0.5
CLOSE_TIMEOUT: Final = 1.0  # a peer that does not answer our close frame is cut off after this


class _Link:
    """One upstream WebSocket connection."""

    def __init__(self, link_id: int, idle_timeout: float) -> None:
        self.id = link_id
        self.ws = None
        self.idle = IdleDeadline(idle_timeout)
        self.sent: plan.UpstreamScope | None = None  # what the server has for this connection
        self.retired = False  # replaced: its frames are dropped and it is being closed
        self.peer_dead = False  # idle or pong timeout: no point waiting for a close reply
        self.sequences: dict[tuple[str, str], tuple[int, int]] = {}  # (type, symbol_id) → (seq, received ns)
        self.last_frame_at: float | None = None


class CoinApiAdapter:
    kind = "coinapi"
    datatypes = frozenset({"trade", "quote", "ticker", "book"})

    def __init__(
        self,
        name: str,
        *,
        url: str = DEFAULT_URL,
        api_key: str,
        sink: EventSink,
        connector: Connector = connect_tcp,
        rng: random.Random | None = None,
        exchange_map: Mapping[str, str] | None = None,
        idle_timeout: float = 10.0,
        stale_after: float = 30.0,
        backoff_initial: float = 1.0,
        backoff_factor: float = 2.0,
        backoff_cap: float = 30.0,
        stable_after: float = 60.0,
        auth_retry: float = AUTH_RETRY_SECONDS,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 10.0,
        hello_limit: int = plan.HELLO_LIMIT,
        hello_window: float = plan.HELLO_WINDOW + HELLO_WINDOW_MARGIN,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.name = name
        self._url, self._api_key, self._sink, self._connector = url, api_key, sink, connector
        self._headers = [(b"X-CoinAPI-Key", api_key.encode())]
        self._idle_timeout, self._auth_retry, self._clock_ns = idle_timeout, auth_retry, clock_ns
        self._ping_interval, self._ping_timeout = ping_interval, ping_timeout
        self._mapper = SymbolMapper(ExchangeMap(exchange_map))
        self._backoff = Backoff(backoff_initial, backoff_factor, backoff_cap, stable_after, rng or random.Random())
        self._link_state = LinkState()
        self._limiter = plan.HelloLimiter(hello_limit, hello_window)
        self._router = StreamRouter(name, self._mapper, sink, stale_after)
        self._wanted: frozenset[StreamKey] = frozenset()
        self._target_for: frozenset[StreamKey] | None = None
        self._target = plan.UpstreamScope()
        self._wanted_changed, self._send_needed = Wakeup(), Wakeup()
        self._link_ids = itertools.count(1)
        self._links: list[_Link] = []
        self._active: _Link | None = None
        self._nursery: trio.Nursery | None = None
        self._idle = True  # waiting for something to be wanted: no connection
        self._mark_healthy: Callable[[], None] = lambda: None
        self._session_connected = False
        self._last_frame_at: float | None = None
        self._last_frame_ns: int | None = None
        self._lost: tuple[int, frozenset[StreamKey]] | None = None  # (last data ns, streams) of a lost session
        self.malformed_frames = 0
        self.unknown_messages = 0

    def __repr__(self) -> str:  # never the key
        return f"CoinApiAdapter({self.name!r}, url={self._url!r})"

    # ------------------------------------------------------------------ the Adapter contract

    def set_wanted(self, wanted: Set[StreamKey]) -> None:
        self._wanted = frozenset(wanted)
        self._router.want(self._wanted, trio_now())
        self._wanted_changed.fire()
        self._send_needed.fire()

    def health(self) -> ProviderHealth:
        now = trio_now()
        active = self._active
        state = self._link_state.state
        if self._idle and state == "connecting":
            state = "stopped"
        return ProviderHealth(
            name=self.name,
            kind=self.kind,
            state=state,
            usable=state != "auth_rejected",
            wanted=len(self._wanted),
            subscriptions=active.sent.entries if active is not None and active.sent is not None else 0,
            connections=[self._link_health(link, now) for link in self._links],
            last_message_age_s=_age(self._last_frame_at, now),
            reconnects=self._link_state.reconnects,
            malformed_frames=self.malformed_frames,
            unknown_messages=self.unknown_messages,
            stale_streams=self._router.tracker.stale_count,
            last_error=self._redact(self._link_state.last_error),
        )

    def _link_health(self, link: _Link, now: float | None) -> ConnectionHealth:
        return ConnectionHealth(
            id=link.id,
            state="connected" if link is self._active else "connecting",
            subscriptions=link.sent.entries if link.sent is not None else 0,
            last_message_age_s=_age(link.last_frame_at, now),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._router.want(self._wanted, trio.current_time())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_staleness)
            task_status.started()
            await reconnect_forever(
                self._session, self._link_state, self._backoff, auth_retry=self._auth_retry,
                describe=f"coinapi {self.name}", redact=self._redact,
            )

    # ------------------------------------------------------------------ session and links

    async def _session(self, mark_healthy: Callable[[], None]) -> None:
        await self._until_wanted()
        self._mark_healthy, self._session_connected = mark_healthy, False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._link_task, self._new_link())
                nursery.start_soon(self._sender)
        except Exception as exc:
            self._session_ended(exc)
            raise
        finally:
            self._nursery, self._active = None, None
            self._links.clear()
            self._router.reset()

    async def _until_wanted(self) -> None:
        while not self._wanted:
            self._idle = True
            await self._wanted_changed.wait()
        self._idle = False

    def _new_link(self) -> _Link:
        link = _Link(next(self._link_ids), self._idle_timeout)
        self._links.append(link)
        return link

    async def _link_task(self, link: _Link, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Own one connection: connect (within the idle timeout), hello, read until it ends."""
        try:
            async with trio.open_nursery() as nursery:
                try:
                    with link.idle.scope:
                        link.ws = await self._connector(nursery, self._url, self._headers)
                        await self._send_first(link)
                        task_status.started()
                        if self._ping_interval:
                            nursery.start_soon(self._pinger, link)
                        await self._read(link)
                    if link.idle.expired:
                        link.peer_dead = True
                        raise ProviderError(f"no data for {self._idle_timeout:g} s")
                finally:
                    await self._close_quietly(link)  # while the library's reader can still see the reply
                    nursery.cancel_scope.cancel()
        except Exception as exc:
            if not self._survivable(link, exc):
                raise
        finally:
            if link in self._links:
                self._links.remove(link)
            if self._active is link:
                self._active = None

    def _survivable(self, link: _Link, exc: Exception) -> bool:
        """A retryable failure is survivable while another live connection carries the session."""
        others = [other for other in self._links if other is not link and not other.retired]
        kind, cause = classify(exc)
        if kind != "retry" or not others:
            return False
        if self._active is link:
            # Died before its replacement delivered: data may be missing until the replacement does.
            self._active = None
            self._lost = (self._last_frame_ns or self._clock_ns(), self._wanted)
        reason = self._redact(f"{type(cause).__name__}: {cause}")
        log.info("coinapi %s: connection %d ended (%s); connection %d carries on", self.name, link.id, reason, others[0].id)
        return True

    async def _close_quietly(self, link: _Link) -> None:
        """A close frame and a short wait for the reply; a peer believed dead is cut off at once
        (a cancelled aclose still closes the stream)."""
        if link.ws is None:
            return
        patience = 0.0 if link.peer_dead else CLOSE_TIMEOUT
        with trio.CancelScope(shield=True, deadline=trio.current_time() + patience):
            await link.ws.aclose()

    async def _read(self, link: _Link) -> None:
        while True:
            try:
                raw = await link.ws.get_message()
            except ConnectionClosed as exc:
                code = exc.reason.code if exc.reason is not None else None
                raise TransportError(f"connection closed (code {code})") from None
            self._on_frame(link, raw)

    async def _pinger(self, link: _Link) -> None:
        while True:
            await trio.sleep(self._ping_interval)
            with trio.move_on_after(self._ping_timeout) as waited:
                try:
                    await link.ws.ping()
                except ConnectionClosed:
                    return  # the reader reports it
            if waited.cancelled_caught:
                link.peer_dead = True
                raise ProviderError(f"no pong within {self._ping_timeout:g} s")

    def _session_ended(self, exc: Exception) -> None:
        kind, cause = classify(exc)
        reason = self._redact(f"{type(cause).__name__}: {cause}")
        if self._session_connected:
            now_ns = self._clock_ns()
            self._lost = (self._last_frame_ns or now_ns, self._wanted)
            self._status("disconnected", reason=reason)
        if kind == "auth":
            self._status("rejected", reason=reason)

    # ------------------------------------------------------------------ subscription updates

    def _current_target(self) -> plan.UpstreamScope:
        if self._target_for is not self._wanted:
            self._target, self._target_for = plan.scope_for(self._wanted, self._mapper), self._wanted
        return self._target

    async def _wait_for_limiter(self) -> None:
        while (delay := self._limiter.delay(trio.current_time())) > 0:
            await trio.sleep(delay)

    async def _send_first(self, link: _Link) -> None:
        await self._wait_for_limiter()
        target = self._current_target()
        if target.empty:
            return
        self._limiter.record(trio.current_time())
        try:
            await link.ws.send_message(wire.encode_client(plan.hello(target, self._api_key)))
        except ConnectionClosed:
            raise TransportError("connection closed before the hello") from None
        link.sent = target

    async def _sender(self) -> None:
        """Bring the active connection's scope up to date; bursts of changes become one message."""
        while True:
            await self._send_needed.wait()
            await trio.sleep(COALESCE_SECONDS)
            try:
                await self._bring_up_to_date()
            except ConnectionClosed:
                pass  # the connection's reader reports it

    async def _bring_up_to_date(self) -> None:
        while (link := self._active) is not None and link.ws is not None:
            target = self._current_target()
            message = plan.plan_update(link.sent, target, self._api_key)
            if message is None:
                return
            delay = self._limiter.delay(trio.current_time())
            if delay > 0:
                await trio.sleep(delay)  # then plan again: more may have changed meanwhile
                continue
            self._limiter.record(trio.current_time())
            await link.ws.send_message(wire.encode_client(message))
            link.sent = target

    # ------------------------------------------------------------------ frames

    def _on_frame(self, link: _Link, raw: str | bytes) -> None:
        link.idle.fed()
        link.last_frame_at = self._last_frame_at = trio.current_time()
        now_ns = self._clock_ns()  # ts_gateway: stamped once per frame
        try:
            message = wire.decode_server(raw)
        except wire.UnknownMessage:
            self.unknown_messages += 1
            return
        except wire.MalformedFrame:
            self.malformed_frames += 1
            return
        if type(message) is wire.Error:
            raise self._error(message.message)
        if link is not self._active:
            if link.retired:
                return
            self._switch_to(link, now_ns)
        self._last_frame_ns = now_ns
        if type(message) is wire.Reconnect:
            self._on_reconnect(link, message)
            return
        try:
            self._router.route(link.sequences, message, now_ns, link.last_frame_at)
        except TimestampError:
            self.malformed_frames += 1

    def _error(self, text: str) -> Exception:
        """CoinAPI errors are terminal; a refused key must not be hammered."""
        text = self._redact(text) or ""
        if "invalid api key" in text.lower():
            return AuthRejected(text)
        return ProviderError(f"provider error: {text}")

    def _switch_to(self, link: _Link, now_ns: int) -> None:
        """`link` delivered its first frame: it becomes the active connection."""
        self._active = link
        self._router.switched(trio.current_time())
        for other in self._links:
            if other is not link and not other.retired:
                other.retired = True
                self._nursery.start_soon(self._close_quietly, other)
        if not self._session_connected:
            self._session_connected = True
            self._mark_healthy()
            self._status("connected")
        self._report_lost(now_ns)
        self._send_needed.fire()  # its scope may lag behind what is wanted now

    def _report_lost(self, now_ns: int) -> None:
        """A Gap(reconnect) per stream that was wanted before the loss and still is."""
        if self._lost is not None:
            lost_from, lost_keys = self._lost
            self._lost = None
            self._router.gaps(sorted(lost_keys & self._wanted, key=StreamKey.channel), lost_from, now_ns, "reconnect")

    def _on_reconnect(self, link: _Link, message: wire.Reconnect) -> None:
        """Make before break: open the replacement now; it takes over on its first frame."""
        if any(other is not link and not other.retired for other in self._links):
            return  # a replacement is already on its way
        log.info("coinapi %s: server asks to reconnect within %s s", self.name, message.within_seconds)
        self._router.begin_overlap()
        self._nursery.start_soon(self._link_task, self._new_link())

    def _status(self, state: str, *, reason: str | None = None) -> None:
        self._sink(Status(provider=self.name, ts_gateway=self._clock_ns(), state=state, reason=reason))

    async def _watch_staleness(self) -> None:
        interval = min(1.0, self._router.tracker.stale_after / 2)
        while True:
            await trio.sleep(interval)
            self._router.check_stale(trio.current_time(), self._clock_ns())

    def _redact(self, text: str | None) -> str | None:
        if text is None or not self._api_key:
            return text
        return text.replace(self._api_key, "***")


def _age(then: float | None, now: float | None) -> float | None:
    return None if then is None or now is None else now - then
