"""Luzia's client side, pure: which channels to subscribe on which connection, what to send on one
connection, and what the server's errors mean for it.

Owns: the subscription plan (`Planner`, kept incrementally: a change costs what it changes; the
full planner it is tested against, from all needs at once, is tests/providers/luzia/reference_planner.py),
the per-connection record of what was sent and confirmed (`Subscriptions`), the mapping of Luzia's
connection-level errors to the reconnect loop's errors, and the SDKs' URL rule.
Never: does I/O, reads a clock, or emits events (the adapter does).

Planning rules, in order (both planners keep them):
1. An exchange goes exchange-wide (`ticker:{exchange}`, one subscription) when a whole-exchange
   stream is wanted, or when `threshold` or more of its symbols are wanted.
2. When the channels exceed `connections × subscriptions`, exchanges with the most symbol
   channels collapse to their exchange-wide channel first, only as far as needed to fit.
3. What does not fit even so is unserved (reported, never silently lost); what is subscribed
   already stays.
4. Assignment is stable: a channel stays on its connection; a new channel fills the connections in
   use (lowest first) before a new one opens; when a whole connection can be freed (more in use
   than `ceil(channels / subscriptions)`), the least-filled one is emptied into the others.

The incremental `Planner` keeps each exchange in exactly one shape: nothing wanted, refused
(`ticker:{exchange}` was refused: all its needs are unserved), exchange-wide, symbol channels all
placed, or waiting (its channels do not fit: all unserved, none placed). A waiting exchange exists
only while every subscription is in use; as room frees up, waiting exchanges are placed oldest
first (exchange-wide if their symbols do not all fit). Costs: adding or removing one need is
O(connections) plus the channels of its own exchange that change shape; the capacity-bound paths
(collapsing to fit, placing waiting exchanges) look only at exchanges with two or more symbol
channels. The one full re-fit, O(planned channels), is `lower_limit`: the server allows fewer
subscriptions per connection than the tier says (rare: once per lesson learned). An exchange that
collapsed to fit goes back to symbol channels when one of its own needs changes and there is room.
"""

from __future__ import annotations

import math
import re
from collections import Counter, deque
from collections.abc import Iterable, Sequence, Set
from typing import Final

from providers.common.errors import AuthRejected, ProviderError
from providers.luzia import wire
from providers.luzia.grammar import Need, TierLimits, format_channel, parse_channel

#: Channels per subscribe frame: keeps frames small on Enterprise (500 per connection).
SUBSCRIBE_BATCH: Final = 50
#: Answers one connection may be owed at once: many times a connection's subscriptions (500 on
#: Enterprise), so only a server that stopped answering altogether ever reaches it.
MAX_AWAITED_ANSWERS: Final = 8192
DEFAULT_URL: Final = "wss://api.luzia.dev/v1/ws"


def websocket_url(base: str) -> str:
    """Luzia's SDK rule: a REST base URL (`https://api.luzia.dev`) → its WebSocket URL
    (`wss://api.luzia.dev/v1/ws`); a ws:// or wss:// URL is used as given."""
    if base.startswith(("ws://", "wss://")):
        return base
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            return ws + base[len(http) :].rstrip("/") + "/v1/ws"
    raise ValueError(f"not an http(s) or ws(s) URL: {base!r}")


# ---- the incremental planner ------------------------------------------------------------------


