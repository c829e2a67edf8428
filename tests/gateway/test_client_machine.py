"""The native session as a state machine against a plain model: whatever sequence of subscribes,
unsubscribes and hostile frames a client sends, its subscriptions are the model's, nothing already
subscribed is lost to a refusal, the caps hold (per connection and for the gateway), every reply is
the protocol's, and the hub's demand is exactly what the clients hold."""

from __future__ import annotations

import json

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gateway.context import GatewayContext
from gateway.dialects.native import CODECS, NativeSession
from gateway.hub import Hub
from gateway.outbox import Outbox
from schemas.channels import ChannelError
from schemas.streams import StreamKey
from tests.gateway.fakes import FakeAdapter, FakeClient
from tests.gateway.test_client_hostile import PATHOLOGICAL
from tests.gateway.test_native_dialect import native_config
from tests.support.frames import payloads

POOL = ["trade:a", "trade:b", "trade:c", "trade:d", "trade:e", "trade:A", "trade:a:BTC-USDT", "trade:a:BTC/USDT",
        "quote:a", "trade:*", "trade:\u212a", "nonsense", "trade:b:BTC", ""]
MAX_SUBSCRIPTIONS, MAX_STREAMS = 3, 4  # with 2 streams held by another client, both caps bite
OTHERS = [StreamKey("trade", "b", None), StreamKey("trade", "x", None)]  # held by another client


def _key(channel: str) -> StreamKey | None:
    try:
        return StreamKey.parse(channel)
    except ChannelError:
        return None


class NativeMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.hub = Hub({"trade": ["ca"]})
        self.hub.add_source(FakeAdapter("ca", {"trade"}))
        self.other = FakeClient(CODECS["json"])
        for key in OTHERS:
            self.hub.subscribe(self.other, key)
        limits = f"max_streams = {MAX_STREAMS}\nmessage_burst = 100000\nmessages_per_second = 100000"
        ctx = GatewayContext(native_config(MAX_SUBSCRIPTIONS, limits), self.hub, None)
        self.session = NativeSession(ctx, Outbox(limit=10_000), CODECS["json"], clock=lambda: 0.0, clock_ns=lambda: 1)
        self.model: set[StreamKey] = set()

    def _replies(self) -> list[dict]:
        frames, _ = self.session.outbox.take()
        return [json.loads(p) for p in payloads(frames)]

    @rule(channels=st.lists(st.sampled_from(POOL), min_size=1, max_size=6))
    def subscribe(self, channels: list[str]) -> None:
        before = set(self.model)
        self.session.on_message(json.dumps({"type": "subscribe", "channels": channels}))
        refused: list[str] = []
        expected_types: list[str] = []
        for channel in channels:
            key = _key(channel)
            if key is None or key.datatype != "trade":
                expected_types.append("error")  # INVALID_CHANNEL or NO_ROUTE, in its place
            elif key in self.model:
                expected_types.append("subscribed")
            elif len(self.model) >= MAX_SUBSCRIPTIONS or (
                    key not in OTHERS and len(self.model | set(OTHERS)) >= MAX_STREAMS):
                refused.append(channel)
            else:
                self.model.add(key)
                expected_types.append("subscribed")
        replies = self._replies()
        limit_errors = [r for r in replies if r.get("code") == "SUBSCRIPTION_LIMIT"]
        assert [r["type"] for r in replies[: len(expected_types)]] == expected_types
        assert sorted(c for e in limit_errors for c in e["channels"]) == sorted(refused)
        assert len(limit_errors) <= 2  # at most one per cap, never one per channel
        assert before <= self.model  # a refusal loses nothing already subscribed

    @rule(channels=st.lists(st.sampled_from(POOL), min_size=1, max_size=4))
    def unsubscribe(self, channels: list[str]) -> None:
        self.session.on_message(json.dumps({"type": "unsubscribe", "channels": channels}))
        for channel in channels:
            key = _key(channel)
            if key is not None:
                self.model.discard(key)
        assert [r["type"] for r in self._replies()] == [
            "error" if _key(c) is None else "unsubscribed" for c in channels]

    @rule(frame=st.sampled_from(PATHOLOGICAL))
    def hostile(self, frame: str | bytes) -> None:
        before = set(self.model)
        self.session.on_message(frame)
        replies = self._replies()
        assert replies and all(r["type"] == "error" for r in replies)
        assert {r["code"] for r in replies} <= {"INVALID_JSON", "INVALID_REQUEST", "UNKNOWN_TYPE", "INVALID_CHANNEL"}
        assert self.model == before

    @invariant()
    def the_session_holds_the_models_streams_within_the_caps(self) -> None:
        if not hasattr(self, "session"):
            return
        assert self.session.subscriptions == self.model
        assert len(self.model) <= MAX_SUBSCRIPTIONS and self.hub.demand_count() <= MAX_STREAMS
        assert self.hub.demand() == frozenset(self.model | set(OTHERS))


NativeMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=25)
TestNativeMachine = NativeMachine.TestCase
