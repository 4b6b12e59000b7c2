"""The simulated /metrics page against a real vLLM 0.32 page and prometheus_client's parser."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from llmd_sim.config import build_fleet
from llmd_sim.engine import Engine, Prompt, Seq
from llmd_sim.generation import SamplingSpec, plan_output
from llmd_sim.metrics import ServerMetrics, _fmt
from llmd_sim.tokenizer import Tokenizer

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

DATA = Path(__file__).parents[2] / "data" / "vllm-0.32-cpu"
# Families of the real page that the simulator does not model (FLOP estimates; Python and
# process collectors of prometheus_client).
NOT_MODELLED = {
    "vllm:estimated_flops_per_gpu",
    "vllm:estimated_read_bytes_per_gpu",
    "vllm:estimated_write_bytes_per_gpu",
}


def families(text: str) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def loaded_server(lora: bool = False) -> tuple[Engine, ServerMetrics]:
    options: dict[str, object] = {"preset": "tiny", "max-model-len": 2048, "block-size": 16}
    if lora:
        options |= {"lora-modules": "a,b", "max-loras": 2}
    cfg = build_fleet(overrides=options, base_port=0).servers[0]
    engine = Engine(cfg)
    metrics = ServerMetrics(cfg, engine.statistics)
    engine.observer = metrics
    tok = Tokenizer()

    class Quiet:
        def on_token(self, seq: Seq, now: float) -> None: ...
        def on_finish(self, seq: Seq, now: float) -> None: ...

    now = 0.0
    for i in range(6):
        plan = plan_output(
            SamplingSpec(max_tokens=20, ignore_eos=True),
            rng=random.Random(i),
            tokenizer=tok,
            mean_len=10,
        )
        prompt = tok.encode("The quick brown fox jumps over the lazy dog. " * 20, add_bos=True)
        engine.submit(
            [
                Seq(
                    Prompt(prompt, "a" if lora and i % 2 else None),
                    plan,
                    Quiet(),
                    now,
                    max_tokens=20,
                )
            ],
            now,
        )
        while (deadline := engine.next_deadline()) is not None:
            now = deadline
            if produced := engine.advance(now):
                metrics.on_iteration(produced)
        metrics.on_request(1)
        metrics.on_http("/v1/completions", "POST", 200, 0.05, 900, 700)
    return engine, metrics


def test_page_parses_and_has_every_vllm_family_of_a_real_page():
    _, metrics = loaded_server()
    ours = families(metrics.render().decode())
    real = families((DATA / "metrics-after.txt").read_text())
    wanted = {
        name
        for name in real
        if name.startswith(("vllm:", "http_")) and not name.endswith("_created")
    } - NOT_MODELLED
    assert wanted <= set(ours), sorted(wanted - set(ours))
    for name in wanted:
        assert ours[name].type == real[name].type, name
        real_labels = {tuple(sorted(s.labels)) for s in real[name].samples}
        our_labels = {tuple(sorted(s.labels)) for s in ours[name].samples}
        if name != "vllm:cache_config_info":
            assert our_labels == real_labels, name


def test_counters_and_histograms_have_created_series_like_prometheus_client():
    _, metrics = loaded_server()
    names = set(families(metrics.render().decode()))
    assert {
        "vllm:prefix_cache_hits_created",
        "vllm:time_to_first_token_seconds_created",
        "vllm:request_success_created",
    } <= names


def test_page_is_about_as_large_as_a_real_one():
    _, metrics = loaded_server()
    size = len(metrics.render())
    real = len((DATA / "metrics-after.txt").read_bytes())
    assert 0.7 * real < size < 1.3 * real, (size, real)


def test_values_follow_the_engine():
    engine, metrics = loaded_server()
    fams = families(metrics.render().decode())

    def value(name: str, sample: str | None = None, **labels: str) -> float:
        for s in fams[name].samples:
            if (sample is None or s.name == sample) and all(
                s.labels.get(k) == v for k, v in labels.items()
            ):
                return s.value
        raise AssertionError(f"{name} {labels} missing")

    stats = engine.statistics()
    assert stats.prefix_hits > 0
    assert value("vllm:prefix_cache_hits", "vllm:prefix_cache_hits_total") == stats.prefix_hits
    assert (
        value("vllm:prefix_cache_queries", "vllm:prefix_cache_queries_total")
        == stats.prefix_queries
    )
    assert value("vllm:generation_tokens", "vllm:generation_tokens_total") == 120
    assert (
        value("vllm:request_success", "vllm:request_success_total", finished_reason="length") == 6
    )
    assert value("vllm:num_requests_running") == 0
    assert value("vllm:kv_cache_usage_perc") == 0.0
    assert value("vllm:time_to_first_token_seconds", "vllm:time_to_first_token_seconds_count") == 6
    assert (
        value("vllm:inter_token_latency_seconds", "vllm:inter_token_latency_seconds_count")
        == 6 * 19
    )
    info = next(iter(fams["vllm:cache_config_info"].samples))
    assert info.labels["block_size"] == "16" and info.labels["num_gpu_blocks"] == "4096"
    assert (
        value(
            "vllm:prompt_tokens_by_source",
            "vllm:prompt_tokens_by_source_total",
            source="local_cache_hit",
        )
        == stats.prefix_hits
    )


def test_unchanged_server_serves_the_cached_page():
    _, metrics = loaded_server()
    first = metrics.render()
    assert metrics.render() is first
    metrics.on_http("/v1/completions", "POST", 200, 0.01, 10, 10)
    assert metrics.render() is not first


def test_lora_info_keeps_old_series_with_their_time():
    _engine, metrics = loaded_server(lora=True)
    fams = families(metrics.render().decode())
    series = list(fams["vllm:lora_requests_info"].samples)
    assert series and all(
        set(s.labels) == {"max_lora", "running_lora_adapters", "waiting_lora_adapters"}
        for s in series
    )
    assert all(s.value > 1.6e9 for s in series)  # a Unix time, not a count
    newest = max(series, key=lambda s: s.value)
    assert newest.labels["running_lora_adapters"] == ""  # idle now


def test_no_lora_family_without_adapters():
    _, metrics = loaded_server()
    assert "vllm:lora_requests_info" not in families(metrics.render().decode())


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_float_formatting_matches_prometheus_client(value: float):
    assert _fmt(value) == floatToGoString(value)


@pytest.mark.parametrize("value", [0.0, 1.0, 1795513510.1397407, 12345678.0, 1e-7, math.inf])
def test_float_formatting_examples(value: float):
    assert _fmt(value) == floatToGoString(value)
