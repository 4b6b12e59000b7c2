"""``metrics-data-source``: GET each endpoint's Prometheus page on every tick."""

from __future__ import annotations

from typing import Any, ClassVar

from llmd_router.datalayer.http import TlsOptions
from llmd_router.framework import Stability
from llmd_router.plugins.sources import HttpPollingPlugin, HttpSourceParams, optional_path

__all__ = ["PROMETHEUS_TEXT", "MetricsDataSource", "MetricsDataSourceParams"]

PROMETHEUS_TEXT = "prometheus-text"


class MetricsDataSourceParams(HttpSourceParams, frozen=True):
    path: str = "/metrics"
    ca_cert_path: str = ""
    client_cert_path: str = ""
    client_key_path: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.client_cert_path) != bool(self.client_key_path):
            raise ValueError("clientCertPath and clientKeyPath are set together")


class MetricsDataSource(HttpPollingPlugin[MetricsDataSourceParams]):
    """Polls ``{scheme}://{address}:{port}{path}`` of every endpoint over a kept-alive
    connection; a status other than 200, a timeout or a reset is a failed poll."""

    TYPE: ClassVar[str] = "metrics-data-source"
    Params: ClassVar[type[Any]] = MetricsDataSourceParams
    STABILITY: ClassVar[Stability] = Stability.STABLE
    ACCEPT: ClassVar[str] = "text/plain;version=0.0.4"
    output: ClassVar[str] = PROMETHEUS_TEXT

    def tls(self, params: MetricsDataSourceParams) -> TlsOptions:
        return TlsOptions(
            insecure_skip_verify=params.insecure_skip_verify,
            ca_cert=optional_path(params.ca_cert_path),
            client_cert=optional_path(params.client_cert_path),
            client_key=optional_path(params.client_key_path),
        )
