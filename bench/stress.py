"""Hostile load, measured: does any one load stall, bloat or break the gateway for everyone else?

Each load runs against fresh child processes (so the gateway's RSS is its own and no load inherits
another's state): the gateway (`run_gateway` with a counting hub tap, its CoinAPI provider plugged
through `upstream=` into a scripted CoinAPI-shaped upstream), and a bystander client on a steady
500 trades/s stream in a process of its own. Loads (every one bounded in count and time):
  baseline     nothing: the bystander's figures when all is well
  storm        N clients toggling subscribe/unsubscribe of many channels as fast as they can
  storm-paced  the same at 80 % of the per-connection message rate limit
  stale        40,000 streams wanted (40 connections × 1,000), no data: all go stale at once
  idle         1,000 connections opened and held
  nonreader    a client that never reads a busy stream, and one that pauses and then reads
  hostile      the upstream interleaves valid trades with every class of hostile frame at full
               rate; then a malformed run past the reconnect limit, and a 2 MB frame
For each load it prints, per phase: the bystander's largest gap between deliveries (and when it
ended, seconds into the phase), its largest / median ping→pong round trip, and the largest delay
of one of its trades before the gateway read it ("to gw": from the upstream's send, i.e. the
upstream reader's backlog) and inside the gateway ("in gw": read → our receipt); the gateway's CPU
(share of its core), how much of that core nobody used ("idle": near 0, the gateway was short of
CPU; well above 0 with a stall, it was waiting on itself) and the host's load average; the upstream's longest single socket write
("up block": the gateway was not reading its upstream) and longest pause between writes ("up
gap"; far above "up block": the upstream itself was short of CPU, so the gap is not the
gateway's). Per load: the gateway's RSS before / peak / after (clients gone), whether it
survived (`/healthz` answers, the bystander still receives, no traceback in its log), and an
accounting line per client: trades published for its streams (the tap) = delivered + reported
dropped (`gap` `missed`), printed loudly (`!!`) when it does not balance.
The gateway gets a CPU of its own when there are two (the generators share the rest), but other
work on the machine still lands on it: compare rows of one run, and the host load with them.
Loopback only. `--quick` is a smoke run (~30-40 s on a busy 2-core machine, ~2 min default).

    python bench/stress.py [--quick] [--only storm,stale]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import traceback

import trio
from stress_support.control import split_cpus
from stress_support.loads import LOADS, QUICK, Load, Measure, Report, Scale
from stress_support.rig import Rig, healthz, open_rig, tracebacks

LOAD_TIMEOUT = 90.0  # one load, rig included; a load that hangs is reported, the run goes on
LEFTOVER_TIMEOUT = 5.0  # for the gateway to let go of the load's clients after they closed


async def run_load(load: Load, scale: Scale) -> Report:
    report = Report(load.name)
    folder = ""
    try:
        with trio.fail_after(LOAD_TIMEOUT):
            async with open_rig(limits=load.limits(scale), policy=load.policy(scale)) as rig:
                report.rss_before = rig.rss()[0]
                measure = Measure(rig, report)
                async with trio.open_nursery() as nursery:
                    await load.run(rig, scale, measure, nursery)
                    nursery.cancel_scope.cancel()
                report.rss_peak = rig.rss()[1]
                await _verdict(rig, report)
                report.tracebacks = tracebacks(rig.logs["gateway"])
                if report.tracebacks or not all(ok for _, ok in report.lines):
                    report.notes.append(f"logs kept: {os.path.dirname(rig.logs['gateway'])}")
                else:
                    folder = os.path.dirname(rig.logs["gateway"])
    except Exception as exc:  # noqa: BLE001 (a broken load is a finding; the other loads still run)
        report.failed = _describe(exc)
        return report
    if folder:  # a clean load leaves nothing behind in /tmp; a load with a problem keeps its logs
        shutil.rmtree(folder, ignore_errors=True)
    return report


async def _verdict(rig: Rig, report: Report) -> None:
    """After the load's clients left: what is left over, and is the gateway still serving."""
    await rig.upstream.ask("resume")
    await rig.bystander.ask("mark")
    stats = await rig.gateway.ask("stats gc")
    with trio.move_on_after(LEFTOVER_TIMEOUT):  # closes the load's clients sent are still being handled
        while stats["peers"] > 1 or stats["clients"] > 1 or stats["streams"] > 1:
            await trio.sleep(0.1)
            stats = await rig.gateway.ask("stats gc")
    report.rss_after = rig.rss()[0]
    status, _ = await healthz(rig.port)
    await trio.sleep(0.5)
    receiving = (await rig.bystander.ask("report"))["trades"] > 0
    report.survived = f"healthz {status or 'NO ANSWER'}, bystander {'receiving' if receiving else 'NOT RECEIVING'}"
    report.notes.append(f"left over after its clients closed: {stats['peers']} peer(s), {stats['clients']} hub client(s), "
                        f"{stats['streams']} stream(s) (the bystander holds 1 of each)")


