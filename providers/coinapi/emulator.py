"""A protocol-faithful stand-in for the CoinAPI Market Data WebSocket V1 server: a Trio shell over
`server.ServerConnection` (the protocol) and `feed.ConnectionFeed` (the emulated market).

Owns: the sockets (trio-websocket's server side), the per-connection tasks and timing (market
steps at `rate`, heartbeats when due, the close after an error or a notice's deadline), the
scripted faults of `providers.common.emulator`, and what tests read (`connections`, `scopes`,
`stats`). Every protocol decision (paths, keys, validation, error texts, the hello rate limit,
the scope, heartbeat timing, sequences) is the server module's.
Must never: trust the client (every message goes through the state machine), or block one
connection on another.

One `handle_stream(stream)` serves a real socket (`serve`) and an in-memory stream
(`tests.support.memory.memory_connector`) alike. Times come from `trio.current_time()` (so
`autojump_clock` drives it) and the wall clock `clock_ns` (injectable for exact tests).

The emulator's own rules (where the real service documents none): an unknown path is refused with
HTTP 404; the upgrade's key and the first message's must both be acceptable when both are given
(`server.every_given_key`); any printable key of at most 128 characters is "well-formed";
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
from typing import Any, Final

import msgspec
import trio
from trio_websocket import ConnectionClosed, Endpoint, WebSocketConnection, WebSocketRequest, wrap_server_stream

from providers.coinapi import feed, server, wire
from providers.common.emulator import EmulatorStats, FaultQueue, FaultScript, serve_tcp
from providers.common.market import DEFAULT_INSTRUMENTS, Instrument, Market

HANDSHAKE_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 2.0  # a peer that does not answer our close frame is cut off after this
_KEY: Final = re.compile(r"[\x21-\x7e]{1,128}")
_GARBAGE: Final = '{"type":"trade","price":'  # one frame that is not JSON
#: What tests can read is bounded too (the embedded default runs for days): connection records
#: kept, oldest dropped first, and client messages kept per record and in `stats`.
MAX_RECORDS: Final = 1_000
MAX_RECORDED_MESSAGES: Final = 1_000
#: Hello limiters kept, one per client IP (the window is seconds: forgetting one is harmless).
MAX_LIMITERS: Final = 1_024


@dataclass
class ConnectionRecord:
    """What tests can read about one connection, open or closed."""

    id: int
    opened_at: float
    closed_at: float | None = None
    key_source: str | None = None  # header | authorization | query | path | None (hello only)
    messages: list[dict[str, Any]] = field(default_factory=list)  # client messages, decoded, in order


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
        self.scopes: dict[int, server.Scope] = {}  # connection id → scope, for open connections
        self.feed = feed.Feed(Market(seed))
        self._limiters: dict[str, server.HelloLimiter] = {}

    def key_ok(self, key: str) -> bool:
        if not _KEY.fullmatch(key):
            return False
        return self.accepted_keys is None or key in self.accepted_keys

    def limiter(self, ip: str) -> server.HelloLimiter:
        if ip not in self._limiters and len(self._limiters) >= MAX_LIMITERS:
            self._limiters.clear()
        return self._limiters.setdefault(ip, server.HelloLimiter())

    def rules(self, faults: FaultScript, ip: str) -> server.Rules:
        """The real service's rules, but for a scripted refusal of this connection's key."""
        acceptable = (lambda key: False) if faults.reject_key else self.key_ok
        return server.Rules(key_check=server.every_given_key(acceptable), limiter=self.limiter(ip))

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
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
        parts = urllib.parse.urlsplit(request.path)
        if not server.serves_path(parts.path):
            await request.reject(404, body=b"Not Found")
            return
        query = {name: values[0] for name, values in urllib.parse.parse_qs(parts.query).items()}
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.headers}
        found = server.upgrade_key(parts.path, query, headers)
        ws = await request.accept()
        now = trio.current_time()
        record = ConnectionRecord(id=self.stats.connections_opened + 1, opened_at=now, key_source=found.source if found else None)
        if len(self.connections) >= MAX_RECORDS:
            del self.connections[0]
        self.connections.append(record)
        self.stats.connections_opened += 1
        self.stats.connections_open += 1
        faults = self.faults.next()
        protocol = server.ServerConnection(self.rules(faults, _remote_ip(request)), found.key if found else None, now)
        try:
            await _Connection(self, ws, stream, record, faults, protocol).run()
        finally:
            record.closed_at = trio.current_time()
            self.stats.connections_open -= 1
            self.scopes.pop(record.id, None)
            self.stats.notify()


class _Connection:
    """One client connection: a receive task (client messages into the state machine) and a send
    loop. Every frame goes out from the send loop, so an error frame is always the last frame,
    and nothing races a close."""

    def __init__(
        self,
        emulator: CoinApiEmulator,
        ws: WebSocketConnection,
        stream: trio.abc.Stream,
        record: ConnectionRecord,
        faults: FaultScript,
        protocol: server.ServerConnection,
    ) -> None:
        self.emu, self.ws, self.stream, self.record = emulator, ws, stream, record
        self.faults, self.protocol = faults, protocol
        self.market = feed.ConnectionFeed(emulator.feed, emulator.seed)
        self.error: wire.Error | None = None  # the last frame, once refused
        self.muted = False
        self.data_frames = 0
        self.garbage_sent = self.notice_sent = False
        self.changed = trio.Event()
        self.nursery: trio.Nursery | None = None

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._receive_loop)
            await self._send_loop()

    def _end(self) -> None:
        assert self.nursery is not None
        self.nursery.cancel_scope.cancel()

    # -------------------------------------------------------------------- client messages

    async def _receive_loop(self) -> None:
        while self.protocol.state is not server.State.CLOSING:
            try:
                raw = await self.ws.get_message()
            except ConnectionClosed:
                self._end()
                return
            self._on_message(raw)

    def _on_message(self, raw: str | bytes) -> None:
        outcome = self.protocol.receive(raw, trio.current_time())
        if outcome is not None and outcome.request is not None:
            decoded = msgspec.json.decode(raw)
            for kept in (self.emu.stats.client_messages, self.record.messages):
                if len(kept) < MAX_RECORDED_MESSAGES:
                    kept.append(decoded)
        if isinstance(outcome, server.Refused):
            self.error = outcome.error
        elif isinstance(outcome, server.Accepted):
            self.emu.scopes[self.record.id] = outcome.scope
            self.emu.stats.notify()
        self.changed.set()

    # -------------------------------------------------------------------- the send loop

    async def _send_loop(self) -> None:
        next_step = math.inf  # the market steps once the first request is in
        while True:
            now = trio.current_time()
            if self.protocol.due(now):
                await self._finish()
                return
            if next_step == math.inf and self.protocol.state is server.State.OPEN:
                next_step = now
            step_due = math.inf if self.muted else next_step
            heartbeat_due = math.inf if self.muted else self.protocol.heartbeat_at()
            if now >= step_due:
                sent = await self._step(now)
                next_step = self._next_step(next_step, now, sent)
            elif now >= heartbeat_due:
                heartbeat = self.protocol.heartbeat(now)
                if heartbeat is not None:
                    await self._send(wire.encode_server(heartbeat))
            else:
                await self._wait_until(min(step_due, heartbeat_due, self.protocol.close_at))

    def _next_step(self, previous: float, now: float, sent: int) -> float:
        if self.emu.rate > 0:
            return previous + 1.0 / self.emu.rate  # a fixed grid: no drift under load
        # As fast as possible while there is something to send; otherwise look again later.
        return now if sent else now + server.HEARTBEAT_AFTER

    async def _wait_until(self, deadline: float) -> None:
        """Sleep until `deadline`, or until a client message changed what may be due."""
        with trio.move_on_at(deadline):
            await self.changed.wait()
        self.changed = trio.Event()

    async def _step(self, now: float) -> int:
        """One market step for every subscribed instrument; returns the data frames sent."""
        messages = self.market.step(list(self.emu.instruments), self.protocol.scope, now, self.emu.clock_ns())
        for message in messages:
            await self._send_data(wire.encode_server(message))
        if self.emu.rate <= 0:
            await trio.lowlevel.checkpoint()
        return len(messages)

    async def _finish(self) -> None:
        """CoinAPI errors are terminal: the error frame (if any), then the close."""
        try:
            if self.error is not None:
                await self._send(wire.encode_server(self.error))
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self.ws.aclose()
        finally:
            self._end()

    # -------------------------------------------------------------------- sending and faults

    async def _send(self, frame: str) -> None:
        try:
            await self.ws.send_message(frame)
        except ConnectionClosed:
            self._end()
            await trio.lowlevel.checkpoint()  # raises Cancelled: this connection is over
            return
        self.emu.stats.frames_sent += 1
        self.protocol.sent(trio.current_time())

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
            self.notice_sent = True
            notice = self.protocol.notice(trio.current_time(), self.emu.clock_ns(), self.emu.reconnect_within_seconds)
            await self._send(wire.encode_server(notice))
        await self._send(frame)
        self.data_frames += 1


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
