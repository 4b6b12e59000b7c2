"""The timing model of a simulated server: pure functions of load, tokens and a random source.

With ``n`` sequences running (the one being timed included) out of ``max_num_seqs``, load
stretches every delay by

    f(n) = 1 + (time_factor_under_load - 1) * (n - 1) / (max_num_seqs - 1)

so one running sequence sees the configured latencies and a full batch sees them multiplied by
``time_factor_under_load``. Then

    TTFT = time_scale * f(n) * (prefill_overhead + uncached_prompt_tokens * prefill_time_per_token)
    ITL  = time_scale * f(n) * inter_token_latency

Cached prompt tokens cost nothing: that is what makes prefix-aware routing visible in the TTFT
the simulator reports. Jitter, when configured, is normal around the mean and clamped to
[0.3, 1.7] x mean (as llm-d's simulator does) so a delay is never negative or absurd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random

    from llmd_sim.config import LatencyConfig

__all__ = ["LatencyModel"]


@dataclass(frozen=True, slots=True)
class LatencyModel:
    config: LatencyConfig
    max_num_seqs: int

    def load_factor(self, running: int) -> float:
        """f(n) above; ``running`` counts the sequence being timed."""
        extra = self.config.time_factor_under_load - 1.0
        if extra == 0.0 or self.max_num_seqs <= 1:
            return 1.0
        n = min(max(running, 1), self.max_num_seqs)
        return 1.0 + extra * (n - 1) / (self.max_num_seqs - 1)

    def ttft(self, uncached_tokens: int, running: int, rng: random.Random) -> float:
        """Seconds from the start of prefill to the first token."""
        cfg = self.config
        mean = cfg.prefill_overhead + max(0, uncached_tokens) * cfg.prefill_time_per_token
        mean *= self.load_factor(running) * cfg.time_scale
        return _jitter(mean, cfg.prefill_time_std_dev * cfg.time_scale, rng)

    def itl(self, running: int, rng: random.Random) -> float:
        """Seconds between two output tokens of one sequence."""
        cfg = self.config
        mean = cfg.inter_token_latency * self.load_factor(running) * cfg.time_scale
        return _jitter(mean, cfg.inter_token_latency_std_dev * cfg.time_scale, rng)


def _jitter(mean: float, std_dev: float, rng: random.Random) -> float:
    if std_dev <= 0.0 or mean <= 0.0:
        return mean
    return min(max(rng.gauss(mean, std_dev), 0.3 * mean), 1.7 * mean)
