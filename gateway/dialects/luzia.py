"""The Luzia-compatible endpoint: `/v1/ws` and Luzia's REST ticker paths, on the gateway's port.

An app written for Luzia changes only its base URL (`http://localhost:8765` → the SDK derives
`ws://localhost:8765/v1/ws`) and keeps working, whichever provider `[routes] ticker` names: the
hub hands the session normalized tickers and `LuziaCodec` shows them in Luzia's exact shape.

A shell over `providers.luzia.server`, the protocol the Luzia emulator speaks too: every rule and
every word of it is there. What this shell decides:
- the terms: the configured tier name, `max_subscriptions` per connection, `max_connections`
  local connections in all; the keys: the gateway's local keys, any token form, required only when
  configured (a missing one is HTTP 401 with Luzia's REST error body);
- which channels exist: every well-formed one, while some provider is routed for tickers;
- what a subscription means: the session subscribes the channel's stream in the hub, after its
  `subscribed` reply is queued, so the confirmation precedes the stream's first ticker.
Luzia has no gap or status message, and its errors only ever answer a request (clients pair each
answer with the channel they sent, in order), so a stream a provider refused later is not reported
here: it simply carries no data, as a quiet symbol would. Tickers are latest-wins (a lagging client
gets the newest ticker of each symbol, never a stale queue), so nothing a ticker client needs is
ever dropped, and an upstream gap is healed by the next ticker, which carries the full state.
Hostile clients: every message takes tokens of the connection's bucket (`gateway.flood`: one,
and one per further 256 bytes); one over the rate is answered RATE_LIMITED and not applied, and a
client that keeps flooding gets that and the close (1008). A new channel beyond `limits.max_streams` distinct streams on the gateway is
SUBSCRIPTION_LIMIT, like the per-connection limit. A decoder fault (outside its contract) is
answered INVALID_JSON by the server, and counted and logged here in one line.
Never: blocks in `on_message` (the hub is synchronous), or writes to the socket (the peer does).
Big requests are applied `SLICE_CHANNELS` channels per scheduler pass (`background`), in order
(Luzia answers channel by channel, so the answers are the same as applying it whole).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Final

import msgspec
import trio
import trio.lowlevel

from gateway.context import GatewayContext
from gateway.dialects.luzia_rest import LuziaRest, TickerWatches, error_response
from gateway.flood import Verdict, message_cost
from gateway.hub import CodecSubscriber, Frames, Hub
from gateway.outbox import DroppedWindow
from gateway.server import HttpRequest, HttpResponse
from gateway.wsframe import text_frame
from gateway.wspeer import WebSocketPeer
from providers.common.signal import Wakeup
from providers.luzia import denormalize, wire
from providers.luzia.grammar import Channel, TierLimits
from providers.luzia.server import Access, Output, ServerConnection, State, Terms
from schemas import Event, Gap, Status, Ticker
from schemas.streams import StreamKey

log = logging.getLogger(__name__)

WEBSOCKET_PATH: Final = "/v1/ws"


class LuziaCodec:
    """Tickers as Luzia ticker frames, nothing else. Pure: the hub frames each event once for
    every Luzia client."""

    name = "luzia"

    def frame(self, event: Event) -> bytes | None:
        if type(event) is not Ticker:
            return None
        return _frame(denormalize.ticker_message(event))


class RoutedCatalog:
    """Which Luzia channels exist here: every one, while some provider is routed for tickers."""

    detail = "no provider serves tickers on this gateway"

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def has(self, channel: Channel) -> bool:
        return self._hub.routed("ticker")


def _frame(message: msgspec.Struct) -> bytes:
    return text_frame(wire.encoder.encode(message))


class LuziaEndpoint:
    def __init__(
        self,
        ctx: GatewayContext,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.ctx = ctx
        self.config = config = ctx.config.endpoints.luzia
        self.clock_ns = clock_ns
        self.clock = clock  # Trio time: the flood guard's
        self.codec = LuziaCodec()
        self.terms = Terms(config.tier, TierLimits(config.max_connections, config.max_subscriptions))
        self.access = Access(ctx.key_ok, key_form=None, key_required=ctx.local_keys is not None)
        self.catalog = RoutedCatalog(ctx.hub)
        # Weak, so a session whose upgrade failed before it ever ran does not hold a slot forever.
        self.sessions: weakref.WeakSet[LuziaSession] = weakref.WeakSet()
        self.watches = TickerWatches(ctx.hub, max_streams=config.max_subscriptions, max_total=ctx.config.limits.max_streams)
        self.rest = LuziaRest(ctx, self.watches)

    def serves_websocket(self, path: str) -> bool:
        return path.rstrip("/") == WEBSOCKET_PATH

    def open_session(self, peer: WebSocketPeer, request: HttpRequest) -> LuziaSession | HttpResponse:
        conn = ServerConnection(self.terms, self.access, self.catalog)
        refusal = conn.upgrade(request.path, request.headers.get("authorization"))
        if refusal is not None:
            return error_response(refusal.status, refusal.message)
        session = LuziaSession(self, peer, conn)
        session.open(connections=len(self.sessions))
        return session

    async def http(self, request: HttpRequest) -> HttpResponse | None:
        return await self.rest.handle(request)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The endpoint's timer: REST-started subscriptions end `keepalive` after their last request."""
        await self.watches.run(task_status=task_status)


