"""``InferenceObjective`` and ``InferenceModelRewrite``, written as the Kubernetes resources are.

They can follow the ``EndpointPickerConfig`` in the same file as further YAML documents
(``---``), so the manifests a cluster would ``kubectl apply`` work unchanged without one. The
``spec`` is decoded strictly; ``metadata`` keeps only what the router uses (``name``, and
``creationTimestamp``, which orders rewrite rules) and ignores the rest of Kubernetes' object
metadata.

    apiVersion: llm-d.ai/v1alpha2
    kind: InferenceObjective
    metadata: {name: batch}
    spec:
      priority: -1                 # < 0: sheddable; unset: 0
      poolRef: {name: my-pool}
    ---
    apiVersion: llm-d.ai/v1alpha2
    kind: InferenceModelRewrite
    metadata: {name: canary}
    spec:
      poolRef: {name: my-pool}
      rules:
      - matches: [{model: {type: Exact, value: llama}}]   # no matches: every model
        targets:
        - {modelRewrite: llama-v1, weight: 90}
        - {modelRewrite: llama-v2, weight: 10}
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

__all__ = [
    "OBJECTIVE_KIND",
    "RESOURCE_API_VERSIONS",
    "REWRITE_KIND",
    "InferenceModelRewrite",
    "InferenceObjective",
]

RESOURCE_API_VERSIONS: Final = ("llm-d.ai/v1alpha2", "inference.networking.x-k8s.io/v1alpha2")
OBJECTIVE_KIND: Final = "InferenceObjective"
REWRITE_KIND: Final = "InferenceModelRewrite"
_INT32: Final = 2**31


class _Strict(msgspec.Struct, forbid_unknown_fields=True, rename="camel", kw_only=True):
    pass


class ObjectMeta(msgspec.Struct, rename="camel", kw_only=True):
    """Kubernetes object metadata; fields the router does not use are ignored."""

    name: str
    namespace: str = "default"
    creation_timestamp: str = ""  # RFC 3339; orders rewrite rules (oldest first)


class PoolRef(_Strict):
    name: str
    group: str = "inference.networking.k8s.io"
    kind: str = "InferencePool"


class ObjectiveSpec(_Strict):
    priority: int | None = None
    pool_ref: PoolRef | None = None

    def __post_init__(self) -> None:
        if self.priority is not None and not -_INT32 <= self.priority < _INT32:
            raise ValueError(f"priority {self.priority} is not a 32-bit integer")


class InferenceObjective(_Strict):
    api_version: str
    kind: Literal["InferenceObjective"]
    metadata: ObjectMeta
    spec: ObjectiveSpec = msgspec.field(default_factory=ObjectiveSpec)
    status: dict[str, object] | None = None  # ignored (written by controllers)

    @property
    def priority(self) -> int:
        """Unset means 0, as llm-d treats it."""
        return self.spec.priority if self.spec.priority is not None else 0


class ModelMatch(_Strict):
    value: str
    type: Literal["Exact"] = "Exact"


class Match(_Strict):
    model: ModelMatch


class Target(_Strict):
    model_rewrite: str
    weight: int | None = None

    def __post_init__(self) -> None:
        if not self.model_rewrite:
            raise ValueError("modelRewrite must not be empty")
        if self.weight is not None and not 1 <= self.weight <= 1_000_000:
            raise ValueError(f"weight must be from 1 to 1000000, got {self.weight}")


class Rule(_Strict):
    targets: list[Target]
    matches: list[Match] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("a rule needs at least one target")
        weighted = [t.weight is not None for t in self.targets]
        if any(weighted) and not all(weighted):
            raise ValueError("targets' weights must be all set or all unset")


class RewriteSpec(_Strict):
    pool_ref: PoolRef
    rules: list[Rule] = msgspec.field(default_factory=list)


class InferenceModelRewrite(_Strict):
    api_version: str
    kind: Literal["InferenceModelRewrite"]
    metadata: ObjectMeta
    spec: RewriteSpec
    status: dict[str, object] | None = None
