"""The loads of `bench/stress.py`, each bounded in count and time, and what each reports.

A load gets a fresh `Rig` and a `Measure`; it drives its clients, closes bystander windows at its
phase boundaries (`measure.window`), reaches the quiet point (`measure.quiet`: the bystander's own
accounting line is taken there), drains its accounting clients and adds their lines and notes.
Every client here is a native `/stream` client on 127.0.0.1.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from gateway.config import Limits
from stress_support import hostile
from stress_support.control import core_times, cpu_seconds, split_cpus
from stress_support.rig import BYSTANDER_CHANNEL, Rig, account, healthz, stream_of, symbol_id
from stress_support.wsclient import ACTIVITY, HandshakeRefused, Tally, WsClient, drain, read_into

CONNECT_LIMIT = 64  # connections being opened at once (the listener's backlog is finite)
REPLY_TIMEOUT = 30.0
PROBE_TIMEOUT = 5.0
SETTLE_TIMEOUT = 15.0  # CoinAPI's hello rate (10 per 10 s) paces how fast the upstream scope can follow
STALE_PER_CONNECTION = 1000  # the native default `max_subscriptions_per_client`


@dataclass
class Scale:
    seconds: float = 8.0  # the held phase of most loads
    storm_clients: int = 20
    storm_channels: int = 50  # channels per toggle message
    stale_connections: int = 40  # × 1,000 channels each
    stale_after: float = 4.0
    idle_connections: int = 1000
    write_stall: float = 3.0  # `[limits] write_stall_seconds` for the non-reader load
    after_stall: float = 3.0  # held past it: the cut-off, its close grace (2 s), and some
    linger: float = 1.0  # the bystander keeps measuring this long past a burst
    settle: bool = True  # wait for the upstream scope after a storm (CoinAPI's hello rate: up to ~10 s)
    reader_pause: float = 2.0  # the slow (but not dead) reader's pause
    busy_symbols: int = 20
    busy_rate: float = 200.0  # trades/s per busy symbol
    hostile_symbols: int = 10
    hostile_ratio: float = 0.25  # hostile frames per valid trade


QUICK = Scale(seconds=1.5, storm_clients=5, stale_connections=10, stale_after=1.5, idle_connections=200,
              write_stall=1.0, after_stall=3.0, linger=0.3, settle=False, reader_pause=0.5, busy_symbols=10)


@dataclass
class Window:
    label: str
    bystander: dict[str, Any]
    gateway_cpu: float  # share of one core the gateway used in this window
    host_load: float  # the 1-minute load average at its end: other work on this machine inflates stalls
    cpu_seconds: float = 0.0  # the gateway's CPU time in this window
    upstream: dict[str, float] = field(default_factory=dict)  # its longest write and pause (`upstream.mark`)
    core_idle: float = 0.0  # share of the gateway's core nobody used: ~0 means it was short of CPU


@dataclass
class Report:
    name: str
    windows: list[Window] = field(default_factory=list)
    lines: list[tuple[str, bool]] = field(default_factory=list)  # accounting lines, balanced?
    notes: list[str] = field(default_factory=list)
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    survived: str = "?"
    tracebacks: list[str] = field(default_factory=list)
    failed: str | None = None


class Measure:
    def __init__(self, rig: Rig, report: Report) -> None:
        self.rig, self.report = rig, report
        self.label = "load"
        self.quieted = False
        self._cpu = (0.0, 0.0)
        self.core = min(split_cpus()[0])
        self._core = (0, 0)

    async def start(self, label: str) -> None:
        self.label = label
        await self.rig.bystander.ask("mark")
        await self.rig.upstream.ask("mark")
        self._cpu = (trio.current_time(), cpu_seconds(self.rig.gateway.pid))
        self._core = core_times(self.core)

    async def window(self, next_label: str | None = None) -> None:
        """End the bystander's current window (one table row), and start the next if named."""
        bystander = await self.rig.bystander.ask("report")
        elapsed = trio.current_time() - self._cpu[0]
        cpu = (cpu_seconds(self.rig.gateway.pid) - self._cpu[1]) / elapsed if elapsed > 0 else 0.0
        used = cpu * elapsed
        upstream = await self.rig.upstream.ask("mark")
        idle, total = (now - then for now, then in zip(core_times(self.core), self._core, strict=True))
        self.report.windows.append(Window(self.label, bystander, cpu, os.getloadavg()[0], used, upstream,
                                          idle / total if total else 0.0))
        if next_label is not None:
            await self.start(next_label)

    async def quiet(self) -> None:
        paused = await self.rig.quiet()
        self.quieted = True
        drained = await self.rig.bystander.ask("drain")
        tally = Tally(trades=drained["trades"], missed=drained["missed"], eof=drained["eof"])
        tally.gap_causes.update(drained["gap_causes"])
        tally.errors.update(drained["errors"])
        published = self.rig.published_for([stream_of(symbol_id("steady", "BY"))])
        self.report.lines.append(account(f"bystander {BYSTANDER_CHANNEL}", tally, published, drained["ok"]))
        sent = sum(paused["sent"].values())
        self.report.notes.append(f"upstream: {sent:,} valid trades sent, {paused['hostile_sent']:,} hostile frames, "
                                 f"{paused['opened']} connection(s) opened, client messages {paused['messages']}, "
                                 f"largest {paused['max_message']:,} bytes")


