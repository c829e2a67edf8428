"""The per-client overflow policy: conflate latest-wins streams, drop trades with a recorded window."""

import trio

from gateway.outbox import DroppedWindow, Outbox

BTC = ("quote", "binance", "BTC/USDT")
ETH = ("quote", "binance", "ETH/USDT")
TRADES = ("trade", "binance", "BTC/USDT")


def test_below_the_limit_everything_is_kept_in_order():
    box = Outbox(limit=4)
    box.put_trade(TRADES, b"t1", 1)
    box.put_latest(BTC, b"q1")
    box.put_latest(BTC, b"q2")
    assert box.take() == ([b"t1", b"q1", b"q2"], [])


def test_full_outbox_conflates_quotes_in_place():
    box = Outbox(limit=2)
    box.put_latest(BTC, b"q1")
    box.put_latest(ETH, b"e1")
    box.put_latest(BTC, b"q2")
    box.put_latest(BTC, b"q3")
    assert box.take() == ([b"q3", b"e1"], [])
    assert box.conflated == 2


def test_a_stream_with_nothing_queued_still_gets_one_slot_when_full():
    box = Outbox(limit=1)
    box.put_latest(BTC, b"q1")
    box.put_latest(ETH, b"e1")
    box.put_latest(ETH, b"e2")
    assert box.take()[0] == [b"q1", b"e2"]


def test_full_outbox_drops_trades_and_reports_the_window():
    box = Outbox(limit=1)
    box.put_trade(TRADES, b"t1", 10)
    box.put_trade(TRADES, b"t2", 20)
    box.put_trade(TRADES, b"t3", 30)
    frames, dropped = box.take()
    assert frames == [b"t1"]
    assert dropped == [DroppedWindow(TRADES, 20, 30, 2)]
    assert box.dropped_trades == 2
    # The window was handed over once; a fresh take reports nothing more.
    assert box.take() == ([], [])


def test_control_frames_are_bounded_too_a_client_that_reads_nothing_is_given_up():
    overflows = []
    box = Outbox(limit=1, control_limit=3, on_overflow=lambda: overflows.append(True))
    for i in range(3):
        box.put_control(b"c%d" % i)
    assert box.take()[0] == [b"c0", b"c1", b"c2"]  # taken in time: the count starts again
    for i in range(5):
        box.put_control(b"d%d" % i)
    assert overflows == [True]  # once
    assert box.closed and box.take()[0] == [b"d0", b"d1", b"d2"]


def test_nothing_follows_the_close_frame():
    box = Outbox(limit=10)
    box.put_trade(TRADES, b"t1", 1)
    box.close(b"close")
    box.put_trade(TRADES, b"t2", 2)
    box.put_latest(BTC, b"q")
    box.put_control(b"c")
    assert box.take()[0] == [b"t1", b"close"]


async def test_wait_wakes_on_put_and_close():
    box = Outbox(limit=2)
    async with trio.open_nursery() as nursery:
        woke = trio.Event()

        async def writer():
            await box.wait()
            woke.set()

        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert not woke.is_set()
        box.put_latest(BTC, b"q")
    assert woke.is_set()
    box.take()
    box.close()
    with trio.fail_after(1):
        await box.wait()  # a closed outbox never blocks its writer
