"""Prefix indexes: which endpoints are believed to hold which prompt blocks.

``approx``: built from the router's own routing history (a request's blocks are recorded on the
endpoint it was sent to), each endpoint's blocks in an LRU of bounded size. ``hashing``: the
block keys, chained so that a block's key stands for the whole prefix up to its end.
"""

from llmd_router.datalayer.kvindex.approx import ApproxPrefixIndex
from llmd_router.datalayer.kvindex.hashing import block_keys, root_key, token_bytes

__all__ = ["ApproxPrefixIndex", "block_keys", "root_key", "token_bytes"]
