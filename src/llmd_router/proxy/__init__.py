"""Envoy: the bootstrap of Standalone Mode (pure) and the process that runs it."""
