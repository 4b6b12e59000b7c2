"""Pipelines from a few lines of configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmd_router.config import API_VERSION, load_config
from llmd_router.pipeline import build_pipeline
from llmd_router.plugins.builtin import builtin_registry

if TYPE_CHECKING:
    from llmd_router.datalayer.inflight import InFlightView
    from llmd_router.framework import Registry
    from llmd_router.pipeline import Pipeline

__all__ = ["HEADER", "config_text", "pipeline"]

HEADER = f"apiVersion: {API_VERSION}\nkind: EndpointPickerConfig\n"


def config_text(body: str = "") -> str:
    """An EndpointPickerConfig: ``body`` (YAML) under llm-d's ``apiVersion`` and ``kind``,
    unless it has its own."""
    return body if body.lstrip().startswith("apiVersion") else HEADER + body


def pipeline(
    body: str | None = "",
    *,
    registry: Registry | None = None,
    inflight: InFlightView | None = None,
    allow_experimental: bool = True,
) -> Pipeline:
    """The pipeline the router would build from ``body`` (see ``config_text``; None: no
    configuration at all, the default profile). Raises ConfigError as start-up would."""
    loaded = load_config(None if body is None else config_text(body))
    return build_pipeline(
        loaded,
        registry or builtin_registry(),
        allow_experimental=allow_experimental,
        inflight=inflight,
    )
