"""One upstream Luzia connection: over a `providers.common.transport.Transport`, the wait for
`connected`, the subscriptions sent on it, the heartbeat, and reading every frame.

Owns: one connection's life inside `open_transport` (which maps library errors and closes
politely), decoding each frame once, the frame counters, the protocol's own answers (`pong`,
`subscribed` / `unsubscribed` into its `client.Subscriptions`), the connection-level errors that
end it (`client.session_error`), and the two liveness timers that are per connection: the pong
timeout and the data-idle deadline.
Never: decides what to subscribe (the adapter's `client.Planner` does), emits events (the adapter
does), retries (`reconnect_forever` does), or puts the API key into an exception message.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Set
from typing import Final, NoReturn

import trio

from providers.common.counters import FrameCounters
from providers.common.errors import MalformedFrame, ProviderError, UnknownMessage
from providers.common.liveness import IdleDeadline
from providers.common.transport import Connector, Headers, Transport, open_transport
from providers.luzia import wire
from providers.luzia.client import Subscriptions, session_error
from providers.luzia.grammar import ChannelError, canonical_channel

log = logging.getLogger(__name__)

_PING_FRAME: Final = wire.encode(wire.Ping())

OnTicker = Callable[[wire.Ticker, int], None]  # the message, its receive time (ns)
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
    ) -> None:
        self.counters, self._clock_ns, self._redact = counters, clock_ns, redact
        self._on_ticker, self._on_error = on_ticker, on_error
        self.subs = Subscriptions()
        self.transport: Transport | None = None
        self.connected = False  # True once the server said `connected`
        self.live = False  # connected and not yet being closed
        self.last_frame_at: float | None = None  # Trio time
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
                if type(self._dispatch(await self._receive())) is not wire.Pong:
                    idle.fed()
        self._transport().peer_dead = True
        raise ProviderError(f"connected but mute: no data for {idle_timeout:g} s")

    # ---- frames ---------------------------------------------------------------------------------

    async def _receive(self) -> str | bytes:
        return await self._transport().receive()

    def _dispatch(self, text: str | bytes) -> object:
        """Decode once, act, return the message (None if malformed)."""
        ts_gateway = self._clock_ns()
        self.last_frame_at = trio.current_time()
        self.counters.frames += 1
        try:
            message = wire.decode_server(text)
        except MalformedFrame as exc:
            self.counters.malformed += 1
            log.debug("luzia: skipped a malformed frame: %s", exc)
            return None
        if type(message) is wire.Ticker:  # first: nearly every frame is one
            self._on_ticker(message, ts_gateway)
        elif type(message) is wire.Pong:
            self._pong.set()
        elif type(message) is wire.Subscribed or type(message) is wire.Unsubscribed:
            self._ack(message)
        elif type(message) is wire.Error:
            self._error(message)
        elif type(message) is UnknownMessage:
            self.counters.unknown += 1
        return message

    def _ack(self, message: wire.Subscribed | wire.Unsubscribed) -> None:
        try:
            channel = canonical_channel(message.channel)
        except ChannelError:
            self.counters.malformed += 1
            return
        if type(message) is wire.Subscribed:
            self.subs.subscribed(channel)
        else:
            self.subs.unsubscribed(channel)

    def _error(self, message: wire.Error) -> None:
        fatal = session_error(message, self._redact)
        if fatal is not None:
            raise fatal
        self._on_error(self, message)

    def _transport(self) -> Transport:
        assert self.transport is not None, "the connection is not open"
        return self.transport
