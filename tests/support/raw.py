"""Raw WebSocket clients, for tests about what the bytes themselves do: hostile frames, a tiny
kernel receive buffer, a client that never reads. Over a real socket (`upgraded_socket`) or over
memory streams handed to `Server.handle_stream` (`upgraded_stream`, `raw_stream`)."""

from __future__ import annotations

import socket
import struct

import trio
import trio.testing

UPGRADE = (b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


async def upgraded_socket(port: int, receive_buffer: int = 4096) -> trio.socket.SocketType:
    """A socket with the smallest receive buffer, upgraded on `/stream` of 127.0.0.1:`port`."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", port))
    await sock.send(UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        head += await sock.recv(1)
    return sock


def raw_stream(server, nursery: trio.Nursery, address: str | None = "127.0.0.1", *, lockstep: bool = False) -> trio.abc.Stream:
    """A memory stream to `server` from client `address` (None: as if no address were known).
    `lockstep`: the server's writes block until this end reads them, like a full socket buffer."""
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_end, server_end = pair()
    nursery.start_soon(server.handle_stream, server_end, address)
    return client_end


async def read_head(stream: trio.abc.Stream) -> tuple[bytes, bytes]:
    """The response head, and whatever arrived after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, f"closed before a whole response head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


async def upgraded_stream(server, nursery: trio.Nursery, *, lockstep: bool = False, address: str = "127.0.0.1",
                          request: bytes = UPGRADE) -> tuple[trio.abc.Stream, bytes]:
    """A memory stream past its 101 answer, and the bytes that followed the head."""
    stream = raw_stream(server, nursery, address, lockstep=lockstep)
    await stream.send_all(request)
    head, rest = await read_head(stream)
    assert head.startswith(b"HTTP/1.1 101"), head
    return stream, rest


async def read_to_end(stream: trio.abc.Stream, already: bytes = b"") -> bytes:
    """Everything until the server closes."""
    data = already
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


def masked_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """A client frame of any length (zero mask unless `masked` is False, which no client may send)."""
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload)
    if size < 126:
        length = bytes([size])
    elif size < 65536:
        length = bytes([126]) + struct.pack("!H", size)
    else:
        length = bytes([127]) + struct.pack("!Q", size)
    if not masked:
        return bytes([first]) + length + payload
    return bytes([first, 0x80 | length[0]]) + length[1:] + b"\0\0\0\0" + payload


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked server frame in `data` (a cut-off last frame is left out)."""
    frames, at = [], 0
    while at + 2 <= len(data):
        opcode, length, at = data[at] & 0x0F, data[at + 1] & 0x7F, at + 2
        if length == 126:
            (length,), at = struct.unpack_from("!H", data, at), at + 2
        elif length == 127:
            (length,), at = struct.unpack_from("!Q", data, at), at + 8
        if at + length > len(data):
            break
        frames.append((opcode, data[at : at + length]))
        at += length
    return frames


def close_of(data: bytes) -> tuple[int, str] | None:
    """The (code, reason) of the first close frame in `data`, or None if there is none."""
    for opcode, payload in server_frames(data):
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0], payload[2:].decode()
    return None
