"""The reconnect loop every upstream connection runs: never gives up on a valid config.

One call of `session` is one connection's life. It calls `mark_healthy()` once the connection is
really serving (e.g. after the provider's `connected` message); the backoff's attempt count resets
only if it then stays up `backoff.stable_after` seconds. Auth rejection is its own state with its
own slow retry, so a revoked key is reported in health and never hammered.

Failures are classified here, once (`classify`), and reported to the adapter through `on_failure`
*after* `link` says the new state, so whatever the adapter announces (a `Status` event, which
makes the hub re-read `usable`) is already true. Adapters never classify again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal

import trio

from providers.base import ConnectionStateName
from providers.common.backoff import Backoff
from providers.common.errors import AuthRejected, ProviderError, TransportError

log = logging.getLogger(__name__)

#: A rejected key is retried this rarely: an operator may fix the env var and restart, or the
#: provider may re-enable the key; either way once every few minutes is not hammering.
AUTH_RETRY_SECONDS: Final = 300.0
#: Errors a reconnect may cure. Anything else is our bug and propagates.
RETRYABLE: Final = (TransportError, ProviderError)
#: HTTP statuses of a refused upgrade that mean "your key", not "try again".
AUTH_STATUSES: Final = frozenset({401, 403})

FailureKind = Literal["auth", "retry", "bug"]


@dataclass
class LinkState:
    """What health reports about one upstream connection slot."""

    state: ConnectionStateName = "connecting"
    reconnects: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class Failure:
    """How one session ended, as the loop classified it.

    `reason` is the project's own wording ("ProviderError: no pong within 10 s"), never provider
    free text: it may reach health, status events and clients. `detail` is what the provider said
    (an error message, a close reason), already redacted, for logs only."""

    kind: FailureKind
    cause: BaseException
    reason: str
    detail: str | None = None


async def reconnect_forever(
    session: Callable[[Callable[[], None]], Awaitable[None]],
    link: LinkState,
    backoff: Backoff,
    *,
    auth_retry: float = AUTH_RETRY_SECONDS,
    describe: str = "upstream",
    redact: Callable[[str], str] = str,
    on_failure: Callable[[Failure], None] = lambda failure: None,
) -> None:
    """Run `session(mark_healthy)` again and again until cancelled. `redact` cleans every error
    text before it is logged or kept for health (the adapter knows its secret; this loop does not)."""

    def mark_healthy() -> None:
        link.state = "connected"
        backoff.connected(trio.current_time())

    while True:
        link.state = "connecting"
        delay = await _one_attempt(session, mark_healthy, link, backoff, auth_retry, describe, redact, on_failure)
        link.reconnects += 1
        await trio.sleep(delay)


async def _one_attempt(
    session: Callable[[Callable[[], None]], Awaitable[None]],
    mark_healthy: Callable[[], None],
    link: LinkState,
    backoff: Backoff,
    auth_retry: float,
    describe: str,
    redact: Callable[[str], str],
    on_failure: Callable[[Failure], None],
) -> float:
    """Run one session; return how long to wait before the next one."""
    try:
        await session(mark_healthy)
        failure = Failure("retry", ProviderError("closed by the provider"), "closed by the provider")
    except Exception as exc:
        kind, cause = classify(exc)
        if kind == "bug":
            raise
        detail = getattr(cause, "detail", None)
        failure = Failure(kind, cause, redact(f"{type(cause).__name__}: {cause}"), redact(detail) if detail else None)
    backoff.disconnected(trio.current_time())
    link.last_error = failure.reason
    if failure.kind == "auth":
        link.state = "auth_rejected"
        delay = auth_retry
        log.warning("%s: auth rejected (%s%s); retrying in %.0f s", describe, failure.reason, _said(failure), delay)
    else:
        link.state = "backoff"
        delay = backoff.next_delay()
        log.info("%s: %s%s; reconnecting in %.2f s", describe, failure.reason, _said(failure), delay)
    on_failure(failure)
    return delay


def _said(failure: Failure) -> str:
    """What the provider itself said, for the log line only (already redacted)."""
    return f"; the provider said {failure.detail!r}" if failure.detail else ""


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def classify(exc: BaseException) -> tuple[FailureKind, BaseException]:
    """("auth" | "retry" | "bug", the exception that decided it). Nurseries wrap errors in
    exception groups, so the leaves decide: any auth rejection (in the protocol, or an upgrade
    refused with 401/403) wins; all-retryable retries; anything else is our bug."""
    found = leaves(exc)
    for leaf in found:
        if isinstance(leaf, AuthRejected):
            return "auth", leaf
        if isinstance(leaf, TransportError) and leaf.status in AUTH_STATUSES:
            return "auth", AuthRejected(f"upgrade refused with HTTP {leaf.status}")
    if all(isinstance(leaf, RETRYABLE) for leaf in found):
        return "retry", found[0]
    return "bug", exc
