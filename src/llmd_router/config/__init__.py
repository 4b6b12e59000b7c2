"""EndpointPickerConfig: the schema, and loading it from YAML or JSON (llm-d's format)."""

from llmd_router.config.errors import ConfigError
from llmd_router.config.loader import (
    DEFAULT_CONFIG,
    FEATURE_GATES,
    LoadedConfig,
    load_config,
    load_config_file,
)
from llmd_router.config.schema import (
    API_VERSION,
    API_VERSION_DEPRECATED,
    KIND,
    EndpointPickerConfig,
    PluginRef,
    PluginSpec,
    ProfilePluginRef,
    SchedulingProfile,
)

__all__ = [
    "API_VERSION",
    "API_VERSION_DEPRECATED",
    "DEFAULT_CONFIG",
    "FEATURE_GATES",
    "KIND",
    "ConfigError",
    "EndpointPickerConfig",
    "LoadedConfig",
    "PluginRef",
    "PluginSpec",
    "ProfilePluginRef",
    "SchedulingProfile",
    "load_config",
    "load_config_file",
]
