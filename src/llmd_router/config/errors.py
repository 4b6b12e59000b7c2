"""The one error a configuration can raise."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """The configuration is invalid. The message names what is at fault: the plugin, the
    profile or the field, so that one reading of it tells the user what to change."""
