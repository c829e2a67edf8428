"""Luzia's REST ticker paths, served from the gateway's latest values.

`TickerWatches` is the REST side's demand and cache: a hub `Tap` (it sees every routed ticker and
control event, and keeps those of the streams it watches) plus `hub.hold` / `hub.release` for the
demand. A request for a stream holds it (the hub starts the upstream subscription if nobody had)
and waits briefly for the first value; the hold then stays `keepalive` seconds after the stream's
last request, so an app polling every few seconds costs one upstream subscription, and is released
after that, with its cached values, so a value is only ever served while its stream is live. At
most `max_streams` streams are watched at once (beyond: 429 with Retry-After): a client walking
through symbols cannot grow the gateway's upstream subscriptions or memory without bound. The
exchanges tickers came from (`/v1/exchanges`) are collected by the same tap.
Never: serves a value it did not receive (an unknown or not-yet-seen symbol is a 404 with Luzia's
JSON error body), or lets a request wait longer than the configured `rest_wait_seconds`.

Routes (`LuziaRest.handle`): `GET /v1/ticker/{exchange}/{BASE-QUOTE}`, `GET /v1/tickers/{exchange}`,
`GET /v1/tickers?exchange=&symbols=`, `GET /v1/exchanges`; `limit` (default 20, above 50 clamped to
50, as Luzia documents) and `offset` paginate lists. Errors are Luzia's shape:
`{"error": <HTTP reason>, "message", "correlationId", "details"}`; 400 validation, 401 when local
keys are configured and the Bearer key is missing or wrong, 404, 429, 503 when no provider is
routed for tickers. `/v1/tickers` without `exchange` serves only what is already watched: the
gateway cannot know which exchanges list a symbol.
Client input is checked as ASCII before any case mapping or number parsing: `limit`/`offset` are
ASCII digits (`int()` would take `١٢` or fullwidth digits), at most `MAX_DIGITS` of them; path
segments and symbols go through `schemas.instruments`, which refuses non-ASCII ids. A new watch
beyond `limits.max_streams` distinct streams on the gateway is a 429 as well.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable
from http import HTTPStatus
from typing import Final

import trio

from gateway.context import GatewayContext, bearer_token
from gateway.hub import Hub
from gateway.server import HttpRequest, HttpResponse
from providers.luzia import wire
from providers.luzia.denormalize import ticker_data
from schemas import Event, Status, Ticker
from schemas.channels import ChannelError
from schemas.instruments import SHOWN_CHARS, InstrumentError, canonical_exchange, canonical_symbol
from schemas.streams import StreamKey

#: A REST-started subscription lives this long after its stream's last request.
REST_KEEPALIVE_SECONDS: Final = 60.0
#: Luzia's documented page size for ticker lists: default 20, at most 50.
DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 50
#: Symbols one `/v1/tickers?symbols=` request may name (each may start a subscription).
MAX_SYMBOLS: Final = 100
#: Exchanges `/v1/exchanges` remembers: far more than exist, a bound all the same.
MAX_EXCHANGES: Final = 1000
#: Digits a `limit` or `offset` may have (ASCII only): more is no page anybody can serve.
MAX_DIGITS: Final = 9
_NUMBER: Final = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")

Instrument = tuple[str, str]  # (exchange, symbol)


class TooManyWatches(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many symbols watched; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


class TickerWatches:
    """The tap and the holds behind the REST paths: watched streams, their latest tickers, expiry."""

    def __init__(
        self, hub: Hub, *, keepalive: float = REST_KEEPALIVE_SECONDS, max_streams: int = 500, max_total: int | None = None
    ) -> None:
        self.hub = hub
        self.keepalive = keepalive
        self.max_streams = max_streams
        self.max_total = max_total  # `[limits] max_streams`: distinct streams on the whole gateway
        self.latest: dict[Instrument, Ticker] = {}
        self.exchanges: set[str] = set()  # where routed tickers have come from
        self._expiry: dict[StreamKey, float] = {}  # in order of expiry (a touch moves a key last)
        self._refusals: dict[StreamKey, str] = {}
        self._waiters: dict[tuple[str, str | None], trio.Event] = {}
        self._first_watch = trio.Event()
        hub.add_tap(self)

    def __len__(self) -> int:
        return len(self._expiry)

    # ----- the hub's side: every routed event comes through here; must be cheap --------------

    def on_event(self, event: Event) -> None:
        if type(event) is Ticker:
            self._ticker(event)
        elif type(event) is Status and event.state == "rejected" and event.stream:
            self.refused(event.stream, event.reason or "refused by the provider")

    def _ticker(self, event: Ticker) -> None:
        if len(self.exchanges) < MAX_EXCHANGES:
            self.exchanges.add(event.exchange)
        if not self._covered((event.exchange, event.symbol)):
            return  # not watched: another client's stream
        self.latest[(event.exchange, event.symbol)] = event
        for key in ((event.exchange, event.symbol), (event.exchange, None)):
            waiter = self._waiters.pop(key, None)
            if waiter is not None:
                waiter.set()

    def refused(self, stream: str, reason: str) -> None:
        try:
            key = StreamKey.parse(stream)
        except ChannelError:
            return
        if key in self._expiry:
            self._refusals[key] = reason
            waiter = self._waiters.pop(_spot(key), None)
            if waiter is not None:
                waiter.set()

    # ----- requests ---------------------------------------------------------------------

    def watch(self, keys: Iterable[StreamKey], now: float) -> None:
        """Subscribe what is new, and push every key's expiry to `now + keepalive`."""
        keys = list(dict.fromkeys(keys))
        self.release_expired(now)  # also the fallback when the janitor task is not running
        new = [k for k in keys if k not in self._expiry]
        over_total = self.max_total is not None and not self.hub.room_for(new, self.max_total)
        if over_total or len(self._expiry) + len(new) > self.max_streams:
            oldest = next(iter(self._expiry.values()), now)
            raise TooManyWatches(max(1.0, oldest - now))
        for key in keys:
            self._expiry.pop(key, None)
            self._expiry[key] = now + self.keepalive
        with self.hub.batch():
            for key in new:
                self.hub.hold(key)
        if new:
            self._first_watch.set()

    def lookup(self, key: StreamKey) -> list[Ticker]:
        """What is known for a stream: its ticker, or every ticker of its exchange, by symbol."""
        if key.symbol is not None:
            found = self.latest.get((key.exchange or "", key.symbol))
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
                    waiter = self._waiters.setdefault(_spot(key), trio.Event())
                    await waiter.wait()

    # ----- expiry -----------------------------------------------------------------------

    def release_expired(self, now: float) -> None:
        released = []
        with self.hub.batch():
            while self._expiry:
                key, expiry = next(iter(self._expiry.items()))
                if expiry > now:
                    break
                del self._expiry[key]
                self._refusals.pop(key, None)
                self.hub.release(key)
                released.append(key)
                # Whoever still waits on it stops (it is no longer watched), and nothing is kept
                # for it: the waiters are bounded by the watched streams.
                waiter = self._waiters.pop(_spot(key), None)
                if waiter is not None:
                    waiter.set()
        for key in released:  # their values go with them: nothing stale is ever served
            for instrument in self._instruments_of(key):
                if not self._covered(instrument):
                    del self.latest[instrument]

    def _instruments_of(self, key: StreamKey) -> list[Instrument]:
        if key.symbol is not None:
            instrument = (key.exchange or "", key.symbol)
            return [instrument] if instrument in self.latest else []
        return [i for i in self.latest if i[0] == key.exchange]

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


