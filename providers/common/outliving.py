"""A nursery that outlives its caller's cancellation until told to stop.

For work that must go on while the code around it is being cancelled: the library reader that
has to read the reply to a close frame, an in-process emulator that has to answer the adapters
closing their connections to it. Stopping is an event, not a cancel scope handed back, so that a
cancel landing while the nursery is being started still stops it (`nursery.start` may raise after
the task has started; an event set in the caller's `finally` reaches it either way).
"""

from __future__ import annotations

import trio


async def outliving_nursery(
    may_stop: trio.Event, *, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED
) -> None:
    """A nursery shielded from the caller's cancellation; its tasks are cancelled once `may_stop`."""
    task = trio.lowlevel.current_task()
    starting_in = task.parent_nursery
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        # Shielded only once `started` has really handed this task over. If the caller was
        # cancelled first, Trio leaves the task where it was and `start` waits for it to end:
        # shielded, it would wait for `may_stop` forever, and so would the caller.
        if task.parent_nursery is starting_in:
            return
        nursery.cancel_scope.shield = True
        await may_stop.wait()
        nursery.cancel_scope.cancel()


async def start_outliving_nursery(parent: trio.Nursery, may_stop: trio.Event) -> trio.Nursery:
    """`parent.start(outliving_nursery, may_stop)`, and raise Cancelled if the caller was cancelled
    meanwhile: `start` then returns normally, with a nursery that has already closed."""
    nursery: trio.Nursery = await parent.start(outliving_nursery, may_stop)
    await trio.lowlevel.checkpoint_if_cancelled()
    return nursery
