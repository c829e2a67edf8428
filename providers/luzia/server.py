"""Luzia's server side of one WebSocket connection, as a pure state machine. Pure: no Trio, no I/O.

Owns: the upgrade's auth rules (an `Authorization: Bearer` key of the right form; which keys are
accepted is injected), the refusals and their wording (HTTP 401/404 at the upgrade;
CONNECTION_REJECTED for a bad key, a tier without WebSocket access, the connection limit), the
`connected` message, the reading of client requests and every error they earn (INVALID_JSON,
INVALID_REQUEST, UNKNOWN_TYPE, INVALID_CHANNEL, SUBSCRIPTION_LIMIT), `pong`, SERVER_SHUTDOWN, and the
connection's subscription set with its limit.
Never: touches a socket, reads a clock (times are passed in), or knows what a channel carries:
which channels exist is a `Catalog` (the emulator's market; the gateway's routes), and the shells
apply the subscription changes (the emulator's publisher; the gateway's hub).

Theory of operation (one `ServerConnection` per WebSocket, in the manner of h11's `_state.py`):

    IDLE ──upgrade()──▶ refused at the upgrade (HttpRefusal) ─────────────────▶ CLOSED
      │                 accepted ──open()──▶ CONNECTION_REJECTED, close 1008 ──▶ CLOSED
      │                                  └─▶ `connected` ──▶ OPEN
    OPEN ──receive(text, now_ns)──▶ OPEN     replies, in order; channels added / removed
    OPEN ──shutdown()──▶ CLOSED              SERVER_SHUTDOWN, close 1001; every channel removed
    any  ──closed()──▶ CLOSED                the peer went away: every channel removed
    CLOSED ──receive()──▶ CLOSED             nothing: no frame may follow the close

Each call returns an `Output`: the messages to send (Luzia's wire Structs, in order), the
channels that became subscribed or unsubscribed (only real changes: subscribing twice is answered
`subscribed` and counted once; unsubscribing what is not subscribed is answered `unsubscribed`),
and the close to perform, if any. The shell sends the replies before it applies the changes, so
`subscribed` precedes the channel's first ticker.

Choices where Luzia's documentation is silent (the adapter handles exactly these):
- Every channel of a (un)subscribe gets exactly one answer, in order, echoing the channel as the
  client spelled it (`BTC/USDT` and `BTC-USDT` are one channel): `subscribed` / `unsubscribed`,
  or INVALID_CHANNEL ("Invalid channel: <as sent>", with the catalog's detail in parentheses when
  it has one) or SUBSCRIPTION_LIMIT ("Subscription limit exceeded (max N for T tier)").
- A channel the catalog lacks is INVALID_CHANNEL for unsubscribe too, unless it is subscribed.
- CONNECTION_REJECTED is sent after the upgrade was accepted, then the close (1008).
- Hostile input: a message that cannot be decoded (invalid UTF-8 in a binary frame, JSON nested
  thousands deep: msgspec raises RecursionError for that, not DecodeError) is INVALID_JSON; JSON in
  a binary frame is read as JSON. A request naming more than `MAX_CHANNELS_PER_REQUEST` channels is
  INVALID_REQUEST, with nothing of it applied. A decoder raising outside its contract is answered
  INVALID_JSON too, and `Output.fault` names the exception type for the shell to count and log.
- A shell may cap what a new channel costs beyond this connection (the gateway's total streams):
  `receive(..., room=)` says why a channel may not be added, answered SUBSCRIPTION_LIMIT.
- Flooding (the shell's token bucket decides, `rate_limited`): RATE_LIMITED ("Too many messages"),
  the message not applied; a client that keeps flooding gets it and the close (1008). Luzia
  documents no WebSocket rate-limit code; this one is ours, in Luzia's style.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Final, NamedTuple, Protocol

from providers.common.errors import MalformedFrame, RequestError, UnknownMessage
from providers.luzia import wire
from providers.luzia.grammar import Channel, ChannelError, TierLimits, parse_channel
from schemas.instruments import SHOWN_CHARS
from schemas.timeutil import format_iso_ns

CONNECTED_MESSAGE: Final = "Connected to Luzia WebSocket API"
SHUTDOWN_MESSAGE: Final = "Server is shutting down, reconnect shortly"
MISSING_KEY: Final = "Missing or invalid API key"
INVALID_KEY: Final = "Invalid API key"
NO_WEBSOCKET_PLAN: Final = "WebSocket access requires a Pro or Enterprise plan"
#: Luzia's key form: `lz_` and a token. The gateway's local keys are any token (`key_form=None`).
LUZIA_KEY: Final = re.compile(r"lz_[A-Za-z0-9_\-]{1,128}")
#: WebSocket close codes: policy violation (a refused connection), going away (shutdown).
CLOSE_REJECTED: Final = 1008
CLOSE_SHUTDOWN: Final = 1001
#: Channels one (un)subscribe may name: each earns an answer, so this bounds one message's work
#: and replies whatever the transport's message-size cap is (a full enterprise set is 500).
MAX_CHANNELS_PER_REQUEST: Final = 4096
#: Ours (Luzia documents no WebSocket rate-limit code).
RATE_LIMITED: Final = "RATE_LIMITED"

class State(enum.Enum):
    IDLE = "idle"  # no upgrade request seen yet
    OPEN = "open"  # `connected` sent: requests are answered
    CLOSED = "closed"  # refused, rejected, shut down or gone: nothing more is answered


class Catalog(Protocol):
    """Which channels exist here: the emulator's market, or the gateway's routes."""

    @property
    def detail(self) -> str | None:
        """Said in parentheses after "Invalid channel: …" for a channel this catalog lacks."""

    def has(self, channel: Channel) -> bool: ...


class Terms(NamedTuple):
    """What a server offers one key: the tier it announces, and its limits."""

    tier: str
    limits: TierLimits
    #: `maxSubscriptions` as `connected` states it, when it differs from the limit enforced (the
    #: emulator can overstate it, as a server may; None: the enforced limit).
    announced: int | None = None


class Access(NamedTuple):
    """Who may connect: the key's form and whether one is required; `key_ok` is injected (the
    emulator's accepted keys, the gateway's local keys)."""

    key_ok: Callable[[str | None], bool]
    key_form: re.Pattern[str] | None = LUZIA_KEY  # None: any token
    key_required: bool = True  # False: no key is let through to `key_ok` (a gateway without keys)
    path: str | None = None  # the one path served (None: the shell routes paths itself)


class HttpRefusal(NamedTuple):
    """The upgrade is answered with this HTTP status and a `{"message": ...}` JSON body."""

    status: int
    message: str


class Close(NamedTuple):
    code: int
    reason: str | None


class Output(NamedTuple):
    replies: list[wire.Connected | wire.Subscribed | wire.Unsubscribed | wire.Pong | wire.Error]
    added: list[Channel]
    removed: list[Channel]
    close: Close | None = None
    fault: str | None = None  # a decoder raised outside its contract: the exception's type name


#: Why a new channel may not be added beyond this connection's own limit (None: it may).
Room = Callable[[Channel], str | None]


class DecoderFault(RequestError):
    """A decoder raised something outside its contract: answered INVALID_JSON all the same."""

    def __init__(self, fault: str) -> None:
        super().__init__("INVALID_JSON", "Invalid JSON")
        self.fault = fault


def bearer_key(authorization: str | None, form: re.Pattern[str] | None = LUZIA_KEY) -> str | None:
    """The key of an `Authorization: Bearer <key>` header value, or None if missing or malformed."""
    if authorization is None:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or (form is not None and not form.fullmatch(key)):
        return None
    return key


def connected(terms: Terms) -> wire.Connected:
    limit = terms.announced if terms.announced is not None else terms.limits.subscriptions
    return wire.Connected(message=CONNECTED_MESSAGE, tier=terms.tier, limits=wire.Limits(maxSubscriptions=limit))


def parse_request(text: str | bytes) -> wire.ClientMessage:
    """One client message → a request; RequestError with Luzia's code and wording. The decoding
    rules (what is INVALID_JSON, INVALID_REQUEST, UNKNOWN_TYPE) are `wire.decode_client`'s."""
    try:
        message = wire.decode_client(text)
    except wire.NotJson:
        raise RequestError("INVALID_JSON", "Invalid JSON") from None
    except MalformedFrame as exc:
        raise RequestError("INVALID_REQUEST", str(exc)) from None
    except Exception as exc:  # noqa: BLE001  defence in depth: still the client's answer, and reported
        raise DecoderFault(type(exc).__name__) from None
    if isinstance(message, UnknownMessage):
        raise RequestError("UNKNOWN_TYPE", f"Unknown message type: {message.type[:SHOWN_CHARS]}")
    if isinstance(message, wire.Ping):
        return message
    if not message.channels:
        raise RequestError("INVALID_REQUEST", "Missing required field: channels")
    if len(message.channels) > MAX_CHANNELS_PER_REQUEST:
        raise RequestError("INVALID_REQUEST", f"Too many channels in one request (max {MAX_CHANNELS_PER_REQUEST})")
    return message


