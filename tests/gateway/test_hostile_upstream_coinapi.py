"""The whole gateway in front of a hostile CoinAPI upstream (memory streams, fake time): a scripted
server sends every class of hostile frame at full rate, interleaved with good trades. The gateway
stays up, counts them in `/healthz`, and a native client of the same provider keeps receiving
exactly the good trades; the provider's free text never reaches `/healthz` or the client."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import trio
from trio_websocket import ConnectionClosed, wrap_server_stream

from gateway.app import run_gateway
from gateway.config import Config, parse
from tests.providers.coinapi.hostile import HUGE_DIGITS, PATHOLOGICAL, good_trade
from tests.support.gateway import MemoryGateway
from tests.support.memory import memory_connector

CONFIG = parse(
    '[server]\nallowed_hosts = ["gateway.test"]\n'  # the name MemoryClient connects to
    '[providers.ca]\nkind = "coinapi"\nemulate = true\n[routes]\ntrade = ["ca"]\nquote = ["ca"]\nbook = ["ca"]'
)
SYMBOL = "COINBASE_SPOT_BTC_USD"
TIME = "2025-01-14T16:49:58.3318050Z"


def _trade(**fields: object) -> str:
    base: dict[str, object] = {
        "time_exchange": TIME, "time_coinapi": TIME, "uuid": "h", "price": 1, "size": 1, "taker_side": "BUY",
        "symbol_id": SYMBOL, "sequence": 1, "type": "trade",
    }
    return json.dumps({**base, **fields})


#: One frame of every hostile class, each aimed at the bystander's own stream where it has one.
HOSTILE: list[str | bytes] = [
    "[" * 100_000,  # msgspec: RecursionError
    '{"type":"trade","price":' + "[" * 50_000,
    _trade(price="NaN"), _trade(price="Infinity"), _trade(size="-Infinity"),
    _trade().replace('"price": 1', '"price": 1E+100'), _trade().replace('"price": 1', f'"price": {HUGE_DIGITS}'),
    _trade().replace('"sequence": 1', f'"sequence": {HUGE_DIGITS}'),
    _trade(time_exchange="0001-01-01T00:00:00.0000000Z"), _trade(time_coinapi="9999-12-31T23:59:59.9999999Z"),
    _trade(time_exchange="\u0662\u0660\u0662\u0665-01-14T16:49:58Z"), _trade(time_exchange=-1),
    _trade(uuid="u" * 100_000), _trade(symbol_id=["not", "a", "string"]), _trade(taker_side={"deep": [[[]]]}),
    json.dumps({"type": "quote", "symbol_id": SYMBOL, "time_exchange": TIME, "time_coinapi": TIME, "bid_price": "1E+400"}),
    json.dumps({"type": "book5", "symbol_id": SYMBOL, "time_exchange": TIME, "time_coinapi": TIME,
                "asks": [{"price": -5, "size": 1}], "bids": []}),
    json.dumps({"type": "reconnect", "within_seconds": "soon"}),
    b"\xff\xfe not UTF-8",
    *[frame for frame in PATHOLOGICAL if isinstance(frame, bytes)],
]
#: Unknown types are counted apart; the rest of the hostile frames are malformed.
UNKNOWN = [json.dumps({"type": "exrate", "rate": HUGE_DIGITS}), json.dumps({"type": "x" * 5000})]
ROUNDS = 60


@dataclass
class HostileCoinApi:
    """After the client's hello: ROUNDS rounds of every hostile frame and one good trade, as fast
    as the connection takes them, then `tail` (e.g. an error with free text), then silence."""

    tail: list[str] = field(default_factory=list)
    sent_good: int = 0
    done: trio.Event = field(default_factory=trio.Event)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        async with trio.open_nursery() as nursery:
            ws = await (await wrap_server_stream(nursery, stream)).accept()
            try:
                await ws.get_message()  # the hello
                for round_ in range(ROUNDS):
                    for frame in (*HOSTILE, *UNKNOWN):
                        await ws.send_message(frame)
                    await ws.send_message(good_trade(price=f"{100 + round_}.5", sequence=round_ + 1, uuid=f"g{round_}"))
                    self.sent_good += 1
                for frame in self.tail:
                    await ws.send_message(frame)
                self.done.set()
                await trio.sleep_forever()
            except ConnectionClosed:
                pass
            finally:
                nursery.cancel_scope.cancel()


async def _start(nursery: trio.Nursery, upstream: HostileCoinApi, config: Config = CONFIG) -> MemoryGateway:
    async def hostile_upstream(config: Config, emulator_nursery: trio.Nursery):
        return {}, {"ca": ("ws://ca.test/v1/", memory_connector(upstream.handle_stream, emulator_nursery))}

    gateway = await nursery.start(lambda task_status: run_gateway(config, upstream=hostile_upstream, listen=False, task_status=task_status))
    return MemoryGateway(gateway.server, nursery, gateway)


async def _trades(ws, count: int) -> list[dict]:
    trades = []
    while len(trades) < count:
        message = json.loads(await ws.get_message())
        assert message["type"] in {"subscribed", "trade", "status"}, json.dumps(message)
        if message["type"] == "trade":
            trades.append(message)
    return trades


async def test_hostile_frames_at_full_rate_are_counted_and_a_client_keeps_receiving(autojump_clock, nursery) -> None:
    upstream = HostileCoinApi()
    memory = await _start(nursery, upstream)
    async with memory.websocket("/stream") as ws:
        # Quotes and books too: only what is wanted is validated (and so counted); every quote
        # and book frame sent is hostile, so none may arrive.
        await ws.send_message('{"type":"subscribe","channels":["trade:coinbase:BTC/USD","quote:coinbase:BTC/USD","book:coinbase:BTC/USD"]}')
        trades = await _trades(ws, ROUNDS)
        await upstream.done.wait()
        assert [t["trade_id"] for t in trades] == [f"g{i}" for i in range(ROUNDS)]
        assert [t["price"] for t in trades] == [f"{100 + i}.5" for i in range(ROUNDS)]
        status, _, body = await memory.http("/healthz")
    health = json.loads(body)["providers"]["ca"]
    assert status == 200 and health["state"] == "connected" and health["reconnects"] == 0
    assert (health["malformed_frames"], health["unknown_messages"]) == (ROUNDS * len(HOSTILE), ROUNDS * len(UNKNOWN))
    assert trio.current_time() < 1.0  # nothing waited for a timeout: full rate, no reconnects


async def test_provider_free_text_stays_out_of_healthz_and_clients(autojump_clock, nursery) -> None:
    said = "Internal failure at node eu-7, contact support quoting ticket 4711"
    upstream = HostileCoinApi(tail=[json.dumps({"message": said, "type": "error"})])
    memory = await _start(nursery, upstream)
    async with memory.websocket("/stream") as ws:
        await ws.send_message('{"type":"subscribe","channels":["trade:coinbase:BTC/USD"]}')
        await _trades(ws, ROUNDS)
        await upstream.done.wait()
        with trio.move_on_after(0.5):  # what the client hears of the provider's failure
            while True:
                message = await ws.get_message()
                assert "eu-7" not in message and "ticket" not in message  # (digits could be in any time)
        status, _, body = await memory.http("/healthz")
    assert status == 200  # the provider erred; the gateway did not
    assert "eu-7" not in body.decode() and "ticket" not in body.decode()
    assert json.loads(body)["providers"]["ca"]["last_error"] == "ProviderError: the provider sent an error"
