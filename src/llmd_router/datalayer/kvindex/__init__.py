"""Prefix indexes: which endpoints are believed to hold which prompt blocks.

``approx``: built from the router's own routing history (a request's blocks are recorded on the
endpoint it was sent to), each endpoint's blocks in an LRU of bounded size. ``precise``: built
from the servers' own KV events (what each really cached and dropped). ``hashing``: the
block keys, chained so that a block's key stands for the whole prefix up to its end.
"""

from llmd_router.datalayer.kvindex.approx import ApproxPrefixIndex
from llmd_router.datalayer.kvindex.hashing import block_keys, root_key, token_bytes
from llmd_router.datalayer.kvindex.precise import PreciseIndex, PreciseMatch, chain_keys

__all__ = [
    "ApproxPrefixIndex",
    "PreciseIndex",
    "PreciseMatch",
    "block_keys",
    "chain_keys",
    "root_key",
    "token_bytes",
]
