"""The cost of one simulated /metrics page: our renderer against prometheus_client's.

Both render the same page: a server is driven through a few requests so that every histogram has
data, its page is parsed, and a prometheus_client collector serves the parsed families to
``generate_latest``. The ratio of the two render times, measured in the same run, is the figure.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from llmd_sim.config import build_fleet
from llmd_sim.engine import Engine, Prompt, Seq
from llmd_sim.generation import SamplingSpec, plan_output
from llmd_sim.metrics import ServerMetrics
from llmd_sim.tokenizer import Tokenizer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

__all__ = ["RenderCost", "measure"]


@dataclass(frozen=True, slots=True)
class RenderCost:
    page_bytes: int
    ours_ms: float
    prometheus_client_ms: float

    @property
    def ratio(self) -> float:
        return self.prometheus_client_ms / self.ours_ms


class _Quiet:
    def on_token(self, seq: Seq, now: float) -> None:
        pass

    def on_finish(self, seq: Seq, now: float) -> None:
        pass


def loaded_metrics(requests: int = 20) -> ServerMetrics:
    """A server's metrics after ``requests`` requests, every family with data."""
    config = build_fleet(overrides={"preset": "llama-8b-h100"}, base_port=0).servers[0]
    engine = Engine(config)
    metrics = ServerMetrics(config, engine.statistics)
    engine.observer = metrics
    tokenizer = Tokenizer()
    rng = random.Random(0)
    now = 0.0
    for i in range(requests):
        prompt = tokenizer.encode(
            "The quick brown fox jumps over the lazy dog. " * (5 + i), add_bos=True
        )
        plan = plan_output(SamplingSpec(max_tokens=64), rng=rng, tokenizer=tokenizer, mean_len=40)
        engine.submit([Seq(Prompt(prompt), plan, _Quiet(), now, max_tokens=64)], now)
        while (deadline := engine.next_deadline()) is not None:
            now = deadline
            if produced := engine.advance(now):
                metrics.on_iteration(produced)
        metrics.on_request(1)
        metrics.on_http("/v1/completions", "POST", 200, 0.1 + i / 100, 800, 900)
    return metrics


def _per_call_ms(render: object, rounds: int) -> float:
    assert callable(render)
    start = time.perf_counter()
    for _ in range(rounds):
        render()
    return (time.perf_counter() - start) / rounds * 1000


def measure(rounds: int = 300) -> RenderCost:
    metrics = loaded_metrics()
    page = metrics.render()
    families = list(text_string_to_metric_families(page.decode()))

    class Replay(Collector):
        def collect(self) -> Iterator[Metric]:
            return iter(families)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Replay())

    def ours() -> bytes:
        metrics._cached_key = ()  # defeat the page cache: measure a real render
        return metrics.render()

    return RenderCost(
        page_bytes=len(page),
        ours_ms=_per_call_ms(ours, rounds),
        prometheus_client_ms=_per_call_ms(lambda: generate_latest(registry), rounds),
    )
