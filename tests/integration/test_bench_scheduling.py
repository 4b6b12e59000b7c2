"""``llmd-bench scheduling`` measures every scenario at every size (a smoke run, no timing
thresholds)."""

from __future__ import annotations

import math

import pytest

from llmd_bench.cli import main
from llmd_bench.scheduling import SCENARIOS, fleet, measure, measure_all, table, verdict


def test_one_row_per_size_and_scenario_with_sane_figures():
    rows = measure_all((5, 20), 50, seed=1, warmup=5)
    assert [(r.endpoints, r.scenario) for r in rows] == [(n, s) for n in (5, 20) for s in SCENARIOS]
    for row in rows:
        assert row.decisions == 50
        assert all(math.isfinite(v) for v in (row.mean_us, row.p50_us, row.p99_us, row.max_us))
        assert 0 < row.p50_us <= row.p99_us <= row.max_us, row
        assert row.mean_us <= row.max_us
    assert table(rows).count("\n| 20 | ") == len(SCENARIOS)
    assert verdict(rows) == ""  # no budget below 100 endpoints


def test_the_fleet_is_seeded():
    def signals(seed: int) -> list[object]:
        return [(e.key, e.labels, e.metrics.kv_cache_usage) for e in fleet(30, seed)]

    assert signals(3) == signals(3)
    assert signals(3) != signals(4)


def test_one_scenario_alone_and_an_unknown_one():
    row = measure("route-heavy", 100, 20, warmup=3)
    assert (row.scenario, row.endpoints, row.decisions) == ("route-heavy", 100, 20)
    with pytest.raises(ValueError, match="unknown scenario"):
        measure("nope", 10, 1)


def test_endpoint_counts_are_checked(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main(["scheduling", "--endpoints", "10,x"])
    assert "not a comma-separated list of integers" in capsys.readouterr().err


def test_the_cli_prints_the_table_and_the_verdict(capsys: pytest.CaptureFixture[str]):
    main(["scheduling", "--endpoints", "100", "--decisions", "20", "--warmup", "2"])
    out = capsys.readouterr().out
    assert out.count("\n| 100 | ") == len(SCENARIOS)
    assert "route-heavy at 100 endpoints: p99" in out
