"""The deterministic stand-in tokenizer and the Llama-3 chat template."""

from __future__ import annotations

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from llmd_sim.tokenizer import BOS, EOS, EOT, WORDS, ChatFormatError, Tokenizer

FAST = settings(max_examples=150, deadline=None)

SPECIALS = {
    "<|begin_of_text|>": 1,
    "<|end_of_text|>": 2,
    "<|start_header_id|>": 3,
    "<|end_header_id|>": 4,
    "<|eot_id|>": 5,
}

word_indices = st.lists(st.integers(min_value=0, max_value=len(WORDS) - 1), max_size=60)


def hashed(piece: str, vocab_size: int = 32000) -> int:
    """The documented id of a piece: 256 + xxh32(piece) mod (vocab_size - 256)."""
    return 256 + xxhash.xxh32_intdigest(piece.encode()) % (vocab_size - 256)


# --------------------------------------------------------------------------- determinism


TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "internationalization 1234567 don't   stop\n\nnow",
    "<|begin_of_text|>Hi<|eot_id|>",
    "",
]


@pytest.mark.parametrize("text", TEXTS, ids=["greeting", "pangram", "mixed", "specials", "empty"])
def test_same_text_same_ids_across_instances(text: str):
    first, second = Tokenizer(), Tokenizer()
    ids = first.encode(text)
    assert ids == second.encode(text)
    assert ids == first.encode(text)  # and again from the warm piece cache


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("Hello, world!", ["Hello", ",", " world", "!"]),
        ("don't", ["don", "'t"]),
        ("internationalization", ["internat", "ionaliza", "tion"]),
        ("1234567", ["123", "456", "7"]),
        ("hello  world", ["hello", " ", " world"]),
        ("a\n\nb", ["a", "\n", "\n", "b"]),  # the last newline goes with the word
        ("a\n\n b", ["a", "\n\n", " b"]),
        ("x<|eot_id|>y", ["x", "<|eot_id|>", "y"]),
    ],
    ids=[
        "punctuation",
        "contraction",
        "long-word",
        "digits",
        "double-space",
        "newlines",
        "newlines-space",
        "special",
    ],
)
def test_pieces(text: str, pieces: list[str]):
    assert Tokenizer().pieces(text) == pieces


@pytest.mark.parametrize("vocab_size", [32000, 1000, 257], ids=["default", "1000", "minimal"])
def test_ids_follow_the_documented_hash(vocab_size: int):
    """Ids are ``256 + xxh32(piece) mod (vocab_size - 256)``, the same on every machine."""
    tok = Tokenizer(vocab_size)
    assert tok.encode("Hello, world!") == [
        hashed(p, vocab_size) for p in ["Hello", ",", " world", "!"]
    ]


@pytest.mark.parametrize(
    "text",
    ["foo_bar", "snake_case_name", "a_", "___", "hello world", "tabs\tand\nlines", "é ü ß ²"],
    ids=[
        "underscore",
        "snake-case",
        "trailing-underscore",
        "only-underscores",
        "plain",
        "ws",
        "unicode",
    ],
)
def test_pieces_cover_the_whole_text(text: str):
    """Splitting loses nothing: the pieces joined give the text back (as GPT-2's regex does)."""
    assert "".join(Tokenizer().pieces(text)) == text


@pytest.mark.parametrize(
    ("shorter", "longer"),
    [
        ("Hello world", "Hello world, how are you?"),
        ("The cache", "The cache block is full"),
        ("count 123", "count 123 and more"),
        ("<|begin_of_text|>Hi", "<|begin_of_text|>Hi there<|eot_id|>"),
        ("line one\n", "line one\nline two"),
    ],
    ids=["words", "sentence", "numbers", "specials", "newline"],
)
def test_extension_at_piece_boundary_extends_ids(shorter: str, longer: str):
    tok = Tokenizer()
    short_ids = tok.encode(shorter)
    long_ids = tok.encode(longer)
    assert len(long_ids) > len(short_ids)
    assert long_ids[: len(short_ids)] == short_ids


@FAST
@given(st.text(max_size=40), st.text(max_size=40))
def test_extension_property(a: str, b: str):
    """Whenever ``a + b`` splits as ``a`` then more, its ids start with ``a``'s ids."""
    tok = Tokenizer()
    pieces_a = tok.pieces(a)
    if tok.pieces(a + b)[: len(pieces_a)] == pieces_a:
        assert tok.encode(a + b)[: len(pieces_a)] == tok.encode(a)


# --------------------------------------------------------------------------- generated words


def test_words_are_distinct_single_pieces():
    tok = Tokenizer()
    assert len(set(WORDS)) == len(WORDS)
    assert len(tok.word_ids) == len(WORDS)
    for word, ident in zip(WORDS, tok.word_ids, strict=True):
        assert word.startswith(" ")
        assert tok.pieces(word) == [word]
        assert tok.encode(word) == [ident]
        assert ident == hashed(word)


@FAST
@given(word_indices)
def test_generated_words_round_trip(indices: list[int]):
    """The text of generated words tokenizes back to exactly the generated ids."""
    tok = Tokenizer()
    text = "".join(WORDS[i] for i in indices)
    assert tok.encode(text) == [tok.word_ids[i] for i in indices]


@FAST
@given(word_indices)
def test_follow_up_turn_extends_prompt_and_answer(indices: list[int]):
    """A next chat turn carrying the answer starts with the first prompt's ids + answer ids."""
    tok = Tokenizer()
    first = [{"role": "user", "content": "What is a KV cache?"}]
    answer = "".join(WORDS[i] for i in indices)
    follow_up = [
        *first,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "And?"},
    ]
    prefix = tok.encode(tok.render_chat(first)) + [tok.word_ids[i] for i in indices]
    assert tok.encode(tok.render_chat(follow_up))[: len(prefix)] == prefix


