"""A model's own tokenizer, run in the router: chat rendering and tokens as vLLM makes them.

Theory of operation. ``LocalTokenizer.from_dir`` loads a Hugging Face model directory's
``tokenizer.json`` (with the ``tokenizers`` library, from the file: nothing is downloaded),
``tokenizer_config.json`` (its special tokens) and chat template (``chat_template`` in the
config, or ``chat_template.jinja``). A chat request is rendered with the template as vLLM renders
it (Jinja with ``trim_blocks`` and ``lstrip_blocks``, ``add_generation_prompt``, the tools, the
special tokens; text parts of a message joined with newlines) and tokenized without adding
special tokens (the template holds them); a completion's prompt is tokenized with them, as
vLLM's defaults do.

Prefix store. Requests often share a long start (a system prompt, a document, the turns so
far); tokenizing it again for every request is the dominant cost on long prompts. The store
keeps, for fixed windows of text (``chunk_chars``), the tokens that end in each, keyed by a
chain of the windows' hashes (a window's key stands for all the text before its end). A prompt
is looked up window by window; the tokens of the windows that hit are reused and only the rest
of the text is tokenized, from the last *cut*: a place where the tokenizer's pre-tokenizer must
start a new word (a space before a letter, after a non-space), so tokenizing the rest alone
gives the tokens the whole text would have. That holds for byte-level BPE and Metaspace
tokenizers; ``from_dir`` checks it on a probe text and turns the store off for a tokenizer it
does not hold for, and every ``verify_every``-th prompt served from the store is tokenized whole
as well: a difference turns the store off, with a warning. The store is an LRU of
``max_chunks`` windows. Not thread-safe.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import jinja2
import jinja2.sandbox
import xxhash
from tokenizers import Encoding, Tokenizer

from llmd_router.parsing.prompt import TokenizedPrompt, estimate
from llmd_router.parsing.request import ApiKind
from llmd_router.tasks import run_blocking

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.parsing.request import InferenceRequest

__all__ = ["LocalTokenizer", "PrefixTokenStore", "TokenizerError"]

_log = logging.getLogger(__name__)

CHUNK_CHARS: Final = 256
MAX_CHUNKS: Final = 500_000  # llm-d's LRU token store capacity
VERIFY_EVERY: Final = 64
INLINE_CHARS: Final = 16_384  # less text than this is tokenized on the event loop (~1 ms)
_PROBE: Final = (
    "You are a helpful assistant. Answer the question below in two sentences, citing the "
    "context where it helps.\n\nContext: tokenizers split text into words, then words into "
    "pieces; numbers like 12345 and symbols (#, @, ...) too. " * 4
)


class TokenizerError(ValueError):
    """A model directory that cannot be used: what is missing or wrong."""


def _special(config: dict[str, Any], name: str) -> str:
    value = config.get(name)
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def _chat_template(directory: Path, config: dict[str, Any]) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if isinstance(template, str) and template:
        return template
    path = directory / "chat_template.jinja"
    return path.read_text() if path.is_file() else None


def _raise(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _message_content(message: dict[str, Any]) -> dict[str, Any]:
    """A message as a text model's template sees it: text parts joined with newlines."""
    content = message.get("content")
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        ]
        return {**message, "content": "\n".join(texts)}
    return message


@dataclass(frozen=True, slots=True)
class _Plan:
    """How a text is tokenized: ``rest`` (all of it, or what follows the store's ``cut``) with
    or without special tokens; the store's ``keys`` of its windows, ``held`` of them found,
    their ``tokens``; whether to check the result against tokenizing it whole."""

    rest: str
    specials: bool
    keys: list[int] | None = None
    tokens: array[int] | None = None
    cut: int = 0
    held: int = 0
    verify: bool = False


@dataclass(slots=True)
class _Chunk:
    tokens: array[int]  # the tokens between the previous window's cut and this one's
    cut: int  # where the tokens so far end, in characters from the start of the text


