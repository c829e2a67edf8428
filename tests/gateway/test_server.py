"""The gateway's one port: WebSocket upgrades and plain HTTP side by side.

The hub is fed by a fake adapter here, so these tests pin the server and the native dialect;
the end-to-end tests with both emulators live in test_end_to_end.py. Clients reach the server
over memory streams (`tests.support.gateway.MemoryClient`), except where a real socket's own
behaviour is the point (keep-alive on one TCP connection, a kernel receive buffer that fills).
"""

import json

import msgspec
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected

from gateway.app import GatewayApp
from gateway.config import ServerConfig, parse
from gateway.context import GatewayContext
from gateway.hub import Hub
from gateway.server import Server
from tests.gateway.fakes import FakeAdapter, quote, trade
from tests.support.gateway import MemoryClient
from tests.support.raw import masked_frame, upgraded_socket

CONFIG = parse('[providers.ca]\nkind = "coinapi"\nemulate = true\n[routes]\ntrade = ["ca"]\nquote = ["ca"]')


def _server(usable=True, local_keys=None):
    hub = Hub(CONFIG.routes)
    hub.add_source(FakeAdapter("ca", {"trade", "quote"}, usable=usable))
    return hub, Server(GatewayApp(GatewayContext(CONFIG, hub, local_keys)), ServerConfig(client_buffer=64))


@pytest.fixture
async def gateway(nursery):
    hub, server = _server()
    return hub, server, MemoryClient(server, nursery)


@pytest.fixture
async def loopback(nursery):
    hub, server = _server()
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    return hub, server, port


async def _get(client: MemoryClient, path: str, extra: bytes = b"") -> tuple[int, bytes]:
    status, _, body = await client.http(path, extra)
    return status, body


async def _exchange(stream: trio.abc.Stream, request: bytes) -> bytes:
    """Send a raw request, read until the server closes."""
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


async def _wait_for_demand(hub, count):
    with trio.fail_after(30):  # a hang guard, not a speed assertion
        while hub.demand_count() != count:
            await trio.testing.wait_all_tasks_blocked()


async def test_native_subscribe_then_events_in_order(gateway):
    hub, _, client = gateway
    async with client.websocket("/stream") as ws:
        await ws.send_message('{"type":"subscribe","channels":["trade:binance:BTC/USDT"]}')
        assert json.loads(await ws.get_message()) == {"type": "subscribed", "channel": "trade:binance:BTC/USDT"}
        for i in range(50):
            hub.publish(trade(price=f"{i}.5", ts=i))
        prices = [json.loads(await ws.get_message())["price"] for _ in range(50)]
        assert prices == [f"{i}.5" for i in range(50)]


async def test_a_burst_beyond_the_client_buffer_arrives_as_trades_then_a_gap(gateway):
    hub, _, client = gateway  # client_buffer is 64 frames
    async with client.websocket("/stream") as ws:
        await ws.send_message('{"type":"subscribe","channels":["trade:binance:BTC/USDT"]}')
        await ws.get_message()
        for i in range(100):  # no checkpoint in between: the writer cannot drain
            hub.publish(trade(ts=i))
        received = [json.loads(await ws.get_message()) for _ in range(65)]
    assert [m["ts_exchange"] for m in received[:64]] == list(range(64))
    gap = received[64]
    assert (gap["type"], gap["cause"], gap["from_ts"], gap["to_ts"], gap["missed"]) == (
        "gap", "client_overflow", 64, 99, 36)


async def test_msgpack_format_sends_binary_frames(gateway):
    hub, _, client = gateway
    async with client.websocket("/stream?format=msgpack") as ws:
        await ws.send_message(msgspec.msgpack.encode({"type": "subscribe", "channels": ["quote:binance"]}))
        reply = await ws.get_message()
        assert isinstance(reply, bytes) and msgspec.msgpack.decode(reply)["type"] == "subscribed"
        hub.publish(quote(bid="99.25"))
        event = msgspec.msgpack.decode(await ws.get_message())
        assert (event["type"], event["bid_price"]) == ("quote", "99.25")


async def test_client_close_releases_its_subscriptions(gateway):
    hub, server, client = gateway
    async with client.websocket("/stream") as ws:
        await ws.send_message('{"type":"subscribe","channels":["trade:binance"]}')
        await ws.get_message()
        assert len(hub.demand()) == 1
    await _wait_for_demand(hub, 0)
    assert not server.peers


async def test_server_close_sends_going_away(gateway):
    _, server, client = gateway
    async with client.websocket("/stream") as ws:
        await ws.send_message('{"type":"ping"}')
        assert json.loads(await ws.get_message())["type"] == "pong"
        server.close_all(1001, "gateway shutting down")
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        assert ws.closed.code == 1001


