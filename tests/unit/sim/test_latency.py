"""The timing model: load factor, TTFT, ITL, jitter and time scale."""

from __future__ import annotations

import itertools
import random

import pytest

from llmd_sim.config import LatencyConfig
from llmd_sim.latency import LatencyModel

BASE = LatencyConfig(
    prefill_overhead=0.030,
    prefill_time_per_token=0.0002,
    inter_token_latency=0.012,
    time_factor_under_load=3.0,
    time_scale=1.0,
)


def model(max_num_seqs: int = 11, **changes: float) -> LatencyModel:
    fields = {
        "prefill_overhead": BASE.prefill_overhead,
        "prefill_time_per_token": BASE.prefill_time_per_token,
        "inter_token_latency": BASE.inter_token_latency,
        "time_factor_under_load": BASE.time_factor_under_load,
        "time_scale": BASE.time_scale,
        **changes,
    }
    return LatencyModel(LatencyConfig(**fields), max_num_seqs)


# --------------------------------------------------------------------------- load factor

LOAD = [
    # (id, time_factor_under_load, max_num_seqs, running, expected f(n))
    ("one-running", 3.0, 11, 1, 1.0),
    ("mid", 3.0, 11, 6, 2.0),  # 1 + 2 * 5/10
    ("quarter", 3.0, 11, 3, 1.4),  # 1 + 2 * 2/10
    ("full", 3.0, 11, 11, 3.0),
    ("beyond-max-clamped", 3.0, 11, 50, 3.0),
    ("zero-running-clamped", 3.0, 11, 0, 1.0),
    ("negative-running-clamped", 3.0, 11, -4, 1.0),
    ("factor-one", 1.0, 11, 11, 1.0),
    ("fractional-factor", 1.5, 5, 3, 1.25),  # 1 + 0.5 * 2/4
    ("two-seqs-full", 2.0, 2, 2, 2.0),
    ("single-seq-server", 4.0, 1, 1, 1.0),
    ("single-seq-server-overloaded", 4.0, 1, 9, 1.0),
]


@pytest.mark.parametrize(
    ("factor", "max_num_seqs", "running", "expected"),
    [c[1:] for c in LOAD],
    ids=[c[0] for c in LOAD],
)
def test_load_factor(factor: float, max_num_seqs: int, running: int, expected: float):
    """f(n) = 1 + (factor - 1)(n - 1)/(max_num_seqs - 1), n clamped to [1, max_num_seqs]."""
    lm = model(max_num_seqs, time_factor_under_load=factor)
    assert lm.load_factor(running) == pytest.approx(expected)


def test_load_factor_is_linear_and_monotonic():
    lm = model(11)
    values = [lm.load_factor(n) for n in range(1, 12)]
    steps = [b - a for a, b in itertools.pairwise(values)]
    assert steps == pytest.approx([0.2] * 10)


# --------------------------------------------------------------------------- TTFT and ITL

TTFT = [
    # (id, uncached tokens, running, expected seconds)
    ("no-tokens", 0, 1, 0.030),
    ("thousand-tokens", 1000, 1, 0.030 + 0.2),
    ("loaded", 1000, 6, 2.0 * (0.030 + 0.2)),
    ("full-batch", 100, 11, 3.0 * (0.030 + 0.02)),
    ("over-full", 100, 99, 3.0 * (0.030 + 0.02)),
    ("negative-tokens-count-as-zero", -5, 1, 0.030),
]


@pytest.mark.parametrize(
    ("uncached", "running", "expected"), [c[1:] for c in TTFT], ids=[c[0] for c in TTFT]
)
def test_ttft(uncached: int, running: int, expected: float):
    """TTFT = time_scale * f(n) * (overhead + uncached * per_token)."""
    assert model().ttft(uncached, running, random.Random(0)) == pytest.approx(expected)


ITL = [
    ("one-running", 1, 0.012),
    ("mid", 6, 0.024),
    ("full", 11, 0.036),
    ("over-full", 30, 0.036),
]


@pytest.mark.parametrize(("running", "expected"), [c[1:] for c in ITL], ids=[c[0] for c in ITL])
def test_itl(running: int, expected: float):
    """ITL = time_scale * f(n) * inter_token_latency."""
    assert model().itl(running, random.Random(0)) == pytest.approx(expected)


