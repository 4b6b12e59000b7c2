"""Scheduling contracts. Never imports a plugin."""

from llmd_router.scheduling.framework.interfaces import (
    ProfileResult,
    Scheduler,
    SchedulingError,
    SchedulingResult,
)

__all__ = ["ProfileResult", "Scheduler", "SchedulingError", "SchedulingResult"]
