"""A custom scorer in ten lines: prefer endpoints that carry a label."""

from llmd_router.framework import Params, Plugin


class PreferLabelParams(Params, frozen=True):
    label: str  # required: a configuration without it is refused at start-up
    value: str = "true"


class PreferLabel(Plugin[PreferLabelParams]):
    Params = PreferLabelParams

    def score(self, cycle, request, endpoints):
        p = self.params
        return [1.0 if e.labels.get(p.label) == p.value else 0.0 for e in endpoints]
