"""Data-layer plugins: sources that poll endpoints, extractors that read what they fetched,
and endpoint discovery. The machinery they plug into is ``llmd_router.datalayer``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from llmd_router.config.durations import parse_duration
from llmd_router.datalayer.http import HttpFetcher, TlsOptions
from llmd_router.framework.plugin import Plugin

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import Endpoint

__all__ = ["HttpPollingPlugin", "HttpSource", "check_interval", "check_port"]

_P = TypeVar("_P")


def check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid port {port}: must be between 0 and 65535")


def check_interval(interval: str) -> float | None:
    """Seconds of a source's ``interval`` parameter; None when empty."""
    if not interval:
        return None
    try:
        seconds = parse_duration(interval)
    except ValueError as exc:
        raise ValueError(f"interval: {exc}") from None
    if seconds <= 0:
        raise ValueError(f"interval must be positive, got {interval!r}")
    return seconds


class HttpSource:
    """A source that GETs one path from each endpoint (its address, or ``port`` when set)."""

    def __init__(
        self,
        *,
        scheme: str,
        path: str,
        port: int,
        tls: TlsOptions,
        accept: str,
    ) -> None:
        try:
            context = tls.context() if scheme == "https" else None
        except OSError as exc:  # ssl.SSLError is an OSError
            raise ValueError(f"TLS: {exc}") from None
        self._fetcher = HttpFetcher(path, tls=context, accept=accept)
        self._port = port

    async def fetch(self, endpoint: Endpoint) -> bytes:
        return await self._fetcher.get(endpoint.address, self._port or endpoint.port)

    def forget(self, endpoint: Endpoint) -> None:
        self._fetcher.forget(endpoint.address, self._port or endpoint.port)

    def close(self) -> None:
        self._fetcher.close()


class HttpPollingPlugin(Plugin[_P]):
    """A polling source whose poll is one GET through ``self._http`` (set in ``__init__``)."""

    _http: HttpSource

    async def poll(self, endpoint: Endpoint) -> bytes:
        return await self._http.fetch(endpoint)

    def forget(self, endpoint: Endpoint) -> None:
        self._http.forget(endpoint)

    def close(self) -> None:
        self._http.close()


def optional_path(text: str) -> Path | None:
    return Path(text) if text else None
