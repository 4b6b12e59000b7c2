"""extract(): a model server's page in, an endpoint's signals out, signal by signal."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from llmd_router import testing
from llmd_router.config import ConfigError
from llmd_router.datalayer.endpoints import Endpoint, EndpointMetrics
from llmd_router.datalayer.metrics.engines import (
    DEFAULT_ENGINE_LABEL,
    EngineMapping,
    EngineSpecs,
    EngineTable,
)
from llmd_router.datalayer.metrics.extract import Extraction, extract
from llmd_router.datalayer.metrics.promtext import SeriesReader
from llmd_router.plugins.builtin import builtin_registry

DATA = Path(__file__).parents[3] / "data"
VLLM = DATA / "vllm-0.32-cpu"
PAGES = DATA / "metrics-pages"

TABLE = EngineTable()
VLLM_MAPPING = TABLE.mappings["vllm"]

# Something other than what any page says, so that "kept" and "read" can be told apart.
PREVIOUS = EndpointMetrics(
    waiting_queue_size=91,
    running_requests=92,
    kv_cache_usage=0.93,
    active_models=frozenset({"old-adapter"}),
    waiting_models=frozenset({"old-waiting"}),
    max_active_models=94,
    cache_block_size=95,
    cache_num_blocks=96,
    updated_at=1.0,
)
NOW = 50.0


def run(page: bytes, mapping: EngineMapping = VLLM_MAPPING) -> Extraction:
    return extract(page, mapping, PREVIOUS, NOW, SeriesReader())


def without(page: bytes, family: str) -> bytes:
    """``page`` without the sample lines of ``family`` (its HELP and TYPE lines stay)."""
    prefixes = ((family + "{").encode(), (family + " ").encode())
    kept = [line for line in page.split(b"\n") if not line.startswith(prefixes)]
    assert len(kept) < page.count(b"\n") + 1, f"{family} is not on the page"
    return b"\n".join(kept)


def replace_value(page: bytes, family: str, value: bytes) -> bytes:
    """``page`` with the value of ``family``'s (single) sample line replaced."""
    lines = page.split(b"\n")
    hits = [i for i, line in enumerate(lines) if line.startswith((family + "{").encode())]
    assert len(hits) == 1
    head, _, _ = lines[hits[0]].rpartition(b" ")
    lines[hits[0]] = head + b" " + value
    return b"\n".join(lines)


# The recorded vLLM pages


@pytest.mark.parametrize("name", ["metrics-idle.txt", "metrics-after.txt"])
def test_a_real_vllm_page(name: str):
    result = run((VLLM / name).read_bytes())
    assert result.errors == ()
    assert result.updated
    assert result.metrics == EndpointMetrics(
        waiting_queue_size=0,
        running_requests=0,
        kv_cache_usage=0.0,
        # No LoRA family on these pages: the adapters are left as they were.
        active_models=frozenset({"old-adapter"}),
        waiting_models=frozenset({"old-waiting"}),
        max_active_models=94,
        cache_block_size=32,
        cache_num_blocks=16384,
        updated_at=NOW,
    )


def test_previous_is_not_changed():
    before = EndpointMetrics(waiting_queue_size=5, updated_at=2.0)
    result = extract(
        (VLLM / "metrics-after.txt").read_bytes(), VLLM_MAPPING, before, 3.0, SeriesReader()
    )
    assert result.metrics is not before
    assert before == EndpointMetrics(waiting_queue_size=5, updated_at=2.0)
    assert result.metrics.updated_at == 3.0


# Partial failure


def test_a_missing_family_keeps_that_signal_and_reads_the_others():
    page = without((VLLM / "metrics-after.txt").read_bytes(), "vllm:kv_cache_usage_perc")
    result = run(page)
    assert result.updated
    assert result.errors == ("metric family 'vllm:kv_cache_usage_perc' not found",)
    assert result.metrics.kv_cache_usage == PREVIOUS.kv_cache_usage
    assert result.metrics.waiting_queue_size == 0
    assert result.metrics.running_requests == 0
    assert (result.metrics.cache_block_size, result.metrics.cache_num_blocks) == (32, 16384)
    assert result.metrics.updated_at == NOW


