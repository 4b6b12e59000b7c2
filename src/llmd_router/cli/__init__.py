"""The command line. ``main`` is the ``llmd-router`` entry point."""

from llmd_router.cli.main import main

__all__ = ["main"]
