"""llmd-sim: a vLLM-compatible model-server simulator that runs a whole fleet in one process.

This package is the outside world to the router: it never imports ``llmd_router``, and it encodes
metrics and KV events from its own reading of vLLM, so that a decoding bug in the router cannot be
mirrored here and go unnoticed.
"""

__version__ = "0.1.0"
