"""``disagg-profile-handler``: decode, and when deciders say so, encode and prefill elsewhere.

One profile per round, in the stage order (``stageOrder``):

``decode-first`` (default)
    1. Run ``decode``. No decode endpoint: stop (the request fails).
    2. If an ``encode`` profile exists and the encode decider approves (given the decode
       endpoint): run ``encode``; otherwise the stage is skipped.
    3. Same for ``prefill`` with the prefill decider.

``prefill-first`` (so that decode can be placed relative to the prefill endpoint)
    1. If a ``prefill`` profile exists, run it (no decider: it always runs; configuring a prefill
       decider with this order is an error).
    2. ``encode`` as above, its decider given no endpoint.
    3. Run ``decode``.

A stage without a decider never runs. ``process_results`` fails with "failed to find available
decode workers" when decode found nothing; otherwise decode is the primary profile and the
encode and prefill results that exist ride along.

As a pre-request hook it tells the decode endpoint's sidecar where the other stages went:
``x-prefiller-host-port`` is the first prefill endpoint, ``x-encoder-hosts-ports`` every encode
endpoint, comma-separated. A header whose stage did not run is removed from the forwarded
request, so a client cannot send its own (llm-d deletes it from its own map only, and the
client's value reaches the sidecar).

Parameters come nested (``profiles``, ``deciders``) or in llm-d's deprecated flat form
(``decodeProfile``, ``prefillProfile``, ``encodeProfile``, ``prefillDeciderPluginName``,
``encodeDeciderPluginName``, ``deciderPluginName``); mixing the two is an error.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

from llmd_router.config import ConfigError
from llmd_router.datalayer.endpoints import host_port
from llmd_router.framework import (
    DataKey,
    Decider,
    Params,
    Plugin,
    SchedulingError,
    SchedulingResult,
    Stability,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState, PluginHandle, ProfileResult
    from llmd_router.framework.interfaces import Profile
    from llmd_router.parsing.request import InferenceRequest

__all__ = [
    "DECISIONS",
    "ENCODERS_HEADER",
    "PREFILLER_HEADER",
    "DisaggDeciders",
    "DisaggProfileHandler",
    "DisaggProfileHandlerParams",
    "DisaggProfiles",
    "DisaggStages",
    "parse_stage_order",
]

_log = logging.getLogger(__name__)

PREFILLER_HEADER: Final = "x-prefiller-host-port"
ENCODERS_HEADER: Final = "x-encoder-hosts-ports"
DECODE_FIRST: Final = "decode-first"
PREFILL_FIRST: Final = "prefill-first"
DECISIONS: Final = ("decode-only", "prefill-decode", "encode-decode", "encode-prefill-decode")


def parse_stage_order(value: str) -> str:
    """llm-d's lenient spelling: case, dashes and underscores are ignored; empty is decode-first."""
    folded = value.replace("-", "").replace("_", "").lower()
    if folded in ("", "decodefirst", "decode"):
        return DECODE_FIRST
    if folded in ("prefillfirst", "prefill"):
        return PREFILL_FIRST
    raise ValueError(
        f"stageOrder: invalid stage order {value!r}, must be {DECODE_FIRST!r} or {PREFILL_FIRST!r}"
    )


class DisaggProfiles(Params, frozen=True):
    decode: str = ""
    prefill: str = ""
    encode: str = ""


class DisaggDeciders(Params, frozen=True):
    prefill: str = ""
    encode: str = ""


