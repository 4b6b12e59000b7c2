"""``core-metrics-extractor``: queue, running requests, KV-cache use, LoRA adapters and KV block
geometry from a model server's Prometheus page, through per-engine tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from llmd_router.datalayer.endpoints import Signals
from llmd_router.datalayer.metrics.engines import DEFAULT_ENGINE_LABEL, EngineSpecs, EngineTable
from llmd_router.datalayer.metrics.extract import extract
from llmd_router.datalayer.metrics.promtext import SeriesReader
from llmd_router.framework import Params, Plugin, Stability
from llmd_router.plugins.sources.metrics_data_source import PROMETHEUS_TEXT

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import Endpoint

__all__ = ["CoreMetricsExtractor", "CoreMetricsExtractorParams", "EngineConfig"]


class EngineConfig(Params, frozen=True):
    """One engine's table. Naming a built-in engine replaces it whole; an empty spec disables
    that signal."""

    name: str
    queued_requests_spec: str = ""
    running_requests_spec: str = ""
    kv_usage_spec: str = ""
    lora_spec: str = ""
    cache_info_spec: str = ""
    cache_block_size_label_name: str = ""
    cache_num_blocks_label_name: str = ""
    cache_block_size_spec: str = ""
    cache_num_blocks_spec: str = ""


class CoreMetricsExtractorParams(Params, frozen=True):
    engine_label_key: str = DEFAULT_ENGINE_LABEL
    default_engine: str = "vllm"
    engine_configs: tuple[EngineConfig, ...] = ()

    def __post_init__(self) -> None:
        self.table()  # ValueError names the engine and the spec

    def table(self) -> EngineTable:
        return EngineTable(
            (EngineSpecs(**msgspec.structs.asdict(c)) for c in self.engine_configs),
            default_engine=self.default_engine,
            label_key=self.engine_label_key,
        )


class CoreMetricsExtractor(Plugin[CoreMetricsExtractorParams]):
    """Maps each endpoint's page to its signals with the table of its engine (label
    ``engineLabelKey``, else ``defaultEngine``)."""

    TYPE: ClassVar[str] = "core-metrics-extractor"
    Params: ClassVar[type[Any]] = CoreMetricsExtractorParams
    STABILITY: ClassVar[Stability] = Stability.STABLE
    input: ClassVar[str] = PROMETHEUS_TEXT
    updates_metrics: ClassVar[bool] = True  # the store's freshness follows this extractor

    def __init__(self, name: str, params: CoreMetricsExtractorParams) -> None:
        super().__init__(name, params)
        self.engines = params.table()
        self._reader = SeriesReader()

    def extract(self, data: Any, endpoint: Endpoint, now: float) -> Signals:
        mapping = self.engines.for_labels(endpoint.labels)
        result = extract(data, mapping, endpoint.metrics, now, self._reader)
        return Signals(metrics=result.metrics if result.updated else None, errors=result.errors)