def test_a_page_with_none_of_the_families_is_not_an_update():
    page = b"# HELP other_metric x\n# TYPE other_metric gauge\nother_metric 1\n"
    result = run(page)
    assert not result.updated
    assert result.metrics is PREVIOUS
    assert result.metrics.updated_at == PREVIOUS.updated_at
    assert result.errors == (
        "metric family 'vllm:num_requests_waiting' not found",
        "metric family 'vllm:num_requests_running' not found",
        "metric family 'vllm:kv_cache_usage_perc' not found",
        "metric family 'vllm:cache_config_info' not found",
    )


def test_an_empty_page_is_not_an_update():
    result = run(b"")
    assert not result.updated
    assert result.metrics is PREVIOUS
    assert len(result.errors) == 4


@pytest.mark.parametrize(("value", "shown"), [(b"NaN", "nan"), (b"+Inf", "inf"), (b"-Inf", "-inf")])
def test_a_non_finite_value_is_an_error_and_keeps_the_previous_value(value: bytes, shown: str):
    page = replace_value(
        (VLLM / "metrics-after.txt").read_bytes(), "vllm:kv_cache_usage_perc", value
    )
    result = run(page)
    assert result.updated
    assert result.metrics.kv_cache_usage == PREVIOUS.kv_cache_usage
    assert result.metrics.waiting_queue_size == 0
    assert result.errors == (f"vllm:kv_cache_usage_perc: value {shown} is not a finite number",)


def test_a_non_finite_count_is_an_error_too():
    page = replace_value(
        (VLLM / "metrics-after.txt").read_bytes(), "vllm:num_requests_waiting", b"NaN"
    )
    result = run(page)
    assert result.metrics.waiting_queue_size == PREVIOUS.waiting_queue_size
    assert len(result.errors) == 1
    assert "vllm:num_requests_waiting" in result.errors[0]


def test_a_malformed_line_is_an_error_and_the_signal_is_kept():
    page = replace_value(
        (VLLM / "metrics-after.txt").read_bytes(), "vllm:num_requests_running", b"lots"
    )
    result = run(page)
    assert result.updated
    assert result.metrics.running_requests == PREVIOUS.running_requests
    assert result.metrics.waiting_queue_size == 0
    assert len(result.errors) == 2
    assert "could not convert string to float: 'lots'" in result.errors[0]
    assert result.errors[1] == "metric family 'vllm:num_requests_running' not found"


def test_counts_are_read_as_integers():
    page = b"a 3.0\nb 7\nc 0.25\n"
    mapping = EngineMapping.from_specs(
        EngineSpecs("t", queued_requests_spec="a", running_requests_spec="b", kv_usage_spec="c")
    )
    result = run(page, mapping)
    assert result.errors == ()
    assert (result.metrics.waiting_queue_size, result.metrics.running_requests) == (3, 7)
    assert isinstance(result.metrics.waiting_queue_size, int)
    assert result.metrics.kv_cache_usage == 0.25


def test_a_spec_with_labels_no_series_matches():
    mapping = EngineMapping.from_specs(
        EngineSpecs("t", queued_requests_spec='q{kind="waiting"}', running_requests_spec="r")
    )
    result = run(b'q{kind="active"} 4\nr 2\n', mapping)
    assert result.errors == ("no series of 'q' matches q{kind=\"waiting\"}",)
    assert result.metrics.waiting_queue_size == PREVIOUS.waiting_queue_size
    assert result.metrics.running_requests == 2


def test_the_newest_timestamp_wins():
    mapping = EngineMapping.from_specs(EngineSpecs("t", queued_requests_spec="q"))
    result = run(b"q 1 100\nq 2 300\nq 3 200\n", mapping)
    assert result.metrics.waiting_queue_size == 2
    result = run(b"q 1\nq 2\nq 3\n", mapping)
    assert result.metrics.waiting_queue_size == 1


