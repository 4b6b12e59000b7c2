"""From configuration to pipeline: llm-d's system defaults, wiring, and every error named."""

from __future__ import annotations

import logging

import pytest

from llmd_router.config import API_VERSION, ConfigError, load_config
from llmd_router.datalayer import Endpoint
from llmd_router.errors import BadRequest
from llmd_router.framework import CycleState
from llmd_router.pipeline import build_pipeline, resolved_config
from llmd_router.plugins.builtin import builtin_registry

HEAD = f"apiVersion: {API_VERSION}\nkind: EndpointPickerConfig\n"


def build(body: str | None, **options):
    text = None if body is None else HEAD + body
    return build_pipeline(load_config(text), builtin_registry(), **options)


def fails(body: str, **options) -> str:
    with pytest.raises(ConfigError) as info:
        build(body, **options)
    return str(info.value)


def profile_shape(pipeline, name: str = "default"):
    profile = pipeline.scheduler.profiles[name]
    return (
        [f.name for f, _ in profile.filters],
        [(s.name, w) for s, w, _ in profile.scorers],
        profile.picker[0].name,
    )


def test_the_default_configuration_runs_llm_ds_default_profile():
    pipeline = build(None)
    assert profile_shape(pipeline) == (
        [],
        [("queue-scorer", 2.0), ("kv-cache-utilization-scorer", 2.0), ("prefix-cache-scorer", 3.0)],
        "max-score-picker",
    )
    assert pipeline.scheduler.handler.name == "single-profile-handler"
    assert [p.name for p in pipeline.parsers.parsers] == ["openai-parser", "passthrough-parser"]
    assert pipeline.saturation.name == "utilization-detector"
    injected = sorted(n for n, b in pipeline.plugins.items() if b.injected)
    assert injected == [
        "approx-prefix-cache-producer",  # what prefix-cache-scorer reads
        "core-metrics-extractor",
        "max-score-picker",
        "metrics-data-source",
        "openai-parser",
        "passthrough-parser",
        "single-profile-handler",
        "token-producer",  # what the prefix producer reads
        "utilization-detector",
    ]


def test_without_profiles_every_filter_scorer_and_picker_joins_a_default_profile():
    pipeline = build(
        "plugins:\n- type: decode-filter\n- type: queue-scorer\n- type: random-picker\n"
        "- type: probabilistic-admitter\n"
    )
    assert profile_shape(pipeline) == (["decode-filter"], [("queue-scorer", 1.0)], "random-picker")
    assert [a.name for a, _ in pipeline.admitters] == ["probabilistic-admitter"]


def test_a_profile_without_a_picker_gets_the_first_configured_one():
    pipeline = build(
        "plugins: [{type: queue-scorer}, {type: random-picker}]\n"
        "schedulingProfiles:\n- name: only\n  plugins: [{pluginRef: queue-scorer, weight: 3}]\n"
    )
    assert profile_shape(pipeline, "only") == ([], [("queue-scorer", 3.0)], "random-picker")


def test_consumed_data_gets_its_default_producer():
    pipeline = build("plugins: [{type: active-request-scorer}]\n")
    assert "inflight-load-producer" in pipeline.plugins
    assert pipeline.plugins["inflight-load-producer"].injected
    # ... and what that producer consumes in turn, run first.
    assert [p.name for p, _ in pipeline.producers] == ["token-producer", "inflight-load-producer"]
    assert [p.name for p, _ in pipeline.pre_request] == ["inflight-load-producer"]
    assert [p.name for p, _ in pipeline.response_complete] == []  # the ledger releases


