"""The per-connection update limit as a pure rule, against arbitrary arrival times: never two
frames of a stream within one interval, never a stale frame, the latest always delivered, and
nothing waits longer than one interval."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from gateway.dialects.coinapi_throttle import Throttle

arrivals = st.lists(
    st.tuples(st.integers(0, 400).map(lambda ms: ms / 100), st.sampled_from(["a", "b", "c"])), min_size=1, max_size=40
).map(sorted)
intervals = st.sampled_from([0.05, 0.25, 1.0, 2.5])


def simulate(schedule: list[tuple[float, str]], interval: float) -> list[tuple[float, str, int]]:
    """Deliveries (time, stream, index of the arrival delivered), with the timer firing on time."""
    throttle, out = Throttle(), []

    def fire_until(now: float) -> None:
        while (due := throttle.next_release()) is not None and due <= now:
            out.extend((due, key, int(data)) for key, data in throttle.release(due))

    for index, (at, key) in enumerate(schedule):
        fire_until(at)
        if throttle.admit(key, interval, at):
            out.append((at, key, index))
        else:
            throttle.hold(key, str(index).encode())
    fire_until(float("inf"))
    return out


@given(arrivals, intervals)
def test_the_update_limit_rule(schedule, interval) -> None:
    delivered = simulate(schedule, interval)
    for key in {k for _, k in schedule}:
        mine = [(t, i) for t, k, i in delivered if k == key]
        times = [t for t, _ in mine]
        assert all(b - a >= interval - 1e-9 for a, b in pairwise(times))  # at most one per interval
        indexes = [i for _, i in mine]
        assert indexes == sorted(set(indexes))  # in order, never twice
        last = max(i for i, (_, k) in enumerate(schedule) if k == key)
        assert indexes[-1] == last  # the latest is always delivered
        for t, i in mine:  # never stale: nothing newer of the stream had arrived by then
            assert not any(k == key and j > i and at < t for j, (at, k) in enumerate(schedule))
        for j, (at, k) in enumerate(schedule):  # nothing waits more than one interval
            if k == key:
                assert any(i >= j and at <= t <= at + interval + 1e-9 for t, i in mine)


def test_the_windows_are_bounded_idle_ones_forgotten_first() -> None:
    throttle: Throttle[str] = Throttle(max_windows=2)
    assert throttle.admit("a", 1.0, 0.0) and throttle.admit("b", 1.0, 0.5)
    assert throttle.admit("c", 1.0, 0.6) and len(throttle) == 2  # full of live windows: sent, not tracked
    assert throttle.admit("c", 1.0, 0.7)  # still untracked: nothing to hold it against
    assert throttle.admit("c", 1.0, 1.0) and len(throttle) == 2  # a's window is over and idle: forgotten
    assert not throttle.admit("c", 1.0, 1.2)  # now c is tracked and throttled like any stream
    assert not throttle.admit("b", 1.0, 1.2)
