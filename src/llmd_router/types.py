"""Small value types shared across layers."""

from __future__ import annotations

__all__ = ["Metadata"]

# The proxy's filter metadata, by namespace, as plain values: {"envoy.lb.subset_hint": {...}}.
Metadata = dict[str, dict[str, object]]
