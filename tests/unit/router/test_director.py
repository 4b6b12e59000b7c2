"""Routing decisions: candidates and subset hints, the plugin lifecycle, settling exactly once."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import ClassVar

import pytest

from llmd_router import testing
from llmd_router.config import API_VERSION, load_config
from llmd_router.datalayer import Endpoint, EndpointMetrics, EndpointStore
from llmd_router.errors import BadRequest, Internal, ResourceExhausted, ServiceUnavailable
from llmd_router.observability.metrics import RouterMetrics
from llmd_router.parsing import Usage, parse_request
from llmd_router.pipeline import build_pipeline
from llmd_router.plugins.builtin import builtin_registry
from llmd_router.requestcontrol import Director, Ended, Outcome, subset_hint
from llmd_router.requestcontrol.explain import DecisionLog
from llmd_router.requestcontrol.objectives import ModelResources

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
HEADERS = {":path": "/v1/chat/completions", "x-request-id": "r1"}


def endpoints(n: int = 3) -> list[Endpoint]:
    return [testing.endpoint(i + 1, name=f"e{i}") for i in range(n)]


HEAD = f"apiVersion: {API_VERSION}\nkind: EndpointPickerConfig\n"
# Fewest requests in flight (counted by the in-flight producer, created by default).
LEAST_LOADED = "plugins: [{type: active-request-scorer}]\n"


def pipeline(body: str = LEAST_LOADED, store: EndpointStore | None = None):
    """The pipeline for ``body``, its plugins bound to ``store``'s in-flight ledger."""
    inflight = store.inflight if store is not None else None
    return build_pipeline(load_config(HEAD + body), builtin_registry(), inflight=inflight)


def director(eps: list[Endpoint] | None = None, config: str = LEAST_LOADED, **options) -> Director:
    store = EndpointStore(endpoints() if eps is None else eps)
    return Director(
        store, pipeline(config, store), RouterMetrics(), rng=random.Random(2), **options
    )


def report(d: Director, **metrics) -> None:
    """Every endpoint of the director's store reports ``metrics``."""
    for e in d.store.all():
        d.store.report(e.id, metrics=EndpointMetrics(**metrics))


def route(
    d: Director,
    metadata: dict | None = None,
    body: bytes = BODY,
    headers: dict | None = None,
    has_body: bool = True,
):
    return d.route(headers or HEADERS, body, metadata or {}, has_body=has_body, received_at=0.0)


def sample(d: Director, name: str, **labels: str) -> float:
    value = d.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, None),
        ({"envoy.lb.subset_hint": {}}, None),
        ({"envoy.lb.subset_hint": {"x-gateway-destination-endpoint-subset": []}}, []),
        (
            {"envoy.lb.subset_hint": {"x-gateway-destination-endpoint-subset": ["a:1", "b"]}},
            ["a:1", "b"],
        ),
        (
            {"envoy.lb.subset_hint": {"x-gateway-destination-endpoint-subset": "a:1, b:2"}},
            ["a:1", "b:2"],
        ),
        (
            {"envoy.lb.subset_hint": {"x-gateway-destination-endpoint-subset": [1, "a:1,c"]}},
            ["a:1", "c"],
        ),
    ],
    ids=["absent", "no-key", "empty", "list", "csv-string", "mixed"],
)
def test_subset_hint_forms(metadata: dict, expected: list[str] | None):
    assert subset_hint(metadata) == expected


def test_subset_entries_match_by_address_and_port():
    store = EndpointStore(
        [
            Endpoint("a", "10.0.0.1", 8000),
            Endpoint("b", "10.0.0.1", 8001),
            Endpoint("c", "10.0.0.2", 8000),
            Endpoint("v6", "::1", 9000),
        ]
    )
    assert [e.name for e in store.candidates(["10.0.0.1:8001"])] == ["b"]
    assert [e.name for e in store.candidates(["10.0.0.1"])] == ["a", "b"]
    assert [e.name for e in store.candidates(["[::1]:9000", "10.0.0.2"])] == ["c", "v6"]
    assert list(store.candidates([])) == []
    assert len(store.candidates(None)) == 4


def test_routing_follows_the_subset_hint():
    d = director()
    metadata = {"envoy.lb.subset_hint": {"x-gateway-destination-endpoint-subset": ["10.0.0.3"]}}
    decision, record = route(d, metadata)
    assert decision.destination == "10.0.0.3:8000" and record.endpoint.name == "e2"