async def test_healthz_and_unknown_paths_over_http(gateway):
    _, _, client = gateway
    status, body = await _get(client, "/healthz")
    assert status == 200
    health = json.loads(body)
    assert health["status"] == "serving" and health["providers"]["ca"]["usable"] is True
    assert (health["events_in"], health["events_unrouted"]) == (0, 0)
    assert (await _get(client, "/nope"))[0] == 404


async def test_keep_alive_serves_several_requests_on_one_connection(loopback):
    _, _, port = loopback  # a real socket: keep-alive is a property of the TCP connection
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\nGET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200") < 2:
            data += await stream.receive_some(65536)
    assert data.count(b"HTTP/1.1 200") == 2


async def test_websocket_on_unknown_path_is_refused_with_404(gateway):
    _, _, client = gateway
    with pytest.raises(ConnectionRejected) as info:
        async with client.websocket("/nowhere"):
            pass
    assert info.value.status_code == 404


async def test_bad_format_is_refused_with_400(gateway):
    _, _, client = gateway
    with pytest.raises(ConnectionRejected) as info:
        async with client.websocket("/stream?format=xml"):
            pass
    assert info.value.status_code == 400


async def test_malformed_upgrade_gets_400(gateway):
    _, _, client = gateway
    status, _ = await _get(client, "/stream", b"upgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\n")
    assert status == 400  # no Sec-WebSocket-Key


async def test_bad_client_messages_get_errors_and_the_connection_lives_on(gateway):
    _, _, client = gateway
    async with client.websocket("/stream") as ws:
        for message, code in [("nope", "INVALID_JSON"), ('{"type":"x"}', "UNKNOWN_TYPE"),
                              ('{"type":"subscribe"}', "INVALID_REQUEST"),
                              ('{"type":"subscribe","channels":["trade"]}', "INVALID_CHANNEL")]:
            await ws.send_message(message)
            assert json.loads(await ws.get_message())["code"] == code
        await ws.send_message('{"type":"ping"}')
        assert json.loads(await ws.get_message())["type"] == "pong"


async def test_healthz_is_503_when_no_provider_is_usable(nursery):
    _, server = _server(usable=False)
    status, body = await _get(MemoryClient(server, nursery), "/healthz")
    assert status == 503
    assert json.loads(body)["status"] == "unavailable"


async def test_native_endpoint_requires_the_local_key_when_keys_are_configured(nursery):
    _, server = _server(local_keys=frozenset({"k-local"}))
    client = MemoryClient(server, nursery)
    with pytest.raises(ConnectionRejected) as info:
        async with client.websocket("/stream?apikey=wrong"):
            pass
    assert info.value.status_code == 401
    async with client.websocket("/stream", [(b"authorization", b"Bearer k-local")]) as ws:
        await ws.send_message('{"type":"ping"}')
        assert json.loads(await ws.get_message())["type"] == "pong"


async def test_head_and_an_upgrade_without_host_do_not_take_the_gateway_down(gateway):
    _, _, client = gateway
    data = await _exchange(client.stream(), b"HEAD /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length" in head and body == b""
    data = await _exchange(client.stream(), b"GET /stream HTTP/1.0\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
                           b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n")
    assert data.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
    assert (await _get(client, "/healthz"))[0] == 200  # still serving


async def test_a_client_that_pings_but_never_reads_is_cut_off(loopback):
    """Pongs are control frames: bounded like the rest, or a ping flood would grow memory forever.
    (A real socket: the point is a kernel receive buffer that fills up.)"""
    _, _, port = loopback
    sock = await upgraded_socket(port)
    ping = masked_frame(0x9, b"p" * 125)  # the largest ping a client may send
    with trio.fail_after(30):
        try:
            while True:  # the gateway must hang up on us before we run out of patience
                await sock.send(ping * 64)
        except OSError:
            pass
    sock.close()


async def test_a_legal_subscribe_of_1030_channels_is_answered_and_the_client_stays(gateway):
    """"Not reading" is judged by bytes and time, not by how many replies one request earned: 1,000
    `subscribed` and one SUBSCRIPTION_LIMIT error for the rest, and the connection lives on."""
    _, server, client = gateway
    channels = [f"trade:binance:C{i}/USDT" for i in range(1030)]
    async with client.websocket("/stream") as ws:
        await ws.send_message(json.dumps({"type": "subscribe", "channels": channels}))
        answers = [json.loads(await ws.get_message()) for _ in range(1001)]
        await ws.send_message('{"type":"ping"}')
        assert json.loads(await ws.get_message())["type"] == "pong"
        (peer,) = server.peers
        assert peer.close_code is None and not peer.outbox.overflowed
    assert [a["type"] for a in answers[:1000]] == ["subscribed"] * 1000  # max_subscriptions_per_client
    assert answers[1000]["code"] == "SUBSCRIPTION_LIMIT" and answers[1000]["channels"] == channels[1000:]
