"""A protocol-faithful stand-in for Luzia's WebSocket API (`/v1/ws`): tests, benchmarks, offline use.

Owns: Luzia's server side of the protocol (auth on the upgrade, `connected`, tier limits, one
answer per channel, `pong`, every documented error code in its situation), ticker frames in
Luzia's exact shape generated from the seeded `Market`, scripted faults, and counters.
Never: talks to the real service, or reads the wall clock for anything but frame timestamps.

Choices where Luzia's documentation is silent (the adapter handles exactly these):
- A missing or malformed `Authorization: Bearer lz_...` header is refused at the upgrade: HTTP 401
  with a JSON body `{"message": ...}`. A wrong path gets HTTP 404.
- A well-formed key that is refused (not in `accepted_keys`, the free tier, a `reject_key` fault)
  or over its connection limit: the upgrade is accepted, then one
  `{"type":"error","code":"CONNECTION_REJECTED","message":...}` and a close with code 1008. The
  message is "Invalid API key", "WebSocket access requires a Pro or Enterprise plan", or
  "Connection limit exceeded (max N for T tier)".
- Every channel of a subscribe gets exactly one answer, in order: `subscribed`, or an error
  `INVALID_CHANNEL` ("Invalid channel: <as sent>"; malformed, or no such instrument here) or
  `SUBSCRIPTION_LIMIT`. Answers echo the channel as the client spelled it. Subscribing twice is
  answered `subscribed` and counted once; unsubscribing what is not subscribed is answered
  `unsubscribed`.
- `SERVER_SHUTDOWN` is followed by a close with code 1001 (going away).
- `rate` is ticker frames per second per connection, round-robin over the instruments its
  channels cover (an exchange-wide channel covers every instrument of that exchange).
- `stats.connections_opened` counts every incoming connection attempt, refused ones included.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, wrap_server_stream

from providers.common.emulator import EmulatorStats, FaultQueue, FaultScript, serve_tcp
from providers.common.market import DEFAULT_INSTRUMENTS, Instrument, Market, Tick
from providers.luzia import wire
from providers.luzia.channels import Channel, ChannelError, parse_channel
from providers.luzia.planner import TierLimits, tier_limits
from schemas.timeutil import format_iso_ns

DEFAULT_RATE: Final = 10.0
DEFAULT_PATH: Final = "/v1/ws"
#: A client that opens TCP but never sends its upgrade request is dropped after this long.
HANDSHAKE_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 1.0
#: One frame that is not JSON, for the `garbage_after_frames` fault.
GARBAGE_FRAME: Final = '{"type":"ticker","exchange":"binance","symbol":'
_KEY: Final = re.compile(r"lz_[A-Za-z0-9_\-]{1,128}")
_GONE: Final = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)
_PERCENT: Final = Decimal("0.001")


async def _close(ws: WebSocketConnection, code: int, reason: str | None) -> None:
    """A close handshake, bounded and shielded: a client that never answers must not hang us."""
    with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
        await ws.aclose(code, reason)


def _error(code: str, message: str) -> str:
    return wire.encode(wire.Error(code=code, message=message))


def ticker_message(tick: Tick, sent_ns: int) -> wire.Ticker:
    """A market step as Luzia's ticker frame: `data` is the REST ticker, times ISO with ms."""
    inst = tick.instrument
    change = tick.price - tick.open_24h
    data = wire.TickerData(
        symbol=inst.symbol,
        exchange=inst.exchange,
        last=tick.price,
        bid=tick.bid,
        ask=tick.ask,
        high=tick.high_24h,
        low=tick.low_24h,
        open=tick.open_24h,
        close=tick.price,
        volume=tick.volume_24h,
        quoteVolume=tick.quote_volume_24h,
        change=change,
        changePercent=_percent(change, tick.open_24h),
        timestamp=format_iso_ns(tick.time_ns, 3),
    )
    return wire.Ticker(exchange=inst.exchange, symbol=inst.symbol, data=data, timestamp=format_iso_ns(sent_ns, 3))


def _percent(change: Decimal, base: Decimal) -> Decimal:
    percent = (change * 100 / base).quantize(_PERCENT)
    return abs(percent) if not percent else percent  # no "-0.000" on the wire


def bearer_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The `lz_...` key of an `Authorization: Bearer` header, or None if missing or malformed."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and _KEY.fullmatch(key.strip()):
                return key.strip()
            return None
    return None


