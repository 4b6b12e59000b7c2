"""Fakes and builders for testing plugins and the router: shipped, so plugin authors have them.

A scorer tested in five lines::

    from llmd_router.testing import endpoints, make, score
    from llmd_router.plugins.scorers.queue_scorer import QueueScorer

    pool = endpoints(3, waiting_queue_size=[0, 5, 10])
    assert score(make(QueueScorer), pool) == [1.0, 0.5, 0.0]

- builders: ``endpoint``, ``endpoints``, ``request``, ``result``;
- one plugin run as the router runs it: ``make`` (parameters checked, bound), ``score``,
  ``keep`` (a filter), ``pick``, ``route`` (charge a routed request to an in-flight ledger);
- ``pipeline`` / ``config_text``: the pipeline a few lines of configuration build;
- ``FakeClock``, ``FixedDraw`` (a random source that draws a given value); ``task_owner``
  and ``local_options`` for running router parts;
- ``llmd_router.testing.extproc``: Envoy's side of ext-proc and ``ExtProcHarness``, which drives
  the real servicer over gRPC on a free port (it needs Envoy's protobufs, so it is imported on
  its own).

Nothing in the router imports this package.
"""

from llmd_router.testing.builders import endpoint, endpoints, request, result
from llmd_router.testing.clock import FakeClock, FixedDraw
from llmd_router.testing.config import HEADER, config_text, pipeline
from llmd_router.testing.plugins import keep, make, pick, route, score
from llmd_router.testing.running import local_options, task_owner

__all__ = [
    "HEADER",
    "FakeClock",
    "FixedDraw",
    "config_text",
    "endpoint",
    "endpoints",
    "keep",
    "local_options",
    "make",
    "pick",
    "pipeline",
    "request",
    "result",
    "route",
    "score",
    "task_owner",
]