@pytest.mark.parametrize("subset", [[], ["10.9.9.9:8000"]], ids=["empty", "nothing-matches"])
def test_no_candidates_is_503(subset: list[str]):
    d = director()
    with pytest.raises(ServiceUnavailable) as info:
        route(d, {"envoy.lb.subset_hint": {"x-gateway-destination-endpoint-subset": subset}})
    assert info.value.status == 503 and info.value.dropped_reason == "rejected-no-endpoints"
    assert (
        sample(
            d,
            "llm_d_epp_request_error_total",
            model_name="m",
            target_model_name="m",
            error_code="ServiceUnavailable",
            fairness_id="default-flow",
            priority="0",
        )
        == 1
    )


def test_an_empty_pool_is_503_with_or_without_a_body():
    with pytest.raises(ServiceUnavailable):
        route(director([]))
    with pytest.raises(ServiceUnavailable):
        route(director([]), body=b"", has_body=False)


def test_a_failed_schedule_is_429():
    config = "plugins:\n- type: label-selector-filter\n  parameters: {matchLabels: {gpu: h100}}\n"
    d = director(config=config, decisions=DecisionLog(5))
    with pytest.raises(ResourceExhausted) as info:
        route(d)
    assert info.value.status == 429 and info.value.dropped_reason == "rejected-saturated"
    assert "failed to find target endpoint" in info.value.message
    (logged,) = d.decisions.render()  # type: ignore[union-attr]
    assert logged["emptyProfiles"] == {"default": {"filteredBy": "label-selector-filter"}}
    assert "failed to find target endpoint" in logged["error"]


def test_a_bad_body_is_400_and_counted():
    d = director()
    with pytest.raises(BadRequest):
        route(d, body=b"{oops")
    assert (
        sample(
            d,
            "llm_d_epp_request_error_total",
            model_name="",
            target_model_name="",
            error_code="BadRequest",
            fairness_id="default-flow",
            priority="0",
        )
        == 1
    )


def test_least_in_flight_spreads_and_settling_releases_exactly_once():
    d = director()
    records = [route(d)[1] for _ in range(9)]
    assert Counter(r.endpoint.name for r in records) == {"e0": 3, "e1": 3, "e2": 3}
    producer = d.pipeline.plugins["inflight-load-producer"].instance
    assert sample(d, "llm_d_epp_request_running", model_name="m") == 9
    for record in records:
        d.settlement.settle(record, Outcome(decided=True))
        d.settlement.settle(record, Outcome(decided=True))  # a second settle changes nothing
    assert len(d.store.inflight) == 0
    assert producer.statistics()["endpoints"] == []  # the one ledger the producer reads
    assert sample(d, "llm_d_epp_request_running", model_name="m") == 0
    assert (
        sample(
            d,
            "llm_d_epp_request_total",
            model_name="m",
            target_model_name="m",
            fairness_id="default-flow",
            priority="0",
        )
        == 9
    )
    assert (
        sample(
            d,
            "inference_objective_request_total",
            model_name="m",
            target_model_name="m",
            priority="0",
        )
        == 9
    )


def test_the_endpoint_with_the_shortest_queue_is_chosen():
    d = director(config="plugins: [{type: queue-scorer}]\n")
    for e, queue in zip(d.store.all(), (5, 1, 3), strict=True):
        d.store.report(e.id, metrics=EndpointMetrics(waiting_queue_size=queue, updated_at=1.0))
    decision, _ = route(d)
    assert decision.destination == "10.0.0.2:8000"


def test_ties_are_broken_at_random():
    d = director()
    chosen: Counter[str] = Counter()
    for _ in range(300):
        decision, record = route(d)
        chosen[decision.destination] += 1
        d.settlement.settle(record, Outcome())
    assert len(chosen) == 3 and min(chosen.values()) > 60


def test_request_id_is_generated_when_missing_and_content_length_set():
    decision, record = route(director(), headers={":path": "/v1/chat/completions"})
    headers = dict(decision.set_headers)
    assert len(headers["x-request-id"]) == 36 and record.request_id == headers["x-request-id"]
    assert headers["content-length"] == str(len(BODY))
    decision, _ = route(director())
    assert "x-request-id" not in dict(decision.set_headers)


def test_a_bodyless_request_goes_to_any_endpoint():
    d = director()
    seen = {route(d, body=b"", has_body=False)[0].destination for _ in range(60)}
    assert seen == {"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"}


