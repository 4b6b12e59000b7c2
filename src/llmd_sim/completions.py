"""One generation request from HTTP to tokens and back: sequences in, a response out.

``start_generation`` turns a validated request into engine sequences (one per choice) with their
planned answers. ``Exchange`` is their listener: it writes the stream chunk by chunk as the
engine produces tokens, or the whole response when the last sequence finishes, and aborts the
sequences when the client goes away or a fault cuts the stream.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Protocol

from llmd_sim.engine import Prompt, Seq
from llmd_sim.generation import plan_output
from llmd_sim.openai import (
    Choice,
    ChunkEncoder,
    GenerationRequest,
    chat_response,
    completion_response,
)
from llmd_sim.tokenizer import EOS, EOT, Tokenizer

if TYPE_CHECKING:
    from llmd_sim.http import HttpRequest, Responder

__all__ = ["Exchange", "ExchangeHost", "build_sequences"]


class ExchangeHost(Protocol):
    """What an exchange needs from its server."""

    def now(self) -> float: ...
    def abort(self, seqs: list[Seq]) -> None: ...
    def exchange_done(self, exchange: Exchange) -> None: ...


class Exchange:
    """The listener of a request's sequences; writes its HTTP response."""

    __slots__ = (
        "_cut_after",
        "_encoder",
        "_finished",
        "_headers",
        "_host",
        "_prompt_tokens",
        "_roles_sent",
        "_show_cached",
        "_written",
        "gen",
        "request",
        "request_id",
        "responder",
        "response_bytes",
        "seqs",
    )

    def __init__(
        self,
        host: ExchangeHost,
        gen: GenerationRequest,
        request: HttpRequest,
        responder: Responder,
        request_id: str,
        *,
        cut_after: int | None,
        show_cached: bool,
        headers: list[tuple[str, str]],
    ) -> None:
        self._host = host
        self.gen = gen
        self.request = request
        self.responder = responder
        self.request_id = request_id
        self.seqs: list[Seq] = []
        self.response_bytes = 0
        self._finished = 0
        self._written = 0
        self._roles_sent = False
        self._cut_after = cut_after
        self._show_cached = show_cached
        self._headers = headers
        self._prompt_tokens = sum(len(p.token_ids) for p in gen.prompts)
        self._encoder = ChunkEncoder(gen.kind, request_id, int(time.time()), gen.model)

    def begin(self) -> None:
        """The engine accepted the sequences: send the stream's headers (if streaming)."""
        if self.gen.stream:
            self.responder.start_stream(headers=self._headers)
        self.responder.on_close = self.client_gone

    def _cached(self) -> int | None:
        if not self._show_cached:
            return None
        return sum(s.cached_tokens for s in self.seqs[:: self.gen.n])

    def _roles(self) -> bytes:
        """vLLM sends the role chunk of every choice with the first output of the request."""
        self._roles_sent = True
        usage = None
        out = []
        for seq in self.seqs:
            if self.gen.continuous_usage:
                usage = ChunkEncoder.running_usage(len(seq.prompt.token_ids), 0)
            out.append(self._encoder.role(seq.index, usage))
        return b"".join(out)

    def on_token(self, seq: Seq, now: float) -> None:
        if not self.gen.stream:
            return
        gen = self.gen
        plan = seq.plan
        last = seq.generated == len(plan)
        delta = plan.deltas[seq.generated - 1]
        out = self._roles() if gen.kind == "chat" and not self._roles_sent else b""
        if delta or last:
            usage = None
            if gen.continuous_usage:
                usage = ChunkEncoder.running_usage(len(seq.prompt.token_ids), seq.generated)
            if last:
                out += self._encoder.token(
                    seq.index,
                    delta,
                    plan.finish_reason,
                    plan.stop_reason,
                    usage,
                    fingerprint=gen.kind == "chat" and not gen.include_usage,
                )
            else:
                out += self._encoder.token(seq.index, delta, usage=usage)
        if out:
            self.responder.write(out)
            self.response_bytes += len(out)
        self._written += 1
        if self._cut_after is not None and self._written >= self._cut_after:
            self.responder.abort()
            self.client_gone()

    def on_finish(self, seq: Seq, now: float) -> None:
        self._finished += 1
        if self._finished < len(self.seqs):
            return
        gen = self.gen
        if gen.stream:
            tail = b""
            if gen.include_usage:
                completion = sum(s.generated for s in self.seqs)
                tail = self._encoder.usage(self._prompt_tokens, completion, self._cached())
            tail += ChunkEncoder.DONE
            self.responder.write(tail)
            self.response_bytes += len(tail)
            self.responder.end_stream()
        else:
            choices = [Choice(s.index, s.plan) for s in self.seqs]
            render = chat_response if gen.kind == "chat" else completion_response
            body = render(
                self.request_id,
                int(time.time()),
                gen.model,
                choices,
                self._prompt_tokens,
                self._cached(),
            )
            self.responder.send(200, body, headers=self._headers)
            self.response_bytes = len(body)
        self._host.exchange_done(self)

    def client_gone(self) -> None:
        """The client disconnected or the stream was cut: stop generating."""
        self._host.abort(self.seqs)


def build_sequences(
    gen: GenerationRequest,
    exchange: Exchange,
    tokenizer: Tokenizer,
    *,
    now: float,
    rng: random.Random,
    mean_len: int,
    echo: bool,
) -> list[Seq]:
    """One sequence per choice, each with its planned answer. Choices of one prompt share the
    prompt's tokens (and hence its hash chain)."""
    seqs: list[Seq] = []
    eos = EOT if gen.kind == "chat" else EOS
    spec = gen.spec
    for p_index, prompt in enumerate(gen.prompts):
        shared = Prompt(prompt.token_ids, gen.lora)
        for i in range(gen.n):
            index = p_index * gen.n + i
            seq_rng = random.Random(spec.seed + index) if spec.seed is not None else rng
            plan = plan_output(
                spec,
                rng=seq_rng,
                tokenizer=tokenizer,
                mean_len=mean_len,
                eos=eos,
                echo=(prompt.echo_ids, prompt.echo_texts) if echo else None,
            )
            seqs.append(Seq(shared, plan, exchange, now, index=index, max_tokens=spec.max_tokens))
    exchange.seqs = seqs
    return seqs
