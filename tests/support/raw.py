"""A raw WebSocket client on a real socket, for the few tests about what a socket itself does:
a tiny kernel receive buffer, a client that never reads."""

from __future__ import annotations

import socket

import trio

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


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (FIN, zero mask) of at most 125 bytes."""
    assert len(payload) <= 125
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload
