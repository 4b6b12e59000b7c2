"""Tokens from a model server: ``POST /tokenize``, as vLLM (and the simulator) serve it.

A chat request is sent as its messages (``add_generation_prompt``, its tools), so the server
renders its own chat template; a completion's prompt as text, with special tokens as vLLM adds
them. One HTTP session, kept alive, made on first use; ``aclose`` releases it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec

from llmd_router.parsing.prompt import TokenizedPrompt, estimate
from llmd_router.parsing.request import ApiKind

if TYPE_CHECKING:
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["RemoteTokenizer", "TokenizeError"]


class TokenizeError(RuntimeError):
    """The server did not tokenize: its status or what was wrong with its answer."""


class _Tokens(msgspec.Struct):
    tokens: list[int]


_decode = msgspec.json.Decoder(_Tokens).decode
_encode = msgspec.json.encode


class RemoteTokenizer:
    def __init__(self, base_url: str, model: str) -> None:
        self.url = base_url.rstrip("/") + "/tokenize"
        self.model = model
        self._session: aiohttp.ClientSession | None = None
        self.calls = 0
        self.failures = 0

    @property
    def connected(self) -> bool:
        """Whether it holds an open session."""
        return self._session is not None and not self._session.closed

    def bodies(self, request: InferenceRequest) -> list[dict[str, Any]] | None:
        """What to ask for each of the request's prompts; None: estimate instead."""
        model = self.model or request.target_model or request.model or ""
        if request.kind is ApiKind.CHAT_COMPLETIONS and request.messages:
            body: dict[str, Any] = {
                "model": model,
                "messages": request.messages,
                "add_generation_prompt": True,
            }
            if request.tools:
                body["tools"] = request.tools
            return [body]
        prompt = request.prompt
        if request.kind is ApiKind.COMPLETIONS:
            if isinstance(prompt, str):
                prompt = [prompt]
            if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
                return [{"model": model, "prompt": p, "add_special_tokens": True} for p in prompt]
        return None

    async def tokenize(self, request: InferenceRequest) -> TokenizedPrompt:
        bodies = self.bodies(request)
        if bodies is None:
            return estimate(request)
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession()
        prompts: list[list[int]] = []
        for body in bodies:
            self.calls += 1
            try:
                async with session.post(
                    self.url, data=_encode(body), headers={"content-type": "application/json"}
                ) as reply:
                    payload = await reply.read()
                    if reply.status != 200:
                        text = payload[:200].decode(errors="replace")
                        raise TokenizeError(f"{self.url} answered {reply.status}: {text}")
            except aiohttp.ClientError as exc:
                self.failures += 1
                raise TokenizeError(f"{self.url}: {exc}") from None
            except TokenizeError:
                self.failures += 1
                raise
            try:
                prompts.append(_decode(payload).tokens)
            except msgspec.DecodeError as exc:
                self.failures += 1
                raise TokenizeError(f"{self.url}: not a /tokenize answer: {exc}") from None
        return TokenizedPrompt(tuple(prompts), sum(map(len, prompts)), exact=True)

    async def aclose(self) -> None:
        """Release the session's connections."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
