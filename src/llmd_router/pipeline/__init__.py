"""From a configuration to a ``Pipeline``: every plugin built, wired and checked."""
