"""Metric specs (PromQL selectors) and the per-engine tables built from them."""

from __future__ import annotations

import dataclasses

import pytest

from llmd_router.datalayer.metrics.engines import (
    BUILTIN_ENGINES,
    DEFAULT_ENGINE_LABEL,
    LEGACY_ENGINE_LABEL,
    EngineMapping,
    EngineSpecs,
    EngineTable,
)
from llmd_router.datalayer.metrics.promtext import Series
from llmd_router.datalayer.metrics.spec import MetricSpec, parse_spec

# parse_spec


@pytest.mark.parametrize(
    ("text", "name", "labels"),
    [
        ("vllm:num_requests_waiting", "vllm:num_requests_waiting", {}),
        ("  padded_name  ", "padded_name", {}),
        ("x{}", "x", {}),
        ('x{a="b"}', "x", {"a": "b"}),
        ("x{a=b}", "x", {"a": "b"}),
        ("x{a='b'}", "x", {"a": "b"}),
        ('x{ a = "b" , c = d }', "x", {"a": "b", "c": "d"}),
        ('x{a="b",}', "x", {"a": "b"}),
        ('x{a="one, two}"}', "x", {"a": "one, two}"}),
        (r'x{a="say \"hi\" \\o/"}', "x", {"a": 'say "hi" \\o/'}),
        ('x{a=""}', "x", {"a": ""}),
        ('x{a!="b",c="d"}', "x", {"c": "d"}),
        ('x{a=~"b.*",c="d"}', "x", {"c": "d"}),
        ('x{a!~"b.*"}', "x", {}),
        ('x{__name__="y",c="d"}', "x", {"c": "d"}),
        ('x{__meta="y"}', "x", {}),
        (
            "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=fraction}",
            "nv_trt_llm_kv_cache_block_metrics",
            {"kv_cache_block_type": "fraction"},
        ),
    ],
)
def test_parse_spec(text: str, name: str, labels: dict[str, str]):
    spec = parse_spec(text)
    assert spec is not None
    assert spec.name == name
    assert dict(spec.labels) == labels


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_an_empty_spec_disables_the_signal(text: str):
    assert parse_spec(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "9lives",
        "x{",
        'x{a="b"',
        "x{a}",
        'x{a="b" c="d"}',
        'x{a="b"}}',
        "x{,a=b}",
        'x{"a"="b"}',
        "x y",
        'x{a="b"} extra',
        '{a="b"}',
    ],
)
def test_a_malformed_spec_is_a_value_error_naming_it(text: str):
    with pytest.raises(ValueError, match="metric spec") as caught:
        parse_spec(text)
    assert repr(text) in str(caught.value)


def test_a_spec_prints_as_a_selector():
    assert str(MetricSpec("x")) == "x"
    assert str(MetricSpec("x", {"a": "b", "c": "d"})) == 'x{a="b",c="d"}'
    again = parse_spec(str(MetricSpec("x", {"a": "b", "c": "d"})))
    assert again == MetricSpec("x", {"a": "b", "c": "d"})


# MetricSpec.matches / latest


def s(value: float, ts: int = 0, **labels: str) -> Series:
    return Series(labels, value, ts)


def test_a_series_matches_when_it_has_every_label_of_the_spec():
    spec = MetricSpec("x", {"a": "1"})
    assert spec.matches(s(0, a="1", b="2"))
    assert not spec.matches(s(0, a="2"))
    assert not spec.matches(s(0, b="2"))
    assert MetricSpec("x").matches(s(0, anything="here"))


def test_latest_picks_the_newest_timestamp():
    spec = MetricSpec("x")
    found = [s(1, 100), s(2, 300), s(3, 200)]
    assert spec.latest(found) is found[1]


def test_latest_picks_the_first_on_ties():
    spec = MetricSpec("x")
    untimed = [s(1), s(2), s(3)]
    assert spec.latest(untimed) is untimed[0]
    tied = [s(1, 50), s(2, 300), s(3, 300)]
    assert spec.latest(tied) is tied[1]


