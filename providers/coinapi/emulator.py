"""A protocol-faithful stand-in for the CoinAPI Market Data WebSocket V1 server.

Owns: the server side of the protocol (paths, the five ways to pass a key, hello/subscribe/
unsubscribe scope, the error frames that end a connection, the hello rate limit, heartbeats) and
the scripted faults of `providers.common.emulator`. Frames come from the shared seeded `Market`
through `frames.Feed`, so runs are deterministic and overlapping connections see the same trades.
Must never: trust the client (every message is validated), or block one connection on another.

One `handle_stream(stream)` serves a real socket (`serve`) and an in-memory stream
(`providers.common.transport.memory_connector`) alike. Times come from `trio.current_time()`
(so `autojump_clock` drives it) and the wall clock `clock_ns` (injectable for exact tests).

Choices where CoinAPI documents no behaviour: an unknown path is refused with HTTP 404; texts for
malformed JSON, unknown message types and the rate limit are ours; the first message's key and the
upgrade's key must both be acceptable when both are given (`Authorization: Bearer <key>` counts as
`Authorization: <key>`); any printable key of at most 128 characters is "well-formed";
`exrate`/`asset`/`exchange`/`symbol`/`book_l3` are accepted but produce nothing;
`subscribe_update_limit_ms_*` are accepted and ignored; the server does not ping clients.
"""

from __future__ import annotations

import math
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import msgspec
import trio
from trio_websocket import ConnectionClosed, Endpoint, WebSocketConnection, WebSocketRequest, wrap_server_stream

from providers.coinapi import frames, wire
from providers.coinapi.filters import INVALID_API_KEY, INVALID_MESSAGE, Scope, validate_request
from providers.coinapi.plan import HelloLimiter
from providers.coinapi.symbols import SymbolMapper
from providers.common.emulator import EmulatorStats, FaultQueue, FaultScript, serve_tcp
from providers.common.market import DEFAULT_INSTRUMENTS, Instrument, Market
from schemas.timeutil import NS_PER_S, format_iso_ns

INVALID_KEY: Final = INVALID_API_KEY
INVALID_JSON: Final = INVALID_MESSAGE
RATE_LIMITED: Final = "Too many hello/subscribe messages: at most 10 per 10 seconds."
HEARTBEAT_AFTER: Final = 1.0  # seconds of silence before a heartbeat
OHLCV_EVERY: Final = 5.0  # seconds between updates of an open OHLCV period
HANDSHAKE_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 2.0  # a peer that does not answer our close frame is cut off after this
_KEY: Final = re.compile(r"[\x21-\x7e]{1,128}")
_PATHS: Final = frozenset({"/", "/v1", "/v1/"})
_GARBAGE: Final = '{"type":"trade","price":'  # one frame that is not JSON


@dataclass
class ConnectionRecord:
    """What tests can read about one connection, open or closed."""

    id: int
    opened_at: float
    closed_at: float | None = None
    key_source: str | None = None  # header | authorization | query | path | None (hello only)
    messages: list[dict] = field(default_factory=list)  # client messages, decoded, in order


def _key_from_request(request: WebSocketRequest) -> tuple[str | None, str | None, bool]:
    """(key, where it came from, whether the path is one we serve)."""
    parts = urllib.parse.urlsplit(request.path)
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.headers}
    path, known = parts.path, parts.path in _PATHS
    for prefix in ("/APIKEY-", "/v1/APIKEY-"):
        if path.startswith(prefix):
            return path[len(prefix) :].rstrip("/"), "path", True
    if "x-coinapi-key" in headers:
        return headers["x-coinapi-key"], "header", known
    if "authorization" in headers:
        return headers["authorization"].removeprefix("Bearer "), "authorization", known
    query = urllib.parse.parse_qs(parts.query).get("apikey")
    return (query[0], "query", known) if query else (None, None, known)


def _remote_ip(request: WebSocketRequest) -> str:
    """The rate limit is per IP; in-memory streams all count as one local client."""
    remote = request.remote
    return str(remote.address) if isinstance(remote, Endpoint) else "memory"