@dataclass
class Native:
    """A load client: its socket, its tally, and the task reading it (if it reads)."""

    client: WsClient
    tally: Tally
    label: str


async def connect(port: int, label: str, nursery: trio.Nursery, *, read: bool = True, exchange: str | None = None,
                  rcvbuf: int | None = None) -> Native:
    client = await WsClient.connect(port, rcvbuf=rcvbuf)
    native = Native(client, Tally(exchange=exchange), label)
    if read:
        nursery.start_soon(read_into, client, native.tally)
    return native


async def subscribe(native: Native, channels: list[str]) -> None:
    await native.client.send(msgspec.json.encode({"type": "subscribe", "channels": channels}))


async def until(predicate: Callable[[], bool], timeout: float = REPLY_TIMEOUT) -> bool:
    """Until a client-side condition holds (bounded): re-checked whenever any client read something."""
    with trio.move_on_after(timeout):
        while not predicate():
            await ACTIVITY.wait()
        return True
    return False


async def close_all(clients: list[Native]) -> None:
    async with trio.open_nursery() as nursery:
        for native in clients:
            nursery.start_soon(native.client.aclose)


async def drain_all(clients: list[Native]) -> list[bool]:
    results = [False] * len(clients)

    async def one(i: int) -> None:
        results[i] = await drain(clients[i].client, clients[i].tally)

    async with trio.open_nursery() as nursery:
        for i in range(len(clients)):
            nursery.start_soon(one, i)
    return results


# ----- the loads ----------------------------------------------------------------------------------


async def baseline(rig: Rig, scale: Scale, m: Measure, nursery: trio.Nursery) -> None:
    await m.start("baseline (no load)")
    await trio.sleep(scale.seconds)
    await m.window()
    await m.quiet()


async def _storm_client(native: Native, channels: list[str], until_t: float, interval: float | None) -> int:
    """Toggle `channels` (subscribe, unsubscribe, ...) until `until_t`; how many messages were sent."""
    messages = [msgspec.json.encode({"type": kind, "channels": channels}) for kind in ("subscribe", "unsubscribe")]
    sent = 0
    with trio.move_on_at(until_t):
        while not native.tally.eof and native.tally.close is None:
            try:
                await native.client.send(messages[sent % 2])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            sent += 1
            if interval is not None:
                await trio.sleep(interval)
            else:
                await trio.lowlevel.checkpoint()
    return sent


async def _released(rig: Rig) -> int:
    """Wait (bounded) until the gateway holds only the bystander's peer; its RSS then (KiB)."""
    with trio.move_on_after(5):
        while (await rig.gateway.ask("stats gc"))["peers"] > 1:  # noqa: ASYNC110 (another process)
            await trio.sleep(0.1)
    return rig.rss()[0]