def test_a_deprecated_alias_works_and_warns(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        pipeline = build(
            "plugins:\n- type: by-label-selector\n  parameters: {matchLabels: {tier: a}}\n"
        )
    assert "by-label-selector" in pipeline.plugins
    assert "deprecated; use 'label-selector-filter'" in caplog.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("plugins: [{type: nope-scorer}]\n", "plugin 'nope-scorer' (type 'nope-scorer'): unknown"),
        ("plugins: [{type: nope-scorer}]\n", "available types: "),
        ("plugins: [{type: nope-scorer}]\n", "'package.module:Class'"),
        (
            "plugins: [{type: p2p-source-producer}]\n",
            "type 'p2p-source-producer' is not available in this version "
            "(arrives with prefix-cache routing)",
        ),
        (
            "plugins: [{type: load-aware-scorer, name: la, parameters: {treshold: 3}}]\n",
            "plugin 'la' (type 'load-aware-scorer'): parameters: Object contains unknown field",
        ),
        (
            "plugins: [{type: queue-scorer, parameters: [1]}]\n",
            "parameters must be a mapping",
        ),
        ("plugins: [{type: queue-scorer}, {type: queue-scorer}]\n", "two plugins are named"),
        (
            "plugins: [{type: queue-scorer}]\nschedulingProfiles:\n"
            "- name: p\n  plugins: [{pluginRef: kv}]\n",
            "profile 'p' refers to plugin 'kv', which is not in plugins",
        ),
        (
            "plugins: [{type: random-picker}, {type: max-score-picker}]\nschedulingProfiles:\n"
            "- name: p\n  plugins: [{pluginRef: random-picker}, {pluginRef: max-score-picker}]\n",
            "profile 'p' has several pickers: 'random-picker', 'max-score-picker'",
        ),
        (
            "plugins: [{type: random-picker}]\nschedulingProfiles:\n"
            "- name: p\n  plugins: [{pluginRef: random-picker, weight: 2}]\n",
            "plugin 'random-picker' has a weight but is not a scorer",
        ),
        (
            "plugins: [{type: queue-scorer}]\nschedulingProfiles:\n"
            "- name: a\n  plugins: [{pluginRef: queue-scorer}]\n"
            "- name: b\n  plugins: [{pluginRef: queue-scorer}]\n",
            "2 profiles need a profile handler",
        ),
        (
            "plugins: [{type: queue-scorer}, {type: single-profile-handler}]\nschedulingProfiles:\n"
            "- name: a\n  plugins: [{pluginRef: queue-scorer}]\n"
            "- name: b\n  plugins: [{pluginRef: queue-scorer}]\n",
            "single-profile-handler cannot run 2 profiles",
        ),
        (
            "plugins: [{type: queue-scorer}]\nschedulingProfiles:\n"
            "- name: a\n  plugins: [{pluginRef: queue-scorer}]\n"
            "- name: a\n  plugins: [{pluginRef: queue-scorer}]\n",
            "two profiles are named 'a'",
        ),
        (
            "plugins: [{type: single-profile-handler}, {type: single-profile-handler, name: h2}]\n",
            "only one profile handler may be configured",
        ),
        (
            "plugins: [{type: session-affinity-scorer}]\n",
            "plugin 'session-affinity-scorer' (type: 'session-affinity-scorer') has Alpha "
            "stability level, but command line flag --allow-experimental-plugins is not set",
        ),
        ("featureGates: [flowControl]\n", "flow control is not available in this version"),
        ("saturationDetector: {pluginRef: nope}\n", "saturationDetector: plugin 'nope'"),
        (
            "plugins: [{type: queue-scorer}]\nsaturationDetector: {pluginRef: queue-scorer}\n",
            "'queue-scorer' is not a saturation detector",
        ),
        (
            "plugins: [{type: queue-scorer}]\n"
            "requestHandler: {parsers: [{pluginRef: queue-scorer}]}\n",
            "plugin 'queue-scorer' is not a parser",
        ),
        ("dataLayer: {sources: [{pluginRef: scraper}]}\n", "dataLayer: plugin 'scraper'"),
        (
            "plugins: [{type: queue-scorer, name: max-score-picker}]\n",
            "that name is taken by a plugin of type 'queue-scorer'",
        ),
    ],
)
def test_errors_name_the_plugin_profile_or_field(body: str, message: str):
    assert message in fails(body)


def test_alpha_plugins_load_when_allowed():
    pipeline = build("plugins: [{type: session-affinity-scorer}]\n", allow_experimental=True)
    assert "session-affinity-scorer" in pipeline.plugins


def test_the_old_parser_field_selects_a_single_parser():
    pipeline = build("parser: {pluginRef: openai-parser}\n")
    assert [p.name for p in pipeline.parsers.parsers] == ["openai-parser"]
    assert pipeline.parsers.resolve("/v1/chat/completions").name == "openai-parser"
    with pytest.raises(BadRequest, match="no parser registered matching path suffix for: /x"):
        pipeline.parsers.resolve("/x")


