"""Prometheus page in, endpoint signals out: the pure half of metrics scraping.

Each signal is read on its own. A signal whose family is missing, or has no matching series, or
has an unusable value, is an error for that signal only: it keeps its previous value, and the
others are still read. If at least one signal was read, the report counts as fresh
(``updated_at`` advances); if none was, it does not, so an endpoint whose page stops carrying
its signals ages into staleness instead of looking idle. Values are never zeroed.

KV block geometry comes from the info gauge's labels (vLLM's ``cache_config_info``) or, for
engines without one or pages that lack it, from two plain gauges.

The LoRA info gauge is the exception to "newest timestamp wins": vLLM adds a series at each change
of its adapter sets, with the time of the change as the value, so the series with the largest
value is the current one. A page without that family is not an error (vLLM without LoRA does
not emit it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import EndpointMetrics
    from llmd_router.datalayer.metrics.engines import EngineMapping
    from llmd_router.datalayer.metrics.promtext import Series, SeriesReader
    from llmd_router.datalayer.metrics.spec import MetricSpec

__all__ = ["Extraction", "extract"]


@dataclass(frozen=True, slots=True)
class Extraction:
    metrics: EndpointMetrics  # ``previous`` with what was read; ``previous`` itself if nothing
    errors: tuple[str, ...]  # one per signal that could not be read
    updated: bool  # at least one signal was read


def _adapters(csv: str) -> frozenset[str]:
    return frozenset(name.strip() for name in csv.split(",") if name.strip())


class _Reading:
    """One page being read: what was found so far, and what went wrong."""

    def __init__(self, page: bytes, reader: SeriesReader) -> None:
        self.page = page
        self.reader = reader
        self.errors: list[str] = []
        self.changes: dict[str, Any] = {}

    def series(self, spec: MetricSpec, errors: list[str] | None = None) -> Series | None:
        """The spec's series; None (with a message in ``errors``) when there is none."""
        errors = self.errors if errors is None else errors
        found = self.reader.find(self.page, spec.name, self.errors)
        best = spec.latest(found)
        if best is None:
            errors.append(
                f"no series of {spec.name!r} matches {spec}"
                if found
                else f"metric family {spec.name!r} not found"
            )
        return best

    def gauge(self, spec: MetricSpec | None, field: str, *, as_int: bool) -> None:
        found = self.series(spec) if spec is not None else None
        if spec is None or found is None:
            return
        if not math.isfinite(found.value):
            self.errors.append(f"{spec}: value {found.value} is not a finite number")
            return
        self.changes[field] = int(found.value) if as_int else found.value

    def label_int(self, series: Series, label: str, spec: MetricSpec) -> int | None:
        text = series.labels.get(label)
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            self.errors.append(f"{spec}: label {label}={text!r} is not an integer")
            return None

    def lora(self, spec: MetricSpec) -> None:
        found = self.reader.find(self.page, spec.name, self.errors)
        candidates = [s for s in found if spec.matches(s)]
        if not candidates:  # vLLM without LoRA has no such family: not an error
            return
        newest = max(candidates, key=lambda s: s.value)
        self.changes["active_models"] = _adapters(newest.labels.get("running_lora_adapters", ""))
        self.changes["waiting_models"] = _adapters(newest.labels.get("waiting_lora_adapters", ""))
        max_lora = self.label_int(newest, "max_lora", spec)
        if max_lora is not None:
            self.changes["max_active_models"] = max_lora

    def geometry(self, mapping: EngineMapping) -> None:
        """KV block size and count: from the info gauge's labels; from the two gauges when
        the engine has no info gauge, or this page lacks it (SGLang moved from one to the
        other), in which case the missing info gauge is not an error."""
        info_errors: list[str] = []
        info = self.series(mapping.cache_info, info_errors) if mapping.cache_info else None
        if info is not None and mapping.cache_info is not None:
            for label, field in (
                (mapping.cache_block_size_label, "cache_block_size"),
                (mapping.cache_num_blocks_label, "cache_num_blocks"),
            ):
                before = len(self.errors)
                value = self.label_int(info, label, mapping.cache_info)
                if len(self.errors) == before:
                    self.changes[field] = value or 0
            return
        if mapping.cache_block_size is None and mapping.cache_num_blocks is None:
            self.errors.extend(info_errors)
            return
        before = len(self.errors)
        self.gauge(mapping.cache_block_size, "cache_block_size", as_int=True)
        self.gauge(mapping.cache_num_blocks, "cache_num_blocks", as_int=True)
        if len(self.errors) > before:
            self.errors.extend(info_errors)


def extract(
    page: bytes,
    mapping: EngineMapping,
    previous: EndpointMetrics,
    now: float,
    reader: SeriesReader,
) -> Extraction:
    """The signals ``mapping`` names, read from ``page`` over ``previous``; ``now`` becomes
    ``updated_at`` when at least one was read."""
    reading = _Reading(page, reader)
    reading.gauge(mapping.queue, "waiting_queue_size", as_int=True)
    reading.gauge(mapping.running, "running_requests", as_int=True)
    reading.gauge(mapping.kv_usage, "kv_cache_usage", as_int=False)
    if mapping.lora is not None:
        reading.lora(mapping.lora)
    reading.geometry(mapping)
    errors = tuple(reading.errors)
    if not reading.changes:
        return Extraction(previous, errors, updated=False)
    reading.changes["updated_at"] = now
    return Extraction(dataclasses.replace(previous, **reading.changes), errors, updated=True)
