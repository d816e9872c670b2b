"""The FastAPI app of `tuneforge serve`: OpenAI-compatible /v1 endpoints, vLLM's adapter
calls, LLaMA-Factory's /v1/score/evaluation, and the REST-service seed's /models/load and
/generate, over `ServedModels`.

Handlers only translate: HTTP bodies to `GenerationRequest`s and engine calls, engine
results and `UserError`s back to HTTP. Errors answer in OpenAI's shape
`{"error": {"message", "type", "param", "code"}}` plus FastAPI's `detail`, so both OpenAI
clients and `requests` users read them: 404 for an unknown model, 422 naming the field,
503 with Retry-After when a queue is full. A client's mistake never answers 500.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import struct
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import ValidationError

from tuneforge import __version__
from tuneforge.config.serve import ServeConfig
from tuneforge.errors import OverloadedError, UserError
from tuneforge.jobs.queue import JobQueue
from tuneforge.serve.requests import ChatMessage, GenerationRequest, ToolCallSpec
from tuneforge.serve.stream import TextStream
from tuneforge.server.metrics import ServerMetrics
from tuneforge.server.models import ServedModels, Target
from tuneforge.server.openai_jobs import openai_router
from tuneforge.server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    GenerateRequest,
    LoadLoraAdapterRequest,
    LoadModelRequest,
    Message,
    RerankRequest,
    ScoreEvaluationRequest,
    UnloadLoraAdapterRequest,
    _Sampling,
)
from tuneforge.server.security import PathPolicy
from tuneforge.server.training import training_router
from tuneforge.settings import Settings

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1
CHAT_MAX_TOKENS = 512  # when a chat request gives none (OpenAI: up to the context length)
COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
ROLES = {"developer": "system", "function": "tool"}  # OpenAI's other role names


def create_app(models: ServedModels, config: ServeConfig, settings: Settings | None = None,
               queue: JobQueue | None = None) -> FastAPI:
    """The app; it closes `models` (and stops `queue`'s scheduler) when it shuts down. With
    `queue`, the training service's routes and the dashboard are served too."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if queue is not None:
            await run_in_threadpool(queue.close)
        await run_in_threadpool(models.close)

    app = FastAPI(title="tuneforge", version=__version__, lifespan=lifespan)
    metrics = ServerMetrics()
    app.state.models, app.state.metrics = models, metrics
    _errors(app)
    policy = PathPolicy([settings.home, Path.cwd(), *config.roots])
    if queue is not None:
        limit = int(config.max_upload_mb * (1 << 20))
        app.include_router(training_router(queue, settings, policy, models,
                                           max_upload_bytes=limit))
        app.include_router(openai_router(queue, settings, policy, max_upload_bytes=limit))
        _dashboard(app)

    app.add_middleware(_Observe, metrics=metrics, token=config.api_key)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__,
                "models": [row["id"] for row in models.listing()]}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(models),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": models.listing()}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest) -> Any:
        target = await run_in_threadpool(models.resolve, body.model)
        messages = tuple(_chat_message(m) for m in body.messages)
        tools = json.dumps([t.model_dump() for t in body.tools]) if body.tools else None
        base = _request(body, target, messages=messages, tools=tools,
                        max_tokens=body.max_tokens or CHAT_MAX_TOKENS)
        streams = _submit(target, [base], body.n, body.seed)
        reply = _Reply("chatcmpl", target.name, metrics, body.n)
        if body.stream:
            return _sse(reply.chat_chunks(streams, body.include_usage), streams, reply)
        texts = await _collect(streams)
        return reply.chat(streams, texts)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest) -> Any:
        target = await run_in_threadpool(models.resolve, body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        requests = [_request(body, target, prompt=p,
                             max_tokens=body.max_tokens or COMPLETION_MAX_TOKENS)
                    for p in prompts]
        streams = _submit(target, requests, body.n, body.seed)
        echoes = [p for p in prompts for _ in range(body.n)] if body.echo else None
        reply = _Reply("cmpl", target.name, metrics, body.n)
        if body.stream:
            return _sse(reply.text_chunks(streams, body.include_usage, echoes), streams, reply)
        texts = await _collect(streams)
        if echoes:
            texts = [e + t for e, t in zip(echoes, texts, strict=True)]
        return reply.text(streams, texts)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        target = await run_in_threadpool(models.resolve, body.model, kinds=("embedding",))
        texts = [body.input] if isinstance(body.input, str) else body.input
        vectors, tokens = await run_in_threadpool(target.served.engine.embed, texts)
        if body.dimensions is not None:
            vectors = [_shorten(v, body.dimensions) for v in vectors]
        data = [{"object": "embedding", "index": i,
                 "embedding": _encode(v, body.encoding_format)} for i, v in enumerate(vectors)]
        metrics.prompt_tokens.labels(target.served.name).inc(tokens)
        return {"object": "list", "data": data, "model": target.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    async def rerank(body: RerankRequest) -> dict[str, Any]:
        target = await run_in_threadpool(models.resolve, body.model,
                                         kinds=("rerank", "embedding"))
        texts = body.texts
        scores, tokens = await run_in_threadpool(target.served.engine.rerank, body.query, texts)
        order = sorted(range(len(texts)), key=lambda i: -scores[i])[: body.top_n]
        results = [{"index": i, "relevance_score": scores[i]}
                   | ({"document": {"text": texts[i]}} if body.return_documents else {})
                   for i in order]
        metrics.prompt_tokens.labels(target.served.name).inc(tokens)
        return {"id": _id("rerank"), "model": target.name, "results": results,
                "usage": {"total_tokens": tokens}}

    for path in ("/v1/rerank", "/rerank", "/v2/rerank"):  # the paths Jina, Cohere, vLLM use
        app.post(path)(rerank)

    @app.post("/v1/score/evaluation")
    async def score_evaluation(body: ScoreEvaluationRequest) -> dict[str, Any]:
        target = await run_in_threadpool(models.resolve, body.model, kinds=("reward",))
        scores, tokens = await run_in_threadpool(target.served.engine.score, body.messages,
                                                 body.max_length)
        metrics.prompt_tokens.labels(target.served.name).inc(tokens)
        return {"id": _id("scoreval"), "object": "score.evaluation", "model": target.name,
                "scores": scores}

    @app.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
    async def load_lora_adapter(body: LoadLoraAdapterRequest) -> str:
        path = policy.source(body.lora_path, "lora_path", settings.runs)
        await run_in_threadpool(models.load_adapter, body.lora_name, path,
                                body.base_model_name)
        return f"Success: LoRA adapter '{body.lora_name}' added successfully."

    @app.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
    async def unload_lora_adapter(body: UnloadLoraAdapterRequest) -> str:
        await run_in_threadpool(models.unload_adapter, body.lora_name)
        return f"Success: LoRA adapter '{body.lora_name}' removed successfully."

    @app.post("/models/load")
    async def load_model(body: LoadModelRequest) -> dict[str, Any]:
        model_path = policy.source(body.model_path, "model_path", settings.runs)
        if body.lora_adapter:
            adapter = policy.source(body.lora_adapter, "lora_adapter", settings.runs)
            served = await run_in_threadpool(models.load_model, model_path)
            await run_in_threadpool(models.load_adapter, body.model_name, adapter,
                                    served.name)
            message = f"loaded adapter {body.lora_adapter} on {served.name}"
        else:
            served = await run_in_threadpool(models.load_model, model_path, body.model_name)
            message = f"loaded {served.model_dir}"
        return {"status": "success", "model_name": body.model_name, "base_model": served.name,
                "kind": served.kind, "message": message}

    @app.post("/generate")
    async def generate(body: GenerateRequest) -> dict[str, Any]:
        target = await run_in_threadpool(models.resolve, body.model_name)
        request = _validated(dict(
            prompt=body.prompt, adapter=target.adapter, max_tokens=body.max_tokens,
            temperature=body.temperature, top_p=body.top_p, top_k=max(body.top_k, 0),
            repetition_penalty=body.repetition_penalty, stop=tuple(body.stop), seed=body.seed))
        streams = _submit(target, [request], 1, body.seed)
        text, = await _collect(streams)
        reply = _Reply("gen", target.name, metrics)
        reply.account(streams)
        return {"text": text, "model_name": target.name,
                "finish_reason": streams[0].finish_reason, "usage": reply.usage(streams)}

    return app


class _Observe:
    """The API token check, then each request's count and latency (to its last byte).

    A plain ASGI middleware: Starlette's BaseHTTPMiddleware (`@app.middleware`) costs about
    a millisecond of CPU per request, a third of a status request's (bench/api_load.py).
    """

    def __init__(self, app: Any, metrics: ServerMetrics, token: str | None) -> None:
        self.app, self.metrics = app, metrics
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.expected is not None and not _public(scope["path"]) and not hmac.compare_digest(
                dict(scope["headers"]).get(b"authorization", b""), self.expected):
            await _error(401, "expected the header Authorization: Bearer <api token>",
                         "authentication_error",
                         headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            self.metrics.requests.labels("other", "401").inc()
            return
        start, status = time.perf_counter(), 500

        async def observed(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                route = getattr(scope.get("route"), "path", "other")
                self.metrics.latency.labels(route).observe(time.perf_counter() - start)
                self.metrics.requests.labels(route, str(status)).inc()
            await send(message)

        await self.app(scope, receive, observed)


def _public(path: str) -> bool:
    """Paths served without the API token: /health, and the dashboard's static page (it asks
    for the token and sends it with every call it makes)."""
    return path in ("/health", "/", "/favicon.ico") or path.startswith("/dashboard/")


def _dashboard(app: FastAPI) -> None:
    """The web dashboard: index.html at /, its script and style under /dashboard/."""
    from importlib import resources

    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    class Revalidated(StaticFiles):
        """Static files a browser checks again on every load, so an upgrade is seen."""

        def file_response(self, *args: Any, **kwargs: Any) -> Response:
            response = super().file_response(*args, **kwargs)
            response.headers["Cache-Control"] = "no-cache"
            return response

    folder = Path(str(resources.files("tuneforge.resources").joinpath("dashboard")))
    app.mount("/dashboard", Revalidated(directory=folder), name="dashboard")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(folder / "index.html", headers={"Cache-Control": "no-cache"})


# -- requests ----------------------------------------------------------------------------------


def _chat_message(message: Message) -> ChatMessage:
    calls = tuple(ToolCallSpec(name=c.function.name, arguments=str(c.function.arguments),
                               id=c.id) for c in message.tool_calls or ())
    role = ROLES.get(message.role, message.role)
    return ChatMessage(role=role, content=message.text, tool_calls=calls,  # type: ignore[arg-type]
                       name=message.name)


def _request(body: _Sampling, target: Target, **values: Any) -> GenerationRequest:
    return _validated(dict(
        values, adapter=target.adapter, temperature=body.temperature, top_p=body.top_p,
        top_k=max(body.top_k, 0), repetition_penalty=body.repetition_penalty,
        stop=tuple(body.stop), seed=body.seed, ignore_eos=body.ignore_eos))


def _validated(values: dict[str, Any]) -> GenerationRequest:
    try:
        return GenerationRequest(**values)
    except ValidationError as exc:  # the HTTP schemas check first; this is a second net
        raise RequestValidationError(
            [dict(e, loc=("body", *e["loc"])) for e in exc.errors()]) from None


def _submit(target: Target, requests: Sequence[GenerationRequest], n: int,
            seed: int | None) -> list[TextStream]:
    """Queue every request n times (answer j of a seeded request uses seed + j); on a full
    queue cancel what was queued and raise."""
    streams: list[TextStream] = []
    try:
        for request in requests:
            for j in range(n):
                one = request if j == 0 or seed is None else \
                    request.model_copy(update={"seed": seed + j})
                streams.append(target.served.engine.submit(one))
    except BaseException:
        for stream in streams:
            stream.cancel()
        raise
    return streams


async def _collect(streams: Sequence[TextStream]) -> list[str]:
    async def text(stream: TextStream) -> str:
        return "".join([delta async for delta in stream])

    try:
        return list(await asyncio.gather(*(text(s) for s in streams)))
    finally:  # a client that went away, or a failure: free the batch slots
        for stream in streams:
            stream.cancel()


def _sse(chunks: AsyncIterator[dict[str, Any]], streams: Sequence[TextStream],
         reply: _Reply) -> Response:
    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"
        finally:  # the client disconnected (Starlette cancels us) or we are done
            for stream in streams:
                stream.cancel()
            # count the tokens once the engine has let go of every stream
            _background.add(task := asyncio.create_task(_account_when_done(reply, streams)))
            task.add_done_callback(_background.discard)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


_background: set[asyncio.Task[None]] = set()  # keeps accounting tasks alive until done


async def _account_when_done(reply: _Reply, streams: Sequence[TextStream]) -> None:
    for stream in streams:
        async for _ in stream:  # what is left: the tail before the cancel took effect
            pass
    reply.account(streams)


async def _merged(streams: Sequence[TextStream]) -> AsyncIterator[tuple[int, str | None]]:
    """(index, delta) from every stream as it comes; (index, None) when one ends."""
    if len(streams) == 1:  # the common case: no pump task and queue hop per token
        async for delta in streams[0]:
            yield 0, delta
        yield 0, None
        return
    queue: asyncio.Queue[tuple[int, str | None] | BaseException] = asyncio.Queue()

    async def pump(index: int, stream: TextStream) -> None:
        try:
            async for delta in stream:
                await queue.put((index, delta))
            await queue.put((index, None))
        except BaseException as error:  # noqa: BLE001 - handed to the reader
            await queue.put(error)

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        for _ in range(len(streams)):
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item[1] is None:
                    break
    finally:
        for task in tasks:
            task.cancel()


# -- replies -----------------------------------------------------------------------------------


class _Reply:
    """The OpenAI response and chunk shapes of one request."""

    def __init__(self, prefix: str, model: str, metrics: ServerMetrics, n: int = 1) -> None:
        self.id, self.model, self.n = _id(prefix), model, n
        self.created = int(time.time())
        self.metrics = metrics
        self.start = time.perf_counter()

    def account(self, streams: Sequence[TextStream]) -> None:
        usage = _usage(streams, self.n)
        self.metrics.prompt_tokens.labels(self.model).inc(usage["prompt_tokens"])
        self.metrics.generation_tokens.labels(self.model).inc(usage["completion_tokens"])

    def usage(self, streams: Sequence[TextStream]) -> dict[str, int]:
        return _usage(streams, self.n)

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def chat(self, streams: Sequence[TextStream], texts: Sequence[str]) -> dict[str, Any]:
        self.account(streams)
        choices = [{"index": i, "message": {"role": "assistant", "content": text},
                    "logprobs": None, "finish_reason": _finish(s)}
                   for i, (s, text) in enumerate(zip(streams, texts, strict=True))]
        return self._head("chat.completion") | {"choices": choices, "usage": self.usage(streams)}

    def text(self, streams: Sequence[TextStream], texts: Sequence[str]) -> dict[str, Any]:
        self.account(streams)
        choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": _finish(s)}
                   for i, (s, text) in enumerate(zip(streams, texts, strict=True))]
        return self._head("text_completion") | {"choices": choices, "usage": self.usage(streams)}

    async def chat_chunks(self, streams: Sequence[TextStream],
                          include_usage: bool) -> AsyncIterator[dict[str, Any]]:
        head = self._head("chat.completion.chunk")
        for i in range(len(streams)):
            yield head | {"choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                       "logprobs": None, "finish_reason": None}]}
        async for index, delta in self._deltas(streams):
            choice = {"index": index, "delta": {} if delta is None else {"content": delta},
                      "logprobs": None,
                      "finish_reason": _finish(streams[index]) if delta is None else None}
            yield head | {"choices": [choice]}
        if include_usage:
            yield head | {"choices": [], "usage": self.usage(streams)}

    async def text_chunks(self, streams: Sequence[TextStream], include_usage: bool,
                          echoes: Sequence[str] | None) -> AsyncIterator[dict[str, Any]]:
        head = self._head("text_completion")
        if echoes:
            for i, echo in enumerate(echoes):
                yield head | {"choices": [{"index": i, "text": echo, "logprobs": None,
                                           "finish_reason": None}]}
        async for index, delta in self._deltas(streams):
            yield head | {"choices": [{
                "index": index, "text": delta or "", "logprobs": None,
                "finish_reason": _finish(streams[index]) if delta is None else None}]}
        if include_usage:
            yield head | {"choices": [], "usage": self.usage(streams)}

    async def _deltas(self, streams: Sequence[TextStream]
                      ) -> AsyncIterator[tuple[int, str | None]]:
        first = True
        async for item in _merged(streams):
            if first and item[1] is not None:
                self.metrics.first_token.observe(time.perf_counter() - self.start)
                first = False
            yield item


def _finish(stream: TextStream) -> str | None:
    return stream.finish_reason if stream.finish_reason != "cancelled" else None


def _usage(streams: Sequence[TextStream], n: int = 1) -> dict[str, int]:
    """OpenAI's counts: each prompt once (not once per answer of `n`), every answer's tokens."""
    prompts = sum(s.prompt_tokens for s in streams[::n])
    completion = sum(s.completion_tokens for s in streams)
    return {"prompt_tokens": prompts, "completion_tokens": completion,
            "total_tokens": prompts + completion}


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _shorten(vector: list[float], dimensions: int) -> list[float]:
    """The first `dimensions` values, normalised again (as OpenAI's `dimensions` does)."""
    if dimensions > len(vector):
        raise UserError(f"dimensions: expected at most {len(vector)}, got {dimensions}")
    cut = vector[:dimensions]
    norm = sum(x * x for x in cut) ** 0.5 or 1.0
    return [x / norm for x in cut]


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


# -- errors ------------------------------------------------------------------------------------


def _error(status: int, message: str, kind: str, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": status},
            "detail": message}
    return JSONResponse(body, status_code=status, headers=headers)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, OverloadedError) \
            else None
        kind = {403: "permission_error", 404: "not_found_error", 409: "conflict_error",
                413: "request_too_large", 503: "overloaded_error"}.get(
            exc.status_code, "invalid_request_error")
        return _error(exc.status_code, str(exc), kind, getattr(exc, "field", None), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if p != "body"]
            message = str(err["msg"]).removeprefix("Value error, ")
            if message.startswith("Input should be "):  # as config errors read
                message = "expected " + message.removeprefix("Input should be ")
                if err["type"] != "json_invalid":
                    message += f", got {err.get('input')!r}"
            problems.append((".".join(loc) or "body", message))
        text = "; ".join(f"{field}: {message}" for field, message in problems)
        return _error(422, text, "invalid_request_error", problems[0][0] if problems else None)
