"""A CoinAPI-shaped upstream that sends trades as fast as its reader takes them.

The emulator pays for a realistic market (a random walk, ~5–7k msg/s on one core); to find where
the gateway itself saturates, this source sends pre-shaped trade frames in batches, one `send_all`
per batch, with consecutive sequences per symbol. It answers the WebSocket handshake, reads the
client's first message (the hello) and ignores its filters. Loopback only; runs until killed.

    python bench/blast_upstream.py [--port 0]
"""

from __future__ import annotations

import argparse
import time

import trio
import wsproto
from wsproto.events import AcceptConnection, Request

from schemas.timeutil import format_iso_ns

SYMBOLS = [b"BINANCE_SPOT_BTC_USDT", b"BINANCE_SPOT_ETH_USDT", b"COINBASE_SPOT_BTC_USD", b"BITSTAMP_SPOT_BTC_USD",
           b"KRAKEN_SPOT_BTC_USD", b"OKEX_SPOT_BTC_USDT"]
BATCH = 256
_TEMPLATE = (b'{"time_exchange":"%s","time_coinapi":"%s","uuid":"fa42708a-ca7b-4d48-9bf8-68d23b41%04d",'
             b'"price":95495.96,"size":0.00310908,"taker_side":"BUY","symbol_id":"%s","sequence":%d,"type":"trade"}')


def _frame(payload: bytes) -> bytes:
    n = len(payload)
    head = bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + n.to_bytes(2, "big")
    return head + payload


async def _serve(stream: trio.SocketStream) -> None:
    ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    while True:
        ws.receive_data(await stream.receive_some(65536))
        if any(isinstance(e, Request) for e in ws.events()):
            break
    await stream.send_all(ws.send(AcceptConnection()))
    await stream.receive_some(65536)  # the hello; its filters are ignored
    sequence = 0
    while True:
        now = format_iso_ns(time.time_ns()).encode()
        frames = []
        for i in range(BATCH):
            sequence += 1
            symbol = SYMBOLS[i % len(SYMBOLS)]
            frames.append(_frame(_TEMPLATE % (now, now, sequence % 10000, symbol, sequence // len(SYMBOLS) + 1)))
        await stream.send_all(b"".join(frames))


async def main(port: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    print(f"blast upstream listening on ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1/", flush=True)
    await trio.serve_listeners(_serve, listeners)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    trio.run(main, parser.parse_args().port)
