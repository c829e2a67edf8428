"""The CoinAPI-compatible endpoint: CoinAPI Market Data WebSocket V1 at `/`, `/v1`, `/v1/` and
`/APIKEY-<key>`, so an app written for CoinAPI only changes its URL, whichever provider serves it.

Protocol (shared/protocols/coinapi-v1.md): `hello` replaces the scope, `subscribe` adds to it (and
may come first), `unsubscribe` removes; no acknowledgement. Out: `trade`, `quote`, `book5/20/50`
(and `book`, as snapshots) in CoinAPI's field names, `hearbeat` after each second of silence when
asked, `reconnect` before a planned shutdown, and `error` — always followed by the close — for a
malformed message, a refused key, a missing or unknown data type, or a data type the configured
providers cannot produce (the text names the data type and the providers).
Owns: one client's scope, its stream keys on the hub, its `accepts` test, its heartbeat and
update-limit timers. The pure parts live beside it: `coinapi_scope` (scope → stream keys, key
sources, refusals), `coinapi_frames` (codecs and sequence numbers), `coinapi_throttle`.
Must never: block or await in `on_message`/`accepts` (the hub's publish path calls `accepts`),
queue anything after its close frame, or send a provider's key anywhere.

Choices where CoinAPI documents nothing: a key is only checked when local keys are configured
(`ctx.key_ok`), on the first message as CoinAPI does, and any one acceptable key among those given
(upgrade request, `apikey`) is enough — so an app that keeps its old CoinAPI key in its hello can
put the local key in the URL; every `error` closes with 1008; the 10-hellos-per-10-s limit is not
enforced (local apps); `ohlcv`, `exrate`, `asset`, `exchange`, `symbol` and `book_l3` have no
normalized stream and are refused; `book` (full L2) is served as repeated `is_snapshot: true`
snapshots of the provider's depth; `bookN` is sent only for books with N levels on a side.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final, Protocol

import trio

from gateway.context import GatewayContext
from gateway.dialects.coinapi_frames import (
    HEARTBEAT_FRAME,
    CoinApiCodec,
    CoinApiFrames,
    ScopedCodec,
    control_frame,
    producible,
)
from gateway.dialects.coinapi_scope import BOOK_KINDS, covering_keys, refusal, serves_path, upgrade_key
from gateway.dialects.coinapi_throttle import Throttle
from gateway.hub import Hub
from gateway.outbox import DroppedWindow, Outbox
from gateway.server import HttpRequest, HttpResponse
from schemas.streams import StreamKey
from providers.coinapi import wire
from providers.coinapi.filters import INVALID_API_KEY, INVALID_MESSAGE, Scope, validate_request
from providers.coinapi.symbols import ExchangeMap, SymbolMapper
from schemas import Book, Event, Quote, Trade
from schemas.timeutil import NS_PER_S, format_iso_ns

#: Seconds of silence before a heartbeat (CoinAPI: "after each second of silence").
HEARTBEAT_AFTER: Final = 1.0
#: `within_seconds` of the `reconnect` sent at a planned shutdown: the gateway closes right after
#: it and gives clients `gateway.app.SHUTDOWN_GRACE_SECONDS` (2 s) to take their last frames.
RECONNECT_WITHIN_SECONDS: Final = 2
#: Close code after an `error` frame (policy violation); the error frame says what went wrong.
ERROR_CLOSE_CODE: Final = 1008
#: Per-client memo of what it wants of each (data type, exchange, symbol); cleared beyond this.
_CHOICE_CACHE_LIMIT: Final = 65_536
_DATATYPE_OF: Final = {Trade: "trade", Quote: "quote", Book: "book"}
_LIMITED: Final = (("quote", "subscribe_update_limit_ms_quote"), ("book", "subscribe_update_limit_ms_book_snapshot"))


class Peer(Protocol):
    """What the session needs of its `gateway.wspeer.WebSocketPeer`."""

    outbox: Outbox

    def close(self, code: int = 1000, reason: str = "") -> None: ...


class CoinApiEndpoint:
    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.mapper = SymbolMapper(ExchangeMap(ctx.config.endpoints.coinapi.exchange_map))
        self.frames = CoinApiFrames(self.mapper)
        self._codecs: dict[tuple[str, ...], CoinApiCodec] = {}

    def serves_websocket(self, path: str) -> bool:
        return serves_path(path)

    def open_session(self, peer: Peer, request: HttpRequest) -> CoinApiSession | HttpResponse:
        # A refused key is CoinAPI's `error` after the first message, not an HTTP refusal.
        return CoinApiSession(self, peer, upgrade_key(request))

    async def http(self, request: HttpRequest) -> HttpResponse | None:
        return None

    def codec(self, book_kinds: tuple[str, ...]) -> CoinApiCodec:
        """The codec shared by every client whose book data types are `book_kinds` under one filter."""
        codec = self._codecs.get(book_kinds)
        if codec is None:
            codec = self._codecs[book_kinds] = CoinApiCodec(self.frames, book_kinds)
        return codec


class CoinApiSession:
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
        self.hub: Hub = endpoint.ctx.hub
        self.upgrade_key = key
        self.codec: CoinApiCodec = endpoint.codec(())
        self.scope = Scope()
        self.keys: frozenset[StreamKey] = frozenset()
        self._clock, self._wall_ns = clock, wall_ns
        self._authed = False
        self._closed = False
        self._choices: dict[tuple[str, str, str], bool | tuple[str, ...]] = {}
        self._intervals: dict[str, float] = {}  # hub data type → update limit (s)
        self._throttle = Throttle()
        self._heartbeat = False
        self._last_sent = 0.0  # when something was last queued for the client (kept while heartbeats are on)
        self._wake = trio.Event()

    # ----- client messages ----------------------------------------------------------------

    def on_message(self, message: str | bytes) -> None:
        with self.hub.batch():  # one re-plan for all the streams this changes
            self._on_message(message)

    def _on_message(self, message: str | bytes) -> None:
        if self._closed:
            return
        try:
            request = wire.decode_client(message)
        except (wire.UnknownMessage, wire.MalformedFrame):
            self._fail(INVALID_MESSAGE)
            return
        problem = self._key_problem(request) or validate_request(request) or self._unavailable(request)
        if problem is not None:
            self._fail(problem)
            return
        self._apply(request)

    def _key_problem(self, request: wire.ClientMessage) -> str | None:
        if self._authed:
            return None
        keys = [key for key in (self.upgrade_key, request.apikey) if key]
        key_ok = self.endpoint.ctx.key_ok
        if not (any(key_ok(key) for key in keys) if keys else key_ok(None)):
            return INVALID_API_KEY
        self._authed = True
        return None

    def _unavailable(self, request: wire.ClientMessage) -> str | None:
        if isinstance(request, wire.Unsubscribe):
            return None
        for data_type in request.subscribe_data_type or ():
            problem = refusal(data_type, self.hub.refusal)
            if problem is not None:
                return problem
        return None

    def _apply(self, request: wire.ClientMessage) -> None:
        was_on = self._heartbeat
        self.scope = self.scope.apply(request)
        self._heartbeat = self.scope.heartbeat
        if self._heartbeat and not was_on:
            self._last_sent = self._clock()  # silence counts from the request
        self._rescope()
        self._set_limits(request)
        self._wake.set()

    def _set_limits(self, request: wire.ClientMessage) -> None:
        """`hello` sets (or clears) the limits, `subscribe` sets those it names."""
        if isinstance(request, wire.Unsubscribe):
            return
        for datatype, field in _LIMITED:
            value = getattr(request, field)
            if value is None and isinstance(request, wire.Subscribe):
                continue
            interval = value / 1000 if value is not None and value > 0 else None
            if interval != self._intervals.get(datatype):
                self._send_held(self._throttle.drop(lambda key, dt=datatype: key[0] == dt))
                if interval is None:
                    self._intervals.pop(datatype, None)
                else:
                    self._intervals[datatype] = interval

    def _rescope(self) -> None:
        """Re-pick the codec, then move the hub subscriptions to the scope's covering keys
        (new ones first, so a stream kept under another key is never released upstream)."""
        self._choices = {}
        self.codec = self._pick_codec()
        self._throttle.drop(lambda key: not self._choice(key))  # held frames nobody wants now
        keys = covering_keys(self.scope, self.endpoint.mapper)
        for key in keys - self.keys:
            self.hub.subscribe(self, key)
        for key in self.keys - keys:
            self.hub.unsubscribe(self, key)
        self.keys = keys

    def _pick_codec(self) -> CoinApiCodec:
        kinds = tuple(kind for kind in BOOK_KINDS if kind in self.scope.filters)
        filters = [self.scope.filters[kind] for kind in kinds]
        if all(selection == filters[0] for selection in filters[1:]):
            return self.endpoint.codec(kinds)
        return ScopedCodec(self.endpoint.frames, self._book_kinds)

    def _fail(self, text: str) -> None:
        """CoinAPI errors are terminal: the error frame, then the close."""
        self.outbox.put_control(control_frame(wire.Error(message=text)))
        self.peer.close(ERROR_CLOSE_CODE, text)
        self._release()

    # ----- what the hub asks --------------------------------------------------------------

    def accepts(self, event: Event) -> bool:
        """Whether this client gets `event` now. Runs once per event per client on the hub's
        publish path: one memo lookup per (data type, exchange, symbol) in the common case."""
        datatype = _DATATYPE_OF.get(event.__class__)
        if datatype is None:
            return False
        key = (datatype, event.exchange, event.symbol)  # type: ignore[union-attr]
        choice = self._choices.get(key)
        if choice is None:
            choice = self._choice(key)
        if not choice:
            return False
        if choice is not True and not producible(event, choice):  # type: ignore[arg-type]
            return False
        if self._intervals:
            interval = self._intervals.get(datatype)
            if interval is not None and not self._throttle.admit(key, interval, self._clock()):
                self._hold(key, event)
                return False
        if self._heartbeat:
            self._last_sent = self._clock()
        return True

    def _choice(self, key: tuple) -> bool | tuple[str, ...]:
        """True/False for trades and quotes; for books, the book data types wanted (maybe none)."""
        choice = self._choices.get(key)
        if choice is None:
            datatype, exchange, symbol = key
            symbol_id = self.endpoint.frames.symbol_id(exchange, symbol)
            if symbol_id is None:
                choice = False
            elif datatype == "book":
                choice = tuple(kind for kind in BOOK_KINDS if self.scope.wants(kind, symbol_id))
            else:
                choice = self.scope.wants(datatype, symbol_id)
            if len(self._choices) >= _CHOICE_CACHE_LIMIT:
                self._choices.clear()
            self._choices[key] = choice
        return choice

    def _book_kinds(self, event: Book) -> tuple[str, ...]:
        choice = self._choice(("book", event.exchange, event.symbol))
        return choice if isinstance(choice, tuple) else ()

    def _hold(self, key: tuple, event: Event) -> None:
        data = self.codec.frame(event)  # numbered now, like every other client's copy
        if data is not None and self._throttle.hold(key, data):
            self._wake.set()

    def gap_frames(self, dropped: list[DroppedWindow]) -> list[bytes]:
        return []  # CoinAPI has no gap message: the jump in `sequence` is the signal

    def goodbye_frames(self) -> list[bytes]:
        if self.outbox.closed:
            return []
        before = format_iso_ns(self._wall_ns() + RECONNECT_WITHIN_SECONDS * NS_PER_S)
        return [control_frame(wire.Reconnect(within_seconds=RECONNECT_WITHIN_SECONDS, before_time=before))]

    def on_close(self) -> None:
        with self.hub.batch():  # one re-plan for all the streams this changes
            self._on_close()

    def _on_close(self) -> None:
        self._release()

    def _release(self) -> None:
        self._closed = True
        for key in self.keys:
            self.hub.unsubscribe(self, key)
        self.keys = frozenset()
        self._wake.set()

    # ----- timers -------------------------------------------------------------------------

    async def background(self) -> None:
        """Heartbeats and held (rate-limited) frames, each at its exact time."""
        while not (self._closed or self.outbox.closed):
            self._wake = wake = trio.Event()
            now = self._clock()
            self._send_held(self._throttle.release(now))
            release = self._throttle.next_release()
            deadline = math.inf if release is None else release
            if self._heartbeat:
                if now >= self._last_sent + HEARTBEAT_AFTER:
                    self.outbox.put_control(HEARTBEAT_FRAME)
                    self._last_sent = now
                deadline = min(deadline, self._last_sent + HEARTBEAT_AFTER)
            with trio.move_on_at(deadline):
                await wake.wait()

    def _send_held(self, held: list[tuple[tuple, bytes]]) -> None:
        if not held or self.outbox.closed:
            return
        for key, data in held:
            self.outbox.put_latest(key, data)
        if self._heartbeat:
            self._last_sent = self._clock()
