"""Objectives and model rewrites: from configuration documents to the director's lookups."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from llmd_router.config import API_VERSION, ConfigError, load_config
from llmd_router.requestcontrol.objectives import ModelResources

HEAD = f"apiVersion: {API_VERSION}\nkind: EndpointPickerConfig\n"


def objective(name: str, priority: int | None = None) -> str:
    spec = "" if priority is None else f"\nspec:\n  priority: {priority}"
    return (
        f"apiVersion: llm-d.ai/v1alpha2\nkind: InferenceObjective\nmetadata: {{name: {name}}}{spec}"
    )


def rewrite(name: str, rules: str, created: str = "") -> str:
    stamp = f", creationTimestamp: '{created}'" if created else ""
    return (
        "apiVersion: llm-d.ai/v1alpha2\nkind: InferenceModelRewrite\n"
        f"metadata: {{name: {name}{stamp}}}\nspec:\n  poolRef: {{name: pool}}\n  rules:\n{rules}"
    )


def resources(*documents: str) -> ModelResources:
    loaded = load_config("\n---\n".join([HEAD + "plugins: []", *documents]))
    store = ModelResources()
    store.replace(loaded.objectives, loaded.rewrites)
    return store


def test_an_objective_gives_its_priority_and_unknown_or_unset_give_zero():
    store = resources(objective("batch", -1), objective("gold", 10), objective("plain"))
    assert store.priority("batch") == -1
    assert store.priority("gold") == 10
    assert store.priority("plain") == 0
    assert store.priority("nope") == 0
    assert store.priority(None) == 0


def test_documents_may_come_before_the_config_and_kubernetes_metadata_is_ignored():
    text = (
        "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferenceObjective\n"
        "metadata: {name: a, namespace: ml, uid: 1234, resourceVersion: '7', labels: {x: y}}\n"
        "spec: {priority: 3, poolRef: {name: pool, group: inference.networking.k8s.io}}\n"
        "status: {conditions: []}\n---\n" + HEAD + "plugins: []\n"
    )
    loaded = load_config(text)
    assert [(o.metadata.name, o.priority) for o in loaded.objectives] == [("a", 3)]


WEIGHTED = """\
  - matches: [{model: {value: llama}}]
    targets:
    - {modelRewrite: llama-v1, weight: 90}
    - {modelRewrite: llama-v2, weight: 10}
"""


def test_weighted_targets_are_drawn_in_proportion():
    store = resources(rewrite("canary", WEIGHTED))
    rng = random.Random(7)
    drawn = Counter(store.rewrite("llama", rng).target for _ in range(5000))  # type: ignore[union-attr]
    assert set(drawn) == {"llama-v1", "llama-v2"}
    assert 0.87 < drawn["llama-v1"] / 5000 < 0.93
    assert store.rewrite("mistral", rng) is None
    choice = store.rewrite("llama", rng)
    assert choice is not None and choice.resource == "canary"


def test_unweighted_targets_are_drawn_uniformly():
    store = resources(rewrite("even", "  - targets: [{modelRewrite: a}, {modelRewrite: b}]\n"))
    rng = random.Random(3)
    drawn = Counter(store.rewrite("anything", rng).target for _ in range(4000))  # type: ignore[union-attr]
    assert 0.45 < drawn["a"] / 4000 < 0.55


def test_exact_beats_generic_then_oldest_then_first():
    generic = "  - targets: [{modelRewrite: from-generic}]\n"
    exact_new = "  - matches: [{model: {value: m}}]\n    targets: [{modelRewrite: from-new}]\n"
    exact_old = "  - matches: [{model: {value: m}}]\n    targets: [{modelRewrite: from-old}]\n"
    store = resources(
        rewrite("generic", generic, created="2026-01-01T00:00:00Z"),
        rewrite("new", exact_new, created="2026-06-01T00:00:00Z"),
        rewrite("old", exact_old, created="2026-02-01T00:00:00Z"),
    )
    rng = random.Random(0)
    assert store.rewrite("m", rng).target == "from-old"  # type: ignore[union-attr]
    assert store.rewrite("other", rng).target == "from-generic"  # type: ignore[union-attr]
    # Without timestamps, configuration order decides.
    store = resources(rewrite("first", exact_new), rewrite("second", exact_old))
    assert store.rewrite("m", rng).target == "from-new"  # type: ignore[union-attr]
    store.delete_rewrite("first")
    assert store.rewrite("m", rng).target == "from-old"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (rewrite("r", "  - targets: []\n"), "a rule needs at least one target"),
        (
            rewrite("r", "  - targets: [{modelRewrite: a, weight: 1}, {modelRewrite: b}]\n"),
            "all set or all unset",
        ),
        (
            rewrite("r", "  - targets: [{modelRewrite: a, weight: 0}]\n"),
            "weight must be from 1 to 1000000",
        ),
        (
            rewrite(
                "r",
                "  - matches: [{model: {type: Prefix, value: a}}]\n"
                "    targets: [{modelRewrite: b}]\n",
            ),
            "Invalid enum value 'Prefix' at spec.rules[0].matches[0].model.type",
        ),
        (objective("o", 2**31), "not a 32-bit integer"),
        (objective("o").replace("llm-d.ai/v1alpha2", "v1"), "apiVersion must be one of"),
        (objective("o") + "\nspec: {priority: 1, tier: gold}", "tier"),
        (objective("o") + "\n---\n" + objective("o"), "a second InferenceObjective named 'o'"),
    ],
    ids=[
        "no-targets",
        "mixed-weights",
        "zero-weight",
        "not-exact",
        "priority-range",
        "api-version",
        "unknown-spec-field",
        "duplicate",
    ],
)
def test_bad_resources_are_refused_with_the_document_named(document: str, message: str):
    with pytest.raises(ConfigError, match=r"document \d \(Inference") as info:
        load_config("\n---\n".join([HEAD + "plugins: []", document]))
    assert message in str(info.value)


def test_exactly_one_endpoint_picker_config_document():
    with pytest.raises(ConfigError, match="expected one EndpointPickerConfig document, found 2"):
        load_config(HEAD + "plugins: []\n---\n" + HEAD + "plugins: []\n")
    with pytest.raises(ConfigError, match="found 0"):
        load_config(objective("o"))
