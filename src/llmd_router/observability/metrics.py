"""The router's Prometheus metrics, with llm-d's names.

Every series with a canonical ``llm_d_epp_*`` name is also emitted under its older name
(``inference_objective_*``, ``inference_extension_*``, ``inference_pool_*``) so that existing
dashboards keep working, as llm-d itself does. Label values for model names are capped at 1,000
distinct values; the rest are reported as ``other``. All collectors live in one registry owned
by the application (no module-level state), so tests can build as many as they need.
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["PrefixIndexSeries", "RouterMetrics"]

_LATENCY: Final = (
    0.005,
    0.025,
    0.05,
    0.1,
    0.2,
    0.4,
    0.6,
    0.8,
    1,
    1.25,
    1.5,
    2,
    3,
    4,
    5,
    6,
    8,
    10,
    15,
    20,
    30,
    45,
    60,
    120,
    180,
    240,
    300,
    360,
    480,
    600,
    900,
    1200,
    1800,
    2700,
    3600,
)
_SCHEDULING: Final = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
_REQUEST_BYTES: Final = tuple(float(64 * 4**i) for i in range(13))  # 64 B .. 1 GiB
_RESPONSE_BYTES: Final = tuple(float(4**i) for i in range(9))  # 1 B .. 64 KiB
_TOKENS: Final = tuple(float(4**i) for i in range(11))  # 1 .. 1,048,576
_SIGNAL_AGE: Final = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
_HIT_RATIO: Final = tuple(i / 10 for i in range(11))  # 0.0 .. 1.0
_HIT_BYTES: Final = (0.0, *(float(16 * 2**i) for i in range(13)))  # 0, 16 .. 65536
_PREFIX: Final = ("plugin_name", "plugin_type")
_CAP: Final = 1000
_MODEL: Final = ("model_name", "target_model_name")


class _Capped:
    """At most ``_CAP`` distinct values of a label; later ones become ``other``."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        value = value or ""
        if value in self._seen:
            return value
        if len(self._seen) >= _CAP:
            return "other"
        self._seen.add(value)
        return value


_M = TypeVar("_M", Counter, Gauge, Histogram)


_READY_HELP: Final = (
    "Endpoints in the pool whose signals are fresh (every endpoint when metrics are not polled)."
)


class _Pair(Generic[_M]):
    """One metric under its canonical name and its legacy name."""

    def __init__(self, new: _M, old: _M) -> None:
        self.new: _M = new
        self.old: _M = old


@dataclass(frozen=True, slots=True)
class _Metric:
    """One row of the table: the attribute it is kept in, its kind, its help, and its names
    with their labels (the canonical name first; a second, legacy name makes it a pair)."""

    attr: str
    kind: type[Counter] | type[Gauge] | type[Histogram]
    help: str
    names: tuple[tuple[str, tuple[str, ...]], ...]
    buckets: tuple[float, ...] = ()


def _pair(
    attr: str,
    kind: type[Counter] | type[Gauge] | type[Histogram],
    help_text: str,
    new: str,
    old: str,
    labels: tuple[str, ...],
    buckets: tuple[float, ...] = (),
) -> _Metric:
    return _Metric(attr, kind, help_text, ((new, labels), (old, labels)), buckets)


_ENDPOINT: Final = ("status", "target_model_name", "endpoint_name", "namespace", "port")
_PLUGIN: Final = ("extension_point", "plugin_type", "plugin_name")
_REWRITE: Final = ("model_rewrite_name", "model_name", "target_model")

