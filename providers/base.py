"""The contract between an adapter and the gateway.

The gateway says what it wants as a set of `StreamKey`s; the adapter works out the upstream
subscriptions (channels, batches, connections), keeps them through reconnects, and calls
`sink(event)` for every normalized event. The sink is synchronous and never blocks: the adapter's
reader must never wait on the gateway. Health is a snapshot the gateway reads whenever it likes.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from typing import Literal, NamedTuple, Protocol

import msgspec
import trio

from schemas import Event
from schemas.channels import format_channel

ConnectionStateName = Literal["connecting", "connected", "backoff", "auth_rejected", "stopped"]


class StreamKey(NamedTuple):
    """One stream a client can ask for: a data type on one symbol, on every symbol of an exchange
    (symbol None), or on every symbol of every exchange (exchange and symbol None)."""

    datatype: str  # "trade" | "quote" | "ticker" | "book"
    exchange: str | None  # canonical lower-case; None: every exchange
    symbol: str | None  # canonical BASE/QUOTE, or None for the whole exchange

    def channel(self) -> str:
        """The native channel name: `trade:binance:BTC/USDT`, `trade:binance` or `trade:*`."""
        return format_channel(self.datatype, self.exchange, self.symbol)


EventSink = Callable[[Event], None]


class ConnectionHealth(msgspec.Struct, kw_only=True):
    id: int
    state: ConnectionStateName
    subscriptions: int  # upstream subscriptions (channels or filter entries) on this connection
    last_message_age_s: float | None  # None: nothing received yet on this connection


class ProviderHealth(msgspec.Struct, kw_only=True):
    name: str
    kind: str
    state: ConnectionStateName  # the best state among its connections
    usable: bool  # False while auth is rejected: routes skip it
    wanted: int  # streams the gateway asked for
    subscriptions: int  # upstream subscriptions in force
    connections: list[ConnectionHealth]
    last_message_age_s: float | None
    reconnects: int
    malformed_frames: int
    unknown_messages: int
    stale_streams: int
    last_error: str | None  # never contains a secret


class Adapter(Protocol):
    name: str  # the configured provider name
    kind: str  # "luzia" | "coinapi"
    datatypes: frozenset[str]  # data types it can serve, natively or derived

    def set_wanted(self, wanted: Set[StreamKey]) -> None:
        """Replace the wanted set; the adapter (un)subscribes upstream to match, asynchronously."""

    def health(self) -> ProviderHealth: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and stay connected until cancelled; `started()` once the first attempt is under way."""


class AuthRejected(Exception):
    """The provider refused our key: retrying quickly would only hammer it."""


class ProviderError(Exception):
    """The provider ended the session with an error that a reconnect may cure."""
