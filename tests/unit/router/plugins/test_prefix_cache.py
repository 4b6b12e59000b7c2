"""Approximate prefix-cache routing: the prompt rendering, the producer and the scorer."""

from __future__ import annotations

import gc

import msgspec
import pytest

from llmd_router import testing
from llmd_router.datalayer import EndpointStore
from llmd_router.datalayer.inflight import InFlightLedger
from llmd_router.framework import (
    PREFIX_MATCH,
    Binds,
    CycleState,
    DataProducer,
    PluginHandle,
    PrefixMatch,
    PreRequest,
    ResponseComplete,
    prefix_match_key,
)
from llmd_router.observability.metrics import RouterMetrics
from llmd_router.parsing import parse_request
from llmd_router.parsing.prompt import estimate, prompt_inputs
from llmd_router.plugins.producers.approx_prefix_cache_producer import (
    PURGE_INTERVAL_S,
    ApproxPrefixCacheProducer,
    request_keys,
)
from llmd_router.plugins.scorers.prefix_cache_scorer import PrefixCacheScorer

SYSTEM = "You are a careful assistant. " * 40  # ~1,100 bytes: four blocks of 64 tokens


def chat(question: str, system: str = SYSTEM, model: str = "m", **extra: object):
    body = {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        **extra,
    }
    return parse_request("/v1/chat/completions", {}, msgspec.json.encode(body), "r")


def producer(clock: testing.FakeClock | None = None, **params) -> ApproxPrefixCacheProducer:
    made = testing.make(ApproxPrefixCacheProducer, **params)
    if clock is not None:
        made._clock = clock
        made._next_purge = clock() + PURGE_INTERVAL_S
    return made


def route(p: ApproxPrefixCacheProducer, request, endpoints, **profiles):
    """One request through the producer: matches for ``endpoints``, then recorded where the
    result sends it. Returns the matches."""
    cycle = CycleState()
    p.produce(cycle, request, endpoints)
    p.pre_request(cycle, request, testing.result(**profiles))
    matches = cycle.get(p.key)
    assert matches is not None
    return matches


# ---------------------------------------------------------------------------- rendering


def test_the_prompt_rendering_per_api():
    tools = [{"type": "function", "function": {"name": "f"}}]
    c = chat("why?", system="be brief", tools=tools)
    assert prompt_inputs(c) == [msgspec.json.encode(tools) + b"systembe briefuserwhy?"]
    completion = parse_request("/v1/completions", {}, b'{"model":"m","prompt":["ab","cd"]}', "r")
    assert prompt_inputs(completion) == [b"ab", b"cd"]  # one prompt per string
    ids = parse_request("/v1/completions", {}, b'{"model":"m","prompt":[5,6,7]}', "r")
    assert prompt_inputs(ids) == [[5, 6, 7]] and estimate(ids).token_count == 3
    responses = parse_request(
        "/v1/responses", {}, b'{"model":"m","input":"hi","instructions":"be nice"}', "r"
    )
    assert prompt_inputs(responses) == [b'[{"instructions":"be nice"},{"input":"hi"}]']
    assert estimate(c).token_count == -(-len(prompt_inputs(c)[0]) // 4)


def test_a_media_item_adds_an_aligned_placeholder_token():
    one = chat("x", system="ab")  # "system" "ab" "user" "x": 13 bytes
    image = {"type": "image_url", "image_url": {"url": "http://img/1.png"}}
    other = {"type": "image_url", "image_url": {"url": "http://img/2.png"}}
    with_image = parse_request(
        "/v1/chat/completions",
        {},
        msgspec.json.encode(
            {
                "model": "m",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "ab"}, image]}],
            }
        ),
        "r",
    )
    (data,) = prompt_inputs(with_image)
    assert data[:6] == b"userab" and len(data) == 12  # 6 bytes, aligned to 8, + 4
    swapped = msgspec.json.encode(
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "ab"}, other]}],
        }
    )
    assert prompt_inputs(parse_request("/v1/chat/completions", {}, swapped, "r")) != [data]
    assert estimate(one).token_count == 4


def test_keys_are_rooted_in_the_model_and_the_cache_salt():
    plain = request_keys(chat("q"), 64, 100)
    assert plain == request_keys(chat("q"), 64, 100)
    assert request_keys(chat("q", model="other"), 64, 100)[0][0] != plain[0][0]
    assert request_keys(chat("q", cache_salt="tenant-a"), 64, 100)[0][0] != plain[0][0]
    longer = request_keys(chat("a different question"), 64, 100)[0]
    assert longer[:3] == plain[0][:3]  # the shared system prompt's full blocks
    assert longer[-1] != plain[0][-1]


# ---------------------------------------------------------------------------- producer