class Planner:
    """The channels of each connection slot for the needs added so far; see the module header."""

    def __init__(self, limits: TierLimits, *, threshold: int | None) -> None:
        self._limits = limits
        self._threshold = threshold
        self._symbols: dict[str, set[str]] = {}  # wanted symbols per exchange (refused ones apart)
        self._refused_symbols: dict[str, set[str]] = {}  # wanted, but their channel was refused
        self._whole: set[str] = set()  # exchanges wanted whole
        self._refused: set[str] = set()  # channels the server refused (while wanted)
        self._wide: set[str] = set()  # exchanges served (or waiting) as exchange-wide
        self._collapsed: set[str] = set()  # wide only because their symbols did not fit
        self._planned: dict[str, set[str]] = {}  # placed symbol channels' symbols, per exchange
        self._multi: set[str] = set()  # exchanges with two or more placed symbol channels
        self._waiting: dict[str, None] = {}  # exchanges that do not fit, oldest first
        self._slots: list[set[str]] = [set() for _ in range(limits.connections)]
        self._slot_of: dict[str, int] = {}
        self._free = limits.connections * limits.subscriptions
        self._used = 0  # slots with at least one channel
        self._dirty: set[int] = set()
        self._touched: set[Need] = set()

    # ---- what callers read ----------------------------------------------------------------------

    @property
    def limits(self) -> TierLimits:
        return self._limits

    def slot(self, index: int) -> Set[str]:
        """The channels planned on one connection slot: a live view, never to be modified."""
        return self._slots[index]

    @property
    def connections(self) -> tuple[frozenset[str], ...]:
        """Every slot's channels (a copy: O(planned), for tests and the reference comparison)."""
        return tuple(frozenset(slot) for slot in self._slots)

    def serving(self, exchange: str, symbol: str | None) -> str | None:
        """The planned channel that delivers this need, if any."""
        if symbol is not None:
            channel = format_channel(exchange, symbol)
            if channel in self._slot_of:
                return channel
            if channel in self._refused:
                return None
        wide = format_channel(exchange)
        return wide if wide in self._slot_of else None

    @property
    def unserved(self) -> frozenset[str]:
        """The channels that would be needed but are refused or do not fit (O(unserved))."""
        out = set(self._refused)  # a refusal is forgotten with its need: these are all wanted
        for exchange in self._waiting:
            if exchange in self._wide:
                out.add(format_channel(exchange))
            else:
                out.update(format_channel(exchange, s) for s in self._symbols.get(exchange, ()))
        return frozenset(out)

    def changes(self) -> tuple[set[int], set[Need]]:
        """The slots whose channels changed and the needs whose serving channel may have changed,
        since the last call."""
        dirty, touched = self._dirty, self._touched
        self._dirty, self._touched = set(), set()
        return dirty, touched

    # ---- demand ---------------------------------------------------------------------------------

    def add(self, exchange: str, symbol: str | None) -> None:
        """A need is wanted (the caller counts its streams: called once per need)."""
        self._touched.add((exchange, symbol))
        if symbol is None:
            self._whole.add(exchange)
        else:
            self._symbols.setdefault(exchange, set()).add(symbol)
        if format_channel(exchange) in self._refused or exchange in self._wide:
            return  # refused: unserved, like all its needs; wide: served by it (or waits as it)
        if exchange in self._waiting:
            if self._wants_wide(exchange):  # it waits with its exchange, in the exchange's shape
                self._wide.add(exchange)
                self._touch_exchange(exchange)
            return
        if self._wants_wide(exchange):
            self._go_wide(exchange)
        elif symbol is not None:
            self._place_symbol(exchange, symbol)
        self._settle()

    def remove(self, exchange: str, symbol: str | None) -> None:
        """A need is no longer wanted; a refusal of its channel is forgotten with it."""
        self._touched.add((exchange, symbol))
        if symbol is None:
            self._whole.discard(exchange)
        elif symbol in self._refused_symbols.get(exchange, ()):
            _discard(self._refused_symbols, exchange, symbol)
            self._refused.discard(format_channel(exchange, symbol))
        else:
            _discard(self._symbols, exchange, symbol)
            if exchange not in self._wide and exchange not in self._waiting:
                self._unplace_symbol(exchange, symbol)
        self._reshape(exchange)
        self._settle()

    def exclude(self, channel: str) -> None:
        """The server refused this planned channel: never plan it again while it is wanted."""
        if channel not in self._slot_of:
            return  # not planned (any more): the answer to a subscribe sent before a move
        exchange, symbol = parse_channel(channel)
        self._refused.add(channel)
        if symbol is None:
            self._unplace(channel)
            self._wide.discard(exchange)
            self._collapsed.discard(exchange)
            self._touch_exchange(exchange)
        else:
            self._unplace_symbol(exchange, symbol)
            _discard(self._symbols, exchange, symbol)
            self._refused_symbols.setdefault(exchange, set()).add(symbol)
            self._touched.add((exchange, symbol))
        self._settle()

    def lower_limit(self, subscriptions: int, *, evict: Iterable[str] = ()) -> None:
        """Re-fit every slot to fewer subscriptions per connection (the one full re-fit). Each slot
        keeps what still fits, `evict` channels leaving first (the server refused them there);
        the rest is placed anew."""
        evicted = set(evict)
        self._limits = TierLimits(self._limits.connections, subscriptions)
        self._free = self._limits.connections * subscriptions
        self._slot_of = {}
        self._used = 0
        overflow: list[str] = []
        for index, slot in enumerate(self._slots):
            ordered = sorted(slot, key=lambda c: (c in evicted, c))
            slot.clear()
            for channel in ordered[:subscriptions]:
                self._put(channel, index)
            overflow += ordered[subscriptions:]
            self._dirty.add(index)
        for channel in overflow:  # first, so that the bookkeeping says what is really placed
            exchange, symbol = parse_channel(channel)
            if symbol is not None:
                self._unplan_symbol(exchange, symbol)
        for channel in overflow:
            self._refit(channel)
        self._settle()

    # ---- shapes of one exchange -----------------------------------------------------------------

    def _wants_wide(self, exchange: str) -> bool:
        if exchange in self._whole or exchange in self._collapsed:
            return True
        return self._threshold is not None and len(self._symbols.get(exchange, ())) >= self._threshold

    def _reshape(self, exchange: str) -> None:
        """After a need of `exchange` went: forget it, or narrow it back to symbol channels."""
        if not (self._symbols.get(exchange) or self._whole & {exchange} or self._refused_symbols.get(exchange)):
            self._forget(exchange)
            return
        if exchange not in self._wide or exchange in self._whole:
            return
        self._collapsed.discard(exchange)  # a change of its own: worth trying symbols again
        if not self._wants_wide(exchange):
            self._go_narrow(exchange)

    def _forget(self, exchange: str) -> None:
        wide = format_channel(exchange)
        if wide in self._slot_of:
            self._unplace(wide)
        self._refused.discard(wide)
        self._wide.discard(exchange)
        self._collapsed.discard(exchange)
        self._waiting.pop(exchange, None)

    def _go_wide(self, exchange: str) -> None:
        """Replace the exchange's symbol channels (placed or waiting) with its exchange-wide one."""
        for symbol in list(self._planned.get(exchange, ())):
            self._unplace_symbol(exchange, symbol)
        self._wide.add(exchange)
        self._touch_exchange(exchange)
        if exchange in self._waiting:
            return  # it waits as exchange-wide now: one subscription when room comes
        if not self._place(format_channel(exchange)) and not self._make_room_for(format_channel(exchange)):
            self._waiting[exchange] = None

    def _go_narrow(self, exchange: str) -> None:
        """Back to symbol channels, if they all fit (else it stays wide, as collapsed)."""
        symbols = sorted(self._symbols.get(exchange, ()))
        wide = format_channel(exchange)
        if exchange in self._waiting:
            self._wide.discard(exchange)  # waits as symbols now
        elif self._free + 1 >= len(symbols):
            self._unplace(wide)
            self._wide.discard(exchange)
            for symbol in symbols:
                self._place_symbol(exchange, symbol)
        else:
            self._collapsed.add(exchange)
            return
        self._touch_exchange(exchange)

    def _collapse(self, exchange: str) -> None:
        self._collapsed.add(exchange)
        self._go_wide(exchange)

    # ---- placing ----------------------------------------------------------------------------

    def _place_symbol(self, exchange: str, symbol: str) -> None:
        """Place one symbol channel of an exchange that is neither wide nor waiting; when every
        subscription is in use, collapse the biggest saver (rule 2), maybe this very exchange."""
        channel = format_channel(exchange, symbol)
        if self._place(channel):
            self._plan_symbol(exchange, symbol)
            return
        mine = len(self._planned.get(exchange, ())) + 1  # its symbol channels, this one included
        other = self._biggest_saver(exclude=exchange)
        theirs = len(self._planned[other]) if other is not None else 0
        if mine >= 2 and (mine > theirs or (mine == theirs and other is not None and exchange < other)):
            self._collapse(exchange)
        elif other is not None:
            self._collapse(other)  # frees at least one subscription: it had two or more
            placed = self._place(channel)
            assert placed, "collapsing an exchange freed no room"
            self._plan_symbol(exchange, symbol)
        else:
            self._waiting[exchange] = None

    def _make_room_for(self, channel: str) -> bool:
        """Collapse the biggest saver to place `channel`; False if nothing can collapse."""
        other = self._biggest_saver(exclude=parse_channel(channel).exchange)
        if other is None:
            return False
        self._collapse(other)
        return self._place(channel)

    def _biggest_saver(self, *, exclude: str) -> str | None:
        candidates = [e for e in self._multi if e != exclude]
        return min(candidates, key=lambda e: (-len(self._planned[e]), e), default=None)

    def _refit(self, channel: str) -> None:
        """Place again a channel that `lower_limit` took out of its slot."""
        exchange, symbol = parse_channel(channel)
        if symbol is None:
            if not self._place(channel) and not self._make_room_for(channel):
                self._waiting[exchange] = None
                self._touch_exchange(exchange)
            return
        self._touched.add((exchange, symbol))
        if exchange not in self._wide and exchange not in self._waiting:  # else: covered that way
            self._place_symbol(exchange, symbol)

    def _settle(self) -> None:
        """After any change: place waiting exchanges while there is room (collapsing others if
        that makes room), then free a whole connection if one can be."""
        while self._waiting:
            exchange = next(iter(self._waiting))
            if self._free == 0 and not self._collapse_one(exclude=exchange):
                break
            del self._waiting[exchange]
            self._touch_exchange(exchange)
            symbols = sorted(self._symbols.get(exchange, ()))
            if self._wants_wide(exchange) or len(symbols) > self._free:
                if not self._wants_wide(exchange):
                    self._collapsed.add(exchange)  # wide only because its symbols do not fit
                self._wide.add(exchange)
                self._place(format_channel(exchange))
            else:
                self._wide.discard(exchange)
                for symbol in symbols:
                    self._place(format_channel(exchange, symbol))
                    self._plan_symbol(exchange, symbol)
        self._compact()

    def _collapse_one(self, *, exclude: str) -> bool:
        other = self._biggest_saver(exclude=exclude)
        if other is not None:
            self._collapse(other)
        return other is not None

    def _compact(self) -> None:
        """Rule 4: empty the least-filled slots while more are in use than the channels need."""
        per = self._limits.subscriptions
        placed = len(self._slot_of)
        if not per or self._used <= math.ceil(placed / per):
            return  # the usual case, in O(1)
        used = [i for i, s in enumerate(self._slots) if s]
        while len(used) > math.ceil(placed / per):
            victim = min(used, key=lambda i: (len(self._slots[i]), -i))
            used.remove(victim)
            for channel in sorted(self._slots[victim]):
                self._unplace(channel)
                placed_again = self._place(channel, among=used)
                assert placed_again, "compaction moved a channel where there was no room"

    # ---- slots ----------------------------------------------------------------------------------

    def _place(self, channel: str, among: Sequence[int] | None = None) -> bool:
        """Put `channel` in the lowest slot in use with room, else the lowest empty slot."""
        if self._free == 0:
            return False
        per = self._limits.subscriptions
        empty = None
        for index in among if among is not None else range(len(self._slots)):
            size = len(self._slots[index])
            if size and size < per:
                self._put(channel, index)
                return True
            if not size and empty is None:
                empty = index
        if empty is None:
            return False
        self._put(channel, empty)
        return True

    def _put(self, channel: str, index: int) -> None:
        if not self._slots[index]:
            self._used += 1
        self._slots[index].add(channel)
        self._slot_of[channel] = index
        self._free -= 1
        self._dirty.add(index)

    def _unplace(self, channel: str) -> None:
        index = self._slot_of.pop(channel)
        self._slots[index].discard(channel)
        if not self._slots[index]:
            self._used -= 1
        self._free += 1
        self._dirty.add(index)

    def _plan_symbol(self, exchange: str, symbol: str) -> None:
        planned = self._planned.setdefault(exchange, set())
        planned.add(symbol)
        if len(planned) >= 2:
            self._multi.add(exchange)

    def _unplace_symbol(self, exchange: str, symbol: str) -> None:
        channel = format_channel(exchange, symbol)
        if channel in self._slot_of:
            self._unplace(channel)
        self._unplan_symbol(exchange, symbol)

    def _unplan_symbol(self, exchange: str, symbol: str) -> None:
        _discard(self._planned, exchange, symbol)
        if len(self._planned.get(exchange, ())) < 2:
            self._multi.discard(exchange)

    def _touch_exchange(self, exchange: str) -> None:
        """Every need of the exchange may be served by another channel now."""
        touched = self._touched
        touched.add((exchange, None))
        touched.update((exchange, s) for s in self._symbols.get(exchange, ()))
        touched.update((exchange, s) for s in self._refused_symbols.get(exchange, ()))


