"""Luzia's REST ticker paths, served from the gateway's latest values.

`TickerWatches` is the REST side's one hub subscriber. A request for a stream subscribes it (the
hub starts the upstream subscription if nobody had) and waits briefly for the first value; the
subscription then stays `keepalive` seconds after the stream's last request, so an app polling
every few seconds costs one upstream subscription, and is released after that, with its cached
values, so a value is only ever served while its stream is live. At most `max_streams` streams are
watched at once (beyond: 429 with Retry-After): a client walking through symbols cannot grow the
gateway's upstream subscriptions or memory without bound.
Never: serves a value it did not receive (an unknown or not-yet-seen symbol is a 404 with Luzia's
JSON error body), or lets a request wait longer than the configured `rest_wait_seconds`.

Routes (`LuziaRest.handle`): `GET /v1/ticker/{exchange}/{BASE-QUOTE}`, `GET /v1/tickers/{exchange}`,
`GET /v1/tickers?exchange=&symbols=`, `GET /v1/exchanges`; `limit` (default 20, above 50 clamped to
50, as Luzia documents) and `offset` paginate lists. Errors are Luzia's shape:
`{"error": <HTTP reason>, "message", "correlationId", "details"}`; 400 validation, 401 when local
keys are configured and the Bearer key is missing or wrong, 404, 429, 503 when no provider is
routed for tickers. `/v1/tickers` without `exchange` serves only what is already watched: the
gateway cannot know which exchanges list a symbol.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from http import HTTPStatus
from typing import Final

import trio

from gateway.context import GatewayContext, bearer_token
from gateway.dialects.luzia_proto import ticker_data
from gateway.hub import Hub
from gateway.outbox import Outbox
from gateway.server import HttpRequest, HttpResponse
from schemas.streams import StreamKey
from providers.luzia import wire
from schemas import Event, Status, Ticker
from schemas.channels import ChannelError, parse_channel
from schemas.instruments import InstrumentError, canonical_exchange, canonical_symbol

#: A REST-started subscription lives this long after its stream's last request.
REST_KEEPALIVE_SECONDS: Final = 60.0
#: Luzia's documented page size for ticker lists: default 20, at most 50.
DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 50
#: Symbols one `/v1/tickers?symbols=` request may name (each may start a subscription).
MAX_SYMBOLS: Final = 100

Instrument = tuple[str, str]  # (exchange, symbol)


class TooManyWatches(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many symbols watched; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


class _NoFrames:
    """The watcher's codec: REST clients get no frames. Sees the control events of its streams,
    so a stream a provider refused ends the wait for it at once."""

    name = "luzia-rest"

    def __init__(self, watches: TickerWatches) -> None:
        self._watches = watches

    def frame(self, event: Event) -> None:
        if type(event) is Status and event.state == "rejected" and event.stream:
            self._watches.refused(event.stream, event.reason or "refused by the provider")
        return None


class TickerWatches:
    """The hub subscriber behind the REST paths: watched streams, their latest tickers, expiry."""

    def __init__(self, hub: Hub, *, keepalive: float = REST_KEEPALIVE_SECONDS, max_streams: int = 500) -> None:
        self.hub = hub
        self.keepalive = keepalive
        self.max_streams = max_streams
        self.outbox = Outbox(limit=1)  # never written: `accepts` takes every market event first
        self.codec = _NoFrames(self)
        self.accepts = self._take
        self.latest: dict[Instrument, Ticker] = {}
        self._expiry: dict[StreamKey, float] = {}  # in order of expiry (a touch moves a key last)
        self._refusals: dict[StreamKey, str] = {}
        self._waiters: dict[tuple[str, str | None], trio.Event] = {}
        self._first_watch = trio.Event()

    def __len__(self) -> int:
        return len(self._expiry)

    # ----- the hub's side: every market event of a watched stream comes through here -----

    def _take(self, event: Event) -> bool:
        if type(event) is Ticker:
            self.latest[(event.exchange, event.symbol)] = event
            for key in ((event.exchange, event.symbol), (event.exchange, None)):
                waiter = self._waiters.pop(key, None)
                if waiter is not None:
                    waiter.set()
        return False  # nothing to frame or queue for this subscriber

    def refused(self, stream: str, reason: str) -> None:
        try:
            key = StreamKey(*parse_channel(stream))
        except ChannelError:
            return
        if key in self._expiry:
            self._refusals[key] = reason
            waiter = self._waiters.pop((key.exchange, key.symbol), None)
            if waiter is not None:
                waiter.set()

    # ----- requests ---------------------------------------------------------------------

    def watch(self, keys: Iterable[StreamKey], now: float) -> None:
        """Subscribe what is new, and push every key's expiry to `now + keepalive`."""
        keys = list(dict.fromkeys(keys))
        self.release_expired(now)  # also the fallback when the janitor task is not running
        new = [k for k in keys if k not in self._expiry]
        if len(self._expiry) + len(new) > self.max_streams:
            oldest = next(iter(self._expiry.values()), now)
            raise TooManyWatches(max(1.0, oldest - now))
        for key in keys:
            self._expiry.pop(key, None)
            self._expiry[key] = now + self.keepalive
        for key in new:
            self.hub.subscribe(self, key)
        if new:
            self._first_watch.set()

    def lookup(self, key: StreamKey) -> list[Ticker]:
        """What is known for a stream: its ticker, or every ticker of its exchange, by symbol."""
        if key.symbol is not None:
            found = self.latest.get((key.exchange, key.symbol))
            return [found] if found is not None else []
        return sorted((t for (ex, _), t in self.latest.items() if ex == key.exchange), key=lambda t: t.symbol)

    def _priced(self, key: StreamKey) -> bool:
        return any(t.last is not None for t in self.lookup(key))

    def refusal(self, key: StreamKey) -> str | None:
        return self._refusals.get(key)

    async def wait_first(self, keys: Iterable[StreamKey], deadline: float) -> None:
        """Until each key has a ticker with a last price (a ticker derived from other data may not
        have one yet, and the last price is what apps read), or was refused, or `deadline`."""
        with trio.move_on_at(deadline):
            for key in keys:
                while not self._priced(key) and key not in self._refusals and key in self._expiry:
                    waiter = self._waiters.setdefault((key.exchange, key.symbol), trio.Event())
                    await waiter.wait()

    # ----- expiry -----------------------------------------------------------------------

    def release_expired(self, now: float) -> None:
        released = []
        while self._expiry:
            key, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                break
            del self._expiry[key]
            self._refusals.pop(key, None)
            self.hub.unsubscribe(self, key)
            released.append(key)
        if released:
            self.latest = {i: t for i, t in self.latest.items() if self._covered(i)}

    def _covered(self, instrument: Instrument) -> bool:
        exchange, symbol = instrument
        watched = self._expiry
        return StreamKey("ticker", exchange, symbol) in watched or StreamKey("ticker", exchange, None) in watched

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Release each stream when its keep-alive runs out (to the tick: the soonest is first)."""
        task_status.started()
        while True:
            if not self._expiry:
                self._first_watch = trio.Event()
                await self._first_watch.wait()
                continue
            await trio.sleep_until(next(iter(self._expiry.values())))
            self.release_expired(trio.current_time())


# ----- HTTP ----------------------------------------------------------------------------------


class BadRequest(ValueError):
    def __init__(self, message: str, details: dict[str, str]) -> None:
        super().__init__(message)
        self.details = details


def error_response(status: int, message: str, details: dict | None = None, headers: list | None = None) -> HttpResponse:
    body = {
        "error": HTTPStatus(status).phrase,
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "details": details or {},
    }
    return HttpResponse(status, wire.encoder.encode(body), headers=headers or [])


def ok(body: object) -> HttpResponse:
    return HttpResponse(200, wire.encoder.encode(body))  # Decimals as JSON numbers, every digit


def parse_exchange(text: str) -> str:
    try:
        return canonical_exchange(text)
    except InstrumentError:
        raise BadRequest(f"Invalid exchange: {text}", {"exchange": "expected a lower-case exchange id"}) from None


def parse_symbol(text: str) -> str:
    try:
        return canonical_symbol(text)
    except InstrumentError:
        raise BadRequest(f"Invalid symbol: {text}", {"symbol": "expected BASE-QUOTE, e.g. BTC-USDT"}) from None


def parse_page(query: dict[str, str]) -> tuple[int, int]:
    """(limit, offset): integers, limit ≥ 1 (above MAX_LIMIT: MAX_LIMIT), offset ≥ 0."""
    values = {}
    for name, default, least in (("limit", DEFAULT_LIMIT, 1), ("offset", 0, 0)):
        text = query.get(name, "")
        try:
            values[name] = int(text) if text.strip() else default
        except ValueError:
            values[name] = least - 1
        if values[name] < least:
            raise BadRequest(f"Invalid {name}: {text}", {name: f"expected an integer ≥ {least}"})
    return min(values["limit"], MAX_LIMIT), values["offset"]


def page(tickers: list[Ticker], limit: int, offset: int) -> HttpResponse:
    shown = [ticker_data(t) for t in tickers[offset : offset + limit]]
    return ok({"tickers": shown, "total": len(tickers), "limit": limit, "offset": offset})


class LuziaRest:
    """The REST routes of the Luzia endpoint."""

    def __init__(self, ctx: GatewayContext, watches: TickerWatches, exchanges_seen: set[str]) -> None:
        self.ctx = ctx
        self.watches = watches
        self.exchanges_seen = exchanges_seen
        self.wait = ctx.config.endpoints.luzia.rest_wait_seconds

    async def handle(self, request: HttpRequest) -> HttpResponse | None:
        parts = request.path.rstrip("/").split("/")[1:]  # "/v1/ticker/binance/BTC-USDT" → v1, ticker, …
        if len(parts) < 2 or parts[0] != "v1" or parts[1] not in ("ticker", "tickers", "exchanges"):
            return None
        if not self.ctx.key_ok(bearer_token(request)):
            return error_response(401, "Authentication required")
        try:
            return await self._route(parts[1], parts[2:], request.query)
        except BadRequest as exc:
            return error_response(400, str(exc), exc.details)
        except TooManyWatches as exc:
            retry = str(math.ceil(exc.retry_after))
            return error_response(429, str(exc), {"retryAfter": retry}, [("retry-after", retry)])

    async def _route(self, kind: str, rest: list[str], query: dict[str, str]) -> HttpResponse:
        if kind == "exchanges" and not rest:
            return self.exchanges()
        if kind == "ticker" and len(rest) >= 2:  # a decoded "BTC/USDT" arrives as two segments
            return await self.one(parse_exchange(rest[0]), parse_symbol("/".join(rest[1:])))
        if kind == "tickers" and len(rest) == 1:
            return await self.exchange(parse_exchange(rest[0]), *parse_page(query))
        if kind == "tickers" and not rest:
            return await self.filtered(query)
        return error_response(404, "Not found", {"path": "/".join(["", "v1", kind, *rest])})

    def exchanges(self) -> HttpResponse:
        """The exchanges tickers have come from so far (Luzia's exchange object; the gateway knows
        no display name or website, so `name` is the id and `websiteUrl` null)."""
        seen = sorted(self.exchanges_seen | {ex for ex, _ in self.watches.latest})
        return ok({"exchanges": [{"id": ex, "name": ex, "status": "operational", "websiteUrl": None} for ex in seen]})

    def _unrouted(self) -> HttpResponse | None:
        if self.ctx.hub.routed("ticker"):
            return None
        return error_response(503, "No provider is configured for tickers on this gateway")

    async def _fetch(self, keys: list[StreamKey]) -> None:
        now = trio.current_time()
        self.watches.watch(keys, now)
        await self.watches.wait_first(keys, now + self.wait)

    async def one(self, exchange: str, symbol: str) -> HttpResponse:
        key = StreamKey("ticker", exchange, symbol)
        if (refusal := self._unrouted()) is not None:
            return refusal
        await self._fetch([key])
        found = self.watches.lookup(key)
        if found:
            return ok(ticker_data(found[0]))
        details = {"exchange": exchange, "symbol": symbol}
        reason = self.watches.refusal(key)
        if reason:
            details["reason"] = reason
        return error_response(404, f"Ticker not found: {symbol} on {exchange}", details)

    async def exchange(self, exchange: str, limit: int, offset: int) -> HttpResponse:
        key = StreamKey("ticker", exchange, None)
        if (refusal := self._unrouted()) is not None:
            return refusal
        await self._fetch([key])
        tickers = self.watches.lookup(key)
        if not tickers:
            return error_response(404, f"No tickers for exchange '{exchange}'", {"exchange": exchange})
        return page(tickers, limit, offset)

    async def filtered(self, query: dict[str, str]) -> HttpResponse:
        limit, offset = parse_page(query)
        exchange = parse_exchange(query["exchange"]) if query.get("exchange") else None
        names = [s for s in query.get("symbols", "").split(",") if s.strip()]
        if len(names) > MAX_SYMBOLS:
            raise BadRequest(f"Too many symbols (max {MAX_SYMBOLS})", {"symbols": f"at most {MAX_SYMBOLS}"})
        symbols = list(dict.fromkeys(parse_symbol(s) for s in names))
        if exchange is not None and not symbols:
            return await self.exchange(exchange, limit, offset)
        if exchange is None:  # which exchanges list these symbols is unknown: what is watched
            tickers = [t for (_, sym), t in sorted(self.watches.latest.items()) if not symbols or sym in symbols]
            return page(tickers, limit, offset)
        if (refusal := self._unrouted()) is not None:
            return refusal
        keys = [StreamKey("ticker", exchange, s) for s in symbols]
        await self._fetch(keys)
        return page([t for key in keys for t in self.watches.lookup(key)], limit, offset)