def test_latest_considers_only_matching_series():
    spec = MetricSpec("x", {"kind": "max"})
    found = [s(1, 900, kind="used"), s(2, 100, kind="max"), s(3, 200, kind="max")]
    assert spec.latest(found) is found[2]
    assert spec.latest([s(1, kind="used")]) is None
    assert spec.latest([]) is None


# EngineTable


def specs(name: str, **fields: str) -> EngineSpecs:
    return EngineSpecs(name, **fields)


def test_the_builtin_engines_are_present():
    table = EngineTable()
    assert set(table.mappings) == {
        "vllm",
        "sglang",
        "trtllm-serve",
        "triton-tensorrt-llm",
        "triton",
    }
    assert table.default.name == "vllm"
    vllm = table.mappings["vllm"]
    assert vllm.queue == MetricSpec("vllm:num_requests_waiting")
    assert vllm.lora == MetricSpec("vllm:lora_requests_info")
    assert vllm.cache_info == MetricSpec("vllm:cache_config_info")
    assert (vllm.cache_block_size_label, vllm.cache_num_blocks_label) == (
        "block_size",
        "num_gpu_blocks",
    )
    sglang = table.mappings["sglang"]
    assert (sglang.cache_block_size_label, sglang.cache_num_blocks_label) == (
        "page_size",
        "num_pages",
    )
    assert sglang.cache_block_size == MetricSpec("sglang:page_size")
    trt = table.mappings["triton-tensorrt-llm"]
    assert trt.running == MetricSpec("nv_trt_llm_request_metrics", {"request_type": "scheduled"})
    triton = table.mappings["triton"]
    assert triton.kv_usage is None
    assert triton.families() == ("nv_inference_pending_request_count", "nv_inference_exec_count")


def test_families_are_listed_once():
    table = EngineTable()
    assert table.mappings["triton-tensorrt-llm"].families() == (
        "nv_trt_llm_request_metrics",
        "nv_trt_llm_kv_cache_block_metrics",
    )


def test_every_builtin_spec_parses():
    for builtin in BUILTIN_ENGINES:
        mapping = EngineMapping.from_specs(builtin)
        assert mapping.name == builtin.name
        assert mapping.queue is not None
        assert mapping.running is not None


def test_a_configured_engine_with_a_builtin_name_replaces_it_whole():
    table = EngineTable(
        [
            specs(
                "vllm",
                queued_requests_spec="vllm:num_requests_waiting",
                running_requests_spec="vllm:num_requests_running",
                lora_spec="",
            )
        ]
    )
    vllm = table.mappings["vllm"]
    assert vllm.lora is None
    assert vllm.kv_usage is None  # not restated, so gone
    assert vllm.cache_info is None
    assert vllm.queue == MetricSpec("vllm:num_requests_waiting")
    assert table.default is vllm
    # The other built-ins are untouched.
    assert table.mappings["sglang"].kv_usage == MetricSpec("sglang:token_usage")


def test_empty_label_names_fall_back_to_vllms():
    table = EngineTable(
        [
            specs(
                "sglang",
                cache_info_spec="sglang:cache_config_info",
                cache_block_size_label_name="",
                cache_num_blocks_label_name="",
            )
        ]
    )
    sglang = table.mappings["sglang"]
    assert (sglang.cache_block_size_label, sglang.cache_num_blocks_label) == (
        "block_size",
        "num_gpu_blocks",
    )
    assert sglang.cache_block_size is None


def test_a_new_engine_is_added():
    table = EngineTable(
        [specs("mine", queued_requests_spec='my_queue{pool="a"}', kv_usage_spec="my_kv")]
    )
    mine = table.mappings["mine"]
    assert mine.queue == MetricSpec("my_queue", {"pool": "a"})
    assert mine.running is None
    assert mine.kv_usage == MetricSpec("my_kv")
    assert len(table.mappings) == len(BUILTIN_ENGINES) + 1
    assert table.default.name == "vllm"


def test_a_new_engine_can_be_the_default():
    table = EngineTable([specs("mine", queued_requests_spec="q")], default_engine="mine")
    assert table.default.name == "mine"
    assert table.for_labels({}).name == "mine"


