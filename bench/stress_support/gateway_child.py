"""The gateway under test, as a child process of `bench/stress.py` (so its RSS is its own).

Runs `gateway.app.run_gateway` on port 0 with the given config, its providers reached through
`upstream=` at the scripted upstream's URL, and a hub `Tap` counting what was published: trades
per stream, statuses by state, gaps. Answers `stats` on stdin with those counts, the hub's and the
server's sizes (to spot structures that outlive their clients) and `/healthz`-like provider health;
`tasks` lists every Trio task with where it waits (to diagnose a stall while it happens);
`profile start` / `profile stop PATH` writes a cProfile of a phase.
Logs (INFO) go to stderr, which the orchestrator keeps in a file and scans for tracebacks.
Must never: listen beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import logging
from collections import Counter
from functools import partial
from typing import Any

import msgspec
import trio

from gateway.app import Gateway, UpstreamRoutes, run_gateway
from gateway.config import Config, parse
from schemas import Event, Gap, Status, Trade
from stress_support.control import announce, first_line, serve_commands

PROFILER = cProfile.Profile()


class CountingTap:
    """Sees every routed event once, before fan-out: the 'published' side of the accounting."""

    def __init__(self) -> None:
        self.trades: Counter[str] = Counter()  # "exchange symbol" → trades
        self.statuses: Counter[str] = Counter()
        self.gaps = 0

    def on_event(self, event: Event) -> None:
        if type(event) is Trade:
            self.trades[f"{event.exchange} {event.symbol}"] += 1
        elif type(event) is Status:
            self.statuses[event.state] += 1
        elif type(event) is Gap:
            self.gaps += 1


def _stack(task: trio.lowlevel.Task) -> list[str]:
    """Where a task is waiting: its coroutine chain, innermost last (for a stalled-task diagnosis)."""
    frames: list[str] = []
    coro: Any = task.coro
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


def _tasks() -> dict[str, Any]:
    """Every task's name and await chain (the `tasks` command)."""
    out: list[str] = []
    root = trio.lowlevel.current_root_task()
    todo = [root] if root is not None else []
    while todo:
        task = todo.pop()
        out.append(f"{task.name}: {' > '.join(_stack(task))}")
        todo.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return {"tasks": out}


def _routes(url: str) -> Any:
    async def upstream(config: Config, nursery: trio.Nursery) -> tuple[dict[str, Any], UpstreamRoutes]:
        return {}, {name: (url, None) for name in config.providers}

    return upstream


def _stats(gateway: Gateway, tap: CountingTap) -> dict[str, Any]:
    hub = gateway.hub
    health = {name: msgspec.to_builtins(source.health()) for name, source in hub.sources.items()}
    for h in health.values():
        h.pop("connections", None)
    return {
        "trades": dict(tap.trades), "statuses": dict(tap.statuses), "gaps": tap.gaps,
        "events_in": hub.events_in, "clients": hub.client_count(), "streams": hub.demand_count(),
        "peers": len(gateway.server.peers), "health": health,
    }


def _load(config_path: str) -> Config:
    with open(config_path) as f:
        return parse(f.read(), config_path)


async def main(config_path: str, upstream_url: str) -> None:
    config = _load(config_path)
    tap = CountingTap()
    async with trio.open_nursery() as nursery:
        gateway: Gateway = await nursery.start(partial(run_gateway, config, port=0, upstream=_routes(upstream_url)))
        gateway.hub.add_tap(tap)
        announce({"port": gateway.port})

        async def stats(args: list[str]) -> dict[str, Any]:
            if args[:1] == ["gc"]:
                gc.collect()
            return _stats(gateway, tap)

        async def tasks(args: list[str]) -> dict[str, Any]:
            return _tasks()

        async def profile(args: list[str]) -> dict[str, Any]:
            """`profile start` / `profile stop PATH` (cProfile of the whole process, as pstats)."""
            if args[0] == "start":
                PROFILER.enable()
            else:
                PROFILER.disable()
                PROFILER.dump_stats(args[1])
            return {"ok": True}

        await serve_commands({"stats": stats, "tasks": tasks, "profile": profile})
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trio.run(main, args.config, first_line())  # the upstream's URL, once it listens
