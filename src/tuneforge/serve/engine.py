"""The transformers backend: one base model, named LoRA adapters, continuous batching.

One scheduler thread owns the model. Between two decoding steps it admits waiting requests
(each is prefilled alone, then joins the batch) and drops finished or cancelled ones, so
requests join and leave at token granularity.

KV cache: one batched, left-padded DynamicCache for the running batch, re-built only when
the batch changes (a row joins: both sides are left-padded to the longer one and
concatenated; rows leave: index_select, and the padding columns no row needs any more are
cut). A decoding step is then a single forward of shape [batch, 1] with a 2-D attention mask
and explicit position ids, which on CPU is far faster than one forward per sequence, while a
per-sequence cache would have to be stacked (copied whole) at every step.

Adapters: PEFT's multi-adapter LoRA with mixed-batch inference: each forward gets
`adapter_names=[...]`, one name per row ("__base__" for the base model), so rows with
different adapters share one batch. Adapters are unloaded least-recently-used past
`max_adapters`, never while a request uses them.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.data.templates import Renderer
from tuneforge.data.tokenizer import load_tokenizer
from tuneforge.errors import NotFoundError, OverloadedError, StateError, UnsupportedError
from tuneforge.models.sources import resolve_model
from tuneforge.serve.prompts import chat_prompt, training_renderer
from tuneforge.serve.requests import Completion, GenerationRequest
from tuneforge.serve.sampling import next_token
from tuneforge.serve.stream import Detokenizer, TextStream
from tuneforge.settings import Settings

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class _Sequence:
    """One request inside the engine: its ids so far, its cache length and its output."""

    stream: TextStream
    request: GenerationRequest
    adapter: str
    ids: list[int]  # prompt + generated, for the repetition penalty
    detokenizer: Detokenizer
    generator: Any  # torch.Generator
    cached: int = 0  # real (unpadded) tokens of this row in the KV cache
    generated: int = 0
    last: int = -1  # the token the next step feeds
    done: bool = field(default=False)


class Engine:
    """A base model served with named adapters; thread-safe; `with Engine(...) as e:`."""

    def __init__(self, model: str, settings: Settings, *, max_batch: int = 8,
                 max_queue: int = 64, max_adapters: int = 4) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.model_dir = resolve_model(model, settings)
        self.settings = settings
        self.max_batch, self.max_queue, self.max_adapters = max_batch, max_queue, max_adapters
        self.tokenizer = load_tokenizer(str(self.model_dir), settings.cache)
        self._model: Any = AutoModelForCausalLM.from_pretrained(
            str(self.model_dir), dtype=torch.float32)
        self._model.eval()
        eos = self._model.generation_config.eos_token_id
        self._eos = {self.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])}
        self._eos.discard(None)
        self._renderers: dict[str, Renderer] = {
            BASE: training_renderer(self.model_dir, self.tokenizer)}
        self._adapters: OrderedDict[str, Path] = OrderedDict()  # least recently used first
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []  # in the order of the cache's rows
        self._joining: list[_Sequence] = []  # taken from _waiting, being prefilled
        self._cache: Any = None  # the running batch's DynamicCache
        self._lock = threading.Condition()  # guards _waiting, _running, _adapters, _closed
        self._model_lock = threading.Lock()  # the model: a step, or an adapter (un)load
        self._thread: threading.Thread | None = None
        self._closed = False
        self._next_id = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Engine:
        """Start the scheduler thread (submit works before; requests wait until then)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tuneforge-engine",
                                            daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the scheduler; unfinished requests end with finish_reason "cancelled"."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join()
        for seq in [*self._waiting, *self._running]:
            seq.stream.finish("cancelled", seq.generated)
        self._waiting.clear()
        self._running.clear()

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------------

    def render_prompt(self, request: GenerationRequest) -> str:
        """The prompt text the model sees: the raw prompt, or the chat rendered with the
        training template of the request's adapter (or of the model)."""
        if request.prompt is not None:
            return request.prompt
        assert request.messages is not None
        renderer = self._renderers.get(request.adapter or BASE)
        if renderer is None:
            raise NotFoundError("adapter", request.adapter or "")
        return chat_prompt(renderer, request.messages)

    def submit(self, request: GenerationRequest) -> TextStream:
        """Queue `request`; its text deltas arrive on the returned stream.

        Raises:
            OverloadedError: `max_queue` requests are already waiting.
            NotFoundError: the request names an adapter that is not loaded.
        """
        import torch

        ids = self.tokenizer(self.render_prompt(request), add_special_tokens=False)["input_ids"]
        seed = request.seed if request.seed is not None else random.getrandbits(63)
        generator = torch.Generator().manual_seed(seed)
        with self._lock:
            if request.adapter is not None:
                if request.adapter not in self._adapters:
                    raise NotFoundError("adapter", request.adapter, hint=(
                        f"loaded adapters: {', '.join(self._adapters) or 'none'}"))
                self._adapters.move_to_end(request.adapter)
            if len(self._waiting) >= self.max_queue:
                raise OverloadedError(
                    f"engine: the request queue is full: expected fewer than {self.max_queue} "
                    f"waiting requests, got {len(self._waiting)}", hint="retry later")
            self._next_id += 1
            stream = TextStream(self._next_id, len(ids))
            self._waiting.append(_Sequence(stream, request, request.adapter or BASE, list(ids),
                                           Detokenizer(self.tokenizer, request.stop), generator))
            self._lock.notify_all()
        return stream

    def complete(self, request: GenerationRequest) -> Completion:
        """Submit `request` and wait for its whole answer."""
        return self.submit(request).collect()

    # -- adapters ----------------------------------------------------------------------------

    def adapter_names(self) -> list[str]:
        """The loaded adapters, least recently used first."""
        with self._lock:
            return list(self._adapters)

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load a LoRA adapter under `name`: an adapter directory, or a run directory (or run
        id) whose output/ holds one. Unloads the least recently used idle adapter past
        `max_adapters`.

        Raises:
            NotFoundError: `path` holds no PEFT adapter.
            OverloadedError: `max_adapters` adapters are loaded and all are in use.
            StateError: `name` is loaded and in use.
        """
        from peft import PeftModel

        directory = self._adapter_dir(path)
        if name == BASE:
            raise StateError(f"adapter: {BASE!r} is reserved for the base model")
        with self._model_lock:
            if name in self._adapters:
                self._unload(name)
            while len(self._adapters) >= self.max_adapters:
                idle = [a for a in self._adapters if a not in self._in_use()]
                if not idle:
                    raise OverloadedError(
                        f"engine: expected an idle adapter to unload for {name!r}, got all "
                        f"{len(self._adapters)} in use", hint="retry later")
                logger.info("unloading adapter %s (least recently used)", idle[0])
                self._unload(idle[0])
            if isinstance(self._model, PeftModel):
                self._model.load_adapter(str(directory), adapter_name=name)
            else:
                self._model = PeftModel.from_pretrained(self._model, str(directory),
                                                        adapter_name=name)
            self._model.eval()
            with self._lock:
                self._adapters[name] = directory
                self._renderers[name] = training_renderer(directory, self.tokenizer)
        logger.info("loaded adapter %s from %s", name, directory)

    def unload_adapter(self, name: str) -> None:
        """Forget the adapter `name`.

        Raises:
            NotFoundError: no adapter `name` is loaded.
            StateError: a queued or running request uses it.
        """
        with self._model_lock:
            if name not in self._adapters:
                raise NotFoundError("adapter", name)
            self._unload(name)

    def _unload(self, name: str) -> None:
        if name in self._in_use():
            raise StateError(f"adapter {name!r}: expected no request using it, got some",
                             hint="wait for its requests to finish")
        self._model.delete_adapter(name)
        with self._lock:
            del self._adapters[name]
            del self._renderers[name]
            if not self._adapters:  # back to the plain model: no LoRA hooks in its forward
                self._model = self._model.unload()

    def _in_use(self) -> set[str]:
        with self._lock:
            return {s.adapter for s in [*self._waiting, *self._joining, *self._running]}

    def _adapter_dir(self, path: str | Path) -> Path:
        directory = Path(path).expanduser()
        if not directory.is_dir() and (self.settings.runs / str(path)).is_dir():
            directory = self.settings.runs / str(path)
        if (directory / "output").is_dir():
            directory = directory / "output"
        if not (directory / ADAPTER_CONFIG).is_file():
            raise NotFoundError("adapter", str(path), hint=(
                f"expected a PEFT adapter directory (with {ADAPTER_CONFIG}), a run directory "
                "or a run id; a merged full model is served as a base model instead"))
        return directory.resolve()

    # -- the scheduler thread ----------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._closed and not self._waiting and not self._running:
                        self._lock.wait()
                    if self._closed:
                        return
                    while self._waiting and \
                            len(self._running) + len(self._joining) < self.max_batch:
                        self._joining.append(self._waiting.popleft())
                with self._model_lock:
                    for seq in list(self._joining):
                        self._prefill(seq)
                        with self._lock:
                            self._joining.remove(seq)
                    self._leave([s for s in self._running if s.stream.is_cancelled])
                    if self._running:
                        self._step()
        except BaseException as error:
            # the model failed (a bug or out of memory): every waiting client hears of it
            # instead of hanging; the thread then dies with the traceback
            with self._lock:
                for seq in [*self._waiting, *self._joining, *self._running]:
                    seq.stream.fail(error)
                self._waiting.clear()
                self._joining.clear()
                self._running.clear()
            raise

    def _forward(self, ids: torch.Tensor, cache: Any, adapters: list[str],
                 mask: torch.Tensor | None = None,
                 positions: torch.Tensor | None = None) -> torch.Tensor:
        import torch
        from peft import PeftModel

        extra = {"adapter_names": adapters} if isinstance(self._model, PeftModel) else {}
        with torch.inference_mode():
            out = self._model(input_ids=ids, attention_mask=mask, position_ids=positions,
                              past_key_values=cache, use_cache=True, **extra)
        return out.logits[:, -1]

    def _prefill(self, seq: _Sequence) -> None:
        """Run `seq`'s prompt alone, then join its cache to the batch's (left-padded)."""
        import torch
        from transformers import DynamicCache

        if seq.stream.is_cancelled:
            seq.stream.finish("cancelled", 0)
            return
        if seq.adapter != BASE and seq.adapter not in self._adapters:
            seq.stream.fail(NotFoundError("adapter", seq.adapter, hint="it was unloaded"))
            return
        if not seq.ids:
            seq.stream.fail(UnsupportedError("prompt", "expected at least one token, got none"))
            return
        cache = DynamicCache()
        logits = self._forward(torch.tensor([seq.ids]), cache, [seq.adapter])
        seq.cached = len(seq.ids)
        if self._emit(seq, next_token(logits[0], seq.request, seq.ids, seq.generator)):
            return
        if self._cache is None:
            self._cache = cache
        else:
            width = max(self._width(), seq.cached)
            for mine, new in zip(self._cache.layers, cache.layers, strict=True):
                mine.keys = torch.cat([_pad_left(mine.keys, width), _pad_left(new.keys, width)])
                mine.values = torch.cat([_pad_left(mine.values, width),
                                         _pad_left(new.values, width)])
        with self._lock:
            self._running.append(seq)

    def _step(self) -> None:
        """One decoding step for the whole running batch."""
        import torch

        width = self._width()
        lengths = torch.tensor([s.cached for s in self._running])
        columns = torch.arange(width + 1)
        mask = (columns[None, :] >= (width - lengths)[:, None]).long()  # left padding is 0
        logits = self._forward(torch.tensor([[s.last] for s in self._running]), self._cache,
                               [s.adapter for s in self._running], mask, lengths[:, None])
        for row, seq in zip(logits, self._running, strict=True):
            seq.cached += 1
            self._emit(seq, next_token(row, seq.request, seq.ids, seq.generator))
        self._leave([s for s in self._running if s.done])

    def _emit(self, seq: _Sequence, token: int) -> bool:
        """Send `token`'s text; finish `seq` on EOS, a stop string or max_tokens."""
        seq.generated += 1
        seq.ids.append(token)
        seq.last = token
        if token in self._eos:
            seq.stream.put(seq.detokenizer.flush())
            reason = "stop"
        else:
            delta, stopped = seq.detokenizer.add(token)
            seq.stream.put(delta)
            if stopped:
                reason = "stop"
            elif seq.generated >= seq.request.max_tokens:
                seq.stream.put(seq.detokenizer.flush())
                reason = "length"
            else:
                return False
        seq.done = True
        seq.stream.finish(reason, seq.generated)
        return True

    def _leave(self, leaving: list[_Sequence]) -> None:
        """Drop finished or cancelled rows from the batch and its cache."""
        if not leaving:
            return
        for seq in leaving:
            if not seq.done:
                seq.done = True
                seq.stream.finish("cancelled", seq.generated)
        keep = [i for i, s in enumerate(self._running) if s not in leaving]
        with self._lock:
            self._running = [self._running[i] for i in keep]
        if not keep:
            self._cache = None
            return
        import torch

        index = torch.tensor(keep)
        cut = self._width() - max(s.cached for s in self._running)  # padding no row needs
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, cut:]
            layer.values = layer.values.index_select(0, index)[:, :, cut:]

    def _width(self) -> int:
        return int(self._cache.layers[0].keys.shape[-2])


def _pad_left(states: torch.Tensor, width: int) -> torch.Tensor:
    import torch.nn.functional as F

    return F.pad(states, (0, 0, width - states.shape[-2], 0))
