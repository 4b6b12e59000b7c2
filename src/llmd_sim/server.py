"""One simulated vLLM server: HTTP routes over an engine, its metrics, KV events and faults.

Routes (as vLLM serves them): ``POST /v1/chat/completions``, ``POST /v1/completions``,
``GET /v1/models``, ``GET /health``, ``POST /tokenize``, ``GET /metrics``, ``GET /version``,
``POST /reset_prefix_cache``. Simulator additions: ``GET|POST|DELETE /admin/faults`` to read,
change or clear injected faults at run time.

The engine runs on the event loop's clock. After anything that changes it (a request, a
disconnect, a timer) the server publishes the KV events it produced as one batch and re-arms a
single timer at the engine's next deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec
import zmq

from llmd_sim.config import OPTIONS, ConfigError, FaultConfig, ServerConfig
from llmd_sim.engine import Engine, Prompt, QueueFull, Seq
from llmd_sim.generation import plan_output
from llmd_sim.http import HttpProtocol, HttpRequest, Responder
from llmd_sim.kvevents import KVEventPublisher, endpoint_for
from llmd_sim.metrics import ServerMetrics
from llmd_sim.openai import (
    ApiError,
    Choice,
    ChunkEncoder,
    GenerationRequest,
    ModelCatalog,
    chat_response,
    completion_response,
    error_body,
    parse_generation,
    parse_tokenize,
)
from llmd_sim.tokenizer import EOS, EOT, Tokenizer

__all__ = ["SimServer"]

_log = logging.getLogger(__name__)
_JSON: Final = msgspec.json.Encoder()
_TIMER_SLACK: Final = 0.0005  # tokens due within half a millisecond go out together
_NOT_FOUND: Final = b'{"detail":"Not Found"}'
_NOT_ALLOWED: Final = b'{"detail":"Method Not Allowed"}'
# Fault fields that may be changed through /admin/faults, with the option that parses them.
_FAULT_FIELDS: Final = {opt.attr: opt for opt in OPTIONS if opt.group == "faults"}
_FAULT_ALIASES: Final = {"health": "health_fail"}


class SimServer:
    def __init__(self, config: ServerConfig, *, index: int = 0,
                 zmq_context: zmq.Context[Any] | None = None) -> None:
        self.config = config
        self.index = index
        self.faults: FaultConfig = config.faults
        self.tokenizer = Tokenizer()
        self.engine = Engine(config)
        self.metrics = ServerMetrics(config, self.engine.statistics)
        self.engine.observer = self.metrics
        self.catalog = ModelCatalog(config.model_names, config.lora_modules,
                                    config.max_model_len, self.tokenizer, config.mode == "echo")
        self.rng = random.Random(config.seed ^ 0x5EED)
        self.port = config.port
        self._zmq = zmq_context
        self._publisher: KVEventPublisher | None = None
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._stale_page: bytes | None = None
        self._started = int(time.time())
        self._routes: dict[str, dict[str, Callable[[HttpRequest, Responder], None]]] = {
            "/v1/chat/completions": {"POST": lambda q, r: self._generate("chat", q, r)},
            "/v1/completions": {"POST": lambda q, r: self._generate("completion", q, r)},
            "/v1/models": {"GET": self._models},
            "/health": {"GET": self._health},
            "/tokenize": {"POST": self._tokenize},
            "/metrics": {"GET": self._metrics},
            "/version": {"GET": lambda q, r: r.send(200, b'{"version":"0.32.0"}')},
            "/reset_prefix_cache": {"POST": self._reset_prefix_cache},
            "/admin/faults": {"GET": self._faults_get, "POST": self._faults_post,
                              "DELETE": self._faults_clear},
        }

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def kv_topic(self) -> str | None:
        return self._publisher.topic if self._publisher else None

    async def start(self) -> None:
        """Listen, and open the KV-event socket if configured. Ready when this returns."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        config = self.config
        self._server = await loop.create_server(
            lambda: HttpProtocol(self.handle, config.max_request_body_bytes),
            config.host, config.port, reuse_address=True, backlog=1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        kv = config.kv_events
        endpoint = endpoint_for(kv, self.index)
        if endpoint is not None:
            if self._zmq is None:
                self._zmq = zmq.Context.instance()
            topic = kv.topic.format(host=config.host, port=self.port, model=config.model_names[0])
            self._publisher = KVEventPublisher(self._zmq, kv, endpoint, topic)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._server is not None:
            self._server.close()
            self._server.close_clients()
            await self._server.wait_closed()
            self._server = None
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    # ------------------------------------------------------------------ engine driving

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def engine_changed(self) -> None:
        """Publish pending KV events and re-arm the timer at the engine's next deadline."""
        if self._publisher is not None:
            events = self.engine.cache.take_events()
            if events:
                self._publisher.publish(events, time.time())
        else:
            self.engine.cache.events.clear()
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
        produced = self.engine.advance(self._now() + _TIMER_SLACK)
        if produced:
            self.metrics.on_iteration(produced)
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

    def _health(self, request: HttpRequest, responder: Responder) -> None:
        if self.faults.health_fail:
            responder.send(503, error_body(503, "The server is unhealthy (injected fault)."))
        else:
            responder.send(200, b"")

    def _models(self, request: HttpRequest, responder: Responder) -> None:
        config = self.config
        base = config.model_names[0]

        def entry(name: str, root: str, parent: str | None) -> dict[str, Any]:
            return {
                "id": name, "object": "model", "created": self._started, "owned_by": "vllm",
                "root": root, "parent": parent, "max_model_len": config.max_model_len,
                "permission": [{
                    "id": f"modelperm-{self.rng.getrandbits(64):016x}",
                    "object": "model_permission", "created": self._started,
                    "allow_create_engine": False, "allow_sampling": True,
                    "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
                    "allow_fine_tuning": False, "organization": "*", "group": None,
                    "is_blocking": False,
                }],
            }

        data = [entry(name, config.model, None) for name in config.model_names]
        data += [entry(name, f"/adapters/{name}", base) for name in config.lora_modules]
        responder.send(200, _JSON.encode({"object": "list", "data": data}))

    def _tokenize(self, request: HttpRequest, responder: Responder) -> None:
        try:
            tokens = parse_tokenize(request.body, self.catalog)
        except ApiError as exc:
            responder.send(exc.status, exc.body())
            return
        responder.send(200, _JSON.encode({
            "count": len(tokens), "max_model_len": self.config.max_model_len,
            "tokens": tokens, "token_strs": None,
        }))

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
            responder.send(200, b"")
        else:
            responder.send(409, error_body(409, "Cannot reset the prefix cache while requests "
                                                "are running.", "ConflictError"))

    # ------------------------------------------------------------------ faults

    def set_faults(self, faults: FaultConfig) -> None:
        if faults.metrics != "stale":
            self._stale_page = None
        elif self.faults.metrics != "stale":
            self._stale_page = self.metrics.render()
        self.faults = faults

    def _faults_json(self) -> bytes:
        data = dataclasses.asdict(self.faults)
        data["health"] = "fail" if data.pop("health_fail") else "ok"
        return _JSON.encode(data)

    def _faults_get(self, request: HttpRequest, responder: Responder) -> None:
        responder.send(200, self._faults_json())

    def _faults_clear(self, request: HttpRequest, responder: Responder) -> None:
        self.set_faults(FaultConfig())
        responder.send(200, self._faults_json())

    def _faults_post(self, request: HttpRequest, responder: Responder) -> None:
        try:
            data = msgspec.json.decode(request.body or b"{}")
            if not isinstance(data, dict):
                raise ConfigError("the body must be a JSON object of fault settings")
            changes: dict[str, Any] = {}
            for key, value in data.items():
                attr = _FAULT_ALIASES.get(key, key)
                option = _FAULT_FIELDS.get(attr)
                if option is None:
                    known = sorted([*(k for k in _FAULT_FIELDS if k != "health_fail"), "health"])
                    raise ConfigError(f"unknown fault {key!r}; known: {', '.join(known)}")
                try:
                    changes[attr] = option.parse(value)
                except ConfigError as exc:
                    raise ConfigError(f"fault {key!r}: {exc}") from None
        except (msgspec.DecodeError, ConfigError) as exc:
            responder.send(400, error_body(400, str(exc)))
            return
        self.set_faults(dataclasses.replace(self.faults, **changes))
        responder.send(200, self._faults_json())

    # ------------------------------------------------------------------ generation

    def _generate(self, kind: str, request: HttpRequest, responder: Responder) -> None:
        faults = self.faults
        handler = request.path
        if faults.hang_rate and self.rng.random() < faults.hang_rate:
            return  # accepted and never answered
        if faults.error_rate and self.rng.random() < faults.error_rate:
            status = faults.error_status
            responder.send(status, error_body(status, "Injected failure: the simulated server "
                                                      f"answered {status}."))
            self._http_done(handler, request, responder, 0)
            return
        try:
            gen = parse_generation("chat" if kind == "chat" else "completion", request.body,
                                   self.catalog)
        except ApiError as exc:
            responder.send(exc.status, exc.body())
            self._http_done(handler, request, responder, 0)
            return
        now = self._now()
        header_id = request.headers.get("x-request-id")
        suffix = header_id or f"{self.rng.getrandbits(64):016x}"
        request_id = ("chatcmpl-" if gen.kind == "chat" else "cmpl-") + suffix
        drop = bool(faults.drop_rate) and gen.stream and self.rng.random() < faults.drop_rate
        listener = _Response(self, gen, request, responder, request_id,
                             faults.drop_after_tokens if drop else None)
        seqs: list[Seq] = []
        eos = EOT if gen.kind == "chat" else EOS
        for p_index, prompt in enumerate(gen.prompts):
            shared = Prompt(prompt.token_ids, gen.lora)
            for i in range(gen.n):
                index = p_index * gen.n + i
                rng = (random.Random(gen.spec.seed + index) if gen.spec.seed is not None
                       else self.rng)
                plan = plan_output(gen.spec, rng=rng, tokenizer=self.tokenizer,
                                   mean_len=self.config.output_len_mean, eos=eos,
                                   echo=(prompt.echo_ids, prompt.echo_texts)
                                   if self.catalog.echo else None)
                seqs.append(Seq(shared, plan, listener, now, index=index,
                                max_tokens=gen.spec.max_tokens))
        listener.seqs = seqs
        try:
            self.engine.submit(seqs, now)
        except QueueFull as exc:
            self.metrics.queue_rejections += 1
            responder.send(429, error_body(429, str(exc), "RateLimitError"))
            self._http_done(handler, request, responder, 0)
            return
        self.metrics.on_request(gen.n)
        responder.on_close = listener.client_gone
        self.engine_changed()

    def _http_done(self, handler: str, request: HttpRequest, responder: Responder,
                   response_bytes: int) -> None:
        self.metrics.on_http(handler, request.method, responder.status,
                             time.monotonic() - request.received_at, len(request.body),
                             response_bytes)


class _Response:
    """Turns the tokens of a request's sequences into its HTTP response. A SeqListener."""

    __slots__ = ("_bytes", "_cut_after", "_encoder", "_finished", "_request", "_responder",
                 "_server", "_written", "gen", "request_id", "seqs")

    def __init__(self, server: SimServer, gen: GenerationRequest, request: HttpRequest,
                 responder: Responder, request_id: str, cut_after: int | None) -> None:
        self._server = server
        self.gen = gen
        self._request = request
        self._responder = responder
        self.request_id = request_id
        self.seqs: list[Seq] = []
        self._finished = 0
        self._written = 0
        self._bytes = 0
        self._cut_after = cut_after
        self._encoder = ChunkEncoder(gen.kind, request_id, int(time.time()), gen.model)
        if gen.stream:
            responder.start_stream()

    def _cached(self) -> int | None:
        if not self._server.config.enable_prompt_tokens_details:
            return None
        n = self.gen.n
        return sum(s.cached_tokens for s in self.seqs[::n])

    def _prompt_tokens(self) -> int:
        return sum(len(p.token_ids) for p in self.gen.prompts)

    def on_token(self, seq: Seq, now: float) -> None:
        if not self.gen.stream:
            return
        enc = self._encoder
        plan = seq.plan
        i = seq.generated - 1
        last = seq.generated == len(plan)
        delta = plan.deltas[i]
        out = b""
        if i == 0 and self.gen.kind == "chat":
            out = enc.role(seq.index)
        if delta or last:
            usage = None
            if self.gen.continuous_usage:
                usage = enc.usage_object(len(seq.prompt.token_ids), seq.generated, None)
            out += enc.token(seq.index, delta, plan.finish_reason if last else None,
                             plan.stop_reason if last else None, usage)
        if out:
            self._responder.write(out)
            self._bytes += len(out)
        self._written += 1
        if self._cut_after is not None and self._written >= self._cut_after:
            self._responder.abort()
            self.client_gone()

    def on_finish(self, seq: Seq, now: float) -> None:
        self._finished += 1
        if self._finished < len(self.seqs):
            return
        gen = self.gen
        server = self._server
        completion = sum(s.generated for s in self.seqs)
        if gen.stream:
            tail = b""
            if gen.include_usage:
                tail = self._encoder.usage(self._prompt_tokens(), completion, self._cached())
            tail += ChunkEncoder.DONE
            self._responder.write(tail)
            self._bytes += len(tail)
            self._responder.end_stream()
        else:
            choices = [Choice(s.index, s.plan) for s in self.seqs]
            render = chat_response if gen.kind == "chat" else completion_response
            body = render(self.request_id, int(time.time()), gen.model, choices,
                          self._prompt_tokens(), self._cached())
            self._responder.send(200, body)
            self._bytes = len(body)
        server._http_done(self._request.path, self._request, self._responder, self._bytes)

    def client_gone(self) -> None:
        """The client disconnected (or the connection was cut on purpose): stop generating."""
        server = self._server
        now = server._now()
        for seq in self.seqs:
            server.engine.abort(seq, now)
        server.engine_changed()