class DisaggProfileHandlerParams(Params, frozen=True):
    stage_order: str = ""
    profiles: DisaggProfiles | None = None
    deciders: DisaggDeciders | None = None
    # Deprecated flat form (None: not given).
    decode_profile: str | None = None
    prefill_profile: str | None = None
    encode_profile: str | None = None
    prefill_decider_plugin_name: str | None = None
    encode_decider_plugin_name: str | None = None
    decider_plugin_name: str | None = None  # pd-profile-handler's name for the prefill decider

    def __post_init__(self) -> None:
        legacy = self.flat_fields()
        if legacy and (self.profiles is not None or self.deciders is not None):
            raise ValueError(
                f"{legacy[0]}: use one format exclusively: either nested profiles/deciders "
                "or the deprecated flat fields"
            )
        stages = self.stages()
        if stages.order == PREFILL_FIRST and stages.prefill_decider:
            raise ValueError(
                f"deciders.prefill: a prefill decider cannot be used with {PREFILL_FIRST}"
            )

    def flat_fields(self) -> list[str]:
        """The deprecated flat parameters given, by their YAML names."""
        return [
            name
            for name, value in (
                ("decodeProfile", self.decode_profile),
                ("prefillProfile", self.prefill_profile),
                ("encodeProfile", self.encode_profile),
                ("prefillDeciderPluginName", self.prefill_decider_plugin_name),
                ("encodeDeciderPluginName", self.encode_decider_plugin_name),
                ("deciderPluginName", self.decider_plugin_name),
            )
            if value is not None
        ]

    def stages(self) -> DisaggStages:
        """The effective settings, whichever form they were given in, defaults applied."""
        profiles = self.profiles or DisaggProfiles()
        deciders = self.deciders or DisaggDeciders()
        return DisaggStages(
            order=parse_stage_order(self.stage_order),
            decode=self.decode_profile or profiles.decode or "decode",
            prefill=self.prefill_profile or profiles.prefill or "prefill",
            encode=self.encode_profile or profiles.encode or "encode",
            prefill_decider=(
                self.prefill_decider_plugin_name or self.decider_plugin_name or deciders.prefill
            ),
            encode_decider=self.encode_decider_plugin_name or deciders.encode,
        )


@dataclass(frozen=True, slots=True)
class DisaggStages:
    order: str
    decode: str
    prefill: str
    encode: str
    prefill_decider: str  # empty: no prefill stage
    encode_decider: str  # empty: no encode stage


