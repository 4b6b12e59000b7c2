"""Standalone Mode: the router plus the Envoy in front of it, which it configures and keeps
running (Envoy's supervision is one of the router's loops)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from llmd_router.app.router import Router
from llmd_router.proxy.bootstrap import build_bootstrap
from llmd_router.proxy.supervisor import EnvoyError, EnvoyProcess

if TYPE_CHECKING:
    import asyncio

    from llmd_router.app.options import EnvoyOptions, RouterOptions
    from llmd_router.proxy.bootstrap import ProxyConfig
    from llmd_router.tasks import Loop, Ready

__all__ = ["Standalone"]


class Standalone:
    """Start order: the router, then Envoy (so Envoy never sends to a router that is not
    listening). Stop order is the reverse: Envoy stops taking traffic, then the router lets open
    streams finish."""

    def __init__(self, router: RouterOptions, envoy: EnvoyOptions) -> None:
        if envoy.proxy.mode == "buffered":  # the bootstrap closes each stream after routing
            router = dataclasses.replace(router, completion_source="access-log")
        self.router = Router(router)
        self._envoy_options = envoy
        self.envoy: EnvoyProcess | None = None
        self._supervision: Loop | None = None
        self._failure: BaseException | None = None
        self._stop: asyncio.Event | None = None

    def proxy_config(self) -> ProxyConfig:
        """The bootstrap's settings, pointed at this router's actual ports and endpoints."""
        return dataclasses.replace(
            self._envoy_options.proxy,
            epp_port=self.router.grpc.port,
            epp_tls=self.router.options.secure_serving,
            pool=tuple((e.address, e.port) for e in self.router.store.all()),
        )

    async def start(self) -> None:
        await self.router.start()
        options = self._envoy_options
        envoy = EnvoyProcess(
            build_bootstrap(self.proxy_config()),
            binary=options.binary,
            log_level=options.log_level,
            concurrency=options.concurrency,
            on_exit=self.router.director.settlement.abandon_pending,
        )
        try:
            await envoy.start()
        except BaseException:
            await self.router.stop(0)
            raise
        self.envoy = envoy
        assert self.router.tasks is not None
        # EnvoyProcess.run restarts Envoy itself; when it gives up, so does Standalone Mode.
        self._supervision = self.router.tasks.spawn(
            "envoy", self._supervise, restart=False, on_given_up=self._envoy_given_up
        )

    async def _supervise(self, ready: Ready) -> None:
        assert self.envoy is not None
        ready()
        await self.envoy.run()

    def _envoy_given_up(self, name: str, error: BaseException) -> None:
        """Without a supervised Envoy there is no data plane: Standalone Mode stops."""
        self._failure = (
            error
            if isinstance(error, EnvoyError)
            else EnvoyError(f"Envoy is no longer supervised ({type(error).__name__}: {error})")
        )
        if self._stop is not None:
            self._stop.set()

    @property
    def url(self) -> str:
        assert self.envoy is not None
        host = self._envoy_options.proxy.listen_host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"http://{shown}:{self.envoy.listener_port}"

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set or Envoy cannot be kept running (raises why)."""
        self._stop = stop
        if self._failure is None:
            await stop.wait()
        if self._failure is not None:
            raise self._failure

    async def stop(self, grace: float = 5.0) -> None:
        if self._supervision is not None:
            self._supervision.cancel()
            self._supervision = None
        if self.envoy is not None:
            await self.envoy.stop()
            self.envoy = None
        await self.router.stop(grace)