async def _storm_again(rig: Rig, scale: Scale, m: Measure, nursery: trio.Nursery, pool: list[str]) -> None:
    """Two more floods with fresh clients, RSS after each once its clients are gone: growth from
    round 2 to round 3 is a leak; RSS that stays is the allocator's high-water mark (the first
    rounds raise it, as any burst of garbage does)."""
    rss = [await _released(rig)]
    await rig.upstream.ask("resume")
    for round_ in (2, 3):
        await _flood(rig, scale, m, nursery, pool, round_)
        rss.append(await _released(rig))
    grew = rss[2] - rss[1]
    m.report.notes.append(f"storm: gateway RSS once each round's clients left: {' → '.join(f'{r / 1024:.1f}' for r in rss)} MiB "
                          f"({grew / 1024:+.1f} MiB in round 3: "
                          + ("no growth, freed memory reused)" if grew < 2048 else "GROWS: a leak per storm?)"))


async def _flood(rig: Rig, scale: Scale, m: Measure, nursery: trio.Nursery, pool: list[str], round_: int) -> None:
    clients = [await connect(rig.port, f"storm again {n}", nursery) for n in range(scale.storm_clients)]
    await m.start(f"storm round {round_}: {scale.storm_clients} fresh clients, {scale.seconds / 2:g} s")
    until_t = trio.current_time() + scale.seconds / 2
    async with trio.open_nursery() as inner:
        for i, native in enumerate(clients):
            offset = (i * 7) % len(pool)
            inner.start_soon(_storm_client, native, (pool[offset:] + pool[:offset])[: scale.storm_channels], until_t, None)
    await m.window()
    await close_all(clients)


async def storm(rig: Rig, scale: Scale, m: Measure, nursery: trio.Nursery, paced: bool = False) -> None:
    rate = Limits().messages_per_second * 0.8 if paced else None
    await rig.upstream.ask("feed storm 10")
    await rig.upstream.ask("feed acct 20")
    pool = [f"trade:storm:P{i}/USDT" for i in range(4 * scale.storm_channels)]
    clients = [await connect(rig.port, f"storm client {n}", nursery, exchange="acct") for n in range(scale.storm_clients)]
    for n, native in enumerate(clients):
        await subscribe(native, [f"trade:acct:C{n}/USDT"])
    await until(lambda: all(c.tally.replies["subscribed"] >= 1 for c in clients))
    what = f"{scale.storm_clients} clients × {scale.storm_channels} channels, " + (
        f"{rate:.0f} toggles/s each (80 % of the rate limit)" if rate else "as fast as they can")
    await m.start(f"storm: {what}")
    sent = [0] * len(clients)
    until_t = trio.current_time() + scale.seconds

    async def run(i: int) -> None:
        offset = (i * 7) % len(pool)
        channels = (pool[offset:] + pool[:offset])[: scale.storm_channels]
        sent[i] = await _storm_client(clients[i], channels, until_t, 1 / rate if rate else None)

    async with trio.open_nursery() as inner:
        for i in range(len(clients)):
            inner.start_soon(run, i)
    await m.window()
    if scale.settle:
        await _settles(rig, m, clients, [(pool[(i * 7) % len(pool):] + pool[:(i * 7) % len(pool)])[: scale.storm_channels]
                                         for i in range(len(clients))], sent)
    await m.quiet()
    drained = await drain_all(clients)
    for n, (native, ok) in enumerate(zip(clients, drained, strict=True)):
        t = native.tally
        if t.close is not None and t.close[0] == 1008 and t.errors["RATE_LIMITED"]:  # the flood rule did its job
            m.report.lines.append((f"{native.label}: closed for flooding after {sent[n]:,} toggles (RATE_LIMITED×"
                                   f"{t.errors['RATE_LIMITED']}, then {t.close[0]} {t.close[1]!r}): expected, no accounting", True))
            continue
        line, good = account(f"{native.label} trade:acct:C{n}/USDT", t, rig.published_for([f"acct C{n}/USDT"]), ok)
        m.report.lines.append((f"{line}  ({sent[n]:,} toggles sent, {t.other_trades:,} storm trades received)", good))
    errors = sum((c.tally.errors for c in clients), start=Counter[str]())
    closed = sum(1 for c in clients if c.tally.close or c.tally.eof)
    changes = sum(sent) * scale.storm_channels
    cpu = m.report.windows[-1].cpu_seconds
    m.report.notes.append(f"storm: {sum(sent):,} toggle messages sent ({changes:,} channel changes; the window's gateway "
                          f"CPU / changes = {cpu / max(1, changes) * 1e6:.1f} µs, replies and the steady streams included); error replies "
                          f"{dict(errors) or 'none'}; {closed}/{len(clients)} clients closed by the gateway")
    await close_all(clients)
    if not paced:
        await _storm_again(rig, scale, m, nursery, pool)


