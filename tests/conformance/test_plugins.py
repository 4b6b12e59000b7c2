"""Every registered plugin against the contracts of its kinds, whatever the endpoints look like.

A new plugin gets this coverage by being registered: pickers return only candidates, scorers
give one score in [0, 1] per endpoint, filters return a subset, and every plugin refuses
parameters it does not know, naming itself.
"""

from __future__ import annotations

import base64
import importlib.resources
import json
import math
import random
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmd_router.config import ConfigError
from llmd_router.datalayer import Endpoint, EndpointMetrics
from llmd_router.datalayer.inflight import InFlightCharge, InFlightLedger
from llmd_router.framework import (
    INFLIGHT_LOAD,
    PREFIX_MATCH,
    Binds,
    CycleState,
    Filter,
    InFlightLoad,
    Picker,
    PluginHandle,
    PrefixMatch,
    Scorer,
)
from llmd_router.parsing import parse_request
from llmd_router.plugins.builtin import builtin_registry

REGISTRY = builtin_registry()
TYPES = [t for t in REGISTRY.types() if t.replaced_by is None]
# Types that need parameters to be built at all.
REQUIRED: dict[str, dict[str, Any]] = {
    "by-label": {"label": "tier", "allowsNoLabel": True},
    "file-discovery": {"path": "endpoints.yaml"},
}


def create(
    type_name: str, params: dict[str, Any] | None = None, inflight: InFlightLedger | None = None
) -> Any:
    """The plugin with default parameters (and what it requires), bound as the pipeline binds
    it, to ``inflight`` when given."""
    plugin = REGISTRY.create(
        type_name,
        type_name,
        {**REQUIRED.get(type_name, {}), **(params or {})},
        allow_experimental=True,
    )
    if inflight is not None and isinstance(plugin, Binds):
        plugin.bind(PluginHandle({type_name: plugin}, inflight))
    for attr in ("rng",):
        if hasattr(plugin, attr):
            setattr(plugin, attr, random.Random(0))
    return plugin


def of_kind(kind: type) -> list[str]:
    return [t.name for t in TYPES if isinstance(create(t.name), kind)]


def test_the_registry_lists_the_catalogue():
    names = {t.name for t in REGISTRY.types()}
    assert {
        "max-score-picker",
        "random-picker",
        "weighted-random-picker",
        "queue-scorer",
        "kv-cache-utilization-scorer",
        "running-requests-size-scorer",
        "load-aware-scorer",
        "active-request-scorer",
        "token-load-scorer",
        "lora-affinity-scorer",
        "session-affinity-scorer",
        "no-hit-lru-scorer",
        "context-length-aware",
        "label-selector-filter",
        "by-label-selector",
        "by-label",
        "decode-filter",
        "prefill-filter",
        "encode-filter",
        "single-profile-handler",
        "disagg-profile-handler",
        "prefix-based-pd-decider",
        "always-disagg-pd-decider",
        "always-disagg-multimodal-decider",
        "inflight-load-producer",
        "probabilistic-admitter",
        "utilization-detector",
        "concurrency-detector",
        "openai-parser",
        "passthrough-parser",
    } <= names
    assert not names & set(REGISTRY.missing())  # nothing is both available and missing


@pytest.mark.parametrize("type_name", [t.name for t in TYPES])
def test_every_plugin_refuses_unknown_parameters_naming_itself(type_name: str):
    with pytest.raises(ConfigError) as info:
        REGISTRY.create(type_name, "mine", {"noSuchParameter": 1}, allow_experimental=True)
    assert "plugin 'mine'" in str(info.value) and "noSuchParameter" in str(info.value)


@pytest.mark.parametrize("type_name", [t.name for t in TYPES])
def test_every_plugin_builds_with_its_defaults_and_has_a_name(type_name: str):
    plugin = create(type_name)
    assert plugin.name == type_name


@pytest.mark.parametrize("type_name", [t.name for t in TYPES])
def test_every_plugin_has_a_readme_and_a_docstring(type_name: str):
    entry = next(t for t in TYPES if t.name == type_name)
    module = sys.modules[entry.cls.__module__]
    assert module.__doc__, f"{type_name}: module docstring"
    readme = importlib.resources.files(module.__name__) / "README.md"
    assert readme.is_file(), f"{type_name}: README.md next to the plugin"
    assert type_name in readme.read_text()


