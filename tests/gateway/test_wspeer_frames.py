"""Whatever bytes a client sends after its upgrade, the peer's only outcomes are whole messages
within the limits handed to the session, or one close frame with a code of the protocol (the
client's own, or ours: 1002, 1007, 1008, 1009). Hypothesis over the pure part of the peer
(`receive`), with generated frames, raw garbage and hand-built pathological frames."""

from __future__ import annotations

import struct

import h11
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.config import Limits
from gateway.outbox import Outbox
from gateway.wspeer import WebSocketPeer
from tests.support.raw import masked_frame, server_frames

LIMITS = Limits(max_message_bytes=4096, max_message_fragments=8)
OUR_CODES = {1002, 1007, 1008, 1009}
REQUEST = h11.Request(method="GET", target="/stream", headers=[
    ("host", "localhost"), ("upgrade", "websocket"), ("connection", "Upgrade"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="), ("sec-websocket-version", "13")])


class Recorder:
    """A session that keeps what it was handed."""

    def __init__(self) -> None:
        self.messages: list[str | bytes] = []

    def on_message(self, message: str | bytes) -> None:
        self.messages.append(message)

    def gap_frames(self, dropped: list) -> list[bytes]:
        return []

    def on_close(self) -> None:
        pass


def _open_peer() -> WebSocketPeer:
    peer = WebSocketPeer(object(), REQUEST, Outbox(limit=64), limits=LIMITS)  # type: ignore[arg-type]
    assert peer.check_upgrade() is None
    assert peer.accepted().startswith(b"HTTP/1.1 101")
    return peer


def _feed(chunks: list[bytes]) -> tuple[WebSocketPeer, Recorder]:
    peer, session = _open_peer(), Recorder()
    for chunk in chunks:
        more = peer.receive(chunk, session)
        # Held for a message in progress: within the limits, or the one chunk that crossed them.
        assert peer._size <= LIMITS.max_message_bytes or peer.close_code == 1009
        assert peer._fragments <= LIMITS.max_message_fragments or peer.close_code == 1008
        if not more:
            break
    return peer, session


def _check(peer: WebSocketPeer, session: Recorder) -> None:
    for message in session.messages:
        size = len(message) if isinstance(message, bytes) else len(message.encode())
        assert size <= LIMITS.max_message_bytes
    frames = server_frames(b"".join(peer.outbox.take()[0]))
    closes = [payload for opcode, payload in frames if opcode == 0x8]
    assert len(closes) <= 1 and (not closes or frames[-1][0] == 0x8)  # one close frame, and last
    assert peer.outbox.closed == (peer.close_code is not None)
    if closes:  # our code, or the client's own echoed in the close handshake
        (code,) = struct.unpack("!H", closes[0][:2])
        assert code == int(peer.close_code)
        assert code in OUR_CODES or 1000 <= code <= 4999


FRAMES = st.builds(
    lambda opcode, payload, fin, rsv, masked: masked_frame(opcode, payload, fin=fin, rsv=rsv, masked=masked),
    st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB, 0xF]),
    st.one_of(st.binary(max_size=200), st.text(max_size=80).map(str.encode), st.just(b"\xff\xfe"),
              st.just(b"\xe2\x82"), st.just(b"\x03\xe8bye"), st.just(b"x" * 5000)),
    st.booleans(),
    st.sampled_from([0, 0, 0, 0x40, 0x20, 0x10]),
    st.just(True),  # masked, as clients must (unmasked frames are among the examples)
)
STREAMS = st.one_of(st.lists(FRAMES, max_size=30).map(b"".join), st.binary(max_size=600),
                    st.lists(st.one_of(FRAMES, st.binary(max_size=20)), max_size=20).map(b"".join))


@given(STREAMS, st.lists(st.integers(1, 64), max_size=40))
@example(b"[" * 100_000, [])
@example(masked_frame(0x1, b"[" * 100_000), [])
@example(masked_frame(0x1, b"", fin=False) + masked_frame(0x0, b"", fin=False) * 100_000, [])
@example(bytes([0x81, 0xFF]) + struct.pack("!Q", (1 << 63) - 1) + b"\0\0\0\0" + b"a" * 5000, [7, 1, 1])
@example(bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 63) + b"\0\0\0\0", [])
@example(masked_frame(0x1, "\u212a\u00df".encode() * 1000), [3, 5])
@example(masked_frame(0x1, b'{"type":"ping"}', masked=False), [])
@example(masked_frame(0x9, b"p" * 125) * 500, [])
@example(masked_frame(0x8, struct.pack("!H", 1005)), [])
@example(masked_frame(0x8, struct.pack("!H", 1000) + b"\xff"), [])
def test_any_bytes_give_whole_bounded_messages_or_one_close_frame(data, cuts):
    chunks, at = [], 0
    for cut in cuts:  # the same bytes, split wherever the network happens to split them
        chunks.append(data[at : at + cut])
        at += cut
    chunks.append(data[at:])
    peer, session = _feed([c for c in chunks if c])
    _check(peer, session)


@given(st.lists(st.text(max_size=300), min_size=1, max_size=8))
def test_well_formed_fragmented_text_arrives_whole(parts):
    encoded = [p.encode() for p in parts]
    frames = b"".join(masked_frame(0x1 if i == 0 else 0x0, e, fin=i == len(parts) - 1) for i, e in enumerate(encoded))
    peer, session = _feed([frames])
    if sum(map(len, encoded)) <= LIMITS.max_message_bytes:
        assert session.messages == ["".join(parts)] and peer.close_code is None
    else:
        assert session.messages == [] and peer.close_code == 1009


def test_eof_mid_message_closes_without_a_close_frame():
    peer, session = _feed([masked_frame(0x1, b"{", fin=False), b""])
    assert session.messages == [] and peer.close_code == 1006
    assert peer.outbox.take()[0] == []  # nothing left to answer


def test_many_frames_of_one_read_are_handled_a_pass_at_a_time():
    from gateway.wspeer import EVENTS_PER_PASS

    peer, session = _open_peer(), Recorder()
    peer._ws.receive_data(masked_frame(0x1, b"x") * (EVENTS_PER_PASS + 10))
    assert peer._handle_events(session, 0.0, EVENTS_PER_PASS) is None  # more wait: checkpoint, call again
    assert len(session.messages) == EVENTS_PER_PASS
    assert peer._handle_events(session, 0.0, EVENTS_PER_PASS) is True
    assert len(session.messages) == EVENTS_PER_PASS + 10


def test_a_flood_of_tiny_frames_is_cut_off_with_1008_and_not_parsed_further():
    from gateway.wspeer import FRAMES_PER_MESSAGE

    peer, session = _open_peer(), Recorder()
    budget = FRAMES_PER_MESSAGE * LIMITS.message_burst
    assert peer.receive(masked_frame(0x9, b"") * (budget + 5000), session) is False  # empty pings
    frames = server_frames(b"".join(peer.outbox.take()[0]))
    assert [op for op, _ in frames].count(0xA) == budget  # every ping within the budget answered
    assert frames[-1] == (0x8, struct.pack("!H", 1008) + b"too many frames")
    assert peer.receive(masked_frame(0x1, b"late"), session) is False and session.messages == []
