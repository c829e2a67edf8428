"""The line protocol between `bench/stress.py` and its child processes.

A child prints one JSON object per line on stdout: first its announcement (`{"port": N}`), then one
reply per command line it reads on stdin. Logs go to stderr (a file the orchestrator scans for
tracebacks). Every wait here has a deadline: a child that hangs fails the load, never the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import IO, Any

import trio

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bench/
REPLY_TIMEOUT = 30.0


class ChildFailed(RuntimeError):
    pass


class Child:
    """One child process, driven by command lines."""

    def __init__(self, name: str, process: trio.Process, log: IO[bytes]) -> None:
        self.name = name
        self.process = process
        self.log = log
        self._buffer = b""
        self.announcement: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, name: str, module: str, args: list[str], log: IO[bytes], cpus: set[int] | None = None) -> Child:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)}
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", module, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env
        )
        if cpus:
            os.sched_setaffinity(process.pid, cpus)
        return cls(name, process, log)

    async def announced(self, first_line: str | None = None) -> dict[str, Any]:
        """Its announcement; `first_line` is what it waits for first (a port it could not know
        when it was started: children import while their peers start)."""
        if first_line is not None:
            stdin = self.process.stdin
            assert stdin is not None
            await stdin.send_all(first_line.encode() + b"\n")
        self.announcement = await self._line(REPLY_TIMEOUT)
        return self.announcement

    async def _line(self, timeout: float) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        with trio.move_on_after(timeout):
            while b"\n" not in self._buffer:
                chunk = await stdout.receive_some(65536)
                if not chunk:
                    raise ChildFailed(f"{self.name} exited (code {self.process.poll()}); see its log")
                self._buffer += chunk
            line, self._buffer = self._buffer.split(b"\n", 1)
            reply: dict[str, Any] = json.loads(line)
            return reply
        raise ChildFailed(f"{self.name} did not answer within {timeout:.0f} s")

    async def ask(self, command: str, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        stdin = self.process.stdin
        assert stdin is not None
        await stdin.send_all(command.encode() + b"\n")
        return await self._line(timeout)

    async def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with trio.move_on_after(5):
            await self.process.wait()


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, from /proc (Linux)."""
    values = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in values:
                    values[name] = int(rest.split()[0])
    except OSError:
        pass
    return values["VmRSS"], values["VmHWM"]


def split_cpus() -> tuple[set[int], set[int]]:
    """(the gateway's CPUs, everyone else's): with two or more, the gateway gets one of its own, so
    the load generators (this process, the upstream, the bystander) do not take its core."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    return {cpus[-1]}, set(cpus[:-1])


def core_times(cpu: int) -> tuple[int, int]:
    """(idle, total) jiffies of one CPU so far, from /proc/stat: idle left on the gateway's core
    says whether a stall was for want of CPU."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                values = [int(v) for v in line.split()[1:]]
                return values[3] + values[4], sum(values[:8])
    return 0, 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (Linux); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Handler = Callable[[list[str]], Awaitable[dict[str, Any]]]


def first_line() -> str:
    """The child's first stdin line, read byte by byte before Trio starts (a buffered read could
    swallow the commands that follow it)."""
    data = b""
    while not data.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            break
        data += byte
    return data.decode().strip()


def announce(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve_commands(handlers: dict[str, Handler]) -> None:
    """The child's side: read command lines from stdin, answer each with one JSON line; EOF
    (the orchestrator went away) ends the child."""
    stdin = trio.lowlevel.FdStream(os.dup(0))
    buffer = b""
    while True:
        chunk = await stdin.receive_some(65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            words = line.decode().split()
            if not words:
                continue
            handler = handlers.get(words[0])
            reply = {"error": f"unknown command {words[0]!r}"} if handler is None else await handler(words[1:])
            announce(reply)
