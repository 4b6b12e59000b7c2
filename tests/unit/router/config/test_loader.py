"""Reading EndpointPickerConfig: strict decoding, versions, defaults, feature gates."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from llmd_router.config import (
    API_VERSION,
    API_VERSION_DEPRECATED,
    ConfigError,
    load_config,
    load_config_file,
)

if TYPE_CHECKING:
    from pathlib import Path

HEAD = f"apiVersion: {API_VERSION}\nkind: EndpointPickerConfig\n"


def test_no_configuration_is_llm_ds_default_profile():
    for text in (None, "", "  \n"):
        loaded = load_config(text)
        assert loaded.is_default
        assert [p.type for p in loaded.config.plugins] == [
            "queue-scorer",
            "kv-cache-utilization-scorer",
            "prefix-cache-scorer",
        ]
        (profile,) = loaded.config.scheduling_profiles
        assert [(r.plugin_ref, r.weight) for r in profile.plugins] == [
            ("queue-scorer", 2),
            ("kv-cache-utilization-scorer", 2),
            ("prefix-cache-scorer", 3),
        ]


def test_plugin_name_defaults_to_its_type():
    loaded = load_config(HEAD + "plugins:\n- type: queue-scorer\n- {type: queue-scorer, name: q2}")
    assert [(p.name, p.type) for p in loaded.config.plugins] == [
        ("queue-scorer", "queue-scorer"),
        ("q2", "queue-scorer"),
    ]


def test_json_is_accepted():
    document = {
        "apiVersion": API_VERSION,
        "kind": "EndpointPickerConfig",
        "plugins": [{"type": "random-picker"}],
    }
    assert load_config(json.dumps(document)).config.plugins[0].type == "random-picker"


def test_the_deprecated_api_version_is_accepted():
    text = f"apiVersion: {API_VERSION_DEPRECATED}\nkind: EndpointPickerConfig\n"
    assert load_config(text).config.api_version == API_VERSION_DEPRECATED


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: v1\nkind: EndpointPickerConfig\n", "apiVersion must be"),
        (f"apiVersion: {API_VERSION}\nkind: Pod\n", "kind must be 'EndpointPickerConfig'"),
        (HEAD + "pluginz: []\n", "unknown field `pluginz`"),
        (
            HEAD + "plugins:\n- type: queue-scorer\n  weight: 2\n",
            "unknown field `weight` at plugins[0]",
        ),
        (
            HEAD + "schedulingProfiles:\n- name: p\n  plugins:\n  - pluginRef: a\n    wieght: 1\n",
            "unknown field `wieght` at schedulingProfiles[0].plugins[0]",
        ),
        (HEAD + "plugins:\n- name: x\n", "required field `type` at plugins[0]"),
        (HEAD + "plugins: {a: 1}\n", "Expected `array`, got `object` at plugins"),
        (HEAD + "plugins: [\n", "not valid YAML or JSON"),
        ("- a\n- b\n", "must be a mapping"),
        (HEAD + "featureGates: [nope]\n", "unknown gate 'nope'"),
        (HEAD + "featureGates: [flowControl=maybe]\n", "must be true or false"),
        (HEAD + "dataLayer:\n  sorces: []\n", "unknown field `sorces` at dataLayer"),
    ],
)
def test_invalid_documents_say_what_and_where(text: str, message: str):
    with pytest.raises(ConfigError) as info:
        load_config(text, source="t.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("t.yaml") or "featureGates" in str(info.value)


def test_feature_gates_take_values_and_old_gates_are_accepted():
    loaded = load_config(HEAD + "featureGates: [flowControl, haPopulateNonLeaderDatastore=false]")
    assert loaded.gates == {"flowControl": True, "haPopulateNonLeaderDatastore": False}
    old = load_config(HEAD + "featureGates: [enableLegacyMetrics, dataLayer]")
    assert old.gates == {"flowControl": False, "haPopulateNonLeaderDatastore": True}


def test_the_whole_schema_decodes():
    text = HEAD + (
        "plugins: [{type: queue-scorer, parameters: {a: 1}}]\n"
        "parser: {pluginRef: openai-parser}\n"
        "requestHandler: {parsers: [{pluginRef: openai-parser}]}\n"
        "saturationDetector: {pluginRef: utilization-detector}\n"
        "dataLayer:\n"
        "  injectDefaults: false\n"
        "  sources: [{pluginRef: m, extractors: [{pluginRef: e}]}]\n"
        "  discovery: {pluginRef: f}\n"
        "flowControl:\n"
        "  maxBytes: 1Gi\n"
        "  defaultRequestTTL: 30s\n"
        "  priorityBands: [{priority: 0, maxRequests: 10}]\n"
        "  saturationDetector: {pluginRef: utilization-detector}\n"
    )
    config = load_config(text).config
    assert config.plugins[0].parameters == {"a": 1}
    assert config.data_layer is not None and config.data_layer.discovery is not None
    assert config.flow_control is not None
    assert config.flow_control.default_request_ttl == "30s"


def test_files(tmp_path: Path):
    good = tmp_path / "c.yaml"
    good.write_text(HEAD + "plugins: [{type: random-picker}]\n")
    assert load_config_file(good).source == str(good)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config_file(empty)
