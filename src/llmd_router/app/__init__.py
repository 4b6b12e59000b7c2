"""The composition root: options in, a running router out.

``Router`` (``router``) is the Endpoint Picker: it builds the object graph from its options and
owns its lifetime, one task group in which every background loop runs supervised.
``Standalone`` (``standalone``) adds the Envoy it configures and supervises. Configuration
loading and reloading is ``configuration``; the options themselves are ``options``.
"""

from llmd_router.app.options import EnvoyOptions, RouterOptions
from llmd_router.app.router import Router
from llmd_router.app.standalone import Standalone

__all__ = ["EnvoyOptions", "Router", "RouterOptions", "Standalone"]
