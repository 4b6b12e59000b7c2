"""Chained block keys: a block's key stands for the whole prefix up to its end.

llm-d's scheme for approximate prefix matching, over a prompt's bytes (four to a token, as its
token estimator packs them) or token ids (each as 4 bytes, little-endian):

    root     = xxhash64(model ‖ cache_salt)
    block_i  = the i-th run of ``block_tokens`` tokens (the last one may be shorter)
    id_i     = xxhash64(block_i's bytes, zero-padded to whole tokens)
    key_i    = xxhash64(LE64(id_i) ‖ LE64(key_{i-1})),   key_{-1} = root

so two prompts share key ``i`` only if they share the model, the salt and every token up to the
end of block ``i``. At most ``max_blocks`` keys are made; the rest of a longer prompt is not
looked at. Pure.
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import TYPE_CHECKING, Final

import xxhash

__all__ = ["TOKEN_BYTES", "block_keys", "root_key", "token_bytes"]

TOKEN_BYTES: Final = 4
_xxh64 = xxhash.xxh64_intdigest
_MASK: Final = 0xFFFFFFFF
_PAIR: Final = struct.Struct("<QQ")  # LE64(id) ‖ LE64(previous key)

if TYPE_CHECKING:
    from collections.abc import Sequence


def root_key(model: str, cache_salt: str | None = None) -> int:
    """The key every chain of ``model`` (and ``cache_salt``) starts from."""
    return _xxh64(model.encode() + (cache_salt.encode() if cache_salt else b""))


def token_bytes(tokens: Sequence[int]) -> bytes:
    """Token ids as llm-d hashes them: 4 bytes each, little-endian (the low 32 bits of an id
    that does not fit)."""
    try:
        packed = array("I", tokens)
    except OverflowError:  # a negative or oversized id
        packed = array("I", (t & _MASK for t in tokens))
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def block_keys(data: bytes, root: int, block_tokens: int, max_blocks: int) -> list[int]:
    """The keys of ``data``'s blocks of ``block_tokens`` tokens (the last block may be
    partial), at most ``max_blocks`` of them."""
    if block_tokens <= 0:
        raise ValueError(f"block_tokens must be positive, got {block_tokens}")
    chunk = block_tokens * TOKEN_BYTES
    end = min(len(data), max_blocks * chunk) if max_blocks > 0 else 0
    view = memoryview(data)
    keys: list[int] = []
    append = keys.append
    previous = root
    xxh64, pack = _xxh64, _PAIR.pack
    whole = end - end % chunk
    for start in range(0, whole, chunk):
        previous = xxh64(pack(xxh64(view[start : start + chunk]), previous))
        append(previous)
    if whole < end:  # a partial last block, padded to whole tokens
        block = bytes(view[whole:end])
        block += bytes(-len(block) % TOKEN_BYTES)
        previous = xxh64(pack(xxh64(block), previous))
        append(previous)
    return keys
