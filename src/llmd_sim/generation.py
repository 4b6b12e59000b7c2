"""What a simulated sequence will say, decided when it is submitted.

A real engine samples one token per step and checks stop conditions as it goes. The simulator has
no model, so it draws the whole answer up front: the token ids, the text delta each token adds to
the stream, and how it ends. The engine then only has to pace the tokens. Deciding up front gives
identical results for identical seeds and keeps per-token work to formatting and writing.

Stop strings behave as in vLLM: the answer ends at the token that completes a stop string, the
string is cut from the text (unless ``include_stop_str_in_output``), ``finish_reason`` is
``"stop"`` and ``stop_reason`` is the string. While streaming, the last ``len(longest stop) - 1``
characters are held back until it is clear they do not begin a stop string.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from llmd_sim.tokenizer import EOS, WORDS, Tokenizer

if TYPE_CHECKING:
    import random
    from collections.abc import Sequence

__all__ = ["FinishReason", "OutputPlan", "SamplingSpec", "plan_output"]

FinishReason = Literal["stop", "length", "abort", "error"]


@dataclass(frozen=True, slots=True)
class SamplingSpec:
    """The sampling parameters that shape the simulated answer."""

    max_tokens: int
    min_tokens: int = 0
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class OutputPlan:
    """The full answer of one sequence. ``deltas[i]`` is the text streamed with token i."""

    token_ids: tuple[int, ...]
    deltas: tuple[str, ...]
    text: str
    finish_reason: FinishReason
    stop_reason: str | int | None

    def __len__(self) -> int:
        return len(self.token_ids)


def _draw_random(
    spec: SamplingSpec, rng: random.Random, mean_len: int, eos: int, word_ids: Sequence[int]
) -> tuple[list[int], list[str]]:
    """Words, then end of sequence after a geometric length (mean ``mean_len``), within
    ``max_tokens``. The end-of-sequence token is counted but adds no text."""
    if spec.ignore_eos:
        length = spec.max_tokens + 1  # never ends by itself
    else:
        # Inverse-CDF draw of a geometric length >= 1 with the given mean.
        p = 1.0 / max(1.0, float(mean_len))
        length = 1 if p >= 1.0 else 1 + int(math.log1p(-rng.random()) / math.log1p(-p))
        length = max(length, spec.min_tokens + 1, 2)
    n_words = min(length - 1, spec.max_tokens)
    picks = [rng.randrange(len(WORDS)) for _ in range(n_words)]
    ids = [word_ids[i] for i in picks]
    texts = [WORDS[i] for i in picks]
    if length <= spec.max_tokens:
        ids.append(eos)
        texts.append("")
    return ids, texts


def plan_output(
    spec: SamplingSpec,
    *,
    rng: random.Random,
    tokenizer: Tokenizer,
    mean_len: int,
    echo: tuple[Sequence[int], Sequence[str]] | None = None,
    eos: int = EOS,
) -> OutputPlan:
    """Decide a sequence's answer. ``echo`` (ids, piece texts) replays those pieces instead."""
    if echo is not None:
        src_ids, src_texts = list(echo[0]), list(echo[1])
        if not src_ids:
            src_ids, src_texts = [tokenizer.word_ids[0]], [WORDS[0]]
        if spec.ignore_eos:
            reps = -(-spec.max_tokens // len(src_ids))
            ids, texts = (src_ids * reps)[: spec.max_tokens], (src_texts * reps)[: spec.max_tokens]
        elif len(src_ids) < spec.max_tokens:
            ids, texts = [*src_ids, eos], [*src_texts, ""]
        else:
            ids, texts = src_ids[: spec.max_tokens], src_texts[: spec.max_tokens]
    else:
        ids, texts = _draw_random(spec, rng, mean_len, eos, tokenizer.word_ids)
    natural_end = ids[-1] == eos and not spec.ignore_eos

    finish: FinishReason = "stop" if natural_end else "length"
    stop_reason: str | int | None = None
    if spec.stop_token_ids:
        # As vLLM: end of sequence is checked first (stop_reason stays None), a stop token may
        # end the answer once min_tokens tokens precede it, and its text is kept unless it is a
        # special token.
        stops = set(spec.stop_token_ids)
        for i, tok in enumerate(ids):
            if tok == eos and not spec.ignore_eos:
                break
            if tok in stops and i >= spec.min_tokens:
                special = tokenizer.special_text(tok) is not None
                ids, texts = ids[: i + 1], [*texts[:i], "" if special else texts[i]]
                finish, stop_reason = "stop", tok
                break
    if not spec.stop:
        return OutputPlan(tuple(ids), tuple(texts), "".join(texts), finish, stop_reason)
    return _apply_stop_strings(spec, ids, texts, finish, stop_reason)


def _apply_stop_strings(
    spec: SamplingSpec,
    ids: list[int],
    texts: list[str],
    finish: FinishReason,
    stop_reason: str | int | None,
) -> OutputPlan:
    longest = max(len(s) for s in spec.stop)
    text = ""
    end = len(ids)
    final_text: str | None = None
    for i, piece in enumerate(texts):
        start = max(0, len(text) - longest + 1)
        text += piece
        if i + 1 < spec.min_tokens:
            continue
        hits = [(pos, s) for s in spec.stop if (pos := text.find(s, start)) >= 0]
        if hits:
            pos, matched = min(hits)
            end = i + 1
            final_text = (
                text[: pos + len(matched)] if spec.include_stop_str_in_output else text[:pos]
            )
            finish, stop_reason = "stop", matched
            break
    if final_text is None:
        final_text = "".join(texts[:end])
    holdback = 0 if spec.include_stop_str_in_output else longest - 1
    deltas: list[str] = []
    shown = 0
    running = ""
    for i in range(end):
        running += texts[i]
        # Holding back len(longest) - 1 characters never shows a character of the stop string.
        visible = final_text if i == end - 1 else running[: max(0, len(running) - holdback)]
        deltas.append(visible[shown:])
        shown = max(shown, len(visible))
    return OutputPlan(tuple(ids[:end]), tuple(deltas), final_text, finish, stop_reason)
