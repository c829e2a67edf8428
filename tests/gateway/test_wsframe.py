"""Our server frames must be what any WebSocket client parses: checked with wsproto's client side."""

import wsproto
from hypothesis import given
from hypothesis import strategies as st
from wsproto.events import BytesMessage, CloseConnection, Request, TextMessage

from gateway.wsframe import binary_frame, close_frame, text_frame


def _client_receiving(data: bytes) -> list:
    """A wsproto client past its handshake, fed `data`; returns the events it parsed."""
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="localhost", target="/")))
    next(server.events())
    client.receive_data(server.send(wsproto.events.AcceptConnection()))
    next(client.events())
    client.receive_data(data)
    return list(client.events())


@given(st.text(max_size=70_000))
def test_text_frames_parse_back_to_the_same_text(text):
    (event,) = _client_receiving(text_frame(text.encode()))
    assert isinstance(event, TextMessage) and event.message_finished
    assert event.data == text


@given(st.binary(max_size=300))
def test_binary_frames_parse_back_to_the_same_bytes(payload):
    (event,) = _client_receiving(binary_frame(payload))
    assert isinstance(event, BytesMessage)
    assert event.data == payload


def test_length_encodings_at_their_boundaries():
    for size in (0, 125, 126, 65535, 65536):
        events = _client_receiving(binary_frame(b"x" * size))
        assert [len(e.data) for e in events] == [size]


def test_close_frame_carries_code_and_reason():
    (event,) = _client_receiving(close_frame(1001, "gateway shutting down"))
    assert isinstance(event, CloseConnection)
    assert (event.code, event.reason) == (1001, "gateway shutting down")
