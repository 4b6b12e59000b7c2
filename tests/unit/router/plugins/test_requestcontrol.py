"""Request-control plugins: inflight-load-producer accounting and probabilistic-admitter odds."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import msgspec
import pytest

from llmd_router import testing
from llmd_router.config import ConfigError
from llmd_router.datalayer.endpoints import Endpoint
from llmd_router.datalayer.inflight import InFlightCharge, InFlightLedger
from llmd_router.framework import (
    INFLIGHT_LOAD,
    PREFIX_MATCH,
    TOKENIZED_PROMPT,
    UNCACHED_TOKENS,
    Admitter,
    Binds,
    CycleState,
    DataProducer,
    InFlightLoad,
    PrefixMatch,
    PreRequest,
    Registry,
    ResponseComplete,
    SaturationDetector,
    SchedulingResult,
    Stability,
    TokenizedPrompt,
)
from llmd_router.plugins.admitters.probabilistic_admitter import (
    ProbabilisticAdmitter,
)
from llmd_router.plugins.producers.inflight_load_producer import (
    InFlightLoadProducer,
    input_tokens,
    uncached_input_tokens,
)

if TYPE_CHECKING:
    from llmd_router.parsing.request import InferenceRequest


def endpoint(i: int, **metrics) -> Endpoint:
    return testing.endpoint(i, **metrics)


def request(
    size: int = 400, priority: int = 0, max_tokens: int | None = None, rid: str = "r"
) -> InferenceRequest:
    """A completion whose prompt is ``size`` bytes: ``ceil(size / 4)`` tokens, estimated."""
    return testing.request(
        prompt="x" * size, priority=priority, max_tokens=max_tokens, request_id=rid
    )


result = testing.result


def producer(**params) -> InFlightLoadProducer:
    return InFlightLoadProducer("inflight", msgspec.convert(params, InFlightLoadProducer.Params))


def admitter(**params) -> ProbabilisticAdmitter:
    return ProbabilisticAdmitter("admit", msgspec.convert(params, ProbabilisticAdmitter.Params))


class Routing:
    """The producer bound to a ledger, and the router's part: charging a routed request's
    cycle to the ledger, refunding it when it ends."""

    def __init__(self, **params) -> None:
        self.ledger = InFlightLedger()
        self.producer = testing.make(InFlightLoadProducer, inflight=self.ledger, **params)

    def route(
        self, r: InferenceRequest, res: SchedulingResult, cycle: CycleState | None = None
    ) -> tuple[InFlightCharge, ...]:
        cycle = cycle or CycleState()
        self.producer.pre_request(cycle, r, res)
        return testing.route(self.ledger, cycle, res)

    def first_chunk(self, charges: tuple[InFlightCharge, ...]) -> tuple[InFlightCharge, ...]:
        """The response's first chunk: what was charged until then is refunded; the rest."""
        self.ledger.refund(c for c in charges if c.until_first_chunk)
        return tuple(c for c in charges if not c.until_first_chunk)

    def end(self, charges: tuple[InFlightCharge, ...]) -> None:
        self.ledger.refund(charges)

    def load(self, key: str) -> InFlightLoad:
        return self.ledger.load(key)


# ---------------------------------------------------------------------------- producer


def test_producer_kinds_and_declarations():
    p = producer()
    assert isinstance(p, DataProducer)
    assert isinstance(p, PreRequest)
    assert isinstance(p, Binds)  # it reads the router's ledger
    assert not isinstance(p, ResponseComplete)  # the router refunds what a request was charged
    assert not isinstance(p, SaturationDetector)
    assert p.produces == (INFLIGHT_LOAD, UNCACHED_TOKENS)
    assert p.consumes == (TOKENIZED_PROMPT,)  # the token producer is added for it
    assert p.reads == (PREFIX_MATCH,)  # used when present; no prefix producer is added for it
    assert p.STABILITY is Stability.BETA
    assert p.TYPE == "inflight-load-producer"