def test_parsers_resolve_by_longest_suffix_and_the_fallback_ends_the_list():
    pipeline = build(
        "requestHandler:\n  parsers:\n  - pluginRef: openai-parser\n"
        "  - pluginRef: passthrough-parser\n"
    )
    assert pipeline.parsers.resolve("/v1/chat/completions").name == "openai-parser"
    assert pipeline.parsers.resolve("/v1/xcompletions").name == "passthrough-parser"
    assert pipeline.parsers.resolve("/v1/models").name == "passthrough-parser"
    first = build(
        "requestHandler:\n  parsers:\n  - pluginRef: passthrough-parser\n"
        "  - pluginRef: openai-parser\n"
    )
    assert [p.name for p in first.parsers.parsers] == ["passthrough-parser"]
    assert first.parsers.resolve("/v1/chat/completions").name == "passthrough-parser"


def test_a_rebuild_keeps_unchanged_plugins_and_replaces_changed_ones():
    body = (
        "plugins:\n- type: no-hit-lru-scorer\n"
        "- type: load-aware-scorer\n  parameters: {threshold: %d}\n"
    )
    first = build(body % 10)
    again = build_pipeline(load_config(HEAD + body % 10), builtin_registry(), previous=first)
    changed = build_pipeline(load_config(HEAD + body % 20), builtin_registry(), previous=first)
    assert (
        again.plugins["no-hit-lru-scorer"].instance is first.plugins["no-hit-lru-scorer"].instance
    )
    assert (
        again.plugins["load-aware-scorer"].instance is first.plugins["load-aware-scorer"].instance
    )
    assert (
        changed.plugins["no-hit-lru-scorer"].instance is first.plugins["no-hit-lru-scorer"].instance
    )
    assert (
        changed.plugins["load-aware-scorer"].instance
        is not first.plugins["load-aware-scorer"].instance
    )


def test_resolved_spells_out_defaults():
    resolved = resolved_config(build("plugins: [{type: load-aware-scorer}]\n"))
    (plugin,) = [p for p in resolved["plugins"] if p["name"] == "load-aware-scorer"]
    assert plugin["parameters"] == {"threshold": 128}
    assert resolved["schedulingProfiles"] == [
        {
            "name": "default",
            "plugins": [
                {"pluginRef": "load-aware-scorer", "weight": 1.0},
                {"pluginRef": "max-score-picker"},
            ],
        }
    ]
    assert resolved["profileHandler"] == "single-profile-handler"


def test_the_default_pipeline_schedules():
    pipeline = build(None)
    endpoints = [Endpoint(f"e{i}", f"10.0.0.{i}", 8000) for i in range(1, 4)]
    parser = pipeline.parsers.resolve("/v1/completions")
    request = parser.parse("/v1/completions", {}, b'{"model":"m","prompt":"hi"}', "r1")
    result = pipeline.scheduler.schedule(CycleState(), request, endpoints)
    assert result.primary == "default"
    assert result.targets[0] in endpoints
    trace = result.profiles["default"].trace
    assert trace is not None
    assert [name for name, _, _ in trace.scorers] == [
        "queue-scorer",
        "kv-cache-utilization-scorer",
        "prefix-cache-scorer",
    ]
    # Idle endpoints, no prefix seen: 2*1 + 2*(1-0) + 3*0 (nothing produced in this cycle).
    assert list(trace.totals) == [4.0, 4.0, 4.0]


DISAGG = (
    "plugins:\n- type: prefill-filter\n- type: decode-filter\n- type: always-disagg-pd-decider\n"
    "- type: disagg-profile-handler\n"
    "  parameters: {deciders: {prefill: always-disagg-pd-decider}}\n"
    "schedulingProfiles:\n"
    "- name: %s\n  plugins: [{pluginRef: prefill-filter}]\n"
    "- name: decode\n  plugins: [{pluginRef: decode-filter}]\n"
)


def test_a_disaggregated_configuration_builds_and_names_a_missing_profile():
    pipeline = build(DISAGG % "prefill")
    assert sorted(pipeline.scheduler.profiles) == ["decode", "prefill"]
    assert [h.name for h, _ in pipeline.pre_request] == ["disagg-profile-handler"]
    message = fails(DISAGG % "prefil")
    assert "the prefill stage runs profile 'prefill', which is not in schedulingProfiles" in message
