"""Heavy client reads take turns: a read of `HEAVY_READ_BYTES` or more (a big subscribe) is applied
only while holding the server's `heavy_gate`, so many at once are applied one per scheduler pass
instead of adding up to one long stall; light reads (pings, small requests) never wait for it."""

import json

import trio

from gateway.wspeer import HEAVY_READ_BYTES
from tests.gateway.test_wspeer import _server
from tests.support.raw import masked_frame, server_frames, upgraded_stream

BIG = json.dumps({"type": "subscribe", "channels": [f"trade:binance:C{i}/USDT" for i in range(300)]}).encode()
PING = b'{"type":"ping"}'


async def _replies(stream: trio.abc.Stream) -> list[dict]:
    """What the server sent within one fake second (everything it had to send, or nothing)."""
    data = b""
    with trio.move_on_after(1):
        while True:
            data += await stream.receive_some(1 << 20)
    return [json.loads(payload) for opcode, payload in server_frames(data) if opcode == 0x1]


async def test_a_heavy_read_waits_for_the_gate_and_a_light_one_does_not(autojump_clock, nursery):
    assert len(BIG) >= HEAVY_READ_BYTES
    _, server = _server()
    heavy, _ = await upgraded_stream(server, nursery)
    light, _ = await upgraded_stream(server, nursery)
    async with server.heavy_gate:  # another heavy read is being applied
        await heavy.send_all(masked_frame(0x1, BIG))
        await light.send_all(masked_frame(0x1, PING))
        assert [r["type"] for r in await _replies(light)] == ["pong"]
        assert await _replies(heavy) == []  # not applied yet
    replies = await _replies(heavy)
    assert len(replies) == 300 and {r["type"] for r in replies} == {"subscribed"}


async def test_the_small_tail_of_a_big_message_waits_for_the_gate_too(autojump_clock, nursery):
    """A big message arriving in several reads: its last read may be small, but applying it is
    the whole message's work."""
    _, server = _server()
    heavy, _ = await upgraded_stream(server, nursery)
    frame = masked_frame(0x1, BIG)
    await heavy.send_all(frame[:-100])  # the gate is free: taken in, nothing complete to apply
    assert await _replies(heavy) == []
    async with server.heavy_gate:
        await heavy.send_all(frame[-100:])
        assert await _replies(heavy) == []  # 100 bytes, but they complete a 300-channel subscribe
    assert len(await _replies(heavy)) == 300


async def test_a_big_request_applied_in_slices_keeps_every_reply_in_order(autojump_clock, nursery):
    _, server = _server()
    client, _ = await upgraded_stream(server, nursery)
    await client.send_all(masked_frame(0x1, BIG) + masked_frame(0x1, PING))
    replies = await _replies(client)
    assert [r["type"] for r in replies] == ["subscribed"] * 300 + ["pong"]
    assert [r["channel"] for r in replies[:300]] == [f"trade:binance:C{i}/USDT" for i in range(300)]


async def test_a_big_request_sent_along_with_the_upgrade_waits_for_the_gate_too(autojump_clock, nursery):
    from tests.support.raw import UPGRADE, raw_stream, read_head

    _, server = _server()
    client = raw_stream(server, nursery)
    async with server.heavy_gate:
        await client.send_all(UPGRADE + masked_frame(0x1, BIG))  # one packet: head and request
        head, rest = await read_head(client)
        assert head.startswith(b"HTTP/1.1 101") and rest == b""
        assert await _replies(client) == []  # not applied past the gate
    assert len(await _replies(client)) == 300
