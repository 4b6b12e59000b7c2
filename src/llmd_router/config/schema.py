"""The EndpointPickerConfig document, field for field as llm-d writes it.

Decoding is strict: an unknown field anywhere is an error that names its path. Plugin
``parameters`` stay undecoded here; each plugin parses its own when it is built.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = [
    "API_VERSION",
    "API_VERSION_DEPRECATED",
    "KIND",
    "DataLayer",
    "DataSource",
    "EndpointPickerConfig",
    "FlowControl",
    "PluginRef",
    "PluginSpec",
    "PriorityBand",
    "ProfilePluginRef",
    "RequestHandler",
    "SchedulingProfile",
]

API_VERSION: Final = "llm-d.ai/v1alpha1"
API_VERSION_DEPRECATED: Final = "inference.networking.x-k8s.io/v1alpha1"
KIND: Final = "EndpointPickerConfig"


class _Strict(msgspec.Struct, forbid_unknown_fields=True, rename="camel", kw_only=True):
    pass


class PluginSpec(_Strict):
    type: str
    name: str = ""  # defaults to the type
    parameters: Any = None


class ProfilePluginRef(_Strict):
    plugin_ref: str
    weight: float | None = None  # scorers only; defaults to 1


class SchedulingProfile(_Strict):
    name: str
    plugins: list[ProfilePluginRef] = msgspec.field(default_factory=list)


class PluginRef(_Strict):
    plugin_ref: str


class DataSource(_Strict):
    plugin_ref: str
    extractors: list[PluginRef] = msgspec.field(default_factory=list)


class DataLayer(_Strict):
    inject_defaults: bool = True
    sources: list[DataSource] = msgspec.field(default_factory=list)
    discovery: PluginRef | None = None
    peer_discovery: PluginRef | None = None
    cross_replica_syncer_plugin_ref: str | None = None
    cross_replica_sync_interval: str | None = None


class PriorityBand(_Strict):
    priority: int
    max_bytes: int | str | None = None
    max_requests: int | str | None = None
    fairness_policy_ref: str | None = None
    ordering_policy_ref: str | None = None


class FlowControl(_Strict):
    max_bytes: int | str | None = None
    max_requests: int | str | None = None
    default_request_ttl: str | None = msgspec.field(default=None, name="defaultRequestTTL")
    no_endpoint_request_ttl: str | None = msgspec.field(default=None, name="noEndpointRequestTTL")
    default_priority_band: PriorityBand | None = None
    default_negative_priority_band: PriorityBand | None = None
    priority_bands: list[PriorityBand] = msgspec.field(default_factory=list)
    usage_limit_policy_plugin_ref: str | None = None
    saturation_detector: PluginRef | None = None
    enable_eviction: bool = False


class RequestHandler(_Strict):
    parsers: list[PluginRef] = msgspec.field(default_factory=list)


class EndpointPickerConfig(_Strict):
    api_version: str
    kind: str
    plugins: list[PluginSpec] = msgspec.field(default_factory=list)
    scheduling_profiles: list[SchedulingProfile] = msgspec.field(default_factory=list)
    feature_gates: list[str] = msgspec.field(default_factory=list)
    data_layer: DataLayer | None = None
    flow_control: FlowControl | None = None
    saturation_detector: PluginRef | None = None  # deprecated: flowControl.saturationDetector
    parser: PluginRef | None = None  # deprecated: requestHandler.parsers
    request_handler: RequestHandler | None = None
