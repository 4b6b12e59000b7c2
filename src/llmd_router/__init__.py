"""llmd-router: the llm-d Router in Python (Envoy plus a gRPC Endpoint Picker)."""

import os

# gRPC's fork handlers only print a warning when the router starts Envoy as a subprocess (the
# child execs at once and uses no gRPC); turn them off before grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
