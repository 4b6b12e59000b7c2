"""The engine in virtual time: latency under load, queueing, prefix hits, KV pressure, LoRA."""

from __future__ import annotations

import itertools
import random

import pytest

from llmd_sim.config import ServerConfig, build_fleet
from llmd_sim.engine import Engine, Prompt, QueueFull, Seq, SeqState
from llmd_sim.generation import SamplingSpec, plan_output
from llmd_sim.kvcache import BlockStored
from llmd_sim.tokenizer import Tokenizer

TOK = Tokenizer()


def config(**options: object) -> ServerConfig:
    base: dict[str, object] = {
        "preset": "tiny",
        "max-model-len": 512,
        "block-size": 4,
        "kv-cache-size": 1024,
        "prefill-overhead": "10ms",
        "prefill-time-per-token": "1ms",
        "inter-token-latency": "5ms",
        "time-factor-under-load": 1.0,
        "max-num-seqs": 8,
    }
    base.update(options)
    return build_fleet(overrides=base, base_port=0).servers[0]


class Recorder:
    """A SeqListener that records token and finish times."""

    def __init__(self) -> None:
        self.times: dict[int, list[float]] = {}
        self.done: dict[int, float] = {}

    def on_token(self, seq: Seq, now: float) -> None:
        self.times.setdefault(id(seq), []).append(now)

    def on_finish(self, seq: Seq, now: float) -> None:
        self.done[id(seq)] = now


def seq(
    rec: Recorder, prompt: list[int], out: int, now: float = 0.0, lora: str | None = None
) -> Seq:
    plan = plan_output(
        SamplingSpec(max_tokens=out, ignore_eos=True),
        rng=random.Random(1),
        tokenizer=TOK,
        mean_len=10,
    )
    return Seq(Prompt(prompt, lora), plan, rec, now, max_tokens=out)


def run(engine: Engine, until: float = float("inf")) -> float:
    """Advance through every deadline up to ``until``; return the time reached."""
    now = 0.0
    while (deadline := engine.next_deadline()) is not None and deadline <= until:
        now = deadline
        engine.advance(now)
    return now


def test_alone_ttft_and_itl_are_the_configured_values():
    engine, rec = Engine(config()), Recorder()
    s = seq(rec, list(range(300, 340)), out=5)
    engine.submit([s], 0.0)
    run(engine)
    times = rec.times[id(s)]
    assert times[0] == pytest.approx(0.010 + 40 * 0.001)
    assert [b - a for a, b in itertools.pairwise(times)] == pytest.approx([0.005] * 4)
    assert rec.done[id(s)] == pytest.approx(times[-1])
    assert s.state is SeqState.FINISHED and s.finish_reason == "length"


def test_ttft_grows_with_load_as_configured():
    """With factor 3 and 5 slots, the k-th concurrent prefill is stretched by 1 + 2(k-1)/4."""
    engine, rec = Engine(config(**{"time-factor-under-load": 3.0, "max-num-seqs": 5})), Recorder()
    seqs = [seq(rec, list(range(1000 * k, 1000 * k + 20)), out=1) for k in range(5)]
    engine.submit(seqs, 0.0)
    run(engine)
    base = 0.010 + 20 * 0.001
    for k, s in enumerate(seqs, start=1):
        assert rec.times[id(s)][0] == pytest.approx(base * (1 + 2 * (k - 1) / 4))


def test_itl_is_stretched_by_the_running_batch():
    engine, rec = Engine(config(**{"time-factor-under-load": 2.0, "max-num-seqs": 3})), Recorder()
    a, b, c = (seq(rec, list(range(500 + 10 * i, 510 + 10 * i)), out=3) for i in range(3))
    engine.submit([a, b, c], 0.0)
    run(engine)
    gaps = rec.times[id(c)][1] - rec.times[id(c)][0]
    assert gaps == pytest.approx(0.005 * 2.0)  # three running: the full factor


def test_waiting_queue_is_fifo_and_bounded_by_max_num_seqs():
    engine, rec = Engine(config(**{"max-num-seqs": 2})), Recorder()
    seqs = [seq(rec, list(range(100 * k, 100 * k + 8)), out=2) for k in range(4)]
    engine.submit(seqs, 0.0)
    stats = engine.statistics()
    assert (stats.running, stats.waiting) == (2, 2)
    run(engine)
    first_done = min(rec.done[id(seqs[0])], rec.done[id(seqs[1])])
    # The third starts when a slot frees, and before the fourth.
    assert seqs[2].admitted_at == pytest.approx(first_done)
    assert seqs[2].admitted_at is not None and seqs[3].admitted_at is not None
    assert seqs[3].admitted_at >= seqs[2].admitted_at
    assert engine.statistics().finished["length"] == 4


def test_queue_bound_rejects_whole_requests():
    engine, rec = Engine(config(**{"max-num-seqs": 1, "max-waiting-queue-length": 2})), Recorder()
    engine.submit([seq(rec, [1, 2, 3], out=50)], 0.0)
    engine.submit([seq(rec, [1, 2, 3], out=5), seq(rec, [1, 2, 3], out=5)], 0.0)
    with pytest.raises(QueueFull):
        engine.submit([seq(rec, [4, 5, 6], out=5)], 0.0)
    assert engine.statistics().waiting == 2


