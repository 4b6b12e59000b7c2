"""vLLM's ``/metrics`` page for one simulated server.

The page has vLLM 0.32's families, label sets and bucket boundaries, in the Prometheus text
format that ``prometheus_client`` writes (sorted label names, ``_created`` series, Go-style
floats), so that a scraper meets the same names, shapes and size (about 45 KB once every histogram
has data) as on a real server.

Rendering is done here rather than by ``prometheus_client``: that library takes 3.4 ms to write a
page this size on this machine, and a fleet of 32 servers scraped every 50 ms would spend two
cores on it. Every static byte (HELP/TYPE lines, label sets, bucket prefixes, ``_created`` series)
is built once; a render only formats numbers, and an unchanged server serves its cached page.

``vllm:lora_requests_info`` behaves as in vLLM: each change of the running/waiting adapter sets
adds a series whose value is the time of the change, and old series stay on the page (readers
take the newest). The simulator keeps the 32 most recent.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from llmd_sim.engine import EngineStats, Seq

if TYPE_CHECKING:
    from llmd_sim.config import ServerConfig

__all__ = ["ServerMetrics"]

_LATENCY_TTFT: Final = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
_LATENCY_ITL: Final = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
_LATENCY_REQUEST: Final = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
_HTTP_HIGHR: Final = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    2.5,
    3.0,
    3.5,
    4.0,
    4.5,
    5.0,
    7.5,
    10.0,
    30.0,
    60.0,
)
_HTTP_FEW: Final = (0.1, 0.5, 1.0)
_LORA_SERIES_KEPT: Final = 32


def _one_two_five(limit: int) -> tuple[float, ...]:
    """1, 2, 5, 10, 20, 50, ... up to ``limit`` (vLLM's buckets for token counts)."""
    out: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > limit:
                return tuple(out)
            out.append(float(value))
        exponent += 1


def _fmt(value: float) -> str:
    """A float as prometheus_client writes it (Go's formatting: 1.7e+09, +Inf)."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: dict[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(pairs.items()))


class _Histogram:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


class _HistogramText:
    """Precomputed lines of one labelled histogram series."""

    __slots__ = ("bucket_prefixes", "count_prefix", "sum_prefix")

    def __init__(self, name: str, labels: dict[str, str], bounds: Sequence[float]) -> None:
        les = [*(_fmt(b) for b in bounds), "+Inf"]
        self.bucket_prefixes = [f"{name}_bucket{{{_labels({**labels, 'le': le})}}} " for le in les]
        base = _labels(labels)
        sep = f"{{{base}}}" if base else ""
        self.count_prefix = f"{name}_count{sep} "
        self.sum_prefix = f"{name}_sum{sep} "

    def render(self, out: list[str], hist: _Histogram) -> None:
        running = 0
        for prefix, n in zip(self.bucket_prefixes, hist.counts, strict=True):
            running += n
            out.append(f"{prefix}{running}.0\n")
        out.append(f"{self.count_prefix}{hist.count}.0\n{self.sum_prefix}{_fmt(hist.sum)}\n")


# name, help, bounds (None: token-count buckets up to max-model-len), observed by
_HISTOGRAMS: Final[tuple[tuple[str, str, tuple[float, ...] | None], ...]] = (
    ("vllm:request_prompt_tokens", "Number of prefill tokens processed.", None),
    ("vllm:request_generation_tokens", "Number of generation tokens processed.", None),
    (
        "vllm:iteration_tokens_total",
        "Histogram of number of tokens per engine_step.",
        (1.0, *(float(8 << i) for i in range(12))),
    ),
    (
        "vllm:request_max_num_generation_tokens",
        "Histogram of maximum number of requested generation tokens.",
        None,
    ),
    ("vllm:request_params_n", "Histogram of the n request parameter.", (1.0, 2.0, 5.0, 10.0, 20.0)),
    ("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", None),
    (
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        _LATENCY_TTFT,
    ),
    (
        "vllm:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        _LATENCY_ITL,
    ),
    (
        "vllm:request_time_per_output_token_seconds",
        "Histogram of time_per_output_token_seconds per request.",
        _LATENCY_ITL,
    ),
    (
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        _LATENCY_REQUEST,
    ),
    (
        "vllm:request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request.",
        _LATENCY_REQUEST,
    ),
    (
        "vllm:request_inference_time_seconds",
        "Histogram of time spent in RUNNING phase for request.",
        _LATENCY_REQUEST,
    ),
    (
        "vllm:request_prefill_time_seconds",
        "Histogram of time spent in PREFILL phase for request.",
        _LATENCY_REQUEST,
    ),
    (
        "vllm:request_decode_time_seconds",
        "Histogram of time spent in DECODE phase for request.",
        _LATENCY_REQUEST,
    ),
    (
        "vllm:request_num_preemptions",
        "Number of preemptions per request.",
        (1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0),
    ),
    (
        "vllm:request_prefill_kv_computed_tokens",
        "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
        None,
    ),
)

_Value = Callable[[EngineStats], float]

# name (without _total), help, extra label name, {label value: getter} or a single getter
_COUNTERS: Final[tuple[tuple[str, str, str | None, dict[str, _Value]], ...]] = (
    (
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        None,
        {"": lambda s: s.prefix_queries},
    ),
    (
        "vllm:prefix_cache_hits",
        "Prefix cache hits, in terms of number of cached tokens.",
        None,
        {"": lambda s: s.prefix_hits},
    ),
    (
        "vllm:external_prefix_cache_queries",
        "External prefix cache queries from KV connector cross-instance cache sharing, in terms "
        "of number of queried tokens.",
        None,
        {"": lambda s: 0},
    ),
    (
        "vllm:external_prefix_cache_hits",
        "External prefix cache hits from KV connector cross-instance cache sharing, in terms of "
        "number of cached tokens.",
        None,
        {"": lambda s: 0},
    ),
    (
        "vllm:mm_cache_queries",
        "Multi-modal cache queries, in terms of number of queried items.",
        None,
        {"": lambda s: 0},
    ),
    (
        "vllm:mm_cache_hits",
        "Multi-modal cache hits, in terms of number of cached items.",
        None,
        {"": lambda s: 0},
    ),
    (
        "vllm:num_preemptions",
        "Cumulative number of preemption from the engine.",
        None,
        {"": lambda s: s.preemptions},
    ),
    (
        "vllm:prompt_tokens",
        "Number of prefill tokens processed.",
        None,
        {"": lambda s: s.prompt_tokens},
    ),
    (
        "vllm:prompt_tokens_by_source",
        "Number of prompt tokens by source.",
        "source",
        {
            "local_compute": lambda s: s.prompt_tokens - s.prefix_hits,
            "local_cache_hit": lambda s: s.prefix_hits,
            "external_kv_transfer": lambda s: 0,
        },
    ),
    (
        "vllm:prompt_tokens_cached",
        "Number of cached prompt tokens (local + external).",
        None,
        {"": lambda s: s.prefix_hits},
    ),
    (
        "vllm:prompt_tokens_cached_by_source",
        "Prefix-cache hit tokens by the cache tier that supplied them.",
        "source",
        {
            "device": lambda s: s.prefix_hits,
            "host": lambda s: 0,
            "p2p": lambda s: 0,
            "disk": lambda s: 0,
            "external_unspecified": lambda s: 0,
        },
    ),
    (
        "vllm:generation_tokens",
        "Number of generation tokens processed.",
        None,
        {"": lambda s: s.generation_tokens},
    ),
    (
        "vllm:request_success",
        "Count of successfully processed requests.",
        "finished_reason",
        {
            "stop": lambda s: s.finished["stop"],
            "length": lambda s: s.finished["length"],
            "abort": lambda s: s.finished["abort"],
            "error": lambda s: s.finished["error"],
            "repetition": lambda s: 0,
        },
    ),
)


class ServerMetrics:
    """Collects a server's observations and renders its page. Implements EngineObserver."""

    def __init__(self, config: ServerConfig, stats: Callable[[], EngineStats]) -> None:
        self._stats = stats
        self._model = config.model_names[0]
        self._max_loras = config.max_loras
        self._has_lora = bool(config.lora_modules)
        created = time.time()
        base = {"engine": "0", "model_name": self._model}
        self._base = _labels(base)
        token_buckets = _one_two_five(config.max_model_len)
        self.histograms: dict[str, _Histogram] = {}
        self._histogram_text: list[tuple[str, _HistogramText, _Histogram, str]] = []
        for name, help_text, bounds in _HISTOGRAMS:
            hist = _Histogram(bounds if bounds is not None else token_buckets)
            self.histograms[name] = hist
            head = f"# HELP {name} {help_text}\n# TYPE {name} histogram\n"
            tail = (
                f"# HELP {name}_created {help_text}\n# TYPE {name}_created gauge\n"
                f"{name}_created{{{self._base}}} {_fmt(created)}\n"
            )
            self._histogram_text.append((head, _HistogramText(name, base, hist.bounds), hist, tail))
        self._counter_text: list[tuple[str, list[tuple[str, _Value]], str]] = []
        for name, help_text, label, values in _COUNTERS:
            series = []
            created_lines = []
            for label_value, getter in values.items():
                labels = _labels({**base, label: label_value}) if label else self._base
                series.append((f"{name}_total{{{labels}}} ", getter))
                created_lines.append(f"{name}_created{{{labels}}} {_fmt(created)}\n")
            head = f"# HELP {name}_total {help_text}\n# TYPE {name}_total counter\n"
            tail = f"# HELP {name}_created {help_text}\n# TYPE {name}_created gauge\n" + "".join(
                created_lines
            )
            self._counter_text.append((head, series, tail))
        cache = config.cache
        info = {
            "block_size": str(cache.block_size),
            "cache_dtype": "auto",
            "enable_prefix_caching": str(cache.enable_prefix_caching),
            "engine": "0",
            "gpu_memory_utilization": "0.9",
            "kv_cache_size_tokens": str(cache.num_blocks * cache.block_size),
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(cache.num_blocks),
            "num_gpu_blocks_override": "None",
            "prefix_caching_hash_algo": "xxhash64_sim",
            "sliding_window": "None",
        }
        self._cache_info = (
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
            "# TYPE vllm:cache_config_info gauge\n"
            f"vllm:cache_config_info{{{_labels(info)}}} 1.0\n"
        )
        self._rejections_created = _fmt(created)
        self.queue_rejections = 0
        self._lora_series: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._http_count: dict[tuple[str, str, str], int] = {}
        self._http_size: dict[str, list[float]] = {}
        self._http_highr = _Histogram(_HTTP_HIGHR)
        self._http_highr_text = _HistogramText(
            "http_request_duration_highr_seconds", {}, _HTTP_HIGHR
        )
        self._http_few: dict[tuple[str, str], tuple[_Histogram, _HistogramText]] = {}
        self._cached_page = b""
        self._cached_key: tuple[object, ...] = ()

    # ------------------------------------------------------------------ EngineObserver

    def on_admitted(self, seq: Seq, now: float) -> None:
        pass

    def on_first_token(self, seq: Seq, now: float) -> None:
        self.histograms["vllm:time_to_first_token_seconds"].observe(now - seq.arrival)

    def on_token_gap(self, seconds: float) -> None:
        self.histograms["vllm:inter_token_latency_seconds"].observe(seconds)

    def on_finished(self, seq: Seq, now: float) -> None:
        h = self.histograms
        if seq.finish_reason == "abort" or seq.first_token_at is None:
            return
        admitted = seq.admitted_at if seq.admitted_at is not None else seq.arrival
        prompt = len(seq.prompt.token_ids)
        h["vllm:e2e_request_latency_seconds"].observe(now - seq.arrival)
        h["vllm:request_queue_time_seconds"].observe(admitted - seq.arrival)
        h["vllm:request_inference_time_seconds"].observe(now - admitted)
        h["vllm:request_prefill_time_seconds"].observe(seq.first_token_at - admitted)
        h["vllm:request_decode_time_seconds"].observe(now - seq.first_token_at)
        if seq.generated > 1:
            h["vllm:request_time_per_output_token_seconds"].observe(
                (now - seq.first_token_at) / (seq.generated - 1)
            )
        h["vllm:request_prompt_tokens"].observe(prompt)
        h["vllm:request_generation_tokens"].observe(seq.generated)
        h["vllm:request_params_max_tokens"].observe(seq.max_tokens)
        h["vllm:request_max_num_generation_tokens"].observe(seq.max_tokens)
        h["vllm:request_num_preemptions"].observe(seq.preemptions)
        h["vllm:request_prefill_kv_computed_tokens"].observe(prompt - seq.cached_tokens)

    # ------------------------------------------------------------------ other observations

    def on_iteration(self, tokens: int) -> None:
        self.histograms["vllm:iteration_tokens_total"].observe(tokens)

    def on_request(self, n: int) -> None:
        self.histograms["vllm:request_params_n"].observe(n)

    def on_http(
        self,
        handler: str,
        method: str,
        status: int,
        seconds: float,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        """One answered HTTP request, as vLLM's FastAPI instrumentator records it."""
        key = (handler, method, f"{status // 100}xx")
        self._http_count[key] = self._http_count.get(key, 0) + 1
        sizes = self._http_size.setdefault(handler, [0, 0.0, 0.0])
        sizes[0] += 1
        sizes[1] += request_bytes
        sizes[2] += response_bytes
        self._http_highr.observe(seconds)
        few = self._http_few.get((handler, method))
        if few is None:
            text = _HistogramText(
                "http_request_duration_seconds", {"handler": handler, "method": method}, _HTTP_FEW
            )
            few = self._http_few[(handler, method)] = (_Histogram(_HTTP_FEW), text)
        few[0].observe(seconds)

    def _note_lora(self, stats: EngineStats) -> None:
        key = (",".join(stats.running_loras), ",".join(stats.waiting_loras))
        if key in self._lora_series:
            if next(reversed(self._lora_series)) == key:
                return  # unchanged: the newest series keeps its time
            del self._lora_series[key]
        self._lora_series[key] = time.time()
        while len(self._lora_series) > _LORA_SERIES_KEPT:
            self._lora_series.popitem(last=False)

    # ------------------------------------------------------------------ rendering

    def render(self) -> bytes:
        stats = self._stats()
        if self._has_lora:
            self._note_lora(stats)
        key = (
            stats.running,
            stats.waiting,
            stats.kv_blocks_used,
            stats.generation_tokens,
            stats.prompt_tokens,
            sum(stats.finished.values()),
            self._http_highr.count,
            self.queue_rejections,
            len(self._lora_series),
        )
        if key == self._cached_key:
            return self._cached_page
        page = self._render(stats).encode()
        self._cached_key, self._cached_page = key, page
        return page

    def _render(self, stats: EngineStats) -> str:
        base = self._base
        m = self._model_label()
        out: list[str] = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{{{base}}} {float(stats.running)}\n"
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{{{base}}} {float(stats.waiting)}\n"
            "# HELP vllm:num_requests_waiting_by_reason Number of waiting requests by reason.\n"
            "# TYPE vllm:num_requests_waiting_by_reason gauge\n"
            f'vllm:num_requests_waiting_by_reason{{{base},reason="capacity"}} '
            f"{float(stats.waiting - stats.waiting_deferred)}\n"
            f'vllm:num_requests_waiting_by_reason{{{base},reason="deferred"}} '
            f"{float(stats.waiting_deferred)}\n"
            "# HELP vllm:engine_sleep_state Engine sleep state; awake = 1 means engine is awake.\n"
            "# TYPE vllm:engine_sleep_state gauge\n"
            f'vllm:engine_sleep_state{{{base},sleep_state="awake"}} 1.0\n'
            f'vllm:engine_sleep_state{{{base},sleep_state="weights_offloaded"}} 0.0\n'
            f'vllm:engine_sleep_state{{{base},sleep_state="discard_all"}} 0.0\n'
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f"vllm:kv_cache_usage_perc{{{base}}} {_fmt(stats.kv_usage)}\n"
        ]
        for head, series, tail in self._counter_text:
            out.append(head)
            out.extend(f"{prefix}{_fmt(getter(stats))}\n" for prefix, getter in series)
            out.append(tail)
        out.append(
            "# HELP vllm:admission_rejections_total Number of admission attempts rejected by a "
            "queue limit, by reason.\n# TYPE vllm:admission_rejections_total counter\n"
            f'vllm:admission_rejections_total{{{m},reason="max_num_queued_reqs"}} '
            f"{float(self.queue_rejections)}\n"
            f'vllm:admission_rejections_total{{{m},reason="max_num_queued_tokens"}} 0.0\n'
            "# HELP vllm:admission_rejections_created Number of admission attempts rejected by a "
            "queue limit, by reason.\n# TYPE vllm:admission_rejections_created gauge\n"
            f'vllm:admission_rejections_created{{{m},reason="max_num_queued_reqs"}} '
            f"{self._rejections_created}\n"
            f'vllm:admission_rejections_created{{{m},reason="max_num_queued_tokens"}} '
            f"{self._rejections_created}\n"
        )
        for head, text, hist, tail in self._histogram_text:
            out.append(head)
            text.render(out, hist)
            out.append(tail)
        out.append(self._cache_info)
        if self._has_lora:
            out.append(
                "# HELP vllm:lora_requests_info Running stats on lora requests.\n"
                "# TYPE vllm:lora_requests_info gauge\n"
            )
            for (running, waiting), stamp in self._lora_series.items():
                labels = _labels(
                    {
                        "max_lora": str(self._max_loras),
                        "running_lora_adapters": running,
                        "waiting_lora_adapters": waiting,
                    }
                )
                out.append(f"vllm:lora_requests_info{{{labels}}} {_fmt(stamp)}\n")
        self._render_http(out)
        return "".join(out)

    def _model_label(self) -> str:
        return _labels({"model_name": self._model})

    def _render_http(self, out: list[str]) -> None:
        out.append(
            "# HELP http_requests_total Total number of requests by method, status and "
            "handler.\n# TYPE http_requests_total counter\n"
        )
        for (handler, method, status), count in self._http_count.items():
            labels = _labels({"handler": handler, "method": method, "status": status})
            out.append(f"http_requests_total{{{labels}}} {float(count)}\n")
        for name, index in (("http_request_size_bytes", 1), ("http_response_size_bytes", 2)):
            kind = "incoming requests" if index == 1 else "outgoing responses"
            out.append(
                f"# HELP {name} Content length of {kind} by handler.\n# TYPE {name} summary\n"
            )
            for handler, sizes in self._http_size.items():
                labels = _labels({"handler": handler})
                out.append(
                    f"{name}_count{{{labels}}} {float(sizes[0])}\n"
                    f"{name}_sum{{{labels}}} {float(sizes[index])}\n"
                )
        out.append(
            "# HELP http_request_duration_highr_seconds Latency with many buckets but no "
            "API specific labels.\n# TYPE http_request_duration_highr_seconds histogram\n"
        )
        self._http_highr_text.render(out, self._http_highr)
        out.append(
            "# HELP http_request_duration_seconds Latency with only few buckets by "
            "handler.\n# TYPE http_request_duration_seconds histogram\n"
        )
        for hist, text in self._http_few.values():
            text.render(out, hist)