_METRICS: Final = (
    _Metric(
        "requests",
        Counter,
        "Requests routed.",
        (
            ("llm_d_epp_request", (*_MODEL, "fairness_id", "priority")),
            ("inference_objective_request", (*_MODEL, "priority")),
        ),
    ),
    _Metric(
        "errors",
        Counter,
        "Requests that failed, by error code.",
        (
            ("llm_d_epp_request_error", (*_MODEL, "error_code", "fairness_id", "priority")),
            ("inference_objective_request_error", (*_MODEL, "error_code")),
        ),
    ),
    _pair(
        "duration",
        Histogram,
        "Time from request received to response complete.",
        "llm_d_epp_request_duration_seconds",
        "inference_objective_request_duration_seconds",
        _MODEL,
        _LATENCY,
    ),
    _pair(
        "request_size",
        Histogram,
        "Request body size.",
        "llm_d_epp_request_size_bytes",
        "inference_objective_request_sizes",
        _MODEL,
        _REQUEST_BYTES,
    ),
    _pair(
        "response_size",
        Histogram,
        "Response body size.",
        "llm_d_epp_response_size_bytes",
        "inference_objective_response_sizes",
        _MODEL,
        _RESPONSE_BYTES,
    ),
    _pair(
        "input_tokens",
        Histogram,
        "Prompt tokens per request.",
        "llm_d_epp_request_input_tokens",
        "inference_objective_input_tokens",
        _MODEL,
        _TOKENS,
    ),
    _pair(
        "output_tokens",
        Histogram,
        "Output tokens per request.",
        "llm_d_epp_request_output_tokens",
        "inference_objective_output_tokens",
        _MODEL,
        _TOKENS,
    ),
    _pair(
        "cached_tokens",
        Histogram,
        "Cached prompt tokens per request.",
        "llm_d_epp_request_cached_tokens",
        "inference_objective_prompt_cached_tokens",
        _MODEL,
        _TOKENS,
    ),
    _pair(
        "running",
        Gauge,
        "Requests in flight.",
        "llm_d_epp_request_running",
        "inference_objective_running_requests",
        ("model_name",),
    ),
    _pair(
        "scheduling",
        Histogram,
        "Time to choose an endpoint.",
        "llm_d_epp_scheduler_e2e_duration_seconds",
        "inference_extension_scheduler_e2e_duration_seconds",
        (),
        _SCHEDULING,
    ),
    _Metric(
        "attempts",
        Counter,
        "Scheduling attempts.",
        (
            ("llm_d_epp_scheduler_attempts", _ENDPOINT),
            (
                "inference_extension_scheduler_attempts",
                ("status", "target_model_name", "pod_name", "namespace", "port"),
            ),
        ),
    ),
    _pair(
        "plugin_duration",
        Histogram,
        "Time spent in one plugin call.",
        "llm_d_epp_plugin_duration_seconds",
        "inference_extension_plugin_duration_seconds",
        _PLUGIN,
        _SCHEDULING,
    ),
    _pair(
        "poll_errors",
        Counter,
        "Failed polls of an endpoint's data source.",
        "llm_d_epp_datalayer_poll_errors",
        "llm_d_inference_scheduler_datalayer_poll_errors",
        ("source_type",),
    ),
    _pair(
        "extract_errors",
        Counter,
        "Extractions that could not read every signal they map.",
        "llm_d_epp_datalayer_extract_errors",
        "llm_d_inference_scheduler_datalayer_extract_errors",
        ("source_type", "extractor_type"),
    ),
    _pair(
        "model_rewrites",
        Counter,
        "Requests whose model an InferenceModelRewrite rule replaced.",
        "llm_d_epp_model_rewrite_decisions",
        "inference_extension_model_rewrite_decisions",
        _REWRITE,
    ),
    _Metric(
        "signal_age",
        Histogram,
        "Age of the chosen endpoint's model-server signals when it was chosen.",
        (("llmd_router_signal_age_seconds", ()),),
        _SIGNAL_AGE,
    ),
    _Metric(
        "config_reloads",
        Counter,
        "Configuration reloads, by result (success or error).",
        (("llmd_router_config_reloads", ("result",)),),
    ),
    _pair(
        "ready",
        Gauge,
        _READY_HELP,
        "llm_d_epp_ready_endpoints",
        "inference_pool_ready_pods",
        ("name",),
    ),
    _pair(
        "info",
        Gauge,
        "Build information.",
        "llm_d_epp_info",
        "inference_extension_info",
        ("commit", "build_ref"),
    ),
)


_PREFIX_METRICS: Final = (
    _Metric(
        "size",
        Gauge,
        "Entries in the prefix index.",
        (
            ("llm_d_epp_prefix_indexer_size", _PREFIX),
            ("inference_extension_prefix_indexer_size", ()),
        ),
    ),
    _Metric(
        "hit_ratio",
        Histogram,
        "Share of the prompt matched on the chosen endpoint.",
        (
            ("llm_d_epp_prefix_indexer_hit_ratio", _PREFIX),
            ("inference_extension_prefix_indexer_hit_ratio", ()),
        ),
        _HIT_RATIO,
    ),
    _Metric(
        "hit_bytes",
        Histogram,
        "Bytes of prompt matched on the chosen endpoint (four a token).",
        (
            ("llm_d_epp_prefix_indexer_hit_bytes", _PREFIX),
            ("inference_extension_prefix_indexer_hit_bytes", ()),
        ),
        _HIT_BYTES,
    ),
)


