"""``models-data-extractor``: the model ids an endpoint serves, from its ``/v1/models``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from llmd_router.datalayer.endpoints import Signals
from llmd_router.framework import NoParams, Plugin, Stability
from llmd_router.plugins.sources.models_data_source import OPENAI_MODELS

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import Endpoint

__all__ = ["ModelsDataExtractor", "parse_model_list"]


class _Model(msgspec.Struct):
    id: str
    parent: str | None = None


class _ModelList(msgspec.Struct):
    data: list[_Model]


_DECODER = msgspec.json.Decoder(_ModelList)


def parse_model_list(body: bytes) -> tuple[str, ...]:
    """The ids of an OpenAI ``{"object": "list", "data": [{"id": ...}, ...]}``. ValueError when
    the body is not one."""
    try:
        listing = _DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not an OpenAI model list: {exc}") from None
    return tuple(model.id for model in listing.data)


class ModelsDataExtractor(Plugin[NoParams]):
    """Stores the served model ids (base models and LoRA adapters) on the endpoint, where
    ``/debug/endpoints`` shows them and plugins read them as ``endpoint.models``."""

    TYPE: ClassVar[str] = "models-data-extractor"
    Params: ClassVar[type[Any]] = NoParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    input: ClassVar[str] = OPENAI_MODELS

    def extract(self, data: Any, endpoint: Endpoint, now: float) -> Signals:
        try:
            return Signals(models=parse_model_list(data))
        except ValueError as exc:
            return Signals(errors=[str(exc)])
