"""The client side: wanted streams → upstream scope, kept incrementally; the one message that
moves a connection's server there (checked against the server's own scope model); pure additions
as a `subscribe` of just what was added."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from providers.coinapi import client, wire
from providers.coinapi.grammar import SymbolMapper
from providers.coinapi.server import Scope
from schemas.streams import StreamKey
from tests.providers.coinapi.support import plan_history

MAPPER = SymbolMapper()
SYMBOLS = [("binance", "BTC/USDT"), ("binance", "ETH/USDT"), ("okx", "BTC/USDT"), ("coinbase", "BTC/USD")]
UNIVERSE = [MAPPER.symbol_id(ex, sym) for ex, sym in SYMBOLS] + ["BINANCE_SPOT_SOL_USDT", "KRAKEN_SPOT_BTC_USD"]
keys = st.builds(
    lambda datatype, pick, wide: StreamKey(datatype, SYMBOLS[pick][0], None if wide else SYMBOLS[pick][1]),
    st.sampled_from(["trade", "quote", "ticker"]),
    st.integers(0, len(SYMBOLS) - 1),
    st.booleans(),
)
wanted_sets = st.frozensets(keys, max_size=6)


def _planner(*wanted: StreamKey) -> client.Planner:
    planner = client.Planner(MAPPER)
    planner.add(wanted)
    return planner


def test_the_target_maps_streams_to_exact_symbols_and_exchanges() -> None:
    scope = _planner(
        StreamKey("trade", "okx", "BTC/USDT"),
        StreamKey("ticker", "coinbase", "BTC/USD"),
        StreamKey("quote", "binance", None),
        StreamKey("trade", "binance", "ETH/USDT"),  # covered by the exchange-wide stream
        StreamKey("funding", "kraken", "BTC/USD"),  # not a data type this adapter serves
        StreamKey("trade", "okx", "not a symbol"),
    ).target()
    assert scope.data_types == {"trade", "quote", "ohlcv"}
    assert scope.symbol_ids == {"OKEX_SPOT_BTC_USDT$", "COINBASE_SPOT_BTC_USD$"}
    assert scope.exchange_ids == {"BINANCE"}
    assert scope.period_ids == {"1DAY"}
    assert scope.entries == 3


def test_a_hello_carries_key_heartbeat_and_every_filter() -> None:
    message = client.hello(_planner(StreamKey("ticker", "binance", "BTC/USDT")).target(), "k")
    assert message == wire.Hello(
        apikey="k",
        heartbeat=True,
        subscribe_data_type=["ohlcv", "quote", "trade"],
        subscribe_filter_symbol_id=["BINANCE_SPOT_BTC_USDT$"],
        subscribe_filter_period_id=["1DAY"],
    )


def _server_scope(messages: list[wire.ClientMessage]) -> Scope:
    scope = Scope()
    for message in messages:
        scope = scope.apply(message)
    return scope


def _delivered(scope: Scope) -> set[tuple[str, str]]:
    return {(t, s) for t in ("trade", "quote", "ohlcv") for s in UNIVERSE if scope.wants(t, s)}


@given(st.lists(wanted_sets, min_size=1, max_size=5))
def test_planned_messages_leave_the_server_with_exactly_the_target_scope(history: list[frozenset]) -> None:
    """Whatever sequence of wanted sets (applied by differences), the messages planned along the
    way leave the (server module's model of the) server delivering exactly what a fresh hello of
    the last target would."""
    planner, messages = plan_history(history, MAPPER)
    assert not any(isinstance(m, wire.Hello) and not m.subscribe_data_type for m in messages)
    final = planner.target()
    expected = set() if final.empty else _delivered(_server_scope([client.hello(final, "k")]))
    assert _delivered(_server_scope(messages)) == expected


def test_pure_additions_subscribe_just_the_added_and_emptying_unsubscribes() -> None:
    planner = client.Planner(MAPPER)
    link = planner.attach()
    assert planner.update(link, "k") is None and not planner.pending(link)  # nothing wanted, nothing sent
    btc, okx = StreamKey("trade", "binance", "BTC/USDT"), StreamKey("trade", "okx", "BTC/USDT")
    planner.add({btc})
    assert isinstance(planner.update(link, "k"), wire.Hello)
    assert not planner.pending(link) and planner.update(link, "k") is None
    planner.add({okx})
    assert planner.pending(link)
    assert planner.update(link, "k") == wire.Subscribe(
        heartbeat=True, subscribe_data_type=["trade"], subscribe_filter_symbol_id=["OKEX_SPOT_BTC_USDT$"]
    )
    planner.add({StreamKey("trade", "binance", None)})  # the exchange: its symbols are redundant, not removed
    assert planner.update(link, "k") == wire.Subscribe(
        heartbeat=True, subscribe_data_type=["trade"], subscribe_filter_exchange_id=["BINANCE"]
    )
    assert link.entries == 3
    planner.remove({btc})  # under the exchange filter the server has: nothing to do
    assert planner.update(link, "k") is None
    planner.remove({okx})  # a removal the server would notice: replace the scope
    message = planner.update(link, "k")
    assert isinstance(message, wire.Hello) and message.subscribe_filter_exchange_id == ["BINANCE"]
    assert message.subscribe_filter_symbol_id is None and link.entries == 1
    planner.remove({StreamKey("trade", "binance", None)})
    assert planner.update(link, "k") == wire.Unsubscribe(subscribe_data_type=["trade"], subscribe_filter_exchange_id=["BINANCE"])
    assert planner.update(link, "k") is None and link.entries == 0


def test_emptying_a_symbol_scope_unsubscribes_what_was_sent() -> None:
    planner = client.Planner(MAPPER)
    link = planner.attach()
    btc = StreamKey("trade", "binance", "BTC/USDT")
    planner.add({btc})
    planner.update(link, "k")
    planner.remove({btc})
    assert planner.update(link, "k") == wire.Unsubscribe(
        subscribe_data_type=["trade"], subscribe_filter_symbol_id=["BINANCE_SPOT_BTC_USDT$"]
    )


def test_an_addition_and_its_removal_before_anything_is_sent_cost_no_message() -> None:
    planner = client.Planner(MAPPER)
    link = planner.attach()
    planner.add({StreamKey("trade", "binance", "BTC/USDT")})
    planner.update(link, "k")
    eth = StreamKey("trade", "binance", "ETH/USDT")
    planner.add({eth})
    planner.remove({eth})
    assert planner.update(link, "k") is None


def test_a_new_data_type_replaces_the_scope() -> None:
    planner = client.Planner(MAPPER)
    link = planner.attach()
    planner.add({StreamKey("trade", "binance", "BTC/USDT")})
    planner.update(link, "k")
    planner.add({StreamKey("quote", "okx", "BTC/USDT")})
    message = planner.update(link, "k")
    assert isinstance(message, wire.Hello) and message.subscribe_data_type == ["quote", "trade"]


def test_each_connection_is_brought_up_to_date_on_its_own() -> None:
    planner = client.Planner(MAPPER)
    old = planner.attach()
    planner.add({StreamKey("trade", "binance", "BTC/USDT")})
    planner.update(old, "k")
    new = planner.attach()  # a make-before-break replacement
    planner.add({StreamKey("trade", "okx", "BTC/USDT")})
    assert isinstance(planner.update(new, "k"), wire.Hello)  # the full scope, as a fresh server needs
    assert isinstance(planner.update(old, "k"), wire.Subscribe)  # only what it lacks
    planner.detach(old)
    planner.add({StreamKey("trade", "coinbase", "BTC/USD")})
    assert planner.update(new, "k") == wire.Subscribe(
        heartbeat=True, subscribe_data_type=["trade"], subscribe_filter_symbol_id=["COINBASE_SPOT_BTC_USD$"]
    )


def _bring_up_to_date(planner: client.Planner, link: client.LinkScope, apikey: str = "k") -> list[wire.ClientMessage]:
    messages = []
    while planner.pending(link) and (message := planner.update(link, apikey)) is not None:
        messages.append(message)
        assert len(messages) < 100, "the planner does not converge"
    return messages


def test_one_change_among_many_wanted_costs_state_proportional_to_it() -> None:
    """The work of one added key is bounded by what it adds: a pending `subscribe` of one filter,
    never a rebuilt scope (the lead's bench script times it; here the state says it)."""
    planner = client.Planner(MAPPER)
    link = planner.attach()
    planner.add({StreamKey("trade", "binance", f"C{i}/USDT") for i in range(4_000)})
    _bring_up_to_date(planner, link)
    planner.add({StreamKey("trade", "binance", "NEW/USDT")})
    assert link.added_symbols == {"BINANCE_SPOT_NEW_USDT$"} and not link.replace
    message = planner.update(link, "k")
    assert isinstance(message, wire.Subscribe) and message.subscribe_filter_symbol_id == ["BINANCE_SPOT_NEW_USDT$"]


# ---------------------------------------------------------------------------- CoinAPI's limits


def _size(message: wire.ClientMessage) -> int:
    return len(wire.encode_client(message).encode())


def test_a_scope_too_big_for_one_hello_is_a_hello_then_subscribes_each_within_the_size_limit() -> None:
    planner = client.Planner(MAPPER)
    link = planner.attach()
    wanted = {StreamKey("trade", ex, f"C{i}/USDT") for ex in ("binance", "kraken", "okx") for i in range(1_600)}
    assert planner.add(wanted) == []
    messages = _bring_up_to_date(planner, link, apikey="k" * 300)
    assert isinstance(messages[0], wire.Hello) and all(isinstance(m, wire.Subscribe) for m in messages[1:])
    assert len(messages) >= 2 and max(map(_size, messages)) <= client.MAX_MESSAGE_BYTES
    target = planner.target()
    assert _sent(messages) == (set(target.symbol_ids), set(target.exchange_ids)) and len(target.symbol_ids) == 4_800
    assert {m.subscribe_data_type[0] for m in messages} == {"trade"}
    assert not planner.pending(link) and link.entries == 4_800


def _sent(messages: list[wire.ClientMessage]) -> tuple[set[str], set[str]]:
    """(symbol filters, exchange filters) of every message, together."""
    symbols = {s for m in messages for s in m.subscribe_filter_symbol_id or ()}
    return symbols, {e for m in messages for e in m.subscribe_filter_exchange_id or ()}


def test_beyond_the_symbol_filter_limit_the_largest_exchanges_go_exchange_wide() -> None:
    planner = client.Planner(MAPPER)
    link = planner.attach()
    planner.add({StreamKey("trade", "binance", f"C{i}/USDT") for i in range(4_000)})
    planner.add({StreamKey("trade", "kraken", f"C{i}/USDT") for i in range(2_000)})
    planner.add({StreamKey("trade", "okx", f"C{i}/USDT") for i in range(100)})
    target = planner.target()
    assert target.exchange_ids == {"BINANCE"} and len(target.symbol_ids) == 2_100
    messages = _bring_up_to_date(planner, link)
    assert max(map(_size, messages)) <= client.MAX_MESSAGE_BYTES
    assert link.exchange_ids == {"BINANCE"} and len(link.symbol_ids) == 2_100
    # More symbols, past the limit: the next message is a hello that collapses what is largest now.
    planner.add({StreamKey("trade", "kraken", f"C{i}/USDT") for i in range(2_000, 5_000)})
    message = planner.update(link, "k")
    assert isinstance(message, wire.Hello) and message.subscribe_filter_exchange_id == ["KRAKEN"]
    assert len(link.symbol_ids) + len(link.added_symbols) == 4_100 <= client.MAX_SYMBOL_FILTERS


def test_a_key_that_cannot_fit_is_refused_and_never_planned() -> None:
    planner = client.Planner(MAPPER)
    link = planner.attach()
    many = [StreamKey("trade", f"ex{i}", None) for i in range(client.MAX_EXCHANGE_FILTERS)]
    assert planner.add(many) == []
    one_more, too_long = StreamKey("trade", "ex-one-more", "BTC/USDT"), StreamKey("trade", "x" * 40, None)
    known = StreamKey("quote", "ex7", "BTC/USDT")  # an exchange already named: fits
    assert planner.add([one_more, too_long, known]) == [one_more, too_long]
    messages = _bring_up_to_date(planner, link)
    sent = wire.encode_client(messages[0])
    assert "EX-ONE-MORE" not in sent and "XXXX" not in sent and "EX7_SPOT_BTC_USDT" not in sent  # under EX7
    assert max(map(_size, messages)) <= client.MAX_MESSAGE_BYTES
    planner.remove([one_more, too_long])  # refused keys leave without a trace
    assert not planner.pending(link)


def test_emptying_a_big_scope_unsubscribes_it_in_pieces_within_the_size_limit() -> None:
    planner = client.Planner(MAPPER)
    link = planner.attach()
    wanted = {StreamKey("trade", "binance", f"C{i}/USDT") for i in range(4_000)}
    planner.add(wanted)
    _bring_up_to_date(planner, link)
    planner.remove(wanted)
    messages = _bring_up_to_date(planner, link)
    assert len(messages) >= 2 and all(isinstance(m, wire.Unsubscribe) for m in messages)
    assert max(map(_size, messages)) <= client.MAX_MESSAGE_BYTES
    assert sum(len(m.subscribe_filter_symbol_id or ()) for m in messages) == 4_000 and link.empty


SMALL = client.Limits(max_message_bytes=4096, max_symbol_filters=3, max_exchange_filters=3)
EXCHANGES = ["binance", "okx", "coinbase", "kraken", "bitstamp"]
small_keys = st.builds(
    lambda ex, i, wide: StreamKey("trade", ex, None if wide else f"C{i}/USDT"),
    st.sampled_from(EXCHANGES), st.integers(0, 5), st.booleans(),
)


@given(st.lists(st.frozensets(small_keys, max_size=12), min_size=1, max_size=5))
def test_whatever_is_wanted_every_message_fits_and_every_accepted_stream_is_delivered(history) -> None:
    planner = client.Planner(MAPPER, SMALL)
    link = planner.attach()
    wanted: frozenset[StreamKey] = frozenset()
    refused: set[StreamKey] = set()
    messages: list[wire.ClientMessage] = []
    for target in history:
        planner.remove(wanted - target)
        refused -= wanted - target
        refused.update(planner.add(target - wanted))
        wanted = target
        messages += _bring_up_to_date(planner, link)
    assert all(_size(m) <= SMALL.max_message_bytes for m in messages)
    assert len({k.exchange for k in wanted - refused}) <= SMALL.max_exchange_filters
    assert not planner.pending(link)
    scope = _server_scope(messages)
    for key in wanted - refused:
        ids = [MAPPER.symbol_id(key.exchange, f"C{i}/USDT") for i in range(6)] if key.symbol is None else [
            MAPPER.symbol_id(key.exchange, key.symbol)]
        assert all(scope.wants("trade", sid) for sid in ids), key


def test_short_ids_are_split_by_count_as_well_as_by_bytes() -> None:
    planner = client.Planner(MAPPER)
    link = planner.attach()
    planner.add({StreamKey("trade", "x", f"C{i}/U") for i in range(4_500)})  # `X_SPOT_C1_U$`: ~15 bytes each
    messages = _bring_up_to_date(planner, link)
    items = [len(m.subscribe_filter_symbol_id or ()) for m in messages]
    assert sum(items) == 4_500 and max(items) < client.MAX_MESSAGE_ITEMS <= client.MAX_MESSAGE_BYTES // 15
    assert max(map(_size, messages)) <= client.MAX_MESSAGE_BYTES


def test_the_scope_stays_inside_what_a_server_holds_per_data_type() -> None:
    """A server counts a scope's filters once per data type: ticker and book streams (trade,
    quote, ohlcv, book50) quadruple them, so 4,900 symbol filters would not fit 16,384 items."""
    planner = client.Planner(MAPPER)
    link = planner.attach()
    planner.add({StreamKey(dt, ex, f"C{i}/U") for dt in ("ticker", "book") for ex in ("binance", "okx") for i in range(2_450)})
    messages = _bring_up_to_date(planner, link)
    scope = _server_scope(messages)
    assert len(scope.data_types) == 4 and scope.size <= client.MAX_SCOPE_ITEMS
    assert link.exchange_ids == {"BINANCE"} and len(link.symbol_ids) == 2_450  # 4,900 < 5,000 symbols, yet collapsed