class PrefixIndexSeries:
    """One prefix index's hit series, under both names."""

    __slots__ = ("_bytes", "_ratio")

    def __init__(self, prefix: _PrefixMetrics, labels: tuple[str, str]) -> None:
        self._ratio = (prefix.hit_ratio.new.labels(*labels), prefix.hit_ratio.old)
        self._bytes = (prefix.hit_bytes.new.labels(*labels), prefix.hit_bytes.old)

    def matched(self, matched_bytes: int, total_bytes: int) -> None:
        for child in self._bytes:
            child.observe(matched_bytes)
        if total_bytes > 0:
            for child in self._ratio:
                child.observe(matched_bytes / total_bytes)


class _PrefixMetrics:
    """llm-d's ``prefix_indexer_*`` series, made when the first prefix index registers. The
    size is read from each index when the metrics are; an index whose plugin is gone (a reload
    replaced it) counts 0 and is not kept alive by its series. The older, unlabelled size is
    the sum over every index."""

    size: _Pair[Gauge]
    hit_ratio: _Pair[Histogram]
    hit_bytes: _Pair[Histogram]

    def __init__(self, registry: CollectorRegistry) -> None:
        for row in _PREFIX_METRICS:
            setattr(self, row.attr, _build(row, registry))
        self._entries: dict[tuple[str, str], Callable[[], Callable[[], int] | None]] = {}
        self.size.old.set_function(lambda: sum(self._read(k) for k in list(self._entries)))

    def _read(self, labels: tuple[str, str]) -> int:
        entries = self._entries[labels]()
        return entries() if entries is not None else 0

    def register(self, labels: tuple[str, str], entries: Callable[[], int]) -> PrefixIndexSeries:
        self._entries[labels] = (
            weakref.WeakMethod(entries) if inspect.ismethod(entries) else lambda: entries
        )
        self.size.new.labels(*labels).set_function(lambda: self._read(labels))
        return PrefixIndexSeries(self, labels)


def _build(row: _Metric, registry: CollectorRegistry) -> Any:
    made = []
    for name, labels in row.names:
        extra: dict[str, Any] = {"buckets": row.buckets} if row.buckets else {}
        made.append(row.kind(name, f"[ALPHA] {row.help}", labels, registry=registry, **extra))
    return made[0] if len(made) == 1 else _Pair(made[0], made[1])


class _Series:
    """The children of every per-model metric for one (model, target) pair, both names."""

    __slots__ = (
        "cached_tokens",
        "duration",
        "input_tokens",
        "output_tokens",
        "request_size",
        "response_size",
        "running",
    )

    def __init__(self, metrics: RouterMetrics, model: tuple[str, str]) -> None:
        def both(pair: _Pair[Any], *labels: str) -> tuple[Any, Any]:
            return pair.new.labels(*labels), pair.old.labels(*labels)

        self.request_size = both(metrics.request_size, *model)
        self.response_size = both(metrics.response_size, *model)
        self.duration = both(metrics.duration, *model)
        self.input_tokens = both(metrics.input_tokens, *model)
        self.output_tokens = both(metrics.output_tokens, *model)
        self.cached_tokens = both(metrics.cached_tokens, *model)
        self.running = both(metrics.running, model[0])


