"""``session-affinity-scorer``: prefer the endpoint that served the session before (Alpha).

Two strategies, as in llm-d (August 2026):

``encoded_endpoint_header`` (default, stateless)
    The client sends back a token: standard base64 of ``<namespace>/<endpoint name>``, in the
    request header ``x-session-token`` (``encodedEndpointHeaderConfig.header``). The endpoint
    with that id scores 1.0, every other 0.0; a missing or undecodable token scores all 0.0.
    ``pre_request`` writes the token of the endpoint chosen for the profile (the primary profile,
    or ``profileName``) into the response headers. llm-d writes it after the response headers
    have gone, so its clients never see it; here it is delivered.

``session_id`` (stateful)
    The client names its session (header ``x-session-id`` by default; ``sessionIdConfig.sources``
    are tried in order, the first non-empty value wins). The scorer remembers the endpoint each
    session was routed to. A session bound to a candidate scores it 1.0 and the rest 0.0;
    otherwise (no id, unbound, bound endpoint not a candidate) all score 0.0. ``pre_request``
    binds an unbound session to the chosen endpoint, refreshes a binding that was used, and moves
    a session only when its endpoint was absent from the candidates this request saw (not merely
    outscored). Bindings unused for ``evictionTtlSeconds`` are dropped by a sweep every
    ``evictionSweepSeconds``, run from the scorer's own calls (no background task). Nothing is
    written to the response.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from llmd_router.framework import (
    Category,
    DataKey,
    Params,
    Plugin,
    Stability,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState, SchedulingResult
    from llmd_router.parsing.request import InferenceRequest

__all__ = [
    "EncodedEndpointHeaderConfig",
    "SessionAffinityParams",
    "SessionAffinityScorer",
    "SessionIdConfig",
    "SessionIdSource",
    "decode_token",
    "encode_token",
]

DEFAULT_TOKEN_HEADER: Final = "x-session-token"  # noqa: S105 (a header name)
DEFAULT_SESSION_ID_HEADER: Final = "x-session-id"
DEFAULT_TTL_S: Final = 300.0
DEFAULT_SWEEP_S: Final = 10.0


def encode_token(endpoint: Endpoint) -> str:
    return base64.b64encode(endpoint.id.encode()).decode("ascii")


def decode_token(token: str) -> str | None:
    """The endpoint id a token names; None if it is not standard, padded base64 of UTF-8."""
    try:
        return base64.b64decode(token, validate=True).decode()
    except (binascii.Error, ValueError):
        return None


def _header_name(name: str, default: str) -> str:
    """Request header keys are lower-cased on arrival, so configured names are too."""
    return name.strip().lower() or default


class EncodedEndpointHeaderConfig(Params, frozen=True):
    header: str = DEFAULT_TOKEN_HEADER


class SessionIdSource(Params, frozen=True):
    header: str = ""
    attribute: str = ""
    producer: str = ""


class SessionIdConfig(Params, frozen=True):
    sources: tuple[SessionIdSource, ...] = ()  # empty: one header source, x-session-id
    eviction_ttl_seconds: float = DEFAULT_TTL_S  # 0: the default
    eviction_sweep_seconds: float = DEFAULT_SWEEP_S  # 0: the default


class SessionAffinityParams(Params, frozen=True):
    strategy: Literal["encoded_endpoint_header", "session_id"] = "encoded_endpoint_header"
    encoded_endpoint_header_config: EncodedEndpointHeaderConfig = EncodedEndpointHeaderConfig()
    session_id_config: SessionIdConfig = SessionIdConfig()
    profile_name: str = ""  # empty: the primary profile

    def __post_init__(self) -> None:
        # As in llm-d, only the block of the chosen strategy is checked.
        if self.strategy != "session_id":
            return
        config = self.session_id_config
        for i, source in enumerate(config.sources):
            where = f"sessionIdConfig.sources[{i}]"
            if bool(source.header) == bool(source.attribute):
                raise ValueError(f"{where}: exactly one of header or attribute must be set")
            if source.attribute:
                raise ValueError(
                    f"{where}.attribute: request attributes are not supported by this router; "
                    "use a header source"
                )
        for field, value in (
            ("evictionTtlSeconds", config.eviction_ttl_seconds),
            ("evictionSweepSeconds", config.eviction_sweep_seconds),
        ):
            if value < 0:
                raise ValueError(f"sessionIdConfig.{field}: must be > 0 (0: default), got {value}")


@dataclass(slots=True)
class _Binding:
    endpoint_id: str
    last_seen: float


class SessionAffinityScorer(Plugin[SessionAffinityParams]):
    """Scores 1.0 the endpoint the request's session is pinned to, 0.0 the others."""

    TYPE: ClassVar[str] = "session-affinity-scorer"
    Params: ClassVar[type[Any]] = SessionAffinityParams
    STABILITY: ClassVar[Stability] = Stability.ALPHA
    category: ClassVar[Category] = Category.AFFINITY

    def __init__(
        self,
        name: str,
        params: SessionAffinityParams,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, params)
        self._clock = clock
        self._token_header = _header_name(
            params.encoded_endpoint_header_config.header, DEFAULT_TOKEN_HEADER
        )
        config = params.session_id_config
        self._id_headers = tuple(
            _header_name(s.header, DEFAULT_SESSION_ID_HEADER) for s in config.sources
        ) or (DEFAULT_SESSION_ID_HEADER,)
        self._ttl = config.eviction_ttl_seconds or DEFAULT_TTL_S
        self._sweep_every = config.eviction_sweep_seconds or DEFAULT_SWEEP_S
        self._bindings: dict[str, _Binding] = {}
        self._last_sweep = clock()
        # score() -> pre_request(): was the session's bound endpoint among the candidates?
        self._present: DataKey[bool] = DataKey(f"{self.TYPE}/{name}/bound-endpoint-present")

    @property
    def _stateful(self) -> bool:
        return self.params.strategy == "session_id"

    def statistics(self) -> Mapping[str, int]:
        return {"sessions": len(self._bindings)}

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        if self._stateful:
            wanted = self._bound_endpoint(cycle, request, endpoints)
        else:
            token = request.headers.get(self._token_header)
            wanted = decode_token(token) if token else None
        if wanted is None:
            return [0.0] * len(endpoints)
        return [1.0 if e.id == wanted else 0.0 for e in endpoints]

    def pre_request(
        self, cycle: CycleState, request: InferenceRequest, result: SchedulingResult
    ) -> None:
        target = self._target(result)
        if target is None:
            return
        if not self._stateful:
            cycle.outputs.set_response_header(self._token_header, encode_token(target))
            return
        session = self._session_id(request)
        if session is None:
            return
        now = self._clock()
        self._sweep(now)
        binding = self._bindings.get(session)
        if binding is None:
            self._bindings[session] = _Binding(target.id, now)
        elif binding.endpoint_id == target.id:
            binding.last_seen = now
        elif cycle.get(self._present) is False:  # absent, not merely outscored: move
            self._bindings[session] = _Binding(target.id, now)

    def _target(self, result: SchedulingResult) -> Endpoint | None:
        profile = result.profiles.get(self.params.profile_name or result.primary)
        return profile.targets[0] if profile is not None and profile.targets else None

    def _session_id(self, request: InferenceRequest) -> str | None:
        for header in self._id_headers:
            value = request.headers.get(header, "").strip()
            if value:
                return value
        return None

    def _bound_endpoint(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> str | None:
        """The id of the candidate the session is bound to, if it is a candidate."""
        session = self._session_id(request)
        if session is None or not endpoints:
            return None
        self._sweep(self._clock())
        binding = self._bindings.get(session)
        if binding is None:
            return None
        present = any(e.id == binding.endpoint_id for e in endpoints)
        cycle.put(self._present, present)
        return binding.endpoint_id if present else None

    def _sweep(self, now: float) -> None:
        """Drop bindings unused for longer than the TTL, at most once per sweep interval
        (llm-d sweeps on a timer; between sweeps an expired binding still holds)."""
        if now - self._last_sweep < self._sweep_every:
            return
        self._last_sweep = now
        expired = [k for k, b in self._bindings.items() if now - b.last_seen > self._ttl]
        for key in expired:
            del self._bindings[key]