def test_a_repeated_prompt_skips_its_cached_prefill():
    engine, rec = Engine(config()), Recorder()
    prompt = list(range(1000, 1041))  # 41 tokens: 10 full blocks, all but the last token hit
    first = seq(rec, prompt, out=2)
    engine.submit([first], 0.0)
    t = run(engine)
    second = seq(rec, prompt, out=2, now=t)
    engine.submit([second], t)
    run(engine)
    assert first.cached_tokens == 0 and second.cached_tokens == 40
    assert rec.times[id(second)][0] - t == pytest.approx(0.010 + 1 * 0.001)
    stats = engine.statistics()
    assert (stats.prefix_queries, stats.prefix_hits) == (82, 40)


def test_twins_admitted_together_do_not_hit_each_other():
    """Prompt blocks are cached when prefill completes, not when it starts."""
    engine, rec = Engine(config()), Recorder()
    prompt = list(range(2000, 2041))
    a, b = seq(rec, prompt, out=1), seq(rec, prompt, out=1)
    engine.submit([a, b], 0.0)
    run(engine)
    assert a.cached_tokens == b.cached_tokens == 0


def test_prompt_and_decode_blocks_are_cached():
    engine, rec = Engine(config()), Recorder()
    s = seq(rec, list(range(3000, 3010)), out=14)
    engine.submit([s], 0.0)
    run(engine)
    stored = [
        h for e in engine.cache.take_events() if isinstance(e, BlockStored) for h in e.block_hashes
    ]
    # 10 prompt + 14 output tokens; the last token's KV is never computed: (10 + 13) // 4 blocks.
    assert len(stored) == 5 == engine.cache.cached
    all_tokens = [*s.prompt.token_ids, *s.plan.token_ids]
    assert stored == engine.cache.hash_blocks(all_tokens[:20], None)


def test_head_of_line_waits_for_kv_space():
    cfg = config(**{"kv-cache-size": 130, "max-model-len": 512})
    engine, rec = Engine(cfg), Recorder()
    big = seq(rec, list(range(5000, 5400)), out=100)  # 100 prompt blocks, grows to 125
    engine.submit([big], 0.0)
    follower = seq(rec, list(range(6000, 6200)), out=1)  # needs 50 blocks: must wait
    small = seq(rec, [1, 2, 3], out=1)  # would fit, but FCFS holds it back
    engine.submit([follower, small], 0.0)
    stats = engine.statistics()
    assert (stats.running, stats.waiting) == (1, 2)
    run(engine)
    assert follower.admitted_at is not None and big.first_token_at is not None
    assert follower.admitted_at >= big.first_token_at
    assert small.admitted_at is not None and small.admitted_at >= follower.admitted_at


def test_preemption_recomputes_and_keeps_the_stream_whole():
    cfg = config(**{"kv-cache-size": 130, "max-model-len": 512, "max-num-seqs": 4})
    engine, rec = Engine(cfg), Recorder()
    a = seq(rec, list(range(7000, 7200)), out=120)  # 50 blocks growing to 80
    b = seq(rec, list(range(8000, 8200)), out=120)
    engine.submit([a, b], 0.0)
    run(engine)
    assert engine.statistics().preemptions >= 1
    for s in (a, b):
        times = rec.times[id(s)]
        assert len(times) == 120 and times == sorted(times)
        assert s.state is SeqState.FINISHED and s.finish_reason == "length"
    assert engine.cache.used == 0
    assert max(a.preemptions, b.preemptions) >= 1


def test_lora_requests_beyond_max_loras_wait_without_blocking_others():
    cfg = config(**{"lora-modules": "a,b", "max-loras": 1})
    engine, rec = Engine(cfg), Recorder()
    on_a = seq(rec, [1, 2, 3], out=10, lora="a")
    on_b = seq(rec, [1, 2, 3], out=2, lora="b")
    base = seq(rec, [1, 2, 3], out=2)
    engine.submit([on_a, on_b, base], 0.0)
    stats = engine.statistics()
    assert stats.running == 2 and stats.waiting == 1 and stats.waiting_deferred == 1
    assert stats.running_loras == ("a",) and stats.waiting_loras == ("b",)
    run(engine)
    assert on_b.admitted_at is not None and on_b.admitted_at >= rec.done[id(on_a)]
    assert base.admitted_at == 0.0


def test_abort_frees_slot_and_blocks():
    engine, rec = Engine(config(**{"max-num-seqs": 1})), Recorder()
    running = seq(rec, list(range(100, 140)), out=50)
    waiting = seq(rec, list(range(200, 240)), out=5)
    engine.submit([running, waiting], 0.0)
    run(engine, until=0.1)
    assert engine.cache.used > 0
    engine.abort(running, 0.1)
    engine.abort(running, 0.1)  # idempotent
    assert running.finish_reason == "abort" and id(running) not in rec.done
    assert waiting.admitted_at == pytest.approx(0.1)
    engine.abort(waiting, 0.1)
    assert engine.statistics().running == 0 and engine.cache.used == 0
    assert engine.statistics().finished["abort"] == 2
    assert engine.next_deadline() is None


def test_choices_of_one_request_are_separate_sequences():
    engine, rec = Engine(config()), Recorder()
    shared = Prompt(list(range(10, 30)))
    plans = [
        plan_output(
            SamplingSpec(max_tokens=3, ignore_eos=True),
            rng=random.Random(i),
            tokenizer=TOK,
            mean_len=3,
        )
        for i in range(3)
    ]
    seqs = [Seq(shared, p, rec, 0.0, index=i, max_tokens=3) for i, p in enumerate(plans)]
    engine.submit(seqs, 0.0)
    assert engine.statistics().running == 3
    run(engine)
    assert all(len(rec.times[id(s)]) == 3 for s in seqs)
    assert engine.statistics().prompt_tokens == 60