def _discard(index: dict[str, set[str]], exchange: str, symbol: str) -> None:
    symbols = index.get(exchange)
    if symbols is not None:
        symbols.discard(symbol)
        if not symbols:
            del index[exchange]


# ---- one connection -----------------------------------------------------------------------------


class Subscriptions:
    """What was sent and confirmed on one connection.

    Luzia answers every channel of every request, in order, with `subscribed` / `unsubscribed` or
    an error that does not reliably name the channel. So the connection keeps the answers it is
    owed, in order (`awaiting`): an error answers the head of that queue. An error that answers an
    unsubscribe (Luzia refuses to unsubscribe a channel it does not know) blames nobody; one that
    answers a subscribe blames exactly that channel, never another request's.
    """

    def __init__(self) -> None:
        self.sent: dict[str, None] = {}  # channels we want subscribed here (ordered set)
        # What the server counts against our limit: only channels we asked for (a server that
        # acknowledges what nobody sent cannot grow it), so at most the slot's subscriptions.
        self.confirmed: set[str] = set()
        # The answers owed, oldest first, at most MAX_AWAITED_ANSWERS (a server that answers
        # nothing cannot grow it; the oldest goes first); `_owed` counts them, so that an answer
        # nobody is owed costs O(1), not a walk of the queue.
        self.awaiting: deque[tuple[str, str]] = deque()
        self._owed: Counter[tuple[str, str]] = Counter()

    def sync(self, desired: Set[str]) -> list[wire.Subscribe | wire.Unsubscribe]:
        """The messages that make the connection carry `desired`: unsubscribes first (to free
        room), then subscribes, in batches; recorded as sent. Luzia answers in order, so by the
        time it answers the subscribes, the unsubscribes no longer count against the limit."""
        drop = [c for c in self.sent if c not in desired]
        add = sorted(c for c in desired if c not in self.sent)
        messages: list[wire.Subscribe | wire.Unsubscribe] = []
        for batch in _batches(drop):
            for channel in batch:
                del self.sent[channel]
                self.confirmed.discard(channel)
                self._owe("unsubscribe", channel)
            messages.append(wire.Unsubscribe(channels=batch))
        for batch in _batches(add):
            for channel in batch:
                self.sent[channel] = None
                self._owe("subscribe", channel)
            messages.append(wire.Subscribe(channels=batch))
        return messages

    def subscribed(self, channel: str) -> None:
        self._answered("subscribe", channel)
        if channel in self.sent:
            self.confirmed.add(channel)

    def unsubscribed(self, channel: str) -> bool:
        """An `unsubscribed` answer. True when nobody asked for it and the channel is still wanted
        here (the server dropped it on its own): it is forgotten as sent, so the next `sync`
        asks for it again instead of believing it carried forever."""
        solicited = ("unsubscribe", channel) in self._owed
        self._answered("unsubscribe", channel)
        self.confirmed.discard(channel)
        if solicited or channel not in self.sent:
            return False
        del self.sent[channel]
        return True

    def blame(self, text: str | None) -> str | None:
        """The subscribe an error answers (the head of the answers owed), or None. An error that
        answers an unsubscribe is consumed here: that channel is gone either way."""
        if not self.awaiting:
            return None
        operation, channel = self.awaiting[0]
        if operation == "unsubscribe":
            self._pay(self.awaiting.popleft())
            self.confirmed.discard(channel)
            return None
        return channel

    def refused(self, channel: str) -> None:
        """The server said no to this channel: it is not subscribed here."""
        self._answered("subscribe", channel)
        self.sent.pop(channel, None)

    def _owe(self, operation: str, channel: str) -> None:
        if len(self.awaiting) >= MAX_AWAITED_ANSWERS:
            self._pay(self.awaiting.popleft())
        self.awaiting.append((operation, channel))
        self._owed[operation, channel] += 1

    def _pay(self, owed: tuple[str, str]) -> None:
        left = self._owed[owed] - 1
        if left:
            self._owed[owed] = left
        else:
            del self._owed[owed]

    def _answered(self, operation: str, channel: str) -> None:
        """Drop the answer owed for (operation, channel): the head, unless the server skipped one
        (then the walk of the queue, only for an answer really owed)."""
        owed = (operation, channel)
        if self.awaiting and self.awaiting[0] == owed:
            self._pay(self.awaiting.popleft())
        elif owed in self._owed:
            self.awaiting.remove(owed)
            self._pay(owed)


