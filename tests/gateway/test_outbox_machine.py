"""The outbox's overflow policy against a reference model, under any interleaving (Hypothesis).

The model is the policy written as plainly as possible: a list of (kind, key, data) entries; a full
queue replaces a latest-wins stream's queued frame in place, drops trades into per-stream windows,
and never drops control frames; once more than `control_bytes` bytes of them pile up between takes
the owner is told once and aborts: everything queued is dropped, its close frame goes out alone.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gateway.outbox import Outbox
from schemas.streams import Stream

LIMIT, CONTROL_BYTES = 4, 12
STREAMS = st.sampled_from([Stream("trade", "binance", "BTC/USDT"), Stream("quote", "binance", "BTC/USDT"),
                           Stream("trade", "kraken", "BTC/USD"), Stream("ticker", "kraken", "BTC/USD")])
CLOSE, CUT = b"close", b"cut"


class OutboxMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.overflows = 0
        self.outbox = Outbox(LIMIT, CONTROL_BYTES, on_overflow=self._overflowed)
        self.frames: list[bytes] = []
        self.latest_slot: dict[Stream, int] = {}
        self.dropped: dict[Stream, list[int]] = {}  # stream → [from, to, missed]
        self.control_bytes = 0
        self.closed = False
        self.final_queued: bytes | None = None  # a close frame queued and not yet taken
        self.serial = 0

    def _overflowed(self) -> None:
        """What `WebSocketPeer` does: cut the client off with a close frame of its own."""
        self.overflows += 1
        self.outbox.abort(CUT)

    def _abort(self, final: bytes) -> None:
        final_now = self.final_queued if self.closed else final
        self.frames = [final_now] if final_now is not None else []
        self.final_queued, self.latest_slot, self.dropped, self.closed = final_now, {}, {}, True

    def _data(self) -> bytes:
        self.serial += 1
        return str(self.serial).encode()

    @rule(size=st.integers(1, 7))
    def control(self, size: int) -> None:
        data = self._data().rjust(size, b"c")
        self.outbox.put_control(data)
        if self.closed:
            return
        self.control_bytes += len(data)
        if self.control_bytes > CONTROL_BYTES:
            self._abort(CUT)
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
        self.frames, self.latest_slot, self.dropped, self.control_bytes = [], {}, {}, 0
        self.final_queued = None

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self) -> None:
        self.outbox.close(CLOSE)
        self.frames.append(CLOSE)
        self.closed, self.final_queued = True, CLOSE

    @rule()
    def abort(self) -> None:
        """A cut-off from outside the outbox (the writer's stall watchdog), at any moment."""
        self.outbox.abort(CUT)
        self._abort(CUT)

    @invariant()
    def bounded_and_nothing_after_close(self) -> None:
        assert len(self.outbox) == len(self.frames)
        assert len(self.outbox) <= LIMIT + 4 + CONTROL_BYTES + 1  # + one slot per latest-wins stream
        assert self.outbox.closed == self.closed
        assert self.overflows <= 1
        assert self.frames.count(CLOSE) + self.frames.count(CUT) <= 1  # one close frame at most


OutboxMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=40)
TestOutboxPolicy = OutboxMachine.TestCase