class CoinApiEmulator:
    def __init__(
        self,
        *,
        instruments: Iterable[Instrument] = DEFAULT_INSTRUMENTS,
        seed: int = 1,
        rate: float = 10.0,
        accepted_keys: set[str] | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        reconnect_within_seconds: int = 10,
    ) -> None:
        """`rate`: market steps per second per connection (0: as fast as possible, with a Trio
        checkpoint between steps). `instruments` may be changed later (`self.instruments`)."""
        self.instruments = list(instruments)
        self.seed = seed
        self.rate = rate
        self.accepted_keys = accepted_keys
        self.clock_ns = clock_ns
        self.reconnect_within_seconds = reconnect_within_seconds
        self.faults = FaultQueue()
        self.stats = EmulatorStats()
        self.connections: list[ConnectionRecord] = []
        self.scopes: dict[int, Scope] = {}  # connection id → scope, for open connections
        self.feed = frames.Feed(Market(seed))
        self.mapper = SymbolMapper()
        self._limiters: dict[str, HelloLimiter] = {}
        self._symbol_ids: dict[Instrument, str] = {}

    def symbol_id(self, instrument: Instrument) -> str:
        found = self._symbol_ids.get(instrument)
        if found is None:
            found = self._symbol_ids[instrument] = self.mapper.symbol_id(instrument.exchange, instrument.symbol)
        return found

    def key_ok(self, key: str) -> bool:
        if not _KEY.fullmatch(key):
            return False
        return self.accepted_keys is None or key in self.accepted_keys

    def limiter(self, ip: str) -> HelloLimiter:
        return self._limiters.setdefault(ip, HelloLimiter())

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen on host:port (0: ephemeral) and report the bound port through `task_status`."""
        await serve_tcp(self.handle_stream, host, port, task_status=task_status)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        try:
            async with trio.open_nursery() as nursery:
                request = None
                with trio.move_on_after(HANDSHAKE_TIMEOUT):
                    request = await wrap_server_stream(nursery, stream)
                if request is not None:
                    await self._handle_request(request, stream)
                nursery.cancel_scope.cancel()  # the library's reader task
        finally:
            await trio.aclose_forcefully(stream)

    async def _handle_request(self, request: WebSocketRequest, stream: trio.abc.Stream) -> None:
        key, source, known_path = _key_from_request(request)
        if not known_path:
            await request.reject(404, body=b"Not Found")
            return
        ws = await request.accept()
        record = ConnectionRecord(id=len(self.connections) + 1, opened_at=trio.current_time(), key_source=source)
        self.connections.append(record)
        self.stats.connections_opened += 1
        self.stats.connections_open += 1
        connection = _Connection(self, ws, stream, record, self.faults.next(), key, self.limiter(_remote_ip(request)))
        try:
            await connection.run()
        finally:
            record.closed_at = trio.current_time()
            self.stats.connections_open -= 1
            self.scopes.pop(record.id, None)
            self.stats.notify()


class _Connection:
    """One client connection: a receive task (client messages) and a send loop. Every frame goes
    out from the send loop, so an error frame is always the last frame, and nothing races a close."""

    def __init__(
        self,
        emulator: CoinApiEmulator,
        ws: WebSocketConnection,
        stream: trio.abc.Stream,
        record: ConnectionRecord,
        faults: FaultScript,
        key: str | None,
        limiter: HelloLimiter,
    ) -> None:
        self.emu, self.ws, self.stream, self.record = emulator, ws, stream, record
        self.faults, self.upgrade_key, self.limiter = faults, key, limiter
        self.scope = Scope()
        self.authed = False
        self.muted = False
        self.ending: tuple[str | None] | None = None  # set: finish (with this error text, if any)
        self.close_at = math.inf  # after a reconnect notice
        self.data_frames = 0
        self.garbage_sent = self.notice_sent = False
        self.last_sent = trio.current_time()
        self.changed = trio.Event()
        self.subscribed = False
        self.cursors: dict[Instrument, int] = {}
        self.sequences: dict[tuple[str, str], int] = {}
        self.candles: dict[tuple[str, str], frames.Candle] = {}
        self.candle_sent_at: dict[tuple[str, str], float] = {}
        self.books: dict[str, frames.BookState] = {}
        self.nursery: trio.Nursery | None = None

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._receive_loop)
            await self._send_loop()

    def _end(self) -> None:
        self.nursery.cancel_scope.cancel()

    # -------------------------------------------------------------------- client messages

    async def _receive_loop(self) -> None:
        while self.ending is None:
            try:
                raw = await self.ws.get_message()
            except ConnectionClosed:
                self._end()
                return
            await self._on_message(raw)

    async def _on_message(self, raw: str | bytes) -> None:
        try:
            message = wire.decode_client(raw)
        except (wire.UnknownMessage, wire.MalformedFrame):
            self._fail(INVALID_JSON)
            return
        as_dict = msgspec.json.decode(raw)
        self.emu.stats.client_messages.append(as_dict)
        self.record.messages.append(as_dict)
        problem = self._auth_problem(message) or validate_request(message) or self._rate_problem(message)
        if problem:
            self._fail(problem)
            return
        self._apply(message)

    def _auth_problem(self, message: wire.ClientMessage) -> str | None:
        if self.authed:
            return None
        keys = [k for k in (self.upgrade_key, message.apikey) if k is not None]
        if self.faults.reject_key or not keys or not all(self.emu.key_ok(k) for k in keys):
            return INVALID_KEY
        self.authed = True
        return None

    def _rate_problem(self, message: wire.ClientMessage) -> str | None:
        if isinstance(message, wire.Unsubscribe) or self.limiter.allow(trio.current_time()):
            return None
        return RATE_LIMITED

    def _apply(self, message: wire.ClientMessage) -> None:
        had_heartbeat = self.scope.heartbeat
        self.scope = self.scope.apply(message)
        self.emu.scopes[self.record.id] = self.scope
        self.emu.stats.notify()
        if self.scope.heartbeat and not had_heartbeat:
            self.last_sent = trio.current_time()  # silence is counted from the request
        self.subscribed = True
        self.changed.set()

    def _fail(self, text: str) -> None:
        """CoinAPI errors are terminal: the send loop sends the error frame, then closes."""
        self.ending = (text,)
        self.changed.set()

    async def _finish(self, error: str | None) -> None:
        try:
            if error is not None:
                await self._send(wire.encode_server(wire.Error(message=error)))
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self.ws.aclose()
        finally:
            self._end()

    # -------------------------------------------------------------------- market data

    async def _send_loop(self) -> None:
        next_step = None  # the market steps once the first request is in
        while True:
            now = trio.current_time()
            if now >= self.close_at:
                self.ending = self.ending or (None,)
            if self.ending is not None:
                await self._finish(self.ending[0])
                return
            if next_step is None and self.subscribed:
                next_step = now
            step_due = math.inf if next_step is None or self.muted else next_step
            heartbeat_due = self.last_sent + HEARTBEAT_AFTER if self.scope.heartbeat and not self.muted else math.inf
            if now >= step_due:
                sent = await self._step()
                next_step = self._next_step(next_step, now, sent)
            elif now >= heartbeat_due:
                await self._send(wire.encode_server(wire.Hearbeat()))
            else:
                await self._wait_until(min(step_due, heartbeat_due, self.close_at))

    def _next_step(self, previous: float, now: float, sent: int) -> float:
        if self.emu.rate > 0:
            return previous + 1.0 / self.emu.rate  # a fixed grid: no drift under load
        # As fast as possible while there is something to send; otherwise look again later.
        return now if sent else now + HEARTBEAT_AFTER

    async def _wait_until(self, deadline: float) -> None:
        """Sleep until `deadline`, or until the scope changes (which may change what is due)."""
        with trio.move_on_at(deadline):
            await self.changed.wait()
        self.changed = trio.Event()

    async def _step(self) -> int:
        """One market step for every subscribed instrument; returns the data frames sent."""
        now_ns = self.emu.clock_ns()
        batch: list[str] = []
        for instrument in list(self.emu.instruments):
            symbol_id = self.emu.symbol_id(instrument)
            types = [t for t in self.scope.data_types if self.scope.wants(t, symbol_id)]
            if not types:
                self.cursors.pop(instrument, None)  # a later subscription starts at the head again
                continue
            batch.extend(self._frames(instrument, symbol_id, sorted(types), now_ns))
        for frame in batch:
            await self._send_data(frame)
        if self.emu.rate <= 0:
            await trio.lowlevel.checkpoint()
        return len(batch)

    def _next_tick(self, instrument: Instrument, now_ns: int):
        index = self.cursors.get(instrument)
        tick, index = self.emu.feed.tick(instrument, self.emu.feed.head(instrument) if index is None else index, now_ns)
        self.cursors[instrument] = index + 1
        return tick

    def _sequence(self, kind: str, symbol_id: str) -> int:
        """Consecutive per (type, symbol_id) for the connection's life."""
        value = self.sequences[(kind, symbol_id)] = self.sequences.get((kind, symbol_id), 0) + 1
        return value

    def _frames(self, instrument: Instrument, symbol_id: str, types: list[str], now_ns: int) -> list[str]:
        tick = self._next_tick(instrument, now_ns)
        messages: list[wire.ServerMessage] = []
        for kind in types:
            if kind == "trade":
                messages.append(frames.trade(tick, symbol_id, self._sequence(kind, symbol_id), self.emu.seed))
            elif kind == "quote":
                messages.append(frames.quote(tick, symbol_id, self._sequence(kind, symbol_id)))
            elif kind in frames.TOP_N:
                messages.append(frames.book_top(kind, tick, symbol_id, self._sequence(kind, symbol_id)))
            elif kind == "book":
                update, self.books[symbol_id] = frames.book_update(
                    self.books.get(symbol_id), tick, symbol_id, self._sequence(kind, symbol_id)
                )
                messages.append(update)
            elif kind == "ohlcv":
                messages.extend(self._candles(instrument, symbol_id, tick))
        return [wire.encode_server(m) for m in messages]

    def _candles(self, instrument: Instrument, symbol_id: str, tick) -> list[wire.Ohlcv]:
        """A candle when first seen, when its period closes, and every 5 s while it is open."""
        out: list[wire.Ohlcv] = []
        now = trio.current_time()
        first = self.emu.feed.first_time_ns(instrument) or tick.time_ns
        for period in frames.PERIODS:
            if not self.scope.wants_period(period):
                continue
            key = (symbol_id, period)
            closed, current = frames.candle_update(self.candles.get(key), tick, period, first)
            self.candles[key] = current
            if closed is not None:
                out.append(closed.message(symbol_id, self._sequence("ohlcv", symbol_id)))
            last = self.candle_sent_at.get(key)
            if closed is not None or last is None or now - last >= OHLCV_EVERY:
                out.append(current.message(symbol_id, self._sequence("ohlcv", symbol_id)))
                self.candle_sent_at[key] = now
        return out

    # -------------------------------------------------------------------- sending and faults

    async def _send(self, frame: str) -> None:
        try:
            await self.ws.send_message(frame)
        except ConnectionClosed:
            self._end()
            await trio.lowlevel.checkpoint()  # raises Cancelled: this connection is over
            return
        self.emu.stats.frames_sent += 1
        self.last_sent = trio.current_time()

    async def _send_data(self, frame: str) -> None:
        """Send one data frame, applying this connection's fault script first."""
        script, count = self.faults, self.data_frames
        if script.drop_after_frames is not None and count >= script.drop_after_frames:
            await trio.aclose_forcefully(self.stream)  # abrupt: no close frame
            self._end()
            await trio.lowlevel.checkpoint()
        if self.muted or (script.mute_after_frames is not None and count >= script.mute_after_frames):
            self.muted = True
            return
        if script.garbage_after_frames is not None and count >= script.garbage_after_frames and not self.garbage_sent:
            self.garbage_sent = True
            await self._send(_GARBAGE)
        if script.shutdown_after_frames is not None and count >= script.shutdown_after_frames and not self.notice_sent:
            await self._send_reconnect_notice()
        await self._send(frame)
        self.data_frames += 1

    async def _send_reconnect_notice(self) -> None:
        self.notice_sent = True
        within = self.emu.reconnect_within_seconds
        before = format_iso_ns(self.emu.clock_ns() + within * NS_PER_S)
        await self._send(wire.encode_server(wire.Reconnect(within_seconds=within, before_time=before)))
        self.close_at = trio.current_time() + within


async def run_standalone(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    seed: int = 1,
    rate: float = 10.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the emulator until cancelled, printing where it listens (`mdgateway emulate coinapi`)."""
    emulator = CoinApiEmulator(seed=seed, rate=rate)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(emulator.serve, host, port)
        print(f"CoinAPI V1 emulator listening on ws://{host}:{bound}/v1/ (any well-formed API key)", flush=True)
        task_status.started(bound)
