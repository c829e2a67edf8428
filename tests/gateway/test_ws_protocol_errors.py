"""Hostile bytes at the port: every WebSocket protocol error ends with a close frame in our words,
every malformed HTTP request gets its status, and none of it leaves a traceback in the log or
disturbs another client. Memory streams under fake time (the close grace passes instantly)."""

import json
import logging
import struct

import pytest
import trio
import trio.testing

from gateway.app import GatewayApp
from gateway.config import Limits, ServerConfig
from gateway.context import GatewayContext
from gateway.hub import Hub
from gateway.server import Server
from tests.gateway.fakes import FakeAdapter
from tests.gateway.test_server import CONFIG
from tests.support.raw import UPGRADE, close_of, masked_frame, raw_stream, read_head, read_to_end, upgraded_stream

LIMITS = Limits(max_message_bytes=4096, max_message_fragments=8, max_request_head_bytes=2048,
                request_timeout_seconds=5.0)
PING = masked_frame(0x1, b'{"type":"ping"}')


@pytest.fixture
def server(caplog):
    caplog.set_level(logging.INFO)
    hub = Hub(CONFIG.routes)
    hub.add_source(FakeAdapter("ca", {"trade", "quote"}))
    yield Server(GatewayApp(GatewayContext(CONFIG, hub, None)), ServerConfig(), LIMITS)
    # No hostile input may reach the log as a traceback ("connection ... failed").
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def _after(server, nursery, frames: bytes) -> bytes:
    """What the server sends a client that sent `frames` right after its upgrade, until it closes."""
    stream, rest = await upgraded_stream(server, nursery)
    await stream.send_all(frames)
    return await read_to_end(stream, rest)


async def _still_serving(server, nursery) -> None:
    stream, rest = await upgraded_stream(server, nursery)
    await stream.send_all(PING)
    data = rest
    while b"pong" not in data:
        data += await stream.receive_some(65536)
    await stream.aclose()


@pytest.mark.parametrize("frames", [
    masked_frame(0x1, b'{"type":"ping"}', masked=False),  # a client frame must be masked
    masked_frame(0x3, b""),  # reserved opcode
    masked_frame(0x1, b"{}", rsv=0x40),  # no extension negotiated: reserved bits set
    masked_frame(0x0, b"{}"),  # continuation without a start
    masked_frame(0x1, b"{", fin=False) + masked_frame(0x1, b"}"),  # a new message inside a fragmented one
    masked_frame(0x9, b"p" * 126),  # control frame over 125 bytes
    masked_frame(0x9, b"p", fin=False),  # fragmented control frame
    masked_frame(0x8, struct.pack("!H", 999)),  # close code outside the defined range
    masked_frame(0x8, b"x"),  # close payload of one byte
    bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 63) + b"\0\0\0\0",  # 64-bit length with the top bit set
])
async def test_protocol_violations_get_a_1002_close_frame_before_the_socket_closes(autojump_clock, server, nursery,
                                                                                    frames):
    data = await _after(server, nursery, frames)
    assert close_of(data) == (1002, "protocol error")
    await _still_serving(server, nursery)


async def test_invalid_utf8_in_a_text_message_gets_1007(autojump_clock, server, nursery):
    data = await _after(server, nursery, masked_frame(0x1, b'{"type":"\xff\xfe"}'))
    assert close_of(data) == (1007, "invalid UTF-8 in a text message")


async def test_invalid_utf8_split_across_fragments_gets_1007(autojump_clock, server, nursery):
    data = await _after(server, nursery, masked_frame(0x1, b"\xe2\x82", fin=False) + masked_frame(0x0, b"A"))
    assert close_of(data) == (1007, "invalid UTF-8 in a text message")


@pytest.mark.parametrize("frames", [
    masked_frame(0x1, b" " * (LIMITS.max_message_bytes + 1)),
    masked_frame(0x2, b" " * 3000, fin=False) + masked_frame(0x0, b" " * 3000),
    bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 40) + b"\0\0\0\0" + b" " * 5000,  # a 1 TB frame, announced
])
async def test_a_message_over_the_size_limit_gets_1009(autojump_clock, server, nursery, frames):
    data = await _after(server, nursery, frames)
    assert close_of(data) == (1009, "message too big")
    await _still_serving(server, nursery)


async def test_fragments_per_message_are_bounded_empty_ones_included(autojump_clock, server, nursery):
    fragments = LIMITS.max_message_fragments
    within = masked_frame(0x1, b'{"type":', fin=False) + masked_frame(0x0, b"", fin=False) * (fragments - 3)
    within += masked_frame(0x0, b'"ping"', fin=False) + masked_frame(0x0, b"}")  # exactly the limit
    stream, rest = await upgraded_stream(server, nursery)
    await stream.send_all(within)
    data = rest
    while b"pong" not in data:
        data += await stream.receive_some(65536)
    await stream.send_all(masked_frame(0x1, b"", fin=False) + masked_frame(0x0, b"", fin=False) * fragments)
    assert close_of(await read_to_end(stream, data)) == (1008, "too many fragments in one message")


