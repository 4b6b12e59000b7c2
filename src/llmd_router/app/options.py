"""What a router and its proxy are started with (the command line's flags, as values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmd_router.proxy.bootstrap import ProxyConfig

if TYPE_CHECKING:
    from pathlib import Path

    from llmd_router.datalayer import Endpoint
    from llmd_router.requestcontrol import CompletionSource

__all__ = ["EnvoyOptions", "RouterOptions"]


@dataclass(frozen=True, slots=True)
class RouterOptions:
    # Where endpoints come from: a fixed list, a watched endpoints file, or (neither given)
    # the configuration's dataLayer.discovery plugin.
    endpoints: tuple[Endpoint, ...] = ()
    endpoints_file: Path | None = None
    endpoints_poll_s: float = 0.25
    # Model-server signals: polled every refresh interval with a timeout; an endpoint whose
    # signals are older than the staleness threshold is not offered new requests.
    refresh_metrics_interval_s: float = 0.05
    metrics_timeout_s: float = 1.0
    metrics_staleness_s: float = 2.0
    host: str = "0.0.0.0"
    grpc_port: int = 9002
    health_port: int = 9003
    metrics_port: int = 9090
    secure_serving: bool = True
    cert_path: Path | None = None
    health_on_main: bool = False
    max_body_bytes: int = 32 << 20
    pool_name: str = ""
    honour_subset_hint: bool = True
    seed: int | None = None
    # How the router learns that a request ended: "stream" for llm-d's Envoy settings,
    # "access-log" for our buffered bootstrap (Envoy's access log reports each end).
    completion_source: CompletionSource = "stream"
    max_pending_s: float = 3600.0  # access-log: release a request whose end was never reported
    # The EndpointPickerConfig: text, or a file (watched), or neither (the default profile).
    config_text: str | None = None
    config_file: Path | None = None
    config_poll_s: float = 1.0
    allow_experimental_plugins: bool = False
    # Keep the last decisions for /debug/decisions and answer x-llmd-debug: 1 (0: off).
    explain_decisions: int = 0


@dataclass(frozen=True, slots=True)
class EnvoyOptions:
    binary: str | None = None
    concurrency: int | None = None
    log_level: str = "warning"
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