@pytest.mark.parametrize(
    ("size", "tokens"), [(0, 0), (1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (400, 100), (403, 101)]
)
def test_input_tokens_are_four_bytes_of_prompt_each(size, tokens):
    assert input_tokens(CycleState(), request(size)) == tokens


def test_input_tokens_are_the_token_producers_count():
    cycle = CycleState()
    cycle.put(TOKENIZED_PROMPT, TokenizedPrompt(([1, 2, 3],), 3, exact=True))
    assert input_tokens(cycle, request(4000)) == 3


@pytest.mark.parametrize(
    ("match", "input_tokens", "uncached"),
    [
        (None, 100, 100),
        (PrefixMatch(match_blocks=2, total_blocks=4, block_size_tokens=16), 100, 32 + 36),
        (PrefixMatch(4, 4, 16), 64, 0),
        (PrefixMatch(0, 4, 16), 10, 64),  # the index counts real blocks; no tail
        (PrefixMatch(3, 4, 16), 200, 16 + 136),
        (PrefixMatch(5, 4, 16), 64, 0),  # more matched than indexed: not negative
        (PrefixMatch(2, 4, 0), 100, 100),  # block size unknown: the whole prompt
        (None, -5, 0),
    ],
)
def test_cached_prefix_is_discounted(match, input_tokens, uncached):
    assert uncached_input_tokens(match, input_tokens) == uncached


@pytest.mark.parametrize(
    ("params", "size", "max_tokens", "tokens"),
    [
        ({}, 400, None, 100),  # no output estimate by default
        ({"addEstimatedOutputTokens": True}, 400, None, 100 + 150),
        ({"addEstimatedOutputTokens": True}, 400, 40, 100 + 40),  # the client's cap
        ({"addEstimatedOutputTokens": True}, 400, 0, 100 + 0),
        ({"addEstimatedOutputTokens": True}, 400, -1, 100 + 150),  # a negative cap is no cap
        ({"addEstimatedOutputTokens": True, "maxEstimatedOutputTokens": 30}, 400, 40, 100 + 30),
        ({"addEstimatedOutputTokens": True, "maxEstimatedOutputTokens": 90}, 400, 40, 100 + 40),
        ({"addEstimatedOutputTokens": True, "outputRatio": 0.5}, 20, None, 5 + 3),  # 2.5 -> 3
        ({"addEstimatedOutputTokens": True, "outputRatio": 0}, 400, None, 100),
        ({"addEstimatedOutputTokens": True}, 0, None, 0),  # no prompt, no tokens
    ],
)
def test_tokens_added_per_target(params, size, max_tokens, tokens):
    routing = Routing(**params)
    e = endpoint(1)
    routing.route(request(size, max_tokens=max_tokens), result(default=(e,)))
    assert routing.load(e.key) == InFlightLoad(requests=1, tokens=tokens)


def test_output_estimate_uses_the_whole_prompt_not_the_uncached_part():
    routing = Routing(addEstimatedOutputTokens=True)
    e = endpoint(1)
    cycle = CycleState()
    cycle.put(
        PREFIX_MATCH, {e.key: PrefixMatch(match_blocks=5, total_blocks=6, block_size_tokens=16)}
    )
    routing.route(request(400), result(default=(e,)), cycle)
    # input 100: uncached 16 + tail 4, output round(100 * 1.5)
    assert routing.load(e.key) == InFlightLoad(1, 20 + 150)


def test_produce_writes_the_candidates_only():
    routing = Routing()
    a, b, c = endpoint(1), endpoint(2), endpoint(3)
    routing.route(request(400), result(default=(a, b)))  # target[0] only
    routing.route(request(80), result(default=(c,)))
    cycle = CycleState()
    routing.producer.produce(cycle, request(), [a, b])
    assert cycle.get(INFLIGHT_LOAD) == {a.key: InFlightLoad(1, 100), b.key: InFlightLoad(0, 0)}


def test_every_profile_counts_and_an_endpoint_in_two_profiles_counts_twice():
    routing = Routing()
    d, f = endpoint(1), endpoint(2)
    charges = routing.route(request(400), result(decode=(d, f), prefill=(f,), encode=()))
    assert (routing.load(d.key), routing.load(f.key)) == (
        InFlightLoad(1, 100),
        InFlightLoad(1, 100),
    )
    routing.end(charges)
    assert routing.load(d.key) == routing.load(f.key) == InFlightLoad(0, 0)

    charges = routing.route(request(400), result(decode=(d,), prefill=(d,)))
    assert routing.load(d.key) == InFlightLoad(2, 200)
    routing.end(charges)
    assert routing.load(d.key) == InFlightLoad(0, 0)


def test_prompt_tokens_end_at_the_first_chunk_and_requests_at_the_end():
    routing = Routing()
    d, p = endpoint(1), endpoint(2)
    charges = routing.route(request(400), result(decode=(d,), prefill=(p,)))
    assert (routing.load(d.key), routing.load(p.key)) == (
        InFlightLoad(1, 100),
        InFlightLoad(1, 100),
    )
    rest = routing.first_chunk(charges)
    # The prompt is computed: its tokens leave both; the prefill endpoint has handed off.
    assert (routing.load(d.key), routing.load(p.key)) == (InFlightLoad(1, 0), InFlightLoad(0, 0))
    routing.end(rest)
    assert routing.load(d.key) == routing.load(p.key) == InFlightLoad(0, 0)


def test_with_the_output_estimate_only_the_prefill_endpoint_is_released_early():
    routing = Routing(addEstimatedOutputTokens=True)
    d, p = endpoint(1), endpoint(2)
    charges = routing.route(request(400), result(decode=(d,), prefill=(p,)))
    rest = routing.first_chunk(charges)
    assert (routing.load(d.key), routing.load(p.key)) == (InFlightLoad(1, 250), InFlightLoad(0, 0))
    routing.end(rest)
    assert routing.load(d.key) == InFlightLoad(0, 0)


def test_produce_writes_each_candidates_uncached_tokens():
    routing = Routing(addEstimatedOutputTokens=True, maxEstimatedOutputTokens=10)
    a, b = endpoint(1), endpoint(2)
    cycle = CycleState()
    cycle.put(TOKENIZED_PROMPT, TokenizedPrompt((b"x" * 400,), 100))
    cycle.put(PREFIX_MATCH, {a.key: PrefixMatch(1, 2, 64)})  # a holds the first of two blocks
    routing.producer.produce(cycle, request(0), [a, b])
    # The partial last block counts whole (llm-d's formula): 64 uncached on a; the output
    # estimate (capped at 10) on both.
    assert cycle.get(UNCACHED_TOKENS) == {a.key: 64 + 10, b.key: 100 + 10}


def test_release_is_exact_and_never_below_zero():
    routing = Routing()
    e = endpoint(1)
    first = routing.route(request(400, rid="a"), result(default=(e,)))
    routing.route(request(80, rid="b"), result(default=(e,)))
    assert routing.load(e.key) == InFlightLoad(2, 120)

    routing.end(first)
    assert routing.load(e.key) == InFlightLoad(1, 20)

    # More than what is held (it cannot happen; the floor is the defence).
    routing.end((InFlightCharge(e.key, 1, 1_000), InFlightCharge(e.key, 0, 5)))
    assert routing.load(e.key) == InFlightLoad(0, 0)
    assert routing.producer.statistics()["totalEndpoints"] == 0


def test_a_request_never_routed_holds_nothing():
    routing = Routing()
    e = endpoint(1)
    cycle = CycleState()
    routing.producer.pre_request(cycle, request(400, rid="a"), result(default=(e,)))
    assert routing.load(e.key) == InFlightLoad(0, 0)  # hooks only say what routing will cost
    assert cycle.outputs.charges == [InFlightCharge(e.key, tokens=100, until_first_chunk=True)]


@pytest.mark.parametrize("seed", range(20))
def test_counters_follow_outstanding_requests_and_return_to_zero(seed):
    """Against a reference model: each outstanding request holds, on the first target of each
    of its profiles, one request and its uncached input plus (if enabled) its output estimate."""
    rng = random.Random(seed)
    add_output = rng.random() < 0.5
    routing = Routing(addEstimatedOutputTokens=add_output)
    eps = [endpoint(i) for i in range(1, 6)]
    # the charges of a request, and what the model says it holds: (endpoint key, tokens)
    outstanding: list[tuple[tuple[InFlightCharge, ...], list[tuple[str, int]]]] = []
    for step in range(300):
        if outstanding and rng.random() < 0.45:
            charges, _ = outstanding.pop(rng.randrange(len(outstanding)))
            routing.end(charges)
        else:
            size, cap = rng.randrange(0, 2_000), rng.choice([None, 10])
            r = request(size, max_tokens=cap, rid=str(step))
            profiles = {"decode": (rng.choice(eps),)}
            if rng.random() < 0.3:
                profiles["prefill"] = (rng.choice(eps),)
            res = result(**profiles)
            matches = {e.key: PrefixMatch(rng.randrange(5), 4, 16) for e in eps}
            cycle = CycleState()
            if rng.random() < 0.5:
                cycle.put(PREFIX_MATCH, matches)
            else:
                matches = {}
            charges = routing.route(r, res, cycle)
            tokens_in = -(-size // 4)
            tokens_out = 0
            if add_output and tokens_in:
                tokens_out = (
                    int(tokens_in * 1.5 + 0.5)
                    if cap is None
                    else min(cap, int(tokens_in * 1.5 + 0.5))
                )
            held = [
                (t[0].key, uncached_input_tokens(matches.get(t[0].key), tokens_in) + tokens_out)
                for t in profiles.values()
            ]
            outstanding.append((charges, held))
        for e in eps:
            mine = [tokens for _, held in outstanding for key, tokens in held if key == e.key]
            assert routing.load(e.key) == InFlightLoad(len(mine), sum(mine))
    rng.shuffle(outstanding)
    for charges, _ in outstanding:
        routing.end(charges)
    assert all(routing.load(e.key) == InFlightLoad(0, 0) for e in eps)
    assert routing.producer.statistics() == {
        "endpoints": [],
        "totalEndpoints": 0,
        "maxEndpoints": 100,
        "truncated": False,
    }


def test_statistics_list_the_busiest_hundred():
    routing = Routing()
    eps = [Endpoint(f"e{i}", f"10.0.{i // 250}.{i % 250}", 8000) for i in range(150)]
    for i, e in enumerate(eps):
        routing.route(request(4 * (i % 7)), result(default=(e,)))
    stats = routing.producer.statistics()
    assert stats["totalEndpoints"] == 150
    assert stats["maxEndpoints"] == 100
    assert stats["truncated"] is True
    listed = stats["endpoints"]
    assert isinstance(listed, list)
    assert len(listed) == 100
    # The busiest carry 6 tokens (i % 7 == 6); ties go to the smaller key, as strings.
    assert listed[0] == {"endpoint": "10.0.0.104:8000", "requests": 1, "tokens": 6}
    assert listed[1] == {"endpoint": "10.0.0.111:8000", "requests": 1, "tokens": 6}
    loads = [(-(x["requests"] + x["tokens"]), x["endpoint"]) for x in listed]
    assert loads == sorted(loads)
    assert msgspec.json.decode(msgspec.json.encode(stats)) == stats


def test_small_statistics_are_not_truncated():
    routing = Routing()
    a, b = endpoint(1), endpoint(2)
    routing.route(request(40), result(default=(a,)))
    routing.route(request(400), result(default=(b,)))
    assert routing.producer.statistics() == {
        "endpoints": [
            {"endpoint": b.key, "requests": 1, "tokens": 100},
            {"endpoint": a.key, "requests": 1, "tokens": 10},
        ],
        "totalEndpoints": 2,
        "maxEndpoints": 100,
        "truncated": False,
    }


def test_producer_parameters():
    params = msgspec.convert({}, InFlightLoadProducer.Params)
    assert params.add_estimated_output_tokens is False
    assert params.output_ratio == 1.5
    assert params.max_estimated_output_tokens is None
    assert params.prefix_match_info_producer_name == ""
    assert params.sync_cross_replica_state is True
    llmd = {
        "addEstimatedOutputTokens": True,
        "outputRatio": 2,
        "maxEstimatedOutputTokens": 0,
        "prefixMatchInfoProducerName": "precise",
        "syncCrossReplicaState": False,
    }
    assert msgspec.convert(llmd, InFlightLoadProducer.Params).max_estimated_output_tokens == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"outputRatio": -0.1}, "outputRatio must be non-negative"),
        ({"outputRatio": float("nan")}, "outputRatio must be non-negative"),
        ({"maxEstimatedOutputTokens": -1}, "maxEstimatedOutputTokens must be non-negative"),
        ({"maxEstimatedOutputTokens": 1.5}, "maxEstimatedOutputTokens"),
        ({"output_ratio": 2.0}, "output_ratio"),
        ({"addEstimatedOutputTokens": "yes"}, "addEstimatedOutputTokens"),
    ],
)
def test_producer_parameter_errors(raw, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, InFlightLoadProducer.Params)


