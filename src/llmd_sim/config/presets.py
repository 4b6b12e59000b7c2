"""Named latency, cache and model profiles: defaults that any explicit option overrides."""

from __future__ import annotations

from typing import Final

__all__ = ["PRESETS"]

PRESETS: Final[dict[str, dict[str, object]]] = {
    # llm-d's suggested H100 figures (docs/latency-profiles.md of its simulator): TTFT 60-120 ms,
    # ITL 10-15 ms, prefill overhead 25-40 ms, 0.15-0.30 ms per prompt token. KV capacity: about
    # 500k tokens of free HBM at ~128 KB per token.
    "llama-8b-h100": {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "max-model-len": 131072,
        "max-num-seqs": 256,
        "prefill-overhead": "30ms",
        "prefill-time-per-token": "0.2ms",
        "inter-token-latency": "12ms",
        "time-factor-under-load": 2.0,
        "block-size": 16,
        "kv-cache-size": 31250,
    },
    # 70B with tensor parallelism 4: TTFT 250-400 ms, ITL 25-40 ms, overhead 70-110 ms,
    # 0.60-0.90 ms per token; ~320 KB per token of KV over four GPUs' free memory.
    "llama-70b-h100": {
        "model": "meta-llama/Llama-3.1-70B-Instruct",
        "max-model-len": 131072,
        "max-num-seqs": 256,
        "prefill-overhead": "90ms",
        "prefill-time-per-token": "0.75ms",
        "inter-token-latency": "32ms",
        "time-factor-under-load": 2.0,
        "block-size": 16,
        "kv-cache-size": 32768,
    },
    # Small and quick, for tests and demos: a 64k-token cache fills up and evicts visibly.
    "tiny": {
        "model": "sim-tiny",
        "max-model-len": 4096,
        "max-num-seqs": 16,
        "prefill-overhead": "5ms",
        "prefill-time-per-token": "0.02ms",
        "inter-token-latency": "5ms",
        "time-factor-under-load": 1.5,
        "block-size": 16,
        "kv-cache-size": 4096,
    },
}