def test_producer_kinds_declarations_and_defaults():
    p = producer()
    assert isinstance(p, DataProducer) and isinstance(p, PreRequest) and isinstance(p, Binds)
    assert not isinstance(p, ResponseComplete)
    assert p.produces == (PREFIX_MATCH,) and p.key == PREFIX_MATCH
    assert testing.make(ApproxPrefixCacheProducer, "mine").produces == (prefix_match_key("mine"),)
    assert p.block_size([]) == 64  # 16 by default, raised to 64
    assert p.max_blocks(64) == 2048  # 131072 tokens
    assert producer(maxPrefixTokensToMatch=0).max_blocks(64) == 2048  # the block cap then
    assert producer(maxPrefixTokensToMatch=0, maxPrefixBlocksToMatch=0).max_blocks(64) > 10**9


def test_a_prompt_is_matched_where_it_was_sent_and_nowhere_else():
    p = producer()
    a, b, c = testing.endpoints(3)
    first = route(p, chat("first question"), [a, b, c], default=[b])
    total = first[a.key].total_blocks
    assert total == 5 and {m.match_blocks for m in first.values()} == {0}
    again = route(p, chat("first question"), [a, b, c], default=[c])
    assert again[b.key] == PrefixMatch(total, total, 64)
    assert again[a.key].match_blocks == 0
    # A new question after the same system prompt: the shared blocks match, on b and on c.
    new = route(p, chat("another one"), [a, b, c], default=[a])
    assert new[b.key].match_blocks == new[c.key].match_blocks == 4  # the system prompt's blocks
    assert new[b.key].total_blocks == 5


def test_the_prefill_target_is_recorded_too():
    p = producer()
    decode, prefill, other = testing.endpoints(3)
    route(p, chat("q"), [decode, prefill, other], decode=[decode], prefill=[prefill])
    matches = route(p, chat("q"), [decode, prefill, other], decode=[other])
    assert matches[decode.key].match_blocks == matches[prefill.key].match_blocks > 0
    assert matches[other.key].match_blocks == 0


def test_auto_tune_takes_block_size_and_capacity_from_the_endpoints_reports():
    big = testing.endpoint(1, cache_block_size=128, cache_num_blocks=3)
    p = producer()
    assert p.block_size([big]) == 128
    assert p.block_size([testing.endpoint(2, cache_block_size=16)]) == 64  # never under 64
    route(p, chat("q" * 4000), [big], default=[big])
    assert p.statistics()["pods"] == [{"pod": big.key, "blocks": 3, "capacity": 3}]
    fixed = producer(autoTune=False, blockSizeTokens=100, lruCapacityPerServer=5)
    assert fixed.block_size([big]) == 100
    route(fixed, chat("q" * 4000), [big], default=[big])
    assert fixed.statistics()["pods"] == [{"pod": big.key, "blocks": 5, "capacity": 5}]


def test_endpoints_that_left_the_pool_are_forgotten():
    a, b = testing.endpoints(2)
    store = EndpointStore([a, b])
    clock = testing.FakeClock()
    p = producer(clock)
    p.bind(handle_for(store))
    route(p, chat("q"), [a, b], default=[a])
    route(p, chat("q2"), [a, b], default=[b])
    store.delete(a.id)
    clock.advance(PURGE_INTERVAL_S + 1)
    matches = route(p, chat("q"), [b], default=[b])  # the purge runs on the request path
    assert a.key not in p.index and b.key in p.index
    assert matches[b.key].match_blocks == 4  # only the system prompt was sent to b before
    again = route(p, chat("q"), [b], default=[b])
    assert again[b.key].match_blocks == again[b.key].total_blocks  # recorded by the last route


def handle_for(store: EndpointStore):
    from llmd_router.framework import PluginHandle  # noqa: PLC0415

    return PluginHandle({}, store.inflight, store)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"maxPrefixTokensToMatch": -1}, "maxPrefixTokensToMatch must be >= 0"),
        ({"autoTune": False, "blockSizeTokens": 0}, "blockSizeTokens must be > 0"),
        ({"lruCapacityPerServer": -3}, "lruCapacityPerServer must be >= 0"),
        ({"hashBlockSize": 64}, "hashBlockSize"),
    ],
)
def test_producer_parameter_errors(raw, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, ApproxPrefixCacheProducer.Params)


def test_the_deprecated_character_block_size_is_used_when_only_it_is_set():
    assert producer(autoTune=False, blockSize=96).block_size([]) == 96
    assert producer(autoTune=False, blockSize=96, blockSizeTokens=80).block_size([]) == 80


# ---------------------------------------------------------------------------- scorer


