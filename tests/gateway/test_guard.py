"""Who may use the port (pure policy): Host, Origin, the handshake, the request target, the caps."""

from collections import Counter

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.guard import (
    BAD_KEY,
    BAD_TARGET,
    BUSY,
    BUSY_ADDRESS,
    MAX_QUERY_FIELDS,
    NO_HOST,
    NOT_GET,
    NOT_UPGRADE,
    WRONG_HOST,
    WRONG_ORIGIN,
    WRONG_VERSION,
    ConnectionCount,
    Policy,
    Refusal,
    Target,
    check_handshake,
    parse_target,
)

POLICY = Policy.build("gw.lan", allowed_hosts=["box.example", "pinned.example:9000"],
                      allowed_origins=["https://App.example/"])
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
HANDSHAKE = {"connection": "keep-alive, Upgrade", "upgrade": "websocket", "sec-websocket-version": "13",
             "sec-websocket-key": KEY}


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8765", "localhost.", "127.0.0.1", "127.5.6.7:1", "[::1]",
                                  "[::1]:8765", "gw.lan", "GW.lan:8765", "box.example", "box.example:1",
                                  "pinned.example:9000"])
def test_loopback_the_configured_host_and_allowed_hosts_are_served(host):
    assert POLICY.check_host(host) is None


@pytest.mark.parametrize("host", ["evil.example:8765", "127.0.0.1.evil.example", "localhost.evil.example",
                                  "[::1", "[::1]x", "localhost:abc", "localhost:", "0x7f.0.0.1", "2130706433",
                                  "\uff4cocalhost", "\u212aox.example", "[::2]", "10.0.0.1", "pinned.example:9001",
                                  "user@localhost", ":8765"])
def test_any_other_host_is_refused_as_rebinding(host):
    assert POLICY.check_host(host) is WRONG_HOST
    assert WRONG_HOST.status == 421


def test_a_missing_host_is_a_bad_request():
    assert POLICY.check_host(None) is NO_HOST and POLICY.check_host("  ") is NO_HOST
    assert NO_HOST.status == 400


def test_a_configured_ipv6_host_is_served_in_brackets():
    policy = Policy.build("::2")
    assert policy.check_host("[::2]:8765") is None and policy.check_host("[::3]") is WRONG_HOST


@given(st.text(max_size=300))
@example("\u212a" * 5000)
@example("[" * 100_000)
def test_host_check_never_raises_and_never_serves_non_ascii(host):
    refusal = POLICY.check_host(host)
    assert refusal in (None, WRONG_HOST, NO_HOST)
    if refusal is None:
        assert host.isascii()


@pytest.mark.parametrize("origin", [None, "http://localhost", "http://localhost:3000", "https://127.0.0.1",
                                    "http://127.9.9.9:1", "http://[::1]:8080", "HTTP://LOCALHOST:3000/",
                                    "https://app.example", "https://APP.example/"])
def test_no_origin_loopback_origins_and_allowed_origins_are_served(origin):
    assert POLICY.check_origin(origin) is None


@pytest.mark.parametrize("origin", ["null", "", "http://evil.example", "https://localhost.evil.example",
                                    "http://127.0.0.1.nip.io", "file://", "http://localhost@evil.example",
                                    "ws://localhost", "http://localhost/path", "https://app.example:444",
                                    "http://app.example", "http://\u212a.example", "localhost"])
def test_every_other_origin_is_refused(origin):
    assert POLICY.check_origin(origin) is WRONG_ORIGIN
    assert WRONG_ORIGIN.status == 403


@given(st.text(max_size=300))
@example("http://" + "9" * 5000)
def test_origin_check_never_raises(origin):
    assert POLICY.check_origin(origin) in (None, WRONG_ORIGIN)


def test_a_valid_handshake_passes():
    assert check_handshake("GET", HANDSHAKE) is None


@pytest.mark.parametrize(("method", "change", "refusal"), [
    ("POST", {}, NOT_GET),
    ("HEAD", {}, NOT_GET),
    ("GET", {"sec-websocket-version": "8"}, WRONG_VERSION),
    ("GET", {"sec-websocket-version": ""}, WRONG_VERSION),
    ("GET", {"sec-websocket-key": ""}, BAD_KEY),
    ("GET", {"sec-websocket-key": "c2hvcnQ="}, BAD_KEY),  # 5 bytes, not 16
    ("GET", {"sec-websocket-key": "not base64 at all!!!!!!!"}, BAD_KEY),
    ("GET", {"sec-websocket-key": "\u212a" * 24}, BAD_KEY),
    ("GET", {"connection": "keep-alive"}, NOT_UPGRADE),
])
def test_each_handshake_fault_gets_its_own_status(method, change, refusal):
    assert check_handshake(method, {**HANDSHAKE, **change}) is refusal


def test_the_refusals_name_what_the_client_must_send():
    assert (NOT_GET.status, dict(NOT_GET.headers)) == (405, {"allow": "GET"})
    assert (WRONG_VERSION.status, dict(WRONG_VERSION.headers)) == (426, {"sec-websocket-version": "13"})
    assert BUSY.status == BUSY_ADDRESS.status == 503 and "retry-after" in dict(BUSY.headers)


def test_origin_form_targets_are_decoded():
    assert parse_target("/stream?format=msgpack&apikey=") == Target("/stream", {"format": "msgpack", "apikey": ""})
    assert parse_target("/v1/ticker/binance/BTC%2DUSDT") == Target("/v1/ticker/binance/BTC-USDT", {})
    assert parse_target("/caf%C3%A9") == Target("/café", {})


@pytest.mark.parametrize("target", ["http://[::1", "http://evil.example/stream", "%zz", "/%zz", "/a%2", "/a%00b",
                                    "/?a=%00", "/\x00", "*", "", "stream", "/%ff", "/?a=%ff",
                                    "/?" + "&".join(f"k{i}=v" for i in range(MAX_QUERY_FIELDS + 1))])
def test_every_other_target_is_a_bad_request(target):
    assert parse_target(target) is BAD_TARGET


@given(st.text(max_size=500))
@example("/" + "%" * 100_000)
@example("/?" + "a=1&" * 100_000)
def test_target_parsing_never_raises(target):
    result = parse_target(target)
    assert isinstance(result, Target) or result is BAD_TARGET
    if isinstance(result, Target):
        assert result.path.startswith("/") and "\x00" not in result.path


def test_connection_caps_in_total_and_per_address():
    count = ConnectionCount(max_total=3, max_per_address=2)
    assert [count.admit("a"), count.admit("a"), count.admit("a")] == [None, None, BUSY_ADDRESS]
    assert count.admit("b") is None
    assert count.admit("c") is BUSY
    count.release("a")
    assert count.admit("c") is None
    for address in ("a", "b", "c"):
        count.release(address)
    assert (count.total, count.by_address) == (0, {})


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c", None])), max_size=60))
def test_connection_count_matches_a_plain_model(ops):
    count, model = ConnectionCount(max_total=4, max_per_address=2), Counter()
    for admit, address in ops:
        if admit:
            refusal: Refusal | None = count.admit(address)
            expected = BUSY if sum(model.values()) >= 4 else BUSY_ADDRESS if model[address] >= 2 else None
            assert refusal is expected
            if refusal is None:
                model[address] += 1
        elif model[address]:
            count.release(address)
            model[address] -= 1
        assert count.total == sum(model.values())
        assert count.by_address == {k: v for k, v in model.items() if v}
