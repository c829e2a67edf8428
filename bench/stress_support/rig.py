"""One load's rig: the scripted upstream, the gateway and the bystander as child processes, plus
what every load needs from them: RSS, `/healthz`, the quiet point for accounting, and the
accounting itself.

The quiet point: the upstream is paused (it answers once every connection sent its last frame),
then the gateway's tap is read until it has counted every valid trade the upstream sent (or stops
changing), then each accounting client drains (`wsclient.drain`). Only then do "published" (the
tap) and "delivered + reported dropped" (the client) describe the same events.
Must never: touch anything beyond 127.0.0.1, or wait without a deadline.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from stress_support.control import Child, rss_kib, split_cpus
from stress_support.wsclient import HOST, Tally

BYSTANDER_CHANNEL = "trade:steady:BY/USDT"
BYSTANDER_RATE = 500  # trades/s on the bystander's stream: a delivery every 2 ms when all is well
SETTLE_TIMEOUT = 15.0
SETTLE_STABLE = 0.5  # the tap unchanged this long (while short of what was sent): frames were lost

CONFIG = """
[server]
host = "127.0.0.1"
{server}
[limits]
{limits}
[providers.ca]
kind = "coinapi"
emulate = true
{policy}
[routes]
trade = ["ca"]
"""


def stream_of(symbol_id: str) -> str:
    """`STEADY_SPOT_BY_USDT` → the tap's key `steady BY/USDT` (our symbols have no other `_`)."""
    exchange, _, rest = symbol_id.partition("_SPOT_")
    base, _, quote = rest.partition("_")
    return f"{exchange.lower()} {base}/{quote}"


def symbol_id(exchange: str, base: str, quote: str = "USDT") -> str:
    return f"{exchange.upper()}_SPOT_{base}_{quote}"


@dataclass
class Rig:
    upstream: Child
    gateway: Child
    bystander: Child
    port: int
    logs: dict[str, str]
    sent: dict[str, int] = field(default_factory=dict)  # upstream's valid trades per symbol id, at the quiet point
    published: dict[str, int] = field(default_factory=dict)  # the tap's trades per stream, at the quiet point

    def rss(self) -> tuple[int, int]:
        return rss_kib(self.gateway.pid)

    async def quiet(self) -> dict[str, Any]:
        """Pause the upstream and wait until the gateway has published all it will (bounded)."""
        paused = await self.upstream.ask("pause")
        self.sent = paused["sent"]
        expected = sum(self.sent.values())
        last, since = -1, trio.current_time()
        deadline = trio.current_time() + SETTLE_TIMEOUT
        stats: dict[str, Any] = {}
        while trio.current_time() < deadline:
            stats = await self.gateway.ask("stats")
            total = sum(stats["trades"].values())
            if total >= expected:
                break
            if total != last:
                last, since = total, trio.current_time()
            elif trio.current_time() - since >= SETTLE_STABLE:
                break
            await trio.sleep(0.05)
        self.published = stats.get("trades", {})
        return paused

    def published_for(self, streams: Iterable[str]) -> int:
        return sum(self.published.get(s, 0) for s in streams)

    def published_on(self, exchange: str) -> int:
        return sum(n for s, n in self.published.items() if s.split(" ")[0] == exchange)

    def upstream_vs_tap(self, exchange: str) -> tuple[int, int]:
        """(valid trades the upstream sent on `exchange`, trades the gateway published for it)."""
        sent = sum(n for sid, n in self.sent.items() if stream_of(sid).split(" ")[0] == exchange)
        return sent, self.published_on(exchange)


