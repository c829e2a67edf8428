"""The native stream (`/stream`): normalized events, JSON text frames or MessagePack binary frames.

Client → gateway: `{"type":"subscribe","channels":[...]}`, `{"type":"unsubscribe","channels":[...]}`,
`{"type":"ping"}`. Gateway → client: one `subscribed`/`unsubscribed` per channel, `pong`, `error` with
a `code` (INVALID_JSON, INVALID_REQUEST, UNKNOWN_TYPE, INVALID_CHANNEL, NO_ROUTE,
SUBSCRIPTION_LIMIT), then the events of `schemas.events` as they come.
Parsing is pure (`parse_request`); `NativeSession` applies requests to the hub and never blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, Literal

import msgspec

from gateway.context import GatewayContext, bearer_token
from gateway.hub import CodecSubscriber, Hub
from gateway.outbox import DroppedWindow, Outbox
from gateway.server import HttpRequest, HttpResponse, json_response
from gateway.wsframe import binary_frame, text_frame
from gateway.wspeer import WebSocketPeer
from schemas import Event, Gap, json_encoder, msgpack_encoder
from schemas.channels import ChannelError
from schemas.streams import StreamKey

# ----- wire of the native protocol (pure) ----------------------------------------------------


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="type"):
    channels: list[str]


class Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="type"):
    channels: list[str]


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    pass


ClientRequest = Subscribe | Unsubscribe | Ping


class Subscribed(msgspec.Struct, tag="subscribed", tag_field="type"):
    channel: str


class Unsubscribed(msgspec.Struct, tag="unsubscribed", tag_field="type"):
    channel: str


class Pong(msgspec.Struct, tag="pong", tag_field="type"):
    ts_gateway: int


ErrorCode = Literal[
    "INVALID_JSON", "INVALID_REQUEST", "UNKNOWN_TYPE", "INVALID_CHANNEL", "NO_ROUTE", "SUBSCRIPTION_LIMIT"
]


class Error(msgspec.Struct, tag="error", tag_field="type", omit_defaults=True):
    code: ErrorCode
    message: str
    channel: str | None = None


_KNOWN_TYPES: Final = {"subscribe", "unsubscribe", "ping"}


class RequestError(ValueError):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_request(message: str | bytes, *, msgpack: bool = False) -> ClientRequest:
    """Decode one client message; RequestError says which error code it earns."""
    as_msgpack = msgpack and isinstance(message, bytes)
    try:
        raw = msgspec.msgpack.decode(message) if isinstance(message, bytes) and msgpack else msgspec.json.decode(message)
    except msgspec.DecodeError:
        # One code for "cannot be decoded" in either format; the text says which format was expected.
        raise RequestError("INVALID_JSON", f"message is not valid {'MessagePack' if as_msgpack else 'JSON'}") from None
    if not isinstance(raw, dict):
        raise RequestError("INVALID_REQUEST", "message must be an object with a 'type'")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise RequestError("INVALID_REQUEST", "missing field 'type'")
    if kind not in _KNOWN_TYPES:
        raise RequestError("UNKNOWN_TYPE", f"unknown message type {kind!r}")
    try:
        return msgspec.convert(raw, ClientRequest)
    except msgspec.ValidationError as exc:
        raise RequestError("INVALID_REQUEST", str(exc).replace("`$.", "`")) from None


# ----- codecs: one frame per event per format, shared by every client of that format --------


Reply = Subscribed | Unsubscribed | Pong | Error


class JsonCodec:
    name = "native-json"
    msgpack = False

    def frame(self, event: Event) -> bytes | None:
        return self.encode(event)

    def encode(self, message: Event | Reply) -> bytes:
        return text_frame(json_encoder.encode(message))


class MsgpackCodec:
    name = "native-msgpack"
    msgpack = True

    def frame(self, event: Event) -> bytes | None:
        return self.encode(event)

    def encode(self, message: Event | Reply) -> bytes:
        return binary_frame(msgpack_encoder.encode(message))


NativeCodec = JsonCodec | MsgpackCodec


CODECS: Final[dict[str, NativeCodec]] = {"json": JsonCodec(), "msgpack": MsgpackCodec()}


# ----- endpoint and session -------------------------------------------------------------------


class NativeEndpoint:
    """`/stream`: the native protocol. Local key (when configured): `Authorization: Bearer <key>`,
    `X-API-Key` or `?apikey=`; a refused key is answered HTTP 401 before the upgrade."""

    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx

    def serves_websocket(self, path: str) -> bool:
        return path.rstrip("/") == "/stream"

    def open_session(self, peer: WebSocketPeer, request: HttpRequest) -> NativeSession | HttpResponse:
        key = bearer_token(request) or request.headers.get("x-api-key") or request.query.get("apikey")
        if not self.ctx.key_ok(key):
            return json_response(401, {"message": "a valid local key is required"})
        codec = CODECS.get(request.query.get("format", "json"))
        if codec is None:
            return json_response(400, {"message": "format must be json or msgpack"})
        limit = self.ctx.config.server.max_subscriptions_per_client
        return NativeSession(self.ctx.hub, peer.outbox, codec, limit)

    async def http(self, request: HttpRequest) -> HttpResponse | None:
        return None



class NativeSession(CodecSubscriber):
    codec: NativeCodec

    def __init__(
        self, hub: Hub, outbox: Outbox, codec: NativeCodec, max_subscriptions: int, *, clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self.hub = hub
        self._clock_ns = clock_ns
        self.outbox = outbox
        self.codec = codec
        self.max_subscriptions = max_subscriptions
        self.subscriptions: set[StreamKey] = set()
        self._replies: list[bytes] = []  # the replies of the request being answered

    def on_message(self, message: str | bytes) -> None:
        with self.hub.batch():  # one update per source for all the streams this changes
            self._replies = []
            self._on_message(message)
            # One request's replies are one control item: a thousand-channel subscribe is answered
            # in full, however low the outbox's bound on replies a client leaves unread.
            if self._replies:
                self.outbox.put_control(b"".join(self._replies))

    def _on_message(self, message: str | bytes) -> None:
        try:
            request = parse_request(message, msgpack=self.codec.msgpack)
        except RequestError as exc:
            self._reply(Error(code=exc.code, message=str(exc)))
            return
        if isinstance(request, Ping):
            self._reply(Pong(ts_gateway=self._clock_ns()))
        elif isinstance(request, Subscribe):
            for channel in request.channels:
                self._subscribe(channel)
        else:
            for channel in request.channels:
                self._unsubscribe(channel)

    def _subscribe(self, channel: str) -> None:
        try:
            key = StreamKey.parse(channel)
        except ChannelError as exc:
            self._reply(Error(code="INVALID_CHANNEL", message=str(exc), channel=channel))
            return
        refusal = self.hub.refusal(key.datatype)
        if refusal is not None:
            self._reply(Error(code="NO_ROUTE", message=refusal, channel=channel))
            return
        if key not in self.subscriptions and len(self.subscriptions) >= self.max_subscriptions:
            message = f"subscription limit reached (max {self.max_subscriptions} per connection)"
            self._reply(Error(code="SUBSCRIPTION_LIMIT", message=message, channel=channel))
            return
        # Reply before subscribing, so the confirmation precedes the stream's first event.
        self._reply(Subscribed(channel=key.channel()))
        self.subscriptions.add(key)
        self.hub.subscribe(self, key)

    def _unsubscribe(self, channel: str) -> None:
        try:
            key = StreamKey.parse(channel)
        except ChannelError as exc:
            self._reply(Error(code="INVALID_CHANNEL", message=str(exc), channel=channel))
            return
        self.subscriptions.discard(key)
        self.hub.unsubscribe(self, key)
        self._reply(Unsubscribed(channel=key.channel()))

    def _reply(self, reply: Reply) -> None:
        self._replies.append(self.codec.encode(reply))

    def gap_frames(self, dropped: list[DroppedWindow]) -> list[bytes]:
        now = self._clock_ns()
        frames = []
        for window in dropped:
            stream = window.key
            gap = Gap(
                provider=self.hub.serving.get(stream.datatype) or "gateway",
                ts_gateway=now,
                datatype=stream.datatype,
                exchange=stream.exchange,
                symbol=stream.symbol,
                from_ts=window.from_ts,
                to_ts=window.to_ts,
                cause="client_overflow",
                missed=window.missed,
            )
            frames.append(self.codec.encode(gap))
        return frames

    def on_close(self) -> None:
        with self.hub.batch():  # one re-plan for all the streams this changes
            self._on_close()

    def _on_close(self) -> None:
        for key in self.subscriptions:
            self.hub.unsubscribe(self, key)
        self.subscriptions.clear()


