"""llm-d's own example configurations: each loads, or fails naming the type this version lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmd_router.config import ConfigError, load_config_file
from llmd_router.pipeline import build_pipeline
from llmd_router.plugins.builtin import builtin_registry

EXAMPLES = Path(__file__).parents[3] / "data" / "llm-d-configs"

# file -> None (loads) or what the error must say
EXPECTED = {
    "epp-config.yaml": None,
    "pd-epp-config.yaml": None,
    # Everything but the endpoint lifecycle source (it comes with Kubernetes discovery).
    "epp-precise-prefix-cache-config.yaml": "type 'endpoint-notification-source' is not "
    "available in this version (arrives with Kubernetes discovery)",
    "probabilistic-admitter-epp-config.yaml": None,
    "default-config.yaml": None,
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize(("name", "missing"), sorted(EXPECTED.items()))
def test_llmd_example(name: str, missing: str | None):
    loaded = load_config_file(EXAMPLES / name)
    if missing is None:
        pipeline = build_pipeline(loaded, builtin_registry())
        assert pipeline.scheduler.profiles
        return
    with pytest.raises(ConfigError) as info:
        build_pipeline(loaded, builtin_registry())
    message = str(info.value)
    assert missing in message


def test_the_probabilistic_admitter_example_is_wired_as_written():
    pipeline = build_pipeline(
        load_config_file(EXAMPLES / "probabilistic-admitter-epp-config.yaml"), builtin_registry()
    )
    assert [a.name for a, _ in pipeline.admitters] == ["probabilistic-admitter"]
    assert pipeline.saturation.name == "utilization-detector"
    assert pipeline.saturation.params.queue_depth_threshold == 999999999  # type: ignore[attr-defined]
    profile = pipeline.scheduler.profiles["default"]
    assert profile.picker[0].name == "random-picker"


def test_an_old_config_with_index_parameters_on_the_scorer_loads_with_the_producer_added(
    caplog: pytest.LogCaptureFixture,
):
    pipeline = build_pipeline(load_config_file(EXAMPLES / "pd-epp-config.yaml"), builtin_registry())
    producer = pipeline.plugins["approx-prefix-cache-producer"]
    assert producer.injected  # what the scorer and the prefix-based decider read
    assert (
        "maxPrefixBlocksToMatch, lruCapacityPerServer belong to approx-prefix-cache-producer"
        in (caplog.text)
    )
    assert [p.name for p, _ in pipeline.pre_request][:1] == ["disagg-profile-handler"]
    assert "approx-prefix-cache-producer" in [p.name for p, _ in pipeline.pre_request]
