"""The ext-proc stream state machine, for every message order it can meet."""

from __future__ import annotations

import json

import pytest

from llmd_router.errors import ServiceUnavailable
from llmd_router.extproc.events import (
    BodyChunk,
    BodyResponse,
    HeadersResponse,
    ImmediateResponse,
    NeedDecision,
    RequestBody,
    RequestHeaders,
    RequestTrailers,
    ResponseBody,
    ResponseHeaders,
    ResponseTrailers,
    TrailersResponse,
)
from llmd_router.extproc.protocol import BODY_CHUNK_LIMIT, ExtProcStream, StreamState
from llmd_router.requestcontrol.exchange import Decision

HEADERS = {":path": "/v1/completions", ":method": "POST", "x-request-id": "r1"}
DUPLEX = "full_duplex_streamed"
DECISION = Decision(destination="10.0.0.1:8000", body=b'{"x":1}')


def stream(limit: int = 1 << 20) -> ExtProcStream:
    return ExtProcStream(max_body_bytes=limit)


def headers(
    mode: str | None = DUPLEX,
    eos: bool = False,
    response_mode: str | None = DUPLEX,
    metadata: dict | None = None,
) -> RequestHeaders:
    return RequestHeaders(dict(HEADERS), eos, metadata or {}, mode, response_mode)  # type: ignore[arg-type]


def need(actions: list) -> NeedDecision:
    (action,) = actions
    assert isinstance(action, NeedDecision)
    return action


@pytest.mark.parametrize("mode", [DUPLEX, None], ids=["announced", "not-announced"])
def test_full_duplex_holds_headers_until_the_body_is_complete(mode: str | None):
    s = stream()
    assert s.receive(headers(mode)) == []  # nothing may be answered yet
    assert s.receive(RequestBody(b'{"x"', False)) == []
    asked = need(s.receive(RequestBody(b":1}", True)))
    assert (
        asked.body == b'{"x":1}' and asked.has_body and asked.headers[":path"] == "/v1/completions"
    )
    assert s.state is StreamState.DECIDING
    actions = s.decide(DECISION)
    first, body = actions
    assert isinstance(first, HeadersResponse) and first.phase == "request"
    assert first.set_headers[0] == ("x-gateway-destination-endpoint", "10.0.0.1:8000")
    assert first.clear_route_cache
    assert first.dynamic_metadata == {
        "envoy.lb": {"x-gateway-destination-endpoint": "10.0.0.1:8000"}
    }
    assert body == BodyChunk("request", b'{"x":1}', True)
    assert s.state.value == "forwarded"
    assert s.outcome.decided


def test_full_duplex_rechunks_a_large_body_in_order():
    s = stream(limit=1 << 24)
    s.receive(headers())
    payload = bytes(range(256)) * 1000  # 256,000 bytes
    need(s.receive(RequestBody(payload, True)))
    _, *actions = s.decide(Decision("10.0.0.1:8000", payload))
    chunks = [c for c in actions if isinstance(c, BodyChunk)]
    assert len(chunks) == len(actions)
    assert all(len(c.body) <= BODY_CHUNK_LIMIT for c in chunks)
    assert b"".join(c.body for c in chunks) == payload
    assert [c.end_of_stream for c in chunks] == [False] * (len(chunks) - 1) + [True]


def test_buffered_answers_headers_then_decides_on_the_body():
    s = stream()
    assert s.receive(headers("buffered")) == [HeadersResponse("request")]
    need(s.receive(RequestBody(b'{"x":1}', True)))
    (answer,) = s.decide(DECISION)
    assert isinstance(answer, BodyResponse)
    assert answer.set_headers[0] == ("x-gateway-destination-endpoint", "10.0.0.1:8000")
    assert answer.clear_route_cache and answer.body is None  # unchanged body is not sent back
    assert answer.dynamic_metadata == {
        "envoy.lb": {"x-gateway-destination-endpoint": "10.0.0.1:8000"}
    }


