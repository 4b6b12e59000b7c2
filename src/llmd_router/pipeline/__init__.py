"""From a configuration to a ``Pipeline``: every plugin built, wired and checked.

``build_pipeline`` applies llm-d's defaults and checks everything (``builder``, with the
``dataLayer`` binding in ``datalayer``); ``Pipeline`` is what it returns; ``render`` turns a
pipeline back into data for people (the resolved configuration, the plugins page).
"""

from llmd_router.pipeline.builder import build_pipeline
from llmd_router.pipeline.pipeline import BuiltPlugin, Pipeline
from llmd_router.pipeline.render import describe_plugins, describe_prefix, resolved_config

__all__ = [
    "BuiltPlugin",
    "Pipeline",
    "build_pipeline",
    "describe_plugins",
    "describe_prefix",
    "resolved_config",
]
