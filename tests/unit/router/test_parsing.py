"""OpenAI request bodies into InferenceRequests: APIs by path, validation, model rewrite."""

from __future__ import annotations

import json

import pytest

from llmd_router.errors import BadRequest
from llmd_router.parsing import ApiKind, api_kind, parse_request, request_path

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def parse(body: object, path: str = "/v1/chat/completions", **headers: str):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_request(path, {k.replace("_", "-"): v for k, v in headers.items()}, raw, "r1")


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/v1/chat/completions", ApiKind.CHAT_COMPLETIONS),
        ("/v1/completions", ApiKind.COMPLETIONS),
        ("/v1/projects/p/locations/l/chat/completions", ApiKind.CHAT_COMPLETIONS),
        ("/v1/completions/", ApiKind.COMPLETIONS),
        ("/v1/chat/completions/render", ApiKind.CHAT_COMPLETIONS),
        ("/v1/embeddings", ApiKind.EMBEDDINGS),
        ("/v1/responses", ApiKind.RESPONSES),
        ("/v1/conversations", ApiKind.CONVERSATIONS),
        ("/v1/xcompletions", ApiKind.PASSTHROUGH),
        ("/v1/models", ApiKind.PASSTHROUGH),
        ("/generate", ApiKind.PASSTHROUGH),
    ],
)
def test_the_api_is_chosen_by_the_longest_path_suffix(path: str, kind: ApiKind):
    assert api_kind(path) is kind


def test_the_path_comes_from_pseudo_headers_or_proxy_headers():
    assert request_path({":path": "/v1/completions?x=1"}) == "/v1/completions"
    assert request_path({"x-original-path": "/a"}) == "/a"
    assert request_path({"x-forwarded-path": "/b"}) == "/b"
    assert request_path({}) == "/v1/completions"


def test_a_chat_request():
    request = parse(
        {**CHAT, "stream": True, "max_completion_tokens": 9, "max_tokens": 3, "tools": [{"x": 1}]}
    )
    assert request.kind is ApiKind.CHAT_COMPLETIONS
    assert (request.model, request.target_model, request.stream, request.max_tokens) == (
        "m",
        "m",
        True,
        9,
    )
    assert request.messages == CHAT["messages"]
    assert not request.body_mutated


def test_completions_embeddings_responses():
    assert parse({"model": "m", "prompt": [1, 2, 3]}, "/v1/completions").prompt == [1, 2, 3]
    assert parse({"model": "m", "input": ["a", "b"]}, "/v1/embeddings").prompt == ["a", "b"]
    assert parse({"model": "m", "input": "q"}, "/v1/responses").prompt == "q"
    assert parse({"model": "m", "items": [{}]}, "/v1/conversations").prompt == [{}]


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        (b'{"model": "m", "messages": [', "/v1/chat/completions", "error unmarshaling"),
        (b"\xff\xfe", "/v1/chat/completions", "error unmarshaling"),
        (b"[1, 2]", "/v1/chat/completions", "error unmarshaling"),
        ({"model": "m"}, "/v1/chat/completions", "must have valid messages field"),
        ({"model": "m", "messages": []}, "/v1/chat/completions", "must have valid messages"),
        ({"model": "m", "messages": ["hi"]}, "/v1/chat/completions", "must have valid messages"),
        ({"model": "m", "prompt": ""}, "/v1/completions", "must have prompt field"),
        ({"model": "m", "prompt": [1, "a"]}, "/v1/completions", "must have prompt field"),
        ({"model": "m"}, "/v1/embeddings", "must have input field"),
        ({"model": "m", "input": None}, "/v1/responses", "must have input field"),
        ({"model": "m", "items": []}, "/v1/conversations", "must have items field"),
        ({"messages": CHAT["messages"]}, "/v1/chat/completions", "model not found"),
        ({"model": 7, "messages": CHAT["messages"]}, "/v1/chat/completions", "model not found"),
        ({**CHAT, "max_tokens": "x"}, "/v1/chat/completions", "max_tokens must be an integer"),
    ],
    ids=[
        "truncated",
        "not-utf8",
        "not-object",
        "no-messages",
        "empty-messages",
        "bad-message",
        "empty-prompt",
        "mixed-prompt",
        "no-input",
        "null-input",
        "no-items",
        "no-model",
        "model-not-string",
        "max-tokens-not-int",
    ],
)
def test_malformed_requests_are_bad_requests(body: object, path: str, message: str):
    with pytest.raises(BadRequest, match=message) as info:
        parse(body, path)
    assert info.value.status == 400
    assert info.value.body().startswith(b"inference error: BadRequest - ")


def test_an_unclaimed_path_is_passed_through_unread():
    request = parse(b"not json at all", "/v1/audio/speech")
    assert request.kind is ApiKind.PASSTHROUGH and request.body == b"not json at all"


def test_control_headers_current_and_legacy():
    request = parse(
        CHAT, x_llm_d_inference_fairness_id="tenant-a", x_gateway_inference_objective="critical"
    )
    assert (request.fairness_id, request.objective) == ("tenant-a", "critical")
    assert parse(CHAT).fairness_id == "default-flow"


@pytest.mark.parametrize("header", ["x-llm-d-model-name-rewrite", "x-gateway-model-name-rewrite"])
def test_the_rewrite_header_changes_the_body_model_only(header: str):
    body = {"model": "alias", "messages": CHAT["messages"], "n": 12345678901234567890}
    raw = json.dumps(body).encode()
    request = parse_request("/v1/chat/completions", {header: "real"}, raw, "r1")
    assert request.model == "alias" and request.target_model == "real"
    assert request.body_mutated
    rewritten = json.loads(request.body)
    assert rewritten == {**body, "model": "real"}  # big integers survive
    assert list(rewritten) == list(body)  # field order kept