#: Channels applied per scheduler pass (see the native dialect's `SLICE_CHANNELS`: the same reason).
SLICE_CHANNELS: Final = 100
#: Requests waiting behind one being applied (the token bucket bounds how fast they come).
MAX_BACKLOG: Final = 64


class _Work:
    """A parsed request on its way through `LuziaSession._step`, a part at a time."""

    __slots__ = ("done", "position", "request")

    def __init__(self, request: wire.ClientMessage) -> None:
        self.request = request
        self.position = 0
        self.done = False

    def next_part(self, budget: int) -> wire.ClientMessage:
        request = self.request
        if isinstance(request, wire.Ping) or (self.position == 0 and len(request.channels) <= budget):
            self.done = True
            return request
        channels = request.channels[self.position : self.position + budget]
        self.position += len(channels)
        self.done = self.position >= len(request.channels)
        kind = wire.Subscribe if isinstance(request, wire.Subscribe) else wire.Unsubscribe
        return kind(channels=channels)


class LuziaSession(CodecSubscriber):
    """One `/v1/ws` client: its protocol state is a `ServerConnection`; this applies what it says
    (replies into the outbox, subscriptions into the hub, the close to the peer)."""

    def __init__(self, endpoint: LuziaEndpoint, peer: WebSocketPeer, conn: ServerConnection) -> None:
        self.endpoint, self.peer, self.conn = endpoint, peer, conn
        self.ctx = endpoint.ctx
        self.hub = endpoint.ctx.hub
        self.outbox = peer.outbox
        self.codec = endpoint.codec
        self.guard = self.ctx.flood_guard(endpoint.clock())
        self._backlog: deque[_Work | Output] = deque()  # allowed requests not yet (fully) applied
        self._more = Wakeup()

    def open(self, *, connections: int) -> None:
        opening = self.conn.open(connections=connections)
        if opening.close is None:
            self.endpoint.sessions.add(self)
        self._apply(opening)

    def on_message(self, message: str | bytes) -> None:
        if self.conn.state is not State.OPEN:
            return  # rejected, shut down or closed for flooding: nothing more is answered or counted
        verdict = self.guard.check(self.endpoint.clock(), message_cost(message))
        if verdict is Verdict.ALLOW and len(self._backlog) >= MAX_BACKLOG:
            verdict = Verdict.REFUSE  # requests arrive faster than they can be applied
        if verdict is not Verdict.ALLOW:
            self._flooded(verdict)
            return
        request = self.conn.parse(message)
        if isinstance(request, Output):  # its error: answered in turn, like any reply
            self._backlog.append(request)
        else:
            self._backlog.append(_Work(request))
        self._step()

    def _step(self) -> None:
        """Up to SLICE_CHANNELS channels of the waiting requests, in order (a slice of a big one
        at a time); the rest is `background`'s, after a checkpoint."""
        budget = SLICE_CHANNELS
        while self._backlog and budget > 0 and self.conn.state is State.OPEN:
            work = self._backlog[0]
            if isinstance(work, Output):
                self._backlog.popleft()
                self._count(work)
                self._apply(work)
                budget -= 1
                continue
            part = work.next_part(budget)
            budget -= max(1, len(getattr(part, "channels", ())))
            if work.done:
                self._backlog.popleft()
            out = self.conn.apply(part, self.endpoint.clock_ns(), room=self._room())
            self._count(out)
            self._apply(out)
        if self.conn.state is not State.OPEN:
            self._backlog.clear()
        elif self._backlog:
            self._more.fire()

    def _room(self) -> Callable[[Channel], str | None]:
        """The gateway-wide cap, as the server asks it for each new channel of one part."""
        room = self.ctx.stream_room()

        def beyond_connection(channel: Channel) -> str | None:
            return None if room.take(_stream_key(channel)) else f"max {room.max_streams} streams on this gateway"

        return beyond_connection

    async def background(self) -> None:
        """Applies, a slice per scheduler pass, what `on_message` left for later."""
        while True:
            await self._more.wait()
            while self._backlog and self.conn.state is State.OPEN:
                await trio.lowlevel.checkpoint()
                self._step()

    def _flooded(self, verdict: Verdict) -> None:
        counters = self.ctx.counters
        counters.rate_limited += 1
        if verdict is Verdict.CLOSE:
            counters.flood_closed += 1
        self._apply(self.conn.rate_limited(close=verdict is Verdict.CLOSE))

    def _count(self, out: Output) -> None:
        counters = self.ctx.counters
        for reply in out.replies:
            if type(reply) is wire.Error:
                if reply.code == "INVALID_JSON":
                    counters.malformed += 1
                elif reply.code == "SUBSCRIPTION_LIMIT":
                    counters.over_cap += 1
        if out.fault is not None:
            counters.decoder_faults += 1
            log.warning("Luzia client message: decoder raised %s; answered INVALID_JSON", out.fault)

    def _apply(self, out: Output) -> None:
        if out.replies:  # first: a `subscribed` precedes the stream's first ticker
            # One request's answers are one control item: a request naming a thousand channels is
            # answered in full, however low the outbox's bound on replies a client leaves unread.
            self.outbox.put_control(b"".join(_frame(reply) for reply in out.replies))
        self._release(out.removed)
        if out.added:
            with self.hub.batch():  # all the streams of one request: one update per source
                for channel in out.added:
                    self.hub.subscribe(self, _stream_key(channel))
        if out.close is not None:
            self.peer.close(out.close.code, out.close.reason or "")

    def _release(self, channels: list[Channel]) -> None:
        if channels:
            with self.hub.batch():
                for channel in channels:
                    self.hub.unsubscribe(self, _stream_key(channel))

    def notify(self, event: Status | Gap, frames: Frames) -> None:
        """Luzia has no status or gap message (see the module header): nothing to tell."""

    def gap_frames(self, dropped: list[DroppedWindow]) -> list[bytes]:
        return []  # tickers are conflated, never dropped: there is no window to report

    def goodbye_frames(self) -> list[bytes]:
        goodbye = self.conn.shutdown()  # the peer sends the close frame itself
        self._release(goodbye.removed)
        return [_frame(reply) for reply in goodbye.replies]

    def on_close(self) -> None:
        self._backlog.clear()
        self._release(self.conn.closed())
        self.endpoint.sessions.discard(self)


def _stream_key(channel: Channel) -> StreamKey:
    return StreamKey("ticker", channel.exchange, channel.symbol)
