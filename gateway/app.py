"""Assembles one running gateway from a config: emulators (where asked), adapters, hub, server.

`run_gateway` is a startable task: `handle = await nursery.start(run_gateway, config)` returns once
every piece is listening, with the bound port and the parts tests want to look at. The HTTP and
WebSocket routes of the one port live here; each dialect's behaviour lives in `gateway.dialects`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import trio

from gateway.config import Config, ConfigError, Limits, api_key, is_loopback, local_keys
from gateway.context import Endpoint, GatewayContext, bearer_token
from gateway.dialects.coinapi import CoinApiEndpoint
from gateway.dialects.luzia import LuziaEndpoint
from gateway.dialects.native import NativeEndpoint
from gateway.hub import Hub
from gateway.server import HttpRequest, HttpResponse, Server, json_response
from gateway.wspeer import Session, WebSocketPeer
from providers.base import Source
from providers.common.outliving import start_outliving_nursery
from providers.common.redact import url_without_credentials
from providers.common.transport import Connector
from providers.registry import KINDS, Emulator

log = logging.getLogger(__name__)

#: How long clients get to take their close frame at shutdown.
SHUTDOWN_GRACE_SECONDS = 2.0


@dataclass
class Gateway:
    """A running gateway, as `run_gateway` reports it."""

    host: str
    port: int
    hub: Hub
    server: Server
    adapters: dict[str, Source]
    emulators: dict[str, Emulator]
    cancel_scope: trio.CancelScope
    upstream: _Upstream
    started_at: float = field(default_factory=time.monotonic)

    def url(self, path: str = "/stream") -> str:
        return f"ws://{self.host}:{self.port}{path}"

    async def shutdown(self) -> None:
        """Close every client properly, then the upstream connections (while in-process emulators
        still answer their close handshakes), then everything else."""
        self.server.close_all(1001, "gateway shutting down")
        with trio.move_on_after(SHUTDOWN_GRACE_SECONDS):
            await self.server.wait_all_closed()
        await self.upstream.stop()
        self.cancel_scope.cancel()


class GatewayApp:
    """The routes of the gateway's port: each endpoint (dialect) claims its paths; health is ours."""

    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.hub = ctx.hub
        self.started_at = time.monotonic()
        # Order matters only where paths overlap: CoinAPI's `/` catches what no other endpoint claims.
        self.endpoints: list[Endpoint] = [NativeEndpoint(ctx), LuziaEndpoint(ctx), CoinApiEndpoint(ctx)]

    def websocket_session(self, peer: WebSocketPeer, request: HttpRequest) -> Session | HttpResponse:
        for endpoint in self.endpoints:
            if endpoint.serves_websocket(request.path):
                return endpoint.open_session(peer, request)
        return json_response(404, {"message": f"no WebSocket endpoint at {request.path}"})

    async def http(self, request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return json_response(405, {"message": "only GET is served"})
        if request.path == "/healthz":
            return self.healthz(request)
        for endpoint in self.endpoints:
            response = await endpoint.http(request)
            if response is not None:
                return response
        if request.path == "/":
            return json_response(200, {"service": "mdgateway", "endpoints": ENDPOINTS})
        return json_response(404, {"message": f"nothing at {request.path}"})

    def healthz(self, request: HttpRequest | None = None) -> HttpResponse:
        """Health. With local keys configured, a request without a valid key learns only up or down
        (`{"status": ...}` with 200/503, what a load balancer's probe needs); the detail — providers,
        routes, counts — needs a key, like every other endpoint."""
        providers = {name: source.health() for name, source in self.hub.sources.items()}
        serving = any(h.usable for h in providers.values())
        status = "serving" if serving else "unavailable"
        if self.ctx.local_keys is not None and not self.ctx.key_ok(_request_key(request)):
            return json_response(200 if serving else 503, {"status": status})
        body = {
            "status": status,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "routes": self.hub.serving,
            "subscribed_clients": self.hub.client_count(),
            "streams": self.hub.demand_count(),
            "events_in": self.hub.events_in,
            "events_unrouted": self.hub.events_unrouted,  # from a provider not serving that data type now
            "contained_errors": self.hub.failures.counts,  # codec/delivery/tap errors kept from the sources
            "clients_refused": dataclasses.asdict(self.ctx.counters),  # malformed, rate-limited, over-cap, ...
            "providers": providers,
        }
        return json_response(200 if serving else 503, body)


def _request_key(request: HttpRequest | None) -> str | None:
    """A local key as any endpoint accepts it: `Authorization: Bearer`, `X-API-Key` or `?apikey=`."""
    if request is None:
        return None
    return bearer_token(request) or request.headers.get("x-api-key") or request.query.get("apikey")


ENDPOINTS = {
    "/stream": "native normalized stream (WebSocket; ?format=msgpack for MessagePack)",
    "/v1/ws": "Luzia-compatible WebSocket (ticker channels)",
    "/v1/ticker/{exchange}/{BASE-QUOTE}, /v1/tickers/{exchange}, /v1/tickers": "Luzia-compatible REST tickers",
    "/, /v1, /v1/, /APIKEY-<key>": "CoinAPI-compatible WebSocket (hello protocol)",
    "/healthz": "health of every provider (HTTP GET)",
}


async def run_gateway(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    environ: dict[str, str] | None = None,
    announce: Callable[[str], None] | None = None,
    upstream: UpstreamFactory | None = None,
    listen: bool = True,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until cancelled. Keys (provider and local) are read first, so a missing one fails
    before anything starts. `upstream` says how providers are reached (default: emulators on
    loopback TCP, real providers over the network); with `listen` False no port is opened and
    clients are handed to `gateway.server.handle_stream` directly (tests over memory streams)."""
    keys = {name: api_key(name, provider, environ) for name, provider in config.providers.items()}
    for name, provider in config.providers.items():
        if cleartext_to_remote(provider.url if not provider.emulate else None):
            log.warning(
                "providers.%s.url is ws:// to a host that is not loopback: the API key travels in clear text (use wss://)", name
            )
    clients_keys = local_keys(config, environ)
    host = host or config.server.host
    if not is_loopback(host) and not config.server.local_keys_env:
        raise ConfigError(f"--host {host} is not loopback; set server.local_keys_env in a config file first")
    port = config.server.port if port is None else port
    # In-process emulators live in a nursery that outlives this one's cancellation until the
    # adapters are done, so even a plain cancel (not only `shutdown`) lets every adapter close its
    # connections with an emulator that still answers.
    emulators_may_stop = trio.Event()
    async with trio.open_nursery() as nursery:
        try:
            emulator_nursery = await start_outliving_nursery(nursery, emulators_may_stop)
            emulators, routes = await (upstream or tcp_upstream)(config, emulator_nursery)
            hub = Hub(config.routes)
            adapters: dict[str, Source] = {}
            for name, provider in config.providers.items():
                url, connector = routes[name]
                make = KINDS[provider.kind].make_adapter
                adapters[name] = make(name, url, keys[name], hub.publish, provider.policy, connector)
            hub.add_sources(adapters.values())
            running: _Upstream = await nursery.start(_run_upstream, list(adapters.values()), emulators_may_stop)
        except BaseException:
            emulators_may_stop.set()
            raise
        ctx = GatewayContext(config, hub, clients_keys)
        app = GatewayApp(ctx)
        for endpoint in app.endpoints:  # an endpoint's own timers (Luzia: REST keep-alive expiry)
            run = getattr(endpoint, "run", None)
            if run is not None:
                await nursery.start(run)
        server = Server(app, config.server, fit_to_descriptors(config.limits))
        bound = await nursery.start(server.serve, host, port) if listen else 0
        gateway = Gateway(host, bound, hub, server, adapters, emulators, nursery.cancel_scope, running)
        if announce is not None:
            announce(_welcome(gateway, config))
        task_status.started(gateway)


#: File descriptors kept for everything that is not a client: listeners, upstream connections,
#: in-process emulators and their clients, log files.
RESERVED_DESCRIPTORS = 256


def fit_to_descriptors(limits: Limits, getrlimit: Callable[[int], tuple[int, int]] | None = None,
                       setrlimit: Callable[[int, tuple[int, int]], None] | None = None) -> Limits:
    """`limits` with `max_connections` the process can really hold: the soft descriptor limit
    is raised towards the hard one if it is lower than the caps need, and if it still is, the
    caps are lowered (with a warning) so that an over-cap client gets its 503 instead of the
    listener failing with EMFILE and nobody being served."""
    try:
        import resource
    except ImportError:  # not on this platform: nothing to fit
        return limits
    get = getrlimit or resource.getrlimit
    put = setrlimit or resource.setrlimit
    soft, hard = get(resource.RLIMIT_NOFILE)
    needed = limits.max_connections + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            put(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return limits
    fitting = max(1, soft - RESERVED_DESCRIPTORS)
    log.warning("limits.max_connections %d exceeds what %d file descriptors allow: serving at most %d connections",
                limits.max_connections, soft, fitting)
    return msgspec.structs.replace(limits, max_connections=fitting,
                                   max_connections_per_address=min(limits.max_connections_per_address, fitting))


def cleartext_to_remote(url: str | None) -> bool:
    """A `ws://` URL (no TLS) to a host other than this machine: the key would cross the network in clear."""
    if not url or not url.lower().startswith("ws://"):
        return False
    host = urllib.parse.urlsplit(url).hostname or ""
    return not is_loopback(host)


class _Upstream:
    """The adapters' own nursery, so a shutdown can stop them before the emulators they talk to."""

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.done = trio.Event()

    async def stop(self) -> None:
        self.scope.cancel()
        await self.done.wait()


async def _run_upstream(
    sources: list[Source], done: trio.Event, *, task_status: trio.TaskStatus[_Upstream] = trio.TASK_STATUS_IGNORED
) -> None:
    """The sources, in their own nursery; `done` is set once every one of them has stopped."""
    handle: _Upstream | None = None
    try:
        async with trio.open_nursery() as nursery:
            for source in sources:
                await nursery.start(source.run)
            handle = _Upstream(nursery.cancel_scope)
            task_status.started(handle)
            await trio.sleep_forever()
    finally:
        done.set()
        if handle is not None:
            handle.done.set()


#: Per provider: the URL to connect to, and the connector (None: a real socket).
UpstreamRoutes = dict[str, tuple[str, Connector | None]]
UpstreamFactory = Callable[[Config, trio.Nursery], Awaitable[tuple[dict[str, Emulator], UpstreamRoutes]]]


async def tcp_upstream(config: Config, nursery: trio.Nursery) -> tuple[dict[str, Emulator], UpstreamRoutes]:
    """Emulated providers listen on ephemeral loopback ports; the rest are reached at their URL."""
    emulators: dict[str, Emulator] = {}
    routes: UpstreamRoutes = {}
    for name, provider in config.providers.items():
        if provider.emulate:
            kind = KINDS[provider.kind]
            emulators[name] = kind.make_emulator(provider.emulator_rate)
            emulator_port = await nursery.start(emulators[name].serve, "127.0.0.1", 0)
            routes[name] = (f"ws://127.0.0.1:{emulator_port}{kind.emulator_path}", None)
        else:
            assert provider.url is not None  # config._check: a provider that is not emulated has a url
            routes[name] = (provider.url, None)
    return emulators, routes


def _welcome(gateway: Gateway, config: Config) -> str:
    lines = [f"mdgateway listening on {gateway.host}:{gateway.port}"]
    lines.append(f"  native stream   {gateway.url('/stream')}   (subscribe: {{\"type\":\"subscribe\",\"channels\":[\"trade:binance:BTC/USDT\"]}})")
    lines.append(f"  Luzia apps      base URL http://{gateway.host}:{gateway.port}   (WebSocket {gateway.url('/v1/ws')})")
    lines.append(f"  CoinAPI apps    {gateway.url('/v1/')}")
    lines.append(f"  health          http://{gateway.host}:{gateway.port}/healthz")
    for name, provider in config.providers.items():
        where = "emulated in-process" if provider.emulate else url_without_credentials(provider.url or "")
        lines.append(f"  provider {name:<8} {provider.kind:<8} {where}")
    routes = ", ".join(f"{dt} → {' | '.join(names)}" for dt, names in config.routes.items())
    lines.append(f"  routes          {routes}")
    lines.append("  Ctrl-C stops.")
    return "\n".join(lines)
