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


class TokenProducerParams(Params, frozen=True):
    model_name: str = ""
    local: LocalTokenizerParams | None = None
    # llm-d's backends that call a service; refused with a clear message until they exist here.
    vllm: dict[str, Any] | None = None
    uds_tokenizer_config: dict[str, Any] | None = None
    # llm-d's media placeholder estimates; accepted, and one placeholder token is used per item.
    estimate: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.vllm is not None:
            raise ValueError(
                "the 'vllm' backend (tokenizing through the model server) is not available "
                "in this version; remove it to use the 'estimate' backend"
            )
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
        if cycle.get(TOKENIZED_PROMPT) is not None or self.tokenizer is None:
            return
        cycle.put(TOKENIZED_PROMPT, await self.tokenizer.tokenize_async(request))

    def statistics(self) -> Mapping[str, object]:
        if self.tokenizer is None:
            return {"backend": "estimate"}
        return {"backend": "local", **self.tokenizer.statistics()}