async def test_a_client_close_is_answered_with_its_code(autojump_clock, server, nursery):
    data = await _after(server, nursery, masked_frame(0x8, struct.pack("!H", 4000) + b"bye"))
    assert close_of(data) == (4000, "bye")  # its own words, echoed to itself only


async def _http(server, nursery, request: bytes) -> tuple[int, dict[str, str], bytes]:
    stream = raw_stream(server, nursery)
    await stream.send_all(request)
    head, rest = await read_head(stream)
    body = await read_to_end(stream, rest)
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def test_only_get_upgrades(autojump_clock, server, nursery):
    status, headers, body = await _http(server, nursery, UPGRADE.replace(b"GET ", b"POST ", 1))
    assert (status, headers["allow"]) == (405, "GET")
    assert json.loads(body) == {"message": "a WebSocket upgrade must be a GET request"}


async def test_another_websocket_version_gets_426_naming_13(autojump_clock, server, nursery):
    status, headers, _ = await _http(server, nursery, UPGRADE.replace(b"Version: 13", b"Version: 8"))
    assert (status, headers["sec-websocket-version"]) == (426, "13")


@pytest.mark.parametrize(("old", "new"), [(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b""),
                                      (b"dGhlIHNhbXBsZSBub25jZQ==", b"c2hvcnQ="),
                                      (b"Connection: Upgrade", b"Connection: keep-alive")])
async def test_a_broken_handshake_gets_400(autojump_clock, server, nursery, old, new):
    status, _, _ = await _http(server, nursery, UPGRADE.replace(old, new))
    assert status == 400


@pytest.mark.parametrize("target", [b"http://[::1", b"%zz", b"/%zz", b"/a%00", b"http://evil.example/stream",
                                    b"*", b"/caf%ff"])
async def test_a_malformed_request_target_gets_400(autojump_clock, server, nursery, target):
    for request in (UPGRADE, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"):
        first_line = request.split(b"\r\n", 1)[0]
        status, _, body = await _http(server, nursery, request.replace(first_line, b"GET %s HTTP/1.1" % target))
        assert (status, json.loads(body)) == (400, {"message": "malformed request target"})


async def test_a_nul_in_the_request_line_gets_400(autojump_clock, server, nursery):
    status, _, body = await _http(server, nursery, b"GET /a\x00b HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert (status, json.loads(body)) == (400, {"message": "malformed HTTP request"})


def _big_head(kind: str) -> bytes:
    """A request head over LIMITS.max_request_head_bytes (2048)."""
    if kind == "one huge header":
        return b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"y" * 2100 + b"\r\n\r\n"
    return b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"X: y\r\n" * 400 + b"\r\n"


@pytest.mark.parametrize("kind", ["one huge header", "many small headers"])
async def test_the_head_limit_holds_when_the_whole_head_arrives_at_once(autojump_clock, server, nursery, kind):
    """h11's own bound only covers a head still incomplete; a whole one in one read passed it."""
    status, _, body = await _http(server, nursery, _big_head(kind))
    assert (status, json.loads(body)) == (431, {"message": "request head too large"})


@pytest.mark.parametrize("kind", ["one huge header", "many small headers"])
async def test_the_head_limit_holds_one_byte_at_a_time(autojump_clock, server, nursery, kind):
    stream = raw_stream(server, nursery)
    sent = 0
    head = _big_head(kind)
    try:
        for sent in range(len(head)):
            await stream.send_all(head[sent : sent + 1])
            await trio.testing.wait_all_tasks_blocked()
    except trio.BrokenResourceError:
        pass
    assert sent < len(head) - 1  # cut off before the whole head could be sent
    head, _ = await read_head(stream)
    assert head.startswith(b"HTTP/1.1 431")


async def test_a_head_within_the_limit_is_served_and_keep_alive_goes_on(autojump_clock, server, nursery):
    stream = raw_stream(server, nursery)
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX: " + b"y" * 1900 + b"\r\n\r\n"
    await stream.send_all(request * 2)  # pipelined: each head is measured on its own
    data = b""
    while data.count(b"HTTP/1.1 200") < 2:
        data += await stream.receive_some(65536)


async def test_a_client_that_never_finishes_its_head_is_dropped_at_the_request_timeout(autojump_clock, server,
                                                                                        nursery):
    stream = raw_stream(server, nursery)
    start = trio.current_time()
    await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: local")
    assert await read_to_end(stream) == b""
    assert trio.current_time() - start == LIMITS.request_timeout_seconds
