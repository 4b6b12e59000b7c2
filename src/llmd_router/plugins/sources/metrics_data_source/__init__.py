"""``metrics-data-source``: GET each endpoint's Prometheus page on every tick."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from llmd_router.datalayer.http import TlsOptions
from llmd_router.framework import Params, Stability
from llmd_router.plugins.sources import (
    HttpPollingPlugin,
    HttpSource,
    check_interval,
    check_port,
    optional_path,
)

__all__ = ["PROMETHEUS_TEXT", "MetricsDataSource", "MetricsDataSourceParams"]

PROMETHEUS_TEXT = "prometheus-text"


class MetricsDataSourceParams(Params, frozen=True):
    scheme: Literal["http", "https"] = "http"
    path: str = "/metrics"
    port: int = 0  # 0: the endpoint's own port
    insecure_skip_verify: bool = True
    ca_cert_path: str = ""
    client_cert_path: str = ""
    client_key_path: str = ""
    interval: str = ""  # its own period, a multiple of --refresh-metrics-interval

    def __post_init__(self) -> None:
        check_port(self.port)
        check_interval(self.interval)
        if bool(self.client_cert_path) != bool(self.client_key_path):
            raise ValueError("clientCertPath and clientKeyPath are set together")


class MetricsDataSource(HttpPollingPlugin[MetricsDataSourceParams]):
    """Polls ``{scheme}://{address}:{port}{path}`` of every endpoint over a kept-alive
    connection; a status other than 200, a timeout or a reset is a failed poll."""

    TYPE: ClassVar[str] = "metrics-data-source"
    Params: ClassVar[type[Any]] = MetricsDataSourceParams
    STABILITY: ClassVar[Stability] = Stability.STABLE
    output: ClassVar[str] = PROMETHEUS_TEXT

    def __init__(self, name: str, params: MetricsDataSourceParams) -> None:
        super().__init__(name, params)
        self.interval_s = check_interval(params.interval)
        self._http = HttpSource(
            scheme=params.scheme,
            path=params.path,
            port=params.port,
            tls=TlsOptions(
                insecure_skip_verify=params.insecure_skip_verify,
                ca_cert=optional_path(params.ca_cert_path),
                client_cert=optional_path(params.client_cert_path),
                client_key=optional_path(params.client_key_path),
            ),
            accept="text/plain;version=0.0.4",
        )
