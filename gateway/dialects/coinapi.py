"""The CoinAPI-compatible endpoint: CoinAPI Market Data WebSocket V1 at `/`, `/v1`, `/v1/` and
`/APIKEY-<key>`, so an app written for CoinAPI only changes its URL, whichever provider serves it.

A thin shell over `providers.coinapi.server` — the same state machine the emulator runs — as
trio-websocket is a shell over wsproto: each client message goes to `ServerConnection.receive`,
and the session applies the outcome to the hub (the scope's covering stream keys, in one
`hub.batch()`) or sends its `error` and closes (1008). Out: `trade`, `quote`, `book5/20/50` (and
`book`, as snapshots) in CoinAPI's field names, `hearbeat` after each second of silence when
asked, `reconnect` before a planned shutdown.
Owns: one client's delivery step (`deliver`: the exact per-client filter, the update-limit
throttle, the shared sequence numbering, the queueing) and its timers (heartbeats, held frames).
The pure parts live beside it: `coinapi_scope` (scope → stream keys, refusals), `coinapi_frames`
(sequence numbers and each event's frames, shared by every client), `coinapi_throttle`.
Must never: block or await in `on_message`/`deliver` (the hub's publish path calls `deliver`),
queue anything after its close frame, or send a provider's key anywhere.

The gateway's rules (the state machine's `Rules`): a key is only checked when local keys are
configured (`ctx.key_ok`), on the first message as CoinAPI does, and any one acceptable key among
those given (upgrade request, `apikey`) is enough; the 10-hellos-per-10-s limit is not enforced
(local apps); a data type the configured routes cannot produce is refused, naming it and the
providers, and `ohlcv`, `exrate`, `asset`, `exchange`, `symbol` and `book_l3` have no normalized
stream at all; `book` (full L2) is served as repeated `is_snapshot: true` snapshots of the
provider's depth; `bookN` is sent only for books with N levels on a side.

Hostile clients, each answered with CoinAPI's terminal `error` and the close: a message over the
connection's token bucket (`gateway.flood`; CoinAPI's errors end the connection, so there are no
strikes here); a scope whose covering streams exceed `endpoints.coinapi.max_subscriptions` (an
exchange-wide filter counts as one), or that would take the gateway past `limits.max_streams`
distinct streams — checked before anything reaches the hub, so the refused request changes
nothing upstream; a connection that sends nothing within `limits.auth_deadline_seconds` (keyless
sockets cannot hold slots). A decoder fault is answered like a malformed message, counted and
logged in one line.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Final, Protocol

import trio

from gateway.context import GatewayContext
from gateway.dialects.coinapi_frames import HEARTBEAT_FRAME, CoinApiFrames, control_frame, producible
from gateway.dialects.coinapi_scope import BOOK_KINDS, LIMIT_FAMILY, Coverage, refusal
from gateway.dialects.coinapi_throttle import Throttle
from gateway.flood import Verdict, message_cost
from gateway.hub import Frames, Hub, queue_market
from gateway.outbox import DroppedWindow, Outbox
from gateway.server import HttpRequest, HttpResponse
from providers.coinapi import server, wire
from providers.coinapi.grammar import ExchangeMap, SymbolMapper
from schemas import Book, Gap, MarketEvent, Quote, Status, Trade
from schemas.streams import Stream, StreamKey

log = logging.getLogger(__name__)

#: `within_seconds` of the `reconnect` sent at a planned shutdown: the gateway closes right after
#: it and gives clients `gateway.app.SHUTDOWN_GRACE_SECONDS` (2 s) to take their last frames.
RECONNECT_WITHIN_SECONDS: Final = 2
#: Close code after an `error` frame (policy violation); the error frame says what went wrong.
ERROR_CLOSE_CODE: Final = 1008
#: Per-client memo of what it wants of each stream; cleared beyond this.
_CHOICE_CACHE_LIMIT: Final = 65_536

#: What a client wants of one stream: trades and quotes yes/no; books, the book messages (maybe none).
Choice = bool | tuple[str, ...]


class Peer(Protocol):
    """What the session needs of its `gateway.wspeer.WebSocketPeer`."""

    outbox: Outbox

    def close(self, code: int = 1000, reason: str = "") -> None: ...


class CoinApiEndpoint:
    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.mapper = SymbolMapper(ExchangeMap(ctx.config.endpoints.coinapi.exchange_map))
        self.frames = CoinApiFrames(self.mapper)
        self.max_subscriptions = ctx.config.endpoints.coinapi.max_subscriptions
        self.rules = server.Rules(
            key_check=server.any_given_key(ctx.key_ok),
            available=partial(refusal, hub_refusal=ctx.hub.refusal),
            first_message_within=ctx.config.limits.auth_deadline_seconds,
        )

    def serves_websocket(self, path: str) -> bool:
        return server.serves_path(path)

    def open_session(self, peer: Peer, request: HttpRequest) -> CoinApiSession | HttpResponse:
        # A refused key is CoinAPI's `error` after the first message, not an HTTP refusal.
        found = server.upgrade_key(request.path, request.query, request.headers)
        return CoinApiSession(self, peer, found.key if found else None)

    async def http(self, request: HttpRequest) -> HttpResponse | None:
        return None


class CoinApiSession:
    #: The key comes with the first message (the hello): until then the server may evict this
    #: connection to make room at a connection cap.
    authenticates_on_first_message = True

    def __init__(
        self,
        endpoint: CoinApiEndpoint,
        peer: Peer,
        key: str | None,
        *,
        clock: Callable[[], float] = trio.current_time,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.endpoint, self.peer, self.outbox = endpoint, peer, peer.outbox
        self.ctx = endpoint.ctx
        self.hub: Hub = endpoint.ctx.hub
        self._clock, self._wall_ns = clock, wall_ns
        self.protocol = server.ServerConnection(endpoint.rules, key, now=clock())
        self.guard = self.ctx.flood_guard(clock())
        self.keys: set[StreamKey] = set()  # what this session holds in the hub
        self.coverage = Coverage(endpoint.mapper)  # the scope's covering keys, kept per request
        self._scope = server.Scope()  # the scope `coverage` reflects
        self._closed = False
        self._choices: dict[Stream, Choice] = {}
        self._throttle: Throttle[Stream] = Throttle()
        self._wake = trio.Event()

    # ----- client messages ----------------------------------------------------------------

    def on_message(self, message: str | bytes) -> None:
        if self._closed:
            return
        now = self._clock()
        with self.hub.batch():  # one re-plan for all the streams this changes
            if self.guard.check(now, message_cost(message)) is not Verdict.ALLOW:
                self._flooded()
                return
            outcome = self.protocol.receive(message, now)
            if isinstance(outcome, server.Refused):
                self._refused(outcome)
            elif isinstance(outcome, server.Accepted):
                self._apply(outcome)

    def _flooded(self) -> None:
        counters = self.ctx.counters
        counters.rate_limited += 1
        counters.flood_closed += 1
        self._fail(self.protocol.refuse(server.flooded(self.ctx.config.limits.messages_per_second)).error)

    def _refused(self, refused: server.Refused) -> None:
        if refused.error.message == server.INVALID_MESSAGE:
            self.ctx.counters.malformed += 1
        if refused.fault is not None:
            self.ctx.counters.decoder_faults += 1
            log.warning("CoinAPI client message: decoder raised %s; answered as malformed", refused.fault)
        self._fail(refused.error)

    def _apply(self, accepted: server.Accepted) -> None:
        # What this request changes, not the whole scope: a client toggling one symbol beside
        # thousands costs one symbol's work.
        added, removed = self.coverage.update(self._scope, accepted.scope)
        self._scope = accepted.scope
        problem = self._over_cap(added)
        if problem is not None:  # refused before the hub sees it: nothing changes upstream
            self.ctx.counters.over_cap += 1
            self._fail(self.protocol.refuse(problem).error)
            return
        self._rescope(added, removed)
        for datatype, family in LIMIT_FAMILY.items():
            if family in accepted.limits_changed:  # what was held under the old limit goes now
                self._send_held(self._throttle.drop(partial(_of_datatype, datatype)))
        self._wake.set()

    def _over_cap(self, added: set[StreamKey]) -> str | None:
        """Why the scope now covered may not be served (`added`: its keys the hub lacks), or None."""
        limit, covered = self.endpoint.max_subscriptions, len(self.coverage.keys)
        if covered > limit:
            return f"Too many subscriptions: the filters cover {covered} streams, at most {limit} per connection."
        max_streams = self.ctx.config.limits.max_streams
        if not self.hub.room_for(added, max_streams):
            return f"Too many subscriptions: this gateway serves at most {max_streams} streams."
        return None

    def _rescope(self, added: set[StreamKey], removed: set[StreamKey]) -> None:
        """Move the hub subscriptions by the scope's change (new ones first, so a stream kept
        under another key is never released upstream). Held frames of streams no longer wanted
        are not searched for here (that would cost the whole throttle): they are filtered when
        they come due."""
        self._choices = {}
        for key in added:
            self.hub.subscribe(self, key)
        for key in removed:
            self.hub.unsubscribe(self, key)
        self.keys |= added
        self.keys -= removed

    def _fail(self, error: wire.Error) -> None:
        """CoinAPI errors are terminal: the error frame, then the close."""
        self.outbox.put_control(control_frame(error))
        self.peer.close(ERROR_CLOSE_CODE, error.message)
        self._release()

    # ----- what the hub delivers ------------------------------------------------------------

    def deliver(self, event: MarketEvent, stream: Stream, frames: Frames) -> None:
        """The delivery step: exactly what this client's filters select, at most one frame per
        update-limit interval (the latest held for the interval's end), numbered and framed once
        for every client by the endpoint's `CoinApiFrames`, then queued."""
        choice = self._choices.get(stream)
        if choice is None:
            choice = self._choice(stream)
        if not choice:
            return
        if choice is not True:
            choice = producible(event, choice)  # type: ignore[arg-type]
            if not choice:
                return
        limits = self.protocol.limits
        if limits:
            interval = limits.get(LIMIT_FAMILY.get(stream.datatype, ""))
            if interval is not None and not self._throttle.admit(stream, interval, self._clock()):
                self._hold(stream, event, choice)
                return
        data = self._frame(event, choice)
        if data is not None:
            queue_market(self.outbox, event, stream, data)
            if self.protocol.scope.heartbeat:
                self.protocol.sent(self._clock())

    def notify(self, event: Status | Gap, frames: Frames) -> None:
        """CoinAPI has no status or gap message: the jump in `sequence` is the signal."""

    def _choice(self, stream: Stream) -> Choice:
        """True/False for trades and quotes; for books, the book data types wanted (maybe none)."""
        choice = self._choices.get(stream)
        if choice is None:
            datatype, exchange, symbol = stream
            symbol_id = self.endpoint.frames.symbol_id(exchange, symbol)
            scope = self.protocol.scope
            if symbol_id is None:
                choice = False
            elif datatype == "book":
                choice = tuple(kind for kind in BOOK_KINDS if scope.wants(kind, symbol_id))
            else:
                choice = scope.wants(datatype, symbol_id)
            if len(self._choices) >= _CHOICE_CACHE_LIMIT:
                self._choices.clear()
            self._choices[stream] = choice
        return choice

    def _frame(self, event: MarketEvent, choice: Choice) -> bytes | None:
        frames = self.endpoint.frames
        if isinstance(event, Book):
            return frames.books(event, choice)  # type: ignore[arg-type]
        if isinstance(event, (Trade, Quote)):
            return frames.frame(event, "trade" if isinstance(event, Trade) else "quote")
        return None  # tickers have no CoinAPI V1 message

    def _hold(self, stream: Stream, event: MarketEvent, choice: Choice) -> None:
        data = self._frame(event, choice)  # numbered now, like every other client's copy
        if data is not None and self._throttle.hold(stream, data):
            self._wake.set()

    # ----- the close ------------------------------------------------------------------------

    def gap_frames(self, dropped: list[DroppedWindow]) -> list[bytes]:
        return []  # CoinAPI has no gap message: the jump in `sequence` is the signal

    def goodbye_frames(self) -> list[bytes]:
        if self.outbox.closed:
            return []
        # The peer closes right after this frame; the notice's own deadline does not matter here.
        return [control_frame(self.protocol.notice(self._clock(), self._wall_ns(), RECONNECT_WITHIN_SECONDS))]

    def on_close(self) -> None:
        with self.hub.batch():  # one re-plan for all the streams this changes
            self._release()

    def _release(self) -> None:
        self._closed = True
        for key in self.keys:
            self.hub.unsubscribe(self, key)
        self.keys = set()
        self._wake.set()

    # ----- timers -------------------------------------------------------------------------

    async def background(self) -> None:
        """Heartbeats, held (rate-limited) frames and the first-message deadline, each at its
        exact time."""
        while not (self._closed or self.outbox.closed):
            self._wake = wake = trio.Event()
            now = self._clock()
            expired = self.protocol.expired(now)
            if expired is not None:
                self.ctx.counters.auth_timeouts += 1
                self._fail(expired.error)
                return
            self._send_held(self._throttle.release(now))
            if self.protocol.heartbeat(now) is not None:
                self.outbox.put_control(HEARTBEAT_FRAME)
            release = self._throttle.next_release()
            deadline = min(math.inf if release is None else release, self.protocol.heartbeat_at())
            if self.protocol.state is server.State.AWAITING_FIRST:
                deadline = min(deadline, self.protocol.first_message_by)
            with trio.move_on_at(deadline):
                await wake.wait()

    def _send_held(self, held: list[tuple[Stream, bytes]]) -> None:
        if not held or self.outbox.closed:
            return
        for key, data in held:
            if self._choice(key):  # the scope may have let go of it since it was held
                self.outbox.put_latest(key, data)
        if self.protocol.scope.heartbeat:
            self.protocol.sent(self._clock())


def _of_datatype(datatype: str, stream: Stream) -> bool:
    return stream.datatype == datatype
