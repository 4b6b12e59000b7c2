"""Chained block keys: a block's key stands for the whole prefix up to its end.

``chained_block_hashes(data, root, chunk)`` cuts ``data`` into chunks of ``chunk`` bytes and
keys each with xxhash64 over the chunk followed by the previous key (8 bytes, little-endian),
starting from ``xxhash64(root)``. Two prompts share a key for block ``i`` only if they share
everything up to the end of that block, and the root (the model, say). Pure.
"""

from __future__ import annotations

import xxhash

__all__ = ["chained_block_hashes"]

_xxh64 = xxhash.xxh64_intdigest


def chained_block_hashes(
    data: bytes, root: bytes, chunk: int, *, max_blocks: int, partial: bool = True
) -> list[int]:
    """Keys of ``data``'s first ``max_blocks`` chunks of ``chunk`` bytes. Data shorter than one
    chunk has none; the trailing partial chunk of longer data is keyed too unless ``partial``
    is false."""
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    size = len(data)
    if size < chunk or max_blocks <= 0:
        return []
    end = min(size, max_blocks * chunk)
    if not partial:
        end -= end % chunk
    view = memoryview(data)
    keys: list[int] = []
    previous = _xxh64(root)
    for start in range(0, end, chunk):
        previous = _xxh64(
            bytes(view[start : min(start + chunk, end)]) + previous.to_bytes(8, "little")
        )
        keys.append(previous)
    return keys