def test_buffered_sends_the_body_back_only_when_changed():
    s = stream()
    s.receive(headers("buffered"))
    need(s.receive(RequestBody(b'{"model":"a"}', True)))
    (answer,) = s.decide(Decision("10.0.0.1:8000", b'{"model":"b"}', body_mutated=True))
    assert isinstance(answer, BodyResponse) and answer.body == b'{"model":"b"}'


@pytest.mark.parametrize("mode", [DUPLEX, "buffered"])
def test_a_request_without_body_is_decided_in_the_headers_response(mode: str):
    s = stream()
    asked = need(s.receive(headers(mode, eos=True)))
    assert not asked.has_body and asked.body == b""
    (answer,) = s.decide(Decision("10.0.0.1:8000", b""))
    assert isinstance(answer, HeadersResponse) and answer.clear_route_cache


def test_request_trailers_end_the_body_and_are_answered_after_the_decision():
    s = stream()
    s.receive(headers())
    s.receive(RequestBody(b"abc", False))
    asked = need(s.receive(RequestTrailers()))
    assert asked.body == b"abc"
    actions = s.decide(DECISION)
    assert isinstance(actions[-1], TrailersResponse) and actions[-1].phase == "request"


@pytest.mark.parametrize("mode", ["streamed", "none"])
def test_body_modes_that_forward_early_are_refused(mode: str):
    s = stream()
    (answer,) = s.receive(headers(mode))
    assert isinstance(answer, ImmediateResponse) and answer.status == 500
    assert b"FULL_DUPLEX_STREAMED or BUFFERED" in answer.body
    assert s.done


def test_an_oversized_body_is_413():
    s = stream(limit=10)
    s.receive(headers())
    assert s.receive(RequestBody(b"12345", False)) == []
    (answer,) = s.receive(RequestBody(b"678901", False))
    assert isinstance(answer, ImmediateResponse) and answer.status == 413
    assert answer.body.startswith(b"inference error: PayloadTooLarge - ")
    assert s.done and s.outcome.immediate_status == 413
    assert s.receive(RequestBody(b"more", True)) == []  # late chunks are ignored


def test_fail_sends_the_error_as_an_immediate_response():
    s = stream()
    need(s.receive(headers(eos=True)))
    error = ServiceUnavailable("no endpoints", dropped_reason="rejected-no-endpoints")
    (answer,) = s.fail(error)
    assert answer == ImmediateResponse(
        503,
        b"inference error: ServiceUnavailable - no endpoints",
        (("x-llm-d-request-dropped-reason", "rejected-no-endpoints"),),
    )
    assert s.done and not s.outcome.decided


@pytest.mark.parametrize(
    "event",
    [
        RequestBody(b"x", True),
        ResponseHeaders({":status": "200"}, False),
        ResponseBody(b"x", True),
        RequestTrailers(),
    ],
    ids=["body-before-headers", "response-before-request", "response-body-first", "trailers"],
)
def test_out_of_order_events_are_protocol_errors(event):
    s = stream()
    (answer,) = s.receive(event)
    assert isinstance(answer, ImmediateResponse) and answer.status == 500
    assert s.outcome.protocol_error is not None and s.done


def test_envoys_own_reply_during_the_request_passes_through():
    """A body over Envoy's buffer limit: Envoy answers 413 itself, before any decision."""
    s = stream()
    s.receive(headers("buffered"))
    answer = s.receive(ResponseHeaders({":status": "413"}, False))
    assert answer == [HeadersResponse("response")]
    assert not s.outcome.decided and s.outcome.response_status == 413
    s.receive(ResponseBody(b"Payload Too Large", True))
    assert s.outcome.response_complete


def test_decide_without_a_pending_decision_is_a_protocol_error():
    s = stream()
    (answer,) = s.decide(DECISION)
    assert isinstance(answer, ImmediateResponse) and answer.status == 500


