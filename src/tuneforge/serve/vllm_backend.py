"""The vLLM backend: the same `Backend` interface as `engine.Engine`, over vLLM's AsyncLLMEngine
with its multi-LoRA support (one LoRARequest per request). Used on a CUDA machine where vLLM
is installed (`tuneforge serve --backend vllm`, or `auto`); never imported otherwise.

vLLM runs its own continuous batching, paged KV cache and sampling; this module only maps our
requests to SamplingParams, renders chats with the training template (as Engine does), turns
vLLM's cumulative outputs into text deltas on a `TextStream`, and keeps adapters
least-recently-used past `max_adapters`. vLLM's coroutines run on one event loop in a thread
of ours, so callers stay synchronous, as with Engine.

This backend needs a GPU and vLLM, which the project's CI machine lacks: its test
(tests/serve/test_vllm_backend.py) runs only where both are present.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from tuneforge.data.templates import Renderer
from tuneforge.data.tokenizer import load_tokenizer
from tuneforge.errors import NotFoundError, OverloadedError, StateError, UnsupportedError
from tuneforge.models.adapters import adapter_dir
from tuneforge.models.sources import resolve_model
from tuneforge.serve.prompts import BASE, request_prompt, training_renderer
from tuneforge.serve.requests import Completion, GenerationRequest
from tuneforge.serve.stream import TextStream
from tuneforge.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")


def vllm_available() -> bool:
    """vLLM is installed and a CUDA device is visible."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


class VLLMBackend:
    """A base model served by vLLM with named LoRA adapters; thread-safe."""

    def __init__(self, model: str, settings: Settings, *, max_batch: int = 16,
                 max_queue: int = 64, max_adapters: int = 8, max_lora_rank: int = 64) -> None:
        if not vllm_available():
            raise UnsupportedError("backend vllm", "expected vLLM installed and a CUDA GPU",
                                   hint="use --backend transformers")
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        self.model_dir = resolve_model(model, settings)
        self.settings = settings
        self.max_batch, self.max_queue, self.max_adapters = max_batch, max_queue, max_adapters
        self.tokenizer = load_tokenizer(str(self.model_dir), settings.cache)
        self._renderers: dict[str, Renderer] = {
            BASE: training_renderer(self.model_dir, self.tokenizer)}
        self._adapters: OrderedDict[str, Any] = OrderedDict()  # name -> LoRARequest, LRU first
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}  # adapter (or BASE) -> unfinished requests
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tuneforge-vllm",
                                        daemon=True)
        self._thread.start()
        args = AsyncEngineArgs(model=str(self.model_dir), enable_lora=True,
                               max_loras=max_adapters, max_lora_rank=max_lora_rank,
                               max_num_seqs=max_batch)

        async def build() -> Any:
            return AsyncLLMEngine.from_engine_args(args)

        self._engine = self._call(build())

    # -- the Backend interface -------------------------------------------------------------

    def render_prompt(self, request: GenerationRequest) -> str:
        """The prompt text the model sees: the raw prompt, or the chat rendered with the
        training template of the request's adapter (or of the model)."""
        return request_prompt(self._renderers, request)

    def submit(self, request: GenerationRequest) -> TextStream:
        from vllm import SamplingParams

        prompt = self.render_prompt(request)
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        key = request.adapter or BASE
        with self._lock:
            lora = None
            if request.adapter is not None:
                if request.adapter not in self._adapters:
                    raise NotFoundError("adapter", request.adapter)
                self._adapters.move_to_end(request.adapter)
                lora = self._adapters[request.adapter]
            if sum(self._in_flight.values()) >= self.max_batch + self.max_queue:
                raise OverloadedError(
                    f"engine: the request queue is full: expected fewer than "
                    f"{self.max_batch + self.max_queue} requests in flight", hint="retry later")
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            request_id = f"tf-{next(self._ids)}"
        params = SamplingParams(
            max_tokens=request.max_tokens, temperature=request.temperature,
            top_p=request.top_p, top_k=request.top_k if request.top_k > 0 else -1,
            repetition_penalty=request.repetition_penalty, stop=list(request.stop),
            seed=request.seed if request.seed is not None else random.getrandbits(31),
            ignore_eos=request.ignore_eos, skip_special_tokens=True)
        stream = TextStream(int(request_id[3:]), len(ids))
        asyncio.run_coroutine_threadsafe(
            self._run(stream, {"prompt_token_ids": ids}, params, request_id, lora, key),
            self._loop)
        return stream

    def complete(self, request: GenerationRequest) -> Completion:
        return self.submit(request).collect()

    def stats(self) -> tuple[int, int]:
        """(waiting, running): vLLM schedules on its own, so every request counts as running."""
        with self._lock:
            return 0, sum(self._in_flight.values())

    def adapter_names(self) -> list[str]:
        with self._lock:
            return list(self._adapters)

    def load_adapter(self, name: str, path: str | Path) -> None:
        from vllm.lora.request import LoRARequest

        directory = adapter_dir(path, self.settings)
        with self._lock:
            if name in self._adapters:
                self._unload(name)
            while len(self._adapters) >= self.max_adapters:
                idle = [a for a in self._adapters if not self._in_flight.get(a)]
                if not idle:
                    raise OverloadedError(f"engine: expected an idle adapter to unload for "
                                          f"{name!r}, got all in use", hint="retry later")
                self._unload(idle[0])
            lora = LoRARequest(name, next(self._ids), str(directory))
            self._adapters[name] = lora
            self._renderers[name] = training_renderer(directory, self.tokenizer)
        add = getattr(self._engine, "add_lora", None)
        if add is not None:  # else vLLM loads it with the first request that names it
            self._call(add(lora))

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            if name not in self._adapters:
                raise NotFoundError("adapter", name)
            self._unload(name)

    def close(self) -> None:
        shutdown = getattr(self._engine, "shutdown", None)
        if shutdown is not None:
            shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    # -- internals ---------------------------------------------------------------------------

    def _unload(self, name: str) -> None:
        if self._in_flight.get(name):
            raise StateError(f"adapter {name!r}: expected no request using it, got some",
                             hint="wait for its requests to finish")
        lora = self._adapters.pop(name)
        del self._renderers[name]
        remove = getattr(self._engine, "remove_lora", None)
        if remove is not None:
            asyncio.run_coroutine_threadsafe(remove(lora.lora_int_id), self._loop)

    async def _run(self, stream: TextStream, prompt: dict[str, Any], params: Any,
                   request_id: str, lora: Any, key: str) -> None:
        sent, tokens = "", 0
        try:
            async for output in self._engine.generate(prompt, params, request_id,
                                                      lora_request=lora):
                if stream.is_cancelled:
                    await self._engine.abort(request_id)
                    stream.finish("cancelled", tokens)
                    return
                choice = output.outputs[0]
                tokens = len(choice.token_ids)
                stream.put(choice.text[len(sent):])
                sent = choice.text
                if output.finished:
                    stream.finish("length" if choice.finish_reason == "length" else "stop",
                                  tokens)
                    return
        except Exception as error:  # noqa: BLE001 - the client hears of it; logged here
            logger.exception("vLLM request %s failed", request_id)
            stream.fail(error)
        finally:
            with self._lock:
                self._in_flight[key] -= 1

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()
