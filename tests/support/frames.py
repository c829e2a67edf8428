"""Reading what the gateway queued for a client: outbox items are complete server frames, and one
item may hold several back to back (one request's replies go out as one control item)."""

from __future__ import annotations

import struct
from collections.abc import Iterable


def payloads(items: Iterable[bytes]) -> list[bytes]:
    """Every frame's payload, in order, from unmasked server frames (RFC 6455 §5.2)."""
    out: list[bytes] = []
    for data in items:
        at = 0
        while at < len(data):
            length, at = data[at + 1] & 0x7F, at + 2
            if length == 126:
                (length,), at = struct.unpack_from("!H", data, at), at + 2
            elif length == 127:
                (length,), at = struct.unpack_from("!Q", data, at), at + 8
            out.append(data[at : at + length])
            at += length
    return out
