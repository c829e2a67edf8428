"""The outbox's overflow policy against a reference model, under any interleaving (Hypothesis).

The model is the policy written as plainly as possible: a list of (kind, key, data) entries; a full
queue replaces a latest-wins stream's queued frame in place, drops trades into per-stream windows,
and never drops control frames, closing once `control_limit` of them pile up between takes.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gateway.outbox import Outbox
from schemas.streams import Stream

LIMIT, CONTROL_LIMIT = 4, 3
STREAMS = st.sampled_from([Stream("trade", "binance", "BTC/USDT"), Stream("quote", "binance", "BTC/USDT"),
                           Stream("trade", "kraken", "BTC/USD"), Stream("ticker", "kraken", "BTC/USD")])
CLOSE = b"close"


class OutboxMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.overflows = 0
        self.outbox = Outbox(LIMIT, CONTROL_LIMIT, on_overflow=self._overflowed)
        self.frames: list[bytes] = []
        self.latest_slot: dict[Stream, int] = {}
        self.dropped: dict[Stream, list[int]] = {}  # stream → [from, to, missed]
        self.controls = 0
        self.closed = False
        self.serial = 0

    def _overflowed(self) -> None:
        self.overflows += 1

    def _data(self) -> bytes:
        self.serial += 1
        return str(self.serial).encode()

    @rule()
    def control(self) -> None:
        data = self._data()
        self.outbox.put_control(data)
        if self.closed:
            return
        self.controls += 1
        if self.controls > CONTROL_LIMIT:
            self.closed = True
        else:
            self.frames.append(data)

    @rule(stream=STREAMS)
    def latest(self, stream: Stream) -> None:
        data = self._data()
        self.outbox.put_latest(stream, data)
        if self.closed:
            return
        if len(self.frames) >= LIMIT and stream in self.latest_slot:
            self.frames[self.latest_slot[stream]] = data
            return
        self.latest_slot[stream] = len(self.frames)
        self.frames.append(data)

    @rule(stream=STREAMS, ts=st.integers(0, 100))
    def trade(self, stream: Stream, ts: int) -> None:
        data = self._data()
        self.outbox.put_trade(stream, data, ts)
        if self.closed:
            return
        if len(self.frames) < LIMIT:
            self.frames.append(data)
            return
        window = self.dropped.setdefault(stream, [ts, ts, 0])
        window[0], window[1], window[2] = min(window[0], ts), max(window[1], ts), window[2] + 1

    @rule()
    def take(self) -> None:
        frames, dropped = self.outbox.take()
        assert frames == self.frames
        assert {w.key: [w.from_ts, w.to_ts, w.missed] for w in dropped} == self.dropped
        self.frames, self.latest_slot, self.dropped, self.controls = [], {}, {}, 0

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self) -> None:
        self.outbox.close(CLOSE)
        self.frames.append(CLOSE)
        self.closed = True

    @invariant()
    def bounded_and_nothing_after_close(self) -> None:
        assert len(self.outbox) == len(self.frames)
        assert len(self.outbox) <= LIMIT + 4 + CONTROL_LIMIT + 1  # + one slot per latest-wins stream
        assert self.outbox.closed == self.closed
        assert self.overflows <= 1


OutboxMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=40)
TestOutboxPolicy = OutboxMachine.TestCase
