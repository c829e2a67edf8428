"""One upstream Luzia connection: the upgrade, the wait for `connected`, the subscriptions sent on
it, the heartbeat, and the close.

Owns: the WebSocket of one connection and the bookkeeping of what was sent on it (channels we
want subscribed, subscribe requests still unanswered, channels the server confirmed), and the
mapping of Luzia's connection-level refusals to the reconnect loop's exception classes.
Never: decides what to subscribe (the planner does), emits events (the adapter does), retries
(`reconnect_forever` does), or puts the API key into an exception message.

Luzia answers every channel of a subscribe in order, with `subscribed` or an error that does not
name the channel; so an error is blamed on the channel it names in its text, else on the oldest
unanswered subscribe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

import trio
from trio_websocket import WebSocketConnection

from providers.base import AuthRejected, ProviderError
from providers.common.transport import Connector, Headers
from providers.luzia import wire

#: Luzia's documented heartbeat period; the SDKs ping this often.
PING_INTERVAL: Final = 30.0
PONG_TIMEOUT: Final = 10.0
#: Upgrade + `connected`; a server that accepts but never says `connected` is as good as down.
CONNECT_TIMEOUT: Final = 10.0
#: A close handshake with a dead peer must not hold up the reconnect.
CLOSE_TIMEOUT: Final = 1.0
#: Channels per subscribe frame: keeps frames small on Enterprise (500 per connection).
SUBSCRIBE_BATCH: Final = 50

_PING_FRAME: Final = wire.encode(wire.Ping())

Dispatch = Callable[["LuziaConnection", str], object]


def refusal_error(message: wire.Error, scrub: Callable[[str], str]) -> Exception:
    """CONNECTION_REJECTED means a bad key or tier (stop hammering) or the connection limit (back
    off and retry); only the message text tells them apart."""
    text = scrub(message.message or "connection rejected")
    if "limit" in text.lower():
        return ProviderError(f"CONNECTION_REJECTED: {text}")
    return AuthRejected(f"CONNECTION_REJECTED: {text}")


def session_error(message: wire.Error, scrub: Callable[[str], str]) -> Exception | None:
    """The exception that ends the session for this error, or None if the session goes on."""
    if message.code == "CONNECTION_REJECTED":
        return refusal_error(message, scrub)
    if message.code == "SERVER_SHUTDOWN":
        return ProviderError(f"SERVER_SHUTDOWN: {scrub(message.message or '')}")
    return None


class LuziaConnection:
    """What was sent and confirmed on one open WebSocket."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.connected = False  # True once the server said `connected`
        self.live = False  # connected and not yet being closed
        self.sent: dict[str, None] = {}  # channels we want subscribed here (ordered set)
        self.pending: dict[str, None] = {}  # subscribes not yet answered, oldest first
        self.confirmed: set[str] = set()  # what the server counts against our limit
        self.last_frame_at: float | None = None  # trio time
        self._pong = trio.Event()

    async def handshake(self, dispatch: Dispatch) -> wire.Connected:
        """Read until `connected`; `dispatch` handles (and may raise for) anything else."""
        while True:
            message = dispatch(self, await self.ws.get_message())
            if type(message) is wire.Connected:
                self.connected = self.live = True
                return message

    async def sync(self, desired: frozenset[str]) -> None:
        """Unsubscribe what is no longer wanted here (first, to free room), then subscribe the rest."""
        drop = [c for c in self.sent if c not in desired]
        add = sorted(c for c in desired if c not in self.sent)
        for batch in _batches(drop):
            for channel in batch:
                del self.sent[channel]
            await self.ws.send_message(wire.encode(wire.Unsubscribe(channels=batch)))
        for batch in _batches(add):
            for channel in batch:
                self.sent[channel] = self.pending[channel] = None
            await self.ws.send_message(wire.encode(wire.Subscribe(channels=batch)))

    def subscribed(self, channel: str) -> None:
        self.pending.pop(channel, None)
        self.confirmed.add(channel)

    def unsubscribed(self, channel: str) -> None:
        self.confirmed.discard(channel)

    def blame(self, text: str | None) -> str | None:
        """The subscribe an error answers: the longest pending channel its text names, else the oldest."""
        named = [c for c in self.pending if text and c in text]
        if named:
            return max(named, key=len)
        return next(iter(self.pending), None)

    def refused(self, channel: str) -> None:
        """The server said no to this channel: it is neither pending nor subscribed here."""
        self.pending.pop(channel, None)
        self.sent.pop(channel, None)

    def pong(self) -> None:
        self._pong.set()

    async def heartbeat(self, interval: float, timeout: float) -> None:
        """Luzia's application-level ping; no `pong` in time means the peer is gone."""
        while True:
            await trio.sleep(interval)
            self._pong = trio.Event()
            await self.ws.send_message(_PING_FRAME)
            with trio.move_on_after(timeout):
                await self._pong.wait()
                continue
            raise ProviderError(f"no pong within {timeout:g} s")

    async def close(self) -> None:
        self.live = False
        await close_quietly(self.ws)


async def open_connection(
    connector: Connector,
    nursery: trio.Nursery,
    url: str,
    headers: Headers,
    dispatch: Dispatch,
    timeout: float = CONNECT_TIMEOUT,
) -> tuple[LuziaConnection, wire.Connected]:
    """Upgrade and wait for `connected`, within `timeout`. The socket is closed on any failure."""
    ws: WebSocketConnection | None = None
    try:
        with trio.fail_after(timeout):
            ws = await connector(nursery, url, headers)
            connection = LuziaConnection(ws)
            return connection, await connection.handshake(dispatch)
    except BaseException as exc:
        if ws is not None:
            await close_quietly(ws)
        if isinstance(exc, trio.TooSlowError):
            raise ProviderError(f"no 'connected' within {timeout:g} s") from None
        raise


async def close_quietly(ws: WebSocketConnection) -> None:
    """Close within CLOSE_TIMEOUT, shielded: this runs while the session is being cancelled."""
    with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
        await ws.aclose()


def _batches(channels: Iterable[str]) -> list[list[str]]:
    items = list(channels)
    return [items[i : i + SUBSCRIBE_BATCH] for i in range(0, len(items), SUBSCRIBE_BATCH)]
