"""The time of one scheduling decision, at 10 to 1,000 endpoints, in this process.

Scenarios, each over the same seeded fleet (random queue lengths, running requests, KV-cache
usage, LoRA adapters and roles) rebuilt for every run:

- ``schedule``: ``pipeline.scheduler.schedule`` alone with the default profile (queue-scorer 2,
  kv-cache-utilization-scorer 2, max-score-picker), over a request parsed once;
- ``route``: ``Director.route`` then ``settle`` with the default profile, for a chat request of
  about 1,000 tokens: body parsing, candidates, producers, scheduler, hooks and metrics;
- ``route-heavy``: the same with decode-filter, queue-scorer, kv-cache-utilization-scorer,
  active-request-scorer (which brings inflight-load-producer), lora-affinity-scorer and
  max-score-picker.

Pipelines are built as the router builds them, plugin timers included (every plugin call is
observed into its histogram). The warm-up decisions of the ``route`` scenarios are left in
flight, so the in-flight counters that active-request-scorer reads are not all zero; each
measured decision is settled, so they do not grow. Each decision is timed alone with
``perf_counter_ns``, with the garbage collector on, as in production.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from llmd_router.config import API_VERSION, KIND, load_config
from llmd_router.datalayer import Endpoint, EndpointMetrics, EndpointStore
from llmd_router.framework import CycleState
from llmd_router.observability.metrics import RouterMetrics
from llmd_router.pipeline import Pipeline, build_pipeline
from llmd_router.plugins.builtin import builtin_registry
from llmd_router.requestcontrol import Director, Outcome

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["BUDGETS_US", "SCENARIOS", "Row", "measure", "measure_all", "table", "verdict"]

SCENARIOS: Final = ("schedule", "route", "route-heavy")
# p99 budgets of ARCHITECTURE.md, by endpoint count.
BUDGETS_US: Final = {100: 1_000.0, 1000: 10_000.0}

HEAVY_CONFIG: Final = f"""\
apiVersion: {API_VERSION}
kind: {KIND}
plugins:
- type: decode-filter
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: active-request-scorer
- type: lora-affinity-scorer
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: decode-filter
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: active-request-scorer
  - pluginRef: lora-affinity-scorer
  - pluginRef: max-score-picker
"""
_ADAPTERS: Final = tuple(f"adapter-{i}" for i in range(8))
_PATH: Final = "/v1/chat/completions"
_ROLES: Final = ("decode", "decode", "decode", "prefill")


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    endpoints: int
    decisions: int
    mean_us: float
    p50_us: float
    p99_us: float
    max_us: float


def fleet(count: int, seed: int) -> list[Endpoint]:
    """``count`` endpoints with varied signals, the same for the same seed."""
    rng = random.Random(seed)
    now = time.monotonic()
    endpoints = []
    for i in range(count):
        labels = {"llm-d.ai/role": rng.choice(_ROLES)}
        metrics = EndpointMetrics(
            waiting_queue_size=rng.randrange(0, 32),
            running_requests=rng.randrange(0, 256),
            kv_cache_usage=rng.random(),
            active_models=frozenset(rng.sample(_ADAPTERS, rng.randrange(0, 4))),
            max_active_models=4,
            updated_at=now,
        )
        address = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        endpoints.append(Endpoint(f"pod-{i}", address, 8000, labels=labels, metrics=metrics))
    return endpoints


def chat_body(tokens: int = 1000) -> bytes:
    """A chat completion request of about ``tokens`` prompt tokens (four bytes each)."""
    words = " ".join(f"w{i % 100:02d}" for i in range(tokens - 20))
    messages = [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": words},
    ]
    return json.dumps({"model": _ADAPTERS[1], "messages": messages, "max_tokens": 256}).encode()


def _summary(scenario: str, endpoints: int, samples_ns: list[int]) -> Row:
    ordered = sorted(samples_ns)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] / 1000

    return Row(scenario, endpoints, n, sum(ordered) / n / 1000, at(0.5), at(0.99), at(1.0))


def _pipeline(config: str | None, metrics: RouterMetrics, store: EndpointStore) -> Pipeline:
    return build_pipeline(
        load_config(config),
        builtin_registry(),
        timer=metrics.plugin_timer,
        inflight=store.inflight,
        pool=store,
    )


def _decide(scenario: str, store: EndpointStore, body: bytes) -> tuple[Callable[[int], None], int]:
    """One decision as a function of its index, and how many warm-up decisions to leave in
    flight (route scenarios only)."""
    metrics = RouterMetrics()
    pipeline = _pipeline(HEAVY_CONFIG if scenario == "route-heavy" else None, metrics, store)
    if scenario == "schedule":
        request = pipeline.parsers.resolve(_PATH).parse(_PATH, {":path": _PATH}, body, "bench")
        candidates = store.all()
        scheduler = pipeline.scheduler

        def schedule(_: int) -> None:
            scheduler.schedule(CycleState(), request, candidates)

        return schedule, 0
    director = Director(store, pipeline, metrics)
    decided = Outcome(decided=True)

    def route(i: int) -> None:
        headers = {":path": _PATH, "x-request-id": f"bench-{i}"}
        _, record = director.route(headers, body, {}, has_body=True, received_at=0.0)
        if i >= 0:
            director.settlement.settle(record, decided)

    return route, len(store) // 4


def measure(
    scenario: str, endpoints: int, decisions: int, *, seed: int = 0, warmup: int = 200
) -> Row:
    """Time ``decisions`` decisions of ``scenario`` over ``endpoints`` endpoints, after
    ``warmup`` untimed ones."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    store = EndpointStore(fleet(endpoints, seed))
    decide, in_flight = _decide(scenario, store, chat_body())
    for i in range(in_flight):  # negative indexes: routed, never settled
        decide(-1 - i)
    for i in range(warmup):
        decide(i)
    samples = []
    clock = time.perf_counter_ns
    for i in range(decisions):
        started = clock()
        decide(i)
        samples.append(clock() - started)
    return _summary(scenario, endpoints, samples)


def measure_all(
    endpoints: Sequence[int] = (10, 100, 1000),
    decisions: int = 2000,
    *,
    seed: int = 0,
    warmup: int = 200,
) -> list[Row]:
    return [
        measure(scenario, count, decisions, seed=seed, warmup=warmup)
        for count in endpoints
        for scenario in SCENARIOS
    ]


def table(rows: Sequence[Row]) -> str:
    """Markdown, one row per scenario and endpoint count."""
    lines = [
        "| endpoints | scenario | decisions | mean µs | p50 µs | p99 µs | max µs |",
        "|---|---|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {r.endpoints:,} | {r.scenario} | {r.decisions:,} | {r.mean_us:,.1f} | "
        f"{r.p50_us:,.1f} | {r.p99_us:,.1f} | {r.max_us:,.1f} |"
        for r in rows
    )
    return "\n".join(lines)


def verdict(rows: Sequence[Row]) -> str:
    """Each row that has a budget (100 and 1,000 endpoints), its p99 against it."""
    lines = []
    for r in rows:
        budget = BUDGETS_US.get(r.endpoints)
        if budget is None:
            continue
        status = "met" if r.p99_us <= budget else "MISSED"
        lines.append(
            f"- {r.scenario} at {r.endpoints:,} endpoints: p99 {r.p99_us:,.1f} µs "
            f"against ≤ {budget:,.0f} µs: {status}"
        )
    return "\n".join(lines)
