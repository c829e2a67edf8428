"""CoinAPI V1, the server side: one client connection's state machine. Pure: no Trio, no sockets.

Shared by both shells over it: the emulator (`providers.coinapi.emulator`) and the gateway's
CoinAPI-compatible endpoint (`gateway.dialects.coinapi`). A shell moves bytes and time: it feeds
each client message with the current time to `ServerConnection.receive` and applies the outcome
(an `Accepted` scope change, or a `Refused` error to send before the close). What legitimately
differs between the shells is injected as `Rules`: the auth rule, which data types exist (the
emulator's market vs the gateway's routes) and whether the hello rate limit is enforced.

Owns: the paths served and where an upgrade request may carry a key, the first-message auth
rules, request validation and CoinAPI's error wording, the hello rate limit, the scope (`hello`
replaces, `subscribe` adds, `unsubscribe` removes), the update limits
(`subscribe_update_limit_ms_*`), heartbeat timing, the `reconnect` notice, and `sequence`
numbering (`Sequencer`, used per connection by the emulator and per stream by the gateway).
Must never: read a clock (times are passed in), do I/O, or let anything follow an error.

Theory of operation (in the manner of h11's `_state.py`):

    AWAITING_FIRST ──request accepted──▶ OPEN ◀──request accepted──┐
          │                               │  └─────────────────────┘
          └──refused──▶ CLOSING ◀──refused┘ (or the `reconnect` notice's deadline passed)

- AWAITING_FIRST: connected, nothing sent. The key is checked on the first message, as CoinAPI
  does (a bad key is an `error` after the first hello, never an HTTP refusal). `subscribe` may come
  first. There is no acknowledgement: the first data frame or heartbeat is the confirmation.
- OPEN: each `hello` / `subscribe` / `unsubscribe` that passes validation changes the scope.
- CLOSING: a refused message earns one `Error` and ends the connection: CoinAPI's errors are
  terminal. Every later message is ignored (`receive` returns None) and nothing but the close may
  be sent. A `reconnect` notice keeps the state and sets a deadline (`close_at`); `due` moves to
  CLOSING once it has passed.
- Heartbeats: while the scope asks for them, one is due a second after the last frame sent
  (`sent(now)`), silence being counted from the request that switched them on.

Choices where CoinAPI documents nothing: texts for malformed JSON, unknown message types and the
rate limit are ours; `Authorization: Bearer <key>` counts as `Authorization: <key>`; an unknown
path is the shell's 404.

Hostile clients (every refusal is CoinAPI's terminal `error`): a message that cannot be decoded
(including JSON nested thousands deep) is INVALID_MESSAGE; a decoder raising outside its contract
is answered the same, and `Refused.fault` names the exception type for the shell to count and log.
Filter items are ASCII ids of at most `MAX_ID_LENGTH` characters (no Unicode case mapping may
turn `ß` or the Kelvin sign into an ASCII id), at most `MAX_FILTER_ITEMS` in one message. A
connection may be required to say something within `Rules.first_message_within` seconds (keyless
sockets must not hold slots): `expired` then refuses it with NO_FIRST_MESSAGE.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from providers.coinapi import wire
from providers.coinapi.grammar import SubscriptionFilter, ascii_upper
from providers.common.errors import MalformedFrame
from schemas.timeutil import NS_PER_S, format_iso_ns

#: Data types the server accepts in `subscribe_data_type`.
DATA_TYPES: Final = frozenset(
    {"trade", "quote", "book", "book5", "book20", "book50", "book_l3", "ohlcv", "exrate", "asset", "exchange", "symbol"}
)
#: CoinAPI's own texts.
INVALID_API_KEY: Final = "Invalid API key"
DATA_TYPE_REQUIRED: Final = "Parameter subscribe_data_type is required."
#: CoinAPI documents no text for malformed JSON or an unknown message type; this one is ours.
INVALID_MESSAGE: Final = "Invalid message: not a JSON object with a known type."
#: Ours: nothing arrived within the shell's deadline for a first message.
NO_FIRST_MESSAGE: Final = "No hello or subscribe message in time; connection closed."
#: Filter items one message may carry, all lists together: each is matched against every symbol
#: id a client is sent (memoized per id), so this bounds that work and the scope's memory.
MAX_FILTER_ITEMS: Final = 4096
#: Filter items a connection's whole scope may hold (`subscribe` adds to it message by message;
#: items that cover no stream, such as PERP ids on the gateway, must not accumulate forever).
MAX_SCOPE_ITEMS: Final = 16_384
#: Longest filter item (CoinAPI's longest ids, options with a suffix, are under 64 characters).
MAX_ID_LENGTH: Final = 128
#: The request fields holding filter lists, checked item by item.
FILTER_FIELDS: Final = (
    "subscribe_filter_symbol_id",
    "subscribe_filter_exchange_id",
    "subscribe_filter_asset_id",
    "subscribe_filter_period_id",
)
#: CoinAPI's limit: 10 hello/subscribe messages per 10 seconds per IP.
HELLO_LIMIT: Final = 10
HELLO_WINDOW: Final = 10.0
#: Seconds of silence before a heartbeat ("after each second of silence").
HEARTBEAT_AFTER: Final = 1.0
#: The update-limit families and the request field setting each.
UPDATE_LIMITS: Final = {
    "quote": "subscribe_update_limit_ms_quote",
    "book_snapshot": "subscribe_update_limit_ms_book_snapshot",
}
PATHS: Final = frozenset({"/", "/v1", "/v1/"})
_KEY_PATHS: Final = ("/APIKEY-", "/v1/APIKEY-")
#: Sequence counters kept (streams of one connection, or of one gateway); beyond this many the
#: oldest is forgotten, and its stream starts again at 1, which a client reads as a jump.
_SEQUENCE_LIMIT: Final = 65_536


def unknown_data_type(data_type: str) -> str:
    """Ours: CoinAPI documents that an unknown data type is an error, not its words."""
    return f"Parameter subscribe_data_type contains an unknown data type: {data_type}."


def rate_limited(limit: int, window: float) -> str:
    return f"Too many hello/subscribe messages: at most {limit} per {window:g} seconds."


def flooded(per_second: float) -> str:
    """Ours: a shell's per-connection rate limit on every message."""
    return f"Too many messages: at most {per_second:g} small ones per second (each 256 bytes counts as one)."