class PrefixTokenStore:
    """Tokens of text windows already seen, by the chain of the windows' hashes (LRU)."""

    def __init__(self, chunk_chars: int = CHUNK_CHARS, max_chunks: int = MAX_CHUNKS) -> None:
        if chunk_chars <= 0 or max_chunks <= 0:
            raise ValueError("chunk_chars and max_chunks must be positive")
        self.chunk_chars = chunk_chars
        self.max_chunks = max_chunks
        self._chunks: OrderedDict[int, _Chunk] = OrderedDict()
        self.hits = 0  # windows found
        self.misses = 0  # prompts of which no window was found

    def keys(self, text: str, root: int) -> list[int]:
        """The chained keys of the whole windows of ``text``."""
        size = self.chunk_chars
        keys = []
        key = root
        digest = xxhash.xxh64_intdigest
        for start in range(0, len(text) - size + 1, size):
            key = digest(key.to_bytes(8, "little") + text[start : start + size].encode())
            keys.append(key)
        return keys

    def lookup(self, keys: Sequence[int]) -> tuple[array[int], int, int]:
        """The tokens of the leading windows held, the cut they end at, and how many windows
        that was."""
        tokens: array[int] = array("I")
        cut = 0
        n = 0
        chunks = self._chunks
        for key in keys:
            chunk = chunks.get(key)
            if chunk is None:
                break
            chunks.move_to_end(key)
            tokens.extend(chunk.tokens)
            cut = chunk.cut
            n += 1
        self.hits += n
        return tokens, cut, n

    def store(self, keys: Sequence[int], first: int, chunks: Sequence[_Chunk]) -> None:
        held = self._chunks
        for key, chunk in zip(keys[first:], chunks, strict=False):
            held[key] = chunk
            held.move_to_end(key)
        while len(held) > self.max_chunks:
            held.popitem(last=False)

    def clear(self) -> None:
        self._chunks.clear()

    def __len__(self) -> int:
        return len(self._chunks)


def _safe_cut(text: str, p: int) -> bool:
    """Whether a pre-tokenizer must start a new word at ``p``: a space before a letter, after
    something that is not whitespace."""
    return (
        0 < p < len(text) - 1
        and text[p] == " "
        and text[p + 1].isalpha()
        and not text[p - 1].isspace()
    )


