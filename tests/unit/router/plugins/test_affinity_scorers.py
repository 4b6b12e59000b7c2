"""Session affinity and no-hit LRU: scores from hand-computed tables, the state their
pre-request hooks keep, and the parameters they refuse."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import msgspec
import pytest

from llmd_router import testing
from llmd_router.framework import (
    PREFIX_MATCH,
    Category,
    CycleState,
    PrefixMatch,
    ProfileResult,
    SchedulingResult,
    Stability,
    prefix_match_key,
)
from llmd_router.parsing.request import ApiKind, InferenceRequest
from llmd_router.plugins.scorers.no_hit_lru_scorer import NoHitLRUScorer
from llmd_router.plugins.scorers.session_affinity_scorer import (
    SessionAffinityScorer,
    decode_token,
    encode_token,
)
from llmd_router.testing import FakeClock

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import Endpoint

A = testing.endpoint(1, name="a", namespace="ns")
B = testing.endpoint(2, name="b", namespace="ns")
C = testing.endpoint(3, name="c", namespace="ns")
D = testing.endpoint(4, name="d", namespace="other")


def request(headers: dict[str, str] | None = None) -> InferenceRequest:
    return InferenceRequest("r1", "/v1/completions", ApiKind.COMPLETIONS, headers or {}, b"")


def routed(primary: Endpoint, prefill: Endpoint | None = None) -> SchedulingResult:
    profiles = {"decode": ProfileResult((primary,))}
    if prefill is not None:
        profiles["prefill"] = ProfileResult((prefill,))
    return SchedulingResult("decode", profiles)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ---------------------------------------------------------------------------- session affinity


Clock = FakeClock  # starts at 1000.0


def session_scorer(raw: dict | None = None, clock: Clock | None = None) -> SessionAffinityScorer:
    params = msgspec.convert(raw or {}, SessionAffinityScorer.Params)
    return SessionAffinityScorer("sa", params, clock=clock or Clock())


def test_session_affinity_identity():
    assert SessionAffinityScorer.TYPE == "session-affinity-scorer"
    assert SessionAffinityScorer.STABILITY is Stability.ALPHA
    assert SessionAffinityScorer.category is Category.AFFINITY


def test_token_is_base64_of_namespace_and_name():
    assert encode_token(A) == "bnMvYQ=="  # base64("ns/a"), computed by hand
    assert decode_token("bnMvYQ==") == "ns/a"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, [0.0, 0.0, 0.0, 0.0]),
        ({"x-session-token": b64("ns/b")}, [0.0, 1.0, 0.0, 0.0]),
        ({"x-session-token": b64("other/d")}, [0.0, 0.0, 0.0, 1.0]),
        ({"x-session-token": b64("ns/d")}, [0.0, 0.0, 0.0, 0.0]),  # wrong namespace
        ({"x-session-token": b64("ns/zz")}, [0.0, 0.0, 0.0, 0.0]),  # gone
        ({"x-session-token": "bnMvYQ"}, [0.0, 0.0, 0.0, 0.0]),  # unpadded: not std base64
        ({"x-session-token": "%%%"}, [0.0, 0.0, 0.0, 0.0]),
        ({"x-session-token": b64("ns/a")[:-2] + "!!"}, [0.0, 0.0, 0.0, 0.0]),
        ({"x-session-token": base64.b64encode(b"\xff\xfe").decode()}, [0.0, 0.0, 0.0, 0.0]),
        ({"x-other": b64("ns/a")}, [0.0, 0.0, 0.0, 0.0]),
    ],
)
def test_session_token_scores(headers, expected):
    assert session_scorer().score(CycleState(), request(headers), [A, B, C, D]) == expected


def test_session_token_header_name_is_configurable_and_lower_cased():
    scorer = session_scorer({"encodedEndpointHeaderConfig": {"header": " X-Sticky "}})
    assert scorer.score(CycleState(), request({"x-sticky": b64("ns/c")}), [A, B, C]) == [0, 0, 1]
    assert scorer.score(CycleState(), request({"x-session-token": b64("ns/c")}), [A, B, C]) == [
        0,
        0,
        0,
    ]
    cycle = CycleState()
    scorer.pre_request(cycle, request(), routed(A))
    assert cycle.outputs.response_headers == {"x-sticky": encode_token(A)}


def test_session_token_is_delivered_for_the_primary_target():
    req = request({"x-session-token": b64("ns/b")})
    cycle = CycleState()
    session_scorer().pre_request(cycle, req, routed(C, prefill=B))
    assert cycle.outputs.response_headers == {"x-session-token": b64("ns/c")}
    assert cycle.outputs.set_headers == {}


def test_session_token_for_a_named_profile():
    scorer = session_scorer(
        {"profileName": "prefill", "encodedEndpointHeaderConfig": {"header": "x-session-p"}}
    )
    cycle = CycleState()
    scorer.pre_request(cycle, request(), routed(C, prefill=B))
    assert cycle.outputs.response_headers == {"x-session-p": b64("ns/b")}
    decode_only = CycleState()
    scorer.pre_request(decode_only, request(), routed(C))
    assert decode_only.outputs.response_headers == {}


def test_session_id_binds_sticks_and_moves_only_when_absent():
    clock = Clock()
    scorer = session_scorer({"strategy": "session_id"}, clock)
    sess = {"x-session-id": " s1 "}

    # 1. unbound: no preference, then bound to where it went
    cycle = CycleState()
    assert scorer.score(cycle, request(sess), [A, B, C]) == [0.0, 0.0, 0.0]
    scorer.pre_request(cycle, request(sess), routed(B))
    assert scorer.statistics() == {"sessions": 1}

    # 2. bound to B, B a candidate: B preferred
    cycle = CycleState()
    assert scorer.score(cycle, request({"x-session-id": "s1"}), [A, B, C]) == [0.0, 1.0, 0.0]
    # other scorers outweighed it and C was picked: B was present, so no move
    scorer.pre_request(cycle, request(sess), routed(C))
    assert scorer.score(CycleState(), request(sess), [A, B, C]) == [0.0, 1.0, 0.0]

    # 3. B filtered out: no preference, and the session moves to where it went
    cycle = CycleState()
    assert scorer.score(cycle, request(sess), [A, C]) == [0.0, 0.0]
    scorer.pre_request(cycle, request(sess), routed(C))
    assert scorer.score(CycleState(), request(sess), [A, B, C]) == [0.0, 0.0, 1.0]

    # no session id: nothing scored, nothing bound, nothing written
    req = request()
    assert scorer.score(CycleState(), req, [A, B]) == [0.0, 0.0]
    cycle = CycleState()
    scorer.pre_request(cycle, req, routed(A))
    assert scorer.statistics() == {"sessions": 1}
    assert cycle.outputs.response_headers == {}


def test_session_id_without_a_score_does_not_move_a_binding():
    scorer = session_scorer({"strategy": "session_id"})
    sess = {"x-session-id": "s1"}
    scorer.pre_request(CycleState(), request(sess), routed(A))
    scorer.pre_request(CycleState(), request(sess), routed(B))  # absence never observed
    assert scorer.score(CycleState(), request(sess), [A, B]) == [1.0, 0.0]


def test_session_id_sources_in_order():
    scorer = session_scorer(
        {
            "strategy": "session_id",
            "sessionIdConfig": {"sources": [{"header": "X-Conv"}, {"header": "x-user"}]},
        }
    )
    scorer.pre_request(CycleState(), request({"x-user": "u"}), routed(A))
    scorer.pre_request(CycleState(), request({"x-conv": "c", "x-user": "u"}), routed(B))
    assert scorer.score(CycleState(), request({"x-user": "u"}), [A, B]) == [1.0, 0.0]
    assert scorer.score(CycleState(), request({"x-conv": "c", "x-user": "u"}), [A, B]) == [0, 1]
    assert scorer.score(CycleState(), request({"x-conv": " ", "x-user": "u"}), [A, B]) == [1, 0]


def test_session_id_bindings_expire_at_the_sweep_after_the_ttl():
    clock = Clock()
    scorer = session_scorer(
        {
            "strategy": "session_id",
            "sessionIdConfig": {"evictionTtlSeconds": 30, "evictionSweepSeconds": 10},
        },
        clock,
    )
    sess = {"x-session-id": "s1"}
    scorer.pre_request(CycleState(), request(sess), routed(A))  # last used at 1000
    clock.now = 1025  # a sweep runs (the last was at 1000): 25 s unused, kept
    assert scorer.score(CycleState(), request(sess), [A, B]) == [1.0, 0.0]
    clock.now = 1031  # past the TTL, but the next sweep is not due before 1035
    assert scorer.score(CycleState(), request(sess), [A, B]) == [1.0, 0.0]
    clock.now = 1040.5  # swept
    assert scorer.score(CycleState(), request(sess), [A, B]) == [0.0, 0.0]
    assert scorer.statistics() == {"sessions": 0}


def test_session_id_use_refreshes_the_binding():
    clock = Clock()
    scorer = session_scorer(
        {"strategy": "session_id", "sessionIdConfig": {"evictionTtlSeconds": 30}}, clock
    )
    sess = {"x-session-id": "s1"}
    for now in (1000, 1020, 1040, 1060):
        clock.now = now
        cycle = CycleState()
        assert scorer.score(cycle, request(sess), [A, B])[0] == (0.0 if now == 1000 else 1.0)
        scorer.pre_request(cycle, request(sess), routed(A))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"strategy": "cookie"}, "strategy"),
        (
            {"strategy": "session_id", "sessionIdConfig": {"sources": [{}]}},
            r"sources\[0\]: exactly one of header or attribute",
        ),
        (
            {
                "strategy": "session_id",
                "sessionIdConfig": {"sources": [{"header": "a", "attribute": "b"}]},
            },
            "exactly one",
        ),
        (
            {
                "strategy": "session_id",
                "sessionIdConfig": {"sources": [{"attribute": "agent-identity"}]},
            },
            r"sources\[0\]\.attribute: request attributes are not supported",
        ),
        (
            {"strategy": "session_id", "sessionIdConfig": {"evictionTtlSeconds": -1}},
            "evictionTtlSeconds",
        ),
        (
            {"strategy": "session_id", "sessionIdConfig": {"evictionSweepSeconds": -5}},
            "evictionSweepSeconds",
        ),
        ({"headerName": "x"}, "headerName"),
    ],
)
def test_session_affinity_parameter_errors(raw, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, SessionAffinityScorer.Params)


def test_session_affinity_checks_only_the_chosen_strategy():
    params = msgspec.convert(
        {"sessionIdConfig": {"sources": [{"attribute": "x"}]}}, SessionAffinityScorer.Params
    )
    assert params.strategy == "encoded_endpoint_header"


# ---------------------------------------------------------------------------- no-hit LRU


def lru_scorer(raw: dict | None = None) -> NoHitLRUScorer:
    return NoHitLRUScorer("lru", msgspec.convert(raw or {}, NoHitLRUScorer.Params))


def with_matches(**blocks: int) -> CycleState:
    """A cycle where endpoint <name> matched ``blocks`` prefix blocks."""
    by_name = {e.name: e for e in (A, B, C, D)}
    cycle = CycleState()
    cycle.put(PREFIX_MATCH, {by_name[n].key: PrefixMatch(m, 8, 16) for n, m in blocks.items()})
    return cycle


def cold_route(scorer: NoHitLRUScorer, target: Endpoint, prefill: Endpoint | None = None) -> None:
    cycle = CycleState()
    scorer.score(cycle, request(), [A, B, C, D])
    scorer.pre_request(cycle, request(), routed(target, prefill))


def test_no_hit_lru_identity():
    assert NoHitLRUScorer.TYPE == "no-hit-lru-scorer"
    assert NoHitLRUScorer.category is Category.DISTRIBUTION
    assert NoHitLRUScorer.STABILITY is Stability.BETA
    assert lru_scorer().consumes == (PREFIX_MATCH,)
    named = NoHitLRUScorer("n", NoHitLRUScorer.Params(prefix_match_info_producer_name="burst"))
    assert named.consumes == (prefix_match_key("burst"),)


def test_warm_request_is_neutral_and_leaves_the_lru():
    scorer = lru_scorer()
    cycle = with_matches(a=0, b=3, c=0)
    assert scorer.score(cycle, request(), [A, B, C]) == [0.5, 0.5, 0.5]
    scorer.pre_request(cycle, request(), routed(B))
    assert scorer.lru() == []


@pytest.mark.parametrize(
    "cycle",
    [CycleState(), with_matches(a=0, b=0), with_matches(d=5)],  # d is not a candidate
    ids=["no-prefix-data", "all-misses", "hit-on-a-non-candidate"],
)
def test_cold_request_with_empty_lru_ranks_in_candidate_order(cycle):
    assert lru_scorer().score(cycle, request(), [A, B, C]) == [1.0, 0.5, 0.0]


def test_cold_request_single_candidate_scores_one():
    assert lru_scorer().score(CycleState(), request(), [B]) == [1.0]


def test_cold_scores_follow_the_lru():
    scorer = lru_scorer()
    cold_route(scorer, B)
    cold_route(scorer, A)
    assert scorer.lru() == ["ns/b", "ns/a"]
    # n=3, c never used (rank 0); b at LRU pos 0 -> rank 1; a at pos 1 -> rank 2
    assert scorer.score(CycleState(), request(), [A, B, C]) == [0.0, 0.5, 1.0]
    # n=4: c, d never used (ranks 0, 1); b rank 2; a rank 3
    assert scorer.score(CycleState(), request(), [A, B, C, D]) == pytest.approx(
        [0.0, 1 / 3, 1.0, 2 / 3]
    )
    # n=2, no never-used: b rank 0 -> 1.0, a rank 1 -> 0.0
    assert scorer.score(CycleState(), request(), [A, B]) == [0.0, 1.0]


def test_cold_scores_floor_at_zero_when_the_lru_is_longer_than_the_candidates():
    scorer = lru_scorer()
    for target in (D, C, B, A):  # LRU: d, c, b, a
        cold_route(scorer, target)
    # n=2: a at pos 3 -> 1 - 3/1 < 0 -> 0; c at pos 1 -> 1 - 1/1 = 0
    assert scorer.score(CycleState(), request(), [A, C]) == [0.0, 0.0]
    # n=3: d pos 0 -> 1.0, b pos 2 -> 0.0, c pos 1 -> 0.5
    assert scorer.score(CycleState(), request(), [D, B, C]) == [1.0, 0.0, 0.5]


def test_pre_request_moves_primary_and_prefill_targets_on_cold_requests():
    scorer = lru_scorer()
    cold_route(scorer, A)
    cold_route(scorer, B, prefill=C)
    assert scorer.lru() == ["ns/a", "ns/b", "ns/c"]
    cold_route(scorer, A)
    assert scorer.lru() == ["ns/b", "ns/c", "ns/a"]


def test_pre_request_without_a_score_changes_nothing():
    scorer = lru_scorer()
    scorer.pre_request(CycleState(), request(), routed(A))
    assert scorer.lru() == []


def test_lru_is_bounded():
    scorer = lru_scorer({"lruSize": 2})
    for target in (A, B, C):
        cold_route(scorer, target)
    assert scorer.lru() == ["ns/b", "ns/c"]
    assert scorer.statistics() == {"tracked": 2, "capacity": 2}
    # a fell out: it counts as never used again
    assert scorer.score(CycleState(), request(), [A, B, C]) == [1.0, 0.5, 0.0]


@pytest.mark.parametrize("size", [0, -3])
def test_non_positive_lru_size_means_the_default(size):
    assert lru_scorer({"lruSize": size}).statistics()["capacity"] == 1024


def test_no_hit_lru_accepts_llm_d_parameters():
    lru_scorer(
        {
            "prefixPluginType": "prefix-cache-scorer",
            "prefixPluginName": "cache-scorer",
            "lruSize": 16,
            "prefixMatchInfoProducerName": "precise-prefix-cache-producer",
        }
    )
    with pytest.raises(msgspec.ValidationError, match="lruCapacity"):
        msgspec.convert({"lruCapacity": 4}, NoHitLRUScorer.Params)