def invalid_filter(field_name: str, item: str) -> str:
    """Ours: a filter item that is no id (non-ASCII, or too long)."""
    return f"Parameter {field_name} contains an invalid item: {item[:MAX_ID_LENGTH]!r}."


def too_many_items(limit: int) -> str:
    return f"Too many filter items in one message: at most {limit}."


def scope_too_big(limit: int) -> str:
    return f"Too many filter items in the subscription: at most {limit}."


# ---------------------------------------------------------------------------- the upgrade request


class UpgradeKey(NamedTuple):
    key: str
    source: str  # path | header | authorization | query


def serves_path(path: str) -> bool:
    """`/`, `/v1`, `/v1/` and the key-in-path forms `/APIKEY-<key>`, `/v1/APIKEY-<key>`."""
    return path in PATHS or path.startswith(_KEY_PATHS)


def upgrade_key(path: str, query: Mapping[str, str], headers: Mapping[str, str]) -> UpgradeKey | None:
    """The key an upgrade request carries, the first one present of: the `/APIKEY-<key>` path,
    `X-CoinAPI-Key`, `Authorization` (bare or `Bearer`), `?apikey=`. `headers` has lower-case names."""
    for prefix in _KEY_PATHS:
        if path.startswith(prefix):
            key = path[len(prefix) :].rstrip("/")
            return UpgradeKey(key, "path") if key else None
    if headers.get("x-coinapi-key"):
        return UpgradeKey(headers["x-coinapi-key"], "header")
    authorization = _bearer(headers.get("authorization", ""))
    if authorization:
        return UpgradeKey(authorization, "authorization")
    if query.get("apikey"):
        return UpgradeKey(query["apikey"], "query")
    return None


def _bearer(value: str) -> str:
    """`Bearer <key>` or a bare `<key>` (CoinAPI's own form) → the key."""
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else value


# ---------------------------------------------------------------------------- auth rules

#: (the upgrade request's key, the first message's `apikey`) → whether the client may in.
KeyCheck = Callable[[str | None, str | None], bool]


def every_given_key(acceptable: Callable[[str], bool]) -> KeyCheck:
    """The real service's rule (the emulator's): at least one key, and every key given acceptable."""

    def check(upgrade: str | None, in_message: str | None) -> bool:
        keys = [key for key in (upgrade, in_message) if key is not None]
        return bool(keys) and all(acceptable(key) for key in keys)

    return check


