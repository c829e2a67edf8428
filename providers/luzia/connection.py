"""One upstream Luzia connection: over a `providers.common.transport.Transport`, the wait for
`connected`, the subscriptions sent on it, the heartbeat, and reading every frame.

Owns: one connection's life inside `open_transport` (which maps library errors and closes
politely), decoding each frame once, the frame counters, the protocol's own answers (`pong`,
`subscribed` / `unsubscribed` into its `client.Subscriptions`), the connection-level errors that
end it (`client.session_error`), and the two liveness timers that are per connection: the pong
timeout and the data-idle deadline.
Never: decides what to subscribe (the adapter's `client.Planner` does), emits events (the adapter
does), retries (`reconnect_forever` does), or puts the API key into an exception message.

A frame is good (it decoded, and a ticker normalized) or malformed (counted, skipped). Only good
frames are liveness: they alone feed the idle deadline and `last_frame_at`, so a connection that
sends nothing but garbage goes "mute" like a silent one. `MALFORMED_RUN_LIMIT` malformed frames in
a row on this connection (the run is per connection: a healthy one beside it must not hide it)
end it with a `ProviderError`, and the reconnect loop replaces it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Set
from typing import Final, NoReturn

import trio

from providers.common.counters import MALFORMED_RUN_LIMIT, FrameCounters, MalformedRun
from providers.common.errors import MalformedFrame, ProviderError, UnknownMessage
from providers.common.liveness import IdleDeadline
from providers.common.transport import Connector, Headers, Transport, open_transport
from providers.luzia import wire
from providers.luzia.client import Subscriptions, session_error
from providers.luzia.grammar import ChannelError, canonical_channel

log = logging.getLogger(__name__)

_PING_FRAME: Final = wire.encode(wire.Ping())

OnTicker = Callable[[wire.Ticker, int], bool]  # the message, its receive time (ns) → usable?
OnError = Callable[["LuziaConnection", wire.Error], None]  # an error that does not end the session
Serve = Callable[["LuziaConnection", wire.Connected], Awaitable[None]]


class LuziaConnection:
    """One attempt at one connection: made before connecting, so that its state is readable
    from the first moment (health, and whether there was anything to lose when it fails)."""

    def __init__(
        self,
        counters: FrameCounters,
        clock_ns: Callable[[], int],
        redact: Callable[[str], str],
        *,
        on_ticker: OnTicker,
        on_error: OnError,
        on_dropped: Callable[[], None] = lambda: None,
    ) -> None:
        self.counters, self._clock_ns, self._redact = counters, clock_ns, redact
        self._on_ticker, self._on_error = on_ticker, on_error
        self._on_dropped = on_dropped  # the server dropped a wanted channel: sync again
        self.subs = Subscriptions()
        self.transport: Transport | None = None
        self.connected = False  # True once the server said `connected`
        self.live = False  # connected and not yet being closed
        self.last_frame_at: float | None = None  # Trio time of the last good frame
        self.malformed_run = MalformedRun()
        self._pong = trio.Event()

    async def run(self, connector: Connector, url: str, headers: Headers, connect_timeout: float, serve: Serve) -> None:
        """Upgrade and wait for `connected` within `connect_timeout`, then `serve` until it ends;
        the transport is closed politely on the way out, whatever ended it."""
        handshake = trio.CancelScope(deadline=trio.current_time() + connect_timeout)
        try:
            with handshake:
                async with open_transport(connector, url, headers) as self.transport:
                    hello = await self._handshake()
                    handshake.deadline = math.inf
                    await serve(self, hello)
        finally:
            self.live = False
        if handshake.cancelled_caught:
            raise ProviderError(f"no 'connected' within {connect_timeout:g} s")

    async def _handshake(self) -> wire.Connected:
        """Read until `connected`; a connection-level error on the way raises."""
        while True:
            message = self._dispatch(await self._receive())
            if type(message) is wire.Connected:
                self.connected = self.live = True
                return message

    async def sync(self, desired: Set[str]) -> None:
        """Make the connection carry `desired` (unsubscribes first, then subscribes, batched)."""
        for message in self.subs.sync(desired):
            await self._transport().send(wire.encode(message))

    async def heartbeat(self, interval: float, timeout: float) -> NoReturn:
        """Luzia's application-level ping; no `pong` in time means the peer is gone."""
        while True:
            await trio.sleep(interval)
            self._pong = trio.Event()
            await self._transport().send(_PING_FRAME)
            with trio.move_on_after(timeout):
                await self._pong.wait()
                continue
            self._transport().peer_dead = True  # nobody to wait for a close reply from
            raise ProviderError(f"no pong within {timeout:g} s")

    async def read(self, idle_timeout: float) -> NoReturn:
        """Every frame in; the idle deadline catches a socket that stays up but goes mute.
        Pongs don't count as data: the heartbeat has its own timeout."""
        idle = IdleDeadline(idle_timeout)
        with idle.scope:
            while True:
                message = self._dispatch(await self._receive())
                if message is not None and type(message) is not wire.Pong:
                    idle.fed()
        self._transport().peer_dead = True
        raise ProviderError(f"connected but mute: no data for {idle_timeout:g} s")

    # ---- frames ---------------------------------------------------------------------------------

    async def _receive(self) -> str | bytes:
        return await self._transport().receive()

    def _dispatch(self, text: str | bytes) -> object:
        """Decode once, act, return the message; None for a malformed frame."""
        ts_gateway = self._clock_ns()
        self.counters.frames += 1
        try:
            message = wire.decode_server(text)
        except MalformedFrame as exc:
            self._malformed(exc)
            return None
        if type(message) is wire.Ticker:  # first: nearly every frame is one
            good = self._on_ticker(message, ts_gateway)
        elif type(message) is wire.Pong:
            good = True
            self._pong.set()
        elif type(message) is wire.Subscribed or type(message) is wire.Unsubscribed:
            good = self._ack(message)
        elif type(message) is wire.Error:
            good = True
            self._error(message)
        else:
            good = True
            if type(message) is UnknownMessage:
                self.counters.unknown += 1
        if not good:
            self._malformed(None)
            return None
        self._good()
        return message

    def _good(self) -> None:
        self.last_frame_at = trio.current_time()
        self.malformed_run.good()

    def _malformed(self, exc: MalformedFrame | None) -> None:
        """Count it (the adapter's totals, this connection's run); a run too long ends it."""
        self.counters.malformed += 1
        too_many = self.malformed_run.bad()
        if exc is not None and log.isEnabledFor(logging.DEBUG):  # the redaction costs more than the frame
            log.debug("luzia: skipped a malformed frame: %s", self._redact(str(exc)))
        if too_many:
            raise ProviderError(f"{MALFORMED_RUN_LIMIT} malformed frames in a row")

    def _ack(self, message: wire.Subscribed | wire.Unsubscribed) -> bool:
        if not message.channel.isascii():  # no case mapping may make one of ours out of it
            return False
        try:
            channel = canonical_channel(message.channel)
        except ChannelError:
            return False
        if type(message) is wire.Subscribed:
            self.subs.subscribed(channel)
        elif self.subs.unsubscribed(channel):
            self._on_dropped()
        return True

    def _error(self, message: wire.Error) -> None:
        fatal = session_error(message)
        if fatal is not None:
            raise fatal
        self._on_error(self, message)

    def _transport(self) -> Transport:
        assert self.transport is not None, "the connection is not open"
        return self.transport
