"""Backoff: full jitter inside [0, ceiling], ceiling doubling to the cap, reset only after a stable run."""

import random

from hypothesis import given
from hypothesis import strategies as st

from providers.common.backoff import Backoff


@given(
    st.floats(0.01, 10), st.floats(1.0, 4.0), st.floats(0.1, 600), st.integers(0, 2**32), st.integers(1, 200)
)
def test_delays_stay_within_zero_and_the_capped_ceiling(initial, factor, cap, seed, attempts):
    backoff = Backoff(initial=initial, factor=factor, cap=cap, rng=random.Random(seed))
    for attempt in range(attempts):
        ceiling = backoff.ceiling()
        assert ceiling == min(cap, initial * factor ** min(attempt, 64))
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceiling <= cap


def test_jitter_spreads_over_the_whole_range():
    backoff = Backoff(initial=8.0, cap=8.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(2000)]
    assert min(delays) < 0.8 and max(delays) > 7.2  # full jitter, not "ceiling ± a little"


@given(st.floats(0, 59.99), st.floats(60, 10_000))
def test_attempts_reset_only_after_a_stable_connection(short, long):
    backoff = Backoff(stable_after=60.0, rng=random.Random(1))
    for _ in range(5):
        backoff.next_delay()
    backoff.connected(100.0)
    backoff.disconnected(100.0 + short)
    assert backoff.attempt == 5  # up, then dropped quickly: still backing off
    backoff.connected(200.0)
    backoff.disconnected(200.0 + long)
    assert backoff.attempt == 0


def test_disconnect_without_connect_does_not_reset():
    backoff = Backoff(rng=random.Random(1))
    backoff.next_delay()
    backoff.disconnected(1e9)
    assert backoff.attempt == 1