# ---------------------------------------------------------------------------- admitter


def test_admitter_kinds():
    a = admitter()
    assert isinstance(a, Admitter)
    assert not isinstance(a, SaturationDetector)
    assert a.TYPE == "probabilistic-admitter"
    assert a.STABILITY is Stability.BETA


@pytest.mark.parametrize("priority", [0, 1, 100])
def test_priority_zero_or_more_is_always_admitted(priority):
    a = admitter()
    a.rng = testing.FixedDraw(0.0)
    assert a.admit(CycleState(), request(priority=priority), [endpoint(1)]) is None


def test_no_candidates_is_admitted():
    a = admitter()
    a.rng = testing.FixedDraw(0.0)
    assert a.admit(CycleState(), request(priority=-1), []) is None


# Each row: endpoints' (waiting queue, KV use) or None for never reported, the saturation, and
# the shedding probability min(sat ** 5 * 300, 1) with the default parameters.
@pytest.mark.parametrize(
    ("metrics", "saturation", "probability"),
    [
        ([(0, 0.0)], 0.0, 0.0),
        ([(1, 0.08)], 0.2, 0.2**5 * 300),  # queue 1/5 beats KV 0.08/0.8
        ([(0, 0.16)], 0.2, 0.2**5 * 300),  # KV 0.16/0.8
        ([(1, 0.0), (0, 0.08)], 0.15, 0.15**5 * 300),  # mean of 0.2 and 0.1
        ([(0, 0.0), (0, 0.0), (0, 0.0), None], 0.25, 0.25**5 * 300),
        ([None], 1.0, 1.0),
        ([(10**70, 0.0)], 2e69, 1.0),  # no overflow error
    ],
)
def test_shedding_probability(metrics, saturation, probability):
    eps = [
        endpoint(i) if m is None else endpoint(i, waiting_queue_size=m[0], kv_cache_usage=m[1])
        for i, m in enumerate(metrics, 1)
    ]
    a = admitter()
    sheddable = request(priority=-1)
    if probability > 0:  # a draw just below p refuses
        a.rng = testing.FixedDraw(probability - 1e-9)
        assert a.admit(CycleState(), sheddable, eps) == (
            f"probabilistic-admitter: rejected, saturation={saturation:.3f} prob={probability:.2f}"
        )
    if probability < 1:  # a draw of p admits (draws are in [0, 1), so p = 1 refuses all)
        a.rng = testing.FixedDraw(probability)
        assert a.admit(CycleState(), sheddable, eps) is None