def any_given_key(acceptable: Callable[[str | None], bool]) -> KeyCheck:
    """The gateway's rule: any one acceptable key among those given (an app that keeps its old
    CoinAPI key in its hello can put the local key in the URL); with none, `acceptable(None)`."""

    def check(upgrade: str | None, in_message: str | None) -> bool:
        keys = [key for key in (upgrade, in_message) if key]
        return any(acceptable(key) for key in keys) if keys else acceptable(None)

    return check


# ---------------------------------------------------------------------------- the hello rate limit


@dataclass
class HelloLimiter:
    """A sliding window: at most `limit` messages in any `window` seconds. A message at time t
    is allowed when fewer than `limit` were recorded in (t - window, t]. The server enforces it;
    the client side (`client.py`) keeps the same rule so that it never trips it."""

    limit: int = HELLO_LIMIT
    window: float = HELLO_WINDOW
    _sent: deque[float] = field(default_factory=deque)

    def _expire(self, now: float) -> None:
        # `sent + window <= now`, the very sum `allowed_at` returns: a sender that sleeps until
        # that time is allowed then, with no float residue left to wait for (a residue below the
        # clock's resolution would be a sleep that never advances fake time: a livelock).
        while self._sent and self._sent[0] + self.window <= now:
            self._sent.popleft()

    def allowed_at(self, now: float) -> float:
        """When the next message is allowed: `now`, or the moment the oldest counted one leaves
        the window. Sleep until it (an absolute time), not for a difference."""
        self._expire(now)
        if len(self._sent) < self.limit:
            return now
        return self._sent[-self.limit] + self.window

    def delay(self, now: float) -> float:
        """Seconds to wait before the next message is allowed (0: now)."""
        return max(0.0, self.allowed_at(now) - now)

    def allow(self, now: float) -> bool:
        """Record a message at `now` if it is allowed; False (nothing recorded) if it is not."""
        if self.allowed_at(now) > now:
            return False
        self._append(now)
        return True

    def record(self, now: float) -> None:
        """Record a message sent at `now`, allowed or not (a sender that had to send anyway)."""
        self._expire(now)
        self._append(now)

    def _append(self, now: float) -> None:
        self._sent.append(now)
        if len(self._sent) > self.limit:  # bounded: only the last `limit` can matter
            self._sent.popleft()


# ---------------------------------------------------------------------------- the scope


def _upper(items: Iterable[str] | None) -> frozenset[str]:
    return frozenset(ascii_upper(item) for item in items or ())


def request_filter(message: wire.ClientMessage) -> SubscriptionFilter:
    """The symbol selection of one request's filter lists."""
    return SubscriptionFilter.of(
        message.subscribe_filter_symbol_id, message.subscribe_filter_exchange_id, message.subscribe_filter_asset_id
    )


@dataclass(frozen=True)
class Scope:
    """What one connection is subscribed to. Immutable: `apply` returns the next scope.

    `subscribe_data_type` applies to the whole filtered set of its message, so the scope keeps one
    filter per data type: `hello` replaces all, `subscribe` unions its filter into each of its data
    types, `unsubscribe` removes its items from each of its data types (one with no filter lists
    removes the data types entirely; a data type whose lists all become empty is removed, since an
    empty filter would mean "everything"). Subtracting items from an everything-filter cannot be
    expressed and leaves it as it is. `subscribe_filter_period_id` (OHLCV periods) is kept the same
    way; empty means every period. `heartbeat`: set by `hello`; `subscribe` can switch it on;
    `unsubscribe` leaves it."""

    filters: dict[str, SubscriptionFilter] = field(default_factory=dict)  # data type → filter
    periods: frozenset[str] = frozenset()
    heartbeat: bool = False

    @property
    def size(self) -> int:
        """Filter items held, all data types together: O(data types), not O(items)."""
        return len(self.periods) + sum(
            len(f.symbol_ids) + len(f.exchange_ids) + len(f.asset_ids) for f in self.filters.values()
        )

    @property
    def data_types(self) -> frozenset[str]:
        return frozenset(self.filters)

    def wants(self, data_type: str, symbol_id: str) -> bool:
        selection = self.filters.get(data_type)
        return selection is not None and selection.matches(symbol_id)

    def wants_period(self, period_id: str) -> bool:
        return not self.periods or period_id.upper() in self.periods

    def apply(self, message: wire.ClientMessage) -> Scope:
        """The scope after `message` (assumed valid: see `validate`)."""
        selection = request_filter(message)
        types = message.subscribe_data_type or []
        periods = _upper(message.subscribe_filter_period_id)
        if isinstance(message, wire.Hello):
            return Scope({t: selection for t in types}, periods, message.heartbeat)
        if isinstance(message, wire.Subscribe):
            merged = dict(self.filters)
            for t in types:
                merged[t] = merged[t].union(selection) if t in merged else selection
            return Scope(merged, self.periods | periods, self.heartbeat or message.heartbeat)
        return Scope(self._without(types, selection), self.periods - periods, self.heartbeat)

    def _without(self, types: list[str], selection: SubscriptionFilter) -> dict[str, SubscriptionFilter]:
        remaining = dict(self.filters)
        for t in types:
            if t in remaining:
                left = remaining[t].without(selection)
                if left is None:
                    del remaining[t]
                else:
                    remaining[t] = left
        return remaining


