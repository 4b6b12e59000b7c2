"""Adversarial and chunked request bodies: the same request however it is split, and any bytes
give a request or our own 400, never another exception."""

from __future__ import annotations

import contextlib
import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from llmd_router.errors import BadRequest
from llmd_router.extproc.events import NeedDecision, RequestBody, RequestHeaders
from llmd_router.extproc.protocol import ExtProcStream
from llmd_router.parsing import parse_request

PATHS = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/conversations",
    "/v1/other",
]

messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=40)}
    ),
    min_size=1,
    max_size=4,
)
chat_bodies = st.builds(
    lambda model, msgs, stream: json.dumps(
        {"model": model, "messages": msgs, "stream": stream}
    ).encode(),
    st.text(min_size=1, max_size=20),
    messages,
    st.booleans(),
)


def through_stream(body: bytes, cuts: list[int]) -> bytes:
    """Feed ``body`` to the protocol in pieces cut at ``cuts``; return what it asks to route."""
    stream = ExtProcStream(max_body_bytes=1 << 20)
    stream.receive(
        RequestHeaders({":path": "/v1/chat/completions"}, False, {}, "full_duplex_streamed")
    )
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    pieces = [body[a:b] for a, b in itertools.pairwise(points)] or [b""]
    asked = None
    for i, piece in enumerate(pieces):
        for action in stream.receive(RequestBody(piece, i == len(pieces) - 1)):
            asked = action
    assert isinstance(asked, NeedDecision)
    return asked.body


@settings(max_examples=200)
@given(chat_bodies, st.lists(st.integers(min_value=0), max_size=12))
def test_any_chunking_parses_to_the_same_request(body: bytes, cuts: list[int]):
    whole = parse_request("/v1/chat/completions", {}, body, "r")
    rebuilt = through_stream(body, cuts)
    assert rebuilt == body
    again = parse_request("/v1/chat/completions", {}, rebuilt, "r")
    assert (again.model, again.messages, again.stream) == (
        whole.model,
        whole.messages,
        whole.stream,
    )


@settings(max_examples=400)
@given(st.binary(max_size=300), st.sampled_from(PATHS))
def test_arbitrary_bytes_give_a_request_or_a_bad_request(body: bytes, path: str):
    try:
        request = parse_request(path, {}, body, "r")
    except BadRequest as exc:
        error: BadRequest | None = exc
    else:
        error = None
        assert request.body == body
    if error is not None:
        assert error.status == 400
        assert error.body().startswith(b"inference error: BadRequest - ")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "model",
                    "messages",
                    "prompt",
                    "input",
                    "items",
                    "stream",
                    "max_tokens",
                    "role",
                    "content",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=400)
@given(json_values, st.sampled_from(PATHS))
def test_arbitrary_json_gives_a_request_or_a_bad_request(value: object, path: str):
    with contextlib.suppress(BadRequest):
        parse_request(path, {}, json.dumps(value).encode(), "r")
