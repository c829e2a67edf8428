"""What the gateway itself says about credentials and loopback: the banner, /healthz with local
keys, clear-text provider URLs, and what counts as loopback."""

import logging

import msgspec
import pytest

from gateway.app import GatewayApp, _welcome, cleartext_to_remote
from gateway.config import is_loopback, parse
from gateway.context import GatewayContext
from gateway.hub import Hub
from gateway.server import HttpRequest
from providers.common.redact import url_without_credentials

KEYED = parse(
    '[server]\nlocal_keys_env = "MDG_LOCAL"\n[providers.ca]\nkind = "coinapi"\nemulate = true\n[routes]\ntrade = ["ca"]\n'
)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("LOCALHOST", True), ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
     ("[::1]", True), ("127.0.0.1.evil.example", False), ("127.evil", False), ("10.0.0.1", False),
     ("0.0.0.0", False), ("::", False), ("localhost.evil.example", False), ("", False)],
)
def test_is_loopback_recognises_only_loopback_addresses_and_localhost(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("url", "shown"),
    [("wss://ws.coinapi.io/APIKEY-73034021-THIS-IS-SECRET/v1/", "wss://ws.coinapi.io/APIKEY-***/v1/"),
     ("wss://ws.coinapi.io/v1/?apikey=SECRET&x=1", "wss://ws.coinapi.io/v1/?apikey=***&x=1"),
     ("wss://user:SECRET@api.luzia.dev/v1/ws", "wss://***@api.luzia.dev/v1/ws"),
     ("wss://api.luzia.dev/v1/ws?token=SECRET", "wss://api.luzia.dev/v1/ws?token=***")],
)
def test_provider_urls_are_shown_without_their_credentials(url, shown):
    assert url_without_credentials(url) == shown


def test_the_banner_never_prints_a_key_written_into_a_provider_url():
    config = parse(
        '[providers.ca]\nkind = "coinapi"\nurl = "wss://ws.coinapi.io/APIKEY-SECRETSECRET/v1/?apikey=SECRETSECRET"\n'
        'api_key_env = "MDG_KEY"\n[routes]\ntrade = ["ca"]\n'
    )

    class Shown:
        host, port = "127.0.0.1", 8765

        def url(self, path="/stream"):
            return f"ws://127.0.0.1:8765{path}"

    banner = _welcome(Shown(), config)  # type: ignore[arg-type]
    assert "SECRET" not in banner
    assert "wss://ws.coinapi.io/APIKEY-***/v1/?apikey=***" in banner


@pytest.mark.parametrize(
    ("url", "warned"),
    [("ws://feed.example.com/v1/", True), ("ws://10.1.2.3:9000/", True), ("wss://feed.example.com/v1/", False),
     ("ws://127.0.0.1:9000/", False), ("ws://localhost/", False), (None, False)],
)
def test_cleartext_to_a_remote_provider_is_recognised(url, warned):
    assert cleartext_to_remote(url) is warned


def _app() -> GatewayApp:
    return GatewayApp(GatewayContext(KEYED, Hub(KEYED.routes), frozenset({"local-key-1"})))


def _get(path: str, headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> HttpRequest:
    return HttpRequest("GET", path, query or {}, {"host": "127.0.0.1", **(headers or {})})


async def test_healthz_without_a_local_key_tells_only_up_or_down():
    response = await _app().http(_get("/healthz"))
    assert response.status == 503  # no source added: nothing usable
    assert msgspec.json.decode(response.body) == {"status": "unavailable"}


@pytest.mark.parametrize(
    "request_",
    [_get("/healthz", {"authorization": "Bearer local-key-1"}), _get("/healthz", {"x-api-key": "local-key-1"}),
     _get("/healthz", query={"apikey": "local-key-1"})],
)
async def test_healthz_with_a_local_key_gives_the_detail(request_):
    body = msgspec.json.decode((await _app().http(request_)).body)
    assert {"status", "providers", "routes", "contained_errors", "clients_refused"} <= set(body)
    assert body["clients_refused"]["rate_limited"] == 0


async def test_healthz_with_a_wrong_local_key_gives_no_detail():
    body = msgspec.json.decode((await _app().http(_get("/healthz", {"authorization": "Bearer guess"}))).body)
    assert body == {"status": "unavailable"}


async def test_a_cleartext_remote_provider_url_warns_at_start(caplog):
    from gateway.app import run_gateway

    class Stop(Exception):
        pass

    async def no_upstream(config, nursery):
        raise Stop  # the warning comes before anything connects

    config = parse(
        '[providers.ca]\nkind = "coinapi"\nurl = "ws://feed.example.com/v1/"\napi_key_env = "MDG_KEY"\n[routes]\ntrade = ["ca"]\n'
    )
    stopped = False
    with caplog.at_level(logging.WARNING, logger="gateway.app"):
        try:
            await run_gateway(config, environ={"MDG_KEY": "k"}, upstream=no_upstream, listen=False)
        except* Stop:
            stopped = True
    assert stopped
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("providers.ca.url is ws://" in w and "clear text" in w for w in warnings)


def test_connection_caps_fit_the_file_descriptors_the_process_may_hold(caplog):
    import resource

    from gateway.app import RESERVED_DESCRIPTORS, fit_to_descriptors
    from gateway.config import Limits

    asked: list[tuple[int, int]] = []

    def refuse(which, limits):
        asked.append(limits)
        raise ValueError("not allowed")

    with caplog.at_level(logging.WARNING, logger="gateway.app"):
        fitted = fit_to_descriptors(Limits(max_connections=2048), lambda which: (1024, 1024), refuse)
    assert asked == [(1024, 1024)]  # tried to raise the soft limit up to the hard one
    assert fitted.max_connections == 1024 - RESERVED_DESCRIPTORS
    assert fitted.max_connections_per_address == 1024 - RESERVED_DESCRIPTORS
    assert "serving at most 768 connections" in caplog.text

    raised = fit_to_descriptors(Limits(max_connections=2048), lambda which: (1024, 65536), lambda which, limits: None)
    assert raised.max_connections == 2048  # the soft limit could be raised: nothing lowered
    unlimited = fit_to_descriptors(Limits(), lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert unlimited == Limits()