class LocalTokenizer:
    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        chat_template: str | None = None,
        special_tokens: dict[str, str] | None = None,
        store: PrefixTokenStore | None = None,
        verify_every: int = VERIFY_EVERY,
        name: str = "",
    ) -> None:
        self.name = name
        self._tokenizer = tokenizer
        self._specials = dict(special_tokens or {})
        self._template = None
        if chat_template is not None:
            env = jinja2.sandbox.ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
            )
            env.filters["tojson"] = lambda v, indent=None, **_: json.dumps(
                v, ensure_ascii=False, indent=indent
            )
            env.globals["raise_exception"] = _raise
            try:
                self._template = env.from_string(chat_template)
            except jinja2.exceptions.TemplateError as exc:
                raise TokenizerError(f"the chat template does not compile: {exc}") from None
        self.store = store
        self.verify_every = verify_every
        self._served = 0
        self._roots = {
            flag: xxhash.xxh64_intdigest(f"{name}|{int(flag)}".encode()) for flag in (False, True)
        }
        if store is not None and not self._splits_exactly():
            _log.warning(
                "tokenizer %r: tokenizing the rest of a prompt apart changes its tokens; the "
                "prefix store is off (every prompt is tokenized whole)",
                name,
            )
            self.store = None

    @classmethod
    def from_dir(cls, path: str | Path, **options: Any) -> LocalTokenizer:
        directory = Path(path)
        tokenizer_file = directory / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise TokenizerError(f"{directory}: no tokenizer.json (a Hugging Face tokenizer file)")
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # noqa: BLE001  the library raises bare Exceptions
            raise TokenizerError(f"{tokenizer_file}: {exc}") from None
        config: dict[str, Any] = {}
        config_file = directory / "tokenizer_config.json"
        if config_file.is_file():
            try:
                config = json.loads(config_file.read_text())
            except ValueError as exc:
                raise TokenizerError(f"{config_file}: {exc}") from None
        specials = {
            name: _special(config, name)
            for name in ("bos_token", "eos_token", "unk_token", "pad_token")
        }
        options.setdefault("store", PrefixTokenStore())
        return cls(
            tokenizer,
            chat_template=_chat_template(directory, config),
            special_tokens=specials,
            name=str(directory),
            **options,
        )

    # ------------------------------------------------------------------ rendering

    @property
    def has_chat_template(self) -> bool:
        return self._template is not None

    def render_chat(self, messages: Sequence[Any], tools: Sequence[Any] | None = None) -> str:
        """The prompt text vLLM would give the model for these chat messages."""
        if self._template is None:
            raise TokenizerError(f"tokenizer {self.name!r} has no chat template")
        return self._template.render(
            messages=[_message_content(m) if isinstance(m, dict) else m for m in messages],
            tools=list(tools) if tools else None,
            add_generation_prompt=True,
            **self._specials,
        )

    # ------------------------------------------------------------------ tokens

    def encode_whole(self, text: str, *, add_special_tokens: bool) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        return ids

    def encode(self, text: str, *, add_special_tokens: bool) -> list[int]:
        """``text``'s tokens, reusing the prefix store's."""
        plan = self._plan(text, add_special_tokens)
        encoding = self._tokenizer.encode(plan.rest, add_special_tokens=plan.specials)
        tokens = self._finish(text, plan, encoding)
        if plan.verify:
            whole = self.encode_whole(text, add_special_tokens=add_special_tokens)
            return self._verified(tokens, whole)
        return tokens

    async def encode_async(self, text: str, *, add_special_tokens: bool) -> list[int]:
        """``encode``, with the tokenizer's work on a worker thread when there is much of it
        (``INLINE_CHARS``), so that the event loop serves other requests meanwhile. The store
        is read and written on the calling thread only."""
        plan = self._plan(text, add_special_tokens)
        encode = self._tokenizer.encode
        if len(plan.rest) > INLINE_CHARS:
            job = functools.partial(encode, plan.rest, add_special_tokens=plan.specials)
            encoding = await run_blocking(job)
        else:
            encoding = encode(plan.rest, add_special_tokens=plan.specials)
        tokens = self._finish(text, plan, encoding)
        if plan.verify:
            check = functools.partial(
                self.encode_whole, text, add_special_tokens=add_special_tokens
            )
            whole = await run_blocking(check)
            return self._verified(tokens, whole)
        return tokens

    def _plan(self, text: str, add_special_tokens: bool) -> _Plan:
        """What the store holds of ``text``, and what is left to tokenize."""
        store = self.store
        if store is None:
            return _Plan(text, add_special_tokens)
        keys = store.keys(text, self._roots[add_special_tokens])
        held, cut, n = store.lookup(keys)
        if n == 0:
            store.misses += 1
            return _Plan(text, add_special_tokens, keys)
        self._served += 1
        verify = self.verify_every > 0 and self._served % self.verify_every == 0
        return _Plan(text[cut:], False, keys, held, cut, n, verify)

    def _finish(self, text: str, plan: _Plan, encoding: Encoding) -> list[int]:
        """The tokens, and the windows the store did not hold stored."""
        store = self.store
        if store is not None and plan.keys is not None and plan.held < len(plan.keys):
            start = plan.held * store.chunk_chars
            chunks = self._chunks(text, encoding.ids, encoding.offsets, plan.cut, start)
            store.store(plan.keys, plan.held, chunks)
        if plan.tokens is None:
            ids: list[int] = encoding.ids
            return ids
        tokens = plan.tokens.tolist()
        tokens.extend(encoding.ids)
        return tokens

    def _verified(self, tokens: list[int], whole: list[int]) -> list[int]:
        if whole != tokens and self.store is not None:
            _log.warning(
                "tokenizer %r: the prefix store's tokens differ from the whole text's; the "
                "store is off from now on",
                self.name,
            )
            self.store = None
        return whole

    def _chunks(
        self,
        text: str,
        ids: Sequence[int],
        offsets: Sequence[tuple[int, int]],
        base: int,
        start: int,
    ) -> list[_Chunk]:
        """The windows of ``text`` from character ``start`` on, from the tokens of
        ``text[base:]`` (``ids``, with ``offsets`` relative to ``base``): each window's tokens
        end at its last cut. Only whole windows are kept."""
        size = self.store.chunk_chars if self.store is not None else CHUNK_CHARS
        ends = [base + e for _, e in offsets]
        n = len(ids)
        chunks: list[_Chunk] = []
        taken, cut = 0, base  # tokens already in a window, and where they end
        for end in range(start + size, len(text) + 1, size):
            # The last token ending in this window at a cut, looking back from the window's end.
            j = bisect.bisect_right(ends, end, lo=taken)
            while j > taken:
                token_end = ends[j - 1]
                if _safe_cut(text, token_end) and (j == n or ends[j] > token_end):
                    break
                j -= 1
            if j > taken:
                cut = ends[j - 1]
            chunks.append(_Chunk(array("I", ids[taken:j]), cut))
            taken = j
        return chunks

    def _splits_exactly(self) -> bool:
        """Whether tokenizing the text after a cut apart gives the whole text's tokens."""
        whole = self._tokenizer.encode(_PROBE, add_special_tokens=False)
        for p in range(1, len(_PROBE)):
            if not _safe_cut(_PROBE, p):
                continue
            before = [t for t, (_, e) in zip(whole.ids, whole.offsets, strict=True) if e <= p]
            after = self._tokenizer.encode(_PROBE[p:], add_special_tokens=False).ids
            if before + after != whole.ids:
                return False
        return True

    # ------------------------------------------------------------------ requests

    def texts(self, request: InferenceRequest) -> list[tuple[str, bool]] | None:
        """The texts the model server tokenizes for the request, each with whether special
        tokens are added; None for inputs this tokenizer does not render."""
        kind = request.kind
        if kind is ApiKind.CHAT_COMPLETIONS and self._template is not None:
            return [(self.render_chat(request.messages or [], request.tools), False)]
        prompt = request.prompt
        if kind is ApiKind.COMPLETIONS:
            if isinstance(prompt, str):
                return [(prompt, True)]
            if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
                return [(p, True) for p in prompt]
        return None

    def tokenize(self, request: InferenceRequest) -> TokenizedPrompt:
        """The request's prompt tokens as its model server will count them; the estimate
        (not exact) for inputs this tokenizer does not render (responses, embeddings of
        structured input)."""
        texts = self.texts(request)
        if texts is None:
            return estimate(request)
        each = tuple(self.encode(t, add_special_tokens=s) for t, s in texts)
        return TokenizedPrompt(each, sum(map(len, each)), exact=True)

    async def tokenize_async(self, request: InferenceRequest) -> TokenizedPrompt:
        """``tokenize``, long texts tokenized on a worker thread."""
        texts = self.texts(request)
        if texts is None:
            return estimate(request)
        each = tuple([await self.encode_async(t, add_special_tokens=s) for t, s in texts])
        return TokenizedPrompt(each, sum(map(len, each)), exact=True)

    def statistics(self) -> dict[str, object]:
        store = self.store
        return {
            "tokenizer": self.name,
            "prefixStore": None
            if store is None
            else {"chunks": len(store), "hits": store.hits, "misses": store.misses},
        }
