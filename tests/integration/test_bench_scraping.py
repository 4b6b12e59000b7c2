"""``llmd-bench scraping`` at a tiny size: every figure is there and sane (a smoke run, no
timing thresholds)."""

from __future__ import annotations

import math

import pytest

from llmd_bench.cli import main
from llmd_bench.scraping import measure, table, verdict

pytestmark = pytest.mark.slow


async def test_a_tiny_fleet_is_scraped_and_measured():
    run = await measure(3, window=2.0, warmup=1.0, requests_per_server=1)
    assert run.endpoints == 3
    assert run.window_s >= 2.0
    assert run.page_bytes >= run.page_bytes_idle > 10_000  # a vLLM-sized page
    for cores in (run.router_cores, run.baseline_cores, run.sim_cores, run.bench_cores):
        assert cores >= 0 and math.isfinite(cores), run
    assert 0 <= run.machine_busy <= 1
    assert run.polls > 0 and run.polls_per_s_per_endpoint > 0
    # Scraping works: every poll answered, every sampled endpoint has a report.
    assert run.poll_errors == 0 and run.unreported == 0 and run.first_error == "", run
    assert run.age_samples > 0
    assert 0 <= run.age_p50_ms <= run.age_p99_ms <= run.age_max_ms, run
    assert 0 <= run.stale_share <= 1
    assert table([run]).count("\n| 3 | ") == 1
    assert verdict([run]) == ""  # no budget at 3 endpoints, no failed polls


def test_fleet_sizes_are_checked(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main(["scraping", "--endpoints", "0"])
    assert "endpoint counts must be positive" in capsys.readouterr().err