def test_usage_and_status_are_recorded_when_settled():
    d = director()
    _, record = route(d)
    d.settlement.settle(
        record,
        Outcome(
            decided=True,
            response_status=200,
            response_complete=True,
            response_bytes=100,
            usage=Usage(10, 20, 30, 4),
        ),
    )
    assert (
        sample(d, "llm_d_epp_request_output_tokens_sum", model_name="m", target_model_name="m")
        == 20
    )
    _, record = route(d)
    d.settlement.settle(record, Outcome(decided=True, response_status=503))
    assert (
        sample(
            d,
            "llm_d_epp_request_error_total",
            model_name="m",
            target_model_name="m",
            error_code="ModelServerError",
            fairness_id="default-flow",
            priority="0",
        )
        == 1
    )


def inflight(d: Director) -> list[int]:
    return [d.store.inflight.load(e.key).requests for e in d.store.all()]


def test_stream_mode_settles_when_the_stream_ends():
    d = director()
    decision, record = route(d)
    assert not any(k == "x-llmd-exchange-id" for k, _ in decision.set_headers)
    d.settlement.stream_ended(record, Outcome(decided=True))
    assert inflight(d) == [0, 0, 0] and d.settlement.pending == 0


def tokens(d: Director) -> list[int]:
    return [d.store.inflight.load(e.key).tokens for e in d.store.all()]


@pytest.mark.parametrize("completion_source", ["stream", "access-log"])
def test_a_prompts_tokens_are_released_at_the_first_chunk_the_request_at_the_end(
    completion_source: str,
):
    d = director(
        config="plugins: [{type: token-load-scorer}]\n", completion_source=completion_source
    )
    _, record = route(d)
    assert sum(inflight(d)) == 1 and sum(tokens(d)) > 0  # "userhi": 2 tokens
    d.settlement.first_chunk(record)
    assert sum(inflight(d)) == 1 and sum(tokens(d)) == 0
    d.settlement.first_chunk(record)  # once only
    d.settlement.settle(record, Outcome(decided=True))
    assert inflight(d) == [0, 0, 0] and tokens(d) == [0, 0, 0]
    _, unseen = route(d)  # a response that never passes through the router
    d.settlement.settle(unseen, Outcome(decided=True))
    assert inflight(d) == [0, 0, 0] and tokens(d) == [0, 0, 0]
    d.settlement.first_chunk(unseen)  # after the end: nothing more to release
    assert tokens(d) == [0, 0, 0]


def test_access_log_mode_waits_for_the_proxy_to_report_the_end():
    d = director(completion_source="access-log")
    decision, record = route(d)
    (exchange_id,) = [v for k, v in decision.set_headers if k == "x-llmd-exchange-id"]
    assert exchange_id == record.exchange_id
    # Envoy closes the stream after routing:
    d.settlement.stream_ended(record, Outcome(decided=True))
    assert sum(inflight(d)) == 1 and d.settlement.pending == 1
    d.settlement.ended([Ended("someone-else", 200), Ended(exchange_id, 503, 120)])
    assert inflight(d) == [0, 0, 0] and d.settlement.pending == 0
    labels = {
        "model_name": "m",
        "target_model_name": "m",
        "error_code": "ModelServerError",
        "fairness_id": "default-flow",
        "priority": "0",
    }
    assert sample(d, "llm_d_epp_request_error_total", **labels) == 1
    d.settlement.ended([Ended(exchange_id, 200)])  # reported twice: nothing changes
    assert inflight(d) == [0, 0, 0]


def test_access_log_mode_exchange_ids_are_unique_and_bodyless_requests_get_one():
    d = director(completion_source="access-log")
    ids = {route(d)[1].exchange_id for _ in range(5)}
    _, bodyless = route(d, body=b"", headers={":path": "/v1/models"}, has_body=False)
    ids.add(bodyless.exchange_id)
    assert len(ids) == 6 and all(ids) and d.settlement.pending == 6


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(decided=False),  # the stream broke before the decision went out
        Outcome(decided=True, response_status=200, response_complete=True),  # saw the response
        Outcome(decided=True, response_on_stream=True),  # full duplex: client gone early
    ],
    ids=["undecided", "response-seen", "response-was-due-on-the-stream"],
)
def test_access_log_mode_settles_at_once_when_the_stream_knows(outcome: Outcome):
    d = director(completion_source="access-log")
    _, record = route(d)
    d.settlement.stream_ended(record, outcome)
    assert inflight(d) == [0, 0, 0] and d.settlement.pending == 0


