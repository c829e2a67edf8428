"""A minimal WebSocket client over a raw Trio socket, and the tally of what a native client got.

Raw on purpose: the load clients must cost far less than the gateway they load, a client that
never reads must really leave its socket unread (a library would read for it), and the receive
buffer must be settable before connecting. Frames from the gateway are unmasked and never
fragmented; pings are answered. Must never: talk to anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
import trio

HOST = "127.0.0.1"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_CHUNK = 1 << 18
SEND_TIMEOUT = 10.0


class HandshakeRefused(Exception):
    """The gateway answered the upgrade with something other than 101."""

    def __init__(self, status_line: str) -> None:
        super().__init__(status_line)
        self.status_line = status_line


def masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (FIN set) with a zero mask, which is a valid mask: the payload is unchanged."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def parse_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Complete unmasked frames at the front of `buffer` (removed from it)."""
    out: list[tuple[int, bytes]] = []
    offset, end = 0, len(buffer)
    while end - offset >= 2:
        opcode, length, head = buffer[offset] & 0x0F, buffer[offset + 1] & 0x7F, 2
        if length == 126:
            if end - offset < 4:
                break
            length, head = int.from_bytes(buffer[offset + 2 : offset + 4], "big"), 4
        elif length == 127:
            if end - offset < 10:
                break
            length, head = int.from_bytes(buffer[offset + 2 : offset + 10], "big"), 10
        if end - offset < head + length:
            break
        out.append((opcode, bytes(buffer[offset + head : offset + head + length])))
        offset += head + length
    del buffer[:offset]
    return out


class WsClient:
    def __init__(self, stream: trio.SocketStream, leftover: bytes) -> None:
        self.stream = stream
        self.buffer = bytearray(leftover)
        self._send_lock = trio.Lock()

    @classmethod
    async def connect(cls, port: int, path: str = "/stream", *, rcvbuf: int | None = None,
                      headers: tuple[str, ...] = ()) -> WsClient:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window the gateway sees is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            await sock.connect((HOST, port))
        except BaseException:
            sock.close()
            raise
        stream = trio.SocketStream(sock)
        extra = "".join(f"{h}\r\n" for h in headers)
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            head += chunk
        status, _, rest = head.partition(b"\r\n\r\n")
        line = status.split(b"\r\n", 1)[0].decode("latin-1")
        if " 101 " not in line + " ":
            await stream.aclose()
            raise HandshakeRefused(line or "connection closed during the handshake")
        return cls(stream, rest)

    async def send(self, payload: bytes, opcode: int = TEXT) -> None:
        """One whole frame. Shielded: a frame cut by a cancellation would corrupt every frame after
        it (the gateway rightly answers 1007/1002); a send that cannot finish in SEND_TIMEOUT
        breaks the connection instead."""
        async with self._send_lock:
            with trio.move_on_after(SEND_TIMEOUT) as scope:
                scope.shield = True
                await self.stream.send_all(masked(opcode, payload))
            if scope.cancelled_caught:
                await trio.aclose_forcefully(self.stream)
                raise trio.BrokenResourceError("send timed out")

    async def frames(self) -> AsyncIterator[list[tuple[int, bytes]]]:
        """Batches of frames as they arrive (one batch per socket read); ends at EOF or a close
        frame (included). Pings are answered here."""
        while True:
            batch = parse_frames(self.buffer)
            if batch:
                for opcode, payload in batch:
                    if opcode == PING:
                        await self.send(payload, PONG)
                yield batch
                if any(opcode == CLOSE for opcode, _ in batch):
                    return
            try:
                chunk = await self.stream.receive_some(_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not chunk:
                return
            self.buffer += chunk

    async def aclose(self) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                await self.send(b"\x03\xe8", CLOSE)
        await self.stream.aclose()


class _Gap(msgspec.Struct):
    cause: str | None = None
    missed: int | None = None
    exchange: str | None = None


class _Reply(msgspec.Struct):
    type: str | None = None
    code: str | None = None
    state: str | None = None


_gap_decoder = msgspec.json.Decoder(_Gap)
_reply_decoder = msgspec.json.Decoder(_Reply)
_TRADE_PREFIX = b'{"type":"trade"'
_SUBSCRIBED_PREFIXES = (b'{"type":"subscribed"', b'{"type":"unsubscribed"')


@dataclass
class Tally:
    """What one native client received; `missed` counts only `client_overflow` gaps (events the
    gateway dropped for this client), other gap causes are kept apart in `gap_causes`. With
    `exchange` set, only that exchange's trades and gaps are accounted (`trades`, `missed`); the
    rest are `other_trades` (a client toggling other streams keeps one stream for accounting)."""

    exchange: str | None = None
    trades: int = 0
    other_trades: int = 0
    missed: int = 0
    replies: Counter[str] = field(default_factory=Counter)  # subscribed, unsubscribed, pong, ...
    errors: Counter[str] = field(default_factory=Counter)  # by code
    statuses: Counter[str] = field(default_factory=Counter)  # by state
    gap_causes: Counter[str] = field(default_factory=Counter)
    close: tuple[int, str] | None = None  # the close frame the gateway sent, if any
    eof: bool = False
    pongs: int = 0
    pong: trio.Event = field(default_factory=trio.Event)
    _marker: bytes = b""

    def __post_init__(self) -> None:
        self._marker = b'"exchange":"%s"' % (self.exchange or "").encode()

    def take(self, opcode: int, payload: bytes) -> None:
        if opcode == CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.close = (code, payload[2:].decode("utf-8", "replace"))
        elif opcode != TEXT:
            return
        elif payload.startswith(_SUBSCRIBED_PREFIXES):  # the bulk of a storm's replies: no decode
            self.replies["subscribed" if payload[9] == 0x73 else "unsubscribed"] += 1
        elif payload.startswith(_TRADE_PREFIX):
            if self.exchange is None or self._marker in payload:
                self.trades += 1
            else:
                self.other_trades += 1
        else:
            self._control(payload)

    def _control(self, payload: bytes) -> None:
        reply = _reply_decoder.decode(payload)
        kind = reply.type or "?"
        if kind == "gap":
            gap = _gap_decoder.decode(payload)
            self.gap_causes[gap.cause or "?"] += 1
            if gap.cause == "client_overflow" and self.exchange in (None, gap.exchange):
                self.missed += gap.missed or 0
        elif kind == "status":
            self.statuses[reply.state or "?"] += 1
        elif kind == "error":
            self.errors[reply.code or "?"] += 1
        elif kind == "pong":
            self.pongs += 1
            self.pong.set()
            self.pong = trio.Event()
        self.replies[kind] += 1


class Activity:
    """Wakes whoever waits for some client's tally to change (`loads.until`)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def poke(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


ACTIVITY = Activity()


async def read_into(client: WsClient, tally: Tally) -> None:
    """Read until the connection ends, counting everything."""
    async for batch in client.frames():
        for opcode, payload in batch:
            tally.take(opcode, payload)
        ACTIVITY.poke()
    tally.eof = True
    ACTIVITY.poke()


async def drain(client: WsClient, tally: Tally, timeout: float = 10.0) -> bool:
    """Two pings in a row: once the second pong is in, every frame (and gap report) queued for this
    client before the first ping has arrived. False if the client is gone or too slow."""
    if tally.eof or tally.close is not None:
        return False
    with trio.move_on_after(timeout):
        for _ in range(2):
            waiter = tally.pong
            try:
                await client.send(b'{"type":"ping"}')
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
            await waiter.wait()
        return True
    return False
