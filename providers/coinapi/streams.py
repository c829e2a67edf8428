"""Decoded CoinAPI messages → normalized events of the wanted streams, for one adapter. Pure.

Owns: the wanted set (changed incrementally: `add` / `remove` cost what they change) and the filter
by it (CoinAPI's union filters deliver more than we asked for), the ticker builders, book snapshots
(`book5/20/50` → `Book`), sequence-jump gaps, staleness per wanted stream (stale / recovered +
gap), and the make-before-break de-duplication of what two overlapping connections both deliver.
A stream of every exchange (`StreamKey(dt, None, None)`) is wanted like any other; its gaps are
reported per exchange it has delivered (a `Gap` always names its exchange).
Staleness is reported in slices (`check_stale`, then `report_stale` until it says it is done), and
so are the gaps of a lost connection (`queue_gaps`, then `report_gaps`): tens of thousands of
streams may go silent at one moment (an exchange halts, a connection drops), and one event per
stream through the sink in one go would stall every client for the whole batch. A stream that
delivers, or is no longer wanted, before its turn is not reported stale at all (the check just
came a little later for it); each costs O(1).
Must never: do I/O or read a clock (wall ns and Trio seconds are passed in), or block: the sink
is synchronous.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Final

from providers.base import EventSink
from providers.coinapi import normalize, wire
from providers.coinapi.grammar import SymbolMapper
from providers.common.errors import MalformedFrame
from providers.common.staleness import StalenessTracker
from schemas import Book, Gap, Quote, Status, Ticker, Trade
from schemas.streams import Stream, StreamKey
from schemas.timeutil import NS_PER_S

#: After a make-before-break switch, the new connection's repeats of what the old one already
#: delivered arrive within moments; their keys are kept this long. It also bounds how long an
#: overlap is recorded while the replacement connects (CoinAPI's notice gives it ~10 s).
DEDUPE_WINDOW: Final = 10.0
#: Keys remembered during one overlap (hashes: ~60 bytes each, ~12 MB at most); beyond this many
#: the rest may be delivered twice (an overlap lasts seconds: this bounds a pathological burst).
DEDUPE_LIMIT: Final = 200_000
#: Stale statuses (or lost streams' gaps) per `report_*` call: the adapter lets the loop run between
#: slices, so a bystander client waits at most one slice (~2 ms of hub fan-out at ~15 µs an event).
STALE_SLICE: Final = 128
#: Loss reports (a lost connection: every stream it carried) waiting to be told as gaps, a slice
#: at a time like stale statuses; one more is merged into the newest (a wider window is still true).
GAP_BATCHES: Final = 4
#: Sequence counters kept per connection ((type, symbol_id) pairs; CoinAPI's union filters may
#: deliver whole exchanges). Beyond, they start over: at worst one jump goes unnoticed.
SEQUENCE_LIMIT: Final = 65_536
#: Exchanges remembered per data type for the gaps of a stream of every exchange.
EXCHANGES_SEEN_LIMIT: Final = 1_024
#: Ticker builders kept (one per instrument a ticker stream has seen); beyond, they start over.
_TICKER_LIMIT: Final = 65_536

Sequences = dict[tuple[str, str], tuple[int, int]]  # (type, symbol_id) → (last sequence, its receive ns)
Instrument = tuple[str, str]  # canonical (exchange, symbol)
_Handler = Callable[[Sequences, wire.ServerMessage, int, float], None]


class StreamRouter:
    def __init__(self, provider: str, mapper: SymbolMapper, sink: EventSink, stale_after: float) -> None:
        self.provider, self._mapper, self._sink = provider, mapper, sink
        self.tracker: StalenessTracker[StreamKey] = StalenessTracker(stale_after)
        self.wanted: set[StreamKey] = set()
        self._tickers: dict[Instrument, normalize.TickerBuilder] = {}
        # Hashes of the keys delivered while a replacement connects, until `_overlap_until` ...
        self._overlap: set[int] | None = None
        self._overlap_until = 0.0
        # ... which the replacement must not deliver again, until `_dedupe_until`.
        self._dedupe: set[int] | None = None
        self._dedupe_until = 0.0
        self._exchanges_seen: dict[str, set[str]] = {}  # data type → exchanges it has delivered
        # Newly stale streams not reported yet: the set says which, the queue their order (oldest
        # first; a key that left the set is skipped). Both filled by C-level bulk calls, since
        # tens of thousands may arrive at once; both at most the wanted set.
        self._unreported: set[StreamKey] = set()
        self._unreported_order: deque[StreamKey] = deque()
        self._gap_batches: deque[tuple[list[StreamKey], int, int]] = deque()  # (streams, from_ns, to_ns)
        self._routes: dict[type, _Handler] = {
            wire.Trade: self._trade,  # type: ignore[dict-item]
            wire.Quote: self._quote,  # type: ignore[dict-item]
            wire.Ohlcv: self._ohlcv,  # type: ignore[dict-item]
            wire.Book5: self._book,  # type: ignore[dict-item]
            wire.Book20: self._book,  # type: ignore[dict-item]
            wire.Book50: self._book,  # type: ignore[dict-item]
        }

    # ------------------------------------------------------------------ the wanted set

    def add(self, keys: Iterable[StreamKey], now: float | None) -> None:
        """Want `keys` too; their staleness clocks start at `now` (None: not running yet)."""
        keys = [key for key in keys if key not in self.wanted]
        self.wanted.update(keys)
        if now is not None:
            self.tracker.add(keys, now)

    def remove(self, keys: Iterable[StreamKey]) -> None:
        keys = [key for key in keys if key in self.wanted]
        self.wanted.difference_update(keys)
        self.tracker.remove(keys)
        if self._unreported:
            self._unreported.difference_update(keys)

    def start(self, now: float) -> None:
        """The adapter runs from `now`: every wanted stream's staleness clock starts."""
        self.tracker.add(self.wanted, now)

    def route(self, sequences: Sequences, message: wire.ServerMessage, now_ns: int, now: float) -> None:
        """Handle one message of the active connection (`sequences` is that connection's).
        Raises TimestampError or MalformedFrame for values that are not what they claim (the
        caller counts them as malformed)."""
        handler = self._routes.get(type(message))
        if handler is not None:
            handler(sequences, message, now_ns, now)

    # ------------------------------------------------------------------ make-before-break

    def begin_overlap(self, now: float) -> None:
        """A replacement connection is on its way: remember what the current one delivers."""
        self._overlap, self._overlap_until = set(), now + DEDUPE_WINDOW

    def overlap_failed(self) -> None:
        """The replacement failed before it delivered: nothing of the overlap will be repeated."""
        self._overlap = None

    def switched(self, now: float) -> None:
        """The replacement took over: drop its repeats of what was remembered, for a while."""
        if self._overlap is not None:
            self._dedupe, self._overlap = self._overlap, None
            self._dedupe_until = now + DEDUPE_WINDOW

    def reset(self) -> None:
        self._overlap = self._dedupe = None

    @property
    def remembered(self) -> int:
        """Keys held for de-duplication now (at most `DEDUPE_LIMIT`)."""
        return len(self._overlap or ()) + len(self._dedupe or ())

    def expire(self, now: float) -> None:
        """Let go of de-duplication state past its time (also when no message comes to notice)."""
        if self._overlap is not None and now > self._overlap_until:
            self._overlap = None
        if self._dedupe is not None and now > self._dedupe_until:
            self._dedupe = None

    def _duplicate(self, key: Hashable, now: float) -> bool:
        if self._dedupe is None and self._overlap is None:
            return False  # the usual case: no hash computed
        self.expire(now)
        digest = hash(key)  # a 64-bit hash: a false match among 200,000 keys is ~1e-9 likely
        if self._dedupe is not None and digest in self._dedupe:
            self._dedupe.discard(digest)
            return True
        if self._overlap is not None and len(self._overlap) < DEDUPE_LIMIT:
            self._overlap.add(digest)
        return False

    # ------------------------------------------------------------------ messages

    def _wants(self, datatype: str, instrument: Instrument) -> bool:
        wanted = self.wanted
        return any(key in wanted for key in Stream(datatype, *instrument).covering_keys())

    def _ticker(self, instrument: Instrument) -> normalize.TickerBuilder:
        builder = self._tickers.get(instrument)
        if builder is None:
            if len(self._tickers) >= _TICKER_LIMIT:
                self._tickers.clear()
            builder = self._tickers[instrument] = normalize.TickerBuilder(self.provider, *instrument)
        return builder

    # Each handler validates (normalizes) a wanted message before it changes any state: a
    # malformed one must not move the sequence (a false gap later) nor enter the de-duplication.
    # A message nobody wants only has its sequence noted, unvalidated (no gap is ever told for it).

    def _trade(self, sequences: Sequences, message: wire.Trade, now_ns: int, now: float) -> None:
        instrument = self._instrument(message.symbol_id)
        if instrument is None:
            return
        want_trade, want_ticker = self._wants("trade", instrument), self._wants("ticker", instrument)
        if not (want_trade or want_ticker):
            self._check_sequence(sequences, "trade", message.symbol_id, None, message.sequence, now_ns)
            return
        exchange, symbol = instrument
        trade = normalize.to_trade(message, provider=self.provider, exchange=exchange, symbol=symbol, ts_gateway=now_ns)
        self._check_sequence(sequences, "trade", message.symbol_id, instrument, message.sequence, now_ns)
        if trade is None or self._duplicate((message.symbol_id, message.uuid, message.time_exchange), now):
            return
        if want_trade:
            self._emit_market(trade, "trade", now)
        if want_ticker:
            self._emit_market(self._ticker(instrument).on_trade(trade), "ticker", now)

    def _quote(self, sequences: Sequences, message: wire.Quote, now_ns: int, now: float) -> None:
        instrument = self._instrument(message.symbol_id)
        if instrument is None:
            return
        want_quote, want_ticker = self._wants("quote", instrument), self._wants("ticker", instrument)
        if not (want_quote or want_ticker):
            self._check_sequence(sequences, "quote", message.symbol_id, None, message.sequence, now_ns)
            return
        exchange, symbol = instrument
        quote = normalize.to_quote(message, provider=self.provider, exchange=exchange, symbol=symbol, ts_gateway=now_ns)
        self._check_sequence(sequences, "quote", message.symbol_id, instrument, message.sequence, now_ns)
        if self._duplicate((message.symbol_id, message.time_exchange, message.time_coinapi), now):
            return
        if want_quote:
            self._emit_market(quote, "quote", now)
        if want_ticker:
            self._emit_market(self._ticker(instrument).on_quote(quote), "ticker", now)

    def _book(self, sequences: Sequences, message: wire.BookTop, now_ns: int, now: float) -> None:
        instrument = self._instrument(message.symbol_id)
        if instrument is None:
            return
        kind = wire.tag_of(type(message))
        if not self._wants("book", instrument):
            self._check_sequence(sequences, kind, message.symbol_id, None, message.sequence, now_ns)
            return
        exchange, symbol = instrument
        book = normalize.to_book(message, provider=self.provider, exchange=exchange, symbol=symbol, ts_gateway=now_ns)
        self._check_sequence(sequences, kind, message.symbol_id, instrument, message.sequence, now_ns, datatype="book")
        if not self._duplicate((kind, message.symbol_id, message.time_exchange, message.time_coinapi), now):
            self._emit_market(book, "book", now)

    def _instrument(self, symbol_id: str) -> Instrument | None:
        """Ours, or None (an id of a market we do not map: skipped, as CoinAPI's filters send
        extras). A non-ASCII id is no CoinAPI id at all: a malformed frame, counted by the caller
        (and never case-mapped into one of ours)."""
        if not symbol_id.isascii():
            raise MalformedFrame("a symbol id is ASCII")
        return self._mapper.instrument(symbol_id)

    def _ohlcv(self, sequences: Sequences, message: wire.Ohlcv, now_ns: int, now: float) -> None:
        instrument = self._instrument(message.symbol_id)
        if instrument is None or not self._wants("ticker", instrument):
            return
        ticker = self._ticker(instrument).on_ohlcv(message, now_ns)
        if ticker is not None:
            self._emit_market(ticker, "ticker", now)

    def _check_sequence(
        self,
        sequences: Sequences,
        kind: str,
        symbol_id: str,
        instrument: Instrument | None,
        sequence: int | None,
        now_ns: int,
        datatype: str | None = None,
    ) -> None:
        """CoinAPI numbers messages per (type, symbol_id) for the connection's life: a jump is loss.
        `datatype` is ours when it differs from CoinAPI's message type (`book50` → `book`)."""
        if sequence is None:
            return
        datatype = datatype or kind
        previous = sequences.get((kind, symbol_id))
        if previous is None and len(sequences) >= SEQUENCE_LIMIT:
            sequences.clear()
        sequences[(kind, symbol_id)] = (sequence, now_ns)
        if previous is None or sequence <= previous[0] + 1 or instrument is None or not self._wants(datatype, instrument):
            return
        self._sink(Gap(
            provider=self.provider, ts_gateway=now_ns, datatype=datatype, exchange=instrument[0],
            symbol=instrument[1], from_ts=previous[1], to_ts=now_ns, cause="sequence", missed=sequence - previous[0] - 1,
        ))

    # ------------------------------------------------------------------ emission, staleness, gaps

    def _emit_market(self, event: Trade | Quote | Ticker | Book, datatype: str, now: float) -> None:
        """Emit a market event, first reporting the end of a stale period of its stream."""
        seen = self._exchanges_seen.setdefault(datatype, set())
        if event.exchange not in seen and len(seen) < EXCHANGES_SEEN_LIMIT:
            seen.add(event.exchange)
        for key in Stream(datatype, event.exchange, event.symbol).covering_keys():
            since = self.tracker.seen(key, now)
            if since is not None and not self._unreported_until_now(key):
                self._sink(Status(provider=self.provider, ts_gateway=event.ts_gateway, state="recovered", stream=key.channel()))
                from_ns = event.ts_gateway - int((now - since) * NS_PER_S)
                self.gaps([key], from_ns, event.ts_gateway, "stale")
        self._sink(event)

    def check_stale(self, now: float, limit: int | None = STALE_SLICE) -> bool:
        """Queue up to `limit` wanted streams that have just gone silent for `stale_after` seconds
        (then `report_stale` reports them, a slice at a time); True when there may be more to find,
        so a burst of tens of thousands is found a slice at a time too."""
        self.expire(now)
        stale = self.tracker.newly_stale(now, limit)
        self._unreported.update(stale)
        self._unreported_order.extend(stale)
        return limit is not None and len(stale) >= limit

    def report_stale(self, now_ns: int, limit: int = STALE_SLICE) -> bool:
        """A stale Status for up to `limit` queued streams; True while more are queued."""
        reason = f"no data for {self.tracker.stale_after:g} s"
        unreported, order, sink, provider = self._unreported, self._unreported_order, self._sink, self.provider
        reported = 0
        while order and reported < limit:
            key = order.popleft()
            if key in unreported:  # (not: it delivered or left before its turn; skipping is cheap)
                unreported.discard(key)
                sink(Status(provider=provider, ts_gateway=now_ns, state="stale", stream=key.channel(), reason=reason))
                reported += 1
        if not unreported:
            order.clear()  # only skipped keys were left
        return bool(order)

    def _unreported_until_now(self, key: StreamKey) -> bool:
        """Whether `key` went stale but was never reported: it delivered before its turn, so it
        is neither reported stale nor recovered (as if the check had come a little later)."""
        if key in self._unreported:
            self._unreported.discard(key)
            return True
        return False

    def queue_gaps(self, keys: Iterable[StreamKey], from_ns: int, to_ns: int) -> None:
        """The data of `keys` may be missing between the two times (their connection was lost):
        told as `reconnect` gaps by `report_gaps`, a slice at a time."""
        batches = self._gap_batches
        if len(batches) >= GAP_BATCHES:
            newest, newest_from, _ = batches.pop()
            keys, from_ns = set(keys).union(newest), min(from_ns, newest_from)
        batches.append((list(keys), from_ns, to_ns))

    def report_gaps(self, limit: int = STALE_SLICE) -> bool:
        """Up to `limit` queued streams' gaps (those still wanted); True while more are queued."""
        batches = self._gap_batches
        if batches:
            keys, from_ns, to_ns = batches[0]
            piece = keys[-limit:]
            del keys[-limit:]
            wanted = self.wanted
            self.gaps(sorted((k for k in piece if k in wanted), key=StreamKey.channel), from_ns, to_ns, "reconnect")
            if not keys:
                batches.popleft()
        return bool(batches)

    def gaps(self, keys: Iterable[StreamKey], from_ns: int, to_ns: int, cause: str) -> None:
        """One Gap per stream; a stream of every exchange is one Gap per exchange it has delivered."""
        for key in keys:
            if key.exchange is None:
                exchanges = sorted(self._exchanges_seen.get(key.datatype, ()))
            else:
                exchanges = [key.exchange]
            for exchange in exchanges:
                self._sink(Gap(
                    provider=self.provider, ts_gateway=to_ns, datatype=key.datatype, exchange=exchange,
                    symbol=key.symbol, from_ts=from_ns, to_ts=to_ns, cause=cause,  # type: ignore[arg-type]
                ))
