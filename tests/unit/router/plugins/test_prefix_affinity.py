"""Sticky until saturated: prefix-cache-affinity-filter's rules, token-load-scorer with the
request's uncached tokens, the token producer, and what a configuration of them gets built."""

from __future__ import annotations

import random
from collections import Counter

import msgspec
import pytest

from llmd_router import testing
from llmd_router.datalayer import EndpointStore
from llmd_router.framework import (
    INFLIGHT_LOAD,
    PREFIX_MATCH,
    TOKENIZED_PROMPT,
    UNCACHED_TOKENS,
    CycleState,
    InFlightLoad,
    PrefixMatch,
    TokenizedPrompt,
    prefix_match_key,
)
from llmd_router.observability.metrics import RouterMetrics
from llmd_router.parsing import parse_request
from llmd_router.plugins.filters.prefix_cache_affinity_filter import PrefixCacheAffinityFilter
from llmd_router.plugins.producers.token_producer import TokenProducer
from llmd_router.plugins.scorers.token_load_scorer import TokenLoadScorer
from llmd_router.requestcontrol import Director, Outcome

A, B, C = testing.endpoints(3)


def affinity(**params) -> PrefixCacheAffinityFilter:
    return testing.make(PrefixCacheAffinityFilter, **params)


def cycle(matches: dict[str, tuple[int, int]], tokens: dict[str, int] | None = None) -> CycleState:
    state = CycleState()
    state.put(PREFIX_MATCH, {k: PrefixMatch(m, t, 64) for k, (m, t) in matches.items()})
    if tokens is not None:
        state.put(INFLIGHT_LOAD, {k: InFlightLoad(1, v) for k, v in tokens.items()})
    return state


# ---------------------------------------------------------------------------- the filter


def test_the_endpoints_holding_the_threshold_are_kept():
    f = affinity()
    state = cycle({A.key: (8, 10), B.key: (7, 10), C.key: (10, 10)})  # 0.8, 0.7, 1.0
    assert testing.keep(f, [A, B, C], cycle=state) == [A, C]
    assert f.statistics() == {"outcomes": {"sticky": 1}}


@pytest.mark.parametrize(
    ("params", "matches", "endpoints"),
    [
        ({}, {A.key: (0, 10), B.key: (5, 10)}, [A, B]),  # none sticky
        ({}, {A.key: (10, 10)}, [A]),  # one candidate
        ({"affinityThreshold": 0}, {A.key: (10, 10)}, [A, B]),  # off
        ({"affinityThreshold": -1}, {A.key: (10, 10)}, [A, B]),
        ({}, {A.key: (0, 0), B.key: (0, 0)}, [A, B]),  # a request with no blocks
    ],
    ids=["none-sticky", "one", "threshold-0", "threshold-negative", "no-blocks"],
)
def test_every_endpoint_is_kept_when_there_is_no_affinity_to_keep(params, matches, endpoints):
    assert testing.keep(affinity(**params), endpoints, cycle=cycle(matches)) == endpoints


def test_without_prefix_data_every_endpoint_is_kept():
    assert testing.keep(affinity(), [A, B]) == [A, B]


def test_the_sticky_endpoints_are_left_when_waiting_there_costs_more_than_the_penalty():
    f = affinity(peakPrefillThroughput=1000, maxTTFTPenaltyMs=2000)  # 2000 tokens of slack
    matches = {A.key: (10, 10), B.key: (0, 10), C.key: (0, 10)}
    # Sticky A has 2500 tokens queued (2.5 s), the best other 400 (0.4 s): 2.1 s > 2 s.
    assert testing.keep(f, [A, B, C], cycle=cycle(matches, {A.key: 2500, B.key: 400})) == [
        A,
        B,
        C,
    ]
    assert f.statistics()["outcomes"] == {"saturated": 1}
    # 2.4 s against 0.4 s: exactly 2 s is not more than the penalty; A keeps the request.
    assert testing.keep(
        f, [A, B, C], cycle=cycle(matches, {A.key: 2400, B.key: 400, C.key: 400})
    ) == [A]
    # An endpoint missing from the load is idle.
    assert testing.keep(f, [A, B], cycle=cycle(matches, {A.key: 2001})) == [A, B]


def test_a_penalty_of_zero_always_sticks():
    f = affinity(maxTTFTPenaltyMs=0)
    state = cycle({A.key: (10, 10), B.key: (0, 10)}, {A.key: 10**9})
    assert testing.keep(f, [A, B], cycle=state) == [A]
    assert f.consumes == (PREFIX_MATCH,)  # no load needed then


