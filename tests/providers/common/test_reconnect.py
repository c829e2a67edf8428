"""The shared reconnect loop under fake time: exact delays, slow auth retries, bugs propagate."""

import random

import pytest
import trio

from providers.common.backoff import Backoff
from providers.common.errors import AuthRejected, ProviderError, TransportError
from providers.common.reconnect import Failure, LinkState, classify, reconnect_forever


def _backoff():
    return Backoff(initial=1.0, cap=8.0, stable_after=60.0, rng=random.Random(3))


async def test_failed_attempts_back_off_with_the_jittered_delays(autojump_clock):
    expected_rng, attempts = _backoff(), []
    expected, at = [], 0.0
    for _ in range(5):
        expected.append(at)
        at += expected_rng.next_delay()

    async def session(mark_healthy):
        attempts.append(trio.current_time())
        raise TransportError("refused")

    link = LinkState()
    with trio.move_on_after(expected[-1] + 0.0001):
        await reconnect_forever(session, link, _backoff())
    assert attempts == pytest.approx(expected, abs=1e-9)
    assert link.state == "backoff" and link.last_error == "TransportError: refused"


async def test_a_stable_connection_resets_the_attempt_count(autojump_clock):
    backoff = _backoff()
    attempts_seen = []

    async def session(mark_healthy):
        attempts_seen.append(backoff.attempt)
        if len(attempts_seen) == 3:
            mark_healthy()
            await trio.sleep(61)  # up long enough to count as stable
        if len(attempts_seen) == 5:
            scope.cancel()
            await trio.sleep_forever()
        raise ProviderError("dropped")

    with trio.CancelScope() as scope:
        await reconnect_forever(session, LinkState(), backoff)
    # Two failures count up; the stable run resets, so the fourth attempt starts from one again.
    assert attempts_seen == [0, 1, 2, 1, 2]


async def test_auth_rejection_retries_slowly(autojump_clock):
    attempts = []

    async def session(mark_healthy):
        attempts.append(trio.current_time())
        raise AuthRejected("Invalid API key")

    link = LinkState()
    with trio.move_on_after(1000):
        await reconnect_forever(session, link, _backoff(), auth_retry=300)
    assert attempts == [0, 300, 600, 900]
    assert link.state == "auth_rejected"


async def test_our_own_bugs_are_not_retried(autojump_clock):
    async def session(mark_healthy):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await reconnect_forever(session, LinkState(), _backoff())


def test_exception_groups_are_classified_by_their_leaves():
    assert classify(ExceptionGroup("x", [TransportError("a"), AuthRejected("k")]))[0] == "auth"
    assert classify(ExceptionGroup("x", [ProviderError("a"), TransportError("b")]))[0] == "retry"
    # Library errors are mapped at the transport: one that got past it is a bug, not a retry.
    assert classify(ExceptionGroup("x", [ProviderError("a"), OSError("b")]))[0] == "bug"
    assert classify(TransportError("refused", status=403))[0] == "auth"
    assert classify(ExceptionGroup("x", [ProviderError("a"), ValueError("b")]))[0] == "bug"


async def test_error_texts_are_redacted_before_logs_and_health(autojump_clock, caplog):
    async def session(mark_healthy):
        raise ProviderError("server said: bad key SECRET-123")

    link = LinkState()
    with trio.move_on_after(0.5):
        await reconnect_forever(session, link, _backoff(), redact=lambda t: t.replace("SECRET-123", "***"))
    assert link.last_error == "ProviderError: server said: bad key ***"
    assert "SECRET-123" not in caplog.text


async def test_failures_are_reported_after_the_link_says_so(autojump_clock):
    seen = []

    async def session(mark_healthy):
        raise AuthRejected("Invalid API key")

    link = LinkState()

    def on_failure(failure: Failure) -> None:
        seen.append((failure.kind, failure.reason, link.state, trio.current_time()))

    with trio.move_on_after(1):
        await reconnect_forever(session, link, _backoff(), on_failure=on_failure)
    assert seen == [("auth", "AuthRejected: Invalid API key", "auth_rejected", 0)]
