"""``llmd-bench router-overhead`` runs every chain end to end (a smoke run, not a measurement)."""

from __future__ import annotations

import pytest

from llmd_bench.router_overhead import SETUPS, against_floor, measure_all, table

pytestmark = pytest.mark.slow


async def test_every_setup_serves_and_is_measured():
    phases = await measure_all(
        prompt_sizes=(50,), clients=(2,), output_tokens=4, requests=6, warmup=2
    )
    assert [p.setup for p in phases] == list(SETUPS)
    for phase in phases:
        assert phase.errors == 0 and phase.requests == 6, phase
        assert phase.ttft_p50_ms > 0
        assert 0 <= phase.machine_busy <= 1  # a short phase may see no 10 ms tick
        assert (phase.envoy_cpu_ms is None) == (phase.setup == "direct")
        assert (phase.router_cpu_ms is None) == (phase.setup in ("direct", "envoy"))
    assert table(phases).count("\n| 50 | 2 |") == len(SETUPS)
    assert "| 50 | 2 |" in against_floor(phases)
