"""EndpointPickerConfig: the schema, and loading it from YAML or JSON (llm-d's format)."""

from llmd_router.config.errors import ConfigError

__all__ = ["ConfigError"]