def test_admitter_parameters_move_the_curve():
    # queue 2/4 = 0.5 beats KV 0.3/0.9; p = 0.5 ** 2 * 2 = 0.5
    a = admitter(queueDepthThreshold=4, kvCacheUtilThreshold=0.9, power=2, k=2)
    eps = [endpoint(1, waiting_queue_size=2, kv_cache_usage=0.3)]
    a.rng = testing.FixedDraw(0.49)
    assert a.admit(CycleState(), request(priority=-1), eps) is not None
    a.rng = testing.FixedDraw(0.5)
    assert a.admit(CycleState(), request(priority=-1), eps) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"queueDepthThreshold": 0}, "queueDepthThreshold must be > 0"),
        ({"queueDepthThreshold": 2.5}, "queueDepthThreshold"),
        ({"kvCacheUtilThreshold": 0}, "kvCacheUtilThreshold must be > 0"),
        ({"power": 0}, "power must be > 0"),
        ({"power": float("inf")}, "power must be > 0"),
        ({"k": -1}, "k must be > 0"),
        ({"threshold": 1}, "threshold"),
    ],
)
def test_admitter_parameter_errors(raw, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, ProbabilisticAdmitter.Params)


def test_registry_builds_both_and_names_the_plugin_in_errors():
    registry = Registry()
    registry.register(InFlightLoadProducer)
    registry.register(ProbabilisticAdmitter)
    built = registry.create("probabilistic-admitter", "shed", {"k": 100})
    assert isinstance(built, ProbabilisticAdmitter)
    assert built.params.k == 100.0
    with pytest.raises(ConfigError, match=r"plugin 'load'.*outputRatio must be non-negative"):
        registry.create("inflight-load-producer", "load", {"outputRatio": -1})