class RouterMetrics:
    """Every collector of the router, built from the table above into one registry."""

    requests: _Pair[Counter]
    errors: _Pair[Counter]
    duration: _Pair[Histogram]
    request_size: _Pair[Histogram]
    response_size: _Pair[Histogram]
    input_tokens: _Pair[Histogram]
    output_tokens: _Pair[Histogram]
    cached_tokens: _Pair[Histogram]
    running: _Pair[Gauge]
    scheduling: _Pair[Histogram]
    attempts: _Pair[Counter]
    plugin_duration: _Pair[Histogram]
    poll_errors: _Pair[Counter]
    extract_errors: _Pair[Counter]
    model_rewrites: _Pair[Counter]
    signal_age: Histogram
    config_reloads: Counter
    ready: _Pair[Gauge]
    info: _Pair[Gauge]

    def __init__(self, pool_name: str = "", registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.pool_name = pool_name
        self._model = _Capped()
        self._fairness = _Capped()
        self._by_model: dict[tuple[str, str], _Series] = {}
        self._by_request: dict[tuple[str, str, str, int], list[Any]] = {}
        self._by_endpoint: dict[tuple[str, str, str, int], list[Any]] = {}
        self._prefix: _PrefixMetrics | None = None
        for row in _METRICS:
            setattr(self, row.attr, _build(row, self.registry))
        self.info.new.labels("", "llmd-router").set(1)
        self.info.old.labels("", "llmd-router").set(1)

    # ------------------------------------------------------------------ recording
    # Children of labelled metrics are looked up once per label combination and kept: a
    # ``labels()`` call costs microseconds, and a request records a dozen series.

    def models(self, model: str | None, target: str | None) -> tuple[str, str]:
        return self._model(model), self._model(target)

    def _series(self, model: tuple[str, str]) -> _Series:
        series = self._by_model.get(model)
        if series is None:
            series = self._by_model[model] = _Series(self, model)
        return series

    def _counted(self, model: tuple[str, str], fairness_id: str, priority: int) -> list[Any]:
        key = (*model, fairness_id, priority)
        children = self._by_request.get(key)
        if children is None:
            fairness, p = self._fairness(fairness_id), str(priority)
            children = [
                self.requests.new.labels(*model, fairness, p),
                self.requests.old.labels(*model, p),
            ]
            self._by_request[key] = children
        return children

    def routed(
        self,
        model: tuple[str, str],
        fairness_id: str,
        priority: int,
        size: int,
        scheduling_seconds: float | None,
        endpoint_name: str,
        namespace: str,
        port: int,
    ) -> None:
        for child in self._counted(model, fairness_id, priority):
            child.inc()
        series = self._series(model)
        for child in series.request_size:
            child.observe(size)
        for child in series.running:
            child.inc()
        if scheduling_seconds is not None:
            self.scheduling.new.observe(scheduling_seconds)
            self.scheduling.old.observe(scheduling_seconds)
        key = (model[1], endpoint_name, namespace, port)
        attempts = self._by_endpoint.get(key)
        if attempts is None:
            labels = ("success", model[1], endpoint_name, namespace, str(port))
            attempts = self._by_endpoint[key] = [
                self.attempts.new.labels(*labels),
                self.attempts.old.labels(*labels),
            ]
        for child in attempts:
            child.inc()

    def scheduling_failed(self, target: str) -> None:
        self.attempts.new.labels("failure", target, "", "", "").inc()
        self.attempts.old.labels("failure", target, "", "", "").inc()

    def failed(
        self, model: tuple[str, str], error_code: str, fairness_id: str, priority: int
    ) -> None:
        fairness = self._fairness(fairness_id)
        self.errors.new.labels(*model, error_code, fairness, str(priority)).inc()
        self.errors.old.labels(*model, error_code).inc()

    def finished(
        self,
        model: tuple[str, str],
        seconds: float,
        response_bytes: int,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        cached_tokens: int | None,
    ) -> None:
        series = self._series(model)
        for child in series.running:
            child.dec()
        for child in series.duration:
            child.observe(seconds)
        if response_bytes:
            for child in series.response_size:
                child.observe(response_bytes)
        for children, value in (
            (series.input_tokens, prompt_tokens),
            (series.output_tokens, completion_tokens),
            (series.cached_tokens, cached_tokens),
        ):
            if value is not None:
                for child in children:
                    child.observe(value)

    def plugin_timer(
        self, extension_point: str, plugin_type: str, plugin_name: str
    ) -> Callable[[float], None]:
        """An observer for one plugin at one extension point, under both metric names."""
        new = self.plugin_duration.new.labels(extension_point, plugin_type, plugin_name)
        old = self.plugin_duration.old.labels(extension_point, plugin_type, plugin_name)

        def observe(seconds: float) -> None:
            new.observe(seconds)
            old.observe(seconds)

        return observe

    def model_rewritten(self, resource: str, model: str, target: str) -> None:
        model, target = self._model(model), self._model(target)
        self.model_rewrites.new.labels(resource, model, target).inc()
        self.model_rewrites.old.labels(resource, model, target).inc()

    def poll_failed(self, source_type: str) -> None:
        self.poll_errors.new.labels(source_type).inc()
        self.poll_errors.old.labels(source_type).inc()

    def extract_failed(self, source_type: str, extractor_type: str) -> None:
        self.extract_errors.new.labels(source_type, extractor_type).inc()
        self.extract_errors.old.labels(source_type, extractor_type).inc()

    def prefix_index(
        self, plugin_type: str, plugin_name: str, entries: Callable[[], int]
    ) -> PrefixIndexSeries:
        """The series of one prefix index (``llm_d_epp_prefix_indexer_*``, labelled by plugin,
        and llm-d's older unlabelled ``inference_extension_prefix_indexer_*``)."""
        if self._prefix is None:
            self._prefix = _PrefixMetrics(self.registry)
        return self._prefix.register((plugin_name, plugin_type), entries)

    def count_ready(self, count: Callable[[], int]) -> None:
        """The ready-endpoints gauges read ``count()`` each time the page is rendered."""
        self.ready.new.labels(self.pool_name).set_function(count)
        self.ready.old.labels(self.pool_name).set_function(count)
