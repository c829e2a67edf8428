"""The reconnect loop every upstream connection runs: never gives up on a valid config.

One call of `session` is one connection's life. It calls `mark_healthy()` once the connection is
really serving (e.g. after the provider's `connected` message); the backoff's attempt count resets
only if it then stays up `backoff.stable_after` seconds. Auth rejection is its own state with its
own slow retry, so a revoked key is reported in health and never hammered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from providers.base import AuthRejected, ConnectionStateName, ProviderError
from providers.common.backoff import Backoff
from trio_websocket import ConnectionRejected

from providers.common.transport import TRANSPORT_ERRORS, TransportError

log = logging.getLogger(__name__)

#: A rejected key is retried this rarely: an operator may fix the env var and restart, or the
#: provider may re-enable the key; either way once every few minutes is not hammering.
AUTH_RETRY_SECONDS = 300.0

#: Errors a reconnect may cure. Anything else is our bug and propagates.
RETRYABLE = (TransportError, ProviderError, *TRANSPORT_ERRORS)


@dataclass
class LinkState:
    """What health reports about one upstream connection slot."""

    state: ConnectionStateName = "connecting"
    reconnects: int = 0
    last_error: str | None = None


async def reconnect_forever(
    session: Callable[[Callable[[], None]], Awaitable[None]],
    link: LinkState,
    backoff: Backoff,
    *,
    auth_retry: float = AUTH_RETRY_SECONDS,
    describe: str = "upstream",
    redact: Callable[[str], str] = str,
) -> None:
    """Run `session(mark_healthy)` again and again until cancelled. `redact` cleans every error
    text before it is logged or kept for health (the adapter knows its secret; this loop does not)."""

    def mark_healthy() -> None:
        link.state = "connected"
        backoff.connected(trio.current_time())

    while True:
        link.state = "connecting"
        delay = await _one_attempt(session, mark_healthy, link, backoff, auth_retry, describe, redact)
        link.reconnects += 1
        await trio.sleep(delay)


async def _one_attempt(session, mark_healthy, link: LinkState, backoff: Backoff, auth_retry: float, describe: str, redact) -> float:
    """Run one session; return how long to wait before the next one."""
    try:
        await session(mark_healthy)
        link.last_error = "closed by the provider"
    except Exception as exc:  # noqa: BLE001 - classified below; our own bugs are re-raised
        kind, cause = classify(exc)
        if kind == "bug":
            raise
        backoff.disconnected(trio.current_time())
        if kind == "auth":
            link.state, link.last_error = "auth_rejected", redact(f"auth rejected: {cause}")
            log.warning("%s: %s; retrying in %.0f s", describe, link.last_error, auth_retry)
            return auth_retry
        status = refused_status(cause)
        # A refused upgrade's text is the provider's whole response (headers, body): keep the status.
        link.last_error = f"upgrade refused with HTTP {status}" if status else redact(f"{type(cause).__name__}: {cause}")
    else:
        backoff.disconnected(trio.current_time())
    link.state = "backoff"
    delay = backoff.next_delay()
    log.info("%s: %s; reconnecting in %.2f s", describe, link.last_error, delay)
    return delay


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


#: HTTP statuses of a refused upgrade that mean "your key", not "try again".
AUTH_STATUSES = frozenset({401, 403})


def refused_status(leaf: BaseException) -> int | None:
    """The HTTP status of a refused WebSocket upgrade, however it surfaced: trio-websocket raises
    `ConnectionRejected` from the connection's reader task (out of the nursery the connector was
    given, not out of the connector), so it is recognised here, where every session ends."""
    if isinstance(leaf, ConnectionRejected):
        return leaf.status_code
    if isinstance(leaf, TransportError):
        return leaf.status
    return None


def classify(exc: BaseException) -> tuple[str, BaseException]:
    """("auth" | "retry" | "bug", the exception that decided it). Nurseries wrap errors in
    exception groups, so the leaves decide: any auth rejection (in the protocol, or an upgrade
    refused with 401/403) wins; all-retryable retries."""
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, AuthRejected):
            return "auth", leaf
        if refused_status(leaf) in AUTH_STATUSES:
            return "auth", AuthRejected(f"upgrade refused with HTTP {refused_status(leaf)}")
    if all(isinstance(leaf, RETRYABLE) for leaf in leaves):
        return "retry", leaves[0]
    return "bug", exc
