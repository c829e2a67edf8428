"""Staleness per stream (pure) and the idle deadline (fake time)."""

import trio

from providers.common.liveness import IdleDeadline, StalenessTracker


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


async def test_idle_deadline_moves_forward_with_each_frame(autojump_clock):
    deadline = IdleDeadline(timeout=10)
    with deadline.scope:
        for _ in range(3):
            await trio.sleep(9)
            deadline.fed()
        await trio.sleep_forever()
    assert deadline.expired
    assert trio.current_time() == 37
