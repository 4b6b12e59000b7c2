"""The OpenAI API as vLLM serves it: request validation and response encoding, without I/O.

Requests are validated the way vLLM validates them and fail with vLLM's error body
``{"error": {"message", "type", "param", "code"}}``. Responses, stream chunks and the usage chunk
reproduce vLLM 0.32's JSON field for field (null fields included), because a router that parses
them must meet the same bytes it will meet in production.

Stream chunks are built from pre-encoded prefixes and suffixes so that a token costs one JSON
string encoding and a concatenation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from llmd_sim.generation import OutputPlan, SamplingSpec
from llmd_sim.tokenizer import ChatFormatError, Tokenizer, message_text

__all__ = [
    "ApiError",
    "ChunkEncoder",
    "GenerationRequest",
    "ModelCatalog",
    "PromptInput",
    "chat_response",
    "completion_response",
    "error_body",
    "parse_generation",
    "parse_tokenize",
]

SYSTEM_FINGERPRINT: Final = "vllm-0.32.0-llmdsim"
_JSON: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder()
Kind = Literal["chat", "completion"]

_ERROR_TYPES: Final = {400: "BadRequestError", 401: "UnauthorizedError", 404: "NotFoundError",
                       413: "BadRequestError", 429: "RateLimitError",
                       500: "InternalServerError", 503: "ServiceUnavailableError"}


class ApiError(Exception):
    """A request that vLLM would refuse, with its HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 err_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.err_type = err_type or _ERROR_TYPES.get(status, "BadRequestError")

    def body(self) -> bytes:
        return error_body(self.status, self.message, self.err_type, self.param)


def error_body(status: int, message: str, err_type: str | None = None,
               param: str | None = None) -> bytes:
    return _JSON.encode({"error": {
        "message": message, "type": err_type or _ERROR_TYPES.get(status, "BadRequestError"),
        "param": param, "code": status,
    }})


@dataclass(frozen=True, slots=True)
class ModelCatalog:
    """What a server serves: the names of its base model, its adapters, its context window."""

    model_names: tuple[str, ...]
    lora_names: tuple[str, ...]
    max_model_len: int
    tokenizer: Tokenizer
    echo: bool = False

    def resolve(self, model: object) -> tuple[str, str | None]:
        """(model name to report, LoRA adapter or None). Missing model: the base model."""
        if model is None:
            return self.model_names[0], None
        if not isinstance(model, str):
            raise ApiError(400, "'model' must be a string", "model")
        if model in self.model_names:
            return model, None
        if model in self.lora_names:
            return model, model
        raise ApiError(404, f"The model `{model}` does not exist.", "model", "NotFoundError")


@dataclass(frozen=True, slots=True)
class PromptInput:
    token_ids: list[int]
    echo_ids: list[int]
    echo_texts: list[str]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    kind: Kind
    model: str
    lora: str | None
    prompts: tuple[PromptInput, ...]
    n: int
    stream: bool
    include_usage: bool
    continuous_usage: bool
    spec: SamplingSpec
    max_tokens_given: int | None

    @property
    def num_choices(self) -> int:
        return self.n * len(self.prompts)


def _decode(body: bytes) -> dict[str, Any]:
    try:
        data = _DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"Invalid JSON in request body: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object")
    return data


def _opt_int(data: Mapping[str, Any], key: str, minimum: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{key}' must be an integer, got {value!r}", key)
    if value < minimum:
        raise ApiError(400, f"{key} must be at least {minimum}, got {value}.", key)
    return value


def _opt_bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"'{key}' must be a boolean, got {value!r}", key)
    return value


def _stop_strings(data: Mapping[str, Any]) -> tuple[str, ...]:
    stop = data.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(s for s in stop if s)
    raise ApiError(400, "'stop' must be a string or a list of strings", "stop")


def _stop_token_ids(data: Mapping[str, Any]) -> tuple[int, ...]:
    ids = data.get("stop_token_ids")
    if ids is None:
        return ()
    if isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return tuple(ids)
    raise ApiError(400, "'stop_token_ids' must be a list of integers", "stop_token_ids")


def _chat_prompt(data: Mapping[str, Any], tokenizer: Tokenizer) -> PromptInput:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of messages", "messages")
    if not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "each entry of 'messages' must be an object", "messages")
    add_generation_prompt = data.get("add_generation_prompt", True)
    try:
        text = tokenizer.render_chat(messages, add_generation_prompt=add_generation_prompt is True)
        users = [m for m in messages if m.get("role") == "user"]
        echo_text = message_text(users[-1] if users else messages[-1], 0)
    except ChatFormatError as exc:
        raise ApiError(400, str(exc), "messages") from None
    pieces = tokenizer.pieces(echo_text)
    return PromptInput(tokenizer.encode(text), tokenizer.encode(echo_text), pieces)


