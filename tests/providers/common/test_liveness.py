"""Staleness per stream (pure) and the idle deadline (fake time)."""

import trio
from hypothesis import given
from hypothesis import strategies as st

from providers.common.liveness import IdleDeadline
from providers.common.staleness import StalenessTracker


def test_streams_go_stale_once_and_report_their_silent_window_on_recovery():
    tracker = StalenessTracker(stale_after=30)
    tracker.want(["a", "b"], now=0)
    tracker.seen("a", now=10)
    assert tracker.newly_stale(now=29.9) == []
    assert tracker.newly_stale(now=30) == ["b"]
    assert tracker.newly_stale(now=35) == []  # reported once
    assert tracker.newly_stale(now=40) == ["a"]
    assert tracker.stale_count == 2
    assert tracker.seen("a", now=50) == 10  # silent since 10
    assert tracker.seen("a", now=51) is None
    assert tracker.stale_count == 1


def test_unwanted_streams_are_forgotten():
    tracker = StalenessTracker(stale_after=5)
    tracker.want(["a"], now=0)
    tracker.want(["b"], now=3)
    assert tracker.seen("a", now=4) is None
    assert tracker.newly_stale(now=8) == ["b"]


def test_a_check_costs_what_it_reports_and_removal_is_per_key():
    tracker = StalenessTracker(stale_after=5)
    tracker.add([f"s{i}" for i in range(1000)], now=0)
    tracker.add(["late"], now=3)
    tracker.remove(["s0", "s1"])
    assert len(tracker) == 999
    assert tracker.newly_stale(now=5) == [f"s{i}" for i in range(2, 1000)]
    assert tracker.newly_stale(now=8) == ["late"]
    assert tracker.seen("s5", now=9) == 0 and tracker.stale_count == 998


async def test_idle_deadline_moves_forward_with_each_frame(autojump_clock):
    deadline = IdleDeadline(timeout=10)
    with deadline.scope:
        for _ in range(3):
            await trio.sleep(9)
            deadline.fed()
        await trio.sleep_forever()
    assert deadline.expired
    assert trio.current_time() == 37


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.floats(0, 5)), max_size=40))
def test_staleness_reports_each_silence_once_and_exactly_at_the_threshold(steps):
    """Against a plain model: a key is stale once `now - last seen >= stale_after`."""
    staleness, last, stale, now = StalenessTracker(10.0), {}, set(), 0.0
    for key in "abcdef":
        staleness.add([key], 0.0)
        last[key] = 0.0
    for key, step in steps:
        now += step
        expected = sorted(k for k in last if k not in stale and now - last[k] >= 10.0)
        assert sorted(staleness.newly_stale(now)) == expected
        stale |= set(expected)
        since = staleness.seen(key, now)
        assert since == (last[key] if key in stale else None)
        stale.discard(key)
        last[key] = now
    assert staleness.stale_count == len(stale)
