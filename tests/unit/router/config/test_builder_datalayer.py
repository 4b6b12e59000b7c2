"""``dataLayer``: llm-d's default metrics source, bindings checked, and the discovery plugin."""

from __future__ import annotations

import pytest

from llmd_router.config import API_VERSION, ConfigError, load_config
from llmd_router.pipeline import build_pipeline, resolved_config
from llmd_router.plugins.builtin import builtin_registry

HEAD = f"apiVersion: {API_VERSION}\nkind: EndpointPickerConfig\n"


def build(body: str | None):
    return build_pipeline(load_config(None if body is None else HEAD + body), builtin_registry())


def fails(body: str) -> str:
    with pytest.raises(ConfigError) as info:
        build(body)
    return str(info.value)


def shape(pipeline) -> list[tuple[str, list[str]]]:
    return [(b.source.name, [e.name for e, _ in b.extractors]) for b in pipeline.sources]


def test_by_default_metrics_are_scraped_and_read_with_the_core_extractor():
    pipeline = build(None)
    assert shape(pipeline) == [("metrics-data-source", ["core-metrics-extractor"])]
    assert pipeline.collects_metrics
    assert resolved_config(pipeline)["dataLayer"]["sources"] == [
        {
            "pluginRef": "metrics-data-source",
            "extractors": [{"pluginRef": "core-metrics-extractor"}],
        }
    ]


def test_configured_plugins_of_the_default_types_are_used_not_duplicated():
    pipeline = build("""
plugins:
- name: scrape
  type: metrics-data-source
  parameters: {path: /prometheus}
- name: read
  type: core-metrics-extractor
  parameters: {defaultEngine: sglang}
""")
    assert shape(pipeline) == [("scrape", ["read"])]
    assert sorted(n for n, b in pipeline.plugins.items() if b.type.endswith("-source")) == [
        "scrape"
    ]


def test_inject_defaults_false_with_no_sources_collects_nothing():
    pipeline = build("dataLayer: {injectDefaults: false}\n")
    assert pipeline.sources == () and not pipeline.collects_metrics
    assert "model-server metrics are not collected" in " ".join(pipeline.notes)


def test_a_models_source_alone_still_gets_the_default_metrics_source():
    pipeline = build("""
plugins:
- type: models-data-source
  parameters: {interval: 5s}
- type: models-data-extractor
dataLayer:
  sources:
  - pluginRef: models-data-source
    extractors: [{pluginRef: models-data-extractor}]
""")
    assert shape(pipeline) == [
        ("models-data-source", ["models-data-extractor"]),
        ("metrics-data-source", ["core-metrics-extractor"]),
    ]
    assert pipeline.sources[0].source.interval_s == 5.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "dataLayer:\n  sources: [{pluginRef: nowhere}]\n",
            "dataLayer: plugin 'nowhere' is not in plugins",
        ),
        (
            "plugins: [{type: queue-scorer}]\ndataLayer:\n  sources: [{pluginRef: queue-scorer}]\n",
            "plugin 'queue-scorer' is not a data source",
        ),
        (
            "plugins: [{type: metrics-data-source}, {type: queue-scorer}]\n"
            "dataLayer:\n  sources:\n  - pluginRef: metrics-data-source\n"
            "    extractors: [{pluginRef: queue-scorer}]\n",
            "plugin 'queue-scorer' is not an extractor",
        ),
        (
            "plugins: [{type: metrics-data-source}, {type: models-data-extractor}]\n"
            "dataLayer:\n  sources:\n  - pluginRef: metrics-data-source\n"
            "    extractors: [{pluginRef: models-data-extractor}]\n",
            "extractor 'models-data-extractor' reads 'openai-models-json' but source "
            "'metrics-data-source' gives 'prometheus-text'",
        ),
        (
            "plugins: [{type: metrics-data-source}]\n"
            "dataLayer:\n  sources: [{pluginRef: metrics-data-source},"
            " {pluginRef: metrics-data-source}]\n",
            "source 'metrics-data-source' is listed twice",
        ),
        (
            "plugins: [{type: queue-scorer}]\ndataLayer:\n  discovery: {pluginRef: queue-scorer}\n",
            "plugin 'queue-scorer' (type 'queue-scorer') does not discover endpoints",
        ),
        (
            "dataLayer:\n  discovery: {pluginRef: files}\n",
            "dataLayer.discovery: plugin 'files' is not in plugins",
        ),
        (
            "plugins: [{type: file-discovery}]\n",
            "'path' parameter is required",
        ),
        (
            "plugins: [{type: metrics-data-source, parameters: {interval: soon}}]\n",
            "interval: invalid duration 'soon'",
        ),
        (
            "plugins: [{type: metrics-data-source, parameters: {port: 70000}}]\n",
            "invalid port 70000",
        ),
        (
            "plugins: [{type: metrics-data-source, parameters: {clientCertPath: a.pem}}]\n",
            "clientCertPath and clientKeyPath are set together",
        ),
        (
            "plugins:\n- type: core-metrics-extractor\n  parameters:\n"
            "    engineConfigs: [{name: default}]\n",
            "the name 'default' is reserved",
        ),
        (
            "plugins:\n- type: core-metrics-extractor\n  parameters:\n"
            "    engineConfigs: [{name: mine, kvUsageSpec: 'kv{a=}b'}]\n",
            "engine 'mine': kvUsageSpec",
        ),
        (
            "plugins:\n- type: core-metrics-extractor\n  parameters: {defaultEngine: tgi}\n",
            "defaultEngine 'tgi' is not an engine",
        ),
    ],
    ids=[
        "unknown-source",
        "not-a-source",
        "not-an-extractor",
        "type-mismatch",
        "listed-twice",
        "not-discovery",
        "unknown-discovery",
        "file-discovery-without-path",
        "bad-interval",
        "bad-port",
        "half-mtls",
        "reserved-engine",
        "bad-spec",
        "unknown-default-engine",
    ],
)
def test_data_layer_errors_name_their_fault(body: str, message: str):
    assert message in fails(body)


def test_file_discovery_is_the_pipelines_discovery(tmp_path):
    pipeline = build(f"""
plugins:
- name: endpoints
  type: file-discovery
  parameters: {{path: {tmp_path / "endpoints.yaml"}, watchFile: true}}
dataLayer:
  discovery: {{pluginRef: endpoints}}
""")
    assert pipeline.discovery is pipeline.plugins["endpoints"].instance
    assert resolved_config(pipeline)["dataLayer"]["discovery"] == {"pluginRef": "endpoints"}


def test_unchanged_sources_survive_a_reload_as_the_same_object():
    first = build("plugins: [{type: metrics-data-source, parameters: {path: /m}}]\n")
    again = build_pipeline(
        load_config(HEAD + "plugins: [{type: metrics-data-source, parameters: {path: /m}}]\n"),
        builtin_registry(),
        previous=first,
    )
    assert again.sources[0].source is first.sources[0].source
