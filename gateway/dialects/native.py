"""The native stream (`/stream`): normalized events, JSON text frames or MessagePack binary frames.

Client → gateway: `{"type":"subscribe","channels":[...]}`, `{"type":"unsubscribe","channels":[...]}`,
`{"type":"ping"}`. Gateway → client: one `subscribed`/`unsubscribed` per channel, `pong`, `error` with
a `code` (INVALID_JSON, INVALID_REQUEST, UNKNOWN_TYPE, INVALID_CHANNEL, NO_ROUTE,
SUBSCRIPTION_LIMIT, RATE_LIMITED), then the events of `schemas.events` as they come.
Parsing is pure (`parse_request`); `NativeSession` applies requests to the hub and never blocks.

Hostile input: whatever a client sends is a request or an error reply. Undecodable bytes (invalid
UTF-8, JSON nested thousands deep — msgspec raises RecursionError for it, not DecodeError — or the
wrong format) are INVALID_JSON; JSON in a binary frame on a JSON stream, and a text frame on a
MessagePack stream, are read as JSON. A request naming more than `MAX_CHANNELS_PER_REQUEST`
channels is INVALID_REQUEST and nothing of it is applied. Channels over a cap are refused
together: one SUBSCRIPTION_LIMIT error after the `subscribed` replies, naming how many (and
which) were refused — per connection (`server.max_subscriptions_per_client`), or for the gateway
(`limits.max_streams` distinct streams); nothing already subscribed is lost. Each message takes
tokens of the connection's bucket (`gateway.flood`: one, and one per further 256 bytes): a message
over the rate is answered RATE_LIMITED and not applied, and `limits.flood_strikes` of them in a row end with the error and a
close (1008).
Big requests are applied `SLICE_CHANNELS` channels per scheduler pass (`background`), in order, so
that one client's 1,000-channel subscribe does not stall every other client for its whole cost.
Never: lets a client message raise out of `on_message`, or applies a refused message.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Literal

import msgspec
import trio
import trio.lowlevel

from gateway.context import GatewayContext, bearer_token
from gateway.flood import FLOOD_CLOSE_CODE, FLOOD_CLOSE_REASON, Verdict, message_cost
from gateway.hub import CodecSubscriber
from gateway.outbox import DroppedWindow, Outbox
from gateway.server import HttpRequest, HttpResponse, json_response
from gateway.wsframe import binary_frame, close_frame, text_frame
from gateway.wspeer import WebSocketPeer
from providers.common.signal import Wakeup
from schemas import Event, Gap, json_encoder, msgpack_encoder
from schemas.channels import ChannelError
from schemas.instruments import shown
from schemas.streams import StreamKey

log = logging.getLogger(__name__)

#: Channels one request may name. The message-size cap bounds this too; this bounds one message's
#: work whatever that cap is set to, and stays well above a legal subscribe of a full connection.
MAX_CHANNELS_PER_REQUEST: Final = 4096
#: Channels applied per scheduler pass. A 1,000-channel subscribe costs ~25 ms in one step (parse,
#: caps, hub, the adapters' planners); in slices of this many, other clients wait a few ms at a
#: time. Requests are still applied in order, and their replies keep their order.
SLICE_CHANNELS: Final = 100
#: Requests waiting behind one being applied (the token bucket bounds how fast they come).
MAX_BACKLOG: Final = 64

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
    "INVALID_JSON", "INVALID_REQUEST", "UNKNOWN_TYPE", "INVALID_CHANNEL", "NO_ROUTE", "SUBSCRIPTION_LIMIT",
    "RATE_LIMITED",
]


class Error(msgspec.Struct, tag="error", tag_field="type", omit_defaults=True):
    code: ErrorCode
    message: str
    channel: str | None = None
    channels: list[str] | None = None  # SUBSCRIPTION_LIMIT: the channels refused, as sent


_KNOWN_TYPES: Final = {"subscribe", "unsubscribe", "ping"}


class RequestError(ValueError):
    def __init__(self, code: ErrorCode, message: str, *, fault: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        # The decoder raised outside its contract (its bug, not the client's): answered the same,
        # but counted and logged by the session. The exception's type name only, no client text.
        self.fault = fault


def parse_request(message: str | bytes, *, msgpack: bool = False) -> ClientRequest:
    """Decode one client message; RequestError says which error code it earns."""
    raw = _decode(message, msgpack and isinstance(message, bytes))
    if not isinstance(raw, dict):
        raise RequestError("INVALID_REQUEST", "message must be an object with a 'type'")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise RequestError("INVALID_REQUEST", "missing field 'type'")
    if kind not in _KNOWN_TYPES:
        raise RequestError("UNKNOWN_TYPE", f"unknown message type {shown(kind)}")
    try:
        request = msgspec.convert(raw, ClientRequest)
    except msgspec.ValidationError as exc:
        raise RequestError("INVALID_REQUEST", str(exc).replace("`$.", "`")) from None
    if not isinstance(request, Ping) and len(request.channels) > MAX_CHANNELS_PER_REQUEST:
        raise RequestError("INVALID_REQUEST", f"too many channels in one request (max {MAX_CHANNELS_PER_REQUEST})")
    return request


def _decode(message: str | bytes, as_msgpack: bool) -> object:
    # One code for "cannot be decoded" in either format; the text says which format was expected.
    problem = f"message is not valid {'MessagePack' if as_msgpack else 'JSON'}"
    try:
        if as_msgpack and isinstance(message, bytes):
            return msgspec.msgpack.decode(message)
        return msgspec.json.decode(message)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested thousands deep
        raise RequestError("INVALID_JSON", problem) from None
    except Exception as exc:  # noqa: BLE001  defence in depth: outside msgspec's contract, still the client's answer
        raise RequestError("INVALID_JSON", problem, fault=type(exc).__name__) from None


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
        return NativeSession(self.ctx, peer.outbox, codec, close=peer.close)

    async def http(self, request: HttpRequest) -> HttpResponse | None:
        return None


class _Work:
    """One allowed request on its way through `NativeSession._step`: parsed on its turn, applied
    SLICE_CHANNELS channels at a time, with what its caps refused gathered for one error."""

    __slots__ = ("done", "message", "over_connection", "over_gateway", "position", "request")

    def __init__(self, message: str | bytes) -> None:
        self.message = message
        self.request: Subscribe | Unsubscribe | None = None
        self.position = 0
        self.done = False
        self.over_connection: list[str] = []
        self.over_gateway: list[str] = []


class NativeSession(CodecSubscriber):
    codec: NativeCodec

    def __init__(
        self,
        ctx: GatewayContext,
        outbox: Outbox,
        codec: NativeCodec,
        *,
        close: Callable[[int, str], None] | None = None,
        clock: Callable[[], float] = trio.current_time,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.ctx = ctx
        self.hub = ctx.hub
        self._clock, self._clock_ns = clock, clock_ns
        self.outbox = outbox
        self.codec = codec
        self._close = close or self._close_outbox
        self.max_subscriptions = ctx.config.server.max_subscriptions_per_client
        self.max_streams = ctx.config.limits.max_streams
        self.guard = ctx.flood_guard(clock())
        self.subscriptions: set[StreamKey] = set()
        self._replies: list[bytes] = []  # the replies of the request being answered
        self._closed = False
        self._backlog: deque[_Work] = deque()  # allowed requests not yet (fully) applied, in order
        self._more = Wakeup()  # `background` applies what one step did not

    def _close_outbox(self, code: int, reason: str) -> None:
        self.outbox.close(close_frame(code, reason))

    def on_message(self, message: str | bytes) -> None:
        if self._closed:
            return  # closing for flooding: nothing more is answered
        verdict = self.guard.check(self._clock(), message_cost(message))
        if verdict is Verdict.ALLOW and len(self._backlog) >= MAX_BACKLOG:
            verdict = Verdict.REFUSE  # requests arrive faster than they can be applied
        if verdict is Verdict.ALLOW:
            self._backlog.append(_Work(message))
            self._step()
        else:
            self._replies = []
            self._flooded()
            self._send_replies()
        if verdict is Verdict.CLOSE:
            self._closed = True
            self._backlog.clear()
            self.ctx.counters.flood_closed += 1
            self._close(FLOOD_CLOSE_CODE, FLOOD_CLOSE_REASON)

    def _step(self) -> None:
        """Apply up to SLICE_CHANNELS channels of the waiting requests (at least one request's
        worth when it is small), as one hub batch; the rest is `background`'s, after a checkpoint."""
        budget = SLICE_CHANNELS
        with self.hub.batch():  # one update per source for all the streams this changes
            self._replies = []
            while self._backlog and budget > 0:
                work = self._backlog[0]
                budget -= self._advance(work, budget)
                if work.done:
                    self._backlog.popleft()
            # One step's replies are one control item: a thousand-channel subscribe is answered
            # in full, however low the outbox's bound on replies a client leaves unread.
            self._send_replies()
        if self._backlog:
            self._more.fire()

    async def background(self) -> None:
        """Applies, a slice per scheduler pass, what `on_message` left for later."""
        while True:
            await self._more.wait()
            while self._backlog and not self._closed:
                await trio.lowlevel.checkpoint()
                self._step()

    def _send_replies(self) -> None:
        if self._replies:
            self.outbox.put_control(b"".join(self._replies))
            self._replies = []

    def _advance(self, work: _Work, budget: int) -> int:
        """Apply the next part of one request (parsing it first); the channels it took."""
        if work.request is None:
            request = self._parse(work.message)
            if request is None or isinstance(request, Ping):
                work.done = True
                return 1
            work.request = request
        channels = work.request.channels[work.position : work.position + budget]
        work.position += len(channels)
        if isinstance(work.request, Subscribe):
            self._subscribe_all(channels, work)
        else:
            for channel in channels:
                self._unsubscribe(channel)
        if work.position >= len(work.request.channels):
            work.done = True
            self._over_caps(work)
        return max(1, len(channels))

    def _flooded(self) -> None:
        self.ctx.counters.rate_limited += 1
        limits = self.ctx.config.limits
        message = (f"too many messages: at most {limits.messages_per_second:g} per second "
                   f"(bursts of {limits.message_burst}; each 256 bytes counts as one); this one was not applied")
        self._reply(Error(code="RATE_LIMITED", message=message))

    def _parse(self, message: str | bytes) -> Subscribe | Unsubscribe | Ping | None:
        """The request, answered at once if it is a ping; None once its error is queued."""
        try:
            request = parse_request(message, msgpack=self.codec.msgpack)
        except RequestError as exc:
            self._refused(exc)
            return None
        if isinstance(request, Ping):
            self._reply(Pong(ts_gateway=self._clock_ns()))
        return request

    def _refused(self, exc: RequestError) -> None:
        if exc.code == "INVALID_JSON":
            self.ctx.counters.malformed += 1
        if exc.fault is not None:
            self.ctx.counters.decoder_faults += 1
            log.warning("native client message: decoder raised %s; answered INVALID_JSON", exc.fault)
        self._reply(Error(code=exc.code, message=str(exc)))

    def _subscribe_all(self, channels: list[str], work: _Work) -> None:
        """Each channel's answer in order; those over a cap are kept in `work` and refused
        together once the whole request is applied (`_over_caps`)."""
        for channel in channels:
            key = self._key(channel)
            if key is None:
                continue
            if key not in self.subscriptions:
                if len(self.subscriptions) >= self.max_subscriptions:
                    work.over_connection.append(channel)
                    continue
                if not self.hub.room_for((key,), self.max_streams):
                    work.over_gateway.append(channel)
                    continue
            # Reply before subscribing, so the confirmation precedes the stream's first event.
            self._reply(Subscribed(channel=key.channel()))
            self.subscriptions.add(key)
            self.hub.subscribe(self, key)

    def _over_caps(self, work: _Work) -> None:
        if work.over_connection:
            self._over_cap(work.over_connection, f"subscription limit reached (max {self.max_subscriptions} per connection)")
        if work.over_gateway:
            self._over_cap(work.over_gateway, f"the gateway's stream limit is reached (max {self.max_streams} streams)")

    def _key(self, channel: str) -> StreamKey | None:
        """The channel's key, or None once its error is queued (malformed, or not routed)."""
        try:
            key = StreamKey.parse(channel)
        except ChannelError as exc:
            self._reply(Error(code="INVALID_CHANNEL", message=str(exc), channel=channel))
            return None
        refusal = self.hub.refusal(key.datatype)
        if refusal is not None:
            self._reply(Error(code="NO_ROUTE", message=refusal, channel=channel))
            return None
        return key

    def _over_cap(self, channels: list[str], why: str) -> None:
        self.ctx.counters.over_cap += 1
        message = f"{why}: {len(channels)} channel{'s' if len(channels) != 1 else ''} refused"
        self._reply(Error(code="SUBSCRIPTION_LIMIT", message=message, channels=channels))

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
        self._backlog.clear()
        with self.hub.batch():  # one re-plan for all the streams this changes
            self._on_close()

    def _on_close(self) -> None:
        for key in self.subscriptions:
            self.hub.unsubscribe(self, key)
        self.subscriptions.clear()


