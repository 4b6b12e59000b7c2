"""Every built-in plugin type, registered in one function.

``register_builtin_plugins`` is the only place that knows the catalogue: no plugin registers
itself on import. Types llm-d has and this version does not are registered as unavailable with
the reason, so a configuration naming one fails with that reason and the list of what exists.
"""

from __future__ import annotations

from typing import Final

from llmd_router.framework import INFLIGHT_LOAD, PREFIX_MATCH, TOKENIZED_PROMPT, Registry
from llmd_router.plugins.admitters.probabilistic_admitter import (
    ProbabilisticAdmitter,
)
from llmd_router.plugins.deciders.always_disagg_multimodal_decider import (
    AlwaysDisaggMultimodalDecider,
)
from llmd_router.plugins.deciders.always_disagg_pd_decider import (
    AlwaysDisaggPDDecider,
)
from llmd_router.plugins.deciders.prefix_based_pd_decider import (
    PrefixBasedPDDecider,
)
from llmd_router.plugins.discovery.file_discovery import FileDiscoveryPlugin
from llmd_router.plugins.extractors.core_metrics_extractor import CoreMetricsExtractor
from llmd_router.plugins.extractors.models_data_extractor import ModelsDataExtractor
from llmd_router.plugins.filters.by_label import ByLabelFilter
from llmd_router.plugins.filters.decode_filter import DecodeFilter
from llmd_router.plugins.filters.encode_filter import EncodeFilter
from llmd_router.plugins.filters.label_selector_filter import LabelSelectorFilter
from llmd_router.plugins.filters.prefill_filter import PrefillFilter
from llmd_router.plugins.filters.prefix_cache_affinity_filter import (
    PrefixCacheAffinityFilter,
)
from llmd_router.plugins.parsers.openai_parser import OpenAIParser
from llmd_router.plugins.parsers.passthrough_parser import PassthroughParser
from llmd_router.plugins.pickers.max_score_picker import MaxScorePicker
from llmd_router.plugins.pickers.random_picker import RandomPicker
from llmd_router.plugins.pickers.weighted_random_picker import WeightedRandomPicker
from llmd_router.plugins.producers.approx_prefix_cache_producer import (
    ApproxPrefixCacheProducer,
)
from llmd_router.plugins.producers.burst_prefix_cache_producer import (
    BurstPrefixCacheProducer,
)
from llmd_router.plugins.producers.inflight_load_producer import (
    InFlightLoadProducer,
)
from llmd_router.plugins.producers.precise_prefix_cache_producer import (
    PrecisePrefixCacheProducer,
)
from llmd_router.plugins.producers.token_producer import TokenProducer
from llmd_router.plugins.profilehandlers.disagg_profile_handler import (
    DisaggProfileHandler,
)
from llmd_router.plugins.profilehandlers.single_profile_handler import (
    SingleProfileHandler,
)
from llmd_router.plugins.saturation.concurrency_detector import ConcurrencyDetector
from llmd_router.plugins.saturation.utilization_detector import UtilizationDetector
from llmd_router.plugins.scorers.active_request_scorer import ActiveRequestScorer
from llmd_router.plugins.scorers.context_length_aware import ContextLengthAware
from llmd_router.plugins.scorers.kv_cache_utilization_scorer import (
    KVCacheUtilizationScorer,
)
from llmd_router.plugins.scorers.load_aware_scorer import LoadAwareScorer
from llmd_router.plugins.scorers.lora_affinity_scorer import LoraAffinityScorer
from llmd_router.plugins.scorers.no_hit_lru_scorer import NoHitLRUScorer
from llmd_router.plugins.scorers.precise_prefix_cache_scorer import PrecisePrefixCacheScorer
from llmd_router.plugins.scorers.prefix_cache_scorer import PrefixCacheScorer
from llmd_router.plugins.scorers.queue_scorer import QueueScorer
from llmd_router.plugins.scorers.running_requests_size_scorer import (
    RunningRequestsSizeScorer,
)
from llmd_router.plugins.scorers.session_affinity_scorer import SessionAffinityScorer
from llmd_router.plugins.scorers.token_load_scorer import TokenLoadScorer
from llmd_router.plugins.sources.metrics_data_source import MetricsDataSource
from llmd_router.plugins.sources.models_data_source import ModelsDataSource

__all__ = ["UNAVAILABLE", "builtin_registry", "register_builtin_plugins"]

_PREFIX: Final = "arrives with prefix-cache routing"
_FLOW: Final = "arrives with flow control"
_K8S: Final = "arrives with Kubernetes discovery"
_LATENCY: Final = "needs a latency predictor, not implemented yet"
_LATER: Final = "not implemented yet"