def _error(code: str, message: str) -> wire.Error:
    return wire.Error(code=code, message=message)


class ServerConnection:
    """One client connection's protocol state; see the module header for the transitions."""

    def __init__(self, terms: Terms, access: Access, catalog: Catalog) -> None:
        self.terms, self.access, self.catalog = terms, access, catalog
        self.state = State.IDLE
        self.key: str | None = None  # the client's key, once the upgrade was read
        self.channels: dict[str, Channel] = {}  # canonical name → parsed, in subscription order

    # ---- the upgrade ----------------------------------------------------------------------------

    def upgrade(self, path: str, authorization: str | None) -> HttpRefusal | None:
        """Read the upgrade request: None to accept it, else the HTTP refusal (→ CLOSED)."""
        self._expect(State.IDLE)
        access = self.access
        self.key = bearer_key(authorization, access.key_form)
        if access.path is not None and path.partition("?")[0] != access.path:
            self.state = State.CLOSED
            return HttpRefusal(404, "Not found")
        if self.key is None and access.key_required:
            self.state = State.CLOSED
            return HttpRefusal(401, MISSING_KEY)
        return None

    def open(self, *, connections: int) -> Output:
        """After the upgrade was accepted: `connected` (→ OPEN), or CONNECTION_REJECTED and the
        close (→ CLOSED). `connections`: how many the limit counts already (the key's, or all)."""
        self._expect(State.IDLE)
        refusal = self._refusal(connections)
        if refusal is not None:
            self.state = State.CLOSED
            return Output([_error("CONNECTION_REJECTED", refusal)], [], [], Close(CLOSE_REJECTED, "connection rejected"))
        self.state = State.OPEN
        return Output([connected(self.terms)], [], [])

    def _refusal(self, connections: int) -> str | None:
        limit, tier = self.terms.limits.connections, self.terms.tier
        if not self.access.key_ok(self.key):
            return INVALID_KEY
        if limit < 1:
            return NO_WEBSOCKET_PLAN
        if connections >= limit:
            return f"Connection limit exceeded (max {limit} for {tier} tier)"
        return None

    # ---- requests -------------------------------------------------------------------------------

    def receive(self, text: str | bytes, now_ns: int, *, room: Room | None = None) -> Output:
        """One client message, at `now_ns` (the pong's time): the replies and the changes.
        `room`: the shell's cap beyond this connection's limit, asked for each new channel."""
        request = self.parse(text)
        return request if isinstance(request, Output) else self.apply(request, now_ns, room=room)

    def parse(self, text: str | bytes) -> wire.ClientMessage | Output:
        """One client message as a request, or the Output answering it (its error, or nothing
        when the connection is not open). A shell may then `apply` the request in parts."""
        if self.state is not State.OPEN:
            return Output([], [], [])
        try:
            return parse_request(text)
        except RequestError as exc:
            out = Output([_error(exc.code or "INVALID_REQUEST", str(exc))], [], [])
            return out._replace(fault=exc.fault) if isinstance(exc, DecoderFault) else out

    def apply(self, request: wire.ClientMessage, now_ns: int, *, room: Room | None = None) -> Output:
        """A parsed request (or a part of one: some of its channels, in order) at `now_ns`.
        Luzia answers channel by channel, so applying a request in parts answers it the same."""
        out = Output([], [], [])
        if self.state is not State.OPEN:
            return out
        if type(request) is wire.Ping:
            out.replies.append(wire.Pong(timestamp=format_iso_ns(now_ns, 3)))
        elif type(request) is wire.Subscribe:
            for raw in request.channels:
                out.replies.append(self._subscribe(raw, out, room))
        elif type(request) is wire.Unsubscribe:
            for raw in request.channels:
                out.replies.append(self._unsubscribe(raw, out))
        return out

    def rate_limited(self, *, close: bool) -> Output:
        """A message the shell's rate limit refused (not applied); with `close`, the client kept
        flooding: the error, then the close (→ CLOSED; the shell releases what it held)."""
        if self.state is not State.OPEN:
            return Output([], [], [])
        error = _error(RATE_LIMITED, "Too many messages; this one was not applied")
        if not close:
            return Output([error], [], [])
        return Output([error], [], self.closed(), Close(CLOSE_REJECTED, "too many messages"))

    def _subscribe(self, raw: str, out: Output, room: Room | None) -> wire.Subscribed | wire.Error:
        channel = self._lookup(raw)
        if isinstance(channel, wire.Error):
            return channel
        name = str(channel)
        if name not in self.channels:
            limit = self.terms.limits.subscriptions
            if len(self.channels) >= limit:
                return _error("SUBSCRIPTION_LIMIT", f"Subscription limit exceeded (max {limit} for {self.terms.tier} tier)")
            refusal = room(channel) if room is not None else None
            if refusal is not None:
                return _error("SUBSCRIPTION_LIMIT", f"Subscription limit exceeded ({refusal})")
            self.channels[name] = channel
            out.added.append(channel)
        return wire.Subscribed(channel=raw)

    def _unsubscribe(self, raw: str, out: Output) -> wire.Unsubscribed | wire.Error:
        try:
            channel = self.channels.pop(str(parse_channel(raw)), None)
        except ChannelError:
            return self._invalid(raw, None)
        if channel is not None:
            out.removed.append(channel)
            return wire.Unsubscribed(channel=raw)
        found = self._lookup(raw)
        return found if isinstance(found, wire.Error) else wire.Unsubscribed(channel=raw)

    def _lookup(self, raw: str) -> Channel | wire.Error:
        """The channel if it is well-formed and the catalog has it; else the error it earns."""
        try:
            channel = parse_channel(raw)
        except ChannelError:
            return self._invalid(raw, None)
        if not self.catalog.has(channel):
            return self._invalid(raw, self.catalog.detail)
        return channel

    @staticmethod
    def _invalid(raw: str, detail: str | None) -> wire.Error:
        return _error("INVALID_CHANNEL", f"Invalid channel: {raw}" + (f" ({detail})" if detail else ""))

    # ---- the end --------------------------------------------------------------------------------

    def shutdown(self) -> Output:
        """A planned close: SERVER_SHUTDOWN, then 1001 (→ CLOSED). Nothing to say unless OPEN."""
        if self.state is not State.OPEN:
            return Output([], [], self.closed())
        removed = self.closed()
        return Output([_error("SERVER_SHUTDOWN", SHUTDOWN_MESSAGE)], [], removed, Close(CLOSE_SHUTDOWN, "server shutting down"))

    def closed(self) -> list[Channel]:
        """The connection is gone (→ CLOSED): the channels it held, to release."""
        self.state = State.CLOSED
        removed = list(self.channels.values())
        self.channels.clear()
        return removed

    def _expect(self, state: State) -> None:
        if self.state is not state:
            raise RuntimeError(f"Luzia server connection is {self.state.value}, not {state.value}")  # our bug
