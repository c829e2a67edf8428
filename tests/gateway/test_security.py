"""Strangers at the port: a web page from another origin, a DNS-rebinding Host, more connections
than the caps allow. Each is refused before any route runs, and a client already served keeps
receiving. Memory streams, told their client address (`Server.handle_stream(stream, address)`)."""

import contextlib
import json

import pytest
import trio
import trio.lowlevel
import trio.testing
from trio_websocket import ConnectionRejected, WebSocketConnection, wrap_client_stream

from gateway.app import GatewayApp
from gateway.config import Limits, ServerConfig
from gateway.context import GatewayContext
from gateway.hub import Hub
from gateway.server import Server
from tests.gateway.fakes import FakeAdapter, trade
from tests.gateway.test_server import CONFIG
from tests.support.raw import UPGRADE, raw_stream, read_head, read_to_end, upgraded_stream

SUBSCRIBE = '{"type":"subscribe","channels":["trade:binance:BTC/USDT"]}'
KEY = [(b"authorization", b"Bearer k-local")]


def _server(limits=None, local_keys=None, **server):
    hub = Hub(CONFIG.routes)
    hub.add_source(FakeAdapter("ca", {"trade", "quote"}))
    app = GatewayApp(GatewayContext(CONFIG, hub, local_keys))
    return hub, Server(app, ServerConfig(**server), limits or Limits())


async def _connect(server, nursery, address="127.0.0.1", host="localhost", headers=None) -> WebSocketConnection:
    """A trio-websocket client from `address`, sending `Host: host`; a refusal raises ConnectionRejected."""
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_end, address)
    return await wrap_client_stream(nursery, client_end, host, "/stream", extra_headers=headers)


async def _rejected(server, address="127.0.0.1", headers=None) -> ConnectionRejected:
    """The refusal of an upgrade (trio-websocket raises it in its reader task, inside a nursery)."""
    with pytest.raises(BaseExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await _connect(server, nursery, address, headers=headers)
    rejected, _ = info.value.split(ConnectionRejected)
    assert rejected is not None
    leaf: BaseException = rejected
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, ConnectionRejected)
    return leaf


async def _status(server, nursery, request: bytes, address="127.0.0.1") -> tuple[int, bytes]:
    stream = raw_stream(server, nursery, address)
    await stream.send_all(request)
    head, _ = await read_head(stream)
    return int(head.split()[1]), head


async def _subscribed(ws: WebSocketConnection) -> WebSocketConnection:
    await ws.send_message(SUBSCRIBE)
    assert json.loads(await ws.get_message())["type"] == "subscribed"
    return ws


async def _receives(hub, ws: WebSocketConnection, price: str) -> None:
    hub.publish(trade(price=price))
    assert json.loads(await ws.get_message())["price"] == price


@pytest.mark.parametrize("origin", [b"https://evil.example", b"null", b"http://localhost.evil.example:8765"])
async def test_a_cross_origin_upgrade_is_refused(nursery, origin):
    hub, server = _server()
    assert (await _rejected(server, headers=[(b"origin", origin)])).status_code == 403
    assert not hub.demand() and not server.peers


@pytest.mark.parametrize("origin", [None, b"http://localhost:3000", b"http://127.0.0.1", b"https://app.example"])
async def test_apps_loopback_pages_and_allowed_origins_are_served(nursery, origin):
    hub, server = _server(allowed_origins=["https://app.example"])
    ws = await _connect(server, nursery, headers=[(b"origin", origin)] if origin else None)
    await _subscribed(ws)
    await _receives(hub, ws, "1.5")
    await ws.aclose()


async def test_two_origins_on_one_upgrade_are_refused(nursery):
    _, server = _server()
    request = UPGRADE.replace(b"\r\n\r\n", b"\r\nOrigin: http://localhost\r\nOrigin: https://evil.example\r\n\r\n")
    assert (await _status(server, nursery, request))[0] == 403


