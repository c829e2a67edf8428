"""The CoinAPI-compatible endpoint over real loopback sockets, the gateway fed by its emulated
providers: every path and key form with a real WebSocket client, and a raw TCP client that sends its
hello in the upgrade's packet and then vanishes without a close frame.

Everything else about the endpoint runs over memory streams under fake time
(test_coinapi_endpoint.py, test_coinapi_session.py); each wait here is bounded by `fail_after`
only as a hang guard.
"""

from __future__ import annotations

import json
from functools import partial

import trio
import trio.testing
from trio_websocket import open_websocket_url

from gateway.app import run_gateway
from gateway.config import parse
from tests.gateway.coinapi_support import GUID

HANG_GUARD = 30  # seconds; generous for a loaded 2-core CI box

PROVIDERS = """
[providers.coinapi]
kind = "coinapi"
emulate = true
emulator_rate = 50
"""
COINAPI_ROUTES = '[routes]\ntrade = ["coinapi"]\nquote = ["coinapi"]\nbook = ["coinapi"]\n'
KEYS_ENV = "MDGATEWAY_TEST_LOCAL_KEYS"


async def _gateway(nursery, local_keys=False):
    server = f'[server]\nlocal_keys_env = "{KEYS_ENV}"\n' if local_keys else ""
    config = parse(server + PROVIDERS + COINAPI_ROUTES)
    return await nursery.start(partial(run_gateway, config, port=0, environ={KEYS_ENV: f"{GUID},another-key-0123456"}))


def _hello(kind="hello", **fields) -> str:
    return json.dumps({"type": kind, **fields})


BITSTAMP_TRADES = {"subscribe_data_type": ["trade"], "subscribe_filter_symbol_id": ["BITSTAMP_SPOT_BTC_USD$"]}


async def test_every_path_and_key_form_is_served_and_the_first_frame_is_data(nursery) -> None:
    gateway = await _gateway(nursery, local_keys=True)
    header, authorization = [(b"X-CoinAPI-Key", GUID.encode())], [(b"Authorization", GUID.encode())]
    forms = [
        ("/", None, _hello(apikey=GUID, **BITSTAMP_TRADES)),
        ("/v1", None, _hello(apikey=GUID, **BITSTAMP_TRADES)),
        ("/v1/", None, _hello(apikey=GUID, **BITSTAMP_TRADES)),
        (f"/APIKEY-{GUID}", None, _hello(apikey="YOUR_API_KEY", **BITSTAMP_TRADES)),
        ("/v1/", header, _hello(**BITSTAMP_TRADES)),
        ("/", authorization, _hello(**BITSTAMP_TRADES)),
        (f"/v1/?apikey={GUID}", None, _hello(**BITSTAMP_TRADES)),
        ("/v1/", header, _hello("subscribe", **BITSTAMP_TRADES)),  # subscribe may come first
    ]
    with trio.fail_after(HANG_GUARD):
        for path, headers, first in forms:
            async with open_websocket_url(gateway.url(path), extra_headers=headers) as ws:
                await ws.send_message(first)
                message = json.loads(await ws.get_message())  # no acknowledgement: data comes first
                assert (message["type"], message["symbol_id"]) == ("trade", "BITSTAMP_SPOT_BTC_USD"), path
                assert list(message)[-1] == "type"  # like the live server


async def test_a_client_that_drops_the_connection_does_not_take_the_gateway_down(nursery) -> None:
    """The how-to scripts are killed, not closed: the gateway sees EOF without a close frame.
    (This client also sends its hello in the same packet as its upgrade request.)"""
    gateway = await _gateway(nursery)
    upgrade = (b"GET /v1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    payload = _hello(**BITSTAMP_TRADES).encode()
    with trio.fail_after(HANG_GUARD):
        stream = await trio.open_tcp_stream("127.0.0.1", gateway.port)
        await stream.send_all(upgrade + bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
        received = b""
        while b'"type":"trade"' not in received:
            received += await stream.receive_some(65536)
        await stream.aclose()  # no close frame
        while gateway.hub.demand():
            await trio.testing.wait_all_tasks_blocked()
        async with open_websocket_url(gateway.url("/v1/")) as ws:
            await ws.send_message(_hello(**BITSTAMP_TRADES))
            assert json.loads(await ws.get_message())["type"] == "trade"
