"""Running one plugin the way the router runs it, without a router."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from llmd_router.config import ConfigError
from llmd_router.datalayer.inflight import InFlightLedger
from llmd_router.framework.capabilities import Binds, PluginHandle
from llmd_router.framework.cycle import CycleState
from llmd_router.framework.plugin import parse_params
from llmd_router.testing.builders import request as default_request

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.datalayer.inflight import InFlightCharge
    from llmd_router.framework.capabilities import PoolView
    from llmd_router.framework.interfaces import Filter, Picker, SchedulingResult, Scorer
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["keep", "make", "pick", "route", "score"]

T = TypeVar("T")


def make(
    cls: type[T],
    name: str | None = None,
    *,
    plugins: Mapping[str, object] | None = None,
    inflight: InFlightLedger | None = None,
    pool: PoolView | None = None,
    **parameters: Any,
) -> T:
    """Build plugin ``cls`` from its YAML ``parameters`` (camelCase keys, checked as a
    configuration's are), bound as the pipeline binds it: to ``plugins`` (by name; the plugin
    itself is added) and to ``inflight`` (a fresh ledger when not given)."""
    plugin_name = name or getattr(cls, "TYPE", "") or cls.__name__
    where = f"plugin {plugin_name!r}"
    params = parse_params(getattr(cls, "Params"), parameters, where)  # noqa: B009
    try:
        plugin = cls(plugin_name, params)  # type: ignore[call-arg]
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001  as the registry reports a constructor's error
        raise ConfigError(f"{where}: {type(exc).__name__}: {exc}") from None
    if isinstance(plugin, Binds):
        others = {plugin_name: plugin, **(plugins or {})}
        ledger = inflight if inflight is not None else InFlightLedger()
        plugin.bind(PluginHandle(others, ledger, pool))
    return plugin


def score(
    scorer: Scorer,
    endpoints: Sequence[Endpoint],
    request: InferenceRequest | None = None,
    cycle: CycleState | None = None,
) -> list[float]:
    """The scorer's scores, clamped to [0, 1] as a profile clamps them (NaN counts 0)."""
    raw = scorer.score(cycle or CycleState(), request or default_request(), endpoints)
    if len(raw) != len(endpoints):
        raise AssertionError(f"{len(raw)} scores for {len(endpoints)} endpoints")
    return [s if 0.0 < s <= 1.0 else 1.0 if s > 1.0 else 0.0 for s in raw]


def keep(
    flt: Filter,
    endpoints: Sequence[Endpoint],
    request: InferenceRequest | None = None,
    cycle: CycleState | None = None,
) -> list[Endpoint]:
    """The endpoints the filter keeps."""
    return list(flt.filter(cycle or CycleState(), request or default_request(), endpoints))


def pick(
    picker: Picker,
    endpoints: Sequence[Endpoint],
    scores: Sequence[float],
    request: InferenceRequest | None = None,
    cycle: CycleState | None = None,
) -> list[Endpoint]:
    """The endpoints the picker chooses, best first."""
    return list(picker.pick(cycle or CycleState(), request or default_request(), endpoints, scores))


def route(
    ledger: InFlightLedger, cycle: CycleState, result: SchedulingResult
) -> tuple[InFlightCharge, ...]:
    """Charge a routed request to ``ledger`` as the router does (one request on the primary
    target, plus what the hooks put in ``cycle.outputs``); refund the returned charges with
    ``ledger.refund`` when it ends."""
    targets = result.targets
    if not targets:
        raise ValueError("the result routes nowhere")
    charges = cycle.outputs.charges_for(targets[0].key)
    ledger.charge(charges)
    return charges
