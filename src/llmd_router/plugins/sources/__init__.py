"""Data sources: what the collector polls from every endpoint. The I/O is the data layer's
(``llmd_router.datalayer.http.HttpSource``); a source plugin is its parameters and one such
object."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, TypeVar

from llmd_router.config.durations import parse_duration
from llmd_router.datalayer.http import HttpSource, TlsOptions
from llmd_router.framework import Params, Plugin

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import Endpoint

__all__ = ["HttpPollingPlugin", "HttpSourceParams", "check_interval", "optional_path"]

_P = TypeVar("_P", bound="HttpSourceParams")


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


def optional_path(text: str) -> Path | None:
    return Path(text) if text else None


class HttpSourceParams(Params, frozen=True):
    """What every HTTP source takes; each source sets its own ``path``."""

    scheme: Literal["http", "https"] = "http"
    path: str = ""
    port: int = 0  # 0: the endpoint's own port
    insecure_skip_verify: bool = True
    interval: str = ""  # its own period, a multiple of --refresh-metrics-interval

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"invalid port {self.port}: must be between 0 and 65535")
        check_interval(self.interval)


class HttpPollingPlugin(Plugin[_P]):
    """A polling source whose poll is one GET of ``params.path`` asking for ``ACCEPT``."""

    ACCEPT: ClassVar[str] = "*/*"

    def __init__(self, name: str, params: _P) -> None:
        super().__init__(name, params)
        self.interval_s = check_interval(params.interval)
        self._http = HttpSource(
            scheme=params.scheme,
            path=params.path,
            port=params.port,
            tls=self.tls(params),
            accept=self.ACCEPT,
        )

    def tls(self, params: _P) -> TlsOptions:
        """How to verify the server (and prove who we are) over ``https``."""
        return TlsOptions(insecure_skip_verify=params.insecure_skip_verify)

    async def poll(self, endpoint: Endpoint) -> bytes:
        return await self._http.poll(endpoint)

    def forget(self, endpoint: Endpoint) -> None:
        self._http.forget(endpoint)

    def close(self) -> None:
        self._http.close()
