"""The Luzia-compatible endpoint: `/v1/ws` and Luzia's REST ticker paths. (Being built.)"""

from __future__ import annotations

from gateway.context import GatewayContext
from gateway.server import HttpRequest, HttpResponse
from gateway.wspeer import Session, WebSocketPeer


class LuziaEndpoint:
    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx

    def serves_websocket(self, path: str) -> bool:
        return False

    def open_session(self, peer: WebSocketPeer, request: HttpRequest) -> Session | HttpResponse:
        raise NotImplementedError

    async def http(self, request: HttpRequest) -> HttpResponse | None:
        return None