class DisaggProfileHandler(Plugin[DisaggProfileHandlerParams]):
    """Runs decode, and encode or prefill on other endpoints when their deciders approve."""

    TYPE: ClassVar[str] = "disagg-profile-handler"
    Params: ClassVar[type[Any]] = DisaggProfileHandlerParams
    STABILITY: ClassVar[Stability] = Stability.BETA

    def __init__(self, name: str, params: DisaggProfileHandlerParams) -> None:
        super().__init__(name, params)
        self.stages = params.stages()
        flat = params.flat_fields()
        if flat:
            _log.warning(
                "plugin %r: parameters %s are deprecated; use profiles and deciders",
                name,
                ", ".join(flat),
            )
        self._prefill_decider: Decider | None = None
        self._encode_decider: Decider | None = None
        # Stages whose decider said no for this request, so it is asked once.
        self._skipped: DataKey[set[str]] = DataKey(f"{self.TYPE}/{name}/skipped")
        self._decisions: Counter[str] = Counter()

    def bind(self, handle: PluginHandle) -> None:
        plugins = handle.plugins
        self._prefill_decider = self._decider(plugins, "prefill", self.stages.prefill_decider)
        self._encode_decider = self._decider(plugins, "encode", self.stages.encode_decider)

    def check_profiles(self, names: Collection[str]) -> None:
        """The decode profile must exist, and a stage with a decider needs its profile."""
        where = f"plugin {self.name!r} (type {self.TYPE!r})"
        s = self.stages
        wanted = [("decode", s.decode)]
        wanted += [("prefill", s.prefill)] if s.prefill_decider else []
        wanted += [("encode", s.encode)] if s.encode_decider else []
        for stage, profile in wanted:
            if profile not in names:
                raise ConfigError(
                    f"{where}: the {stage} stage runs profile {profile!r}, which is not in "
                    f"schedulingProfiles ({', '.join(sorted(names))})"
                )

    def _decider(self, plugins: Mapping[str, object], stage: str, ref: str) -> Decider | None:
        if not ref:
            return None
        where = f"plugin {self.name!r} (type {self.TYPE!r}): deciders.{stage}"
        found = plugins.get(ref)
        if found is None:
            raise ConfigError(f"{where}: no plugin named {ref!r}")
        if not isinstance(found, Decider):
            raise ConfigError(f"{where}: plugin {ref!r} is not a decider (it has no decide())")
        return found

    def statistics(self) -> Mapping[str, int]:
        """Requests scheduled per outcome: decode-only, prefill-decode, encode-decode,
        encode-prefill-decode."""
        return {d: self._decisions[d] for d in DECISIONS}

    # -------------------------------------------------------------------------- scheduling

    def pick_profiles(
        self,
        cycle: CycleState,
        request: InferenceRequest,
        profiles: Mapping[str, Profile],
        results: Mapping[str, ProfileResult | None],
    ) -> Sequence[str]:
        skipped = cycle.get(self._skipped)
        if skipped is None:
            skipped = set()
            cycle.put(self._skipped, skipped)
        if self.stages.order == PREFILL_FIRST:
            return self._prefill_first(cycle, request, profiles, results, skipped)
        return self._decode_first(cycle, request, profiles, results, skipped)

    def _decode_first(
        self,
        cycle: CycleState,
        request: InferenceRequest,
        profiles: Mapping[str, Profile],
        results: Mapping[str, ProfileResult | None],
        skipped: set[str],
    ) -> Sequence[str]:
        s = self.stages
        if s.decode not in results:
            return (s.decode,) if s.decode in profiles else ()
        decode = results[s.decode]
        if decode is None or not decode.targets:
            return ()
        primary = decode.targets[0]
        for stage, decider in (
            (s.encode, self._encode_decider),
            (s.prefill, self._prefill_decider),
        ):
            if stage in profiles and stage not in results and stage not in skipped:
                if decider is not None and decider.decide(cycle, request, primary):
                    return (stage,)
                skipped.add(stage)
        self._record(results)
        return ()

    def _prefill_first(
        self,
        cycle: CycleState,
        request: InferenceRequest,
        profiles: Mapping[str, Profile],
        results: Mapping[str, ProfileResult | None],
        skipped: set[str],
    ) -> Sequence[str]:
        s = self.stages
        if s.decode in results:
            decode = results[s.decode]
            if decode is not None and decode.targets:
                self._record(results)
            return ()
        if s.prefill in profiles and s.prefill not in results:
            return (s.prefill,)
        if s.encode in profiles and s.encode not in results and s.encode not in skipped:
            decider = self._encode_decider
            # As llm-d: in this order no endpoint is chosen yet when the encode decider runs.
            if decider is not None and decider.decide(cycle, request, None):
                return (s.encode,)
            skipped.add(s.encode)
        return (s.decode,) if s.decode in profiles else ()

    def _record(self, results: Mapping[str, ProfileResult | None]) -> None:
        encode = results.get(self.stages.encode) is not None
        prefill = results.get(self.stages.prefill) is not None
        self._decisions[DECISIONS[encode * 2 + prefill]] += 1

    def process_results(
        self,
        cycle: CycleState,
        request: InferenceRequest,
        results: Mapping[str, ProfileResult | None],
    ) -> SchedulingResult:
        s = self.stages
        decode = results.get(s.decode)
        if decode is None or not decode.targets:
            raise SchedulingError("failed to find available decode workers")
        chosen: dict[str, ProfileResult] = {s.decode: decode}
        for stage in (s.prefill, s.encode):
            result = results.get(stage)
            if result is not None:
                chosen[stage] = result
        return SchedulingResult(s.decode, chosen)

    # -------------------------------------------------------------------------- pre-request

    def pre_request(
        self, cycle: CycleState, request: InferenceRequest, result: SchedulingResult
    ) -> None:
        prefill = result.profiles.get(self.stages.prefill)
        encode = result.profiles.get(self.stages.encode)
        _set_or_remove(cycle, PREFILLER_HEADER, _host_ports(prefill.targets[:1] if prefill else ()))
        _set_or_remove(cycle, ENCODERS_HEADER, _host_ports(encode.targets if encode else ()))


def _host_ports(endpoints: Sequence[Endpoint]) -> str:
    return ",".join(host_port(e.address, e.port) for e in endpoints)


def _set_or_remove(cycle: CycleState, header: str, value: str) -> None:
    if value:
        cycle.outputs.set_header(header, value)
    else:
        cycle.outputs.remove_header(header)
