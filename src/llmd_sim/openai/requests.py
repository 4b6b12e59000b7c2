"""Validation of OpenAI requests, in the order and with the outcomes of vLLM 0.32.

1. The body must be JSON of the request schema (FastAPI/pydantic, lax coercions: ``"5"`` is a
   valid integer). Failures are 400 ``"Bad Request"``.
2. The model must be served (a served name or a LoRA adapter; absent means the first name).
   Failure is 404 with the list of valid names.
3. Sampling parameters are checked (``n``, greedy with ``n > 1``, empty stop strings,
   ``max_tokens``), then the prompt is tokenized and checked against the context window. A prompt
   longer than ``max_model_len`` is refused (400 in vLLM; the status is configurable because
   some deployments put a 413 there). A ``max_tokens`` that does not fit beside the prompt is
   clamped to what fits, as vLLM 0.32 does; chat requests without ``max_tokens`` get the rest of
   the window, completions get 16 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from llmd_sim.generation import SamplingSpec
from llmd_sim.openai.errors import ApiError, shape_error
from llmd_sim.tokenizer import ChatFormatError, Tokenizer, message_text

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "GenerationRequest",
    "Kind",
    "ModelCatalog",
    "PromptInput",
    "parse_generation",
    "parse_tokenize",
]

Kind = Literal["chat", "completion"]
_DECODER: Final = msgspec.json.Decoder()
_MAX_N: Final = 128
_COMPLETION_DEFAULT_MAX_TOKENS: Final = 16


@dataclass(frozen=True, slots=True)
class ModelCatalog:
    """What a server serves and how it answers: names, adapters, context window."""

    model_names: tuple[str, ...]
    lora_names: tuple[str, ...]
    max_model_len: int
    tokenizer: Tokenizer
    echo: bool = False
    context_length_status: int = 400

    def resolve(self, model: str | None) -> tuple[str, str | None]:
        """(model name to report, LoRA adapter or None)."""
        if model is None or model == "":
            return self.model_names[0], None
        if model in self.model_names:
            return model, None
        if model in self.lora_names:
            return model, model
        raise ApiError(
            404,
            f"The model `{model}` does not exist. Valid aliases: {', '.join(self.model_names)}.",
            "model",
            "NotFoundError",
        )


@dataclass(frozen=True, slots=True)
class PromptInput:
    token_ids: list[int]
    echo_ids: list[int]
    echo_texts: list[str]
    is_text: bool = True


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

    @property
    def num_choices(self) -> int:
        return self.n * len(self.prompts)


class _Body:
    """Typed reads of a decoded JSON body, with pydantic's lax coercions and error texts."""

    def __init__(self, raw: bytes) -> None:
        try:
            data = _DECODER.decode(raw)
        except msgspec.DecodeError as exc:
            text = str(exc)
            pos = text.rsplit("byte ", 1)[-1].rstrip(")") if "byte " in text else "0"
            raise shape_error(
                f"body.{pos}",
                "json_invalid",
                "JSON decode error",
                {},
                {"error": text.split(" (byte", maxsplit=1)[0]},
            ) from None
        if not isinstance(data, dict):
            raise shape_error(
                "body",
                "model_attributes_type",
                "Input should be a valid dictionary or object to extract fields from",
                data,
            )
        self.data: dict[str, Any] = data

    def get_int(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if value.is_integer():
                return int(value)
            raise shape_error(
                f"body.{key}",
                "int_from_float",
                "Input should be a valid integer, got a number with a fractional part",
                value,
            )
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise shape_error(
                    f"body.{key}",
                    "int_parsing",
                    "Input should be a valid integer, unable to parse string as an integer",
                    value,
                ) from None
        raise shape_error(f"body.{key}", "int_type", "Input should be a valid integer", value)

    def get_float(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise shape_error(f"body.{key}", "float_parsing", "Input should be a valid number", value)

    def get_bool(
        self,
        key: str,
        default: bool = False,
        where: Mapping[str, Any] | None = None,
        loc: str | None = None,
    ) -> bool:
        source = self.data if where is None else where
        value = source.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in {
            "true",
            "false",
            "yes",
            "no",
            "on",
            "off",
            "1",
            "0",
            "t",
            "f",
            "y",
            "n",
        }:
            return value.lower() in {"true", "yes", "on", "1", "t", "y"}
        raise shape_error(
            loc or f"body.{key}",
            "bool_parsing",
            "Input should be a valid boolean, unable to interpret input",
            value,
        )

    def get_str(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None or isinstance(value, str):
            return value
        raise shape_error(f"body.{key}", "string_type", "Input should be a valid string", value)

    def stop(self) -> tuple[str, ...]:
        stop = self.data.get("stop")
        if stop is None:
            return ()
        items = [stop] if isinstance(stop, str) else stop
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise shape_error("body.stop", "string_type", "Input should be a valid string", stop)
        if "" in items:
            raise ApiError.parameter("stop cannot contain an empty string.", None)
        return tuple(items)

    def token_list(self, key: str) -> tuple[int, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            return tuple(value)
        raise shape_error(f"body.{key}", "list_type", "Input should be a valid list", value)


def _chat_prompt(body: _Body, tokenizer: Tokenizer) -> PromptInput:
    messages = body.data.get("messages")
    if messages is None:
        raise shape_error("body.messages", "missing", "Field required", body.data)
    if not isinstance(messages, list):
        raise shape_error("body.messages", "list_type", "Input should be a valid list", messages)
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise shape_error(
                f"body.messages.{i}", "dict_type", "Input should be a valid dictionary", message
            )
        if "role" not in message:
            raise shape_error(f"body.messages.{i}.role", "missing", "Field required", message)
    if not messages:
        raise ApiError(
            400,
            "The chat request must contain at least one message.",
            "messages",
            "BadRequestError",
        )
    add_generation_prompt = body.get_bool("add_generation_prompt", default=True)
    try:
        text = tokenizer.render_chat(messages, add_generation_prompt=add_generation_prompt)
        users = [m for m in messages if m.get("role") == "user"]
        echo_text = message_text(users[-1] if users else messages[-1], len(messages) - 1)
    except ChatFormatError as exc:
        raise ApiError(400, str(exc), None, "BadRequestError") from None
    return PromptInput(
        tokenizer.encode(text), tokenizer.encode(echo_text), tokenizer.pieces(echo_text)
    )


def _is_token_list(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


def _completion_prompts(body: _Body, tokenizer: Tokenizer) -> list[PromptInput]:
    prompt = body.data.get("prompt")
    if prompt is None:
        raise shape_error("body.prompt", "missing", "Field required", body.data)
    if isinstance(prompt, str) or _is_token_list(prompt):
        items: list[object] = [prompt]
    elif isinstance(prompt, list) and prompt:
        items = list(prompt)
    else:
        raise ApiError.parameter("Prompt cannot be empty.", "prompt")
    out: list[PromptInput] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            ids = tokenizer.encode(item, add_bos=True)
            out.append(PromptInput(ids, ids[1:], tokenizer.pieces(item)))
        elif _is_token_list(item):
            assert isinstance(item, list)
            bad = [t for t in item if not 0 <= t < tokenizer.vocab_size]
            if bad:
                raise ApiError.parameter(
                    f"Token id {bad[0]} is out of vocabulary", "prompt", bad[0]
                )
            texts = [tokenizer.special_text(t) or f"<{t}>" for t in item]
            out.append(PromptInput(list(item), list(item), texts, is_text=False))
        else:
            raise shape_error(
                f"body.prompt.{i}", "string_type", "Input should be a valid string", item
            )
    return out


def _context_error(catalog: ModelCatalog, prompt: PromptInput) -> ApiError:
    limit = catalog.max_model_len
    count = f"at least {limit + 1}" if prompt.is_text else str(len(prompt.token_ids))
    value = limit + 1 if prompt.is_text else len(prompt.token_ids)
    return ApiError.parameter(
        f"This model's maximum context length is {limit} tokens. However, your prompt "
        f"contains {count} input tokens, which exceeds this limit even without any output "
        "tokens. Please reduce the length of the input prompt.",
        "input_tokens",
        value,
        status=catalog.context_length_status,
    )


def parse_generation(kind: Kind, raw: bytes, catalog: ModelCatalog) -> GenerationRequest:
    """Validate a chat or completion request as vLLM does and tokenize its prompt(s)."""
    body = _Body(raw)
    tokenizer = catalog.tokenizer
    model_field = body.get_str("model")
    stream = body.get_bool("stream")
    options = body.data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise shape_error(
            "body.stream_options",
            "model_type",
            "Input should be a valid dictionary or instance of StreamOptions",
            options,
        )
    n = body.get_int("n")
    max_tokens = body.get_int("max_tokens")
    max_name = "max_tokens"
    if kind == "chat" and (mct := body.get_int("max_completion_tokens")) is not None:
        max_tokens, max_name = mct, "max_completion_tokens"
    min_tokens = body.get_int("min_tokens") or 0
    seed = body.get_int("seed")
    temperature = body.get_float("temperature")
    stop = body.stop()
    stop_ids = body.token_list("stop_token_ids")
    ignore_eos = body.get_bool("ignore_eos")
    include_stop = body.get_bool("include_stop_str_in_output")
    include_usage = continuous = False
    if options is not None:
        include_usage = body.get_bool("include_usage", True, options, "body.stream_options")
        continuous = body.get_bool("continuous_usage_stats", False, options, "body.stream_options")
    prompts = (
        [_chat_prompt(body, tokenizer)] if kind == "chat" else _completion_prompts(body, tokenizer)
    )

    model, lora = catalog.resolve(model_field)

    if options is not None and not stream:
        raise ApiError.parameter(
            "Stream options can only be defined when `stream=True`.", "stream_options"
        )
    n = 1 if n is None else n
    if n < 1:
        raise ApiError(400, f"n must be at least 1, got {n}.", None, "BadRequestError")
    if n > _MAX_N:
        raise ApiError(
            400,
            f"n must be at most {_MAX_N}, got {n}. To increase this limit, set "
            "the VLLM_MAX_N_SEQUENCES environment variable.",
            None,
            "BadRequestError",
        )
    if temperature == 0.0 and n > 1:
        raise ApiError(
            400, f"n must be 1 when using greedy sampling, got {n}.", None, "BadRequestError"
        )
    limit = catalog.max_model_len
    if max_tokens is not None and max_tokens > limit:
        raise ApiError.parameter(
            f"{max_name}={max_tokens} cannot be greater than "
            f"max_model_len={limit}. Please request fewer output tokens.",
            max_name,
            max_tokens,
        )
    longest = max(prompts, key=lambda p: len(p.token_ids))
    if len(longest.token_ids) > limit:
        raise _context_error(catalog, longest)
    room = limit - len(longest.token_ids)
    if max_tokens is None:
        max_tokens = room if kind == "chat" else _COMPLETION_DEFAULT_MAX_TOKENS
    effective = min(max_tokens, room)
    if effective < 1:
        raise ApiError.parameter(
            f"max_tokens must be at least 1, got {effective}.", "max_tokens", effective
        )
    if min_tokens > effective:
        raise ApiError.parameter(
            f"min_tokens must be less than or equal to max_tokens={effective}, got {min_tokens}.",
            "min_tokens",
            min_tokens,
        )
    spec = SamplingSpec(
        max_tokens=effective,
        min_tokens=min_tokens,
        ignore_eos=ignore_eos,
        stop=stop,
        stop_token_ids=stop_ids,
        include_stop_str_in_output=include_stop,
        seed=seed,
    )
    return GenerationRequest(
        kind, model, lora, tuple(prompts), n, stream, include_usage, continuous, spec
    )


def parse_tokenize(raw: bytes, catalog: ModelCatalog) -> list[int]:
    """``/tokenize``: ``{"prompt": ...}`` or ``{"messages": [...]}``."""
    body = _Body(raw)
    tokenizer = catalog.tokenizer
    catalog.resolve(body.get_str("model"))
    if "messages" in body.data:
        add_generation_prompt = body.get_bool("add_generation_prompt", default=True)
        if add_generation_prompt and body.get_bool("continue_final_message"):
            raise ApiError(
                400,
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
                None,
                "BadRequestError",
            )
        messages = body.data["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise shape_error(
                "body.messages", "list_type", "Input should be a valid list", messages
            )
        try:
            text = tokenizer.render_chat(messages, add_generation_prompt=add_generation_prompt)
        except ChatFormatError as exc:
            raise ApiError(400, str(exc), None, "BadRequestError") from None
        return tokenizer.encode(text)
    prompt = body.get_str("prompt")
    if prompt is None:
        raise shape_error("body.prompt", "missing", "Field required", body.data)
    return tokenizer.encode(prompt, add_bos=body.get_bool("add_special_tokens", default=True))
