"""Metrics (one module, one registry per application) and logging."""
