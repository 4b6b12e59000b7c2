"""One simulated vLLM server: HTTP routes over an engine, its metrics, KV events and faults.

Routes, as vLLM serves them: ``POST /v1/chat/completions``, ``POST /v1/completions``,
``GET /v1/models``, ``GET /health``, ``POST /tokenize``, ``GET /metrics``, ``GET /version``,
``POST /reset_prefix_cache``. Added by the simulator: ``GET|POST|DELETE /admin/faults`` to read,
change or clear injected faults while it runs.

The engine runs on the event loop's clock. After anything that changes it (a request, a
disconnect, a timer) the server publishes the KV events produced as one batch (one "engine step")
and re-arms a single timer at the engine's next deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import uuid
from typing import TYPE_CHECKING, Any, Final

import msgspec
import zmq

from llmd_sim.completions import Exchange, build_sequences
from llmd_sim.config import ConfigError, FaultConfig, ServerConfig, update_faults
from llmd_sim.engine import Engine, QueueFull, Seq
from llmd_sim.http import HttpProtocol, HttpRequest, Responder
from llmd_sim.kvevents import KVEventPublisher, endpoint_for
from llmd_sim.metrics import ServerMetrics
from llmd_sim.openai import ApiError, ModelCatalog, error_body, parse_generation, parse_tokenize
from llmd_sim.tokenizer import Tokenizer

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["SimServer"]

_JSON: Final = msgspec.json.Encoder()
# Tokens due within half a millisecond (of simulated time) go out together, in one wake-up.
_TIMER_SLACK: Final = 0.0005
_NOT_FOUND: Final = error_body(404, "Not Found", "Not Found")
_NOT_ALLOWED: Final = error_body(405, "Method Not Allowed", "Method Not Allowed")
_UNSUPPORTED_MEDIA: Final = error_body(
    400,
    "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
    "Bad Request",
)

Route = dict[str, "Callable[[HttpRequest, Responder], None]"]


class SimServer:
    def __init__(
        self, config: ServerConfig, *, index: int = 0, zmq_context: zmq.Context[Any] | None = None
    ) -> None:
        self.config = config
        self.index = index
        self.faults: FaultConfig = config.faults
        self.tokenizer = Tokenizer()
        self.engine = Engine(config)
        self.metrics = ServerMetrics(config, self.engine.statistics)
        self.engine.observer = self.metrics
        self.catalog = ModelCatalog(
            config.model_names,
            config.lora_modules,
            config.max_model_len,
            self.tokenizer,
            echo=config.mode == "echo",
            context_length_status=config.context_length_status,
        )
        self.rng = random.Random(config.seed ^ 0x5EED)
        self.port = config.port
        self._zmq = zmq_context
        self._publisher: KVEventPublisher | None = None
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._slack = _TIMER_SLACK * min(1.0, config.latency.time_scale)
        self._stale_page: bytes | None = None
        self._connections: set[HttpProtocol] = set()
        self._started = int(time.time())
        self._routes: dict[str, Route] = {
            "/v1/chat/completions": {"POST": lambda q, r: self._generate("chat", q, r)},
            "/v1/completions": {"POST": lambda q, r: self._generate("completion", q, r)},
            "/v1/models": {"GET": self._models},
            "/health": {"GET": self._health},
            "/tokenize": {"POST": self._tokenize},
            "/metrics": {"GET": self._metrics},
            "/version": {"GET": lambda q, r: r.send(200, b'{"version":"0.32.0"}')},
            "/reset_prefix_cache": {"POST": self._reset_prefix_cache},
            "/admin/faults": {
                "GET": self._faults_get,
                "POST": self._faults_post,
                "DELETE": self._faults_clear,
            },
        }

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def kv_topic(self) -> str | None:
        return self._publisher.topic if self._publisher else None

    @property
    def kv_publisher(self) -> KVEventPublisher | None:
        return self._publisher

    async def start(self) -> None:
        """Listen, and open the KV-event socket if configured. Ready when this returns."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        config = self.config
        self._server = await loop.create_server(
            lambda: HttpProtocol(self.handle, config.max_request_body_bytes, self._connections),
            config.host,
            config.port,
            reuse_address=True,
            backlog=1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        endpoint = endpoint_for(config.kv_events, self.index)
        if endpoint is not None:
            if self._zmq is None:
                self._zmq = zmq.Context.instance()
            topic = config.kv_events.topic.format(
                host=config.host, port=self.port, model=config.model_names[0]
            )
            self._publisher = KVEventPublisher(self._zmq, config.kv_events, endpoint, topic)

    async def close(self) -> None:
        """Stop listening, cut open connections, close the KV-event socket."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.abort()
            await self._server.wait_closed()
            self._server = None
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    # ------------------------------------------------------------------ engine driving

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def engine_changed(self) -> None:
        """Publish pending KV events and re-arm the timer at the engine's next deadline."""
        events = self.engine.cache.take_events()
        if events and self._publisher is not None:
            self._publisher.publish(events, time.time())
        deadline = self.engine.next_deadline()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        assert self._loop is not None
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        produced = self.engine.advance(self.now() + self._slack)
        if produced:
            self.metrics.on_iteration(produced)
        self.engine_changed()

    def abort(self, seqs: list[Seq]) -> None:
        now = self.now()
        for seq in seqs:
            self.engine.abort(seq, now)
        self.engine_changed()

    # ------------------------------------------------------------------ routing

    def handle(self, request: HttpRequest, responder: Responder) -> None:
        methods = self._routes.get(request.path)
        if methods is None:
            responder.send(404, _NOT_FOUND)
            return
        handler = methods.get(request.method)
        if handler is None:
            responder.send(405, _NOT_ALLOWED, headers=[("allow", ", ".join(methods))])
            return
        handler(request, responder)

    @staticmethod
    def _is_json(request: HttpRequest) -> bool:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        return media == "application/json"

    def _health(self, request: HttpRequest, responder: Responder) -> None:
        responder.send(503 if self.faults.health_fail else 200, b"", content_type="")

    def _models(self, request: HttpRequest, responder: Responder) -> None:
        config = self.config

        def card(name: str, root: str, parent: str | None, max_len: int | None) -> dict[str, Any]:
            return {
                "id": name,
                "object": "model",
                "created": self._started,
                "owned_by": "vllm",
                "root": root,
                "parent": parent,
                "max_model_len": max_len,
                "permission": [
                    {
                        "id": f"modelperm-{uuid.uuid4().hex[:16]}",
                        "object": "model_permission",
                        "created": self._started,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }

        base = config.model_names[0]
        data = [card(name, config.model, None, config.max_model_len) for name in config.model_names]
        data += [card(name, f"/adapters/{name}", base, None) for name in config.lora_modules]
        responder.send(200, _JSON.encode({"object": "list", "data": data}))

    def _tokenize(self, request: HttpRequest, responder: Responder) -> None:
        if not self._is_json(request):
            responder.send(400, _UNSUPPORTED_MEDIA)
            return
        try:
            tokens = parse_tokenize(request.body, self.catalog)
        except ApiError as exc:
            responder.send(exc.status, exc.body())
            return
        responder.send(
            200,
            _JSON.encode(
                {
                    "count": len(tokens),
                    "max_model_len": self.config.max_model_len,
                    "tokens": tokens,
                    "token_strs": None,
                }
            ),
        )

    def _metrics(self, request: HttpRequest, responder: Responder) -> None:
        mode = self.faults.metrics
        if mode == "missing":
            responder.send(404, _NOT_FOUND)
            return
        if mode == "hang":
            return  # never answered; the connection stays open until the client gives up
        if mode == "stale":
            if self._stale_page is None:
                self._stale_page = self.metrics.render()
            page = self._stale_page
        else:
            page = self.metrics.render()
        responder.send(200, page, "text/plain; version=0.0.4; charset=utf-8")

    def _reset_prefix_cache(self, request: HttpRequest, responder: Responder) -> None:
        if self.engine.reset_prefix_cache():
            self.engine_changed()
            responder.send(200, b"", content_type="")
        else:
            responder.send(
                409, error_body(409, "Cannot reset the prefix cache while requests are running.")
            )

    # ------------------------------------------------------------------ faults

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the injected faults. Entering "stale" freezes the current metrics page."""
        if faults.metrics != "stale":
            self._stale_page = None
        elif self.faults.metrics != "stale" or self._stale_page is None:
            self._stale_page = self.metrics.render()
        self.faults = faults

    def _faults_json(self) -> bytes:
        return _JSON.encode(dataclasses.asdict(self.faults))

    def _faults_get(self, request: HttpRequest, responder: Responder) -> None:
        responder.send(200, self._faults_json())

    def _faults_clear(self, request: HttpRequest, responder: Responder) -> None:
        self.set_faults(FaultConfig())
        responder.send(200, self._faults_json())

    def _faults_post(self, request: HttpRequest, responder: Responder) -> None:
        """Body: a JSON object of FaultConfig fields, e.g. ``{"error_rate": 1.0}``."""
        try:
            data = msgspec.json.decode(request.body or b"{}")
            if not isinstance(data, dict):
                raise ConfigError("the body must be a JSON object of fault settings")
            faults = update_faults(self.faults, data)
        except (msgspec.DecodeError, ConfigError) as exc:
            responder.send(400, error_body(400, str(exc)))
            return
        self.set_faults(faults)
        responder.send(200, self._faults_json())

    # ------------------------------------------------------------------ generation

    def _generate(self, kind: str, request: HttpRequest, responder: Responder) -> None:
        faults = self.faults
        headers: list[tuple[str, str]] = []
        header_id = request.headers.get("x-request-id")
        if self.config.enable_request_id_headers:
            headers.append(("x-request-id", header_id or uuid.uuid4().hex))
        if faults.hang_rate and self.rng.random() < faults.hang_rate:
            return  # accepted and never answered
        if faults.error_rate and self.rng.random() < faults.error_rate:
            status = faults.error_status
            body = error_body(status, f"Injected failure: the simulated server answered {status}.")
            self._reply(request, responder, status, body, headers)
            return
        if not self._is_json(request):
            self._reply(request, responder, 400, _UNSUPPORTED_MEDIA, headers)
            return
        try:
            gen = parse_generation(
                "chat" if kind == "chat" else "completion", request.body, self.catalog
            )
        except ApiError as exc:
            self._reply(request, responder, exc.status, exc.body(), headers)
            return
        suffix = header_id or uuid.uuid4().hex[:16]
        request_id = ("chatcmpl-" if gen.kind == "chat" else "cmpl-") + suffix
        cut = None
        if faults.drop_rate and gen.stream and self.rng.random() < faults.drop_rate:
            cut = faults.drop_after_tokens
        if cut == 0:
            responder.start_stream(headers=headers)
            responder.abort()  # cut right after the headers
            return
        now = self.now()
        exchange = Exchange(
            self,
            gen,
            request,
            responder,
            request_id,
            cut_after=cut,
            show_cached=self.config.enable_prompt_tokens_details,
            headers=headers,
        )
        seqs = build_sequences(
            gen,
            exchange,
            self.tokenizer,
            now=now,
            rng=self.rng,
            mean_len=self.config.output_len_mean,
            echo=self.catalog.echo,
        )
        try:
            self.engine.submit(seqs, now)
        except QueueFull as exc:
            self.metrics.queue_rejections += 1
            self._reply(request, responder, 429, error_body(429, str(exc)), headers)
            return
        exchange.begin()
        self.metrics.on_request(gen.n)
        self.engine_changed()

    def _reply(
        self,
        request: HttpRequest,
        responder: Responder,
        status: int,
        body: bytes,
        headers: list[tuple[str, str]],
    ) -> None:
        responder.send(status, body, headers=headers)
        self.metrics.on_http(
            request.path,
            request.method,
            status,
            time.monotonic() - request.received_at,
            len(request.body),
            len(body),
        )

    def exchange_done(self, exchange: Exchange) -> None:
        request = exchange.request
        self.metrics.on_http(
            request.path,
            request.method,
            exchange.responder.status,
            time.monotonic() - request.received_at,
            len(request.body),
            exchange.response_bytes,
        )
