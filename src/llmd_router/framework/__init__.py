"""The plugin framework: contracts, per-request state, the registry and the scheduler.

Never imports a plugin. User plugins import what they need from here.
"""

from llmd_router.framework.cycle import (
    INFLIGHT_LOAD,
    PREFIX_MATCH,
    CycleState,
    DataKey,
    InFlightLoad,
    PrefixMatch,
)
from llmd_router.framework.interfaces import (
    Admitter,
    Category,
    Completion,
    DataProducer,
    Decider,
    Filter,
    Parser,
    Picker,
    PreRequest,
    ProfileHandler,
    ProfileResult,
    ProfileTrace,
    ResponseComplete,
    SaturationDetector,
    SchedulingError,
    SchedulingResult,
    Scorer,
)
from llmd_router.framework.plugin import (
    NoParams,
    Params,
    Plugin,
    PluginType,
    Registry,
    Stability,
    parse_params,
)

__all__ = [
    "INFLIGHT_LOAD",
    "PREFIX_MATCH",
    "Admitter",
    "Category",
    "Completion",
    "CycleState",
    "DataKey",
    "DataProducer",
    "Decider",
    "Filter",
    "InFlightLoad",
    "NoParams",
    "Params",
    "Parser",
    "Picker",
    "Plugin",
    "PluginType",
    "PreRequest",
    "PrefixMatch",
    "ProfileHandler",
    "ProfileResult",
    "ProfileTrace",
    "Registry",
    "ResponseComplete",
    "SaturationDetector",
    "SchedulingError",
    "SchedulingResult",
    "Scorer",
    "Stability",
    "parse_params",
]
