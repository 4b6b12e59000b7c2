"""Request bodies into InferenceRequests, and token usage out of responses. Pure functions."""

from llmd_router.parsing.openai import api_kind, parse_request, request_path, rewrite_model
from llmd_router.parsing.request import ApiKind, InferenceRequest
from llmd_router.parsing.usage import SseUsageScanner, Usage, usage_from_json

__all__ = [
    "ApiKind",
    "InferenceRequest",
    "SseUsageScanner",
    "Usage",
    "api_kind",
    "parse_request",
    "request_path",
    "rewrite_model",
    "usage_from_json",
]
