"""What a simulated server and a fleet are configured with, as frozen values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_PRESET",
    "CacheConfig",
    "ConfigError",
    "FaultConfig",
    "FleetConfig",
    "KVEventsConfig",
    "LatencyConfig",
    "ServerConfig",
]


class ConfigError(ValueError):
    """A configuration value or combination is invalid. The message names what is wrong."""


@dataclass(frozen=True, slots=True)
class LatencyConfig:
    """Timing model, in seconds (see ``latency.py`` for the formulas)."""

    prefill_overhead: float = 0.030
    prefill_time_per_token: float = 0.0002
    prefill_time_std_dev: float = 0.0
    inter_token_latency: float = 0.012
    inter_token_latency_std_dev: float = 0.0
    time_factor_under_load: float = 2.0
    time_scale: float = 1.0


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Paged KV cache: ``num_blocks`` blocks of ``block_size`` tokens (one reserved, as vLLM's
    null block)."""

    block_size: int = 16
    num_blocks: int = 31250
    enable_prefix_caching: bool = True
    hash_seed: str = "0"


@dataclass(frozen=True, slots=True)
class KVEventsConfig:
    """ZMQ publication of KV events. ``endpoint`` None disables it.

    ``endpoint`` follows vLLM's rule: the PUB socket binds when the address contains ``*`` or
    ``::`` or uses ``ipc://``/``inproc://``, and connects otherwise.
    """

    endpoint: str | None = None
    topic: str = "kv@{host}:{port}@{model}"
    encoding: Literal["map", "array"] = "map"
    hwm: int = 100_000

    @property
    def binds(self) -> bool:
        ep = self.endpoint or ""
        return "*" in ep or "::" in ep or ep.startswith(("ipc://", "inproc://"))


DEFAULT_PRESET: Final = "llama-8b-h100"

MetricsFault = Literal["ok", "stale", "missing", "hang"]


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Injected failures. Rates are probabilities in [0, 1] per inference request."""

    error_rate: float = 0.0
    error_status: int = 500
    hang_rate: float = 0.0
    drop_rate: float = 0.0
    drop_after_tokens: int = 1
    metrics: MetricsFault = "ok"
    health_fail: bool = False


Mode = Literal["random", "echo"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One simulated vLLM server."""

    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    served_model_names: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    preset: str = DEFAULT_PRESET
    max_model_len: int = 131072
    max_num_seqs: int = 256
    max_waiting: int = 0
    mode: Mode = "random"
    output_len_mean: int = 128
    seed: int = 0
    lora_modules: tuple[str, ...] = ()
    max_loras: int = 1
    role: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    max_request_body_bytes: int = 32 * 1024 * 1024
    enable_prompt_tokens_details: bool = False
    enable_request_id_headers: bool = False
    context_length_status: int = 400
    latency: LatencyConfig = LatencyConfig()
    cache: CacheConfig = CacheConfig()
    kv_events: KVEventsConfig = KVEventsConfig()
    faults: FaultConfig = FaultConfig()

    @property
    def model_names(self) -> tuple[str, ...]:
        """Names under which the base model is served; the first is the one reported."""
        return self.served_model_names or (self.model,)


@dataclass(frozen=True, slots=True)
class FleetConfig:
    servers: tuple[ServerConfig, ...]