def validate(message: wire.ClientMessage) -> str | None:
    """The error text for a request no server accepts, or None."""
    if not message.subscribe_data_type:
        return DATA_TYPE_REQUIRED
    for data_type in message.subscribe_data_type:
        if data_type not in DATA_TYPES:
            return unknown_data_type(data_type[:MAX_ID_LENGTH])
    return _filter_problem(message)


def _items(message: wire.ClientMessage) -> int:
    return sum(len(getattr(message, name) or ()) for name in FILTER_FIELDS)


def _filter_problem(message: wire.ClientMessage) -> str | None:
    """Filter items must be ids: ASCII, not absurdly long, not too many (an empty item is an empty
    prefix, which selects everything, as CoinAPI reads it)."""
    count = 0
    for name in FILTER_FIELDS:
        items: list[str] = getattr(message, name) or []
        count += len(items)
        if count > MAX_FILTER_ITEMS:
            return too_many_items(MAX_FILTER_ITEMS)
        for item in items:
            if len(item) > MAX_ID_LENGTH or not item.isascii():
                return invalid_filter(name, item)
    return None


def _limits_after(limits: Mapping[str, float], message: wire.ClientMessage) -> dict[str, float]:
    """`hello` sets (or clears) the update limits, `subscribe` sets those it names, `unsubscribe`
    leaves them. A limit of 0 or less is no limit."""
    after = dict(limits)
    if isinstance(message, wire.Unsubscribe):
        return after
    for family, name in UPDATE_LIMITS.items():
        value: int | None = getattr(message, name)
        if value is None and isinstance(message, wire.Subscribe):
            continue
        if value is not None and value > 0:
            after[family] = value / 1000
        else:
            after.pop(family, None)
    return after


# ---------------------------------------------------------------------------- sequences


class Sequencer:
    """CoinAPI's `sequence`: consecutive per (message type, symbol_id) from 1. The emulator keeps
    one per connection (the real service's rule); the gateway one per endpoint, so every client
    of a stream sees the same numbers (a jump is then what that client missed)."""

    def __init__(self, limit: int = _SEQUENCE_LIMIT) -> None:
        self._last: dict[tuple[str, str], int] = {}
        self._limit = limit

    def next(self, kind: str, symbol_id: str) -> int:
        key = (kind, symbol_id)
        number = self._last.get(key, 0) + 1
        if number == 1 and len(self._last) >= self._limit:
            del self._last[next(iter(self._last))]  # the oldest stream
        self._last[key] = number
        return number


# ---------------------------------------------------------------------------- the connection


class State(enum.Enum):
    AWAITING_FIRST = "awaiting_first"
    OPEN = "open"
    CLOSING = "closing"


def _no_refusal(data_type: str) -> str | None:
    return None


@dataclass(frozen=True)
class Rules:
    """What the shells choose: the auth rule, the refusal text of a data type they cannot serve
    (None: served), the hello rate limiter (None: not enforced; the emulator shares one per
    client IP between connections), and the deadline for a first message (None: none)."""

    key_check: KeyCheck
    available: Callable[[str], str | None] = _no_refusal
    limiter: HelloLimiter | None = None
    first_message_within: float | None = None


@dataclass(frozen=True)
class Accepted:
    """A request that changed the scope (now `scope`); `limits_changed` names the update-limit
    families whose interval it changed."""

    request: wire.ClientMessage
    scope: Scope
    limits_changed: frozenset[str]


@dataclass(frozen=True)
class Refused:
    """Send `error`, then close. `request` is the refused request when it decoded at all."""

    error: wire.Error
    request: wire.ClientMessage | None = None
    fault: str | None = None  # a decoder raised outside its contract: the exception's type name


