"""The WebSocket peer under fake time over memory streams: quiet clients are pinged, silent ones
are cut off at the exact deadline (freeing their subscriptions), answering ones stay; a client
whose socket accepts nothing, or who lets replies pile up past their byte bound, is cut off with
a close frame; a slow reader whose socket keeps accepting stays."""

import contextlib

import pytest
import trio
import trio.testing
from trio_websocket import wrap_client_stream

from gateway.app import GatewayApp
from gateway.config import Limits, ServerConfig
from gateway.context import GatewayContext
from gateway.hub import Hub
from gateway.server import Server
from gateway.wspeer import CLOSE_GRACE_SECONDS, PING_INTERVAL_SECONDS, SILENT_CLIENT_SECONDS
from schemas.streams import StreamKey
from tests.gateway.fakes import FakeAdapter, trade
from tests.gateway.test_server import CONFIG
from tests.support.raw import close_of, masked_frame, read_to_end, server_frames, upgraded_stream

UPGRADE = (b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
SUBSCRIBE = b'{"type":"subscribe","channels":["trade:binance"]}'


def _server():
    hub = Hub(CONFIG.routes)
    hub.add_source(FakeAdapter("ca", {"trade", "quote"}))
    return hub, Server(GatewayApp(GatewayContext(CONFIG, hub, None)), ServerConfig(client_buffer=64))


async def test_a_silent_client_is_pinged_then_cut_off_and_its_subscriptions_freed(autojump_clock, nursery):
    hub, server = _server()
    client, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end)
    await client.send_all(UPGRADE + bytes([0x81, 0x80 | len(SUBSCRIBE)]) + b"\0\0\0\0" + SUBSCRIBE)
    received, pings_at = b"", []
    while b"\x88" not in received[-200:]:  # until the close frame (opcode 0x8, FIN)
        chunk = await client.receive_some(65536)
        if chunk.startswith(b"\x89"):
            pings_at.append(trio.current_time())
        received += chunk
    assert pings_at == [PING_INTERVAL_SECONDS, 2 * PING_INTERVAL_SECONDS]
    assert trio.current_time() == SILENT_CLIENT_SECONDS  # at that moment, not at the next ping
    assert b"no pong" in received[-20:]
    await trio.sleep(CLOSE_GRACE_SECONDS + 0.5)  # fake time: the close handshake's grace runs out
    assert hub.subscriber_count(StreamKey("trade", "binance", None)) == 0


async def test_a_client_that_answers_pings_stays(autojump_clock, nursery):
    hub, server = _server()
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end)
    ws = await wrap_client_stream(nursery, client_end, "localhost", "/stream")  # trio-websocket answers pings itself
    await ws.send_message(SUBSCRIBE.decode())
    await ws.get_message()
    # (Off the ping grid: trio-websocket cannot answer a ping that crosses its own close.)
    await trio.sleep(10 * SILENT_CLIENT_SECONDS + 1)
    assert ws.closed is None
    assert hub.subscriber_count(StreamKey("trade", "binance", None)) == 1
    await ws.aclose()


def _stall_server(**limits):
    hub = Hub(CONFIG.routes)
    hub.add_source(FakeAdapter("ca", {"trade", "quote"}))
    return hub, Server(GatewayApp(GatewayContext(CONFIG, hub, None)), ServerConfig(), Limits(**limits))


@pytest.mark.parametrize("quiet_first", [0.0, 3.7, 12.2])  # the write starts between watchdog checks
async def test_a_socket_that_accepts_nothing_is_cut_off_at_the_stall_deadline_with_a_close_frame(autojump_clock,
                                                                                                 nursery, quiet_first):
    hub, server = _stall_server(write_stall_seconds=5.0)
    stream, _ = await upgraded_stream(server, nursery, lockstep=True)  # the server's writes wait for our reads
    await trio.sleep(quiet_first)
    await stream.send_all(masked_frame(0x1, SUBSCRIBE))
    start = trio.current_time()  # the `subscribed` reply is being written now, and we do not read
    await trio.sleep(5.5)
    (peer,) = server.peers
    assert peer.close_code == 1008  # cut at start + 5, not at the next ping
    data = await read_to_end(stream)  # reading again: the pending write, then the close frame alone
    assert b'"subscribed"' in data and close_of(data) == (1008, "not reading")
    assert trio.current_time() == start + 5.0 + CLOSE_GRACE_SECONDS  # no close reply from us: the grace ran out
    assert hub.subscriber_count(StreamKey("trade", "binance", None)) == 0


async def test_replies_piling_up_past_their_byte_bound_cut_the_client_off_with_a_close_frame(autojump_clock,
                                                                                             nursery):
    """Pongs are control frames: never dropped, but bounded in bytes (a ping flood from a client
    that reads nothing would grow memory forever)."""
    _, server = _stall_server(max_pending_control_bytes=64 * 1024, message_burst=1000)  # room for 4,000 frames
    stream, _ = await upgraded_stream(server, nursery, lockstep=True)
    pings = 2000  # pongs of 127 bytes: whatever the writer took first, over 64 KiB wait behind it

    async def send_pings() -> None:
        with contextlib.suppress(trio.BrokenResourceError):  # once cut off, the rest is never read
            await stream.send_all(masked_frame(0x9, b"p" * 125) * pings)

    nursery.start_soon(send_pings)
    await trio.testing.wait_all_tasks_blocked()
    (peer,) = server.peers
    assert peer.outbox.overflowed and peer.close_code == 1008
    start = trio.current_time()
    data = await read_to_end(stream)
    frames = server_frames(data)
    assert [op for op, _ in frames].count(0xA) < pings  # what was still queued was dropped
    assert frames[-1][0] == 0x8 and close_of(data) == (1008, "not reading")
    # The reader stopped at the cut (nothing the client sends after it is parsed), so the
    # connection ends as soon as the close frame is taken, without waiting out the grace.
    assert trio.current_time() - start == 0


async def test_a_reader_slower_than_the_data_but_never_stalled_that_long_stays(autojump_clock, nursery):
    hub, server = _stall_server(write_stall_seconds=5.0)
    stream, _ = await upgraded_stream(server, nursery, lockstep=True)
    await stream.send_all(masked_frame(0x1, SUBSCRIBE))
    for i in range(15):  # each write waits 4 s for us: slow, but the socket keeps accepting (60 s: not silent)
        await trio.sleep(4.0)
        await stream.receive_some(65536)
        hub.publish(trade(ts=i))
    (peer,) = server.peers
    assert peer.close_code is None
    assert hub.subscriber_count(StreamKey("trade", "binance", None)) == 1
