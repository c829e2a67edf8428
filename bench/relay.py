"""Full-path benchmark: CoinAPI emulator → mdgateway → native clients, against a bare relay.

Each target runs in its own process (as in production), fed by a CoinAPI emulator process; the
clients live in this process and parse frames with a minimal reader so they are not the bottleneck.
For 1 and 10 clients it prints, per target (then the same with `blast_upstream.py`, a source that
is never the bottleneck, to show where the target itself saturates):
- saturated: messages/second delivered per client and in total, emulator at full speed, and the
  target process's CPU time per upstream message (the figure that does not depend on which of the
  three processes sharing two cores happens to be the bottleneck);
- paced: latency p50/p99 from the emulator's `time_coinapi` stamp to the client's receipt, at a rate
  well below saturation, so it measures the path rather than queueing; for mdgateway also the part
  spent inside the gateway (from its own receive stamp `ts_gateway`).
Loopback only; every phase is bounded in time and stops by itself.

    python bench/relay.py [--seconds 4] [--clients 1,10] [--paced-rate 200]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import msgspec
import trio

from providers.common.market import DEFAULT_INSTRUMENTS
from schemas.timeutil import parse_iso_ns

PYTHON = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))
EXCHANGES = sorted({i.exchange for i in DEFAULT_INSTRUMENTS})
WARMUP_SECONDS = 1.0
SAMPLE_EVERY = 8  # decode one message in this many for latency; counting needs only the frame header


class NativeStamp(msgspec.Struct):
    ts_provider: int | None = None
    ts_gateway: int | None = None


class CoinApiStamp(msgspec.Struct):
    time_coinapi: str | None = None


@dataclass
class ClientResult:
    messages: int = 0
    latencies_us: list[float] = field(default_factory=list)
    inside_us: list[float] = field(default_factory=list)  # mdgateway only: since its receive stamp


@dataclass
class PhaseResult:
    clients: list[ClientResult]
    cpu_seconds: float  # the target process's CPU time during the measured window


# ----- processes ---------------------------------------------------------------------------


def _spawn(args: list[str], pattern: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    """Start a process and wait (bounded) for the line announcing its port."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(pattern, line)
        if match:
            return proc, int(match.group(1))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"{args[:4]} did not start")


def _emulator(rate: float) -> tuple[subprocess.Popen, int]:
    return _spawn([PYTHON, "-m", "gateway", "--log-level", "WARNING", "emulate", "coinapi", "--rate", str(rate)],
                  r"listening on ws://127\.0\.0\.1:(\d+)")


def _blast() -> tuple[subprocess.Popen, int]:
    return _spawn([PYTHON, os.path.join(HERE, "blast_upstream.py")], r"listening on ws://127\.0\.0\.1:(\d+)")


def _gateway(upstream_port: int) -> tuple[subprocess.Popen, int]:
    config = f"""
[providers.ca]
kind = "coinapi"
url = "ws://127.0.0.1:{upstream_port}/v1/"
api_key_env = "BENCH_COINAPI_KEY"
[routes]
trade = ["ca"]
"""
    path = os.path.join(tempfile.mkdtemp(), "bench.toml")
    with open(path, "w") as f:
        f.write(config)
    env = {**os.environ, "BENCH_COINAPI_KEY": "00000000-0000-0000-0000-000000000000"}
    return _spawn([PYTHON, "-m", "gateway", "--log-level", "WARNING", "run", "--config", path, "--port", "0"],
                  r"listening on 127\.0\.0\.1:(\d+)", env)


def _bare_relay(upstream_port: int) -> tuple[subprocess.Popen, int]:
    return _spawn([PYTHON, os.path.join(HERE, "bare_relay.py"), "--upstream", f"ws://127.0.0.1:{upstream_port}/v1/"],
                  r"listening on ws://127\.0\.0\.1:(\d+)")


# ----- a minimal WebSocket client --------------------------------------------------------------


def _masked_text(payload: bytes) -> bytes:
    # A zero mask is a valid mask: the payload goes out unchanged.
    assert len(payload) < 65536
    if len(payload) < 126:
        return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload
    return bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + b"\0\0\0\0" + payload


