"""Which series carry which signal, per model-server engine.

The built-in tables are llm-d's (``core-metrics-extractor``): vLLM (the default), SGLang,
TensorRT-LLM's ``trtllm-serve``, Triton with the TensorRT-LLM backend, and plain Triton. An
endpoint's engine is its ``llm-d.ai/engine-type`` label (the key is configurable; GIE's older
``inference.networking.k8s.io/engine-type`` is read next), else the default engine. A configured
engine with a built-in's name replaces that engine whole; other names are added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from llmd_router.datalayer.metrics.spec import MetricSpec, parse_spec

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "BUILTIN_ENGINES",
    "DEFAULT_ENGINE_LABEL",
    "LEGACY_ENGINE_LABEL",
    "EngineMapping",
    "EngineSpecs",
    "EngineTable",
]

DEFAULT_ENGINE_LABEL: Final = "llm-d.ai/engine-type"
LEGACY_ENGINE_LABEL: Final = "inference.networking.k8s.io/engine-type"
RESERVED_NAME: Final = "default"


@dataclass(frozen=True, slots=True)
class EngineSpecs:
    """One engine's specs as configured: strings, empty for a signal the engine lacks."""

    name: str
    queued_requests_spec: str = ""
    running_requests_spec: str = ""
    kv_usage_spec: str = ""
    lora_spec: str = ""
    cache_info_spec: str = ""
    cache_block_size_label_name: str = "block_size"
    cache_num_blocks_label_name: str = "num_gpu_blocks"
    cache_block_size_spec: str = ""
    cache_num_blocks_spec: str = ""


BUILTIN_ENGINES: Final = (
    EngineSpecs(
        "vllm",
        queued_requests_spec="vllm:num_requests_waiting",
        running_requests_spec="vllm:num_requests_running",
        kv_usage_spec="vllm:kv_cache_usage_perc",
        lora_spec="vllm:lora_requests_info",
        cache_info_spec="vllm:cache_config_info",
    ),
    EngineSpecs(
        "sglang",
        queued_requests_spec="sglang:num_queue_reqs",
        running_requests_spec="sglang:num_running_reqs",
        kv_usage_spec="sglang:token_usage",
        cache_info_spec="sglang:cache_config_info",  # SGLang before v0.5.12
        cache_block_size_label_name="page_size",
        cache_num_blocks_label_name="num_pages",
        cache_block_size_spec="sglang:page_size",  # from v0.5.12, when the info gauge is gone
        cache_num_blocks_spec="sglang:num_pages",
    ),
    EngineSpecs(
        "trtllm-serve",
        queued_requests_spec="trtllm_num_requests_waiting",
        running_requests_spec="trtllm_num_requests_running",
        kv_usage_spec="trtllm_kv_cache_utilization",
        cache_block_size_spec="trtllm_kv_cache_tokens_per_block",
        cache_num_blocks_spec="trtllm_kv_cache_max_blocks",
    ),
    EngineSpecs(
        "triton-tensorrt-llm",
        queued_requests_spec="nv_trt_llm_request_metrics{request_type=waiting}",
        running_requests_spec="nv_trt_llm_request_metrics{request_type=scheduled}",
        kv_usage_spec="nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=fraction}",
        cache_block_size_spec="nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=tokens_per}",
        cache_num_blocks_spec="nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=max}",
    ),
    EngineSpecs(  # Triton serving models that are not LLMs: load only
        "triton",
        queued_requests_spec="nv_inference_pending_request_count",
        running_requests_spec="nv_inference_exec_count",
    ),
)


@dataclass(frozen=True, slots=True)
class EngineMapping:
    """One engine's specs, parsed. None: the engine does not report that signal."""

    name: str
    queue: MetricSpec | None
    running: MetricSpec | None
    kv_usage: MetricSpec | None
    lora: MetricSpec | None
    cache_info: MetricSpec | None
    cache_block_size_label: str
    cache_num_blocks_label: str
    cache_block_size: MetricSpec | None
    cache_num_blocks: MetricSpec | None

    @classmethod
    def from_specs(cls, specs: EngineSpecs) -> EngineMapping:
        """ValueError naming the engine and the spec when one is malformed."""

        def spec(field: str, text: str) -> MetricSpec | None:
            try:
                return parse_spec(text)
            except ValueError as exc:
                raise ValueError(f"engine {specs.name!r}: {field}: {exc}") from None

        return cls(
            name=specs.name,
            queue=spec("queuedRequestsSpec", specs.queued_requests_spec),
            running=spec("runningRequestsSpec", specs.running_requests_spec),
            kv_usage=spec("kvUsageSpec", specs.kv_usage_spec),
            lora=spec("loraSpec", specs.lora_spec),
            cache_info=spec("cacheInfoSpec", specs.cache_info_spec),
            cache_block_size_label=specs.cache_block_size_label_name or "block_size",
            cache_num_blocks_label=specs.cache_num_blocks_label_name or "num_gpu_blocks",
            cache_block_size=spec("cacheBlockSizeSpec", specs.cache_block_size_spec),
            cache_num_blocks=spec("cacheNumBlocksSpec", specs.cache_num_blocks_spec),
        )

    def families(self) -> tuple[str, ...]:
        """The metric families this mapping reads."""
        specs = (
            self.queue,
            self.running,
            self.kv_usage,
            self.lora,
            self.cache_info,
            self.cache_block_size,
            self.cache_num_blocks,
        )
        return tuple(dict.fromkeys(s.name for s in specs if s is not None))


class EngineTable:
    """Engine mappings by name, and the choice of one for an endpoint's labels."""

    def __init__(
        self,
        configured: Iterable[EngineSpecs] = (),
        *,
        default_engine: str = "vllm",
        label_key: str = DEFAULT_ENGINE_LABEL,
    ) -> None:
        """ValueError when an engine is unnamed, uses the reserved name ``default``, is
        configured twice, has a malformed spec, or ``default_engine`` is not among them."""
        specs: dict[str, EngineSpecs] = {}
        for entry in configured:
            if not entry.name:
                raise ValueError("engineConfigs: an engine config has no name")
            if entry.name == RESERVED_NAME:
                raise ValueError(f"engineConfigs: the name {RESERVED_NAME!r} is reserved")
            if entry.name in specs:
                raise ValueError(f"engineConfigs: engine {entry.name!r} is configured twice")
            specs[entry.name] = entry
        for builtin in BUILTIN_ENGINES:
            specs.setdefault(builtin.name, builtin)
        self.mappings: Mapping[str, EngineMapping] = {
            name: EngineMapping.from_specs(s) for name, s in specs.items()
        }
        if default_engine not in self.mappings:
            names = ", ".join(sorted(self.mappings))
            raise ValueError(f"defaultEngine {default_engine!r} is not an engine ({names})")
        self.default = self.mappings[default_engine]
        self.label_key = label_key or DEFAULT_ENGINE_LABEL

    def for_labels(self, labels: Mapping[str, str]) -> EngineMapping:
        """The engine named by the endpoint's labels; the default when unnamed or unknown."""
        name = labels.get(self.label_key) or labels.get(LEGACY_ENGINE_LABEL)
        if not name:
            return self.default
        return self.mappings.get(name, self.default)
