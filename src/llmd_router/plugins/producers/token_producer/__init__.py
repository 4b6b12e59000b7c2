"""``token-producer``: the request's prompt as tokens, for every plugin that measures prompts.

Theory of operation. ``produce`` writes ``TOKENIZED_PROMPT`` once per request; the prefix
producers hash it, the in-flight load producer counts it. It is the default producer of that
key, so a configuration that needs tokens and names no token producer gets one, with the
``estimate`` backend.

- ``estimate`` (the default): no model, no service. The prompt's deterministic rendering
  (``llmd_router.parsing.prompt``) read at four bytes to a token, as llm-d's estimate backend
  packs it. Token ids in the request (a completion's ``prompt: [1, 2, 3]``) are taken as they
  are and are exact.
- ``local`` (``local.path``: a model directory): the model's own tokenizer and chat template,
  run in the router as vLLM runs them (``llmd_router.parsing.tokenization``), with a prefix
  store so that a long prefix already seen is not tokenized again. Its tokens are the model's:
  what precise prefix matching needs. The producer then waits (``produce_async``): a long
  text is tokenized on a worker thread, within ``local.timeout``.
- ``vllm`` (``vllm.url``): the model server tokenizes (``POST /tokenize``, ``remote.py``),
  within ``vllm.timeout``; its tokens are the model's too. A failure (the server down, an
  error) is logged and the request goes on without tokens.

An earlier producer's ``TOKENIZED_PROMPT`` is kept (the plugin is idempotent, as llm-d's).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.framework import (
    TOKENIZED_PROMPT,
    DataKey,
    Params,
    Plugin,
    Stability,
)
from llmd_router.parsing.prompt import estimate
from llmd_router.parsing.tokenization import (
    MAX_CHUNKS,
    LocalTokenizer,
    PrefixTokenStore,
    TokenizerError,
)
from llmd_router.plugins.producers.token_producer.remote import RemoteTokenizer

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["TokenProducer", "TokenProducerParams"]

_log = logging.getLogger(__name__)


class LocalTokenizerParams(Params, frozen=True):
    path: str
    prefix_store_chunks: int = MAX_CHUNKS  # windows of 256 characters kept (0: no store)
    timeout: str = "5s"  # llm-d's text timeout: past it, the request goes on without tokens

    def __post_init__(self) -> None:
        if self.prefix_store_chunks < 0:
            raise ValueError(f"prefixStoreChunks must be >= 0, got {self.prefix_store_chunks}")
        if not self.timeout.endswith(("ms", "s")) or _seconds(self.timeout) <= 0:
            raise ValueError(
                f"timeout must be a positive duration (5s, 500ms), got {self.timeout!r}"
            )

    @property
    def timeout_s(self) -> float:
        return _seconds(self.timeout)


def _seconds(text: str) -> float:
    try:
        if text.endswith("ms"):
            return float(text[:-2]) / 1000
        return float(text[:-1])
    except ValueError:
        return -1.0


class VllmParams(Params, frozen=True):
    url: str = ""
    http: str = ""  # the name llm-d's sample configuration uses for the url
    timeout: str = "5s"
    mm_timeout: str = "30s"  # accepted; media items are not sent

    def __post_init__(self) -> None:
        base = self.base_url
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"vllm.url must be an http:// or https:// URL, got {base!r}")
        if not self.timeout.endswith(("ms", "s")) or _seconds(self.timeout) <= 0:
            raise ValueError(f"vllm.timeout must be a positive duration, got {self.timeout!r}")

    @property
    def base_url(self) -> str:
        return self.url or self.http or "http://localhost:8000"


class TokenProducerParams(Params, frozen=True):
    model_name: str = ""
    local: LocalTokenizerParams | None = None
    vllm: VllmParams | None = None
    # llm-d's deprecated tokenizer sidecar; refused with a clear message.
    uds_tokenizer_config: dict[str, Any] | None = None
    # llm-d's media placeholder estimates; accepted, and one placeholder token is used per item.
    estimate: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.vllm is not None and self.local is not None:
            raise ValueError("configure one backend: local or vllm, not both")
        if self.uds_tokenizer_config is not None:
            raise ValueError(
                "udsTokenizerConfig (deprecated in llm-d) is not supported; remove it to use "
                "the 'estimate' backend"
            )


class TokenProducer(Plugin[TokenProducerParams]):
    """The request's prompt tokens (``TOKENIZED_PROMPT``): estimated from its bytes, or the
    model's own from a local tokenizer."""

    TYPE: ClassVar[str] = "token-producer"
    Params: ClassVar[type[Any]] = TokenProducerParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    produces: ClassVar[tuple[DataKey[Any], ...]] = (TOKENIZED_PROMPT,)

    def __init__(self, name: str, params: TokenProducerParams) -> None:
        super().__init__(name, params)
        self.tokenizer: LocalTokenizer | None = None
        local = params.local
        if local is not None:
            chunks = local.prefix_store_chunks
            store = PrefixTokenStore(max_chunks=chunks) if chunks else None
            try:
                self.tokenizer = LocalTokenizer.from_dir(local.path, store=store)
            except (TokenizerError, OSError) as exc:
                raise ValueError(f"local.path: {exc}") from None
            # With a tokenizer it waits: a long prompt is tokenized on a worker thread, and
            # the router serves other requests meanwhile.
            self.produce_async = self._tokenize
            self.produce_timeout_s = local.timeout_s
        self.remote: RemoteTokenizer | None = None
        if params.vllm is not None:
            self.remote = RemoteTokenizer(params.vllm.base_url, params.model_name)
            self.produce_async = self._tokenize
            self.produce_timeout_s = _seconds(params.vllm.timeout)
        if params.estimate:
            _log.info(
                "plugin %r: media placeholder estimates are not tuned here; each image, video "
                "or audio item counts one token",
                name,
            )

    def produce(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> None:
        if cycle.get(TOKENIZED_PROMPT) is not None:
            return
        tokenizer = self.tokenizer
        cycle.put(
            TOKENIZED_PROMPT,
            estimate(request) if tokenizer is None else tokenizer.tokenize(request),
        )

    async def _tokenize(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> None:
        if cycle.get(TOKENIZED_PROMPT) is not None:
            return
        if self.remote is not None:
            cycle.put(TOKENIZED_PROMPT, await self.remote.tokenize(request))
        elif self.tokenizer is not None:
            cycle.put(TOKENIZED_PROMPT, await self.tokenizer.tokenize_async(request))

    async def aclose(self) -> None:
        """Release the tokenizer service's connections."""
        if self.remote is not None:
            await self.remote.aclose()

    def statistics(self) -> Mapping[str, object]:
        if self.remote is not None:
            remote = self.remote
            return {
                "backend": "vllm",
                "url": remote.url,
                "connected": remote.connected,
                "calls": remote.calls,
                "failures": remote.failures,
            }
        if self.tokenizer is None:
            return {"backend": "estimate"}
        return {"backend": "local", **self.tokenizer.statistics()}
