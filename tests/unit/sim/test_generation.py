"""Planning a simulated answer: lengths, EOS, stop strings and ids, streaming deltas, echo."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmd_sim.generation import OutputPlan, SamplingSpec, plan_output
from llmd_sim.tokenizer import EOS, WORDS, Tokenizer

TOK = Tokenizer()
WORD_OF = dict(zip(TOK.word_ids, WORDS, strict=True))
FAST = settings(max_examples=200, deadline=None)

# An echoed answer with known pieces: "the quick brown fox jumps over the lazy dog".
PIECES = ["the", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog"]
ECHO = ([TOK.encode(p)[0] for p in PIECES], PIECES)
FULL = "".join(PIECES)


def plan(spec: SamplingSpec, seed: int = 0, mean_len: int = 16) -> OutputPlan:
    return plan_output(spec, rng=random.Random(seed), tokenizer=TOK, mean_len=mean_len)


def echo(spec: SamplingSpec, source: tuple[list[int], list[str]] = ECHO) -> OutputPlan:
    return plan_output(spec, rng=random.Random(0), tokenizer=TOK, mean_len=16, echo=source)


def words_text(ids: tuple[int, ...]) -> str:
    return "".join(WORD_OF.get(i, "") for i in ids)


def check_consistent(result: OutputPlan) -> None:
    assert len(result.deltas) == len(result.token_ids) == len(result)
    assert "".join(result.deltas) == result.text


# --------------------------------------------------------------------------- lengths and EOS


@pytest.mark.parametrize("max_tokens", [1, 2, 7, 100, 1000], ids=str)
@pytest.mark.parametrize("mean_len", [1, 16, 10_000], ids=lambda m: f"mean{m}")
def test_ignore_eos_gives_exactly_max_tokens(max_tokens: int, mean_len: int):
    for seed in range(5):
        result = plan(SamplingSpec(max_tokens=max_tokens, ignore_eos=True), seed, mean_len)
        assert len(result) == max_tokens
        assert result.finish_reason == "length"
        assert result.stop_reason is None
        assert EOS not in result.token_ids
        assert all(i in WORD_OF for i in result.token_ids)
        assert result.text == words_text(result.token_ids)
        check_consistent(result)


def test_natural_end_is_eos_and_stop():
    """Uncapped answers end with EOS, which adds no text; finish "stop", no stop_reason."""
    for seed in range(100):
        result = plan(SamplingSpec(max_tokens=100_000), seed, mean_len=8)
        assert result.token_ids[-1] == EOS
        assert EOS not in result.token_ids[:-1]
        assert result.deltas[-1] == ""
        assert result.finish_reason == "stop"
        assert result.stop_reason is None
        assert len(result) >= 2  # at least one word before EOS
        assert result.text == words_text(result.token_ids[:-1])
        check_consistent(result)


def test_capped_answer_finishes_with_length():
    for seed in range(50):
        result = plan(SamplingSpec(max_tokens=5), seed, mean_len=1_000_000)
        assert len(result) == 5
        assert EOS not in result.token_ids
        assert result.finish_reason == "length"
        assert result.stop_reason is None


def test_finish_reason_matches_how_the_answer_ended():
    """Near the cap: EOS within max_tokens means "stop", otherwise exactly max_tokens, "length"."""
    finishes = set()
    for seed in range(200):
        result = plan(SamplingSpec(max_tokens=10), seed, mean_len=10)
        assert len(result) <= 10
        if result.token_ids[-1] == EOS:
            assert result.finish_reason == "stop"
        else:
            assert len(result) == 10
            assert result.finish_reason == "length"
        finishes.add(result.finish_reason)
    assert finishes == {"stop", "length"}


@pytest.mark.parametrize("mean_len", [5, 20, 100], ids=lambda m: f"mean{m}")
def test_mean_length_follows_mean_len(mean_len: int):
    lengths = [len(plan(SamplingSpec(max_tokens=1_000_000), s, mean_len)) for s in range(2000)]
    assert 0.85 * mean_len <= statistics.fmean(lengths) <= 1.15 * mean_len + 1
    assert min(lengths) >= 2
    assert max(lengths) > 2 * mean_len  # geometric: a long tail, not a constant


def test_same_seed_same_plan():
    spec = SamplingSpec(max_tokens=64)
    for seed in range(20):
        assert plan(spec, seed) == plan(spec, seed)
    assert len({plan(spec, seed).token_ids for seed in range(20)}) > 15


# --------------------------------------------------------------------------- stop strings

STOPS = [
    # (id, stop strings, include, expected text, tokens, stop_reason)
    ("whole-word", (" fox",), False, "the quick brown", 4, " fox"),
    ("whole-word-included", (" fox",), True, "the quick brown fox", 4, " fox"),
    ("across-pieces", ("own f",), False, "the quick br", 4, "own f"),
    ("across-pieces-included", ("own f",), True, "the quick brown f", 4, "own f"),
    ("first-piece", ("the",), False, "", 1, "the"),
    ("inside-a-piece", ("ump",), False, "the quick brown fox j", 5, "ump"),
    ("earliest-completion-wins", ("lazy", "quick"), False, "the ", 2, "quick"),
    ("first-occurrence", (" the",), False, "the quick brown fox jumps over", 7, " the"),
    ("last-piece", ("dog",), False, "the quick brown fox jumps over the lazy ", 9, "dog"),
]


@pytest.mark.parametrize(
    ("stop", "include", "text", "tokens", "reason"),
    [c[1:] for c in STOPS],
    ids=[c[0] for c in STOPS],
)
def test_stop_strings(stop: tuple[str, ...], include: bool, text: str, tokens: int, reason: str):
    spec = SamplingSpec(max_tokens=100, stop=stop, include_stop_str_in_output=include)
    result = echo(spec)
    assert result.text == text
    assert result.token_ids == tuple(ECHO[0][:tokens])
    assert result.finish_reason == "stop"
    assert result.stop_reason == reason
    check_consistent(result)


def test_stop_string_absent_keeps_natural_end():
    result = echo(SamplingSpec(max_tokens=100, stop=("cat", "zebra")))
    assert result.text == FULL
    assert result.token_ids == (*ECHO[0], EOS)
    assert result.finish_reason == "stop"
    assert result.stop_reason is None
    check_consistent(result)


def test_stop_string_after_the_cap_finishes_with_length():
    result = echo(SamplingSpec(max_tokens=3, stop=(" fox",)))
    assert result.text == "the quick brown"
    assert len(result) == 3
    assert result.finish_reason == "length"
    assert result.stop_reason is None
    check_consistent(result)


STREAMS = [
    # (id, stop, include, expected deltas)
    # "quiet" never matches: 4 characters are held back, then released at the end.
    (
        "held-then-released",
        ("quiet",),
        False,
        ("", "the q", "uick b", "rown", " fox j", "umps ", "over", " the ", "lazy", " dog"),
    ),
    # " fox" matches at token 3: 3 characters are held back, and nothing of it is streamed.
    ("matched", (" fox",), False, ("", "the qu", "ick br", "own")),
    # Included stop strings need no holdback: each token's text goes out at once.
    ("included", (" fox",), True, ("the", " quick", " brown", " fox")),
    ("no-stop", (), False, (*PIECES, "")),
]


@pytest.mark.parametrize(
    ("stop", "include", "deltas"), [c[1:] for c in STREAMS], ids=[c[0] for c in STREAMS]
)
def test_streaming_deltas(stop: tuple[str, ...], include: bool, deltas: tuple[str, ...]):
    """While streaming, the last ``len(longest stop) - 1`` characters wait until it is clear."""
    spec = SamplingSpec(max_tokens=100, stop=stop, include_stop_str_in_output=include)
    result = echo(spec)
    assert result.deltas == deltas
    check_consistent(result)


@FAST
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    start=st.integers(min_value=0, max_value=10_000),
    length=st.integers(min_value=1, max_value=12),
    include=st.booleans(),
    decoy=st.text(alphabet="abcdefghij ", min_size=1, max_size=12),
)
def test_stop_string_property(seed: int, start: int, length: int, include: bool, decoy: str):
    """A stop string taken from the generated text: cut there, finish "stop", and the deltas
    always add up to the text with nothing of the matched string streamed early."""
    base = plan(SamplingSpec(max_tokens=40, ignore_eos=True), seed)
    full = base.text
    start %= len(full)
    stop_str = full[start : start + length]
    spec = SamplingSpec(
        max_tokens=40, ignore_eos=True, stop=(stop_str, decoy), include_stop_str_in_output=include
    )
    result = plan(spec, seed)
    check_consistent(result)

    # The answer ends at the first token that completes a match of either string; the text is
    # cut at the (first occurrence of the) string reported.
    offsets = [sum(len(d) for d in base.deltas[: i + 1]) for i in range(len(base))]
    ends = {s: full.find(s) + len(s) for s in (stop_str, decoy) if s in full}
    end_token = next(i for i, off in enumerate(offsets) if off >= min(ends.values()))
    completed = {s for s, end in ends.items() if end <= offsets[end_token]}
    assert result.token_ids == base.token_ids[: end_token + 1]
    assert result.finish_reason == "stop"
    assert result.stop_reason in completed
    matched = result.stop_reason
    assert isinstance(matched, str)
    pos = full.find(matched)
    assert result.text == (full[: pos + len(matched)] if include else full[:pos])

    # Holdback: before the last delta, nothing at or beyond the match is shown, and at least
    # len(longest) - 1 characters of the tokens so far are withheld.
    longest = max(len(stop_str), len(decoy))
    for i in range(len(result) - 1):
        shown = sum(len(d) for d in result.deltas[: i + 1])
        if not include:
            assert shown <= pos
            assert shown <= max(0, offsets[i] - (longest - 1))


@FAST
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    stops=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=3),
    include=st.booleans(),
    max_tokens=st.integers(min_value=1, max_value=30),
)
def test_deltas_always_add_up_to_text(seed: int, stops: list[str], include: bool, max_tokens: int):
    spec = SamplingSpec(
        max_tokens=max_tokens, stop=tuple(stops), include_stop_str_in_output=include
    )
    result = plan(spec, seed, mean_len=10)
    check_consistent(result)
    assert len(result) <= max_tokens
    if isinstance(result.stop_reason, str):
        assert result.finish_reason == "stop"
        assert result.stop_reason in stops
        if include:
            assert result.text.endswith(result.stop_reason)
    if not include:
        assert not any(s in result.text for s in stops)


# --------------------------------------------------------------------------- stop token ids


def _first_repeat_free(base: OutputPlan, index: int) -> int:
    """The id at ``index``, checked to first occur there."""
    token = base.token_ids[index]
    assert token not in base.token_ids[:index]
    return token


@pytest.mark.parametrize("index", [0, 3, 10], ids=lambda i: f"at{i}")
def test_stop_token_ids(index: int):
    spec = SamplingSpec(max_tokens=30, ignore_eos=True)
    base = plan(spec, seed=7)
    token = _first_repeat_free(base, index)
    result = plan(SamplingSpec(max_tokens=30, ignore_eos=True, stop_token_ids=(token,)), seed=7)
    assert result.token_ids == base.token_ids[: index + 1]
    assert result.finish_reason == "stop"
    assert result.stop_reason == token
    assert result.text.startswith(base.text[: sum(len(d) for d in base.deltas[:index])])
    check_consistent(result)


def test_stop_token_id_absent_changes_nothing():
    spec = SamplingSpec(max_tokens=30, ignore_eos=True)
    base = plan(spec, seed=7)
    absent = next(i for i in TOK.word_ids if i not in base.token_ids)
    result = plan(SamplingSpec(max_tokens=30, ignore_eos=True, stop_token_ids=(absent,)), seed=7)
    assert result == base


# --------------------------------------------------------------------------- min_tokens


@pytest.mark.parametrize("min_tokens", [1, 5, 20], ids=str)
def test_min_tokens_delays_eos(min_tokens: int):
    """With mean_len 1 EOS would come right away; min_tokens words must precede it."""
    for seed in range(30):
        result = plan(SamplingSpec(max_tokens=100, min_tokens=min_tokens), seed, mean_len=1)
        assert result.token_ids[-1] == EOS
        assert len(result) >= min_tokens + 1
        assert EOS not in result.token_ids[:min_tokens]


@pytest.mark.parametrize(
    ("min_tokens", "stops_there"),
    [(3, True), (4, False)],
    ids=["min-equals-index", "min-past-index"],
)
def test_min_tokens_delays_stop_token_ids(min_tokens: int, stops_there: bool):
    """As for EOS (and vLLM's min_tokens), a stop token id needs min_tokens tokens before it."""
    base = plan(SamplingSpec(max_tokens=30, ignore_eos=True), seed=7)
    token = _first_repeat_free(base, 3)
    spec = SamplingSpec(
        max_tokens=30, ignore_eos=True, stop_token_ids=(token,), min_tokens=min_tokens
    )
    result = plan(spec, seed=7)
    assert (len(result) == 4) is stops_there
    assert len(result) >= min_tokens + 1


def test_min_tokens_ignores_early_stop_strings():
    """A stop string completed before min_tokens tokens does not end the answer."""
    early = echo(SamplingSpec(max_tokens=100, stop=("quick",)))
    assert len(early) == 2
    late = echo(SamplingSpec(max_tokens=100, stop=("quick",), min_tokens=3))
    assert late.stop_reason is None
    assert late.text == FULL
    assert len(late) == len(PIECES) + 1


# --------------------------------------------------------------------------- echo mode


def test_echo_replays_pieces_then_eos():
    result = echo(SamplingSpec(max_tokens=100))
    assert result.token_ids == (*ECHO[0], EOS)
    assert result.deltas == (*PIECES, "")
    assert result.text == FULL
    assert result.finish_reason == "stop"


@pytest.mark.parametrize("max_tokens", [1, 5, 9], ids=str)
def test_echo_capped(max_tokens: int):
    result = echo(SamplingSpec(max_tokens=max_tokens))
    assert result.token_ids == tuple(ECHO[0][:max_tokens])
    assert result.text == "".join(PIECES[:max_tokens])
    assert result.finish_reason == "length"


@pytest.mark.parametrize("max_tokens", [4, 9, 20], ids=str)
def test_echo_ignore_eos_repeats_to_max_tokens(max_tokens: int):
    result = echo(SamplingSpec(max_tokens=max_tokens, ignore_eos=True))
    repeated = PIECES * 3
    assert len(result) == max_tokens
    assert result.token_ids == tuple((ECHO[0] * 3)[:max_tokens])
    assert result.text == "".join(repeated[:max_tokens])
    assert result.finish_reason == "length"


def test_echo_of_nothing_says_one_word():
    result = echo(SamplingSpec(max_tokens=10), source=([], []))
    assert result.token_ids == (TOK.word_ids[0], EOS)
    assert result.text == WORDS[0]


def test_echo_ignores_the_rng():
    spec = SamplingSpec(max_tokens=100)
    a = plan_output(spec, rng=random.Random(1), tokenizer=TOK, mean_len=3, echo=ECHO)
    b = plan_output(spec, rng=random.Random(2), tokenizer=TOK, mean_len=300, echo=ECHO)
    assert a == b