async def _client(port: int, subscribe: bytes, native: bool, until: float, start: float, result: ClientResult,
                  ready: trio.Event) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    path = b"/stream" if native else b"/"
    await stream.send_all(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % path)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += await stream.receive_some(65536)
    buffer = buffer.split(b"\r\n\r\n", 1)[1]
    await stream.send_all(_masked_text(subscribe))
    ready.set()
    decoder = msgspec.json.Decoder(NativeStamp if native else CoinApiStamp)
    seen = 0
    with trio.move_on_at(until):
        while True:
            chunk = await stream.receive_some(1 << 20)
            if not chunk:
                break
            now = time.time_ns()
            buffer += chunk
            offset, end = 0, len(buffer)
            while end - offset >= 2:
                length = buffer[offset + 1] & 0x7F
                head = 2
                if length == 126:
                    if end - offset < 4:
                        break
                    length, head = int.from_bytes(buffer[offset + 2:offset + 4], "big"), 4
                elif length == 127:
                    if end - offset < 10:
                        break
                    length, head = int.from_bytes(buffer[offset + 2:offset + 10], "big"), 10
                if end - offset < head + length:
                    break
                payload = buffer[offset + head:offset + head + length]
                offset += head + length
                seen += 1
                if trio.current_time() >= start and payload[:1] == b"{":
                    result.messages += 1
                    if seen % SAMPLE_EVERY == 0:
                        _sample(decoder.decode(payload), now, native, result)
            buffer = buffer[offset:]
    await stream.aclose()


def _sample(stamp, now: int, native: bool, result: ClientResult) -> None:
    sent = stamp.ts_provider if native else (parse_iso_ns(stamp.time_coinapi) if stamp.time_coinapi else None)
    if sent is not None:
        result.latencies_us.append((now - sent) / 1000)
    if native and stamp.ts_gateway is not None:
        result.inside_us.append((now - stamp.ts_gateway) / 1000)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(port: int, native: bool, clients: int, seconds: float, pid: int) -> PhaseResult:
    channels = [f"trade:{exchange}" for exchange in EXCHANGES]
    subscribe = msgspec.json.encode({"type": "subscribe", "channels": channels})
    results = [ClientResult() for _ in range(clients)]
    start = trio.current_time() + WARMUP_SECONDS
    until = start + seconds
    cpu: list[float] = []

    async def sample_cpu() -> None:
        await trio.sleep_until(start)
        cpu.append(_cpu_seconds(pid))
        await trio.sleep_until(until)
        cpu.append(_cpu_seconds(pid))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_cpu)
        for result in results:
            ready = trio.Event()
            nursery.start_soon(_client, port, subscribe, native, until, start, result, ready)
            await ready.wait()
    return PhaseResult(results, cpu[1] - cpu[0])


def run_phase(target: str, clients: int, rate: float | None, seconds: float) -> PhaseResult:
    """`rate` None: the blast upstream instead of the emulator."""
    emulator, upstream_port = _blast() if rate is None else _emulator(rate)
    try:
        proc, port = (_gateway if target == "mdgateway" else _bare_relay)(upstream_port)
        try:
            return trio.run(_measure, port, target == "mdgateway", clients, seconds, proc.pid)
        finally:
            proc.kill()
            proc.wait()
    finally:
        emulator.kill()
        emulator.wait()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--clients", default="1,10")
    parser.add_argument("--paced-rate", type=float, default=200.0, help="emulator steps/s for the latency phase")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    print(f"{'target':<11} {'clients':>7} | {'msg/s per client':>16} {'deliveries/s':>12} {'CPU µs/msg':>10} |"
          f" {'p50 µs':>8} {'p99 µs':>8} | {'inside p50':>10} {'p99':>7}   (paced at {args.paced_rate:.0f} steps/s)")
    for clients in counts:
        for target in ("bare-relay", "mdgateway"):
            saturated = run_phase(target, clients, 0, args.seconds)
            paced = run_phase(target, clients, args.paced_rate, args.seconds)
            per_client = statistics.mean(r.messages for r in saturated.clients) / args.seconds
            total = sum(r.messages for r in saturated.clients) / args.seconds
            cpu_per_message = saturated.cpu_seconds / max(1, per_client * args.seconds) * 1e6
            latencies = [lat for r in paced.clients for lat in r.latencies_us]
            inside = [lat for r in paced.clients for lat in r.inside_us]
            inside_text = f"{_percentile(inside, 50):>10,.0f} {_percentile(inside, 99):>7,.0f}" if inside else f"{'-':>10} {'-':>7}"
            print(f"{target:<11} {clients:>7} | {per_client:>16,.0f} {total:>12,.0f} {cpu_per_message:>10,.1f} |"
                  f" {_percentile(latencies, 50):>8,.0f} {_percentile(latencies, 99):>8,.0f} | {inside_text}", flush=True)
    print()
    print("With the blast upstream (pre-shaped trades, batched writes): where the target itself saturates")
    print(f"{'target':<11} {'clients':>7} | {'msg/s per client':>16} {'deliveries/s':>12} {'CPU µs/msg':>10}")
    for clients in counts:
        for target in ("bare-relay", "mdgateway"):
            blasted = run_phase(target, clients, None, args.seconds)
            per_client = statistics.mean(r.messages for r in blasted.clients) / args.seconds
            total = sum(r.messages for r in blasted.clients) / args.seconds
            cpu_per_message = blasted.cpu_seconds / max(1, per_client * args.seconds) * 1e6
            print(f"{target:<11} {clients:>7} | {per_client:>16,.0f} {total:>12,.0f} {cpu_per_message:>10,.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