def test_a_builtin_can_be_the_default():
    assert EngineTable(default_engine="sglang").for_labels({}).name == "sglang"


@pytest.mark.parametrize(
    ("configured", "default_engine", "message"),
    [
        ([specs("default", queued_requests_spec="q")], "vllm", "the name 'default' is reserved"),
        ([specs("", queued_requests_spec="q")], "vllm", "an engine config has no name"),
        (
            [specs("mine", queued_requests_spec="q"), specs("mine", running_requests_spec="r")],
            "vllm",
            "engine 'mine' is configured twice",
        ),
        ([], "nope", r"defaultEngine 'nope' is not an engine \(sglang, triton, "),
        ([specs("mine")], "default", "defaultEngine 'default' is not an engine"),
    ],
)
def test_bad_engine_tables(configured: list[EngineSpecs], default_engine: str, message: str):
    with pytest.raises(ValueError, match=message):
        EngineTable(configured, default_engine=default_engine)


@pytest.mark.parametrize(
    ("field", "camel"),
    [
        ("queued_requests_spec", "queuedRequestsSpec"),
        ("running_requests_spec", "runningRequestsSpec"),
        ("kv_usage_spec", "kvUsageSpec"),
        ("lora_spec", "loraSpec"),
        ("cache_info_spec", "cacheInfoSpec"),
        ("cache_block_size_spec", "cacheBlockSizeSpec"),
        ("cache_num_blocks_spec", "cacheNumBlocksSpec"),
    ],
)
def test_a_malformed_spec_names_the_engine_and_the_field(field: str, camel: str):
    bad = dataclasses.replace(EngineSpecs("mine"), **{field: 'x{a="b"'})
    with pytest.raises(ValueError, match=f"engine 'mine': {camel}: metric spec") as caught:
        EngineTable([bad])
    assert """'x{a="b"'""" in str(caught.value)


# Choosing an engine


def test_the_engine_label_chooses():
    table = EngineTable()
    assert table.for_labels({DEFAULT_ENGINE_LABEL: "sglang"}).name == "sglang"
    assert table.for_labels({DEFAULT_ENGINE_LABEL: "triton"}).name == "triton"


def test_the_legacy_label_is_read_next():
    table = EngineTable()
    assert table.for_labels({LEGACY_ENGINE_LABEL: "trtllm-serve"}).name == "trtllm-serve"
    both = {DEFAULT_ENGINE_LABEL: "sglang", LEGACY_ENGINE_LABEL: "trtllm-serve"}
    assert table.for_labels(both).name == "sglang"
    empty_new = {DEFAULT_ENGINE_LABEL: "", LEGACY_ENGINE_LABEL: "trtllm-serve"}
    assert table.for_labels(empty_new).name == "trtllm-serve"


def test_without_a_label_the_default():
    table = EngineTable(default_engine="triton")
    assert table.for_labels({}) is table.default
    assert table.for_labels({"app": "sglang"}).name == "triton"


def test_an_unknown_engine_name_means_the_default():
    table = EngineTable(default_engine="sglang")
    assert table.for_labels({DEFAULT_ENGINE_LABEL: "llama.cpp"}).name == "sglang"
    assert table.for_labels({LEGACY_ENGINE_LABEL: "default"}).name == "sglang"


def test_a_custom_label_key():
    table = EngineTable(label_key="example.com/server")
    assert table.for_labels({"example.com/server": "sglang"}).name == "sglang"
    # The default key is no longer read; the legacy one still is.
    assert table.for_labels({DEFAULT_ENGINE_LABEL: "sglang"}).name == "vllm"
    assert table.for_labels({LEGACY_ENGINE_LABEL: "triton"}).name == "triton"


def test_an_empty_label_key_means_the_default_key():
    table = EngineTable(label_key="")
    assert table.label_key == DEFAULT_ENGINE_LABEL
    assert table.for_labels({DEFAULT_ENGINE_LABEL: "sglang"}).name == "sglang"
