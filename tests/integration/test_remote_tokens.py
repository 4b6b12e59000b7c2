"""token-producer's vllm backend against a simulated server's /tokenize, and the router
closing a token producer a reload dropped."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import pytest

from llmd_router import testing
from llmd_router.app import Router
from llmd_router.config import ConfigError
from llmd_router.datalayer import Endpoint
from llmd_router.framework import TOKENIZED_PROMPT, CycleState
from llmd_router.parsing import parse_request
from llmd_router.plugins.producers.token_producer import TokenProducer
from llmd_router.plugins.producers.token_producer.remote import TokenizeError
from llmd_sim.config import build_fleet
from llmd_sim.fleet import Fleet

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

MODEL = "sim-tiny"


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    async with Fleet(build_fleet(overrides={"preset": "tiny"}, count=1, base_port=0)) as f:
        yield f


def connected(producer: TokenProducer) -> bool:
    """Whether the producer holds an open session to the server."""
    return producer.statistics()["connected"] is True


def request(path: str, body: dict[str, object]):
    return parse_request(path, {}, msgspec.json.encode(body), "r")


async def test_the_server_tokenizes_chats_and_completions(fleet: Fleet):
    server = fleet.servers[0]
    producer = testing.make(TokenProducer, modelName=MODEL, vllm={"url": server.url})
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    chat = request("/v1/chat/completions", {"model": MODEL, "messages": messages})
    cycle = CycleState()
    await producer.produce_async(cycle, chat, [])
    tokens = cycle.get(TOKENIZED_PROMPT)
    assert tokens is not None and tokens.exact
    expected = server.tokenizer.encode(server.tokenizer.render_chat(messages))
    assert tokens.prompts == (expected,)
    completion = request("/v1/completions", {"model": MODEL, "prompt": ["one", "two three"]})
    cycle = CycleState()
    await producer.produce_async(cycle, completion, [])
    tokens = cycle.get(TOKENIZED_PROMPT)
    assert tokens is not None
    assert tokens.prompts == tuple(
        server.tokenizer.encode(p, add_bos=True) for p in ("one", "two three")
    )
    assert producer.statistics()["calls"] == 3
    await producer.aclose()
    assert producer.remote is not None and not connected(producer)


async def test_a_failing_server_is_an_error_the_director_logs(fleet: Fleet):
    server = fleet.servers[0]
    producer = testing.make(TokenProducer, modelName="no-such-model", vllm={"http": server.url})
    chat = request(
        "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    )
    with pytest.raises(TokenizeError, match="answered 404"):
        await producer.produce_async(CycleState(), chat, [])
    down = testing.make(TokenProducer, modelName=MODEL, vllm={"url": "http://127.0.0.1:9"})
    with pytest.raises(TokenizeError, match=r"127\.0\.0\.1:9"):
        await down.produce_async(CycleState(), chat, [])
    assert producer.statistics()["failures"] == 1
    await producer.aclose()
    await down.aclose()


def test_vllm_parameters():
    producer = testing.make(TokenProducer, vllm={"url": "http://tok:8000/", "timeout": "750ms"})
    assert producer.produce_timeout_s == pytest.approx(0.75)
    assert producer.remote is not None and producer.remote.url == "http://tok:8000/tokenize"
    with pytest.raises(ConfigError, match="must be an http"):
        testing.make(TokenProducer, vllm={"url": "tok:8000"})
    with pytest.raises(ConfigError, match="one backend"):
        testing.make(TokenProducer, vllm={}, local={"path": "/nowhere"})


async def test_a_reload_closes_the_token_producer_it_drops(fleet: Fleet, tmp_path: Path):
    server = fleet.servers[0]
    head = "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
    config = tmp_path / "epp.yaml"
    vllm = f"{{modelName: {MODEL}, vllm: {{url: '{server.url}'}}}}"
    remote = f"plugins: [{{type: token-producer, parameters: {vllm}}}]\n"
    config.write_text(head + remote)
    router = Router(
        testing.local_options(
            config_file=config, endpoints=(Endpoint("sim", "127.0.0.1", server.port),)
        )
    )
    await router.start()
    try:
        producer = router.pipeline.plugins["token-producer"].instance
        assert isinstance(producer, TokenProducer) and producer.remote is not None
        chat = request(
            "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
        )
        await producer.produce_async(CycleState(), chat, [])
        assert connected(producer)
        config.write_text(head + "plugins: [{type: queue-scorer}]\n")
        assert await router.areload()
        assert not connected(producer)  # released when the reload dropped it
        config.write_text(head + remote)
        assert await router.areload()
        again = router.pipeline.plugins["token-producer"].instance
        assert isinstance(again, TokenProducer) and again.remote is not None
        await again.produce_async(CycleState(), chat, [])
    finally:
        await router.stop(0)
    assert not connected(again)  # released when the router stopped