def _completion_prompts(data: Mapping[str, Any], tokenizer: Tokenizer) -> list[PromptInput]:
    prompt = data.get("prompt")
    if isinstance(prompt, str):
        items: list[object] = [prompt]
    elif isinstance(prompt, list) and prompt:
        items = [prompt] if all(isinstance(t, int) and not isinstance(t, bool)
                                for t in prompt) else list(prompt)
    else:
        raise ApiError(400, "'prompt' must be a string, a list of strings, a list of token ids "
                       "or a list of lists of token ids, and not empty", "prompt")
    out: list[PromptInput] = []
    for item in items:
        if isinstance(item, str):
            ids = tokenizer.encode(item, add_bos=True)
            out.append(PromptInput(ids, ids[1:], tokenizer.pieces(item)))
        elif isinstance(item, list) and item and all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < tokenizer.vocab_size
                for t in item):
            texts = [tokenizer.special_text(t) or f"<{t}>" for t in item]
            out.append(PromptInput(list(item), list(item), texts))
        else:
            raise ApiError(400, "'prompt' entries must be strings or non-empty lists of token ids "
                           f"below the vocabulary size {tokenizer.vocab_size}", "prompt")
    return out


def parse_generation(kind: Kind, body: bytes, catalog: ModelCatalog) -> GenerationRequest:
    """Validate a chat or completion request as vLLM does and tokenize its prompt(s)."""
    data = _decode(body)
    model, lora = catalog.resolve(data.get("model"))
    tokenizer = catalog.tokenizer
    prompts = ([_chat_prompt(data, tokenizer)] if kind == "chat"
               else _completion_prompts(data, tokenizer))
    n = _opt_int(data, "n", 1) or 1
    stream = _opt_bool(data, "stream")
    options = data.get("stream_options")
    if options is not None:
        if not stream:
            raise ApiError(400, "Stream options can only be defined when `stream=True`.",
                           "stream_options")
        if not isinstance(options, dict):
            raise ApiError(400, "'stream_options' must be an object", "stream_options")
    include_usage = bool(options and options.get("include_usage"))
    continuous = bool(options and options.get("continuous_usage_stats"))
    max_tokens = _opt_int(data, "max_tokens", 1)
    if kind == "chat":
        max_tokens = _opt_int(data, "max_completion_tokens", 1) or max_tokens
    min_tokens = _opt_int(data, "min_tokens", 0) or 0
    longest = max(len(p.token_ids) for p in prompts)
    limit = catalog.max_model_len
    if longest > limit:
        raise ApiError(413, f"This model's maximum context length is {limit} tokens. However, "
                       f"your request has {longest} input tokens. Please reduce the length of "
                       "the input messages.", "input_tokens")
    if max_tokens is not None and longest + max_tokens > limit:
        raise ApiError(413, f"This model's maximum context length is {limit} tokens. However, "
                       f"you requested {longest + max_tokens} tokens ({longest} in the messages, "
                       f"{max_tokens} in the completion). Please reduce the length of the "
                       "messages or completion.", "max_tokens")
    if max_tokens is not None and min_tokens > max_tokens:
        raise ApiError(400, f"min_tokens must be less than or equal to max_tokens={max_tokens}, "
                       f"got {min_tokens}.", "min_tokens")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ApiError(400, "'seed' must be an integer", "seed")
    spec = SamplingSpec(
        max_tokens=max_tokens if max_tokens is not None else limit - longest,
        min_tokens=min_tokens,
        ignore_eos=_opt_bool(data, "ignore_eos"),
        stop=_stop_strings(data),
        stop_token_ids=_stop_token_ids(data),
        include_stop_str_in_output=_opt_bool(data, "include_stop_str_in_output"),
        seed=seed,
    )
    if spec.max_tokens < 1:
        raise ApiError(413, f"This model's maximum context length is {limit} tokens and your "
                       f"request has {longest} input tokens, leaving no room for output.",
                       "input_tokens")
    return GenerationRequest(kind, model, lora, tuple(prompts), n, stream, include_usage,
                             continuous, spec, max_tokens)


def parse_tokenize(body: bytes, catalog: ModelCatalog) -> list[int]:
    """``/tokenize``: ``{"prompt": ...}`` or ``{"messages": [...]}``."""
    data = _decode(body)
    catalog.resolve(data.get("model"))
    tokenizer = catalog.tokenizer
    if "messages" in data:
        add_generation_prompt = data.get("add_generation_prompt", True) is True
        messages = data["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ApiError(400, "'messages' must be a list of messages", "messages")
        try:
            text = tokenizer.render_chat(messages, add_generation_prompt=add_generation_prompt)
        except ChatFormatError as exc:
            raise ApiError(400, str(exc), "messages") from None
        return tokenizer.encode(text)
    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        raise ApiError(400, "'prompt' (a string) or 'messages' is required", "prompt")
    add_special = data.get("add_special_tokens", True) is not False
    return tokenizer.encode(prompt, add_bos=add_special)


# ---------------------------------------------------------------------------- responses


def _usage(prompt: int, completion: int, cached: int | None) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "total_tokens": prompt + completion,
                             "completion_tokens": completion}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


