"""Pickers: choose the target endpoints from the scored candidates.

Every llm-d picker takes one parameter, ``maxNumOfEndpoints`` (default 1; 0 or less means 1),
and draws at random; ``Picker`` holds both for the three of them.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from llmd_router.framework import Params, Plugin, Stability

__all__ = ["Picker", "PickerParams"]


class PickerParams(Params, frozen=True):
    max_num_of_endpoints: int = 1  # <= 0 means 1, as in llm-d


class Picker(Plugin[PickerParams]):
    Params: ClassVar[type[Any]] = PickerParams
    STABILITY: ClassVar[Stability] = Stability.BETA

    def __init__(self, name: str, params: PickerParams) -> None:
        super().__init__(name, params)
        self.limit = max(1, params.max_num_of_endpoints)
        self.rng = random.Random()