# LoRA


def lora(max_lora: str, running: str, waiting: str, value: str) -> bytes:
    return (
        f'vllm:lora_requests_info{{max_lora="{max_lora}",running_lora_adapters="{running}",'
        f'waiting_lora_adapters="{waiting}"}} {value}'
    ).encode()


LORA_LINES = [
    lora("2", "a", "", "100.5"),
    lora("3", "b,c", "d", "300.25"),
    lora("4", "", "e", "200.0"),
]


def lora_page(lines: list[bytes]) -> bytes:
    return (
        b"# HELP vllm:num_requests_running r\nvllm:num_requests_running 1\n"
        b"# HELP vllm:lora_requests_info Running stats on lora requests.\n"
        b"# TYPE vllm:lora_requests_info gauge\n" + b"\n".join(lines) + b"\n"
    )


@pytest.mark.parametrize("position", [0, 1, 2])
def test_the_lora_series_with_the_largest_value_wins_wherever_it_is(position: int):
    largest = LORA_LINES[1]
    others = [LORA_LINES[0], LORA_LINES[2]]
    lines = [*others[:position], largest, *others[position:]]
    assert lines[position] is largest
    result = run(lora_page(lines))
    assert result.metrics.active_models == {"b", "c"}
    assert result.metrics.waiting_models == {"d"}
    assert result.metrics.max_active_models == 3
    assert "vllm:lora_requests_info" not in " ".join(result.errors)


def test_lora_timestamps_do_not_matter_only_values():
    lines = [
        LORA_LINES[0].replace(b" 100.5", b" 100.5 9999999"),
        LORA_LINES[1],
    ]
    result = run(lora_page(lines))
    assert result.metrics.active_models == {"b", "c"}


def test_adapter_lists_are_trimmed_and_empty_items_dropped():
    line = (
        b'vllm:lora_requests_info{max_lora="8",running_lora_adapters=" a, ,b ,,c",'
        b'waiting_lora_adapters=",, d ,"} 5'
    )
    result = run(lora_page([line]))
    assert result.metrics.active_models == {"a", "b", "c"}
    assert result.metrics.waiting_models == {"d"}
    assert result.metrics.max_active_models == 8


def test_empty_adapter_lists_clear_the_previous_adapters():
    line = (
        b'vllm:lora_requests_info{max_lora="1",running_lora_adapters="",waiting_lora_adapters=""} 5'
    )
    result = run(lora_page([line]))
    assert result.metrics.active_models == frozenset()
    assert result.metrics.waiting_models == frozenset()


def test_a_non_integer_max_lora_is_an_error_and_the_adapters_are_still_read():
    line = lora("four", "a", "", "5")
    result = run(lora_page([line]))
    assert result.metrics.max_active_models == PREVIOUS.max_active_models
    assert result.metrics.active_models == {"a"}
    lora_errors = [e for e in result.errors if "max_lora" in e]
    assert lora_errors == ["vllm:lora_requests_info: label max_lora='four' is not an integer"]


def test_a_missing_max_lora_label_keeps_the_previous_value():
    line = b'vllm:lora_requests_info{running_lora_adapters="a"} 5'
    result = run(lora_page([line]))
    assert result.metrics.max_active_models == PREVIOUS.max_active_models
    assert result.metrics.active_models == {"a"}
    assert result.metrics.waiting_models == frozenset()


def test_a_missing_lora_family_is_not_an_error():
    page = (VLLM / "metrics-after.txt").read_bytes()
    assert b"vllm:lora_requests_info" not in page
    result = run(page)
    assert result.errors == ()
    assert result.metrics.active_models == PREVIOUS.active_models