def test_overdue_requests_are_swept_and_a_proxy_restart_releases_all():
    now = [100.0]
    d = director(completion_source="access-log", max_pending_s=10.0, clock=lambda: now[0])
    old = d.route(HEADERS, BODY, {}, has_body=True, received_at=85.0)[1]
    young = d.route(HEADERS, BODY, {}, has_body=True, received_at=95.0)[1]
    assert d.settlement.sweep() == 1 and old.settled and not young.settled
    assert d.settlement.pending == 1
    assert d.settlement.abandon_pending() == 1 and d.settlement.pending == 0
    assert inflight(d) == [0, 0, 0]


# ---------------------------------------------------------------------------- the plugin lifecycle
# Plugins used below by import path, as a user's would be.


class SheddableParser:
    """Parses as OpenAI does, then marks the request sheddable (priority -1)."""

    TYPE = "test-sheddable-parser"
    claims = ("chat/completions",)

    def __init__(self, name, params):
        self.name = name

    def parse(self, path, headers, body, request_id):
        return parse_request(path, headers, body, request_id).replace(priority=-1)


class Refuser:
    def __init__(self, name, params):
        self.name = name

    def admit(self, cycle, request, endpoints):
        return "closed for maintenance"


class BrokenProducer:
    def __init__(self, name, params):
        self.name = name

    def produce(self, cycle, request, endpoints):
        raise RuntimeError("scrape failed")


class HeaderHook:
    """Adds, removes and answers headers, and records every completion it sees."""

    completions: ClassVar[list] = []

    def __init__(self, name, params):
        self.name = name

    def pre_request(self, cycle, request, result):
        cycle.outputs.set_header("x-picked", result.targets[0].name)
        cycle.outputs.remove_header("x-smuggled")
        cycle.outputs.set_response_header("x-session-token", "tok")

    def response_complete(self, request, result, completion):
        HeaderHook.completions.append((self.name, result.targets[0].name, completion.status))


MODULE = __name__


def test_a_sheddable_request_is_refused_when_the_pool_is_saturated():
    config = (
        f"plugins: [{{type: '{MODULE}:SheddableParser', name: p}}]\n"
        "requestHandler: {parsers: [{pluginRef: p}]}\n"
    )
    d = director(config=config)
    report(d, updated_at=1e12)  # fresh and idle
    decision, _ = route(d)
    assert decision.destination
    report(d, waiting_queue_size=50, kv_cache_usage=0.95, updated_at=1e12)
    with pytest.raises(ResourceExhausted) as info:
        route(d)
    assert info.value.message == "system saturated, sheddable request dropped"
    assert info.value.dropped_reason == "rejected-saturated"


def test_an_admitter_refusal_is_500():
    d = director(config=f"plugins: [{{type: '{MODULE}:Refuser', name: refuser}}]\n")
    with pytest.raises(Internal) as info:
        route(d)
    assert info.value.status == 500
    assert info.value.message == "request cannot be admitted: closed for maintenance"


def test_a_failing_producer_does_not_fail_the_request(caplog: pytest.LogCaptureFixture):
    d = director(config=f"plugins: [{{type: '{MODULE}:BrokenProducer', name: broken}}]\n")
    decision, _ = route(d)
    assert decision.destination
    assert "data producer 'broken' failed" in caplog.text


def test_hooks_change_headers_and_see_the_end_even_after_a_reload():
    HeaderHook.completions.clear()
    d = director(config=f"plugins: [{{type: '{MODULE}:HeaderHook', name: old}}]\n")
    decision, record = route(d, headers={**HEADERS, "x-smuggled": "1"})
    assert dict(decision.set_headers)["x-picked"] == record.endpoint.name
    assert decision.remove_headers == ("x-smuggled",)
    assert decision.response_headers == (("x-session-token", "tok"),)
    assert record.request is not None and record.request.body == b""  # payload not held
    d.pipeline = pipeline(f"plugins: [{{type: '{MODULE}:HeaderHook', name: new}}]\n")
    d.settlement.settle(record, Outcome(decided=True, response_status=200))
    d.settlement.settle(record, Outcome(decided=True, response_status=200))
    assert HeaderHook.completions == [("old", record.endpoint.name, 200)]