@pytest.mark.parametrize("scale", [0.1, 0.5, 2.0, 1e-6], ids=str)
def test_time_scale_multiplies(scale: float):
    plain, scaled = model(), model(time_scale=scale)
    for running in (1, 6, 11):
        assert scaled.ttft(500, running, random.Random(0)) == pytest.approx(
            scale * plain.ttft(500, running, random.Random(0))
        )
        assert scaled.itl(running, random.Random(0)) == pytest.approx(
            scale * plain.itl(running, random.Random(0))
        )


@pytest.mark.parametrize("scale", [0.1, 3.0], ids=str)
def test_time_scale_also_scales_jitter(scale: float):
    """With the same random draws, a scaled model's jittered delays are scaled exactly."""
    plain = model(prefill_time_std_dev=0.01, inter_token_latency_std_dev=0.004)
    scaled = model(prefill_time_std_dev=0.01, inter_token_latency_std_dev=0.004, time_scale=scale)
    for seed in range(50):
        assert scaled.ttft(100, 3, random.Random(seed)) == pytest.approx(
            scale * plain.ttft(100, 3, random.Random(seed))
        )
        assert scaled.itl(3, random.Random(seed)) == pytest.approx(
            scale * plain.itl(3, random.Random(seed))
        )


# --------------------------------------------------------------------------- jitter


def test_no_jitter_without_std_dev():
    """std dev 0: every delay is exactly the mean and no randomness is consumed."""
    lm = model()
    rng = random.Random(42)
    state = rng.getstate()
    ttfts = {lm.ttft(100, 3, rng) for _ in range(20)}
    itls = {lm.itl(3, rng) for _ in range(20)}
    assert len(ttfts) == len(itls) == 1
    assert ttfts.pop() == pytest.approx(1.4 * 0.050)  # f(3) = 1 + 2 * 2/10
    assert itls.pop() == pytest.approx(1.4 * 0.012)
    assert rng.getstate() == state


JITTER = [
    # (id, std dev as a multiple of the mean)
    ("small", 0.1),
    ("large", 1.0),
    ("huge", 10.0),
]


@pytest.mark.parametrize("ratio", [c[1] for c in JITTER], ids=[c[0] for c in JITTER])
def test_ttft_jitter_clamped(ratio: float):
    """Jitter is normal around the mean, clamped to [0.3, 1.7] x mean."""
    mean = 0.030 + 100 * 0.0002
    lm = model(prefill_time_std_dev=ratio * mean)
    rng = random.Random(1)
    draws = [lm.ttft(100, 1, rng) for _ in range(2000)]
    assert all(0.3 * mean - 1e-12 <= d <= 1.7 * mean + 1e-12 for d in draws)
    assert len(set(draws)) > 1
    average = sum(draws) / len(draws)
    assert average == pytest.approx(mean, rel=0.1)  # symmetric clamp keeps the mean
    if ratio >= 1.0:  # both clamps are hit
        assert min(draws) == pytest.approx(0.3 * mean)
        assert max(draws) == pytest.approx(1.7 * mean)
    else:
        assert 0.3 * mean < min(draws)
        assert max(draws) < 1.7 * mean


@pytest.mark.parametrize("ratio", [c[1] for c in JITTER], ids=[c[0] for c in JITTER])
def test_itl_jitter_clamped(ratio: float):
    lm = model(inter_token_latency_std_dev=ratio * 0.012)
    rng = random.Random(2)
    mean = 2.0 * 0.012  # 6 of 11 running: f = 2
    draws = [lm.itl(6, rng) for _ in range(2000)]
    assert all(0.3 * mean - 1e-12 <= d <= 1.7 * mean + 1e-12 for d in draws)
    assert len(set(draws)) > 1
    assert sum(draws) / len(draws) == pytest.approx(mean, rel=0.1)


def test_jitter_is_reproducible_from_the_seed():
    lm = model(prefill_time_std_dev=0.01, inter_token_latency_std_dev=0.003)
    a, b = random.Random(5), random.Random(5)
    assert [lm.ttft(10, 2, a) for _ in range(10)] == [lm.ttft(10, 2, b) for _ in range(10)]
    assert [lm.itl(2, a) for _ in range(10)] == [lm.itl(2, b) for _ in range(10)]