#: How long a storm client waits for its token bucket before its final subscribe (50 tokens/s).
BUCKET_REFILL_SECONDS = 1.0


async def _settles(rig: Rig, m: Measure, clients: list[Native], channels: list[list[str]], sent: list[int]) -> None:
    """After the storm every client still connected ends subscribed to its channels: the upstream
    scope must come to hold every stream wanted (bounded wait; the hello rate limit applies)."""
    wanted = {BYSTANDER_CHANNEL}
    # Which toggle was applied last cannot be told from the toggles sent (many were refused with
    # RATE_LIMITED), so every client still connected subscribes its channels once more (holding
    # them already is fine), after its token bucket has refilled.
    await trio.sleep(BUCKET_REFILL_SECONDS)
    for n, (native, mine, _count) in enumerate(zip(clients, channels, sent, strict=True)):
        if native.tally.eof or native.tally.close is not None:
            continue  # a client the gateway closed wants nothing any more
        await subscribe(native, mine)
        wanted |= {*mine, f"trade:acct:C{n}/USDT"}
    started = trio.current_time()
    scope = 0
    with trio.move_on_after(SETTLE_TIMEOUT):
        while (scope := (await rig.upstream.ask("stats"))["scope"]) != len(wanted):  # noqa: ASYNC110 (another process)
            await trio.sleep(0.1)
    took = trio.current_time() - started
    settled = scope == len(wanted)
    m.report.lines.append((f"after the storm: upstream scope {scope} symbols for {len(wanted)} streams wanted"
                           + (f", settled in {took:.1f} s" if settled else f" — NOT SETTLED after {took:.0f} s"), settled))


async def stale(rig: Rig, scale: Scale, m: Measure, nursery: trio.Nursery) -> None:
    per = STALE_PER_CONNECTION
    total = scale.stale_connections * per
    limiter = trio.CapacityLimiter(CONNECT_LIMIT)
    clients: list[Native] = [None] * scale.stale_connections  # type: ignore[list-item]

    async def open_one(c: int) -> None:
        async with limiter:
            clients[c] = await connect(rig.port, f"stale conn {c}", nursery)
            await subscribe(clients[c], [f"trade:stale:S{c}N{i}/USDT" for i in range(per)])

    await m.start(f"stale: one subscribe of {per:,} channels")
    started = trio.current_time()
    await open_one(0)
    await until(lambda: clients[0].tally.replies["subscribed"] >= per)
    await trio.sleep(scale.linger)
    await m.window(f"stale: subscribe {total - per:,} more streams ({scale.stale_connections - 1} conns × {per:,} at once)")
    async with trio.open_nursery() as inner:
        for c in range(1, scale.stale_connections):
            inner.start_soon(open_one, c)
    subscribed = await until(lambda: all(c.tally.replies["subscribed"] >= per for c in clients))
    took = trio.current_time() - started
    m.report.notes.append(f"stale: {total:,} subscriptions confirmed in {took:.2f} s" if subscribed
                          else f"stale: NOT all {total:,} subscriptions confirmed within {REPLY_TIMEOUT:.0f} s")
    await m.window(f"stale: {total:,} streams go stale at once (stale_after {scale.stale_after:g} s)")
    all_stale = await until(lambda: all(c.tally.statuses["stale"] >= per for c in clients), scale.stale_after + 10)
    took = trio.current_time() - started
    await trio.sleep(scale.linger)  # keep measuring the bystander just past the burst
    await m.window()
    stale_seen = sum(c.tally.statuses["stale"] for c in clients)
    m.report.notes.append(f"stale: {stale_seen:,}/{total:,} stale statuses received" +
                          (f", the last {took:.2f} s after the first subscribe" if all_stale else " (NOT ALL)"))
    await m.quiet()
    drained = await drain_all(clients)
    _aggregate(m.report, "stale conn", clients, drained, [0] * len(clients))
    await close_all(clients)


