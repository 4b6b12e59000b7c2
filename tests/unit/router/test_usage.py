"""Token usage from JSON responses and SSE streams, including a real vLLM stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmd_router.parsing import SseUsageScanner, Usage, usage_from_json

DATA = Path(__file__).parents[2] / "data" / "vllm-0.32-cpu"


def test_usage_from_a_real_vllm_stream_fed_in_any_pieces():
    stream = (DATA / "chat-stream.sse").read_bytes()
    for size in (1, 7, 64, len(stream)):
        scanner = SseUsageScanner()
        for start in range(0, len(stream), size):
            scanner.feed(stream[start : start + size])
        scanner.finish()
        assert scanner.usage == Usage(18, 6, 24, None), size
        assert scanner.events == 9


def test_usage_from_real_vllm_json_responses():
    chat = usage_from_json((DATA / "chat.json").read_bytes())
    completion = usage_from_json((DATA / "completion.json").read_bytes())
    assert chat == Usage(1063, 8, 1071, None)
    assert completion == Usage(1041, 40, 1081, None)


@pytest.mark.parametrize(
    ("document", "usage"),
    [
        (
            {
                "object": "response",
                "usage": {
                    "input_tokens": 4,
                    "output_tokens": 5,
                    "total_tokens": 9,
                    "input_tokens_details": {"cached_tokens": 1},
                },
            },
            Usage(4, 5, 9, 1),
        ),
        (
            {
                "object": "chat.completion",
                "usage": {
                    "prompt_tokens": 1,
                    "completion_tokens": 2,
                    "total_tokens": 3,
                    "prompt_tokens_details": {"cached_tokens": 0},
                },
            },
            Usage(1, 2, 3, 0),
        ),
        ({"usage": {"input_tokens": 1, "completion_tokens": 2}}, Usage(1, 2, None, None)),
        ({"object": "text_completion"}, None),
        ([1, 2], None),
    ],
    ids=["responses-api", "chat", "mixed-names", "no-usage", "not-an-object"],
)
def test_usage_mapping(document: object, usage: Usage | None):
    assert usage_from_json(json.dumps(document).encode()) == usage


def test_a_responses_api_stream():
    scanner = SseUsageScanner()
    scanner.feed(
        b'event: response.completed\ndata: {"type":"response.completed","response":'
        b'{"usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}}}\n\n'
    )
    assert scanner.usage == Usage(3, 4, 7, None)


def test_broken_events_are_ignored():
    scanner = SseUsageScanner()
    scanner.feed(b'data: {"usage": \n\ndata: not json "usage"\n\n')
    scanner.finish()
    assert scanner.usage is None and scanner.events == 2
