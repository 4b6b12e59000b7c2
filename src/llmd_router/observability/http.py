"""The metrics port (``:9090``): ``GET /metrics`` in the Prometheus text format, and the debug
pages the application hands in (``/debug/...``), each a function returning JSON-able data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from prometheus_client import CollectorRegistry

__all__ = ["MetricsServer"]


class MetricsServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str = "0.0.0.0",
        port: int = 9090,
        debug: Mapping[str, Callable[[], Any]] | None = None,
    ) -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._debug = dict(debug or {})
        self._runner: web.AppRunner | None = None
        self.port = port

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})

    def _page(self, render: Callable[[], Any]) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            return web.Response(body=msgspec.json.encode(render()), content_type="application/json")

        return handle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        for path, render in self._debug.items():
            app.router.add_get(path, self._page(render))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
        await site.start()
        server = site._server  # aiohttp keeps the bound sockets here
        if server is not None and server.sockets:  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