@pytest.mark.parametrize("request_head", [
    b"GET /healthz HTTP/1.1\r\nHost: evil.example:8765\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1.evil.example\r\n\r\n",
    UPGRADE.replace(b"Host: 127.0.0.1", b"Host: evil.example:8765"),
])
async def test_a_rebinding_host_is_refused_on_http_and_on_upgrades(nursery, request_head):
    hub, server = _server()
    for address in ("127.0.0.1", None):  # None: a stream that cannot say where it came from
        status, _ = await _status(server, nursery, request_head, address)
        assert status == 421
    assert not server.peers and hub.client_count() == 0


async def test_allowed_hosts_and_the_configured_host_are_served(nursery):
    _, server = _server(host="gw.lan", allowed_hosts=["box.example"], local_keys_env="K")
    for host in (b"gw.lan:8765", b"box.example", b"[::1]:8765", b"localhost"):
        assert (await _status(server, nursery, b"GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n" % host))[0] == 200


async def test_an_http_1_0_request_without_host_is_a_bad_request(nursery):
    _, server = _server()
    status, _ = await _status(server, nursery, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert status == 400


async def test_connection_caps_hold_while_a_keyed_client_keeps_receiving(nursery):
    hub, server = _server(Limits(max_connections=3, max_connections_per_address=2), frozenset({"k-local"}))
    keyed = await _subscribed(await _connect(server, nursery, "10.0.0.1", headers=KEY))
    await _subscribed(await _connect(server, nursery, "10.0.0.1", headers=KEY))
    refusal = await _rejected(server, "10.0.0.1", headers=KEY)  # a third from the same address
    assert (refusal.status_code, dict(refusal.headers)[b"retry-after"]) == (503, b"1")
    other = await _subscribed(await _connect(server, nursery, "10.0.0.2", headers=KEY))
    status, head = await _status(server, nursery, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", "10.0.0.3")
    assert (status, b"retry-after: 1" in head.lower()) == (503, True)  # over the total
    assert (server.connections.total, server.connections.by_address) == (3, {"10.0.0.1": 2, "10.0.0.2": 1})
    await _receives(hub, keyed, "2.5")  # the clients already served are unaffected
    await other.aclose()
    while server.connections.total != 2:  # released in a finally, whatever ended the connection
        await trio.testing.wait_all_tasks_blocked()
    await _subscribed(await _connect(server, nursery, "10.0.0.3", headers=KEY))
    await _receives(hub, keyed, "3.5")


async def test_a_refused_connection_gets_its_answer_even_before_it_sent_a_request(autojump_clock, nursery):
    """Over a cap, the head is read briefly (a socket closed with unread input is reset and the
    client would miss the 503) but not for long: the refused connection holds no slot."""
    _, server = _server(Limits(max_connections=1))
    held, _ = await upgraded_stream(server, nursery, address="10.0.0.1")  # served: never evicted
    stream = raw_stream(server, nursery, "10.0.0.2")
    start = trio.current_time()
    data = await read_to_end(stream)
    assert (data[:12], trio.current_time() - start) == (b"HTTP/1.1 503", 1.0)
    await held.aclose()


async def test_answering_refusals_is_bounded_too(autojump_clock, nursery):
    """A flood of connections over the cap cannot hold unbounded sockets open for their 503s."""
    _, server = _server(Limits(max_connections=1))
    held, _ = await upgraded_stream(server, nursery, address="10.0.0.1")  # served: never evicted
    answered = raw_stream(server, nursery, "10.0.0.2")  # gets its 503 after reading its head briefly
    await trio.testing.wait_all_tasks_blocked()
    start = trio.current_time()
    assert await read_to_end(raw_stream(server, nursery, "10.0.0.3")) == b""  # closed at once
    assert trio.current_time() == start
    assert (await read_to_end(answered))[:12] == b"HTTP/1.1 503"
    await held.aclose()


@pytest.mark.parametrize("headers", [
    b"Origin: https://evil.example\r\n",  # a page's fetch()
    b"Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\n",  # a page's <img src> or <script src>
    b"Origin: null\r\nSec-Fetch-Site: cross-site\r\n",
])
async def test_a_web_page_on_another_site_cannot_use_the_rest_endpoints_either(nursery, headers):
    hub, server = _server()
    request = b"GET /v1/tickers?exchange=binance&symbols=BTC-USDT HTTP/1.1\r\nHost: 127.0.0.1:8765\r\n" + headers + b"\r\n"
    assert (await _status(server, nursery, request))[0] == 403
    assert not hub.demand()  # nothing was asked of a provider on the page's behalf


@pytest.mark.parametrize("headers", [
    b"",  # an app (curl, an SDK)
    b"Origin: http://localhost:3000\r\nSec-Fetch-Site: same-site\r\n",  # a page on this machine
    b"Sec-Fetch-Site: none\r\n",  # the operator typing the URL
    b"Sec-Fetch-Site: same-origin\r\n",
])
async def test_apps_and_pages_on_this_machine_are_served_over_http(nursery, headers):
    _, server = _server()
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8765\r\n" + headers + b"\r\n"
    assert (await _status(server, nursery, request))[0] in (200, 503)  # health, whatever it says


async def test_keyless_sockets_cannot_lock_out_a_client_with_a_key(autojump_clock, nursery):
    """At the per-address cap, the oldest connection that has proven nothing (a head still
    arriving, an idle keep-alive, a CoinAPI socket before its hello) makes room for a new one;
    a served client is never evicted."""
    hub, server = _server(Limits(max_connections_per_address=3), frozenset({"k-local"}))
    served = await _subscribed(await _connect(server, nursery, headers=KEY))
    half = raw_stream(server, nursery)
    await half.send_all(b"GET /healthz HTTP/1.1\r\nHost: loc")  # a head that never ends (slowloris)
    coinapi = raw_stream(server, nursery)
    await coinapi.send_all(UPGRADE.replace(b"/stream", b"/v1/"))  # a CoinAPI socket that never says hello
    await read_head(coinapi)
    await trio.testing.wait_all_tasks_blocked()
    assert server.connections.by_address == {"127.0.0.1": 3}
    keyed = await _subscribed(await _connect(server, nursery, headers=KEY))  # evicts the slowloris head
    assert await read_to_end(half) == b""
    keyed_too = await _subscribed(await _connect(server, nursery, headers=KEY))  # evicts the silent CoinAPI socket
    assert server.connections.by_address == {"127.0.0.1": 3}
    refusal = await _rejected(server, headers=KEY)  # every slot now serves someone: the cap holds
    assert refusal.status_code == 503
    hub.publish(trade(price="4.5"))
    for ws in (served, keyed, keyed_too):  # all three served clients receive
        assert json.loads(await ws.get_message())["price"] == "4.5"


async def test_the_place_an_eviction_frees_goes_to_the_evictor_not_to_a_newcomer(autojump_clock, nursery):
    """A hand-over: B evicts the silent A, and C, arriving while A is going, cannot take the place
    freed for B (before, B was answered 503 and C served). Once admitted, B has proven nothing yet
    either, so C may in turn evict B: whichever order the scheduler picks, B is never refused."""
    _, server = _server(Limits(max_connections=1))
    silent = raw_stream(server, nursery, "10.0.0.1")
    await trio.testing.wait_all_tasks_blocked()
    evictor = raw_stream(server, nursery, "10.0.0.2")
    for _ in range(2):  # the evictor is waiting for the silent one to be gone
        await trio.lowlevel.checkpoint()
    newcomer = raw_stream(server, nursery, "10.0.0.3")
    await trio.testing.wait_all_tasks_blocked()
    assert await read_to_end(silent) == b""
    request = b"GET /nothing-here HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"  # served: 404; refused: 503
    answers = []
    for stream in (evictor, newcomer):
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(request)
        answers.append((await read_to_end(stream))[:12])
    assert answers[0] in (b"HTTP/1.1 404", b"")  # served, or evicted in turn; never refused
    assert sorted(answers) in ([b"HTTP/1.1 404", b"HTTP/1.1 503"], [b"", b"HTTP/1.1 404"])  # one place, one served