def account(label: str, tally: Tally, published: int, drained: bool) -> tuple[str, bool]:
    """One accounting line, and whether it balances (published = delivered + reported dropped)."""
    got = tally.trades + tally.missed
    ok = drained and got == published
    verdict = "ok" if ok else ("MISMATCH" if drained else "NOT DRAINED (client gone or too slow)")
    extra = []
    if tally.gap_causes:
        extra.append("gaps " + ", ".join(f"{k}×{v}" for k, v in sorted(tally.gap_causes.items())))
    if tally.errors:
        extra.append("errors " + ", ".join(f"{k}×{v}" for k, v in sorted(tally.errors.items())))
    if tally.close:
        extra.append(f"closed by gateway {tally.close[0]} {tally.close[1]!r}")
    elif tally.eof:
        extra.append("connection ended without a close frame")
    line = f"{label}: published {published:,} = delivered {tally.trades:,} + dropped {tally.missed:,} → {verdict}"
    if not ok and drained:
        line += f" (off by {published - got:+,})"
    return line + (f"  [{'; '.join(extra)}]" if extra else ""), ok


async def healthz(port: int) -> tuple[int, dict[str, Any]]:
    """`GET /healthz` on a fresh connection: (status, body); (0, {}) if the gateway does not answer."""
    with trio.move_on_after(5):
        try:
            stream = await trio.open_tcp_stream(HOST, port)
        except OSError:
            return 0, {}
        async with stream:
            await stream.send_all(f"GET /healthz HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        match = re.match(rb"HTTP/1\.1 (\d+)", head)
        try:
            parsed = msgspec.json.decode(body) if body else {}
        except msgspec.DecodeError:
            parsed = {}
        return (int(match.group(1)) if match else 0), parsed if isinstance(parsed, dict) else {}
    return 0, {}


def tracebacks(path: str) -> list[str]:
    """The last line of each traceback in a child's log (the exception itself)."""
    found: list[str] = []
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            j = i + 1
            while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j]):
                j += 1
            found.append(lines[j] if j < len(lines) else line)
    return found


def _files(config: str) -> tuple[str, dict[str, str]]:
    """A fresh folder with the gateway's config; the paths of the children's logs in it."""
    folder = tempfile.mkdtemp(prefix="mdgw-stress-")
    config_path = os.path.join(folder, "gateway.toml")
    with open(config_path, "w") as f:
        f.write(config)
    return config_path, {name: os.path.join(folder, f"{name}.log") for name in ("upstream", "gateway", "bystander")}


@asynccontextmanager
async def open_rig(server: str = "", limits: str = "", policy: str = "") -> AsyncIterator[Rig]:
    """Fresh processes for one load: upstream, then the gateway pointed at it, then the bystander
    on its steady stream (receiving before this yields)."""
    config_path, logs = _files(CONFIG.format(server=server, limits=limits, policy=policy))
    files = {name: open(path, "wb") for name, path in logs.items()}  # noqa: SIM115, ASYNC230 (closed below; local files)
    children: list[Child] = []
    try:
        mine, others = split_cpus()
        # All three import at once; each then waits on stdin for the port it needs.
        upstream = await Child.start("upstream", "stress_support.upstream", [], files["upstream"], others)
        children.append(upstream)
        gateway = await Child.start("gateway", "stress_support.gateway_child", [config_path], files["gateway"], mine)
        children.append(gateway)
        bystander = await Child.start("bystander", "stress_support.bystander", [BYSTANDER_CHANNEL], files["bystander"], others)
        children.append(bystander)
        url = f"ws://{HOST}:{(await upstream.announced())['port']}/v1/"
        port = (await gateway.announced(url))["port"]
        await upstream.ask(f"feed steady {BYSTANDER_RATE}")
        await bystander.announced(str(port))
        await _until_bystander_receives(bystander)
        yield Rig(upstream, gateway, bystander, port, logs)
    finally:
        with trio.CancelScope(shield=True):
            for child in reversed(children):
                await child.stop()
        for f in files.values():
            f.close()


async def _until_bystander_receives(bystander: Child) -> None:
    """The adapter may take a while to bring its first hello up; bounded."""
    with trio.move_on_after(20):
        while not (await bystander.ask("report"))["trades"]:  # noqa: ASYNC110 (another process: nothing to wait on)
            await trio.sleep(0.05)
        return
    raise RuntimeError("the bystander received nothing for 20 s: the gateway or upstream is not working")