def test_exploration_keeps_every_endpoint_at_the_configured_rate():
    f = affinity(explorationProbability=0.25)
    state = cycle({A.key: (10, 10), B.key: (0, 10)})
    f.rng = testing.FixedDraw(0.2)
    assert testing.keep(f, [A, B], cycle=state) == [A, B]
    f.rng = testing.FixedDraw(0.3)
    assert testing.keep(f, [A, B], cycle=state) == [A]
    f.rng = random.Random(7)
    kept_all = sum(len(testing.keep(f, [A, B], cycle=state)) == 2 for _ in range(4000))
    assert 850 < kept_all < 1150  # 1000 expected


def test_the_filter_reads_the_named_producers_matches():
    f = affinity(prefixMatchInfoProducerName="burst")
    state = CycleState()
    state.put(prefix_match_key("burst"), {A.key: PrefixMatch(10, 10, 64)})
    state.put(PREFIX_MATCH, {B.key: PrefixMatch(10, 10, 64)})
    assert testing.keep(f, [A, B], cycle=state) == [A]
    assert f.consumes == (prefix_match_key("burst"), INFLIGHT_LOAD)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"affinityThreshold": 1.5}, "affinityThreshold must be <= 1.0"),
        ({"explorationProbability": 1.5}, r"explorationProbability must be in \[0, 1\]"),
        ({"explorationProbability": -0.1}, r"explorationProbability must be in \[0, 1\]"),
        ({"maxTTFTPenaltyMs": -1}, "maxTTFTPenaltyMs must be >= 0"),
        ({"peakPrefillThroughput": -1}, "peakPrefillThroughput must be >= 0"),
        ({"peakPrefillThroughput": 0}, "peakPrefillThroughput must be > 0"),
        ({"ttftSource": "guess"}, "ttftSource"),
        ({"ttftSource": "latencyPredictor"}, "needs a latency predictor"),
        ({"affinityThreshold": "high"}, "Expected `float`"),
    ],
)
def test_filter_parameter_errors(raw, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, PrefixCacheAffinityFilter.Params)


def test_filter_defaults_are_llmds():
    p = msgspec.convert({}, PrefixCacheAffinityFilter.Params)
    assert (p.affinity_threshold, p.exploration_probability, p.max_ttft_penalty_ms) == (
        0.8,
        0.0,
        18000.0,
    )
    assert (p.ttft_source, p.peak_prefill_throughput) == ("prefillThroughput", 15928.0)
    # Without the gate, the latency predictor is never asked for: accepted.
    msgspec.convert(
        {"ttftSource": "latencyPredictor", "maxTTFTPenaltyMs": 0},
        PrefixCacheAffinityFilter.Params,
    )


# ---------------------------------------------------------------------------- token load


def test_token_load_counts_the_requests_own_uncached_tokens():
    scorer = testing.make(TokenLoadScorer, queueThresholdTokens=1000)
    state = CycleState()
    state.put(INFLIGHT_LOAD, {A.key: InFlightLoad(1, 200), B.key: InFlightLoad(1, 200)})
    state.put(UNCACHED_TOKENS, {A.key: 0, B.key: 300})  # A holds the prompt, B would compute it
    assert testing.score(scorer, [A, B, C], cycle=state) == pytest.approx([0.8, 0.5, 1.0])


# ---------------------------------------------------------------------------- tokens


def test_the_token_producer_estimates_once_and_keeps_an_earlier_producers_tokens():
    producer = testing.make(TokenProducer)
    request = parse_request(
        "/v1/chat/completions",
        {},
        b'{"model":"m","messages":[{"role":"user","content":"hello"}]}',
        "r",
    )
    state = CycleState()
    producer.produce(state, request, [A])
    assert state.get(TOKENIZED_PROMPT) == TokenizedPrompt((b"userhello",), 3)
    exact = CycleState()
    exact.put(TOKENIZED_PROMPT, TokenizedPrompt(([1, 2],), 2, exact=True))
    producer.produce(exact, request, [A])
    assert exact.get(TOKENIZED_PROMPT) == TokenizedPrompt(([1, 2],), 2, exact=True)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"vllm": {"url": "127.0.0.1:8000"}}, "vllm.url must be an http"),
        ({"vllm": {"timeout": "forever"}}, "vllm.timeout must be a positive duration"),
        ({"udsTokenizerConfig": {"socketFile": "/tmp/t"}}, "udsTokenizerConfig"),
        ({"backend": "magic"}, "unknown field"),
    ],
)
def test_token_producer_parameter_errors(raw, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, TokenProducer.Params)


# ---------------------------------------------------------------------------- configurations


STICKY = """\
plugins:
- type: prefix-cache-affinity-filter
  parameters: {peakPrefillThroughput: 1000, maxTTFTPenaltyMs: 2500}
- type: token-load-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: prefix-cache-affinity-filter
  - pluginRef: token-load-scorer
"""


