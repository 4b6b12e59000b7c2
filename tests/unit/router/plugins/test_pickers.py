"""Pickers: what they choose, and how often, with a seeded random source."""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from llmd_router import testing
from llmd_router.framework import CycleState, Picker
from llmd_router.parsing.request import ApiKind, InferenceRequest
from llmd_router.plugins.pickers.max_score_picker import MaxScorePicker
from llmd_router.plugins.pickers.random_picker import RandomPicker
from llmd_router.plugins.pickers.weighted_random_picker import WeightedRandomPicker

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import Endpoint

PICKERS = [MaxScorePicker, RandomPicker, WeightedRandomPicker]
REQUEST = InferenceRequest("r1", "/v1/completions", ApiKind.COMPLETIONS, {}, b"{}")


def endpoints(n: int) -> list[Endpoint]:
    return [testing.endpoint(i, name=f"pod-{i}") for i in range(n)]


def make(cls: Any, seed: int = 7, **params: Any) -> Any:
    picker = cls("picker", msgspec.convert(params, cls.Params))
    picker.rng = random.Random(seed)
    return picker


def pick(picker: Any, eps: list[Endpoint], scores: list[float]) -> tuple[Endpoint, ...]:
    result: tuple[Endpoint, ...] = picker.pick(CycleState(), REQUEST, eps, scores)
    return result


def frequencies(picker: Any, eps: list[Endpoint], scores: list[float], trials: int) -> list[float]:
    """How often each endpoint came first."""
    counts = Counter(eps.index(pick(picker, eps, scores)[0]) for _ in range(trials))
    return [counts[i] / trials for i in range(len(eps))]


# ------------------------------------------------------------------------- all pickers


@pytest.mark.parametrize("cls", PICKERS)
def test_types_and_protocol(cls: Any) -> None:
    picker = make(cls)
    assert isinstance(picker, Picker)
    assert picker.name == "picker"
    assert cls.TYPE in {"max-score-picker", "random-picker", "weighted-random-picker"}


@pytest.mark.parametrize("cls", PICKERS)
@pytest.mark.parametrize("limit", [1, 2, 5, 9])
def test_returns_distinct_candidates_up_to_the_limit(cls: Any, limit: int) -> None:
    eps = endpoints(5)
    rng = random.Random(limit)
    picker = make(cls, maxNumOfEndpoints=limit)
    for _ in range(50):
        scores = [rng.choice([0.0, 0.3, 1.0, 2.5]) for _ in eps]
        chosen = pick(picker, eps, scores)
        assert len(chosen) == min(limit, len(eps))
        assert len({id(e) for e in chosen}) == len(chosen)
        assert all(any(e is c for e in eps) for c in chosen)


@pytest.mark.parametrize("cls", PICKERS)
@pytest.mark.parametrize("limit", [0, -3])
def test_non_positive_limit_means_one(cls: Any, limit: int) -> None:
    assert len(pick(make(cls, maxNumOfEndpoints=limit), endpoints(4), [1.0, 1.0, 1.0, 1.0])) == 1


@pytest.mark.parametrize("cls", PICKERS)
def test_default_limit_is_one(cls: Any) -> None:
    assert msgspec.convert({}, cls.Params).max_num_of_endpoints == 1
    assert len(pick(make(cls), endpoints(4), [0.5, 0.5, 0.5, 0.5])) == 1


@pytest.mark.parametrize("cls", PICKERS)
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"maxEndpoints": 2}, "unknown field `maxEndpoints`"),
        ({"max_num_of_endpoints": 2}, "unknown field `max_num_of_endpoints`"),
        ({"maxNumOfEndpoints": "2"}, "Expected `int`, got `str`"),
        ({"maxNumOfEndpoints": 1.5}, "Expected `int`, got `float`"),
    ],
)
def test_bad_parameters(cls: Any, raw: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, cls.Params)


# ------------------------------------------------------------------------- max-score


def test_max_score_returns_the_best() -> None:
    eps = endpoints(4)
    picker = make(MaxScorePicker)
    for _ in range(100):
        assert pick(picker, eps, [0.1, 0.9, 0.5, 0.89]) == (eps[1],)


def test_max_score_orders_the_top_n_best_first() -> None:
    eps = endpoints(5)
    chosen = pick(make(MaxScorePicker, maxNumOfEndpoints=3), eps, [0.2, 0.9, 0.5, 0.7, 0.1])
    assert chosen == (eps[1], eps[3], eps[2])


def test_max_score_returns_all_when_fewer_than_the_limit() -> None:
    eps = endpoints(3)
    chosen = pick(make(MaxScorePicker, maxNumOfEndpoints=10), eps, [0.2, 3.0, 1.0])
    assert chosen == (eps[1], eps[2], eps[0])


def test_max_score_spreads_ties_evenly() -> None:
    eps = endpoints(4)
    freq = frequencies(make(MaxScorePicker), eps, [2.0, 2.0, 1.0, 2.0], 6000)
    assert freq[2] == 0.0
    for i in (0, 1, 3):
        assert freq[i] == pytest.approx(1 / 3, abs=0.03)