def _aggregate(report: Report, role: str, clients: list[Native], drained: list[bool], published: list[int]) -> None:
    """One line for a crowd whose clients all balance; every client that does not, on its own line."""
    lines = [account(c.label, c.tally, p, ok) for c, ok, p in zip(clients, drained, published, strict=True)]
    bad = [(line, ok) for line, ok in lines if not ok]
    report.lines.extend(bad)
    good = len(lines) - len(bad)
    delivered = sum(c.tally.trades for c in clients)
    report.lines.append((f"{good}/{len(lines)} {role} clients balanced (published {sum(published):,} = delivered "
                         f"{delivered:,} + dropped {sum(c.tally.missed for c in clients):,})", not bad))


async def idle(rig: Rig, scale: Scale, m: Measure, nursery: trio.Nursery) -> None:
    """Two rounds of open, hold, close: RSS that grows again in the second round is a leak,
    RSS that stays is the allocator keeping freed memory."""
    rss = []
    for round_ in (1, 2):
        await _idle_round(rig, scale, m, nursery, round_)
        rss.append(await _released(rig))
    m.report.notes.append(f"idle: gateway RSS after round 1 closed {rss[0] / 1024:.1f} MiB, after round 2 closed "
                          f"{rss[1] / 1024:.1f} MiB ({(rss[1] - rss[0]) / 1024:+.1f} MiB: "
                          + ("no growth, freed memory reused)" if rss[1] - rss[0] < 2048 else "GROWS: a leak per connection?)"))


async def _idle_round(rig: Rig, scale: Scale, m: Measure, nursery: trio.Nursery, round_: int) -> None:
    n = scale.idle_connections
    await m.start(f"idle round {round_}: open {n:,} connections")
    limiter = trio.CapacityLimiter(CONNECT_LIMIT)
    clients: list[Native] = []
    refused: list[str] = []

    async def open_one(i: int) -> None:
        async with limiter:
            try:
                clients.append(await connect(rig.port, f"idle {i}", nursery))
            except (OSError, HandshakeRefused) as exc:
                refused.append(str(exc))

    async with trio.open_nursery() as inner:
        for i in range(n):
            inner.start_soon(open_one, i)
    await m.window(f"idle round {round_}: hold {len(clients):,} connections {scale.seconds / 2:g} s")
    await trio.sleep(scale.seconds / 2)
    await m.window()
    still = sum(1 for c in clients if not c.tally.eof)
    rss, _ = rig.rss()
    m.report.notes.append(f"idle round {round_}: {len(clients):,} opened, {len(refused)} refused {sorted(set(refused))[:3]}, "
                          f"{still:,} still open at the end; gateway RSS {rss / 1024:.1f} MiB with them")
    if round_ == 1:
        await m.quiet()
        await rig.upstream.ask("resume")
    drained = await drain_all(clients)
    _aggregate(m.report, f"idle (round {round_})", clients, drained, [0] * len(clients))
    await close_all(clients)


async def _watch_peers(rig: Rig, baseline_peers: int, seen: dict[str, float], started: float, stop: trio.Event) -> None:
    """When the gateway's peer count first drops (a client was cut off), relative to `started`."""
    while not stop.is_set():
        stats = await rig.gateway.ask("stats")
        if stats["peers"] < baseline_peers and "first cut" not in seen:
            seen["first cut"] = trio.current_time() - started
        if stats["peers"] < baseline_peers - 1 and "second cut" not in seen:
            seen["second cut"] = trio.current_time() - started
        with trio.move_on_after(0.1):
            await stop.wait()


