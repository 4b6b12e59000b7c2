"""llmd-router: the llm-d Router in Python (Envoy plus a gRPC Endpoint Picker)."""

__version__ = "0.1.0"