# llm-d type -> why this version does not have it.
UNAVAILABLE: Final = {
    "p2p-source-producer": _PREFIX,
    "global-strict-fairness-policy": _FLOW,
    "round-robin-fairness-policy": _FLOW,
    "program-aware-fairness": _FLOW,
    "fcfs-ordering-policy": _FLOW,
    "edf-ordering-policy": _FLOW,
    "slo-deadline-ordering-policy": _FLOW,
    "static-usage-limit-policy": _FLOW,
    "priority-holdback-policy": _FLOW,
    "soft-reflective-ceiling-policy": _FLOW,
    "endpoint-notification-source": _K8S,
    "k8s-notification-source": _K8S,
    "latency-scorer": _LATENCY,
    "predicted-latency-producer": _LATENCY,
    "latency-slo-admitter": _LATENCY,
    "slo-headroom-tier-filter": _LATENCY,
    "anthropic-parser": _LATER,
    "vllmhttp-parser": _LATER,
    "sglanghttp-parser": _LATER,
    "vllmgrpc-parser": _LATER,
    "vertexai-parser": _LATER,
    "header-profile-handler": _LATER,
    "pd-profile-handler": _LATER + " (deprecated in llm-d; use disagg-profile-handler)",
    "data-parallel-profile-handler": _LATER + " (deprecated in llm-d)",
    "disagg-headers-handler": _LATER + " (deprecated; disagg-profile-handler sets the headers)",
    "prefill-header-handler": _LATER + " (deprecated; disagg-profile-handler sets the headers)",
    "session-affinity-filter": _LATER,
    "utilization-filter": _LATER,
    "endpoint-attribute-filter": _LATER,
    "endpoint-attribute-scorer": _LATER,
    "header-label-affinity-scorer": _LATER,
    "topology-affinity-filter": _LATER,
    "topology-affinity-scorer": _LATER,
    "topology-extractor": _LATER,
    "agent-identity": _LATER,
    "session-id-producer": _LATER,
    "mm-embeddings-cache-producer": _LATER,
    "mm-embeddings-cache-scorer": _LATER,
    "request-attribute-reporter": _LATER,
    "destination-endpoint-served-verifier": _LATER,
    "header-based-testing-filter": _LATER,
    "dcgm-data-source": _LATER,
    "dcgm-extractor": _LATER,
    "disaggregatedset-rollout-screener": _LATER,
    "multicluster-file-discovery": _LATER,
}


def register_builtin_plugins(registry: Registry) -> None:
    for cls in (
        # parsers
        OpenAIParser,
        PassthroughParser,
        # profile handlers and deciders
        SingleProfileHandler,
        DisaggProfileHandler,
        PrefixBasedPDDecider,
        AlwaysDisaggPDDecider,
        AlwaysDisaggMultimodalDecider,
        # filters
        DecodeFilter,
        PrefillFilter,
        EncodeFilter,
        ByLabelFilter,
        PrefixCacheAffinityFilter,
        # scorers
        QueueScorer,
        KVCacheUtilizationScorer,
        RunningRequestsSizeScorer,
        LoadAwareScorer,
        ActiveRequestScorer,
        TokenLoadScorer,
        LoraAffinityScorer,
        SessionAffinityScorer,
        NoHitLRUScorer,
        ContextLengthAware,
        PrefixCacheScorer,
        PrecisePrefixCacheScorer,
        # pickers
        MaxScorePicker,
        RandomPicker,
        WeightedRandomPicker,
        # request control
        InFlightLoadProducer,
        ApproxPrefixCacheProducer,
        PrecisePrefixCacheProducer,
        BurstPrefixCacheProducer,
        ProbabilisticAdmitter,
        # saturation detectors (also filters)
        UtilizationDetector,
        ConcurrencyDetector,
        # data layer
        MetricsDataSource,
        CoreMetricsExtractor,
        ModelsDataSource,
        ModelsDataExtractor,
        FileDiscoveryPlugin,
    ):
        registry.register(cls)
    registry.register(LabelSelectorFilter, aliases=("by-label-selector",))
    registry.register(TokenProducer, aliases=("tokenizer",))
    registry.default_producer(INFLIGHT_LOAD, InFlightLoadProducer.TYPE)
    registry.default_producer(PREFIX_MATCH, ApproxPrefixCacheProducer.TYPE)
    registry.default_producer(TOKENIZED_PROMPT, TokenProducer.TYPE)
    for type_name, reason in UNAVAILABLE.items():
        registry.unavailable(type_name, reason)


def builtin_registry() -> Registry:
    """A registry holding every built-in type."""
    registry = Registry()
    register_builtin_plugins(registry)
    return registry
