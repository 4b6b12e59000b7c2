"""The router's own tokenizer: golden against a real vLLM 0.32 serving the tiny model, and the
prefix store against tokenizing whole."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from pathlib import Path

import msgspec
import pytest
from tokenizers import Tokenizer, models

from llmd_router.datalayer.kvevents import BlockStored, decode_message
from llmd_router.parsing import parse_request
from llmd_router.parsing.tokenization import LocalTokenizer, PrefixTokenStore, TokenizerError

DATA = Path(__file__).resolve().parents[2] / "data"
MODEL = DATA / "tiny-llama"
FOX = "The quick brown fox jumps over the lazy dog. " * 40


@pytest.fixture(scope="module")
def tiny() -> LocalTokenizer:
    return LocalTokenizer.from_dir(MODEL)


def vllm_blocks() -> list[BlockStored]:
    """The KV events vLLM published for the recorded requests (see tests/data/README.md)."""
    doc = json.loads((DATA / "vllm-0.32-cpu" / "kv-events.json").read_text())
    messages = [decode_message([base64.b64decode(f) for f in m]) for m in doc["messages"]]
    return [e for m in messages for e in m.batch.events if isinstance(e, BlockStored)]


def chat(*messages: dict[str, object], **extra: object):
    body = msgspec.json.encode({"model": "tiny", "messages": list(messages), **extra})
    return parse_request("/v1/chat/completions", {}, body, "r")


# ---------------------------------------------------------------------------- golden


def test_a_completion_tokenizes_as_vllms_tokenize_endpoint(tiny: LocalTokenizer):
    recorded = json.loads((DATA / "vllm-0.32-cpu" / "tokenize.json").read_text())
    assert tiny.encode("The quick brown fox", add_special_tokens=True) == recorded["tokens"]


def test_a_completion_prompt_is_the_tokens_vllm_cached(tiny: LocalTokenizer):
    cached = vllm_blocks()[1]  # the first full run of the completion's prompt
    request = parse_request(
        "/v1/completions", {}, msgspec.json.encode({"model": "tiny", "prompt": FOX}), "r"
    )
    tokens = tiny.tokenize(request)
    assert tokens.exact
    (ids,) = tokens.prompts
    assert isinstance(ids, list) and ids[: len(cached.token_ids)] == list(cached.token_ids)


def test_a_chat_renders_and_tokenizes_as_vllm_did(tiny: LocalTokenizer):
    cached = vllm_blocks()[3]  # the chat request: its prompt's 33 full blocks of 32
    request = chat({"role": "system", "content": FOX}, {"role": "user", "content": "hi"})
    assert tiny.render_chat(request.messages or []).endswith("\n<|user|>hi\n<|assistant|>")
    tokens = tiny.tokenize(request)
    assert tokens.token_count == 1063  # vLLM's usage.prompt_tokens for it (chat.json)
    (ids,) = tokens.prompts
    assert isinstance(ids, list) and ids[: len(cached.token_ids)] == list(cached.token_ids)


def test_text_parts_are_joined_with_newlines(tiny: LocalTokenizer):
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    joined = tiny.render_chat([{"role": "user", "content": parts}])
    assert joined == tiny.render_chat([{"role": "user", "content": "a\nb"}])


def test_inputs_it_does_not_render_fall_back_to_the_estimate(tiny: LocalTokenizer):
    request = parse_request(
        "/v1/responses", {}, msgspec.json.encode({"model": "tiny", "input": "hi"}), "r"
    )
    assert not tiny.tokenize(request).exact


def test_a_directory_without_a_tokenizer_is_refused(tmp_path: Path):
    with pytest.raises(TokenizerError, match=r"no tokenizer\.json"):
        LocalTokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match=r"tokenizer\.json"):
        LocalTokenizer.from_dir(tmp_path)


def test_a_model_without_a_chat_template_tokenizes_chats_by_estimate(tmp_path: Path):
    (tmp_path / "tokenizer.json").write_text((MODEL / "tokenizer.json").read_text())
    plain = LocalTokenizer.from_dir(tmp_path)
    assert not plain.has_chat_template
    assert not plain.tokenize(chat({"role": "user", "content": "hi"})).exact
    with pytest.raises(TokenizerError, match="no chat template"):
        plain.render_chat([{"role": "user", "content": "hi"}])


# ---------------------------------------------------------------------------- the prefix store


@pytest.mark.parametrize("seed", range(12))
def test_the_store_gives_the_whole_texts_tokens(seed: int):
    rng = random.Random(seed)
    tok = LocalTokenizer.from_dir(
        MODEL, store=PrefixTokenStore(chunk_chars=rng.choice([8, 32, 256]))
    )
    words = ["alpha", "beta", "  ", "\n", "12345", "x-y", "ünï", "!!", "the", "Dog."]
    shared = [" ".join(rng.choice(words) for _ in range(rng.randrange(5, 400))) for _ in range(3)]
    for _ in range(20):
        text = rng.choice(shared) + rng.choice(["", " ", "?", " more words here", "\nnext"])
        text += " ".join(rng.choice(words) for _ in range(rng.randrange(0, 30)))
        specials = rng.random() < 0.5
        assert tok.encode(text, add_special_tokens=specials) == tok.encode_whole(
            text, add_special_tokens=specials
        )
    assert tok.store is not None and tok.store.hits > 0


def test_a_seen_prefix_is_not_tokenized_again(tiny: LocalTokenizer):
    tok = LocalTokenizer.from_dir(MODEL)
    assert tok.store is not None
    tok.encode(FOX + " first question", add_special_tokens=True)
    hits = tok.store.hits
    tok.encode(FOX + " second question", add_special_tokens=True)
    assert tok.store.hits - hits == len(FOX) // tok.store.chunk_chars
    assert tok.statistics()["prefixStore"] == {
        "chunks": len(tok.store),
        "hits": tok.store.hits,
        "misses": 1,  # the first
    }


def test_the_store_is_bounded():
    store = PrefixTokenStore(chunk_chars=16, max_chunks=10)
    tok = LocalTokenizer.from_dir(MODEL, store=store)
    tok.encode(FOX, add_special_tokens=False)
    assert len(store) == 10


def test_a_tokenizer_that_does_not_split_at_words_gets_no_store():
    """BPE over the whole text, merging across spaces: the rest of a text tokenized apart
    would differ, so the probe turns the store off."""
    alphabet = sorted(set(LocalTokenizer.__module__ + FOX + "0123456789#@,.()\n:;-'?"))
    probe_chars = sorted(set(_probe_text()))
    vocab = {c: i for i, c in enumerate(sorted(set(alphabet) | set(probe_chars)))}
    vocab["e "] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[("e", " ")]))
    tok = LocalTokenizer(bpe, store=PrefixTokenStore())
    assert tok.store is None
    assert tok.encode("the cat", add_special_tokens=False) == bpe.encode("the cat").ids


def _probe_text() -> str:
    from llmd_router.parsing.tokenization import _PROBE  # noqa: PLC0415

    return _PROBE


def test_a_difference_seen_in_verification_turns_the_store_off(caplog: pytest.LogCaptureFixture):
    tok = LocalTokenizer.from_dir(MODEL, verify_every=1)
    assert tok.store is not None
    tok.encode(FOX + " a", add_special_tokens=False)
    # Corrupt what the store holds: the next prompt served from it is checked and found wrong.
    for chunk in tok.store._chunks.values():
        chunk.tokens[0] = 0
    text = FOX + " b"
    assert tok.encode(text, add_special_tokens=False) == tok.encode_whole(
        text, add_special_tokens=False
    )
    assert tok.statistics()["prefixStore"] is None and "the store is off" in caplog.text


# ---------------------------------------------------------------------------- off the event loop


async def test_a_long_prompt_is_tokenized_while_the_event_loop_serves_others():
    tok = LocalTokenizer.from_dir(MODEL)
    text = FOX * 60  # 162k characters: well over what is tokenized inline
    ticks = 0
    done = asyncio.Event()

    async def other_requests() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.ensure_future(other_requests())
    await asyncio.sleep(0)
    before = ticks
    tokens = await tok.encode_async(text, add_special_tokens=True)
    done.set()
    await ticker
    assert ticks - before > 1  # the loop ran other work while the tokenizer did
    assert tokens == tok.encode_whole(text, add_special_tokens=True)
    # Served again from the store: the rest (a few characters) is tokenized inline.
    again = await tok.encode_async(text + " And then?", add_special_tokens=True)
    assert again == tok.encode_whole(text + " And then?", add_special_tokens=True)
    assert tok.store is not None and tok.store.hits > 0


async def test_async_and_sync_tokenizing_agree_on_requests():
    tok = LocalTokenizer.from_dir(MODEL)
    for request in (
        chat({"role": "system", "content": FOX * 10}, {"role": "user", "content": "hi"}),
        parse_request(
            "/v1/completions", {}, msgspec.json.encode({"model": "tiny", "prompt": [FOX, "b"]}), "r"
        ),
    ):
        assert await tok.tokenize_async(request) == tok.tokenize(request)
