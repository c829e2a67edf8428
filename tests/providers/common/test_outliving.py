"""The nursery that outlives its caller's cancellation (fake time): it keeps its tasks running
through the cancel until told to stop, and a cancel that lands while it is being started stops
it instead of leaving the caller waiting forever."""

import pytest
import trio

from providers.common.outliving import start_outliving_nursery


async def test_its_tasks_outlive_the_callers_cancellation_until_told_to_stop(autojump_clock):
    may_stop, finished_at = trio.Event(), []

    async def closing_politely():
        await trio.sleep(1)  # the reply to a close frame, say
        finished_at.append(trio.current_time())

    async with trio.open_nursery() as parent:
        with trio.CancelScope() as caller:
            outliving = await start_outliving_nursery(parent, may_stop)
            outliving.start_soon(closing_politely)
            caller.cancel()
            await trio.sleep_forever()
        assert caller.cancelled_caught and finished_at == []
        await trio.sleep(2)
        assert finished_at == [1.0]
        may_stop.set()
    assert trio.current_time() == 2.0


@pytest.mark.parametrize("cancel_first", [True, False])
async def test_a_cancel_while_it_starts_stops_it_at_once(autojump_clock, nursery, cancel_first):
    may_stop, rescued = trio.Event(), []

    async def rescue():  # were it stuck waiting for `may_stop`, the test would hang: fail instead
        await trio.sleep(10)
        rescued.append(trio.current_time())
        may_stop.set()

    nursery.start_soon(rescue)
    async with trio.open_nursery() as parent:
        with trio.CancelScope() as caller:
            (caller if cancel_first else parent.cancel_scope).cancel()
            await start_outliving_nursery(parent, may_stop)
    assert rescued == [] and trio.current_time() == 0
