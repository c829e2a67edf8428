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


def test_control_frames_are_never_dropped_and_bounded_in_bytes_not_in_count():
    overflows = []
    box = Outbox(limit=1, control_bytes=10)
    box.on_overflow = lambda: (overflows.append(True), box.abort(b"cut"))
    for _ in range(1000):  # many small replies, taken in time: nothing is lost, nobody is cut
        box.put_control(b"c")
        assert box.take()[0] == [b"c"]
    box.put_control(b"12345")
    box.put_control(b"67890")  # exactly at the bound: still kept
    assert box.take()[0] == [b"12345", b"67890"]
    box.put_trade(TRADES, b"t1", 1)
    box.put_control(b"123456")
    box.put_control(b"12345")  # 11 bytes unread: the client is not reading
    assert overflows == [True] and box.overflowed and box.closed
    box.put_control(b"more")
    assert overflows == [True]  # told once
    assert box.take() == ([b"cut"], [])  # what it had not taken is dropped; its close frame goes alone


def test_an_overflow_without_an_owner_still_stops_queueing():
    box = Outbox(limit=4, control_bytes=3)
    box.put_control(b"abcd")
    assert box.closed and box.take()[0] == []


def test_abort_after_close_keeps_the_one_close_frame():
    box = Outbox(limit=4)
    box.put_trade(TRADES, b"t1", 1)
    box.close(b"close")
    box.abort(b"cut")
    assert box.take()[0] == [b"close"]
    box.abort(b"cut")  # the close frame was handed to the writer already: nothing more
    assert box.take()[0] == []


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