@dataclass(frozen=True, slots=True)
class Choice:
    """What one finished sequence contributes to a non-streamed response."""

    index: int
    plan: OutputPlan


def chat_response(request_id: str, created: int, model: str, choices: Sequence[Choice],
                  prompt_tokens: int, cached: int | None) -> bytes:
    completion = sum(len(c.plan) for c in choices)
    usage = _usage(prompt_tokens, completion, cached)
    usage.setdefault("prompt_tokens_details", None)
    usage["completion_tokens_details"] = None
    return _JSON.encode({
        "id": request_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{
            "index": c.index,
            "message": {"role": "assistant", "content": c.plan.text, "refusal": None,
                        "annotations": None, "audio": None, "function_call": None,
                        "reasoning": None},
            "logprobs": None, "finish_reason": c.plan.finish_reason,
            "stop_reason": c.plan.stop_reason, "token_ids": None, "routed_experts": None,
        } for c in choices],
        "service_tier": None, "system_fingerprint": SYSTEM_FINGERPRINT, "usage": usage,
        "prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None,
        "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None,
    })


def completion_response(request_id: str, created: int, model: str, choices: Sequence[Choice],
                        prompt_tokens: int, cached: int | None) -> bytes:
    completion = sum(len(c.plan) for c in choices)
    usage = _usage(prompt_tokens, completion, cached)
    usage.setdefault("prompt_tokens_details", None)
    usage["completion_tokens_details"] = None
    return _JSON.encode({
        "id": request_id, "object": "text_completion", "created": created, "model": model,
        "choices": [{
            "index": c.index, "text": c.plan.text, "logprobs": None,
            "finish_reason": c.plan.finish_reason, "stop_reason": c.plan.stop_reason,
            "token_ids": None, "prompt_logprobs": None, "prompt_token_ids": None,
            "routed_experts": None,
        } for c in choices],
        "service_tier": None, "system_fingerprint": SYSTEM_FINGERPRINT, "usage": usage,
        "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None,
    })


class ChunkEncoder:
    """Server-sent-event frames of one streamed response, in vLLM's layout."""

    __slots__ = ("_head", "_kind", "_usage_head")

    def __init__(self, kind: Kind, request_id: str, created: int, model: str) -> None:
        self._kind = kind
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        head = (f'{{"id":{_JSON.encode(request_id).decode()},"object":"{obj}",'
                f'"created":{created},"model":{_JSON.encode(model).decode()},')
        self._head = head.encode()
        self._usage_head = self._head + b'"choices":[],"usage":'

    def role(self, index: int) -> bytes:
        """The first chunk of a chat choice: the assistant role and empty content."""
        return (b"data: " + self._head + b'"choices":[{"index":%d,"delta":{"role":"assistant",'
                b'"content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null,'
                b'"prompt_text":null}\n\n' % index)

    def token(self, index: int, text: str, finish_reason: str | None = None,
              stop_reason: str | int | None = None, usage: bytes | None = None) -> bytes:
        """A chunk carrying ``text`` for choice ``index``; the last one has a finish reason."""
        encoded = _JSON.encode(text)
        if self._kind == "chat":
            body = b'{"index":%d,"delta":{"content":%s},"logprobs":null,' % (index, encoded)
        else:
            body = b'{"index":%d,"text":%s,"logprobs":null,' % (index, encoded)
        if finish_reason is None:
            body += b'"finish_reason":null,"stop_reason":null,"token_ids":null}' \
                if self._kind == "completion" else b'"finish_reason":null,"token_ids":null}'
        else:
            body += b'"finish_reason":"%s","stop_reason":%s,"token_ids":null}' % (
                finish_reason.encode(), _JSON.encode(stop_reason))
        tail = b"]" + (b',"usage":' + usage if usage is not None else b"") + b"}\n\n"
        return b"data: " + self._head + b'"choices":[' + body + tail

    def usage(self, prompt: int, completion: int, cached: int | None) -> bytes:
        """The final usage chunk (``stream_options.include_usage``)."""
        return (b"data: " + self._usage_head + _JSON.encode(_usage(prompt, completion, cached))
                + b',"system_fingerprint":"' + SYSTEM_FINGERPRINT.encode() + b'"}\n\n')

    @staticmethod
    def usage_object(prompt: int, completion: int, cached: int | None) -> bytes:
        return _JSON.encode(_usage(prompt, completion, cached))

    @staticmethod
    def error(status: int, message: str) -> bytes:
        return b"data: " + error_body(status, message) + b"\n\n"

    DONE: Final = b"data: [DONE]\n\n"


def new_created() -> int:
    return int(time.time())
