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


def _finite(value: float, spec: MetricSpec) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{spec}: value {value} is not a finite number")
    return value


def _adapters(csv: str) -> frozenset[str]:
    return frozenset(name.strip() for name in csv.split(",") if name.strip())


def _label_int(series: Series, label: str, spec: MetricSpec) -> int | None:
    text = series.labels.get(label)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{spec}: label {label}={text!r} is not an integer") from None


def extract(
    page: bytes,
    mapping: EngineMapping,
    previous: EndpointMetrics,
    now: float,
    reader: SeriesReader,
) -> Extraction:
    """The signals ``mapping`` names, read from ``page`` over ``previous``; ``now`` becomes
    ``updated_at`` when at least one was read."""
    errors: list[str] = []
    changes: dict[str, Any] = {}

    def series(spec: MetricSpec) -> Series | None:
        found = reader.find(page, spec.name, errors)
        if not found:
            errors.append(f"metric family {spec.name!r} not found")
            return None
        best = spec.latest(found)
        if best is None:
            errors.append(f"no series of {spec.name!r} matches {spec}")
        return best

    def gauge(spec: MetricSpec | None, field: str, as_int: bool) -> None:
        if spec is None:
            return
        found = series(spec)
        if found is None:
            return
        try:
            value = _finite(found.value, spec)
        except ValueError as exc:
            errors.append(str(exc))
            return
        changes[field] = int(value) if as_int else value

    gauge(mapping.queue, "waiting_queue_size", as_int=True)
    gauge(mapping.running, "running_requests", as_int=True)
    gauge(mapping.kv_usage, "kv_cache_usage", as_int=False)
    if mapping.lora is not None:
        lora = mapping.lora
        candidates = [s for s in reader.find(page, lora.name, errors) if lora.matches(s)]
        if candidates:
            newest = max(candidates, key=lambda s: s.value)
            changes["active_models"] = _adapters(newest.labels.get("running_lora_adapters", ""))
            changes["waiting_models"] = _adapters(newest.labels.get("waiting_lora_adapters", ""))
            try:
                max_lora = _label_int(newest, "max_lora", lora)
            except ValueError as exc:
                errors.append(str(exc))
            else:
                if max_lora is not None:
                    changes["max_active_models"] = max_lora
    # KV block geometry: from the info gauge's labels; from the two gauges when the engine has
    # no info gauge, or when it has one but this page does not carry it (SGLang moved from
    # one to the other), in which case the missing info gauge is not an error.
    info_errors: list[str] = []
    info = None
    if mapping.cache_info is not None:
        found = reader.find(page, mapping.cache_info.name, errors)
        info = mapping.cache_info.latest(found)
        if info is None:
            info_errors.append(
                f"no series of {mapping.cache_info.name!r} matches {mapping.cache_info}"
                if found
                else f"metric family {mapping.cache_info.name!r} not found"
            )
    if info is not None and mapping.cache_info is not None:
        for label, field in (
            (mapping.cache_block_size_label, "cache_block_size"),
            (mapping.cache_num_blocks_label, "cache_num_blocks"),
        ):
            try:
                value = _label_int(info, label, mapping.cache_info)
            except ValueError as exc:
                errors.append(str(exc))
                continue
            changes[field] = value if value is not None else 0
    elif mapping.cache_block_size is not None or mapping.cache_num_blocks is not None:
        before = len(errors)
        gauge(mapping.cache_block_size, "cache_block_size", as_int=True)
        gauge(mapping.cache_num_blocks, "cache_num_blocks", as_int=True)
        if len(errors) > before:
            errors.extend(info_errors)
    else:
        errors.extend(info_errors)
    if not changes:
        return Extraction(previous, tuple(errors), updated=False)
    changes["updated_at"] = now
    return Extraction(dataclasses.replace(previous, **changes), tuple(errors), updated=True)
