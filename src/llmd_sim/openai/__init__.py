"""The OpenAI API as vLLM 0.32 serves it: validation, errors and response encoding, no I/O."""

from llmd_sim.openai.errors import ApiError, error_body, shape_error
from llmd_sim.openai.requests import (
    GenerationRequest,
    Kind,
    ModelCatalog,
    PromptInput,
    parse_generation,
    parse_tokenize,
)
from llmd_sim.openai.responses import (
    SYSTEM_FINGERPRINT,
    Choice,
    ChunkEncoder,
    chat_response,
    completion_response,
)

__all__ = [
    "SYSTEM_FINGERPRINT",
    "ApiError",
    "Choice",
    "ChunkEncoder",
    "GenerationRequest",
    "Kind",
    "ModelCatalog",
    "PromptInput",
    "chat_response",
    "completion_response",
    "error_body",
    "parse_generation",
    "parse_tokenize",
    "shape_error",
]
