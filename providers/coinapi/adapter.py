"""The CoinAPI WebSocket V1 adapter: the `providers.base.Source` of one configured CoinAPI provider.

Owns: the logical upstream session and its connections (`connection.Connection`): the first
hello of each, coalesced and rate-limited scope updates (the `client.Planner` says what to send),
decoding, reconnect gaps, make-before-break on the server's `reconnect` notice, pushed health
(a provider-level `Status` after `usable` changed), and the health snapshot. What a decoded message
becomes (wanted-set filtering, tickers, books, sequence and staleness gaps, de-duplication) is
`streams.StreamRouter`'s. Timers are kept apart: transport ping (dead peer) and data idle per
connection (`connection`), staleness per wanted stream (the watchdog here, the rules in `streams`).
Hostile input: a frame is either good (it decoded, and what is wanted of it normalized within
`providers.common.values`' bounds) or malformed: counted, skipped, never liveness (no idle-deadline
feed, no last-message age), and `MALFORMED_RUN_LIMIT` in a row end that connection (reconnect with
backoff). A CoinAPI `error` becomes our own wording (`AuthRejected`/`ProviderError`), its text
only the redacted, shortened `detail` the reconnect loop logs. A stream the planner cannot fit in
CoinAPI's limits is reported `rejected` at once and never sent upstream.
Must never: await the sink (it is synchronous), let the API key reach a log, an exception or health
(`Redactor`), let provider free text reach health or a status, classify a session's failure (the
reconnect loop does, and reports it through `on_failure`), send a hello with an empty scope
(CoinAPI would read it as "everything"), or exceed CoinAPI's 10 hello/subscribe per 10 s.

Shape: `run` = staleness watchdog + `reconnect_forever(_session)`. One `_session` is one logical
session; it may hop from connection to connection on `reconnect` notices without counting as a
reconnect. Every connection starts pending and becomes the active one on its first frame; the
previous active one is then retired (closed) and its later frames are dropped. Events delivered
twice during the overlap (same trade uuid, same quote time) are emitted once. A connection that
fails while another live one carries the session is survivable; the session fails, and the loop
backs off, when the last live connection fails. With nothing wanted there is no connection at all
(health state "stopped"). `update_wanted` costs what it changes; it may be called from anywhere,
before `run` too (it only records the change and wakes the sender).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable, Set
from functools import partial
from typing import Final

import trio
import trio.lowlevel

from providers.base import ConnectionHealth, EventSink, ProviderHealth
from providers.coinapi import wire
from providers.coinapi.client import Planner
from providers.coinapi.connection import Connection
from providers.coinapi.grammar import ExchangeMap, SymbolMapper
from providers.coinapi.policy import CoinApiPolicy
from providers.coinapi.server import HelloLimiter
from providers.coinapi.streams import StreamRouter
from providers.common.backoff import Backoff
from providers.common.counters import MALFORMED_RUN_LIMIT, FrameCounters
from providers.common.errors import AuthRejected, MalformedFrame, ProviderError, TransportError, UnknownMessage
from providers.common.liveness import trio_now
from providers.common.reconnect import RETRYABLE, Failure, LinkState, leaves, reconnect_forever
from providers.common.redact import Redactor, url_without_credentials
from providers.common.signal import Wakeup
from providers.common.transport import Connector, connect_tcp
from schemas import Status
from schemas.streams import StreamKey

log = logging.getLogger(__name__)

DEFAULT_URL: Final = "wss://ws.coinapi.io/v1/"
#: Changes to the wanted set within this long go out as one message.
COALESCE_SECONDS: Final = 0.05
#: Why a stream is refused before it is ever asked for (`client.Planner.add`).
DOES_NOT_FIT: Final = "does not fit the provider's subscription limits"
#: Of a provider's error text, the log line keeps this much (CoinAPI's known texts are < 80).
MAX_DETAIL_CHARS: Final = 300
#: ... after redacting this much of it (a huge text is not scanned whole for the key).
_DETAIL_SCAN_CHARS: Final = 4 * MAX_DETAIL_CHARS


class CoinApiAdapter:
    kind = "coinapi"
    datatypes = frozenset({"trade", "quote", "ticker", "book"})

    def __init__(
        self,
        name: str,
        *,
        url: str = DEFAULT_URL,
        api_key: str,
        sink: EventSink,
        policy: CoinApiPolicy | None = None,
        connector: Connector = connect_tcp,
        rng: random.Random | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.name = name
        self.policy = policy = policy or CoinApiPolicy()
        self._url, self._api_key, self._sink, self._connector = url, api_key, sink, connector
        self._headers = [(b"X-CoinAPI-Key", api_key.encode())]
        self._clock_ns = clock_ns
        self._redact = Redactor(api_key)
        self._mapper = SymbolMapper(ExchangeMap(policy.exchange_map))
        self._backoff = Backoff.of(policy.backoff, rng)
        self._link_state = LinkState()
        self._limiter = HelloLimiter(policy.hello_limit, policy.hello_window)
        self._planner = Planner(self._mapper, policy.limits)
        self._router = StreamRouter(name, self._mapper, sink, policy.stale_after)
        self._counters = FrameCounters()
        self._wanted_changed, self._send_needed, self._gaps_queued = Wakeup(), Wakeup(), Wakeup()
        self._link_ids = itertools.count(1)
        self._links: list[Connection] = []
        self._active: Connection | None = None
        self._replacement: Connection | None = None  # opened on a `reconnect` notice, not serving yet
        self._nursery: trio.Nursery | None = None
        self._idle = True  # waiting for something to be wanted: no connection
        self._refused = False  # our key was refused, and no session has been served since
        self._mark_healthy: Callable[[], None] = lambda: None
        self._session_connected = False
        self._last_frame_at: float | None = None
        self._last_frame_ns: int | None = None
        self._lost: tuple[int, frozenset[StreamKey]] | None = None  # (last data ns, streams) of a lost session

    def __repr__(self) -> str:  # never the key
        return f"CoinApiAdapter({self.name!r}, url={url_without_credentials(self._url)!r})"

    # ------------------------------------------------------------------ the Source contract

    @property
    def usable(self) -> bool:
        return not self._refused

    @property
    def wanted(self) -> Set[StreamKey]:
        """The streams wanted now (a live, read-only view)."""
        return self._router.wanted

    def update_wanted(self, added: Set[StreamKey], removed: Set[StreamKey]) -> None:
        self._router.remove(removed)
        self._planner.remove(removed)
        refused = self._planner.add(added)
        self._router.add(added - set(refused) if refused else added, trio_now())
        for key in refused:  # beyond what one CoinAPI connection can ask for: never sent upstream
            self._sink(Status(
                provider=self.name, ts_gateway=self._clock_ns(), state="rejected", stream=key.channel(), reason=DOES_NOT_FIT,
            ))
        self._wanted_changed.fire()
        self._send_needed.fire()

    def health(self) -> ProviderHealth:
        now = trio_now()
        state = self._link_state.state
        if self._idle and state == "connecting":
            state = "stopped"
        active = self._active
        return ProviderHealth(
            name=self.name,
            kind=self.kind,
            state=state,
            usable=self.usable,
            wanted=len(self._router.wanted),
            subscriptions=active.scope.entries if active is not None else 0,
            connections=[self._link_health(link, now) for link in self._links],
            last_message_age_s=_age(self._last_frame_at, now),
            reconnects=self._link_state.reconnects,
            malformed_frames=self._counters.malformed,
            unknown_messages=self._counters.unknown,
            stale_streams=self._router.tracker.stale_count,
            last_error=self._redact.optional(self._link_state.last_error),
        )

    def _link_health(self, link: Connection, now: float | None) -> ConnectionHealth:
        return ConnectionHealth(
            id=link.id,
            state="connected" if link is self._active else "connecting",
            subscriptions=link.scope.entries,
            last_message_age_s=_age(link.last_frame_at, now),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._router.start(trio.current_time())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_staleness)
            nursery.start_soon(self._tell_gaps)
            task_status.started()
            await reconnect_forever(
                self._session, self._link_state, self._backoff, auth_retry=self.policy.auth_retry,
                describe=f"coinapi {self.name}", redact=self._redact, on_failure=self._on_failure,
            )

    # ------------------------------------------------------------------ session and links

    async def _session(self, mark_healthy: Callable[[], None]) -> None:
        if self._refused and not self._router.wanted:
            # The key's retry time came, but the routes moved our demand elsewhere meanwhile, and
            # CoinAPI judges a key only on a hello, which needs a scope: become usable again and
            # say so, so the routes may send the demand back; that connection tries the key.
            self._refused = False
            self._status("recovered", reason="ready to try the key again")
        await self._until_wanted()
        self._mark_healthy, self._session_connected = mark_healthy, False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._link_task, self._new_link())
                nursery.start_soon(self._sender)
        finally:
            self._nursery, self._active, self._replacement = None, None, None
            for link in self._links:
                self._planner.detach(link.scope)
            self._links.clear()
            self._router.reset()

    async def _until_wanted(self) -> None:
        while not self._router.wanted:
            self._idle = True
            await self._wanted_changed.wait()
        self._idle = False

    def _on_failure(self, failure: Failure) -> None:
        """The reconnect loop's verdict on a session (the link state already says it)."""
        if self._session_connected:
            self._session_connected = False
            self._lost = (self._last_frame_ns or self._clock_ns(), frozenset(self._router.wanted))
            self._status("disconnected", reason=failure.reason)
        if failure.kind == "auth":
            self._refused = True
            self._status("rejected", reason=failure.reason)

    def _new_link(self) -> Connection:
        link = Connection(next(self._link_ids), self._planner.attach())
        self._links.append(link)
        return link

    async def _link_task(self, link: Connection, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await link.run(
                self._connector, self._url, self._headers, self.policy, self._send_first, self._on_frame,
                task_status=task_status,
            )
        except* RETRYABLE as group:
            if not self._carried_on(link, group):
                raise
        finally:
            if link is self._replacement:
                self._replacement = None
                self._router.overlap_failed()  # what the old one delivered will not be repeated
            if link in self._links:
                self._links.remove(link)
            self._planner.detach(link.scope)
            if self._active is link:
                self._active = None

    def _carried_on(self, link: Connection, group: BaseExceptionGroup[BaseException]) -> bool:
        """Whether another live connection carries the session on after `link` failed."""
        others = [other for other in self._links if other is not link and not other.retired]
        if not others:
            return False
        if self._active is link:
            # Died before its replacement delivered: data may be missing until the replacement does.
            self._active = None
            self._lost = (self._last_frame_ns or self._clock_ns(), frozenset(self._router.wanted))
        cause = leaves(group)[0]
        reason = self._redact(f"{type(cause).__name__}: {cause}")
        detail = getattr(cause, "detail", None)  # already redacted and shortened (`_error`)
        said = f"; the provider said {detail!r}" if detail else ""
        log.info("coinapi %s: connection %d ended (%s%s); connection %d carries on", self.name, link.id, reason, said, others[0].id)
        return True

    # ------------------------------------------------------------------ subscription updates

    async def _wait_for_limiter(self) -> None:
        # A time, not an event, ends the wait; it is re-read because the window slides.
        while (allowed_at := self._limiter.allowed_at(now := trio.current_time())) > now:  # noqa: ASYNC110
            await trio.sleep_until(allowed_at)

    async def _send_first(self, link: Connection) -> None:
        await self._wait_for_limiter()
        message = self._planner.update(link.scope, self._api_key)
        if message is not None:
            self._limiter.record(trio.current_time())
            await link.send(wire.encode_client(message))

    async def _sender(self) -> None:
        """Bring the active connection's scope up to date; bursts of changes become one message."""
        while True:
            await self._send_needed.wait()
            await trio.sleep(COALESCE_SECONDS)
            with contextlib.suppress(TransportError):  # the connection's reader reports it
                await self._bring_up_to_date()

    def _target_link(self) -> Connection | None:
        """Where scope updates go: the active connection; before any is active, the only live one
        (opened while the demand came and went, it has said nothing yet, so no frame will ever
        make it active unless it is told the demand that came back)."""
        if self._active is not None:
            return self._active
        live = [link for link in self._links if not link.retired]
        return live[0] if len(live) == 1 else None

    async def _bring_up_to_date(self) -> None:
        while (link := self._target_link()) is not None and self._planner.pending(link.scope):
            allowed_at = self._limiter.allowed_at(now := trio.current_time())
            if allowed_at > now:
                await trio.sleep_until(allowed_at)  # then look again: more may have changed meanwhile
                continue
            message = self._planner.update(link.scope, self._api_key)
            if message is None:
                return
            self._limiter.record(trio.current_time())
            await link.send(wire.encode_client(message))

    # ------------------------------------------------------------------ frames

    def _on_frame(self, link: Connection, raw: str | bytes) -> bool:
        """One frame of `link`; True if it was good (only a good frame is liveness). A malformed
        one is counted and skipped; `MALFORMED_RUN_LIMIT` in a row end the connection."""
        self._counters.frames += 1
        try:
            self._handle(link, raw, self._clock_ns())  # ts_gateway: stamped once per frame
        except MalformedFrame:
            self._counters.malformed += 1
            if link.malformed_run.bad():
                raise ProviderError(f"{MALFORMED_RUN_LIMIT} malformed frames in a row") from None
            return False
        link.malformed_run.good()
        self._last_frame_at = trio.current_time()
        return True

    def _handle(self, link: Connection, raw: str | bytes, now_ns: int) -> None:
        """Decode and act on one frame; raises MalformedFrame (values included: `normalize`)."""
        message = wire.decode_server(raw)
        if isinstance(message, UnknownMessage):
            self._counters.unknown += 1
            return
        if type(message) is wire.Error:
            raise self._error(message.message)
        if link is not self._active:
            if link.retired:
                return
            self._switch_to(link, now_ns)
        if type(message) is wire.Reconnect:
            self._on_reconnect(link, message)
        else:
            self._router.route(link.sequences, message, now_ns, trio.current_time())
        self._last_frame_ns = now_ns

    def _error(self, text: str) -> Exception:
        """CoinAPI errors are terminal; a refused key must not be hammered. The provider's text is
        only the (redacted, shortened) detail for the log: health and clients get our wording."""
        refused = "invalid api key" in text.lower()  # read before redaction, which may change words
        detail = self._redact(text[:_DETAIL_SCAN_CHARS])[:MAX_DETAIL_CHARS]
        if refused:
            return AuthRejected("the provider refused the key", detail=detail)
        return ProviderError("the provider sent an error", detail=detail)

    def _switch_to(self, link: Connection, now_ns: int) -> None:
        """`link` delivered its first frame: it becomes the active connection."""
        self._active = link
        self._replacement = None
        self._router.switched(trio.current_time())
        for other in self._links:
            if other is not link and not other.retired:
                other.retire()
        if not self._session_connected:
            self._session_connected = True
            self._refused = False  # the key works (again): usable before the status says so
            self._mark_healthy()
            self._status("connected")
        self._report_lost(now_ns)
        self._send_needed.fire()  # its scope may lag behind what is wanted now

    def _report_lost(self, now_ns: int) -> None:
        """A Gap(reconnect) per stream that was wanted before the loss and still is, told by
        `_tell_gaps` a slice at a time (tens of thousands of streams may have been lost)."""
        if self._lost is not None:
            lost_from, lost_keys = self._lost
            self._lost = None
            self._router.queue_gaps(lost_keys, lost_from, now_ns)  # (those no longer wanted are skipped there)
            self._gaps_queued.fire()

    def _on_reconnect(self, link: Connection, message: wire.Reconnect) -> None:
        """Make before break: open the replacement now; it takes over on its first frame."""
        if any(other is not link and not other.retired for other in self._links) or self._nursery is None:
            return  # a replacement is already on its way
        log.info("coinapi %s: server asks to reconnect within %s s", self.name, message.within_seconds)
        self._router.begin_overlap(trio.current_time())
        self._replacement = replacement = self._new_link()
        self._nursery.start_soon(self._link_task, replacement)

    def _status(self, state: str, *, reason: str | None = None) -> None:
        self._sink(Status(provider=self.name, ts_gateway=self._clock_ns(), state=state, reason=reason))  # type: ignore[arg-type]

    async def _watch_staleness(self) -> None:
        interval = min(1.0, self._router.tracker.stale_after / 2)
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            await _sliced(partial(self._router.check_stale, now))
            await _sliced(lambda: self._router.report_stale(self._clock_ns()))

    async def _tell_gaps(self) -> None:
        while True:
            await self._gaps_queued.wait()
            await _sliced(self._router.report_gaps)


async def _sliced(report: Callable[[], bool]) -> None:
    """Call `report` until it says it is done, letting every other task run between calls."""
    while report():
        await trio.lowlevel.checkpoint()


def _age(then: float | None, now: float | None) -> float | None:
    return None if then is None or now is None else now - then
