"""The router's Prometheus metrics, with llm-d's names.

Every series with a canonical ``llm_d_epp_*`` name is also emitted under its older name
(``inference_objective_*``, ``inference_extension_*``, ``inference_pool_*``) so that existing
dashboards keep working, as llm-d itself does. Label values for model names are capped at 1,000
distinct values; the rest are reported as ``other``. All collectors live in one registry owned
by the application (no module-level state), so tests can build as many as they need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RouterMetrics"]

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
    def __init__(self, pool_name: str = "", registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.pool_name = pool_name
        self._model = _Capped()
        self._fairness = _Capped()
        self._by_model: dict[tuple[str, str], _Series] = {}
        self._by_request: dict[tuple[str, str, str, int], list[Any]] = {}
        self._by_endpoint: dict[tuple[str, str, str, int], list[Any]] = {}
        r = self.registry

        def counter(name: str, help_text: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, f"[ALPHA] {help_text}", labels, registry=r)

        def histogram(
            name: str, help_text: str, labels: tuple[str, ...], buckets: tuple[float, ...]
        ) -> Histogram:
            return Histogram(name, f"[ALPHA] {help_text}", labels, buckets=buckets, registry=r)

        def gauge(name: str, help_text: str, labels: tuple[str, ...]) -> Gauge:
            return Gauge(name, f"[ALPHA] {help_text}", labels, registry=r)

        self.requests = counter(
            "llm_d_epp_request", "Requests routed.", (*_MODEL, "fairness_id", "priority")
        )
        self.requests_old = counter(
            "inference_objective_request", "Requests routed.", (*_MODEL, "priority")
        )
        self.errors = counter(
            "llm_d_epp_request_error",
            "Requests that failed, by error code.",
            (*_MODEL, "error_code", "fairness_id", "priority"),
        )
        self.errors_old = counter(
            "inference_objective_request_error",
            "Requests that failed, by error code.",
            (*_MODEL, "error_code"),
        )
        self.duration = _Pair(
            histogram(
                "llm_d_epp_request_duration_seconds",
                "Time from request received to response complete.",
                _MODEL,
                _LATENCY,
            ),
            histogram(
                "inference_objective_request_duration_seconds",
                "Time from request received to response complete.",
                _MODEL,
                _LATENCY,
            ),
        )
        self.request_size = _Pair(
            histogram("llm_d_epp_request_size_bytes", "Request body size.", _MODEL, _REQUEST_BYTES),
            histogram(
                "inference_objective_request_sizes", "Request body size.", _MODEL, _REQUEST_BYTES
            ),
        )
        self.response_size = _Pair(
            histogram(
                "llm_d_epp_response_size_bytes", "Response body size.", _MODEL, _RESPONSE_BYTES
            ),
            histogram(
                "inference_objective_response_sizes", "Response body size.", _MODEL, _RESPONSE_BYTES
            ),
        )
        self.input_tokens = _Pair(
            histogram(
                "llm_d_epp_request_input_tokens", "Prompt tokens per request.", _MODEL, _TOKENS
            ),
            histogram(
                "inference_objective_input_tokens", "Prompt tokens per request.", _MODEL, _TOKENS
            ),
        )
        self.output_tokens = _Pair(
            histogram(
                "llm_d_epp_request_output_tokens", "Output tokens per request.", _MODEL, _TOKENS
            ),
            histogram(
                "inference_objective_output_tokens", "Output tokens per request.", _MODEL, _TOKENS
            ),
        )
        self.cached_tokens = _Pair(
            histogram(
                "llm_d_epp_request_cached_tokens",
                "Cached prompt tokens per request.",
                _MODEL,
                _TOKENS,
            ),
            histogram(
                "inference_objective_prompt_cached_tokens",
                "Cached prompt tokens per request.",
                _MODEL,
                _TOKENS,
            ),
        )
        self.running = _Pair(
            gauge("llm_d_epp_request_running", "Requests in flight.", ("model_name",)),
            gauge("inference_objective_running_requests", "Requests in flight.", ("model_name",)),
        )
        self.scheduling = _Pair(
            histogram(
                "llm_d_epp_scheduler_e2e_duration_seconds",
                "Time to choose an endpoint.",
                (),
                _SCHEDULING,
            ),
            histogram(
                "inference_extension_scheduler_e2e_duration_seconds",
                "Time to choose an endpoint.",
                (),
                _SCHEDULING,
            ),
        )
        self.attempts = counter(
            "llm_d_epp_scheduler_attempts",
            "Scheduling attempts.",
            ("status", "target_model_name", "endpoint_name", "namespace", "port"),
        )
        self.attempts_old = counter(
            "inference_extension_scheduler_attempts",
            "Scheduling attempts.",
            ("status", "target_model_name", "pod_name", "namespace", "port"),
        )
        self.plugin_duration = _Pair(
            histogram(
                "llm_d_epp_plugin_duration_seconds",
                "Time spent in one plugin call.",
                ("extension_point", "plugin_type", "plugin_name"),
                _SCHEDULING,
            ),
            histogram(
                "inference_extension_plugin_duration_seconds",
                "Time spent in one plugin call.",
                ("extension_point", "plugin_type", "plugin_name"),
                _SCHEDULING,
            ),
        )
        self.poll_errors = _Pair(
            counter(
                "llm_d_epp_datalayer_poll_errors",
                "Failed polls of an endpoint's data source.",
                ("source_type",),
            ),
            counter(
                "llm_d_inference_scheduler_datalayer_poll_errors",
                "Failed polls of an endpoint's data source.",
                ("source_type",),
            ),
        )
        self.extract_errors = _Pair(
            counter(
                "llm_d_epp_datalayer_extract_errors",
                "Extractions that could not read every signal they map.",
                ("source_type", "extractor_type"),
            ),
            counter(
                "llm_d_inference_scheduler_datalayer_extract_errors",
                "Extractions that could not read every signal they map.",
                ("source_type", "extractor_type"),
            ),
        )
        self.model_rewrites = _Pair(
            counter(
                "llm_d_epp_model_rewrite_decisions",
                "Requests whose model an InferenceModelRewrite rule replaced.",
                ("model_rewrite_name", "model_name", "target_model"),
            ),
            counter(
                "inference_extension_model_rewrite_decisions",
                "Requests whose model an InferenceModelRewrite rule replaced.",
                ("model_rewrite_name", "model_name", "target_model"),
            ),
        )
        self.signal_age = histogram(
            "llmd_router_signal_age_seconds",
            "Age of the chosen endpoint's model-server signals when it was chosen.",
            (),
            _SIGNAL_AGE,
        )
        self.config_reloads = counter(
            "llmd_router_config_reloads",
            "Configuration reloads, by result (success or error).",
            ("result",),
        )
        self.ready = _Pair(
            gauge("llm_d_epp_ready_endpoints", _READY_HELP, ("name",)),
            gauge("inference_pool_ready_pods", _READY_HELP, ("name",)),
        )
        info = gauge("llm_d_epp_info", "Build information.", ("commit", "build_ref"))
        info.labels("", "llmd-router").set(1)
        info_old = gauge("inference_extension_info", "Build information.", ("commit", "build_ref"))
        info_old.labels("", "llmd-router").set(1)

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
                self.requests.labels(*model, fairness, p),
                self.requests_old.labels(*model, p),
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
                self.attempts.labels(*labels),
                self.attempts_old.labels(*labels),
            ]
        for child in attempts:
            child.inc()

    def scheduling_failed(self, target: str) -> None:
        self.attempts.labels("failure", target, "", "", "").inc()
        self.attempts_old.labels("failure", target, "", "", "").inc()

    def failed(
        self, model: tuple[str, str], error_code: str, fairness_id: str, priority: int
    ) -> None:
        self.errors.labels(*model, error_code, self._fairness(fairness_id), str(priority)).inc()
        self.errors_old.labels(*model, error_code).inc()

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

    def count_ready(self, count: Callable[[], int]) -> None:
        """The ready-endpoints gauges read ``count()`` each time the page is rendered."""
        self.ready.new.labels(self.pool_name).set_function(count)
        self.ready.old.labels(self.pool_name).set_function(count)