def _describe(exc: BaseException) -> str:
    """The innermost exception of a (nested) group, with where it was raised."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" at {os.path.basename(where.filename)}:{where.lineno}" if where else ""
    return f"{type(exc).__name__}: {exc}{place}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def print_report(reports: list[Report]) -> None:
    print()
    print(f"{'load / phase':<64} {'max gap ms':>10} {'(at s)':>6} {'max RTT ms':>10} {'p50 RTT':>8} {'to gw':>7} {'in gw':>7} {'gw CPU':>6} {'idle':>5}"
          f" {'load':>5} {'up block':>8} {'up gap':>7} | {'RSS MiB before→peak→after':>26} | survived")
    for r in reports:
        if r.failed:
            print(f"{r.name:<64} LOAD FAILED: {r.failed}")
        rss = f"{r.rss_before / 1024:.1f} → {r.rss_peak / 1024:.1f} → {r.rss_after / 1024:.1f}"
        for i, w in enumerate(r.windows):
            b = w.bystander
            lost = f" ({b['lost_pongs']} pongs lost)" if b.get("lost_pongs") else ""
            tail = f"{rss:>26} | {r.survived}" if i == 0 else f"{'':>26} |"
            up = w.upstream
            print(f"{w.label[:64]:<64} {_ms(b['max_gap_ms']):>10} {b['max_gap_at']:>6.1f} {_ms(b['max_rtt_ms']):>10}"
                  f" {_ms(b['p50_rtt_ms']):>8} {_ms(b['to_gateway_ms']):>7} {_ms(b['in_gateway_ms']):>7} {w.gateway_cpu:>6.0%} {w.core_idle:>5.0%} {w.host_load:>5.1f} {_ms(up.get('max_send_block_ms')):>8}"
                  f" {_ms(up.get('max_pass_gap_ms')):>7} | {tail}{lost}")
    print()
    for r in reports:
        print(f"[{r.name}]")
        for line, ok in r.lines:
            print(f"  {'  ' if ok else '!!'} {line}")
        for note in r.notes:
            print(f"     {note}")
        for tb in r.tracebacks:
            print(f"  !! TRACEBACK in the gateway log: {tb}")
    bad = sum(1 for r in reports for _, ok in r.lines if not ok) + sum(len(r.tracebacks) for r in reports)
    print(f"\n{bad} problem line(s)" if bad else "\nall accounting lines balance; no traceback in any gateway log")


async def main(names: list[str], scale: Scale) -> list[Report]:
    gateway_cpus, others = split_cpus()
    os.sched_setaffinity(0, others)
    print(f"gateway pinned to CPU {sorted(gateway_cpus)}, load generators to {sorted(others)}; "
          f"host load average {os.getloadavg()[0]:.1f} (other work on this machine inflates every stall)", flush=True)
    reports = []
    for load in LOADS:
        if names and load.name not in names:
            continue
        started = time.monotonic()
        report = await run_load(load, scale)
        print(f"{load.name}: done in {time.monotonic() - started:.1f} s" + (f" — FAILED: {report.failed}" if report.failed else ""),
              flush=True)
        reports.append(report)
    return reports


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (under ~30 s)")
    parser.add_argument("--only", default="", help=f"comma-separated loads: {', '.join(load.name for load in LOADS)}")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in {load.name for load in LOADS}]
    if unknown:
        parser.error(f"unknown load(s) {', '.join(unknown)}")
    print_report(trio.run(main, names, QUICK if args.quick else Scale()))
    sys.exit(0)