ROLES = ["decode", "prefill", "encode", "both", "prefill-decode", "encode-prefill", "junk"]
MODELS = ["m", "lora-a", "lora-b"]

metrics_st = st.builds(
    EndpointMetrics,
    waiting_queue_size=st.integers(0, 10**6),
    running_requests=st.integers(0, 10**4),
    kv_cache_usage=st.floats(0.0, 1.0),
    active_models=st.frozensets(st.sampled_from(MODELS), max_size=3),
    waiting_models=st.frozensets(st.sampled_from(MODELS), max_size=3),
    max_active_models=st.integers(0, 4),
    cache_block_size=st.sampled_from([0, 16, 64]),
    cache_num_blocks=st.integers(0, 10**5),
    updated_at=st.sampled_from([0.0, 1.0, 1e12]),
)
labels_st = st.dictionaries(
    st.sampled_from(["llm-d.ai/role", "llm-d.ai/context-length-range", "tier"]),
    st.one_of(st.sampled_from(ROLES), st.sampled_from(["0-100", "100-8000", "5-1", "x"])),
    max_size=3,
)


@st.composite
def situations(draw: st.DrawFn) -> tuple[list[Endpoint], CycleState, Any, InFlightLedger]:
    count = draw(st.integers(1, 12))
    endpoints = []
    ledger = InFlightLedger()
    for i in range(count):
        e = Endpoint(
            f"e{i}",
            f"10.0.{i // 250}.{i % 250 + 1}",
            8000,
            labels=draw(labels_st),
            metrics=draw(metrics_st),
        )
        ledger.charge([InFlightCharge(e.key, requests=draw(st.integers(0, 1000)))])
        endpoints.append(e)
    cycle = CycleState()
    if draw(st.booleans()):
        loads = st.builds(InFlightLoad, st.integers(0, 10**4), st.integers(0, 10**8))
        cycle.put(INFLIGHT_LOAD, {e.key: draw(loads) for e in endpoints})
    if draw(st.booleans()):
        total = draw(st.integers(0, 64))
        matches = st.builds(
            PrefixMatch, st.integers(0, total), st.just(total), st.sampled_from([16, 64])
        )
        cycle.put(PREFIX_MATCH, {e.key: draw(matches) for e in endpoints})
    body = {
        "model": draw(st.sampled_from(MODELS)),
        "messages": [{"role": "user", "content": draw(st.text(max_size=200))}],
    }
    headers = {}
    if draw(st.booleans()):
        target = draw(st.sampled_from(endpoints))
        headers["x-session-token"] = base64.b64encode(target.id.encode()).decode()
    request = parse_request("/v1/chat/completions", headers, json.dumps(body).encode(), "r")
    return endpoints, cycle, request, ledger


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("type_name", of_kind(Scorer))
@FAST
@given(situation=situations())
def test_scorers_give_one_score_in_0_1_per_endpoint(type_name: str, situation):
    endpoints, cycle, request, ledger = situation
    scores = create(type_name, inflight=ledger).score(cycle, request, endpoints)
    assert len(scores) == len(endpoints)
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores), scores


@pytest.mark.parametrize("type_name", of_kind(Filter))
@FAST
@given(situation=situations())
def test_filters_return_a_subset(type_name: str, situation):
    endpoints, cycle, request, ledger = situation
    kept = create(type_name, inflight=ledger).filter(cycle, request, endpoints)
    assert all(any(k is e for e in endpoints) for k in kept)
    assert len({id(k) for k in kept}) == len(kept)


@pytest.mark.parametrize("type_name", of_kind(Picker))
@FAST
@given(
    situation=situations(),
    scores=st.lists(st.floats(-1.0, 10.0, allow_nan=False), min_size=12, max_size=12),
    wanted=st.integers(1, 4),
)
def test_pickers_return_only_candidates(type_name: str, situation, scores, wanted: int):
    endpoints, cycle, request, ledger = situation
    picker = create(type_name, {"maxNumOfEndpoints": wanted}, inflight=ledger)
    picked = picker.pick(cycle, request, endpoints, scores[: len(endpoints)])
    assert 1 <= len(picked) <= min(wanted, len(endpoints))
    assert all(any(p is e for e in endpoints) for p in picked)
    assert len({id(p) for p in picked}) == len(picked)
