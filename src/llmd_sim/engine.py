"""The simulated inference engine: queueing, batching, KV blocks and token pacing, in virtual time.

Theory of operation
-------------------
The engine is a discrete-event model with no clock and no I/O. Callers pass the current time to
every method; the engine calls each sequence's listener synchronously when the sequence produces a
token or finishes, and tells the caller when it next needs to run (``next_deadline``). The HTTP
server arms one timer per engine at that deadline; tests and cluster simulations drive it with a
fake clock. No task or coroutine exists per request, so a streamed token costs a heap operation
and a listener call.

A request with ``n`` choices is ``n`` sequences (vLLM's parallel sampling fans out the same way).
Each sequence goes WAITING -> PREFILL -> DECODE -> FINISHED:

- WAITING: a FIFO queue. The head is admitted while fewer than ``max_num_seqs`` run and the KV
  cache can hold its blocks; a head that does not fit blocks the queue (vLLM's FCFS policy). A
  sequence whose LoRA adapter cannot run (``max_loras`` other adapters busy) is skipped, not
  blocking, and counted as waiting for the "deferred" reason.
- PREFILL: on admission the cached prefix of the prompt is pinned and the rest allocated; the first
  token comes after ``LatencyModel.ttft`` of the uncached tokens, and the prompt's full blocks are
  committed to the cache then (not before: a twin request admitted meanwhile does not hit them).
- DECODE: one token per ``LatencyModel.itl``; each block that fills up is committed, so decoded
  text is cached as vLLM caches it. A sequence that needs a new block when the cache is full
  preempts the most recently admitted running sequence (possibly itself), which returns to the
  head of the queue, keeps what it has streamed, and later recomputes its tokens (mostly cache
  hits) before continuing.

Time stamps go to an ``EngineObserver`` (the metrics), with vLLM's definitions: TTFT and E2E are
measured from arrival, queue time from arrival to first admission.
"""

from __future__ import annotations

import enum
import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from llmd_sim.kvcache import KVCache
from llmd_sim.latency import LatencyModel

if TYPE_CHECKING:
    from collections.abc import Iterable

    from llmd_sim.config import ServerConfig
    from llmd_sim.generation import FinishReason, OutputPlan

__all__ = [
    "Engine",
    "EngineObserver",
    "EngineStats",
    "Prompt",
    "QueueFull",
    "Seq",
    "SeqListener",
    "SeqState",
]


class QueueFull(Exception):
    """The waiting queue is at its bound; the request is not accepted."""


class SeqState(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    FINISHED = "finished"


class SeqListener(Protocol):
    def on_token(self, seq: Seq, now: float) -> None:
        """``seq.generated`` tokens of ``seq.plan`` exist now (the newest one just arrived)."""

    def on_finish(self, seq: Seq, now: float) -> None:
        """``seq`` ended with ``seq.finish_reason``. Not called for aborted sequences."""


class EngineObserver(Protocol):
    def on_admitted(self, seq: Seq, now: float) -> None: ...
    def on_first_token(self, seq: Seq, now: float) -> None: ...
    def on_token_gap(self, seconds: float) -> None: ...
    def on_finished(self, seq: Seq, now: float) -> None: ...


class _NullObserver:
    def on_admitted(self, seq: Seq, now: float) -> None:
        pass

    def on_first_token(self, seq: Seq, now: float) -> None:
        pass

    def on_token_gap(self, seconds: float) -> None:
        pass

    def on_finished(self, seq: Seq, now: float) -> None:
        pass


@dataclass(eq=False, slots=True)
class Prompt:
    """Prompt tokens shared by the sequences of one request."""

    token_ids: list[int]
    lora: str | None = None
    hashes: list[int] | None = None  # full-block hash chain, computed once by the engine


@dataclass(eq=False, slots=True)
class Seq:
    """One choice of one request, and its progress through the engine."""

    prompt: Prompt
    plan: OutputPlan
    listener: SeqListener
    arrival: float
    index: int = 0
    max_tokens: int = 0
    state: SeqState = SeqState.WAITING
    generated: int = 0
    cached_tokens: int = 0
    preemptions: int = 0
    finish_reason: FinishReason | None = None
    admitted_at: float | None = None
    first_token_at: float | None = None
    last_token_at: float = 0.0
    # KV bookkeeping: committed block hashes held (chain order), private blocks, full blocks
    # known (hashed) so far, and a counter that invalidates stale timer entries.
    chain: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    private: int = 0
    committed: int = 0
    epoch: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.prompt.token_ids) + self.generated

    def tokens(self, lo: int, hi: int) -> list[int]:
        """Token ids ``lo:hi`` of prompt followed by output."""
        p = self.prompt.token_ids
        n = len(p)
        if hi <= n:
            return p[lo:hi]
        out = list(self.plan.token_ids[max(0, lo - n) : hi - n])
        return p[lo:n] + out if lo < n else out


