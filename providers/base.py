"""The contract between a source of normalized events and the gateway.

A `Source` is whatever feeds the hub: today an adapter of one configured provider; later a
recording or a message bus, through the same interface, without touching the dialects.
- The hub tells it *what* is wanted, as changes: `update_wanted(added, removed)` with sets of
  `schemas.streams.StreamKey`. Work is proportional to the change; the source works out its own
  upstream subscriptions (channels, batches, connections) and keeps them through reconnects.
- It calls `sink(event)` for every normalized event. The sink is synchronous and never blocks:
  a source's reader must never wait on the gateway.
- Health is pushed: whenever `usable` may have changed, the source emits a provider-level
  `schemas.Status` (stream None) through the sink, *after* `usable` says the new value; the hub
  re-reads `usable` then. `health()` is a snapshot for `/healthz`, read whenever an operator asks.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

from schemas import Event
from schemas.streams import StreamKey

if TYPE_CHECKING:  # the contract is pure: importing it loads no Trio
    import trio

ConnectionStateName = Literal["connecting", "connected", "backoff", "auth_rejected", "stopped"]

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


class Source(Protocol):
    name: str  # the configured provider name
    kind: str  # "luzia" | "coinapi" | ...
    datatypes: frozenset[str]  # data types it can serve, natively or derived

    @property
    def usable(self) -> bool:
        """Whether routes may send demand here now (False while our key is refused)."""

    def update_wanted(self, added: Set[StreamKey], removed: Set[StreamKey]) -> None:
        """Streams newly wanted and no longer wanted; the source (un)subscribes upstream to match,
        asynchronously. Never called with a key in both sets."""

    def health(self) -> ProviderHealth: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None:
        """Connect and stay connected until cancelled; `started()` once the first attempt is under way."""


#: Today every source is a provider adapter; the name the gateway's code uses for them.
Adapter = Source
