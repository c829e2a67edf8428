"""The WebSocket peer under fake time over memory streams: quiet clients are pinged, silent ones
are cut off (freeing their subscriptions), answering ones stay."""

import trio
import trio.testing
from trio_websocket import wrap_client_stream

from gateway.app import GatewayApp
from gateway.config import ServerConfig
from gateway.context import GatewayContext
from gateway.hub import Hub
from gateway.server import Server
from gateway.wspeer import CLOSE_GRACE_SECONDS, PING_INTERVAL_SECONDS, SILENT_CLIENT_SECONDS
from schemas.streams import StreamKey
from tests.gateway.fakes import FakeAdapter
from tests.gateway.test_server import CONFIG

UPGRADE = (b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
SUBSCRIBE = b'{"type":"subscribe","channels":["trade:binance"]}'


def _server():
    hub = Hub(CONFIG.routes)
    hub.add_source(FakeAdapter("ca", {"trade", "quote"}))
    return hub, Server(GatewayApp(GatewayContext(CONFIG, hub, None)), ServerConfig(client_buffer=64, allowed_hosts=["gateway.test"]))


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
