"""The OpenAI API of a running simulator, through the OpenAI SDK and compared with real vLLM."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

    from tests.integration.conftest import StartSim

DATA = Path(__file__).parents[1] / "data" / "vllm-0.32-cpu"
PROMPT = "The quick brown fox jumps over the lazy dog. " * 20


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys in order, value types, recursively."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def client(port: int) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)


async def sse_events(port: int, path: str, body: dict[str, Any]) -> list[str]:
    """The raw ``data:`` payloads of a streamed response, in order."""
    async with (
        httpx.AsyncClient() as http,
        http.stream("POST", f"http://127.0.0.1:{port}{path}", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        text = (await response.aread()).decode()
    frames = text.split("\n\n")
    assert frames[-1] == ""  # every frame ends with a blank line
    assert all(f.startswith("data: ") for f in frames[:-1])
    return [f[len("data: ") :] for f in frames[:-1]]


async def test_chat_response_has_vllm_shape(start_sim: StartSim):
    sim = await start_sim()
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sim.url}/v1/chat/completions",
            json={
                "model": "sim-tiny",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 8,
            },
        )
    real = json.loads((DATA / "chat.json").read_text())
    ours = response.json()
    assert shape(ours) == shape(real)
    assert ours["id"].startswith("chatcmpl-") and ours["usage"]["completion_tokens"] <= 8


async def test_completion_response_has_vllm_shape(start_sim: StartSim):
    sim = await start_sim()
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sim.url}/v1/completions",
            json={"model": "sim-tiny", "prompt": PROMPT, "max_tokens": 40, "ignore_eos": True},
        )
    real = json.loads((DATA / "completion.json").read_text())
    ours = response.json()
    assert shape(ours) == shape(real)
    assert ours["usage"]["completion_tokens"] == 40
    assert ours["choices"][0]["finish_reason"] == "length"


async def test_chat_stream_frames_match_vllm(start_sim: StartSim):
    sim = await start_sim()
    ours = await sse_events(
        sim.port,
        "/v1/chat/completions",
        {
            "model": "sim-tiny",
            "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": 6,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    real = (DATA / "chat-stream.sse").read_text().split("\n\n")
    real = [f[len("data: ") :] for f in real if f]
    assert ours[-1] == real[-1] == "[DONE]"
    assert len(ours) == len(real)
    for mine, theirs in zip(ours[:-1], real[:-1], strict=True):
        assert shape(json.loads(mine)) == shape(json.loads(theirs))
    usage = json.loads(ours[-2])["usage"]
    assert usage == {
        "prompt_tokens": usage["prompt_tokens"],
        "total_tokens": usage["prompt_tokens"] + 6,
        "completion_tokens": 6,
    }


async def test_stream_through_the_sdk_and_usage_counts(start_sim: StartSim):
    sim = await start_sim()
    async with client(sim.port) as api:
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ]
        stream = await api.chat.completions.create(
            model="sim-tiny",
            messages=messages,
            max_tokens=12,
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
        texts = {0: "", 1: ""}
        finishes = {}
        usage = None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        assert set(finishes) == {0, 1}
        async with httpx.AsyncClient() as http:
            counted = (await http.post(f"{sim.url}/tokenize", json={"messages": messages})).json()
        assert usage is not None and usage.prompt_tokens == counted["count"]
        tokenizer = sim.tokenizer
        generated = sum(len(tokenizer.encode(t)) for t in texts.values())
        # Each choice ends with an end-of-sequence token (counted, not shown) unless cut at 12.
        eos_tokens = sum(1 for f in finishes.values() if f == "stop")
        assert usage.completion_tokens == generated + eos_tokens


async def test_non_streamed_choices_and_batched_prompts(start_sim: StartSim):
    sim = await start_sim()
    async with client(sim.port) as api:
        result = await api.completions.create(
            model="sim-tiny",
            prompt=["one", "two three"],
            max_tokens=3,
            n=2,
            extra_body={"ignore_eos": True},
        )
        assert sorted(c.index for c in result.choices) == [0, 1, 2, 3]
        assert result.usage is not None and result.usage.completion_tokens == 12
        assert result.usage.prompt_tokens == 2 + 3  # BOS + words


async def test_completion_stream_chunks(start_sim: StartSim):
    sim = await start_sim()
    events = await sse_events(
        sim.port,
        "/v1/completions",
        {
            "model": "sim-tiny",
            "prompt": "count",
            "max_tokens": 3,
            "ignore_eos": True,
            "stream": True,
        },
    )
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 3 and events[-1] == "[DONE]"
    keys = list(chunks[0]["choices"][0])
    assert keys == [
        "index",
        "text",
        "logprobs",
        "finish_reason",
        "stop_reason",
        "prompt_token_ids",
        "token_ids",
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "length"]
    assert all(c["object"] == "text_completion" for c in chunks)


async def test_stop_string_ends_the_answer(start_sim: StartSim):
    sim = await start_sim(mode="echo")
    async with client(sim.port) as api:
        result = await api.completions.create(
            model="sim-tiny", prompt="alpha beta gamma delta", max_tokens=10, stop=[" gamma"]
        )
        choice = result.choices[0]
        assert choice.text == "alpha beta"
        assert choice.finish_reason == "stop"


async def test_echo_mode_and_eos(start_sim: StartSim):
    sim = await start_sim(mode="echo")
    async with client(sim.port) as api:
        result = await api.chat.completions.create(
            model="sim-tiny",
            messages=[{"role": "user", "content": "repeat after me"}],
            max_tokens=50,
        )
        assert result.choices[0].message.content == "repeat after me"
        assert result.choices[0].finish_reason == "stop"


async def test_models_with_lora_adapters(start_sim: StartSim):
    sim = await start_sim(
        lora_modules="sql-lora,chat-lora", max_loras=2, served_model_name="tiny-a,tiny-b"
    )
    async with httpx.AsyncClient() as http:
        models = (await http.get(f"{sim.url}/v1/models")).json()
    real = json.loads((DATA / "models.json").read_text())
    assert shape(models) == shape(real)
    cards = {m["id"]: m for m in models["data"]}
    assert list(cards) == ["tiny-a", "tiny-b", "sql-lora", "chat-lora"]
    assert cards["sql-lora"]["parent"] == "tiny-a" and cards["sql-lora"]["max_model_len"] is None
    assert cards["tiny-b"]["parent"] is None and cards["tiny-b"]["max_model_len"] == 4096
    async with client(sim.port) as api:
        answer = await api.chat.completions.create(
            model="sql-lora", messages=[{"role": "user", "content": "x"}], max_tokens=2
        )
        assert answer.model == "sql-lora"


async def test_health_tokenize_and_version(start_sim: StartSim):
    sim = await start_sim()
    async with httpx.AsyncClient() as http:
        health = await http.get(f"{sim.url}/health")
        tokens = (
            await http.post(f"{sim.url}/tokenize", json={"prompt": "The quick brown fox"})
        ).json()
        version = (await http.get(f"{sim.url}/version")).json()
    assert health.status_code == 200 and health.content == b""
    assert "content-type" not in health.headers
    real = json.loads((DATA / "tokenize.json").read_text())
    assert shape(tokens) == shape(real)
    assert tokens["count"] == 5 and tokens["tokens"][0] == 1  # BOS and four words
    assert version == {"version": "0.32.0"}


async def test_request_id_header_names_the_response(start_sim: StartSim):
    plain = await start_sim()
    echoing = await start_sim(enable_request_id_headers=True)
    body = {"model": "sim-tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    async with httpx.AsyncClient() as http:
        a = await http.post(
            f"{plain.url}/v1/chat/completions", json=body, headers={"x-request-id": "abc123"}
        )
        b = await http.post(
            f"{echoing.url}/v1/chat/completions", json=body, headers={"x-request-id": "abc123"}
        )
    assert a.json()["id"] == b.json()["id"] == "chatcmpl-abc123"
    assert "x-request-id" not in a.headers and b.headers["x-request-id"] == "abc123"


async def test_prompt_tokens_details_when_enabled(start_sim: StartSim):
    sim = await start_sim(enable_prompt_tokens_details=True)
    async with client(sim.port) as api:
        first = await api.completions.create(model="sim-tiny", prompt=PROMPT, max_tokens=1)
        second = await api.completions.create(model="sim-tiny", prompt=PROMPT, max_tokens=1)
        assert first.usage is not None and second.usage is not None
        assert first.usage.prompt_tokens_details is not None
        assert first.usage.prompt_tokens_details.cached_tokens == 0
        cached = second.usage.prompt_tokens_details
        assert (
            cached is not None
            and cached.cached_tokens == (second.usage.prompt_tokens - 1) // 16 * 16
        )


async def test_concurrent_streams_all_complete(start_sim: StartSim):
    sim = await start_sim(max_num_seqs=4)
    async with client(sim.port) as api:

        async def one(i: int) -> int:
            stream = await api.completions.create(
                model="sim-tiny",
                prompt=f"request {i}",
                max_tokens=16,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            return sum([1 async for chunk in stream if chunk.choices[0].text])

        counts = await asyncio.gather(*(one(i) for i in range(20)))
        assert counts == [16] * 20
        assert sim.engine.statistics().running == 0


@pytest.mark.parametrize("max_tokens", [1, 7])
async def test_max_tokens_is_respected(start_sim: StartSim, max_tokens: int):
    sim = await start_sim()
    async with client(sim.port) as api:
        result = await api.chat.completions.create(
            model="sim-tiny",
            messages=[{"role": "user", "content": "go"}],
            max_tokens=max_tokens,
            extra_body={"ignore_eos": True},
        )
        assert result.usage is not None and result.usage.completion_tokens == max_tokens
