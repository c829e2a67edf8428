"""Server-to-client WebSocket frames, built once and shared.

A server frame is unmasked and we send no extensions, so the bytes of a frame depend only on its
payload: one event is framed once per output format and the same bytes go to every client that
wants it. Client-to-server frames (masked) are parsed by wsproto, not here. RFC 6455 §5.2.
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8

_FIN = 0x80
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def frame(opcode: int, payload: bytes) -> bytes:
    """One complete (FIN) unmasked frame."""
    length = len(payload)
    if length < 126:
        return _SHORT.pack(_FIN | opcode, length) + payload
    if length < 65536:
        return _MEDIUM.pack(_FIN | opcode, 126, length) + payload
    return _LONG.pack(_FIN | opcode, 127, length) + payload


def text_frame(payload: bytes) -> bytes:
    """`payload` must already be UTF-8 (msgspec's JSON encoder guarantees it)."""
    return frame(OP_TEXT, payload)


def binary_frame(payload: bytes) -> bytes:
    return frame(OP_BINARY, payload)


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    # Control frames carry at most 125 bytes: 2 for the code, the rest for the reason, cut on a
    # character boundary (a reason that is not valid UTF-8 makes clients fail the connection).
    text = reason.encode()[:123].decode("utf-8", "ignore").encode()
    return frame(OP_CLOSE, struct.pack("!H", code) + text)