def decided(
    mode: str = DUPLEX, response_mode: str | None = DUPLEX, decision: Decision = DECISION
) -> ExtProcStream:
    s = stream()
    s.receive(headers(mode, response_mode=response_mode))
    s.receive(RequestBody(b"{}", True))
    s.decide(decision)
    return s


def test_a_streamed_response_passes_through_and_its_usage_is_read():
    s = decided()
    assert s.receive(
        ResponseHeaders(
            {":status": "200", "content-type": "text/event-stream; charset=utf-8"}, False
        )
    ) == [HeadersResponse("response")]
    events = [
        b'data: {"choices":[{"text":"a"}]}\n\n',
        b'data: {"choices":[],"usa',
        b'ge":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n',
        b"data: [DONE]\n\n",
    ]
    answers = [s.receive(ResponseBody(e, i == len(events) - 1)) for i, e in enumerate(events)]
    assert [a for (a,) in answers] == [
        BodyChunk("response", e, i == len(events) - 1) for i, e in enumerate(events)
    ]
    outcome = s.outcome
    assert outcome.response_complete and outcome.response_streaming
    assert outcome.response_status == 200
    assert outcome.usage is not None and (
        outcome.usage.prompt_tokens,
        outcome.usage.completion_tokens,
    ) == (5, 2)
    assert outcome.response_bytes == sum(map(len, events))


def test_a_json_response_is_read_for_usage_at_its_end():
    s = decided()
    s.receive(ResponseHeaders({":status": "200", "content-type": "application/json"}, False))
    body = json.dumps(
        {
            "object": "text_completion",
            "usage": {
                "prompt_tokens": 3,
                "completion_tokens": 4,
                "total_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 2},
            },
        }
    ).encode()
    s.receive(ResponseBody(body[:20], False))
    s.receive(ResponseBody(body[20:], True))
    assert s.outcome.usage is not None and s.outcome.usage.cached_tokens == 2


def test_response_bodies_in_a_non_duplex_mode_get_plain_answers():
    s = decided("buffered", response_mode="buffered")
    s.receive(ResponseHeaders({":status": "200"}, False))
    (answer,) = s.receive(ResponseBody(b"{}", True))
    assert answer == BodyResponse("response")


def test_the_model_name_is_restored_in_responses_after_a_rewrite():
    s = decided(decision=Decision("10.0.0.1:8000", b"{}", response_model=("big", "alias")))
    s.receive(ResponseHeaders({":status": "200"}, False))
    (chunk,) = s.receive(ResponseBody(b'{"model":"big","x":1}', True))
    assert isinstance(chunk, BodyChunk) and chunk.body == b'{"model":"alias","x":1}'


def test_response_trailers_complete_the_response():
    s = decided()
    s.receive(ResponseHeaders({":status": "200"}, False))
    s.receive(ResponseBody(b"{}", False))
    assert s.receive(ResponseTrailers()) == [TrailersResponse("response")]
    assert s.outcome.response_complete


def test_headers_only_response_is_complete_at_once():
    s = decided()
    s.receive(ResponseHeaders({":status": "204"}, True))
    assert s.outcome.response_complete and s.outcome.response_status == 204


def test_a_stream_that_ends_early_says_how_far_it_got():
    s = decided("buffered", response_mode="none")
    s.receive(ResponseHeaders({":status": "200", "content-type": "text/event-stream"}, False))
    # Envoy closes the stream (client gone, or the exchange over): nothing more arrives.
    outcome = s.outcome
    assert outcome.decided and outcome.response_status == 200
    assert not outcome.response_complete and outcome.usage is None


@pytest.mark.parametrize(
    ("response_mode", "on_stream"),
    [(DUPLEX, True), ("buffered", True), ("none", False), (None, False)],
)
def test_the_outcome_says_whether_the_response_was_due_on_the_stream(
    response_mode: str | None, on_stream: bool
):
    s = stream()
    s.receive(headers("buffered", response_mode=response_mode))
    assert s.outcome.response_on_stream is on_stream
