"""A deterministic, cheap stand-in for a model's tokenizer and chat template.

The simulator needs token ids for three things: counting prompt tokens (latency, context window),
chaining KV blocks by hash (prefix caching, KV events), and generating output. It does not need a
real vocabulary, so text is split with a GPT-2-style pre-tokenizer regex and every piece gets the
id ``256 + xxh32(piece) mod (vocab_size - 256)``. The same text therefore always yields the same
ids, in every process and on every machine, and a text that extends another at a piece boundary
yields ids that extend the other's.

Generated words are drawn from a fixed list whose entries are single pieces (" word"), so the text
of an answer tokenizes back to exactly the ids that were generated. A follow-up chat turn that
carries the previous answer therefore hits the blocks cached while decoding it, as on vLLM.

The chat template is Llama 3's layout with its special tokens (ids 1-5)::

    <|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nHi<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

import xxhash

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["BOS", "EOS", "EOT", "WORDS", "ChatFormatError", "Tokenizer", "message_text"]

BOS: Final = 1
EOS: Final = 2
EOT: Final = 5
_SPECIAL: Final = {
    "<|begin_of_text|>": BOS,
    "<|end_of_text|>": EOS,
    "<|start_header_id|>": 3,
    "<|end_header_id|>": 4,
    "<|eot_id|>": EOT,
}
_SPECIAL_STR: Final = {v: k for k, v in _SPECIAL.items()}
_SPECIAL_SPLIT: Final = re.compile("(" + "|".join(re.escape(s) for s in _SPECIAL) + ")")
# Contractions, words of up to 8 letters with their leading space, numbers in groups of 3,
# runs of other symbols (underscore included), and whitespace (the last space before a word
# stays with the word). Every character of the text lands in exactly one piece.
_PIECE: Final = re.compile(
    r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]{1,8}| ?\d{1,3}| ?(?:[^\s\w]|_){1,4}|\s+(?!\S)|\s+"
)
_RESERVED: Final = 256
_MAX_CACHED_PIECES: Final = 1 << 20

WORDS: Final[tuple[str, ...]] = tuple(
    " " + w
    for w in (
        "the of and to in is that it for on was with as be by at this from are or an which "
        "but not have one all were they had there can their been more has when will would "
        "other some what time only into about could these two may then first any like very "
        "now such over new most also well made after many where just those model server token "
        "cache block route queue load fast slow small large prompt answer system user data "
        "value state point order group field river stone light water night paper story world "
        "house green quiet bright early later under above between across around through while "
        "because before again still every never always often maybe really quite rather almost "
        "seven eight three four five six nine ten hundred number letter signal network stream "
        "engine kernel memory vector matrix graph layer weight bias train infer decode prefill "
        "window context batch shard replica leader follower metric counter gauge sample bucket"
    ).split()
)


class ChatFormatError(ValueError):
    """The messages of a chat request cannot be rendered (bad roles or content parts)."""


class Tokenizer:
    """Text to token ids and back, deterministically. Not thread-safe (it caches pieces)."""

    def __init__(self, vocab_size: int = 32000) -> None:
        if vocab_size <= _RESERVED:
            raise ValueError(f"vocab_size must exceed {_RESERVED}")
        self.vocab_size = vocab_size
        self._ids: dict[str, int] = {}
        self.word_ids: tuple[int, ...] = tuple(self._piece_id(w) for w in WORDS)

    def _piece_id(self, piece: str) -> int:
        ident = self._ids.get(piece)
        if ident is None:
            if len(self._ids) >= _MAX_CACHED_PIECES:
                self._ids.clear()
            ident = _RESERVED + xxhash.xxh32_intdigest(piece.encode()) % (
                self.vocab_size - _RESERVED
            )
            self._ids[piece] = ident
        return ident

    def pieces(self, text: str) -> list[str]:
        """Split text into pieces, special tokens included as whole pieces."""
        if "<|" not in text:
            return _PIECE.findall(text)
        out: list[str] = []
        for i, part in enumerate(_SPECIAL_SPLIT.split(text)):
            if i % 2:
                out.append(part)
            elif part:
                out.extend(_PIECE.findall(part))
        return out

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        ids = [BOS] if add_bos else []
        piece_id = self._piece_id
        special = _SPECIAL
        if "<|" not in text:
            ids.extend([piece_id(p) for p in _PIECE.findall(text)])
        else:
            ids.extend([special.get(p) or piece_id(p) for p in self.pieces(text)])
        return ids

    @staticmethod
    def special_text(token_id: int) -> str | None:
        return _SPECIAL_STR.get(token_id)

    @staticmethod
    def render_chat(
        messages: Sequence[Mapping[str, object]], *, add_generation_prompt: bool = True
    ) -> str:
        """Apply the chat template. Raises ChatFormatError for content it cannot render."""
        parts = ["<|begin_of_text|>"]
        for index, message in enumerate(messages):
            role = message.get("role")
            if not isinstance(role, str) or not role:
                raise ChatFormatError(f"messages[{index}].role must be a non-empty string")
            parts.append(f"<|start_header_id|>{role}<|end_header_id|>\n\n")
            parts.append(message_text(message, index))
            parts.append("<|eot_id|>")
        if add_generation_prompt:
            parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
        return "".join(parts)


def message_text(message: Mapping[str, object], index: int) -> str:
    """The text of one chat message: a string, or the text parts of a content list."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                raise ChatFormatError(f"messages[{index}].content[{j}] must be an object")
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                raise ChatFormatError(
                    f"messages[{index}].content[{j}]: content type {kind!r} is not supported "
                    "by this text-only model"
                )
        return "\n".join(texts)
    raise ChatFormatError(f"messages[{index}].content must be a string or a list of parts")
