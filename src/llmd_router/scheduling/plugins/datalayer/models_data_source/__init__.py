"""``models-data-source``: GET each endpoint's OpenAI model list (``/v1/models``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from llmd_router.datalayer.http import TlsOptions
from llmd_router.scheduling.framework import Params, Plugin, Stability
from llmd_router.scheduling.plugins.datalayer import HttpSource, check_interval, check_port

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import Endpoint

__all__ = ["OPENAI_MODELS", "ModelsDataSource", "ModelsDataSourceParams"]

OPENAI_MODELS = "openai-models-json"


class ModelsDataSourceParams(Params, frozen=True):
    scheme: Literal["http", "https"] = "http"
    path: str = "/v1/models"
    port: int = 0
    insecure_skip_verify: bool = True
    interval: str = ""

    def __post_init__(self) -> None:
        check_port(self.port)
        check_interval(self.interval)


class ModelsDataSource(Plugin[ModelsDataSourceParams]):
    """Polls ``{scheme}://{address}:{port}{path}`` of every endpoint, on every tick unless
    ``interval`` says otherwise (the list rarely changes: ``interval: 5s`` is plenty)."""

    TYPE: ClassVar[str] = "models-data-source"
    Params: ClassVar[type[Any]] = ModelsDataSourceParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    output: ClassVar[str] = OPENAI_MODELS

    def __init__(self, name: str, params: ModelsDataSourceParams) -> None:
        super().__init__(name, params)
        self.interval_s = check_interval(params.interval)
        self._http = HttpSource(
            scheme=params.scheme,
            path=params.path,
            port=params.port,
            tls=TlsOptions(insecure_skip_verify=params.insecure_skip_verify),
            accept="application/json",
        )

    async def poll(self, endpoint: Endpoint) -> bytes:
        return await self._http.fetch(endpoint)

    def forget(self, endpoint: Endpoint) -> None:
        self._http.forget(endpoint)

    def close(self) -> None:
        self._http.close()
