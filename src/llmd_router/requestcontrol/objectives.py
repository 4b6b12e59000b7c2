"""Objectives (priority by name) and model rewrites, as the director looks them up.

Fed whole from the configuration today (``replace``, at start-up and on every reload); a
Kubernetes source would call ``set_*`` / ``delete_*`` per resource as it watches them.

**Objectives.** A request names one with ``x-llm-d-inference-objective`` (or the older
``x-gateway-inference-objective``); its priority is the objective's, 0 when unset or when no
objective has that name.

**Rewrites.** For a request's model, the rule that applies is chosen as llm-d does:

1. a rule that names the model exactly beats a rule with no matches (which matches every model);
2. among rules of the same kind, the one whose resource is oldest (``creationTimestamp``) wins,
   then the one that comes first (resources in configuration order, rules in list order).

The rule's target is drawn at random in proportion to the weights (uniformly when unweighted).
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable

    from llmd_router.config.resources import InferenceModelRewrite, InferenceObjective, Rule

__all__ = ["ModelResources", "RewriteChoice"]


@dataclass(frozen=True, slots=True)
class RewriteChoice:
    target: str
    resource: str  # the InferenceModelRewrite's name


@dataclass(frozen=True, slots=True)
class _Rule:
    order: tuple[str, int, int]  # creationTimestamp ("" sorts first), resource, rule position
    resource: str
    targets: tuple[str, ...]
    cumulative: tuple[int, ...]  # running sum of weights; empty when unweighted

    @classmethod
    def of(cls, resource: str, order: tuple[str, int, int], rule: Rule) -> _Rule:
        targets = tuple(t.model_rewrite for t in rule.targets)
        weights = [t.weight for t in rule.targets]
        cumulative = () if None in weights else tuple(itertools.accumulate(w or 0 for w in weights))
        return cls(order, resource, targets, cumulative)

    def choose(self, rng: random.Random) -> str:
        if not self.cumulative:
            return rng.choice(self.targets)
        index = bisect.bisect_right(self.cumulative, rng.randrange(self.cumulative[-1]))
        return self.targets[index]


class ModelResources:
    def __init__(self) -> None:
        self._objectives: dict[str, InferenceObjective] = {}
        self._rewrites: dict[str, InferenceModelRewrite] = {}
        self._sequence: dict[str, int] = {}  # resource name -> arrival order
        self._exact: dict[str, _Rule] = {}
        self._generic: _Rule | None = None

    # ------------------------------------------------------------------ writes

    def replace(
        self,
        objectives: Iterable[InferenceObjective],
        rewrites: Iterable[InferenceModelRewrite],
    ) -> None:
        self._objectives = {o.metadata.name: o for o in objectives}
        self._rewrites = {}
        self._sequence = {}
        for rewrite in rewrites:
            self._add_rewrite(rewrite)
        self._index()

    def set_objective(self, objective: InferenceObjective) -> None:
        self._objectives[objective.metadata.name] = objective

    def delete_objective(self, name: str) -> None:
        self._objectives.pop(name, None)

    def set_rewrite(self, rewrite: InferenceModelRewrite) -> None:
        self._add_rewrite(rewrite)
        self._index()

    def delete_rewrite(self, name: str) -> None:
        self._rewrites.pop(name, None)
        self._sequence.pop(name, None)
        self._index()

    def _add_rewrite(self, rewrite: InferenceModelRewrite) -> None:
        name = rewrite.metadata.name
        self._sequence.setdefault(name, len(self._sequence))
        self._rewrites[name] = rewrite

    def _index(self) -> None:
        exact: dict[str, _Rule] = {}
        generic: _Rule | None = None
        for name, rewrite in self._rewrites.items():
            stamp = rewrite.metadata.creation_timestamp
            for position, rule in enumerate(rewrite.spec.rules):
                candidate = _Rule.of(name, (stamp, self._sequence[name], position), rule)
                if not rule.matches:
                    if generic is None or candidate.order < generic.order:
                        generic = candidate
                    continue
                for match in rule.matches:
                    held = exact.get(match.model.value)
                    if held is None or candidate.order < held.order:
                        exact[match.model.value] = candidate
        self._exact, self._generic = exact, generic

    # ------------------------------------------------------------------ reads

    def priority(self, objective: str | None) -> int:
        found = self._objectives.get(objective) if objective else None
        return found.priority if found is not None else 0

    def rewrite(self, model: str, rng: random.Random) -> RewriteChoice | None:
        """The target for ``model`` if a rule applies, else None."""
        rule = self._exact.get(model) or self._generic
        if rule is None:
            return None
        return RewriteChoice(rule.choose(rng), rule.resource)

    def rewrite_names(self) -> frozenset[str]:
        """Every model name the rules mention (metrics keep these out of their label cap)."""
        names = set(self._exact)
        for rewrite in self._rewrites.values():
            for rule in rewrite.spec.rules:
                names.update(t.model_rewrite for t in rule.targets)
        return frozenset(names)

    def describe(self) -> dict[str, object]:
        return {
            "objectives": {n: o.spec.priority for n, o in sorted(self._objectives.items())},
            "rewrites": {
                n: [
                    {
                        "models": [m.model.value for m in rule.matches] or "*",
                        "targets": {t.model_rewrite: t.weight for t in rule.targets},
                    }
                    for rule in r.spec.rules
                ]
                for n, r in self._rewrites.items()
            },
        }
