"""Who may use the port (pure policy): Host, Origin, the handshake, the request target, the caps."""

from collections import Counter

import h11
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from gateway.config import ServerConfig
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
from gateway.server import HttpRequest, Server

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


def _admitted(head: bytes):
    """A request head through h11 and the server's admission (the pure part of `Server`)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return "h11"  # answered with h11's status by the server
    if not isinstance(event, h11.Request):
        return "incomplete"
    result = Server(app=None, server=ServerConfig(allowed_origins=["https://app.example"]))._admit(event)
    assert isinstance(result, (HttpRequest, Refusal))
    return result


#: What h11 lets through in a header value (visible Latin-1), and in a request target (visible ASCII).
FIELD_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"),
                     max_size=30).map(lambda t: t.encode("latin-1"))
TARGET_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40).map(str.encode)


def _field(*likely: bytes) -> st.SearchStrategy[bytes | None]:
    """Mostly values that matter, sometimes absent, now and then raw bytes (h11 refuses most)."""
    common = st.sampled_from([None, *likely])
    return st.one_of(common, common, common, FIELD_TEXT)


HEADS = st.fixed_dictionaries({
    b"Host": _field(b"localhost", b"127.0.0.1:8765", b"[::1]", b"evil.example", b"localhost.evil", b"\xff"),
    b"Origin": _field(b"http://localhost:3000", b"https://app.example", b"null", b"https://evil.example"),
    b"Upgrade": _field(b"websocket", b"WebSocket", b"h2c"),
    b"Connection": _field(b"Upgrade", b"keep-alive, upgrade", b"close"),
    b"Sec-WebSocket-Key": _field(KEY.encode(), b"c2hvcnQ="),
    b"Sec-WebSocket-Version": _field(b"13", b"8", b" 13"),
})
_TARGET = st.sampled_from([b"/", b"/stream", b"/stream?format=msgpack&x=%41", b"*", b"http://[::1", b"%zz", b"/%ff",
                           b"/a%00", b"http://evil.example/stream"])
TARGETS = st.one_of(_TARGET, _TARGET, TARGET_TEXT, TARGET_TEXT.map(lambda t: b"/" + t), st.binary(max_size=40))


@given(TARGETS, st.sampled_from([b"GET", b"GET", b"POST", b"HEAD"]), HEADS)
@example(b"/" + b"[" * 10_000, b"GET", {b"Host": b"localhost"})
@example(b"/stream", b"GET", {b"Host": b"localhost", b"Origin": b"http://localhost@evil.example",
                              b"Upgrade": b"websocket", b"Connection": b"Upgrade",
                              b"Sec-WebSocket-Key": KEY.encode(), b"Sec-WebSocket-Version": b"13"})
def test_any_request_head_is_a_request_a_refusal_or_h11s_error(target, method, fields):
    head = method + b" " + target + b" HTTP/1.1\r\n"
    head += b"".join(k + b": " + v + b"\r\n" for k, v in fields.items() if v is not None) + b"\r\n"
    result = _admitted(head)
    event(type(result).__name__ if not isinstance(result, Refusal) else str(result.status))
    if isinstance(result, HttpRequest):  # served: only with a Host we answer to and, for upgrades, an allowed Origin
        assert Policy.build("127.0.0.1").check_host(result.headers["host"]) is None
        if result.headers.get("upgrade", "").lower() == "websocket":
            assert result.method == "GET" and result.headers["sec-websocket-version"].strip() == "13"
            assert Policy.build("127.0.0.1", allowed_origins=["https://app.example"]).check_origin(
                result.headers.get("origin")) is None