@pytest.mark.parametrize(
    ("params", "match", "expected"),
    [
        ({}, PrefixMatch(3, 4, 64), 0.75),
        ({}, PrefixMatch(0, 4, 64), 0.0),
        ({}, PrefixMatch(0, 0, 64), 0.0),  # nothing to match
        ({"matchLengthWeight": 1.0}, PrefixMatch(2, 4, 64), (128 / 8192) ** 2),
        ({"matchLengthWeight": 0.5, "matchLengthScaleTokens": 128}, PrefixMatch(2, 4, 64), 0.75),
        ({"matchLengthWeight": 0.5}, PrefixMatch(2, 4, 0), 0.5),  # no block size: the ratio
    ],
)
def test_scorer_formula(params, match, expected):
    scorer = testing.make(PrefixCacheScorer, **params)
    e = testing.endpoint(1)
    cycle = CycleState()
    cycle.put(PREFIX_MATCH, {e.key: match})
    assert testing.score(scorer, [e], cycle=cycle) == [pytest.approx(expected)]


def test_scorer_without_matches_scores_zero_and_reads_the_named_producer():
    a, b = testing.endpoints(2)
    assert testing.score(testing.make(PrefixCacheScorer), [a, b]) == [0.0, 0.0]
    named = testing.make(PrefixCacheScorer, prefixMatchInfoProducerName="burst")
    assert named.consumes == (prefix_match_key("burst"),)
    cycle = CycleState()
    cycle.put(prefix_match_key("burst"), {a.key: PrefixMatch(1, 1, 64)})
    assert testing.score(named, [a, b], cycle=cycle) == [1.0, 0.0]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"matchLengthWeight": 1.5}, "matchLengthWeight must be in"),
        ({"matchLengthWeight": 0.5, "matchLengthScaleTokens": 0}, "matchLengthScaleTokens"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_scorer_parameter_errors(raw, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, PrefixCacheScorer.Params)


def test_old_index_parameters_on_the_scorer_are_accepted_with_a_warning(caplog):
    testing.make(PrefixCacheScorer, hashBlockSize=64, lruCapacityPerServer=100)
    assert "hashBlockSize, lruCapacityPerServer belong to approx-prefix-cache-producer" in (
        caplog.text
    )


def test_the_default_pipeline_sends_a_repeated_prompt_back_where_it_went():
    store = EndpointStore(testing.endpoints(4))
    built = testing.pipeline(None, inflight=store.inflight)
    candidates = store.candidates(None)
    chosen = set()
    for _ in range(8):
        cycle = CycleState()
        request = chat("the same question")
        for producer_, _observe in built.producers:
            producer_.produce(cycle, request, candidates)
        result = built.scheduler.schedule(cycle, request, candidates)
        for hook, _observe in built.pre_request:
            hook.pre_request(cycle, request, result)
        chosen.add(result.targets[0].key)
    assert len(chosen) == 1  # idle, equal servers: the prefix decides after the first


# ---------------------------------------------------------------------------- metrics


def sample(metrics: RouterMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_the_index_reports_its_size_and_each_requests_match_in_the_metrics():
    metrics = RouterMetrics()
    a, b = testing.endpoints(2)
    p = testing.make(ApproxPrefixCacheProducer)
    p.bind(PluginHandle({}, InFlightLedger(), None, metrics))
    labels = {"plugin_name": p.name, "plugin_type": p.TYPE}
    route(p, chat("q"), [a, b], default=[a])
    route(p, chat("q"), [a, b], default=[b])  # a holds it: b is chosen anyway
    route(p, chat("q"), [a, b], default=[a])
    assert sample(metrics, "llm_d_epp_prefix_indexer_size", **labels) == 10  # 5 blocks, twice
    assert sample(metrics, "inference_extension_prefix_indexer_size") == 10
    # Matches on the chosen endpoint: none, none (b was not holding it), all 5 blocks.
    assert sample(metrics, "llm_d_epp_prefix_indexer_hit_ratio_count", **labels) == 3
    assert sample(metrics, "llm_d_epp_prefix_indexer_hit_ratio_sum", **labels) == 1.0
    assert sample(metrics, "llm_d_epp_prefix_indexer_hit_bytes_sum", **labels) == 5 * 64 * 4
    assert sample(metrics, "inference_extension_prefix_indexer_hit_bytes_count") == 3


def test_a_replaced_index_stops_counting_and_the_old_name_sums_every_index():
    metrics = RouterMetrics()
    a = testing.endpoint(1)
    first = testing.make(ApproxPrefixCacheProducer, "one")
    other = testing.make(ApproxPrefixCacheProducer, "two")
    for p in (first, other):
        p.bind(PluginHandle({}, InFlightLedger(), None, metrics))
        route(p, chat("q"), [a], default=[a])
    assert sample(metrics, "inference_extension_prefix_indexer_size") == 10
    del p, first  # a reload dropped "one": its index is not kept alive by the metrics
    gc.collect()
    assert (
        sample(
            metrics,
            "llm_d_epp_prefix_indexer_size",
            plugin_name="one",
            plugin_type=ApproxPrefixCacheProducer.TYPE,
        )
        == 0
    )
    assert sample(metrics, "inference_extension_prefix_indexer_size") == 5
    assert other.index_entries() == 5
