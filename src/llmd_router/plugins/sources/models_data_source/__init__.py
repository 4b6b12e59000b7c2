"""``models-data-source``: GET each endpoint's OpenAI model list (``/v1/models``)."""

from __future__ import annotations

from typing import Any, ClassVar

from llmd_router.framework import Stability
from llmd_router.plugins.sources import HttpPollingPlugin, HttpSourceParams

__all__ = ["OPENAI_MODELS", "ModelsDataSource", "ModelsDataSourceParams"]

OPENAI_MODELS = "openai-models-json"


class ModelsDataSourceParams(HttpSourceParams, frozen=True):
    path: str = "/v1/models"


class ModelsDataSource(HttpPollingPlugin[ModelsDataSourceParams]):
    """Polls ``{scheme}://{address}:{port}{path}`` of every endpoint, on every tick unless
    ``interval`` says otherwise (the list rarely changes: ``interval: 5s`` is plenty)."""

    TYPE: ClassVar[str] = "models-data-source"
    Params: ClassVar[type[Any]] = ModelsDataSourceParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    ACCEPT: ClassVar[str] = "application/json"
    output: ClassVar[str] = OPENAI_MODELS
