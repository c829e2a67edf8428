"""What every endpoint (dialect) of one running gateway shares: the config, the hub, local access
control. Endpoints receive it at construction; they never reach for globals, so several gateways
can run in one process (as the tests do).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Protocol

from gateway.config import Config
from gateway.hub import Hub
from gateway.server import HttpRequest, HttpResponse
from gateway.wspeer import Session, WebSocketPeer


@dataclass
class GatewayContext:
    config: Config
    hub: Hub
    local_keys: frozenset[str] | None  # None: no local keys configured, loopback is open

    def key_ok(self, key: str | None) -> bool:
        """Local access control: any client when no local keys are configured, else a known key."""
        if self.local_keys is None:
            return True
        if not key:
            return False
        # Compare against every key in constant time, so timing does not reveal a prefix.
        return any(hmac.compare_digest(key.encode(), known.encode()) for known in self.local_keys)


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
