"""precise-prefix-cache-producer and the deprecated precise-prefix-cache-scorer: matches from
KV events, speculation, parameters, and the token producer's local tokenizer."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from llmd_router import testing
from llmd_router.config import ConfigError
from llmd_router.datalayer.kvevents import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEventBatch,
    KVEventSink,
)
from llmd_router.framework import (
    TOKENIZED_PROMPT,
    CycleState,
    DataProducer,
    PrefixMatch,
    PreRequest,
    Scorer,
    TokenizedPrompt,
    prefix_match_key,
)
from llmd_router.parsing import parse_request
from llmd_router.plugins.producers.precise_prefix_cache_producer import (
    PrecisePrefixCacheProducer,
    parse_duration,
)
from llmd_router.plugins.producers.token_producer import TokenProducer
from llmd_router.plugins.scorers.precise_prefix_cache_scorer import PrecisePrefixCacheScorer

MODEL = Path(__file__).resolve().parents[3] / "data" / "tiny-llama"
A, B, C = testing.endpoints(3)
BS = 4


def batch(*events: object) -> KVEventBatch:
    return KVEventBatch(0.0, tuple(events))  # type: ignore[arg-type]


def stored(hashes: list[int], tokens: list[int], parent: int | None = None, **kw: object):
    return BlockStored(tuple(hashes), parent, tuple(tokens), BS, **kw)  # type: ignore[arg-type]


def tokens_cycle(*prompts: list[int], exact: bool = True) -> CycleState:
    cycle = CycleState()
    cycle.put(TOKENIZED_PROMPT, TokenizedPrompt(prompts, sum(map(len, prompts)), exact))
    return cycle


def request(**body: object):
    payload = msgspec.json.encode({"model": "m", "prompt": "x", **body})
    return parse_request("/v1/completions", {}, payload, "r")


def produce(p, cycle: CycleState, endpoints=(A, B, C), **body: object):
    p.produce(cycle, request(**body), list(endpoints))
    matches = cycle.get(p.key)
    assert matches is not None
    return matches


def test_kinds_and_declarations():
    p = testing.make(PrecisePrefixCacheProducer)
    assert isinstance(p, DataProducer) and isinstance(p, PreRequest) and isinstance(p, KVEventSink)
    assert p.key == prefix_match_key("precise-prefix-cache-producer")
    assert p.consumes == (TOKENIZED_PROMPT,)
    assert p.kv_subscription.pod_port == 5557 and p.kv_subscription.bind is None


def test_matches_follow_the_servers_events():
    p = testing.make(PrecisePrefixCacheProducer)
    prompt = list(range(18))  # 4 full blocks
    p.kv_batch(A.key, "m", batch(stored([1, 2, 3, 4], prompt[:16])))
    p.kv_batch(B.key, "m", batch(stored([7, 8], prompt[:8])))
    p.kv_batch(C.key, "m", batch(stored([5, 6], [9, 9, 9, 9, *prompt[4:8]])))  # other start
    matches = produce(p, tokens_cycle(prompt))
    assert matches == {
        A.key: PrefixMatch(4, 4, BS),
        B.key: PrefixMatch(2, 4, BS),
        C.key: PrefixMatch(0, 4, BS),
    }
    p.kv_batch(A.key, "m", batch(BlockRemoved((3,), "GPU")))
    p.kv_batch(B.key, "m", batch(AllBlocksCleared()))
    matches = produce(p, tokens_cycle(prompt))
    assert (matches[A.key].match_blocks, matches[B.key].match_blocks) == (2, 0)
    p.kv_reset(A.key, "a gap")
    assert produce(p, tokens_cycle(prompt))[A.key].match_blocks == 0


def test_a_cpu_tier_counts_less_and_is_truncated_to_whole_blocks():
    p = testing.make(PrecisePrefixCacheProducer)
    p.kv_batch(A.key, "m", batch(stored([1, 2, 3], list(range(12)), medium="CPU")))
    assert produce(p, tokens_cycle(list(range(12))))[A.key] == PrefixMatch(2, 3, BS)  # 2.4


def test_a_server_without_events_gets_zero_of_the_default_block_size():
    p = testing.make(PrecisePrefixCacheProducer, tokenProcessorConfig={"blockSizeTokens": 8})
    assert produce(p, tokens_cycle(list(range(20))), [A]) == {A.key: PrefixMatch(0, 2, 8)}


def test_salted_and_lora_requests_match_only_their_own_blocks():
    p = testing.make(PrecisePrefixCacheProducer)
    prompt = list(range(8))
    p.kv_batch(A.key, "m", batch(stored([1, 2], prompt, cache_salt="tenant-a")))
    p.kv_batch(B.key, "m", batch(stored([1, 2], prompt, lora_name="sql")))
    salted = produce(p, tokens_cycle(prompt), cache_salt="tenant-a")
    assert (salted[A.key].match_blocks, salted[B.key].match_blocks) == (2, 0)
    assert produce(p, tokens_cycle(prompt))[A.key].match_blocks == 0
    lora = produce(p, tokens_cycle(prompt), model="sql")
    assert (lora[A.key].match_blocks, lora[B.key].match_blocks) == (0, 2)


def test_estimated_tokens_match_nothing_and_say_so(caplog: pytest.LogCaptureFixture):
    p = testing.make(PrecisePrefixCacheProducer)
    p.kv_batch(A.key, "m", batch(stored([1], [0, 0, 0, 0])))
    matches = produce(p, tokens_cycle(b"\x00" * 16, exact=False))  # type: ignore[arg-type]
    assert matches[A.key].match_blocks == 0
    assert "the request's tokens are estimated" in caplog.text


def test_speculation_lasts_its_ttl():
    clock = testing.FakeClock()
    p = PrecisePrefixCacheProducer(
        "precise",
        msgspec.convert(
            {
                "speculativeIndexing": True,
                "speculativeTTL": "500ms",
                "tokenProcessorConfig": {"blockSizeTokens": BS},
            },
            PrecisePrefixCacheProducer.Params,
        ),
        clock=clock,
    )
    prompt = list(range(8))
    cycle = tokens_cycle(prompt)
    produce(p, cycle)
    p.pre_request(cycle, request(), testing.result(default=[B]))
    # The request just sent to B: believed there until its events would have come.
    assert produce(p, tokens_cycle(prompt))[B.key].match_blocks == 2
    assert p.statistics()["speculative"] == 2
    clock.advance(0.6)
    assert produce(p, tokens_cycle(prompt))[B.key].match_blocks == 0
    assert p.statistics()["speculative"] == 0


def test_without_speculation_routing_records_nothing():
    p = testing.make(PrecisePrefixCacheProducer)
    cycle = tokens_cycle(list(range(8)))
    produce(p, cycle)
    p.pre_request(cycle, request(), testing.result(default=[B]))
    assert produce(p, tokens_cycle(list(range(8))))[B.key].match_blocks == 0
    assert p.statistics()["requests"] == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"tokenProcessorConfig": {"hashAlgorithm": "xxhash"}}, "hashAlgorithm"),
        ({"indexerConfig": {"tokenizersPoolConfig": {}}}, "configure a token-producer"),
        ({"indexerConfig": {"kvBlockIndexConfig": {"redisConfig": {}}}}, "Redis"),
        ({"indexerConfig": {"kvBlockIndexConfig": {"inMemoryConfig": {"size": 0}}}}, "size"),
        ({"kvEventsConfig": {"engineType": "sglang"}}, "engineType"),
        ({"kvEventsConfig": {"zmqEndpoint": "http://x"}}, "zmqEndpoint"),
        ({"kvEventsConfig": {"podDiscoveryConfig": {"socketPort": 0}}}, "socketPort"),
        ({"speculativeTTL": "soon"}, "invalid speculativeTTL"),
        ({"speculativeTtl": "2s"}, "unknown field"),
    ],
)
def test_parameter_errors(raw, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, PrecisePrefixCacheProducer.Params)


def test_llmds_sample_parameters_are_accepted():
    p = testing.make(
        PrecisePrefixCacheProducer,
        tokenProcessorConfig={"blockSize": 64, "hashSeed": "42", "hashAlgorithm": "xxh64"},
        indexerConfig={
            "kvBlockIndexConfig": {
                "inMemoryConfig": {"size": 1000, "podCacheSize": 10},
                "enableMetrics": True,
                "metricsLoggingInterval": 60000000000,
            },
            "kvCacheBackendConfigs": [{"name": "gpu", "weight": 1.0}],
        },
        kvEventsConfig={
            "zmqEndpoint": "tcp://0.0.0.0:5557",
            "topicFilter": "kv@",
            "concurrency": 8,
        },
    )
    assert p.block_size == 64 and p.index.capacity == 1000
    assert p.kv_subscription.bind == "tcp://0.0.0.0:5557" and p.kv_subscription.pod_port == 5557


@pytest.mark.parametrize(
    ("text", "seconds"), [("2s", 2.0), ("500ms", 0.5), ("1m30s", 90.0), ("1.5h", 5400.0)]
)
def test_go_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


# ---------------------------------------------------------------------------- the old scorer


def test_the_old_scorer_runs_its_own_producer():
    pipeline = testing.pipeline(
        "plugins: [{type: precise-prefix-cache-scorer}]\n"
        "schedulingProfiles:\n- name: default\n"
        "  plugins: [{pluginRef: precise-prefix-cache-scorer}]\n"
    )
    scorer = pipeline.plugins["precise-prefix-cache-scorer"].instance
    assert isinstance(scorer, PrecisePrefixCacheScorer) and isinstance(scorer, Scorer)
    assert scorer.producer is not None and isinstance(scorer, KVEventSink)
    assert "token-producer" in pipeline.plugins  # what it consumes
    prompt = list(range(16))
    scorer.kv_batch(A.key, "m", batch(stored([1, 2], prompt[:8])))
    cycle = tokens_cycle(prompt)
    scorer.produce(cycle, request(), [A, B])
    assert testing.score(scorer, [A, B], cycle=cycle) == [0.5, 0.0]


def test_the_old_scorer_scores_the_configurations_producer():
    pipeline = testing.pipeline(
        "plugins:\n- type: precise-prefix-cache-producer\n  name: events\n"
        "- type: precise-prefix-cache-scorer\n"
        "schedulingProfiles:\n- name: default\n"
        "  plugins: [{pluginRef: precise-prefix-cache-scorer}]\n"
    )
    scorer = pipeline.plugins["precise-prefix-cache-scorer"].instance
    producer = pipeline.plugins["events"].instance
    assert scorer.producer is None and scorer.key == producer.key
    assert scorer.kv_subscription.pod_port is None  # it listens to nothing itself
    prompt = list(range(8))
    producer.kv_batch(A.key, "m", batch(stored([1, 2], prompt)))
    cycle = tokens_cycle(prompt)
    producer.produce(cycle, request(), [A, B])
    scorer.produce(cycle, request(), [A, B])  # nothing of its own
    assert testing.score(scorer, [A, B], cycle=cycle) == [1.0, 0.0]


def test_the_old_scorer_cannot_choose_between_two_producers():
    with pytest.raises(ConfigError, match="cannot tell which"):
        testing.pipeline(
            "plugins:\n- {type: precise-prefix-cache-producer, name: one}\n"
            "- {type: precise-prefix-cache-producer, name: two}\n"
            "- type: precise-prefix-cache-scorer\n"
        )


# ---------------------------------------------------------------------------- local tokens


def test_the_token_producer_tokenizes_with_the_models_tokenizer():
    producer = testing.make(TokenProducer, local={"path": str(MODEL)})
    cycle = CycleState()
    body = msgspec.json.encode({"model": "tiny", "prompt": "The quick brown fox"})
    producer.produce(cycle, parse_request("/v1/completions", {}, body, "r"), [A])
    tokens = cycle.get(TOKENIZED_PROMPT)
    assert tokens is not None and tokens.exact
    assert tokens.prompts == ([1771, 223, 416, 274, 77, 315, 283, 89, 80, 287, 81, 90],)
    assert producer.statistics()["backend"] == "local"


def test_a_missing_tokenizer_directory_is_a_configuration_error(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"no tokenizer\.json"):
        testing.make(TokenProducer, local={"path": str(tmp_path)})


async def test_a_local_token_producer_waits_and_its_timeout_is_checked():
    local = f"{{path: '{MODEL}', timeout: 750ms}}"
    pipeline = testing.pipeline(
        f"plugins: [{{type: token-producer, parameters: {{local: {local}}}}}]\n"
    )
    assert pipeline.awaiting == frozenset({"token-producer"})
    producer = pipeline.plugins["token-producer"].instance
    assert producer.produce_timeout_s == pytest.approx(0.75)
    cycle = CycleState()
    body = msgspec.json.encode({"model": "tiny", "prompt": "The quick brown fox"})
    await producer.produce_async(cycle, parse_request("/v1/completions", {}, body, "r"), [A])
    assert cycle.get(TOKENIZED_PROMPT).token_count == 12  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="timeout must be a positive duration"):
        testing.make(TokenProducer, local={"path": str(MODEL), "timeout": "soon"})