def test_a_lora_spec_with_labels_selects_among_the_series():
    mapping = EngineMapping.from_specs(
        EngineSpecs("t", lora_spec='vllm:lora_requests_info{max_lora="4"}')
    )
    result = run(lora_page(LORA_LINES), mapping)
    assert result.metrics.waiting_models == {"e"}
    assert result.metrics.active_models == frozenset()
    assert result.errors == ()


def test_lora_alone_is_an_update():
    mapping = EngineMapping.from_specs(EngineSpecs("t", lora_spec="vllm:lora_requests_info"))
    result = run(lora_page(LORA_LINES), mapping)
    assert result.updated
    assert result.metrics.updated_at == NOW


# KV block geometry

CACHE_INFO = (
    b'vllm:cache_config_info{_block_size_resolved="True",block_size="%s",'
    b'effective_attention_block_size="99",num_gpu_blocks="%s",num_gpu_blocks_override="None"} 1.0\n'
)


def test_geometry_from_the_info_gauge_labels():
    result = run(b"vllm:num_requests_running 1\n" + CACHE_INFO % (b"16", b"2048"))
    assert (result.metrics.cache_block_size, result.metrics.cache_num_blocks) == (16, 2048)
    assert result.errors == (
        "metric family 'vllm:num_requests_waiting' not found",
        "metric family 'vllm:kv_cache_usage_perc' not found",
    )


@pytest.mark.parametrize(
    ("block_size", "num_blocks", "expected", "bad"),
    [
        (b"None", b"2048", (95, 2048), "label block_size='None' is not an integer"),
        (b"16", b"lots", (16, 96), "label num_gpu_blocks='lots' is not an integer"),
        (b"1.5", b"2048", (95, 2048), "label block_size='1.5' is not an integer"),
    ],
)
def test_a_cache_info_label_that_is_not_an_integer_is_an_error(
    block_size: bytes, num_blocks: bytes, expected: tuple[int, int], bad: str
):
    result = run(b"vllm:num_requests_running 1\n" + CACHE_INFO % (block_size, num_blocks))
    assert (result.metrics.cache_block_size, result.metrics.cache_num_blocks) == expected
    geometry_errors = [e for e in result.errors if "vllm:cache_config_info" in e]
    assert geometry_errors == [f"vllm:cache_config_info: {bad}"]


SGLANG = TABLE.mappings["sglang"]


def test_sglang_without_the_info_gauge_reads_the_two_gauges():
    page = b"sglang:num_queue_reqs 1\nsglang:page_size 64\nsglang:num_pages 777\n"
    result = run(page, SGLANG)
    assert (result.metrics.cache_block_size, result.metrics.cache_num_blocks) == (64, 777)
    assert not [e for e in result.errors if "cache" in e or "page" in e]


def test_sglang_with_the_info_gauge_prefers_it():
    page = (
        b'sglang:cache_config_info{num_pages="12345",page_size="32"} 1\n'
        b"sglang:page_size 64\nsglang:num_pages 777\n"
    )
    result = run(page, SGLANG)
    assert (result.metrics.cache_block_size, result.metrics.cache_num_blocks) == (32, 12345)


def test_sglang_with_neither_reports_both():
    result = run(b"sglang:num_queue_reqs 1\n", SGLANG)
    assert result.metrics.cache_block_size == PREVIOUS.cache_block_size
    assert "metric family 'sglang:page_size' not found" in result.errors
    assert "metric family 'sglang:num_pages' not found" in result.errors
    assert "metric family 'sglang:cache_config_info' not found" in result.errors


# The fixture pages of every engine (tests/data/metrics-pages/README.md, "Expected signals")

KEPT: Any = None  # the engine has no spec for the signal: the previous value stays

