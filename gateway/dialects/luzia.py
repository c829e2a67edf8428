"""The Luzia-compatible endpoint: `/v1/ws` and Luzia's REST ticker paths, on the gateway's port.

An app written for Luzia changes only its base URL (`http://localhost:8765` → the SDK derives
`ws://localhost:8765/v1/ws`) and keeps working, whichever provider `[routes] ticker` names: the
hub hands the session normalized tickers and `LuziaCodec` shows them in Luzia's exact shape.

The session follows Luzia's protocol, and the Luzia emulator's choices where the docs are silent:
- Upgrade: with local keys configured, no `Authorization: Bearer` key is HTTP 401 (JSON body); a
  wrong key, or more than `max_connections` connections, is accepted, answered with one
  `CONNECTION_REJECTED` error and closed with 1008. Otherwise `connected` with the configured tier
  name and `limits.maxSubscriptions`.
- Every channel of a (un)subscribe gets exactly one answer, in order, echoing the channel as the
  client spelled it: `subscribed`, or `INVALID_CHANNEL` (malformed, or no provider is routed for
  tickers) or `SUBSCRIPTION_LIMIT`. `BTC/USDT` and `BTC-USDT` are one channel (counted once).
- Shutdown: `SERVER_SHUTDOWN`, then a close with 1001.
- Luzia has no gap message. Tickers are latest-wins (a lagging client gets the newest ticker of
  each symbol, never a stale queue), so nothing a ticker client needs is ever dropped, and an
  upstream gap is healed by the next ticker, which carries the full state.
Never: blocks in `on_message` (the hub is synchronous), or writes to the socket (the peer does).
"""

from __future__ import annotations

import time
import weakref

import trio

from gateway.context import GatewayContext, bearer_token
from gateway.dialects.luzia_proto import (
    SHUTDOWN_MESSAGE,
    LuziaCodec,
    RequestError,
    connected_frame,
    error_frame,
    parse_request,
    pong_frame,
    subscribed_frame,
    unsubscribed_frame,
)
from gateway.dialects.luzia_rest import LuziaRest, TickerWatches, error_response
from gateway.outbox import DroppedWindow
from gateway.server import HttpRequest, HttpResponse
from gateway.wspeer import WebSocketPeer
from schemas.streams import StreamKey
from providers.luzia import wire
from providers.luzia.channels import ChannelError, parse_channel

WEBSOCKET_PATH = "/v1/ws"


class LuziaEndpoint:
    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.config = ctx.config.endpoints.luzia
        self.codec = LuziaCodec()
        # Weak, so a session whose upgrade failed before it ever ran does not hold a slot forever.
        self.sessions: weakref.WeakSet[LuziaSession] = weakref.WeakSet()
        self.watches = TickerWatches(ctx.hub, max_streams=self.config.max_subscriptions)
        self.rest = LuziaRest(ctx, self.watches, self.codec.exchanges)

    def serves_websocket(self, path: str) -> bool:
        return path.rstrip("/") == WEBSOCKET_PATH

    def open_session(self, peer: WebSocketPeer, request: HttpRequest) -> LuziaSession | HttpResponse:
        key = bearer_token(request)
        if self.ctx.local_keys is not None and key is None:
            return error_response(401, "Missing or invalid API key")
        session = LuziaSession(self, peer)
        if not self.ctx.key_ok(key):
            session.reject("Invalid API key")
        elif len(self.sessions) >= self.config.max_connections:
            session.reject(f"Connection limit exceeded (max {self.config.max_connections} for {self.config.tier} tier)")
        else:
            self.sessions.add(session)
            session.start()
        return session

    async def http(self, request: HttpRequest) -> HttpResponse | None:
        return await self.rest.handle(request)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The endpoint's timer: REST-started subscriptions end `keepalive` after their last request."""
        await self.watches.run(task_status=task_status)


class LuziaSession:
    def __init__(self, endpoint: LuziaEndpoint, peer: WebSocketPeer) -> None:
        self.endpoint = endpoint
        self.hub = endpoint.ctx.hub
        self.peer = peer
        self.outbox = peer.outbox
        self.codec = endpoint.codec
        self.accepts = None  # every event of a subscribed stream is for this client
        self.limit = endpoint.config.max_subscriptions
        self.channels: dict[str, StreamKey] = {}  # canonical channel → stream
        self.open = False

    def start(self) -> None:
        self.open = True
        self.outbox.put_control(connected_frame(self.endpoint.config.tier, self.limit))

    def reject(self, reason: str) -> None:
        self.outbox.put_control(error_frame("CONNECTION_REJECTED", reason))
        self.peer.close(1008, "connection rejected")

    def on_message(self, message: str | bytes) -> None:
        with self.hub.batch():  # one re-plan for all the streams this changes
            self._on_message(message)

    def _on_message(self, message: str | bytes) -> None:
        if not self.open:
            return
        try:
            request = parse_request(message)
        except RequestError as exc:
            self.outbox.put_control(error_frame(exc.code, str(exc)))
            return
        if type(request) is wire.Ping:
            self.outbox.put_control(pong_frame(time.time_ns()))
        elif type(request) is wire.Subscribe:
            for channel in request.channels:
                self._subscribe(channel)
        else:
            for channel in request.channels:
                self._unsubscribe(channel)

    def _subscribe(self, raw: str) -> None:
        try:
            channel = parse_channel(raw)
        except ChannelError:
            self.outbox.put_control(error_frame("INVALID_CHANNEL", f"Invalid channel: {raw}"))
            return
        if not self.hub.routed("ticker"):
            message = f"Invalid channel: {raw} (no provider serves tickers on this gateway)"
            self.outbox.put_control(error_frame("INVALID_CHANNEL", message))
            return
        name = str(channel)
        if name not in self.channels and len(self.channels) >= self.limit:
            message = f"Subscription limit exceeded (max {self.limit} for {self.endpoint.config.tier} tier)"
            self.outbox.put_control(error_frame("SUBSCRIPTION_LIMIT", message))
            return
        # Reply before subscribing, so the confirmation precedes the stream's first ticker.
        self.outbox.put_control(subscribed_frame(raw))
        if name not in self.channels:
            self.channels[name] = key = StreamKey("ticker", channel.exchange, channel.symbol)
            self.hub.subscribe(self, key)

    def _unsubscribe(self, raw: str) -> None:
        try:
            channel = parse_channel(raw)
        except ChannelError:
            self.outbox.put_control(error_frame("INVALID_CHANNEL", f"Invalid channel: {raw}"))
            return
        key = self.channels.pop(str(channel), None)
        if key is not None:
            self.hub.unsubscribe(self, key)
        self.outbox.put_control(unsubscribed_frame(raw))

    def gap_frames(self, dropped: list[DroppedWindow]) -> list[bytes]:
        return []  # tickers are conflated, never dropped: there is no window to report

    def goodbye_frames(self) -> list[bytes]:
        return [error_frame("SERVER_SHUTDOWN", SHUTDOWN_MESSAGE)] if self.open else []

    def on_close(self) -> None:
        with self.hub.batch():  # one re-plan for all the streams this changes
            self._on_close()

    def _on_close(self) -> None:
        self.open = False
        for key in self.channels.values():
            self.hub.unsubscribe(self, key)
        self.channels.clear()
        self.endpoint.sessions.discard(self)
