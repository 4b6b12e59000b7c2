"""Load, cache and affinity scorers against tables of endpoint states.

Every expected score is worked out by hand from llm-d's formula (the arithmetic is in the
comments), not by calling a copy of the formula.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from llmd_router import testing
from llmd_router.framework import (
    INFLIGHT_LOAD,
    Category,
    CycleState,
    Filter,
    InFlightLoad,
    NoParams,
    Scorer,
    Stability,
)
from llmd_router.parsing.request import ApiKind, InferenceRequest
from llmd_router.plugins.scorers.active_request_scorer import ActiveRequestScorer
from llmd_router.plugins.scorers.context_length_aware import (
    ContextLengthAware,
    context_length,
)
from llmd_router.plugins.scorers.kv_cache_utilization_scorer import (
    KVCacheUtilizationScorer,
)
from llmd_router.plugins.scorers.load_aware_scorer import LoadAwareScorer
from llmd_router.plugins.scorers.lora_affinity_scorer import LoraAffinityScorer
from llmd_router.plugins.scorers.queue_scorer import QueueScorer
from llmd_router.plugins.scorers.running_requests_size_scorer import (
    RunningRequestsSizeScorer,
)
from llmd_router.plugins.scorers.token_load_scorer import TokenLoadScorer

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import Endpoint

SCORERS = [
    QueueScorer,
    KVCacheUtilizationScorer,
    RunningRequestsSizeScorer,
    LoadAwareScorer,
    ActiveRequestScorer,
    TokenLoadScorer,
    LoraAffinityScorer,
    ContextLengthAware,
]


def request(
    kind: ApiKind = ApiKind.COMPLETIONS,
    *,
    prompt: Any = None,
    messages: list[Any] | None = None,
    target_model: str | None = "base",
) -> InferenceRequest:
    return InferenceRequest(
        "r1",
        "/v1/" + kind.value,
        kind,
        {},
        b"{}",
        model=target_model,
        target_model=target_model,
        prompt=prompt,
        messages=messages,
    )


def endpoint(i: int, labels: dict[str, str] | None = None, **metrics: Any) -> Endpoint:
    return testing.endpoint(i, name=f"pod-{i}", labels=labels, reported_at=0.0, **metrics)


def make(cls: Any, **params: Any) -> Any:
    return cls("scorer", msgspec.convert(params, cls.Params))


def score(
    scorer: Any, eps: list[Endpoint], req: InferenceRequest | None = None, cycle: Any = None
) -> list[float]:
    return list(scorer.score(cycle or CycleState(), req or request(), eps))


def with_inflight(eps: list[Endpoint], loads: dict[int, tuple[int, int]]) -> CycleState:
    """A cycle whose in-flight load has ``(requests, tokens)`` for the endpoints indexed."""
    cycle = CycleState()
    cycle.put(INFLIGHT_LOAD, {eps[i].key: InFlightLoad(r, t) for i, (r, t) in loads.items()})
    return cycle


# ------------------------------------------------------------------------- catalogue facts


@pytest.mark.parametrize(
    ("cls", "type_name", "category", "consumes"),
    [
        (QueueScorer, "queue-scorer", Category.DISTRIBUTION, False),
        (KVCacheUtilizationScorer, "kv-cache-utilization-scorer", Category.DISTRIBUTION, False),
        (RunningRequestsSizeScorer, "running-requests-size-scorer", Category.DISTRIBUTION, False),
        (LoadAwareScorer, "load-aware-scorer", Category.DISTRIBUTION, False),
        (ActiveRequestScorer, "active-request-scorer", Category.DISTRIBUTION, True),
        (TokenLoadScorer, "token-load-scorer", Category.DISTRIBUTION, True),
        (LoraAffinityScorer, "lora-affinity-scorer", Category.AFFINITY, False),
        (ContextLengthAware, "context-length-aware", Category.AFFINITY, False),
    ],
)
def test_catalogue_entry(cls: Any, type_name: str, category: Category, consumes: bool) -> None:
    scorer = make(cls)
    assert isinstance(scorer, Scorer)
    assert type_name == cls.TYPE
    assert cls.category is category
    assert cls.STABILITY is Stability.BETA
    assert (INFLIGHT_LOAD in getattr(cls, "consumes", ())) is consumes


@pytest.mark.parametrize("cls", SCORERS)
def test_no_endpoints_no_scores(cls: Any) -> None:
    assert score(make(cls), []) == []


@pytest.mark.parametrize(
    "cls", [QueueScorer, KVCacheUtilizationScorer, RunningRequestsSizeScorer, LoraAffinityScorer]
)
def test_parameterless_scorers_reject_parameters(cls: Any) -> None:
    assert cls.Params is NoParams
    with pytest.raises(msgspec.ValidationError, match="unknown field `threshold`"):
        msgspec.convert({"threshold": 1}, cls.Params)


# ------------------------------------------------------------------------- queue-scorer


@pytest.mark.parametrize(
    ("queues", "expected"),
    [
        ([0, 5, 10], [1.0, 0.5, 0.0]),  # (10-q)/10
        ([1, 2, 5], [1.0, 0.75, 0.0]),  # (5-q)/4
        ([3, 3, 3], [1.0, 1.0, 1.0]),  # all equal
        ([7], [1.0]),
        ([100, 0], [0.0, 1.0]),
        ([20, 30, 60, 40], [1.0, 0.75, 0.0, 0.5]),  # (60-q)/40
    ],
)
def test_queue_scorer(queues: list[int], expected: list[float]) -> None:
    eps = [endpoint(i, waiting_queue_size=q) for i, q in enumerate(queues)]
    assert score(make(QueueScorer), eps) == pytest.approx(expected)


def test_queue_scorer_ignores_running_requests() -> None:
    eps = [endpoint(0, waiting_queue_size=2, running_requests=90), endpoint(1, running_requests=0)]
    assert score(make(QueueScorer), eps) == [0.0, 1.0]


# ------------------------------------------------------------------------- running-requests


@pytest.mark.parametrize(
    ("running", "expected"),
    [
        ([4, 6, 12], [1.0, 0.75, 0.0]),  # (12-r)/8
        ([9, 9], [1.0, 1.0]),
        ([0, 1], [1.0, 0.0]),
    ],
)
def test_running_requests_size_scorer(running: list[int], expected: list[float]) -> None:
    eps = [
        endpoint(i, running_requests=r, waiting_queue_size=100 - r) for i, r in enumerate(running)
    ]
    assert score(make(RunningRequestsSizeScorer), eps) == pytest.approx(expected)


# ------------------------------------------------------------------------- kv-cache utilization


def test_kv_cache_utilization_scorer() -> None:
    usage = [0.0, 0.25, 1.0, 0.9, 0.5]
    eps = [endpoint(i, kv_cache_usage=u) for i, u in enumerate(usage)]
    # 1 - usage, absolute (not relative to the other candidates)
    assert score(make(KVCacheUtilizationScorer), eps) == pytest.approx([1.0, 0.75, 0.0, 0.1, 0.5])


# ------------------------------------------------------------------------- load-aware


@pytest.mark.parametrize(
    ("params", "queues", "expected"),
    [
        # threshold 128: 0.5 * (1 - min(q, 128)/128)
        ({}, [0, 64, 128, 500, 32], [0.5, 0.25, 0.0, 0.0, 0.375]),
        ({"threshold": 10}, [1, 5, 10, 0], [0.45, 0.25, 0.0, 0.5]),
        ({"threshold": 0}, [64], [0.25]),  # <= 0: the default 128
        ({"threshold": -5}, [96], [0.125]),
        ({"threshold": 1}, [1, 0], [0.0, 0.5]),
    ],
)
def test_load_aware_scorer(
    params: dict[str, Any], queues: list[int], expected: list[float]
) -> None:
    eps = [endpoint(i, waiting_queue_size=q) for i, q in enumerate(queues)]
    assert score(make(LoadAwareScorer, **params), eps) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("raw", "message"),
    [({"threshold": "high"}, "Expected `int`"), ({"queueThreshold": 5}, "unknown field")],
)
def test_load_aware_bad_parameters(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, LoadAwareScorer.Params)


# ------------------------------------------------------------------------- active-request


@pytest.mark.parametrize(
    ("params", "requests", "expected"),
    [
        # idle 0, maxBusy 1: n == 0 -> 1, else (max - n)/max; None = no in-flight entry
        ({}, [0, 2, 4, None], [1.0, 0.5, 0.0, 1.0]),
        ({}, [1, 3], [2 / 3, 0.0]),
        ({}, [5, 5], [0.0, 0.0]),  # all equally busy: all 0
        ({}, [0, 0, None], [1.0, 1.0, 1.0]),
        # idle 1, maxBusy 0.5: n <= 1 -> 1, else (4 - n)/4 * 0.5
        ({"idleThreshold": 1, "maxBusyScore": 0.5}, [1, 2, 4, 3], [1.0, 0.25, 0.0, 0.125]),
        ({"idleThreshold": 5}, [3, 5], [1.0, 1.0]),
        ({"maxBusyScore": 0}, [0, 1, 2], [1.0, 0.0, 0.0]),
        ({"idleThreshold": 2, "maxBusyScore": 0.8}, [10, 2, 5], [0.0, 1.0, 0.4]),  # 5/10 * 0.8
    ],
)
def test_active_request_scorer(
    params: dict[str, Any], requests: list[int | None], expected: list[float]
) -> None:
    eps = [endpoint(i) for i in range(len(requests))]
    loads = {i: (n, 999) for i, n in enumerate(requests) if n is not None}
    cycle = with_inflight(eps, loads)
    assert score(make(ActiveRequestScorer, **params), eps, cycle=cycle) == pytest.approx(expected)


def test_active_request_without_inflight_data_is_all_idle() -> None:
    eps = [endpoint(0, running_requests=50, waiting_queue_size=9), endpoint(1)]
    assert score(make(ActiveRequestScorer), eps) == [1.0, 1.0]


def test_active_request_accepts_deprecated_and_producer_parameters() -> None:
    scorer = make(ActiveRequestScorer, requestTimeout="2m", inFlightLoadProducerName="p")
    eps = [endpoint(0), endpoint(1)]
    assert score(scorer, eps, cycle=with_inflight(eps, {0: (2, 0)})) == [0.0, 1.0]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"maxBusyScore": 1.5}, r"maxBusyScore must be in \[0, 1\]"),
        ({"maxBusyScore": -0.1}, r"maxBusyScore must be in \[0, 1\]"),
        ({"maxBusyScore": float("nan")}, r"maxBusyScore must be in \[0, 1\]"),
        ({"idleThreshold": -1}, "idleThreshold must be >= 0"),
        ({"idleThreshold": 1.5}, "Expected `int`, got `float`"),
        ({"requestTimeout": 30}, "Expected `str | null`"),
        ({"idle_threshold": 1}, "unknown field `idle_threshold`"),
    ],
)
def test_active_request_bad_parameters(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, ActiveRequestScorer.Params)


# ------------------------------------------------------------------------- token-load


@pytest.mark.parametrize(
    ("params", "tokens", "expected"),
    [
        # T = 1000: 1 - min(tokens, T)/T; None = no in-flight entry
        ({"queueThresholdTokens": 1000}, [0, 250, 1000, 5000, None], [1.0, 0.75, 0.0, 0.0, 1.0]),
        ({}, [2_097_152, 4_194_304, 1_048_576], [0.5, 0.0, 0.75]),  # T = 4194304
        ({"queueThresholdTokens": 0}, [1_048_576], [0.75]),  # <= 0: the default
        ({"queueThresholdTokens": -1}, [3_145_728], [0.25]),
        ({"queueThresholdTokens": 100}, [-20, 1], [1.0, 0.99]),  # negative: nothing in flight
    ],
)
def test_token_load_scorer(
    params: dict[str, Any], tokens: list[int | None], expected: list[float]
) -> None:
    eps = [endpoint(i) for i in range(len(tokens))]
    loads = {i: (7, t) for i, t in enumerate(tokens) if t is not None}
    cycle = with_inflight(eps, loads)
    assert score(make(TokenLoadScorer, **params), eps, cycle=cycle) == pytest.approx(expected)


def test_token_load_reads_tokens_not_requests() -> None:
    eps = [endpoint(0), endpoint(1)]
    cycle = with_inflight(eps, {0: (100, 0), 1: (1, 2_097_152)})
    assert score(make(TokenLoadScorer), eps, cycle=cycle) == [1.0, 0.5]


def test_token_load_parameters() -> None:
    params = msgspec.convert({"inFlightLoadProducerName": "mine"}, TokenLoadScorer.Params)
    assert params.queue_threshold_tokens == 4_194_304
    with pytest.raises(msgspec.ValidationError, match="Expected `int`"):
        msgspec.convert({"queueThresholdTokens": "4Mi"}, TokenLoadScorer.Params)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"threshold": 5}, TokenLoadScorer.Params)


# ------------------------------------------------------------------------- lora-affinity


@pytest.mark.parametrize(
    ("active", "waiting", "max_active", "expected"),
    [
        ({"lora-a"}, set(), 0, 1.0),  # running
        ({"lora-a", "b"}, {"c"}, 1, 1.0),  # running, even on a full server
        ({"b"}, set(), 4, 0.8),  # 1 + 0 < 4: a free slot
        ({"b", "c"}, {"lora-a"}, 4, 0.8),  # 2 + 1 < 4: a free slot wins over "waiting"
        ({"b", "c"}, {"lora-a"}, 3, 0.6),  # 2 + 1 == 3: full, but queued to load
        ({"b"}, {"c"}, 2, 0.0),  # full, not there
        (set(), set(), 0, 0.0),  # no adapter metrics at all
    ],
)
def test_lora_affinity_scorer(
    active: set[str], waiting: set[str], max_active: int, expected: float
) -> None:
    eps = [
        endpoint(
            0,
            active_models=frozenset(active),
            waiting_models=frozenset(waiting),
            max_active_models=max_active,
        )
    ]
    assert score(make(LoraAffinityScorer), eps, request(target_model="lora-a")) == [expected]


def test_lora_affinity_uses_the_target_model() -> None:
    eps = [
        endpoint(0, active_models=frozenset({"base"})),
        endpoint(1, active_models=frozenset({"x"})),
    ]
    req = request(target_model="x").replace(model="base")  # rewritten: the target runs
    assert score(make(LoraAffinityScorer), eps, req) == [0.0, 1.0]


def test_lora_affinity_without_a_model() -> None:
    eps = [endpoint(0, max_active_models=2), endpoint(1, active_models=frozenset({"a"}))]
    assert score(make(LoraAffinityScorer), eps, request(target_model=None)) == [0.8, 0.0]


# ------------------------------------------------------------------------- context-length-aware

LABEL = "llm-d.ai/context-length-range"
PROMPT_1000 = "a" * 4000  # 4 bytes a token: 1000 tokens


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # in range: 0.3 + 0.7 * (0.7 / (1 + w/10000) + 0.3 * (max - 1000)/w)
        ("0-10000", 0.734),  # w 10000: 0.7*0.5 + 0.3*0.9 = 0.62 -> 0.3 + 0.434
        ("1000-3500", 0.902),  # w 2500: 0.7*0.8 + 0.3*1.0 = 0.86 -> 0.3 + 0.602
        ("0-1000", 0.745454545),  # w 1000: 0.7/1.1 + 0 = 0.636363.. -> 0.3 + 0.445454..
        ("1000-1000", 1.0),  # width 0
        (" 0 - 10000 ", 0.734),  # spaces around bounds
        ("+0-+10000", 0.734),  # Go's Atoi takes a "+"
        # out of range: 0.3 / (1 + distance/1000)
        ("2000-8000", 0.15),  # distance 1000
        ("0-500", 0.2),  # distance 500
        ("4000-4000", 0.075),  # distance 3000
        # unparsable
        ("abc", 0.0),
        ("10-5", 0.0),
        ("1-2-3", 0.0),
        ("", 0.0),
        ("0x1-5", 0.0),
        ("1_000-5000", 0.0),
        ("5-", 0.0),
        ("0-99999999999999999999", 0.0),  # beyond int64
    ],
)
def test_context_length_score(value: str, expected: float) -> None:
    eps = [endpoint(0, {LABEL: value})]
    req = request(prompt=PROMPT_1000)
    assert score(make(ContextLengthAware), eps, req) == [pytest.approx(expected)]


def test_context_length_unlabelled_is_neutral_and_label_is_configurable() -> None:
    eps = [endpoint(0), endpoint(1, {"ctx": "0-10000"}), endpoint(2, {LABEL: "0-10000"})]
    scorer = make(ContextLengthAware, label="ctx")
    assert score(scorer, eps, request(prompt=PROMPT_1000)) == pytest.approx([0.5, 0.734, 0.5])


def test_context_length_in_range_always_beats_out_of_range() -> None:
    eps = [endpoint(0, {LABEL: "0-1000000"}), endpoint(1, {LABEL: "1001-1001"})]
    near, wide = 1, 0
    scores = score(make(ContextLengthAware), eps, request(prompt=PROMPT_1000))
    assert scores[wide] > 0.3 > scores[near]


def test_context_length_filter_off_by_default() -> None:
    eps = [endpoint(0, {LABEL: "0-10"}), endpoint(1, {LABEL: "junk"})]
    plugin = make(ContextLengthAware)
    assert isinstance(plugin, Filter)
    assert list(plugin.filter(CycleState(), request(prompt=PROMPT_1000), eps)) == eps


def test_context_length_filter_keeps_unlabelled_and_in_range() -> None:
    eps = [
        endpoint(0),  # unlabelled: kept
        endpoint(1, {LABEL: "0-999"}),  # below: dropped
        endpoint(2, {LABEL: "1000-2000"}),  # min bound inclusive: kept
        endpoint(3, {LABEL: "500-1000"}),  # max bound inclusive: kept
        endpoint(4, {LABEL: "junk"}),  # unparsable: dropped
        endpoint(5, {LABEL: "1001-9000"}),  # above: dropped
    ]
    plugin = make(ContextLengthAware, enableFiltering=True)
    kept = plugin.filter(CycleState(), request(prompt=PROMPT_1000), eps)
    assert [e.name for e in kept] == ["pod-0", "pod-2", "pod-3"]


@pytest.mark.parametrize(
    ("req", "tokens"),
    [
        (request(prompt="abcd" * 10), 10),
        (request(prompt="abcde"), 2),  # rounded up
        (request(prompt="ééé"), 2),  # 6 bytes of UTF-8, not 3 characters
        (request(prompt=["abc", "defgh"]), 3),  # each string on its own: 1 + 2
        (request(prompt=[101, 102, 103]), 3),  # token ids
        (request(ApiKind.EMBEDDINGS, prompt=[[1, 2], [3]]), 3),  # JSON "[[1,2],[3]]": 11 bytes
        (request(ApiKind.EMBEDDINGS, prompt="hello"), 2),  # JSON "\"hello\"": 7 bytes
        (request(ApiKind.RESPONSES, prompt="hi"), 4),  # JSON [{"input":"hi"}]: 16 bytes
        (request(ApiKind.CONVERSATIONS, prompt=[{"a": 1}]), 3),  # JSON [{"a":1}]: 9 bytes
        (request(ApiKind.PASSTHROUGH), 0),
        (
            request(
                ApiKind.CHAT_COMPLETIONS,
                messages=[
                    {"role": "system", "content": "be brief"},  # 6 + 8
                    {
                        "role": "user",  # 4
                        "content": [
                            {"type": "text", "text": "look"},  # 4
                            {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                            {"type": "text", "text": "here"},  # 4
                        ],
                    },
                    {"role": "assistant", "content": None},  # 9
                ],
            ),
            9,  # 35 bytes
        ),
    ],
)
def test_context_length_estimate(req: InferenceRequest, tokens: int) -> None:
    assert context_length(req) == tokens


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"label": ""}, "label must be specified"),
        ({"enableFiltering": "yes"}, "Expected `bool`"),
        ({"labelName": "x"}, "unknown field `labelName`"),
    ],
)
def test_context_length_bad_parameters(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, ContextLengthAware.Params)