def _spot(key: StreamKey) -> tuple[str, str | None]:
    """A watched key's (exchange, symbol): REST keys always name their exchange."""
    return key.exchange or "", key.symbol


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
        raise BadRequest(f"Invalid exchange: {text[:SHOWN_CHARS]}", {"exchange": "expected a lower-case exchange id"}) from None


def parse_symbol(text: str) -> str:
    try:
        return canonical_symbol(text)
    except InstrumentError:
        raise BadRequest(f"Invalid symbol: {text[:SHOWN_CHARS]}", {"symbol": "expected BASE-QUOTE, e.g. BTC-USDT"}) from None


def parse_page(query: dict[str, str]) -> tuple[int, int]:
    """(limit, offset): integers, limit ≥ 1 (above MAX_LIMIT: MAX_LIMIT), offset ≥ 0."""
    values = {}
    for name, default, least in (("limit", DEFAULT_LIMIT, 1), ("offset", 0, 0)):
        text = query.get(name, "").strip(" ")
        value = parse_count(text) if text else default
        if value is None or value < least:
            raise BadRequest(f"Invalid {name}: {text[:SHOWN_CHARS]}", {name: f"expected an integer ≥ {least}"})
        values[name] = value
    return min(values["limit"], MAX_LIMIT), values["offset"]


def parse_count(text: str) -> int | None:
    """ASCII digits (at most MAX_DIGITS) → their number; None for anything else, including the
    Unicode digits `int()` accepts (`١٢`, `１２`), signs, `_` separators and spaces."""
    return int(text) if _NUMBER.fullmatch(text) else None


def page(tickers: list[Ticker], limit: int, offset: int) -> HttpResponse:
    shown = [ticker_data(t) for t in tickers[offset : offset + limit]]
    return ok({"tickers": shown, "total": len(tickers), "limit": limit, "offset": offset})


class LuziaRest:
    """The REST routes of the Luzia endpoint."""

    def __init__(self, ctx: GatewayContext, watches: TickerWatches) -> None:
        self.ctx = ctx
        self.watches = watches
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
        seen = sorted(self.watches.exchanges)
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