class ServerConnection:
    def __init__(self, rules: Rules, upgrade_key: str | None, now: float) -> None:
        self.rules = rules
        self.upgrade_key = upgrade_key
        self.state = State.AWAITING_FIRST
        self.scope = Scope()
        self.limits: dict[str, float] = {}  # update-limit family → seconds
        self.close_at = math.inf  # set by a `reconnect` notice
        within = rules.first_message_within
        self.first_message_by = math.inf if within is None else now + within
        self._last_sent = now

    def receive(self, raw: str | bytes, now: float) -> Accepted | Refused | None:
        """One client message at `now`: the scope change, the error to end with, or None (ignored:
        the connection is closing)."""
        if self.state is State.CLOSING:
            return None
        try:
            request = wire.decode_client(raw)
        except MalformedFrame:
            return self.refuse(INVALID_MESSAGE)
        except Exception as exc:  # noqa: BLE001  defence in depth: a decoder bug is still the client's answer
            return Refused(self.refuse(INVALID_MESSAGE).error, fault=type(exc).__name__)
        if not isinstance(request, (wire.Hello, wire.Subscribe, wire.Unsubscribe)):
            return self.refuse(INVALID_MESSAGE)  # an UnknownMessage: no server accepts it
        problem = self._problem(request, now)
        if problem is not None:
            return self.refuse(problem, request)
        return self._apply(request, now)

    def _problem(self, request: wire.ClientMessage, now: float) -> str | None:
        """The first reason to refuse `request`: the key, the request itself, what is served, the
        rate. (A limiter records only allowed messages, so it is asked last.)"""
        if self.state is State.AWAITING_FIRST and not self.rules.key_check(self.upgrade_key, request.apikey):
            return INVALID_API_KEY
        problem = validate(request)
        if problem is not None or isinstance(request, wire.Unsubscribe):
            return problem
        for data_type in request.subscribe_data_type or ():
            problem = self.rules.available(data_type)
            if problem is not None:
                return problem
        if isinstance(request, wire.Subscribe) and self.scope.size + _items(request) * len(request.subscribe_data_type or ()) > MAX_SCOPE_ITEMS:
            return scope_too_big(MAX_SCOPE_ITEMS)
        limiter = self.rules.limiter
        if limiter is not None and not limiter.allow(now):
            return rate_limited(limiter.limit, limiter.window)
        return None

    def _apply(self, request: wire.ClientMessage, now: float) -> Accepted:
        had_heartbeat = self.scope.heartbeat
        self.state = State.OPEN
        self.scope = self.scope.apply(request)
        if self.scope.heartbeat and not had_heartbeat:
            self._last_sent = now  # silence is counted from the request
        limits = _limits_after(self.limits, request)
        changed = frozenset(f for f in UPDATE_LIMITS if limits.get(f) != self.limits.get(f))
        self.limits = limits
        return Accepted(request, self.scope, changed)

    def refuse(self, text: str, request: wire.ClientMessage | None = None) -> Refused:
        """End the connection with an error (also for a shell's own reason, e.g. a full buffer)."""
        self.state = State.CLOSING
        return Refused(wire.Error(message=text), request)

    # ------------------------------------------------------------------ what to send, and when

    def sent(self, now: float) -> None:
        """A frame went out at `now` (heartbeats count silence from the last one)."""
        self._last_sent = now

    def heartbeat_at(self) -> float:
        """When the next heartbeat is due (inf: none is)."""
        if self.state is not State.OPEN or not self.scope.heartbeat:
            return math.inf
        return self._last_sent + HEARTBEAT_AFTER

    def heartbeat(self, now: float) -> wire.Hearbeat | None:
        """The heartbeat to send now, if one is due (and counted as sent)."""
        if now < self.heartbeat_at():
            return None
        self._last_sent = now
        return wire.Hearbeat()

    def notice(self, now: float, now_ns: int, within: int) -> wire.Reconnect:
        """The `reconnect` notice of a planned shutdown: the connection closes `within` s from now."""
        self.close_at = min(self.close_at, now + within)
        return wire.Reconnect(within_seconds=within, before_time=format_iso_ns(now_ns + within * NS_PER_S))

    def expired(self, now: float) -> Refused | None:
        """The refusal of a connection that said nothing by `first_message_by`, else None."""
        if self.state is State.AWAITING_FIRST and now >= self.first_message_by:
            return self.refuse(NO_FIRST_MESSAGE)
        return None

    def due(self, now: float) -> bool:
        """Whether the connection must close now (an error was sent, or the notice's time is up)."""
        if now >= self.close_at:
            self.state = State.CLOSING
        return self.state is State.CLOSING