EXPECTED = [
    # file, engine, queue, running, kv, block size, num blocks, running LoRA, waiting LoRA, max LoRA
    (
        "vllm-lora.txt",
        "vllm",
        3,
        5,
        0.42,
        16,
        21947,
        {"sql-lora", "tweet-summary"},
        {"code-review-lora"},
        4,
    ),
    ("sglang.txt", "sglang", 7, 12, 0.3125, 64, 12345, KEPT, KEPT, KEPT),
    ("trtllm-serve.txt", "trtllm-serve", 11, 23, 0.6171957819561458, 32, 17923, KEPT, KEPT, KEPT),
    (
        "triton-tensorrt-llm.txt",
        "triton-tensorrt-llm",
        9,
        14,
        0.4453125,
        128,
        6272,
        KEPT,
        KEPT,
        KEPT,
    ),
    ("triton.txt", "triton", 6, 9322, KEPT, KEPT, KEPT, KEPT, KEPT, KEPT),
]


@pytest.mark.parametrize(
    (
        "file",
        "engine",
        "queue",
        "running",
        "kv",
        "block",
        "blocks",
        "active",
        "waiting",
        "max_lora",
    ),
    EXPECTED,
    ids=[row[0] for row in EXPECTED],
)
def test_each_engines_page(
    file: str,
    engine: str,
    queue: int,
    running: int,
    kv: float | None,
    block: int | None,
    blocks: int | None,
    active: set[str] | None,
    waiting: set[str] | None,
    max_lora: int | None,
):
    mapping = TABLE.for_labels({DEFAULT_ENGINE_LABEL: engine})
    assert mapping.name == engine
    result = run((PAGES / file).read_bytes(), mapping)
    assert result.errors == ()
    assert result.updated
    got = result.metrics
    assert got.waiting_queue_size == queue
    assert got.running_requests == running
    assert got.kv_cache_usage == (PREVIOUS.kv_cache_usage if kv is KEPT else kv)
    assert got.cache_block_size == (PREVIOUS.cache_block_size if block is KEPT else block)
    assert got.cache_num_blocks == (PREVIOUS.cache_num_blocks if blocks is KEPT else blocks)
    assert got.active_models == (PREVIOUS.active_models if active is KEPT else active)
    assert got.waiting_models == (PREVIOUS.waiting_models if waiting is KEPT else waiting)
    assert got.max_active_models == (PREVIOUS.max_active_models if max_lora is KEPT else max_lora)
    assert got.updated_at == NOW


def test_the_pages_read_the_same_through_a_shared_reader():
    # One reader (and its long-line cache) serves every endpoint of a plugin.
    reader = SeriesReader()
    for file, engine, queue, *_ in EXPECTED * 2:
        mapping = TABLE.mappings[engine]
        result = extract((PAGES / file).read_bytes(), mapping, PREVIOUS, NOW, reader)
        assert result.metrics.waiting_queue_size == queue


def test_each_page_read_with_another_engines_table_is_not_mistaken_for_it():
    # vLLM's table on SGLang's page finds nothing: no update, the previous signals stay.
    result = run((PAGES / "sglang.txt").read_bytes(), VLLM_MAPPING)
    assert not result.updated
    assert result.metrics is PREVIOUS


# Through the plugin


def endpoint(**labels: str) -> Endpoint:
    return testing.endpoint(1, name="e", labels=labels)


def test_the_plugin_updates_the_endpoint_with_its_engines_table():
    plugin = builtin_registry().create(
        "core-metrics-extractor",
        "x",
        {
            "engineConfigs": [
                {
                    "name": "sglang",
                    "queuedRequestsSpec": 'sglang:num_queue_reqs{dp_rank="1"}',
                    "runningRequestsSpec": "sglang:num_running_reqs{dp_rank=1}",
                    "kvUsageSpec": "sglang:token_usage{dp_rank='1'}",
                }
            ]
        },
    )
    sglang = endpoint(**{DEFAULT_ENGINE_LABEL: "sglang"})
    signals = plugin.extract((PAGES / "sglang.txt").read_bytes(), sglang, 7.0)
    assert list(signals.errors) == []
    got = signals.metrics
    assert got is not None
    assert (got.waiting_queue_size, got.running_requests) == (4, 9)
    assert got.kv_cache_usage == 0.273440664236533
    assert (got.cache_block_size, got.cache_num_blocks) == (0, 0)  # replaced whole: not read
    assert got.updated_at == 7.0

    vllm = endpoint()  # no label: the default engine
    signals = plugin.extract((PAGES / "vllm-lora.txt").read_bytes(), vllm, 8.0)
    assert list(signals.errors) == []
    got = signals.metrics
    assert got is not None
    assert (got.waiting_queue_size, got.cache_num_blocks) == (3, 21947)
    assert got.active_models == {"sql-lora", "tweet-summary"}
    assert sglang.metrics.updated_at == vllm.metrics.updated_at == 0.0  # never written