async def nonreader(rig: Rig, scale: Scale, m: Measure, nursery: trio.Nursery) -> None:
    channels = [f"trade:busy:B{i}/USDT" for i in range(scale.busy_symbols)]
    await rig.upstream.ask(f"feed busy {scale.busy_rate:g}")
    dead = await connect(rig.port, "never reads", nursery, read=False, rcvbuf=16384)
    slow = await connect(rig.port, f"pauses {scale.reader_pause:g} s", nursery, read=False, rcvbuf=16384)
    for native in (dead, slow):
        await subscribe(native, channels)
    rate = scale.busy_rate * scale.busy_symbols
    hold = scale.write_stall + scale.after_stall
    await m.start(f"never reads: {rate:,.0f} trades/s unread for {hold:g} s (write_stall_seconds {scale.write_stall:g})")
    started = trio.current_time()
    seen: dict[str, float] = {}
    stop = trio.Event()
    peers = (await rig.gateway.ask("stats"))["peers"]
    nursery.start_soon(_watch_peers, rig, peers, seen, started, stop)
    await trio.sleep(scale.reader_pause)
    nursery.start_soon(read_into, slow.client, slow.tally)
    await trio.sleep(hold - scale.reader_pause)
    stop.set()
    await m.window()
    await m.quiet()
    ok = await drain(slow.client, slow.tally)
    m.report.lines.append(account(f"pauses {scale.reader_pause:g} s, then reads", slow.tally, rig.published_on("busy"), ok))
    with trio.move_on_after(5):
        await read_into(dead.client, dead.tally)
    t = dead.tally
    cut = f"cut off {seen['first cut']:.1f} s after the load started" if "first cut" in seen else "NOT cut off"
    close = f"close frame {t.close[0]} {t.close[1]!r}" if t.close else "no close frame"
    m.report.lines.append((f"never reads: {cut}; then read {t.trades:,} trades + {t.missed:,} reported dropped, {close}"
                           f" (published while it was there: ≤ {rig.published_on('busy'):,})", "first cut" in seen))
    if "second cut" in seen:
        m.report.notes.append(f"non-reader: a SECOND client was cut off too, {seen['second cut']:.1f} s in (the slow reader?)")
    await close_all([dead, slow])


async def hostile_upstream(rig: Rig, scale: Scale, m: Measure, nursery: trio.Nursery) -> None:
    channels = [f"trade:hostile:H{i}/USDT" for i in range(scale.hostile_symbols)]
    reader = await connect(rig.port, "hostile-stream reader", nursery, exchange="hostile")
    await subscribe(reader, channels)
    await until(lambda: reader.tally.replies["subscribed"] >= len(channels))
    await rig.upstream.ask(f"hostile {scale.hostile_ratio:g}")
    await rig.upstream.ask("feed hostile max")
    await m.start(f"hostile upstream: full rate, {scale.hostile_ratio:g} hostile frame per valid trade")
    await trio.sleep(scale.seconds)
    await m.window()
    await m.quiet()
    ok = await drain(reader.client, reader.tally)
    m.report.lines.append(account(f"reader of {len(channels)} hostile-mixed streams", reader.tally, rig.published_on("hostile"), ok))
    sent, published = rig.upstream_vs_tap("hostile")
    verdict = "ok" if sent == published else ("HOSTILE FRAMES BECAME EVENTS" if published > sent else "VALID FRAMES LOST")
    m.report.lines.append((f"upstream valid trades on hostile streams {sent:,} = published {published:,} → {verdict}", sent == published))
    _, body = await healthz(rig.port)
    for name, h in body.get("providers", {}).items():
        m.report.notes.append(f"hostile: provider {name}: malformed_frames {h.get('malformed_frames')}, unknown "
                              f"{h.get('unknown_messages')}, reconnects {h.get('reconnects')}, state {h.get('state')}")
    await rig.upstream.ask("feed hostile 0")
    await rig.upstream.ask("hostile 0")
    await rig.upstream.ask("resume")
    await _probe_catalogue(rig, m)
    await _after_hostile(rig, m, scale)
    await close_all([reader])