def test_max_score_spreads_ties_at_the_cut_off() -> None:
    eps = endpoints(4)
    picker = make(MaxScorePicker, maxNumOfEndpoints=2)
    seconds: Counter[int] = Counter()
    for _ in range(6000):
        first, second = pick(picker, eps, [0.5, 0.5, 3.0, 0.5])
        assert first is eps[2]
        seconds[eps.index(second)] += 1
    assert set(seconds) == {0, 1, 3}
    for i in (0, 1, 3):
        assert seconds[i] / 6000 == pytest.approx(1 / 3, abs=0.03)


def test_max_score_tied_top_n_comes_in_every_order() -> None:
    eps = endpoints(3)
    picker = make(MaxScorePicker, maxNumOfEndpoints=2)
    orders = Counter(
        tuple(eps.index(e) for e in pick(picker, eps, [1.0, 0.0, 1.0])) for _ in range(2000)
    )
    assert set(orders) == {(0, 2), (2, 0)}
    assert orders[(0, 2)] / 2000 == pytest.approx(0.5, abs=0.05)


# ------------------------------------------------------------------------- random


def test_random_is_uniform_and_ignores_scores() -> None:
    eps = endpoints(4)
    freq = frequencies(make(RandomPicker), eps, [0.0, 10.0, 0.1, 0.0], 8000)
    for f in freq:
        assert f == pytest.approx(0.25, abs=0.03)


def test_random_many_is_uniform_over_positions() -> None:
    eps = endpoints(3)
    picker = make(RandomPicker, maxNumOfEndpoints=2)
    firsts: Counter[int] = Counter()
    members: Counter[int] = Counter()
    for _ in range(6000):
        chosen = pick(picker, eps, [1.0, 0.0, 0.0])
        firsts[eps.index(chosen[0])] += 1
        members.update(eps.index(e) for e in chosen)
    for i in range(3):
        assert firsts[i] / 6000 == pytest.approx(1 / 3, abs=0.03)
        assert members[i] / 6000 == pytest.approx(2 / 3, abs=0.03)


def test_seeded_random_repeats() -> None:
    eps = endpoints(10)
    scores = [1.0] * 10
    a, b = make(RandomPicker, seed=3), make(RandomPicker, seed=3)
    assert [pick(a, eps, scores) for _ in range(20)] == [pick(b, eps, scores) for _ in range(20)]


# ------------------------------------------------------------------------- weighted random


def test_weighted_random_is_proportional_to_score() -> None:
    eps = endpoints(4)
    freq = frequencies(make(WeightedRandomPicker), eps, [1.0, 2.0, 3.0, 0.0], 12000)
    assert freq == pytest.approx([1 / 6, 2 / 6, 3 / 6, 0.0], abs=0.02)


def test_weighted_random_first_of_many_is_proportional_to_score() -> None:
    # A-Res: the first of several draws is distributed as a single weighted draw.
    eps = endpoints(4)
    picker = make(WeightedRandomPicker, maxNumOfEndpoints=2)
    freq = frequencies(picker, eps, [1.0, 2.0, 3.0, 0.0], 12000)
    assert freq == pytest.approx([1 / 6, 2 / 6, 3 / 6, 0.0], abs=0.02)


def test_weighted_random_second_draw_is_without_replacement() -> None:
    # Scores 1 and 3: P(first = 0) = 1/4, and then the other is second; P(second = 0) = 3/4.
    eps = endpoints(2)
    picker = make(WeightedRandomPicker, maxNumOfEndpoints=2)
    seconds = Counter(eps.index(pick(picker, eps, [1.0, 3.0])[1]) for _ in range(8000))
    assert seconds[0] / 8000 == pytest.approx(0.75, abs=0.02)


def test_weighted_random_never_picks_zero_or_negative_scores_while_positive_ones_remain() -> None:
    eps = endpoints(4)
    picker = make(WeightedRandomPicker, maxNumOfEndpoints=3)
    fillers: Counter[int] = Counter()
    for _ in range(3000):
        chosen = pick(picker, eps, [0.5, 0.0, -1.0, 1.0])
        assert {eps.index(e) for e in chosen[:2]} == {0, 3}
        fillers[eps.index(chosen[2])] += 1
    assert set(fillers) == {1, 2}  # the zero-scored fill the last place, in random order
    assert fillers[1] / 3000 == pytest.approx(0.5, abs=0.05)


def test_weighted_random_without_positive_scores_is_uniform() -> None:
    eps = endpoints(4)
    freq = frequencies(make(WeightedRandomPicker), eps, [0.0, 0.0, -2.0, 0.0], 8000)
    for f in freq:
        assert f == pytest.approx(0.25, abs=0.03)


def test_weighted_random_single_positive_score_always_wins() -> None:
    eps = endpoints(5)
    picker = make(WeightedRandomPicker)
    assert all(pick(picker, eps, [0.0, 0.0, 1e-6, 0.0, 0.0]) == (eps[2],) for _ in range(200))