def test_explanations_only_when_enabled_and_asked_for():
    asked = {**HEADERS, "x-llmd-debug": "1"}
    decision, _ = route(director(), headers=asked)
    assert "x-llmd-decision" not in dict(decision.response_headers)
    d = director(decisions=DecisionLog(2))
    decision, _ = route(d)
    assert "x-llmd-decision" not in dict(decision.response_headers)
    decision, record = route(d, headers=asked)
    explained = json.loads(dict(decision.response_headers)["x-llmd-decision"])
    assert explained["endpoint"] == record.endpoint.key
    candidates = explained["profiles"]["default"]["candidates"]
    assert len(candidates) == 3
    for candidate in candidates:
        raw, weighted = candidate["scores"]["active-request-scorer"]
        assert 0.0 <= raw <= 1.0 and weighted == raw
        assert candidate["total"] == weighted
    route(d)
    assert len(d.decisions.render()) == 2  # type: ignore[union-attr]  # the last N only


def test_every_plugin_call_is_timed_under_both_names():
    metrics = RouterMetrics()
    store = EndpointStore(endpoints())
    built = build_pipeline(
        load_config(HEAD + LEAST_LOADED),
        builtin_registry(),
        timer=metrics.plugin_timer,
        inflight=store.inflight,
    )
    d = Director(store, built, metrics)
    _, record = route(d)
    d.settlement.settle(record, Outcome(decided=True))
    for point, kind, calls in [
        ("RequestParsing", "openai-parser", 1),
        ("DataProducer", "inflight-load-producer", 1),
        ("Scorer", "active-request-scorer", 1),
        ("Picker", "max-score-picker", 1),
        ("ProfilePicker", "single-profile-handler", 2),  # "run default", then "nothing more"
        ("ProcessProfilesResults", "single-profile-handler", 1),
        ("PreRequest", "inflight-load-producer", 1),
        ("ResponseComplete", "inflight-load-producer", None),  # the router refunds its charges
    ]:
        labels = {"extension_point": point, "plugin_type": kind, "plugin_name": kind}
        for name in (
            "llm_d_epp_plugin_duration_seconds",
            "inference_extension_plugin_duration_seconds",
        ):
            assert metrics.registry.get_sample_value(f"{name}_count", labels) == calls, (
                name,
                point,
            )


def resources_from(*documents: str) -> ModelResources:
    loaded = load_config("\n---\n".join([HEAD + "plugins: []", *documents]))
    store = ModelResources()
    store.replace(loaded.objectives, loaded.rewrites)
    return store


BATCH = "apiVersion: llm-d.ai/v1alpha2\nkind: InferenceObjective\nmetadata: {name: batch}\n"
BATCH += "spec: {priority: -1}"
ALIAS = (
    "apiVersion: llm-d.ai/v1alpha2\nkind: InferenceModelRewrite\nmetadata: {name: alias}\n"
    "spec:\n  poolRef: {name: pool}\n  rules:\n  - matches: [{model: {value: m}}]\n"
    "    targets: [{modelRewrite: m-v2}]\n"
)


@pytest.mark.parametrize("header", ["x-llm-d-inference-objective", "x-gateway-inference-objective"])
def test_the_named_objective_sets_the_priority(header: str):
    d = director(resources=resources_from(BATCH))
    report(d, waiting_queue_size=50, kv_cache_usage=0.95, updated_at=1e12)
    decision, _ = route(d)  # no objective: priority 0, admitted even when saturated
    assert decision.destination
    with pytest.raises(ResourceExhausted, match="sheddable request dropped"):
        route(d, headers={**HEADERS, header: "batch"})
    decision, _ = route(d, headers={**HEADERS, header: "unknown"})  # unknown: priority 0
    assert decision.destination


def test_a_rewrite_rule_replaces_the_model_and_overrides_the_header():
    d = director(resources=resources_from(ALIAS))
    decision, _ = route(d, headers={**HEADERS, "x-llm-d-model-name-rewrite": "from-header"})
    assert json.loads(decision.body)["model"] == "m-v2"
    assert decision.response_model == ("m-v2", "m")  # the client sees its own name back
    assert (
        sample(
            d,
            "llm_d_epp_model_rewrite_decisions_total",
            model_rewrite_name="alias",
            model_name="m",
            target_model="m-v2",
        )
        == 1
    )
    other = json.dumps({"model": "x", "messages": [{"role": "user", "content": "hi"}]}).encode()
    decision, _ = route(d, body=other)
    assert decision.body == other  # no rule for x: the original bytes go upstream