async def _probe(rig: Rig, index: int, sid: str) -> str:
    """What the gateway made of hostile frame `index`: sent alone, followed by one valid trade."""
    key = stream_of(sid)
    before = await rig.gateway.ask("stats")
    opened = (await rig.upstream.ask("stats"))["opened"]
    await rig.upstream.ask(f"probe {index} {sid}")
    after = before
    with trio.move_on_after(PROBE_TIMEOUT):
        while after["trades"].get(key, 0) <= before["trades"].get(key, 0):
            await trio.sleep(0.01)
            after = await rig.gateway.ask("stats")
    if (await rig.upstream.ask("stats"))["opened"] != opened:
        return "ENDED THE CONNECTION"
    events = after["trades"].get(key, 0) - before["trades"].get(key, 0) - 1
    if events < 0:
        return "NOT ANSWERED (the valid trade after it never came out)"
    if events > 0:
        return "BECAME AN EVENT"
    (old,), (new,) = before["health"].values(), after["health"].values()
    if new["malformed_frames"] > old["malformed_frames"]:
        return "malformed (counted)"
    if new["unknown_messages"] > old["unknown_messages"]:
        return "unknown type (counted)"
    return "dropped WITHOUT BEING COUNTED"


async def _probe_catalogue(rig: Rig, m: Measure) -> None:
    """Each hostile frame on its own: counted as malformed (or unknown), never an event or a drop."""
    sid = symbol_id("hostile", "H0")
    verdicts: dict[str, list[str]] = {}
    for index, name in enumerate(hostile.NAMES):
        verdicts.setdefault(await _probe(rig, index, sid), []).append(name)
    for verdict, names in sorted(verdicts.items()):
        good = verdict.endswith("(counted)")
        text = f"hostile frames one by one, {verdict}: {len(names)}" + ("" if good and len(names) > 3 else f" — {', '.join(names)}")
        m.report.lines.append((text, good or "WITHOUT" in verdict))
        if "WITHOUT" in verdict:
            m.report.notes.append(f"hostile: {len(names)} frame kind(s) neither became events nor were counted: {', '.join(names)}")


async def _reconnects(rig: Rig, command: str, timeout: float = 8.0) -> str:
    before = (await rig.upstream.ask("stats"))["opened"]
    await rig.upstream.ask(command)
    start = trio.current_time()
    with trio.move_on_after(timeout):
        while (await rig.upstream.ask("stats"))["opened"] == before:  # noqa: ASYNC110 (another process)
            await trio.sleep(0.05)
        return f"the adapter reconnected {trio.current_time() - start:.2f} s later"
    return f"no reconnect within {timeout:g} s"


async def _after_hostile(rig: Rig, m: Measure, scale: Scale) -> None:
    """Connection-level hostility, after the accounting: a malformed run past MALFORMED_RUN_LIMIT
    (must reconnect) and one frame past the client's message size limit."""
    await m.start("after a 150-frame malformed run and a 2 MB frame")
    m.report.notes.append(f"hostile: 150 malformed frames in a row → {await _reconnects(rig, 'burst 150')}")
    sid = symbol_id("steady", "BY")
    m.report.notes.append(f"hostile: one 2 MB frame → {await _reconnects(rig, f'oversized 2000000 {sid}')}")
    await trio.sleep(scale.linger)
    await m.window()


LoadFn = Callable[[Rig, Scale, Measure, trio.Nursery], Awaitable[None]]


async def storm_paced(rig: Rig, scale: Scale, m: Measure, nursery: trio.Nursery) -> None:
    await storm(rig, scale, m, nursery, paced=True)


@dataclass(frozen=True)
class Load:
    name: str
    run: LoadFn
    limits: Callable[[Scale], str] = lambda scale: ""
    policy: Callable[[Scale], str] = lambda scale: ""


LOADS: list[Load] = [
    Load("baseline", baseline),
    Load("storm", storm),
    Load("storm-paced", storm_paced),
    Load("stale", stale, policy=lambda s: f"stale_after = {s.stale_after}"),
    Load("idle", idle),
    Load("nonreader", nonreader, limits=lambda s: f"write_stall_seconds = {s.write_stall}"),
    Load("hostile", hostile_upstream),
]
