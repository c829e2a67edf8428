"""The baseline: a bare trio-websocket relay that does no parsing.

One upstream CoinAPI connection (hello for every trade); every message received is sent, message by
message with `send_message`, to every connected client. What a gateway costs is measured against
this, in the same run. Loopback only; stops when its parent kills it.
"""

from __future__ import annotations

import argparse
import json

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, open_websocket_url, serve_websocket

HELLO = json.dumps({"type": "hello", "apikey": "00000000-0000-0000-0000-000000000000", "subscribe_data_type": ["trade"]})


async def main(upstream: str, port: int) -> None:
    clients: set = set()

    async def accept(request: WebSocketRequest) -> None:
        ws = await request.accept()
        clients.add(ws)
        try:
            await ws.get_message()  # ignore the client's subscribe; hold until it leaves
            await trio.sleep_forever()
        except ConnectionClosed:
            pass
        finally:
            clients.discard(ws)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, accept, "127.0.0.1", port, None)
        print(f"bare relay listening on ws://127.0.0.1:{server.port}/", flush=True)
        async with open_websocket_url(upstream) as up:
            await up.send_message(HELLO)
            while True:
                message = await up.get_message()
                for ws in list(clients):
                    try:
                        await ws.send_message(message)
                    except ConnectionClosed:
                        clients.discard(ws)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    trio.run(main, args.upstream, args.port)
