"""What every endpoint (dialect) of one running gateway shares: the config, the hub, local access
control, the counters of what clients did wrong, and the `[limits]` helpers every dialect applies
the same way (the flood guard of a new connection, the room left under `max_streams`).
Endpoints receive it at construction; they never reach for globals, so several gateways can run in
one process (as the tests do).
Never: holds per-connection state (that is each session's), or logs client-supplied text.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Protocol

from gateway.config import Config
from gateway.flood import FloodGuard
from gateway.hub import Hub
from gateway.server import HttpRequest, HttpResponse
from gateway.wspeer import Session, WebSocketPeer
from schemas.streams import StreamKey


@dataclass
class ClientCounters:
    """What clients of every endpoint did wrong, counted (health and tests read them)."""

    malformed: int = 0  # messages answered with the protocol's "cannot read this" error
    decoder_faults: int = 0  # of those, a decoder raised something outside its contract (a bug)
    rate_limited: int = 0  # messages refused by a connection's token bucket
    flood_closed: int = 0  # connections closed for flooding
    over_cap: int = 0  # requests (or parts of them) refused by a cap
    auth_timeouts: int = 0  # connections closed for saying nothing before the auth deadline


@dataclass
class GatewayContext:
    config: Config
    hub: Hub
    local_keys: frozenset[str] | None  # None: no local keys configured, loopback is open
    counters: ClientCounters = field(default_factory=ClientCounters)

    def key_ok(self, key: str | None) -> bool:
        """Local access control: any client when no local keys are configured, else a known key."""
        if self.local_keys is None:
            return True
        if not key:
            return False
        # Compare against every key in constant time, so timing does not reveal a prefix.
        return any(hmac.compare_digest(key.encode(), known.encode()) for known in self.local_keys)

    def flood_guard(self, now: float) -> FloodGuard:
        """A new connection's token bucket, from `[limits]`."""
        limits = self.config.limits
        return FloodGuard(limits.messages_per_second, limits.message_burst, limits.flood_strikes, now)

    def stream_room(self) -> StreamRoom:
        """The room one request has under `[limits] max_streams` (make one per request)."""
        return StreamRoom(self.hub, self.config.limits.max_streams)


class StreamRoom:
    """Room under the gateway-wide cap on distinct streams, for the new streams of one request.

    A key somebody already wants costs nothing; a new one is counted as pending until the shell
    subscribes it, so a request whose subscriptions are applied after its replies (Luzia's) is
    judged as a whole. O(1) per key: it asks the hub, never scans the demand."""

    def __init__(self, hub: Hub, max_streams: int) -> None:
        self.hub = hub
        self.max_streams = max_streams
        self._pending: set[StreamKey] = set()

    def take(self, key: StreamKey) -> bool:
        """Whether `key` may be added; True also reserves it for this request."""
        if key in self._pending or self.hub.demanded(key):
            return True
        if self.hub.demand_count() + len(self._pending) >= self.max_streams:
            return False
        self._pending.add(key)
        return True


class Endpoint(Protocol):
    """One dialect on the gateway's port."""

    def serves_websocket(self, path: str) -> bool: ...

    def open_session(self, peer: WebSocketPeer, request: HttpRequest) -> Session | HttpResponse: ...

    async def http(self, request: HttpRequest) -> HttpResponse | None:
        """The response if this endpoint owns the request's path, else None."""


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an `Authorization: Bearer …` header (or the bare header value)."""
    value = request.headers.get("authorization", "").strip()
    if value.lower().startswith("bearer "):
        return value[7:].strip() or None
    return value or None