def test_the_filter_brings_its_producers_in_order():
    pipeline = testing.pipeline(STICKY)
    assert [p.name for p, _ in pipeline.producers] == [
        "token-producer",
        "approx-prefix-cache-producer",
        "inflight-load-producer",
    ]


def test_a_prefix_based_decider_gets_the_prefix_producer():
    pipeline = testing.pipeline(
        "plugins:\n- type: prefill-filter\n- type: decode-filter\n"
        "- type: prefix-based-pd-decider\n  parameters: {nonCachedTokens: 100}\n"
        "- type: disagg-profile-handler\n"
        "  parameters: {deciders: {prefill: prefix-based-pd-decider}}\n"
        "schedulingProfiles:\n"
        "- name: prefill\n  plugins: [{pluginRef: prefill-filter}]\n"
        "- name: decode\n  plugins: [{pluginRef: decode-filter}]\n"
    )
    assert [p.name for p, _ in pipeline.producers] == [
        "token-producer",
        "approx-prefix-cache-producer",
    ]


def test_the_tokenizer_alias_still_builds_a_token_producer():
    pipeline = testing.pipeline("plugins: [{type: tokenizer}, {type: prefix-cache-scorer}]\n")
    assert isinstance(pipeline.plugins["tokenizer"].instance, TokenProducer)
    assert "token-producer" not in pipeline.plugins  # the alias produces the key


# ---------------------------------------------------------------------------- end to end


def chat_body(system: str, question: str) -> bytes:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    return msgspec.json.encode({"model": "m", "messages": messages})


def sticky_director(config: str = STICKY) -> Director:
    store = EndpointStore(testing.endpoints(4))
    return Director(
        store,
        testing.pipeline(config, inflight=store.inflight),
        RouterMetrics(),
        rng=random.Random(3),
    )


def test_a_hot_prefix_sticks_until_its_endpoint_saturates_then_spills():
    """One client: a long shared system prompt, a new question each time, every request still
    in its prefill. The endpoint that holds the prompt keeps the client while its queued
    prompt tokens cost less than the penalty; then the others take their share."""
    director = sticky_director()
    headers = {":path": "/v1/chat/completions"}
    system = "s" * 3990  # with "system": 1000 tokens, 15 full blocks of 64
    records = [
        director.route(
            headers,
            chat_body(system, f"question {i:04d} " + "q" * 380),
            {},
            has_body=True,
            received_at=0.0,
        )[1]
        for i in range(40)
    ]
    keys = [r.endpoint.key for r in records]
    # The first costs its holder 18 blocks (1152 tokens), each next one its 3 uncached blocks
    # (192): the holder keeps them while it has at most 2500 tokens queued (1152 + 7 * 192
    # = 2496 before the ninth).
    assert keys[:9] == [keys[0]] * 9
    assert keys[9] != keys[0]
    assert len(set(keys)) == 4 and max(Counter(keys).values()) <= 20
    for r in records:
        director.settlement.settle(r, Outcome(decided=True))
    assert len(director.store.inflight) == 0


def test_a_prompt_computed_releases_its_tokens_so_the_holder_keeps_its_client():
    """The same client when each prefill finishes (first chunk) before the next request: the
    holder never queues prompt work, so it keeps every request."""
    director = sticky_director()
    headers = {":path": "/v1/chat/completions"}
    keys = []
    for i in range(20):
        body = chat_body("s" * 3990, f"question {i:04d} " + "q" * 380)
        record = director.route(headers, body, {}, has_body=True, received_at=0.0)[1]
        director.settlement.first_chunk(record)
        keys.append(record.endpoint.key)
    assert keys == [keys[0]] * 20
    assert director.store.inflight.load(keys[0]) == InFlightLoad(20, 0)


def test_identical_prompts_count_their_output_to_saturate():
    """Identical prompts cost their holder no prompt tokens (llm-d's estimate): only the
    output estimate, which lasts to the end, makes the holder saturate."""
    identical = chat_body("s" * 3990, "the same question")
    headers = {":path": "/v1/chat/completions"}

    def spread(config: str) -> int:
        director = sticky_director(config)
        records = [
            director.route(headers, identical, {}, has_body=True, received_at=0.0)[1]
            for _ in range(12)
        ]
        for r in records:
            director.settlement.first_chunk(r)
        return len({r.endpoint.key for r in records})

    assert spread(STICKY) == 1
    with_output = STICKY.replace(
        "schedulingProfiles:",
        "- type: inflight-load-producer\n  parameters: {addEstimatedOutputTokens: true}\n"
        "schedulingProfiles:",
    )
    assert spread(with_output) > 1