@dataclass(eq=False)
class _Client:
    key: str
    ws: WebSocketConnection
    stream: trio.abc.Stream
    script: FaultScript
    channels: dict[str, Channel] = field(default_factory=dict)  # canonical name → parsed
    frames: int = 0
    muted: bool = False
    garbage_sent: bool = False
    changed: trio.Event = field(default_factory=trio.Event)  # set when `channels` changed
    covered: list[Instrument] | None = None  # what `channels` cover; None: recompute


class LuziaEmulator:
    def __init__(
        self,
        *,
        instruments: Iterable[Instrument] = DEFAULT_INSTRUMENTS,
        seed: int = 1,
        rate: float = DEFAULT_RATE,
        tier: str = "pro",
        limits: TierLimits | None = None,
        accepted_keys: set[str] | None = None,
        path: str = DEFAULT_PATH,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.instruments = tuple(instruments)
        self.market = Market(seed=seed)
        self.rate, self.tier, self.path = rate, tier, path
        self.limits = limits or tier_limits(tier)
        self.accepted_keys = accepted_keys
        self.clock = clock
        self.paused: set[Instrument] = set()  # tests: these instruments publish nothing (a stalled feed)
        self.faults = FaultQueue()
        self.stats = EmulatorStats()
        self._clients: list[_Client] = []

    # ---- what tests read --------------------------------------------------------------------------

    def active_channels(self) -> Counter[str]:
        """Every subscription in force, across connections (a channel on two connections counts 2)."""
        return Counter(name for client in self._clients for name in client.channels)

    def connection_channels(self) -> list[frozenset[str]]:
        """The subscriptions of each open connection, in the order they connected."""
        return [frozenset(client.channels) for client in self._clients]

    async def inject(self, frame: str) -> None:
        """Send one raw frame on every open connection (tests: new message types, odd shapes)."""
        for client in list(self._clients):
            try:
                await client.ws.send_message(frame)
            except _GONE:
                pass

    # ---- serving ----------------------------------------------------------------------------------

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen on host:port (0: ephemeral) and report the bound port once listening."""
        await serve_tcp(self.handle_stream, host, port, task_status=task_status)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection: a real socket or one end of a memory stream pair."""
        self.stats.connections_opened += 1
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._upgrade(nursery, stream)
                finally:
                    nursery.cancel_scope.cancel()
        except* _GONE:
            pass  # the client went away: nothing to answer
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _upgrade(self, nursery: trio.Nursery, stream: trio.abc.Stream) -> None:
        request = None
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            request = await wrap_server_stream(nursery, stream)
        if request is None or not await self._authorized(request):
            return
        key = bearer_key(request.headers)
        ws = await request.accept()
        try:
            await self._session(_Client(key, ws, stream, self.faults.next()))
        finally:
            await _close(ws, 1000, None)

    async def _authorized(self, request: WebSocketRequest) -> bool:
        """Refuse at the upgrade what is not even a request for this API with a key."""
        if request.path.partition("?")[0] != self.path:
            await request.reject(404, body=b'{"message":"Not found"}')
            return False
        if bearer_key(request.headers) is None:
            body = b'{"message":"Missing or invalid API key"}'
            await request.reject(401, extra_headers=[(b"content-type", b"application/json")], body=body)
            return False
        return True

    def _refusal(self, client: _Client) -> str | None:
        if client.script.reject_key or (self.accepted_keys is not None and client.key not in self.accepted_keys):
            return "Invalid API key"
        if self.limits.connections < 1:
            return "WebSocket access requires a Pro or Enterprise plan"
        if sum(1 for other in self._clients if other.key == client.key) >= self.limits.connections:
            return f"Connection limit exceeded (max {self.limits.connections} for {self.tier} tier)"
        return None

    async def _session(self, client: _Client) -> None:
        refusal = self._refusal(client)
        if refusal is not None:
            await client.ws.send_message(_error("CONNECTION_REJECTED", refusal))
            await _close(client.ws, 1008, "connection rejected")
            return
        self._clients.append(client)
        self.stats.connections_open += 1
        try:
            await client.ws.send_message(self._connected())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._publish, client, nursery.cancel_scope)
                await self._listen(client)
                nursery.cancel_scope.cancel()
        finally:
            self._clients.remove(client)
            self.stats.connections_open -= 1
            self.stats.notify()

    def _connected(self) -> str:
        limits = wire.Limits(maxSubscriptions=self.limits.subscriptions)
        return wire.encode(wire.Connected(message="Connected to Luzia WebSocket API", tier=self.tier, limits=limits))

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
            for reply in self._answer(client, text):
                await client.ws.send_message(reply)

    def _record(self, text: str | bytes) -> None:
        try:
            message = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return
        if isinstance(message, dict):
            self.stats.client_messages.append(message)

    def _answer(self, client: _Client, text: str | bytes) -> list[str]:
        """The frames one client message gets in reply, in order."""
        try:
            message = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return [_error("INVALID_JSON", "Invalid JSON")]
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return [_error("INVALID_REQUEST", "Missing required field: type")]
        kind = message["type"]
        if kind == "ping":
            return [wire.encode(wire.Pong(timestamp=format_iso_ns(self.clock(), 3)))]
        if kind not in ("subscribe", "unsubscribe"):
            return [_error("UNKNOWN_TYPE", f"Unknown message type: {kind}")]
        channels = message.get("channels")
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            return [_error("INVALID_REQUEST", "Missing required field: channels")]
        one = self._subscribe_one if kind == "subscribe" else self._unsubscribe_one
        replies = [one(client, channel) for channel in channels]
        client.covered = None
        client.changed.set()
        self.stats.notify()
        return replies

    def _subscribe_one(self, client: _Client, raw: str) -> str:
        channel = self._lookup(raw)
        if channel is None:
            return _error("INVALID_CHANNEL", f"Invalid channel: {raw}")
        name = str(channel)
        if name not in client.channels:
            if len(client.channels) >= self.limits.subscriptions:
                limit = self.limits.subscriptions
                return _error("SUBSCRIPTION_LIMIT", f"Subscription limit exceeded (max {limit} for {self.tier} tier)")
            client.channels[name] = channel
        return wire.encode(wire.Subscribed(channel=raw))

    def _unsubscribe_one(self, client: _Client, raw: str) -> str:
        channel = self._lookup(raw)
        if channel is None:
            return _error("INVALID_CHANNEL", f"Invalid channel: {raw}")
        client.channels.pop(str(channel), None)
        return wire.encode(wire.Unsubscribed(channel=raw))

    def _lookup(self, raw: str) -> Channel | None:
        """The channel, if it is well-formed and this market has what it names."""
        try:
            channel = parse_channel(raw)
        except ChannelError:
            return None
        if any(channel.exchange == i.exchange and channel.symbol in (None, i.symbol) for i in self.instruments):
            return channel
        return None

    # ---- server → client --------------------------------------------------------------------------

    def _covered(self, client: _Client) -> list[Instrument]:
        if client.covered is None:
            channels = client.channels.values()
            client.covered = [
                i for i in self.instruments if any(c.exchange == i.exchange and c.symbol in (None, i.symbol) for c in channels)
            ]
        return client.covered

    async def _publish(self, client: _Client, session_scope: trio.CancelScope) -> None:
        """Ticker frames at `rate`, round-robin over what the client's channels cover; faults on cue."""
        turn = 0
        try:
            while not await self._fault(client):
                covered = self._covered(client)
                if not covered:
                    client.changed = trio.Event()
                    await client.changed.wait()
                    continue
                await (trio.sleep(1 / self.rate) if self.rate > 0 else trio.lowlevel.checkpoint())
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
        frame = wire.encode(ticker_message(self.market.step(instrument, now), now))
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
            await client.ws.send_message(_error("SERVER_SHUTDOWN", "Server is shutting down, reconnect shortly"))
            await _close(client.ws, 1001, "server shutting down")
            return True
        if script.mute_after_frames == frames:
            client.muted = True
            await trio.sleep_forever()
        if script.garbage_after_frames == frames and not client.garbage_sent:
            client.garbage_sent = True
            await client.ws.send_message(GARBAGE_FRAME)
        return False


async def run_standalone(
    host: str = "127.0.0.1", port: int = 8765, *, task_status=trio.TASK_STATUS_IGNORED, **options
) -> None:
    """Serve the emulator until cancelled (the CLI's `mdgateway emulate luzia`). Prints, and reports
    via `task_status`, the bound port; `options` go to `LuziaEmulator` (seed, rate, tier, ...)."""
    emulator = LuziaEmulator(**options)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(emulator.serve, host, port)
        print(
            f"Luzia emulator: ws://{host}:{bound}{emulator.path} (tier {emulator.tier}; "
            f"key: Authorization: Bearer lz_<anything>)",
            flush=True,
        )
        task_status.started(bound)