# --------------------------------------------------------------------------- special tokens


@pytest.mark.parametrize(("text", "ident"), list(SPECIALS.items()), ids=list(SPECIALS))
def test_special_tokens_have_fixed_ids(text: str, ident: int):
    tok = Tokenizer()
    assert tok.encode(text) == [ident]
    assert tok.pieces(text) == [text]
    assert Tokenizer.special_text(ident) == text


def test_special_constants():
    assert (BOS, EOS, EOT) == (1, 2, 5)
    assert Tokenizer.special_text(0) is None
    assert Tokenizer.special_text(6) is None
    assert Tokenizer.special_text(Tokenizer().word_ids[0]) is None


def test_special_tokens_inside_text():
    tok = Tokenizer()
    ids = tok.encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>")
    assert ids == [3, hashed("user"), 4, hashed("\n"), hashed("\n"), hashed("Hi"), 5]


def test_partial_special_token_is_ordinary_text():
    tok = Tokenizer()
    ids = tok.encode("<|eot_id")
    assert EOT not in ids
    assert all(i >= 256 for i in ids)


@pytest.mark.parametrize(
    ("text", "add_bos", "expected_head"),
    [("Hi", True, [BOS]), ("Hi", False, []), ("", True, [BOS])],
    ids=["bos", "no-bos", "bos-only"],
)
def test_add_bos(text: str, add_bos: bool, expected_head: list[int]):
    ids = Tokenizer().encode(text, add_bos=add_bos)
    assert ids[: len(expected_head)] == expected_head
    assert len(ids) == len(expected_head) + len(Tokenizer().pieces(text))


# --------------------------------------------------------------------------- vocabulary range


@pytest.mark.parametrize("vocab_size", [257, 300, 32000, 128256], ids=str)
def test_ids_within_vocab(vocab_size: int):
    tok = Tokenizer(vocab_size)
    ids = tok.encode(" ".join(WORDS) + "<|eot_id|> 0123456789 !?#$ \t\n", add_bos=True)
    assert all(0 <= i < vocab_size for i in ids)
    assert all(0 <= i < vocab_size for i in tok.word_ids)


@FAST
@given(st.text(max_size=80), st.sampled_from([257, 1000, 32000]))
def test_ids_within_vocab_property(text: str, vocab_size: int):
    tok = Tokenizer(vocab_size)
    ids = tok.encode(text)
    assert all(0 <= i < vocab_size for i in ids)
    # Below 256 only the special tokens, and only where the text spells them out.
    assert all(i >= 256 or (Tokenizer.special_text(i) or "\0") in text for i in ids)


@pytest.mark.parametrize("vocab_size", [0, 100, 256], ids=str)
def test_vocab_size_must_exceed_reserved(vocab_size: int):
    with pytest.raises(ValueError, match="vocab_size must exceed 256"):
        Tokenizer(vocab_size)


# --------------------------------------------------------------------------- chat template

CHATS = [
    (
        "single-user",
        [{"role": "user", "content": "Hi"}],
        True,
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    (
        "no-generation-prompt",
        [{"role": "user", "content": "Hi"}],
        False,
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    ),
    (
        "system-user-assistant",
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
        ],
        False,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>",
    ),
    (
        "text-parts-joined-by-newline",
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ],
        True,
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\na\nb<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    (
        "null-content",
        [{"role": "assistant", "content": None}],
        False,
        "<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>",
    ),
    (
        "no-messages",
        [],
        True,
        "<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
]


@pytest.mark.parametrize(
    ("messages", "generation_prompt", "expected"),
    [c[1:] for c in CHATS],
    ids=[c[0] for c in CHATS],
)
def test_render_chat_layout(
    messages: list[dict[str, object]], generation_prompt: bool, expected: str
):
    assert Tokenizer.render_chat(messages, add_generation_prompt=generation_prompt) == expected


def test_rendered_chat_token_ids():
    tok = Tokenizer()
    ids = tok.encode(tok.render_chat([{"role": "user", "content": "Hi"}]))
    assert ids == [
        BOS,
        3,
        hashed("user"),
        4,
        hashed("\n"),
        hashed("\n"),
        hashed("Hi"),
        EOT,
        3,
        hashed("assistan"),  # words are cut into runs of at most 8 letters
        hashed("t"),
        4,
        hashed("\n\n"),
    ]


BAD_CHATS = [
    ("missing-role", [{"content": "Hi"}], r"messages\[0\]\.role"),
    (
        "empty-role",
        [{"role": "user", "content": "a"}, {"role": "", "content": "b"}],
        r"messages\[1\]\.role",
    ),
    ("non-string-role", [{"role": 7, "content": "Hi"}], r"messages\[0\]\.role"),
    (
        "image-part",
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        r"messages\[0\]\.content\[0\]: content type 'image_url' is not supported",
    ),
    (
        "text-part-without-text",
        [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text"}]}],
        r"messages\[0\]\.content\[1\]",
    ),
    (
        "part-not-an-object",
        [{"role": "user", "content": ["Hi"]}],
        r"messages\[0\]\.content\[0\] must be an object",
    ),
    (
        "content-wrong-type",
        [{"role": "user", "content": 42}],
        r"messages\[0\]\.content must be a string or a list",
    ),
]


@pytest.mark.parametrize(
    ("messages", "message"), [c[1:] for c in BAD_CHATS], ids=[c[0] for c in BAD_CHATS]
)
def test_render_chat_errors(messages: list[dict[str, object]], message: str):
    with pytest.raises(ChatFormatError, match=message):
        Tokenizer.render_chat(messages)
