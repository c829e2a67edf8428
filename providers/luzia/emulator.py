"""A protocol-faithful stand-in for Luzia's WebSocket API (`/v1/ws`): tests, benchmarks, offline use.

A Trio shell over `server.ServerConnection` (every protocol rule and its wording) and `feed` (the
seeded market as ticker messages), with the scripted faults of `providers.common.emulator`.
Owns: the sockets (trio-websocket's server side), which keys it accepts, its market's catalog, the
publishing loop, the faults, and the counters tests read.
Never: talks to the real service, decides a protocol question itself (`server` does), or reads the
wall clock for anything but frame timestamps (`clock`).

What the shell adds to `server`:
- `rate` is ticker frames per second per connection, round-robin over the instruments its
  channels cover (an exchange-wide channel covers every instrument of that exchange).
- A refused upgrade is answered with its HTTP status and a JSON body `{"message": ...}`.
- `stats.connections_opened` counts every incoming connection attempt, refused ones included; each
  takes the next fault script.
- `interleave` (tests, benchmarks): frames sent, in turn, before each ticker frame, on every
  connection; hostile ones at the full ticker rate, each followed by a good frame.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import trio
import trio.lowlevel
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, wrap_server_stream

from providers.common.emulator import EmulatorStats, FaultQueue, FaultScript, serve_tcp
from providers.common.market import DEFAULT_INSTRUMENTS, Instrument, Market
from providers.common.signal import Wakeup
from providers.luzia import feed, wire
from providers.luzia.grammar import Channel, TierLimits, tier_limits
from providers.luzia.server import Access, Output, ServerConnection, Terms

DEFAULT_RATE: Final = 10.0
DEFAULT_PATH: Final = "/v1/ws"
#: A client that opens TCP but never sends its upgrade request is dropped after this long.
HANDSHAKE_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 1.0
CANCELLED_CLOSE_PATIENCE: Final = 0.05
#: Client messages kept for tests to read: the embedded default runs this emulator for as long
#: as the gateway runs, and every ping would otherwise be kept forever.
MAX_RECORDED_MESSAGES: Final = 10_000
#: One frame that is not JSON, for the `garbage_after_frames` fault.
GARBAGE_FRAME: Final = '{"type":"ticker","exchange":"binance","symbol":'
_GONE: Final = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)


class MarketCatalog:
    """The channels of a market: an exchange it lists, or one of its instruments."""

    detail = None  # Luzia says only "Invalid channel: …"

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self._pairs = {(i.exchange, i.symbol) for i in instruments}
        self._exchanges = {exchange for exchange, _ in self._pairs}

    def has(self, channel: Channel) -> bool:
        if channel.symbol is None:
            return channel.exchange in self._exchanges
        return (channel.exchange, channel.symbol) in self._pairs


@dataclass(eq=False)
class _Client:
    conn: ServerConnection
    ws: WebSocketConnection
    stream: trio.abc.Stream
    script: FaultScript
    frames: int = 0
    muted: bool = False
    garbage_sent: bool = False
    changed: Wakeup = field(default_factory=Wakeup)  # its channels changed
    covered: list[Instrument] | None = None  # what its channels cover; None: recompute


class LuziaEmulator:
    def __init__(
        self,
        *,
        instruments: Iterable[Instrument] = DEFAULT_INSTRUMENTS,
        seed: int = 1,
        rate: float = DEFAULT_RATE,
        tier: str = "pro",
        limits: TierLimits | None = None,
        accepted_keys: set[str] | None = None,  # None: any key of Luzia's form
        announce: int | None = None,  # `maxSubscriptions` to claim (a server overstating its limit)
        path: str = DEFAULT_PATH,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.instruments = tuple(instruments)
        self.catalog = MarketCatalog(self.instruments)
        self.market = Market(seed=seed)
        self.rate, self.tier, self.path, self.announce = rate, tier, path, announce
        self.limits = limits or tier_limits(tier)
        self.accepted_keys = accepted_keys
        self.clock = clock
        self.paused: set[Instrument] = set()  # tests: these instruments publish nothing (a stalled feed)
        self.interleave: list[str] = []  # tests: one of these, in turn, before each ticker frame
        self.interleaved_sent = 0
        self.faults = FaultQueue()
        self.stats = EmulatorStats()
        self._clients: list[_Client] = []

    # ---- what tests read --------------------------------------------------------------------------

    def active_channels(self) -> Counter[str]:
        """Every subscription in force, across connections (a channel on two connections counts 2)."""
        return Counter(name for client in self._clients for name in client.conn.channels)

    def connection_channels(self) -> list[frozenset[str]]:
        """The subscriptions of each open connection, in the order they connected."""
        return [frozenset(client.conn.channels) for client in self._clients]

    async def inject(self, frame: str) -> None:
        """Send one raw frame on every open connection (tests: new message types, odd shapes)."""
        for client in list(self._clients):
            with contextlib.suppress(*_GONE):
                await client.ws.send_message(frame)

    # ---- serving ----------------------------------------------------------------------------------

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on host:port (0: ephemeral) and report the bound port once listening."""
        await serve_tcp(self.handle_stream, host, port, task_status=task_status)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection: a real socket or one end of a memory stream pair."""
        self.stats.connections_opened += 1
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._upgrade(nursery, stream, self.faults.next())
                finally:
                    nursery.cancel_scope.cancel()
        except* _GONE:
            pass  # the client went away: nothing to answer
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _upgrade(self, nursery: trio.Nursery, stream: trio.abc.Stream, script: FaultScript) -> None:
        request = None
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            request = await wrap_server_stream(nursery, stream)
        if request is None:
            return
        conn = self._connection(script)
        refusal = conn.upgrade(request.path, _authorization(request))
        if refusal is not None:
            body = msgspec.json.encode({"message": refusal.message})
            # A fresh header list each time: trio-websocket appends its content-length to it.
            await request.reject(refusal.status, extra_headers=[(b"content-type", b"application/json")], body=body)
            return
        ws = await request.accept()
        try:
            await self._session(conn, ws, stream, script)
        finally:
            await _close(ws, 1000, None)

    def _connection(self, script: FaultScript) -> ServerConnection:
        def key_ok(key: str | None) -> bool:
            return not script.reject_key and (self.accepted_keys is None or key in self.accepted_keys)

        terms = Terms(self.tier, self.limits, self.announce)
        return ServerConnection(terms, Access(key_ok, path=self.path), self.catalog)

    async def _session(self, conn: ServerConnection, ws: WebSocketConnection, stream: trio.abc.Stream, script: FaultScript) -> None:
        # `open` and joining `_clients` happen with no await between: the connection limit holds.
        opening = conn.open(connections=sum(1 for other in self._clients if other.conn.key == conn.key))
        if opening.close is not None:
            await self._answer(ws, opening)
            return
        client = _Client(conn, ws, stream, script)
        self._clients.append(client)
        self.stats.connections_open += 1
        try:
            await self._answer(ws, opening)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._publish, client, nursery.cancel_scope)
                await self._listen(client)
                nursery.cancel_scope.cancel()
        finally:
            conn.closed()
            self._clients.remove(client)
            self.stats.connections_open -= 1
            self.stats.notify()

    async def _answer(self, ws: WebSocketConnection, out: Output) -> None:
        """Send what the protocol said, then close if it said so."""
        for reply in out.replies:
            await ws.send_message(wire.encode(reply))
        if out.close is not None:
            await _close(ws, out.close.code, out.close.reason)

    # ---- client → server --------------------------------------------------------------------------

    async def _listen(self, client: _Client) -> None:
        while True:
            try:
                text = await client.ws.get_message()
            except ConnectionClosed:
                return
            self._record(text)
            if client.muted:
                continue  # a mute server reads but never answers
            out = client.conn.receive(text, self.clock())
            await self._answer(client.ws, out)
            if out.added or out.removed:
                client.covered = None
                client.changed.fire()
            self.stats.notify()

    def _record(self, text: str | bytes) -> None:
        try:
            message: Any = msgspec.json.decode(text)
        except (msgspec.DecodeError, RecursionError, ValueError):  # a hostile client's, unrecorded
            return
        if isinstance(message, dict):
            recorded = self.stats.client_messages
            if len(recorded) >= MAX_RECORDED_MESSAGES:
                del recorded[: MAX_RECORDED_MESSAGES // 10]  # the oldest, in one go (a list)
            recorded.append(message)

    # ---- server → client --------------------------------------------------------------------------

    def _covered(self, client: _Client) -> list[Instrument]:
        if client.covered is None:
            channels = client.conn.channels.values()
            client.covered = [i for i in self.instruments if any(c.covers(i.exchange, i.symbol) for c in channels)]
        return client.covered

    async def _publish(self, client: _Client, session_scope: trio.CancelScope) -> None:
        """Ticker frames at `rate`, round-robin over what the client's channels cover; faults on cue."""
        turn = 0
        try:
            while not await self._fault(client):
                if not self._covered(client):
                    await client.changed.wait()
                    continue
                if self.rate > 0:
                    await trio.sleep(1 / self.rate)
                else:
                    await trio.lowlevel.checkpoint()
                covered = self._covered(client)  # may have changed while we slept
                if covered:
                    turn += 1
                    await self._send_tick(client, covered[(turn - 1) % len(covered)])
        except ConnectionClosed:
            pass
        session_scope.cancel()

    async def _send_tick(self, client: _Client, instrument: Instrument) -> None:
        if instrument in self.paused:
            return
        now = self.clock()
        frame = wire.encode(feed.ticker_message(self.market.step(instrument, now), now))
        if self.interleave:
            await client.ws.send_message(self.interleave[self.interleaved_sent % len(self.interleave)])
            self.interleaved_sent += 1
        await client.ws.send_message(frame)
        client.frames += 1
        self.stats.frames_sent += 1

    async def _fault(self, client: _Client) -> bool:
        """Act on the client's fault script at its frame count; True when the connection is over."""
        script, frames = client.script, client.frames
        if script.drop_after_frames == frames:
            await client.stream.aclose()  # abrupt: no close frame
            return True
        if script.shutdown_after_frames == frames:
            await self._answer(client.ws, client.conn.shutdown())
            return True
        if script.mute_after_frames == frames:
            client.muted = True
            await trio.sleep_forever()
        if script.garbage_after_frames == frames and not client.garbage_sent:
            client.garbage_sent = True
            await client.ws.send_message(GARBAGE_FRAME)
        return False