def test_the_plugin_leaves_the_endpoint_alone_when_nothing_was_read():
    plugin = builtin_registry().create("core-metrics-extractor", "x", None)
    before = EndpointMetrics(waiting_queue_size=5, updated_at=3.0)
    target = dataclasses.replace(endpoint(), metrics=before)
    signals = plugin.extract(b"unrelated 1\n", target, 9.0)
    assert len(signals.errors) == 4
    assert signals.metrics is None  # nothing to report: the endpoint keeps its signals


def test_the_plugin_custom_label_key_and_default_engine():
    plugin = builtin_registry().create(
        "core-metrics-extractor",
        "x",
        {"engineLabelKey": "example.com/server", "defaultEngine": "triton"},
    )
    trt = endpoint(**{"example.com/server": "trtllm-serve"})
    signals = plugin.extract((PAGES / "trtllm-serve.txt").read_bytes(), trt, 1.0)
    assert list(signals.errors) == []
    assert signals.metrics is not None and signals.metrics.waiting_queue_size == 11
    unlabelled = endpoint()
    signals = plugin.extract((PAGES / "triton.txt").read_bytes(), unlabelled, 1.0)
    assert list(signals.errors) == []
    assert signals.metrics is not None and signals.metrics.running_requests == 9322


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bogus": 1}, "unknown field `bogus`"),
        ({"engineConfigs": [{"name": "m", "bogusSpec": "x"}]}, "unknown field `bogusSpec`"),
        ({"engineConfigs": [{"name": "default"}]}, "the name 'default' is reserved"),
        ({"engineConfigs": [{"queuedRequestsSpec": "x"}]}, "missing required field `name`"),
        (
            {"engineConfigs": [{"name": "m", "kvUsageSpec": 'x{a="b"'}]},
            "engine 'm': kvUsageSpec: metric spec",
        ),
        ({"engineConfigs": [{"name": "a"}, {"name": "a"}]}, "engine 'a' is configured twice"),
        ({"defaultEngine": "nope"}, "defaultEngine 'nope' is not an engine"),
        ("vllm", "parameters must be a mapping"),
    ],
)
def test_bad_plugin_parameters_name_the_plugin(params: Any, message: str):
    with pytest.raises(
        ConfigError, match=r"plugin 'x' \(type 'core-metrics-extractor'\)"
    ) as caught:
        builtin_registry().create("core-metrics-extractor", "x", params)
    assert message in str(caught.value)


def test_an_engine_table_from_the_readme_example():
    plugin = builtin_registry().create(
        "core-metrics-extractor",
        "x",
        {
            "engineConfigs": [
                {
                    "name": "vllm",
                    "queuedRequestsSpec": "vllm:num_requests_waiting",
                    "runningRequestsSpec": "vllm:num_requests_running",
                    "kvUsageSpec": "vllm:kv_cache_usage_perc",
                    "loraSpec": "",
                    "cacheInfoSpec": "vllm:cache_config_info",
                }
            ]
        },
    )
    signals = plugin.extract((PAGES / "vllm-lora.txt").read_bytes(), endpoint(), 1.0)
    assert list(signals.errors) == []
    got = signals.metrics
    assert got is not None
    assert got.active_models == frozenset()  # LoRA reading is off
    assert got.max_active_models == 0
    assert (got.cache_block_size, got.cache_num_blocks) == (16, 21947)
    assert got.kv_cache_usage == 0.42