def _batches(channels: list[str]) -> list[list[str]]:
    return [channels[i : i + SUBSCRIBE_BATCH] for i in range(0, len(channels), SUBSCRIBE_BATCH)]


#: What of a provider's free text (an error message) is kept for the log line: enough to read,
#: bounded so that a provider echoing megabytes costs neither the redaction nor the log.
MAX_DETAIL_LENGTH: Final = 300
#: The shape of an error code worth naming in our own wording; anything else is not a code.
_CODE: Final = re.compile(r"[A-Z][A-Z0-9_]{0,39}")


def error_code(message: wire.Error) -> str:
    """The error's code as our texts may name it: Luzia's own codes, and any new one of their
    shape (providers add codes); free text in the code field is not repeated anywhere."""
    code = message.code
    return code if code in wire.ERROR_CODES or (code.isascii() and _CODE.fullmatch(code)) else "UNRECOGNISED_CODE"


def detail(message: wire.Error) -> str | None:
    """The provider's free text of an error, bounded (the caller redacts it before logging)."""
    text = message.message
    if not isinstance(text, str) or not text:
        return None
    return text if len(text) <= MAX_DETAIL_LENGTH else text[:MAX_DETAIL_LENGTH] + "…"


#: Our wording for the connection-level errors; the provider's text goes to the log only.
REFUSED_KEY: Final = "the provider refused the key or plan (CONNECTION_REJECTED)"
CONNECTION_LIMIT: Final = "the provider's connection limit is reached (CONNECTION_REJECTED)"
SHUTTING_DOWN: Final = "the provider is shutting down (SERVER_SHUTDOWN)"


def session_error(message: wire.Error) -> Exception | None:
    """The exception that ends the session for this error, or None if the session goes on. Its
    message is our own wording; what Luzia said is its `detail` (redacted where it is logged).

    CONNECTION_REJECTED means a bad key or tier (stop hammering) or the connection limit (back off
    and retry); only the message text tells them apart. SERVER_SHUTDOWN: reconnect shortly.
    """
    if message.code == "CONNECTION_REJECTED":
        said = detail(message)
        if said is not None and "limit" in said.lower():
            return ProviderError(CONNECTION_LIMIT, detail=said)
        return AuthRejected(REFUSED_KEY, detail=said)
    if message.code == "SERVER_SHUTDOWN":
        return ProviderError(SHUTTING_DOWN, detail=detail(message))
    return None