def _authorization(request: WebSocketRequest) -> str | None:
    for name, value in request.headers:
        if name.lower() == b"authorization":
            return value.decode("latin-1")
    return None


async def _close(ws: WebSocketConnection, code: int, reason: str | None) -> None:
    """A close handshake, bounded and shielded: a client that never answers must not hang us.
    When we are being cancelled (the emulator stops), the reader that would take the reply is
    cancelled too: the close frame gets a moment to leave, and nobody waits for an answer."""
    cancelled = trio.current_effective_deadline() == -math.inf
    with trio.move_on_after(CANCELLED_CLOSE_PATIENCE if cancelled else CLOSE_TIMEOUT, shield=True):
        await ws.aclose(code, reason)


async def run_standalone(
    host: str = "127.0.0.1", port: int = 8765, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED, **options: Any
) -> None:
    """Serve the emulator until cancelled. Prints, and reports via `task_status`, the bound port;
    `options` go to `LuziaEmulator` (seed, rate, tier, ...)."""
    emulator = LuziaEmulator(**options)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(emulator.serve, host, port)
        print(
            f"Luzia emulator: ws://{host}:{bound}{emulator.path} (tier {emulator.tier}; "
            f"key: Authorization: Bearer lz_<anything>)",
            flush=True,
        )
        task_status.started(bound)