@dataclass(frozen=True, slots=True)
class EngineStats:
    running: int
    waiting: int
    waiting_deferred: int
    kv_usage: float
    kv_blocks_used: int
    kv_blocks_cached: int
    prefix_queries: int
    prefix_hits: int
    prompt_tokens: int
    generation_tokens: int
    preemptions: int
    finished: dict[str, int]
    running_loras: tuple[str, ...]
    waiting_loras: tuple[str, ...]


class Engine:
    def __init__(
        self,
        config: ServerConfig,
        *,
        rng: random.Random | None = None,
        observer: EngineObserver | None = None,
    ) -> None:
        self.config = config
        self.cache = KVCache(config.cache)
        self.latency = LatencyModel(config.latency, config.max_num_seqs)
        self.rng = rng or random.Random(config.seed)
        self.observer: EngineObserver = observer or _NullObserver()
        self.waiting: deque[Seq] = deque()
        self.running: dict[Seq, None] = {}  # insertion order = admission order
        self._loras: dict[str, int] = {}
        self._timers: list[tuple[float, int, Seq, int]] = []
        self._tick = 0
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.preemptions = 0
        self.finished: dict[str, int] = {"stop": 0, "length": 0, "abort": 0, "error": 0}

    # ------------------------------------------------------------------ public API

    def submit(self, seqs: Iterable[Seq], now: float) -> None:
        """Queue the sequences of one request. Raises QueueFull if the queue bound is reached."""
        seqs = list(seqs)
        bound = self.config.max_waiting
        if bound and len(self.waiting) + len(seqs) > bound:
            raise QueueFull(f"the waiting queue is full ({len(self.waiting)} of {bound})")
        self.waiting.extend(seqs)
        self._schedule(now)

    def abort(self, seq: Seq, now: float) -> None:
        """The client went away: free everything ``seq`` holds. Idempotent."""
        if seq.state is SeqState.FINISHED:
            return
        if seq.state is SeqState.WAITING:
            self.waiting.remove(seq)
        else:
            self._stop_running(seq)
        seq.state = SeqState.FINISHED
        seq.finish_reason = "abort"
        seq.epoch += 1
        self.finished["abort"] += 1
        self.observer.on_finished(seq, now)
        self._schedule(now)

    def advance(self, now: float) -> int:
        """Produce every token that is due at ``now``, then admit what now fits.

        Returns the number of tokens produced (an engine step's size, for the metrics)."""
        before = self.generation_tokens
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, seq, epoch = heapq.heappop(timers)
            if epoch != seq.epoch:
                continue  # the sequence was preempted or aborted since
            if seq.state is SeqState.PREFILL:
                self._prefill_done(seq, now, deadline)
            else:
                self._decode(seq, now, deadline)
        self._schedule(now)
        return self.generation_tokens - before

    def next_deadline(self) -> float | None:
        timers = self._timers
        while timers and timers[0][3] != timers[0][2].epoch:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def reset_prefix_cache(self) -> bool:
        return self.cache.reset()

    def statistics(self) -> EngineStats:
        deferred = [
            s.prompt.lora
            for s in self.waiting
            if s.prompt.lora and not self._lora_fits(s.prompt.lora)
        ]
        waiting_loras = sorted({s.prompt.lora for s in self.waiting if s.prompt.lora})
        return EngineStats(
            running=len(self.running),
            waiting=len(self.waiting),
            waiting_deferred=len(deferred),
            kv_usage=self.cache.usage,
            kv_blocks_used=self.cache.used,
            kv_blocks_cached=self.cache.cached,
            prefix_queries=self.prefix_queries,
            prefix_hits=self.prefix_hits,
            prompt_tokens=self.prompt_tokens,
            generation_tokens=self.generation_tokens,
            preemptions=self.preemptions,
            finished=dict(self.finished),
            running_loras=tuple(sorted(self._loras)),
            waiting_loras=tuple(waiting_loras),
        )

    # ------------------------------------------------------------------ scheduling

    def _lora_fits(self, lora: str) -> bool:
        return lora in self._loras or len(self._loras) < self.config.max_loras

    def _schedule(self, now: float) -> None:
        waiting = self.waiting
        if not waiting:
            return
        skipped: list[Seq] = []
        limit = self.config.max_num_seqs
        while waiting and len(self.running) < limit:
            seq = waiting[0]
            lora = seq.prompt.lora
            if lora is not None and not self._lora_fits(lora):
                skipped.append(waiting.popleft())
                continue
            if not self._admit(seq, now):
                break  # FCFS: the head waits for KV space and so does everyone behind it
            waiting.popleft()
        if skipped:
            waiting.extendleft(reversed(skipped))

    def _admit(self, seq: Seq, now: float) -> bool:
        cache = self.cache
        prompt = seq.prompt
        fresh = seq.generated == 0
        n_tokens = seq.num_tokens
        if cache.prefix_caching:
            if prompt.hashes is None:
                prompt.hashes = cache.hash_blocks(prompt.token_ids, prompt.lora)
            if not seq.chain:
                seq.chain = list(prompt.hashes)
            hits = cache.match(seq.chain, n_tokens)
        else:
            hits = 0
        bs = cache.block_size
        n_blocks = -(-n_tokens // bs)
        if not cache.allocate(seq.chain[:hits], n_blocks - hits):
            return False
        seq.held = seq.chain[:hits]
        seq.private = n_blocks - hits
        seq.committed = hits
        self.running[seq] = None
        if prompt.lora is not None:
            self._loras[prompt.lora] = self._loras.get(prompt.lora, 0) + 1
        if fresh:
            seq.cached_tokens = hits * bs
            self.prefix_queries += n_tokens
            self.prefix_hits += hits * bs
            self.prompt_tokens += n_tokens
            if seq.admitted_at is None:
                seq.admitted_at = now
                self.observer.on_admitted(seq, now)
        seq.state = SeqState.PREFILL
        delay = self.latency.ttft(n_tokens - hits * bs, len(self.running), self.rng)
        self._arm(seq, now + delay)
        return True

    def _arm(self, seq: Seq, deadline: float) -> None:
        self._tick += 1
        heapq.heappush(self._timers, (deadline, self._tick, seq, seq.epoch))

    def _next_deadline(self, seq: Seq, now: float, deadline: float) -> float:
        gap = self.latency.itl(len(self.running), self.rng)
        nxt = deadline + gap
        return nxt if nxt > now else now + gap

    # ------------------------------------------------------------------ token production

    def _commit_full_blocks(self, seq: Seq, computed: int) -> None:
        """Commit the blocks that ``computed`` tokens have filled since the last commit."""
        cache = self.cache
        bs = cache.block_size
        full = computed // bs
        if full <= seq.committed:
            return
        if cache.prefix_caching:
            start = seq.committed
            if full > len(seq.chain):
                parent = seq.chain[-1] if seq.chain else None
                lo = len(seq.chain) * bs
                seq.chain.extend(
                    cache.hash_blocks(seq.tokens(lo, full * bs), seq.prompt.lora, parent=parent)
                )
            parent = seq.chain[start - 1] if start else None
            hashes = seq.chain[start:full]
            tokens = seq.tokens(start * bs, full * bs)
            held = cache.commit(hashes, parent, tokens, 0, seq.prompt.lora)
            seq.held.extend(held)
            seq.private -= len(held)
        seq.committed = full

    def _prefill_done(self, seq: Seq, now: float, deadline: float) -> None:
        self._commit_full_blocks(seq, seq.num_tokens)
        first = seq.generated == 0
        if first:
            seq.first_token_at = now
            self.observer.on_first_token(seq, now)
        seq.state = SeqState.DECODE
        self._emit(seq, now, deadline, first=first)

    def _decode(self, seq: Seq, now: float, deadline: float) -> None:
        # The token about to be produced needs a slot; find a block for it if the last is full.
        need = -(-(seq.num_tokens + 1) // self.cache.block_size)
        while len(seq.held) + seq.private < need:
            if self.cache.allocate((), 1):
                seq.private += 1
                continue
            victim = next(reversed(self.running))
            self._preempt(victim, now)
            if victim is seq:
                return
        self._commit_full_blocks(seq, seq.num_tokens)
        self._emit(seq, now, deadline, first=False)

    def _emit(self, seq: Seq, now: float, deadline: float, *, first: bool) -> None:
        seq.generated += 1
        self.generation_tokens += 1
        if not first:
            self.observer.on_token_gap(now - seq.last_token_at)
        seq.last_token_at = now
        seq.listener.on_token(seq, now)
        if seq.state is SeqState.FINISHED:
            return  # its listener aborted it (client gone) while handling the token
        if seq.generated >= len(seq.plan):
            self._finish(seq, now, seq.plan.finish_reason)
        else:
            self._arm(seq, self._next_deadline(seq, now, deadline))

    def _finish(self, seq: Seq, now: float, reason: FinishReason) -> None:
        self._stop_running(seq)
        seq.state = SeqState.FINISHED
        seq.finish_reason = reason
        seq.epoch += 1
        self.finished[reason] += 1
        self.observer.on_finished(seq, now)
        seq.listener.on_finish(seq, now)

    def _stop_running(self, seq: Seq) -> None:
        del self.running[seq]
        self.cache.release(seq.held, seq.private)
        seq.held = []
        seq.private = 0
        lora = seq.prompt.lora
        if lora is not None:
            left = self._loras[lora] - 1
            if left:
                self._loras[lora] = left
            else:
                del self._loras[lora]

    def _preempt(self, seq: Seq, now: float) -> None:
        self._stop_running(seq)
        seq.state = SeqState.WAITING
        seq.epoch += 1
        seq.committed = 0
        self.preemptions += 1
        seq.preemptions += 1
        self.waiting.appendleft(seq)
