"""The transformers backend: one base model, named LoRA adapters, continuous batching.

One scheduler thread owns the model. Between two decoding steps it admits waiting requests
(those that arrived together are prefilled in one left-padded forward, then join the
batch) and drops finished or cancelled ones, so
requests join and leave at token granularity.

KV cache: one batched, left-padded cache for the running batch, re-built only when the batch
changes (a row joins: both sides are left-padded to the longer one and stacked; rows leave:
their rows go, and the padding columns no row needs any more are cut). A decoding step is
then a single forward of shape [batch, 1] with a 2-D attention mask and explicit position
ids, which on CPU is far faster than one forward per sequence, while a per-sequence cache
would have to be stacked (copied whole) at every step. Each layer's keys and values live in
buffers with free columns after the last one (`_growing_layer`): a step writes its column in
place, where DynamicCache would concatenate (copy) the whole cache at every step.

Linear layers: the base model's fp32 nn.Linear weights are repacked once, at start-up, into
oneDNN's blocked layout (`_pack_linears`), which on CPU runs the skinny matrix products of
decoding 1.4x (batch 1) to 2x (batch 16) faster than the default (MKL) path; a row's result
does not depend on the batch size either, so a request answers the same alone or batched.
With weights="float16" they keep a half-precision copy for FBGEMM's fp16 GEMM instead (math
in float32, half the memory read per token); "bfloat16" multiplies in bf16 on CPUs with
native bf16 (AMX), and "auto" (the server's default) takes float16 for a few rows and, where
the CPU has AMX, bf16 for more (`_pack_linears`). The model is loaded in the scheduler
thread, which runs every step (one OpenMP team; see `__init__`).

Decoding steps of Llama-family models go through `serve/decode.py`'s lean step (the same
layer in fewer operations; checked against transformers' forward at start-up); prefill and
other models go through transformers.

Adapters: PEFT's multi-adapter LoRA with mixed-batch inference: each forward gets
`adapter_names=[...]`, one name per row ("__base__" for the base model), so rows with
different adapters share one batch. Adapters are unloaded least-recently-used past
`max_adapters`, never while a request uses them.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tuneforge.data.templates import Renderer
from tuneforge.data.tokenizer import load_tokenizer
from tuneforge.errors import (
    ConfigError,
    NotFoundError,
    OverloadedError,
    StateError,
    UnsupportedError,
)
from tuneforge.models.adapters import adapter_dir
from tuneforge.models.sources import resolve_model
from tuneforge.serve.decode import FastDecoder, padded_positions
from tuneforge.serve.prompts import BASE, request_prompt, training_renderer
from tuneforge.serve.requests import Completion, GenerationRequest
from tuneforge.serve.sampling import next_tokens
from tuneforge.serve.stream import Detokenizer, TextStream
from tuneforge.settings import Settings

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# float32: exact, batch-invariant; float16: weights stored half (FBGEMM), math in float32;
# bfloat16: weights and products in bf16 (AMX); auto: float16 for a few rows, bfloat16 for
# more, where the CPU has AMX, else float16 (see _pack_linears)
WeightFormat = Literal["float32", "float16", "bfloat16", "auto"]



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
                 max_queue: int = 64, max_adapters: int = 4,
                 weights: WeightFormat = "float32", fast_decode: bool = True) -> None:
        self.model_dir = resolve_model(model, settings)
        self.settings = settings
        self.max_batch, self.max_queue, self.max_adapters = max_batch, max_queue, max_adapters
        self.tokenizer = load_tokenizer(str(self.model_dir), settings.cache)
        self._lock = threading.Condition()  # guards _waiting, _running, _adapters, _closed
        self._started = self._closed = False
        # The model is loaded, and every step run, in the engine's own thread: each thread
        # that runs a parallel torch operation gets its own OpenMP team, and once a process
        # has more OpenMP threads than cores, GNU OpenMP stops spinning between parallel
        # regions. A decoding step is hundreds of small ones: a model loaded here and
        # stepped in another thread decoded at 35 ms a token instead of 20 (BENCHMARKS.md).
        loaded, failed = threading.Event(), []
        self._thread = threading.Thread(
            target=self._run, args=(weights, fast_decode, loaded, failed),
            name="tuneforge-engine", daemon=True)
        self._thread.start()
        loaded.wait()
        if failed:
            self._thread.join()
            raise failed[0]
        eos = self._model.generation_config.eos_token_id
        self._eos = {self.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])}
        self._eos.discard(None)
        # longest sequence (prompt + answer) the model takes; answers stop there ("length")
        self._context = int(getattr(self._model.config, "max_position_embeddings", None)
                            or 1 << 30)
        self._renderers: dict[str, Renderer] = {
            BASE: training_renderer(self.model_dir, self.tokenizer)}
        self._adapters: OrderedDict[str, Path] = OrderedDict()  # least recently used first
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []  # in the order of the cache's rows
        self._joining: list[_Sequence] = []  # taken from _waiting, being prefilled
        self._cache: Any = None  # the running batch's DynamicCache
        self._model_lock = threading.Lock()  # the model: a step, or an adapter (un)load
        self._next_id = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Engine:
        """Start scheduling (submit works before; requests wait until then)."""
        with self._lock:
            self._started = True
            self._lock.notify_all()
        return self

    def close(self) -> None:
        """Stop the scheduler; unfinished requests end with finish_reason "cancelled"."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
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
        return request_prompt(self._renderers, request)

    def submit(self, request: GenerationRequest) -> TextStream:
        """Queue `request`; its text deltas arrive on the returned stream.

        Raises:
            OverloadedError: `max_queue` requests are already waiting.
            NotFoundError: the request names an adapter that is not loaded.
        """
        import torch

        ids = self.tokenizer(self.render_prompt(request), add_special_tokens=False)["input_ids"]
        if len(ids) >= self._context:
            raise ConfigError.one(
                f"expected a prompt shorter than the model's context of {self._context} "
                f"tokens, got {len(ids)} tokens", field="prompt" if request.prompt is not None
                else "messages", source="request")
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

    def stats(self) -> tuple[int, int]:
        """(waiting, running) requests, for /metrics."""
        with self._lock:
            return len(self._waiting), len(self._running) + len(self._joining)

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

        directory = adapter_dir(path, self.settings)
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
            if getattr(self._model.peft_config.get(name), "use_dora", False):
                # PEFT cannot give DoRA rows their own adapter inside a mixed batch
                self._model.delete_adapter(name)
                if not self._adapters:
                    self._model = self._model.unload()
                if self._fast is not None:
                    self._fast.rebind(self._model)
                raise UnsupportedError(
                    f"adapter {name!r}", "expected a LoRA adapter, got a DoRA one, which "
                    "cannot share a batch with other adapters", hint=(
                        "merge it into its base with `tuneforge export --merge` and serve "
                        "the merged model"))
            self._model.eval()
            if self._fast is not None:
                self._fast.rebind(self._model)
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
        if self._fast is not None:
            self._fast.rebind(self._model)

    def _in_use(self) -> set[str]:
        with self._lock:
            return {s.adapter for s in [*self._waiting, *self._joining, *self._running]}

    # -- the scheduler thread ----------------------------------------------------------------

    def _run(self, weights: WeightFormat, fast_decode: bool, loaded: threading.Event,
             failed: list[BaseException]) -> None:
        """The engine thread: load the model, then schedule once started, until closed."""
        try:
            self._load(weights, fast_decode)
        except BaseException as error:  # __init__ raises it in the caller's thread
            failed.append(error)
            return
        finally:
            loaded.set()
        with self._lock:
            while not self._started and not self._closed:
                self._lock.wait()
        self._loop()

    def _load(self, weights: WeightFormat, fast_decode: bool) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self._model: Any = AutoModelForCausalLM.from_pretrained(
            str(self.model_dir), dtype=torch.float32)
        self._model.eval()
        self.weights = _pack_linears(self._model, weights)
        self._fast = FastDecoder.build(self._model, _linear(self.weights)) \
            if fast_decode else None
        # twice: TorchScript's profiling executor optimizes a method at its second call
        # (about a second for SmolLM2-135M here), which would otherwise hold up the first
        # requests; the later calls reuse that graph at any shape
        if self._fast is not None and not (self._fast_agrees() and self._fast_agrees()):
            logger.warning("the fast decoding step disagrees with transformers' forward on "
                           "this model; decoding through transformers")
            self._fast = None

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
                    for group in _prefill_groups(list(self._joining)):
                        self._prefill(group)
                        with self._lock:
                            for seq in group:
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
                              past_key_values=cache, use_cache=True, logits_to_keep=1,
                              **extra)
        return out.logits[:, -1]

    def _prefill(self, group: list[_Sequence]) -> None:
        """Run the prompts of `group` in one forward (left-padded, each row masked to its own
        tokens and positions), then join their cache rows to the batch's."""
        import torch
        from transformers.cache_utils import Cache

        joining = []
        for seq in group:
            if seq.stream.is_cancelled:
                seq.stream.finish("cancelled", 0)
            elif seq.adapter != BASE and seq.adapter not in self._adapters:
                seq.stream.fail(NotFoundError("adapter", seq.adapter, hint="it was unloaded"))
            elif not seq.ids:
                seq.stream.fail(UnsupportedError("prompt", "expected at least one token, got "
                                                 "none"))
            else:
                joining.append(seq)
        if not joining:
            return
        width = max(len(seq.ids) for seq in joining)
        cache = Cache(layer_class_to_replicate=_growing_layer())
        adapters = [s.adapter for s in joining]
        if len(joining) == 1:  # alone: no padding, no mask
            ids, mask = torch.tensor([joining[0].ids]), None
        else:
            ids = torch.tensor([[0] * (width - len(s.ids)) + s.ids for s in joining])
            mask = torch.tensor([[0] * (width - len(s.ids)) + [1] * len(s.ids)
                                 for s in joining])
        if self._fast is not None and self._fast.supports(adapters):
            logits = self._fast.prefill(ids, mask, cache, adapters)
        else:
            positions = None if mask is None else padded_positions(mask)
            logits = self._forward(ids, cache, adapters, mask, positions)
        tokens = next_tokens(logits, [s.request for s in joining], [s.ids for s in joining],
                             [s.generator for s in joining])
        staying = []
        for row, (seq, token) in enumerate(zip(joining, tokens, strict=True)):
            seq.cached = len(seq.ids)
            if not self._emit(seq, token):
                staying.append(row)
        if not staying:
            return
        keep = torch.tensor(staying)
        new = [(layer.keys.index_select(0, keep), layer.values.index_select(0, keep))
               for layer in cache.layers]
        width = max(joining[row].cached for row in staying)  # padding no staying row needs
        parts = [] if self._cache is None else [self._cache]
        if parts:
            width = max(self._width(), width)
        else:
            self._cache = cache
        for layer, (keys, values), old in zip(
                self._cache.layers, new, parts[0].layers if parts else [None] * len(new),
                strict=True):
            key_parts = [keys] if old is None else [old.keys, keys]
            value_parts = [values] if old is None else [old.values, values]
            layer.hold(_stack_left_padded(key_parts, width),
                       _stack_left_padded(value_parts, width), width)
        with self._lock:
            self._running.extend(joining[row] for row in staying)

    def _step(self) -> None:
        """One decoding step for the whole running batch."""
        import torch

        running = self._running
        width = self._width()
        lengths = torch.tensor([s.cached for s in running])
        columns = torch.arange(width + 1)
        mask = columns[None, :] >= (width - lengths)[:, None]  # left padding is False
        adapters = [s.adapter for s in running]
        tokens = torch.tensor([s.last for s in running])
        if self._fast is not None and self._fast.supports(adapters):
            logits = self._fast.step(tokens, lengths, mask, self._cache, adapters)
        else:
            logits = self._forward(tokens[:, None], self._cache, adapters, mask.long(),
                                   lengths[:, None])
        tokens = next_tokens(logits, [s.request for s in running], [s.ids for s in running],
                             [s.generator for s in running])
        for seq, token in zip(running, tokens, strict=True):
            seq.cached += 1
            self._emit(seq, token)
        self._leave([s for s in running if s.done])

    def _fast_agrees(self) -> bool:
        """Whether the fast prefill and step match transformers' forward: the logits after
        two left-padded prompts, and then of one step each way from each one's cache."""
        import torch
        from transformers.cache_utils import Cache

        assert self._fast is not None
        vocab = int(self._model.config.vocab_size)
        ids = torch.arange(1, 17).view(2, 8) % vocab
        mask = torch.ones_like(ids)
        mask[1, :3] = 0
        fast_cache = Cache(layer_class_to_replicate=_growing_layer())
        fast = self._fast.prefill(ids, mask, fast_cache, [BASE, BASE])
        cache = Cache(layer_class_to_replicate=_growing_layer())
        slow = self._forward(ids, cache, [BASE, BASE], mask, padded_positions(mask))
        if not _close(fast, slow, self.weights):
            return False
        token, position = ids[:, -1] * 7 % vocab, mask.sum(-1)
        mask = torch.cat([mask.bool(), torch.ones(2, 1, dtype=torch.bool)], dim=-1)
        fast = self._fast.step(token, position, mask, fast_cache, [BASE, BASE])
        slow = self._forward(token[:, None], cache, [BASE, BASE], mask.long(), position[:, None])
        return _close(fast, slow, self.weights)

    def _emit(self, seq: _Sequence, token: int) -> bool:
        """Send `token`'s text; finish `seq` on EOS, a stop string or max_tokens."""
        seq.generated += 1
        seq.ids.append(token)
        seq.last = token
        if token in self._eos and not seq.request.ignore_eos:
            seq.stream.put(seq.detokenizer.flush())
            reason = "stop"
        else:
            delta, stopped = seq.detokenizer.add(token)
            seq.stream.put(delta)
            if stopped:
                reason = "stop"
            elif seq.generated >= seq.request.max_tokens or seq.cached + 1 >= self._context:
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
        width = max(s.cached for s in self._running)  # the padding no row needs is cut
        for layer in self._cache.layers:
            layer.hold(_stack_left_padded([layer.keys.index_select(0, index)], width),
                       _stack_left_padded([layer.values.index_select(0, index)], width), width)

    def _width(self) -> int:
        return int(self._cache.layers[0].keys.shape[-2])


def _close(fast: torch.Tensor, slow: torch.Tensor, weights: WeightFormat) -> bool:
    """Whether the fast path's logits are transformers' within rounding: of float32, or of
    bf16 products, whose inputs round to 8 significant bits (SmolLM2-135M: 0.3 % of the
    largest logit apart, against 1e-5 with float16 weights)."""
    tolerance = 1e-2 if weights in ("bfloat16", "auto") else 1e-3
    return bool((fast - slow).abs().max() <= tolerance * slow.abs().max() + 1e-5)


# Free columns a layer's buffers get past the last one when (re)built: each step writes one.
ROOM = 128


PREFILL_TOKENS = 2048  # most (padded) prompt tokens prefilled in one forward


def _prefill_groups(joining: list[_Sequence]) -> list[list[_Sequence]]:
    """The joining sequences in groups prefilled together: similar lengths (sorted), at most
    PREFILL_TOKENS padded tokens a group, so a long prompt does not pad many short ones."""
    groups: list[list[_Sequence]] = []
    for seq in sorted(joining, key=lambda s: len(s.ids)):
        if groups and len(seq.ids) * (len(groups[-1]) + 1) <= PREFILL_TOKENS:
            groups[-1].append(seq)
        else:
            groups.append([seq])
    return groups


def _stack_left_padded(states: list[torch.Tensor], width: int,
                       room: int = ROOM) -> torch.Tensor:
    """Rows of [batch, heads, length, dim] states stacked in a new buffer, each row's columns
    right-aligned at `width` (the padding on their left is zeros, masked out by attention),
    with `room` free columns after them. Longer rows lose their leftmost (padding) columns."""
    first = states[0]
    rows = sum(s.shape[0] for s in states)
    buffer = first.new_zeros(rows, first.shape[1], width + room, first.shape[3])
    row = 0
    for part in states:
        kept = min(width, part.shape[-2])
        buffer[row:row + part.shape[0], :, width - kept:width] = part[:, :, part.shape[-2] - kept:]
        row += part.shape[0]
    return buffer


@functools.cache
def _growing_layer() -> type:
    """The cache layer class (made on first use: transformers is imported lazily)."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A DynamicLayer whose `keys` and `values` are the first columns of bigger buffers:
        an update writes its columns in place (the buffers double when full) instead of
        concatenating the whole cache with them; attention reads the views as they are."""

        def lazy_initialization(self, key_states: torch.Tensor,
                                value_states: torch.Tensor) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            self.is_initialized = True
            self.hold(_stack_left_padded([key_states[:, :, :0]], 0),
                      _stack_left_padded([value_states[:, :, :0]], 0), 0)

        def hold(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
            """Take `keys` and `values` as the buffers, their first `length` columns in use."""
            self.key_buffer, self.value_buffer, self.length = keys, values, length
            self.keys, self.values = keys[:, :, :length], values[:, :, :length]

        def reserve(self, columns: int) -> None:
            """Make room for `columns` more columns after those in use."""
            start, end = self.length, self.length + columns
            if end > self.key_buffer.shape[-2]:
                room = max(end, 2 * self.key_buffer.shape[-2]) - start
                self.hold(_stack_left_padded([self.keys], start, room),
                          _stack_left_padded([self.values], start, room), start)

        def advance(self, columns: int) -> None:
            """Count the next `columns` columns (written into the buffers) as in use."""
            self.hold(self.key_buffer, self.value_buffer, self.length + columns)

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            start, end = self.length, self.length + key_states.shape[-2]
            self.reserve(end - start)
            self.key_buffer[:, :, start:end] = key_states
            self.value_buffer[:, :, start:end] = value_states
            self.advance(end - start)
            return self.keys, self.values

    return GrowingLayer


def _pack_linears(model: Any, weights: WeightFormat) -> WeightFormat:
    """Give each fp32 nn.Linear of `model` a forward over its weight repacked for oneDNN, or
    kept as `weights` says; return what was used.

    float16: FBGEMM keeps the weights in half precision and multiplies in float32 (the
    activations stay float32), so the memory read per token halves: 1.5-2x faster at batch 1,
    1.3-1.5x at batch 16 here. Rounding the weights to 11 significant bits changes the logits
    by about 1e-3; the greedy answers of SmolLM2-135M matched float32 on the prompts we tried,
    but a row's result may differ in the last bits between batch sizes. Where FBGEMM is
    missing (non-x86 builds) or a weight does not fit float16, the layer stays float32.

    bfloat16: weights and each product's inputs in bf16 (8 significant bits; float32
    accumulation and output), on CPUs with native bf16 (AMX): at 16 rows the layers of
    SmolLM2-135M take 20 ms instead of FBGEMM's 32, at one row 18 instead of 13.
    auto: both, by rows (`layers.ByRowsLinear`), where the CPU has AMX; float16 elsewhere.
    SmolLM2-135M was trained in bf16 (its config's dtype), as vLLM would serve it.

    This is what Inductor's freezing pass does for CPU (torch.compile with
    `torch._inductor.config.freezing`), done by hand because compiling takes minutes here and
    again for each adapter set and batch shape. LoRA wraps the packed layers unchanged (PEFT
    calls `base_layer(x)`); its own small layers keep the default path. The original weights
    stay (PEFT, the tied embedding and `generate` read them); the packed copies are not
    updated if a weight is changed later.
    """
    import torch

    from tuneforge.models import hardware

    if weights == "bfloat16" and not hardware.cpu_has_fast_bf16():
        logger.warning("weights bfloat16 needs a CPU that multiplies bf16 natively "
                       "(AMX, AVX512-BF16); using float16")
        weights = "float16"
    # auto's bf16 batches pay off with AMX only: with AVX512-BF16 alone (Zen 4), 16 clients
    # decoded 255-263 tokens/s with them against 299-323 with float16 throughout
    if weights == "auto" and not (hardware.cpu_has_amx() and hardware.cpu_has_fast_bf16()):
        weights = "float16"
    if weights in ("float16", "auto") and \
            "fbgemm" not in torch.backends.quantized.supported_engines:
        logger.warning("weights %s needs FBGEMM (x86 builds of torch); using %s", weights,
                       "bfloat16" if weights == "auto" else "float32")
        weights = "bfloat16" if weights == "auto" else "float32"
    for module in model.modules():
        if type(module) is not torch.nn.Linear or module.weight.dtype != torch.float32 \
                or module.weight.device.type != "cpu":
            continue
        packed = _linear_forward(module.weight.detach(), module.bias, weights)
        if packed is not None:
            # the bound method, not the module: assigning a module would register it as a
            # submodule named "forward"; FastDecoder finds the module as its __self__
            module.forward = packed.eager
    return weights


def _linear_forward(weight: torch.Tensor, bias: torch.Tensor | None,
                    weights: WeightFormat) -> Any:
    """A module `x -> x @ weight.T + bias` over `weight` packed as `_pack_linears` describes
    (TorchScript-able: the fast decoding step calls it from its scripted layers), or None
    where neither packing applies (the caller keeps torch's own linear)."""
    import torch

    from tuneforge.serve.layers import (
        Bf16Linear,
        ByRowsLinear,
        Fp16Linear,
        OneDnnLinear,
        WideFp16Linear,
    )

    bias = None if bias is None else bias.detach()
    if weights == "bfloat16":
        return Bf16Linear(weight, bias)
    if weights in ("float16", "auto") and weight.abs().max() < torch.finfo(torch.float16).max:
        wide = weight.shape[0] > 1.5 * WideFp16Linear.COLUMNS
        half = (WideFp16Linear if wide else Fp16Linear)(weight, bias)
        return half if weights == "float16" else ByRowsLinear(half, Bf16Linear(weight, bias))
    if weights == "auto":
        return Bf16Linear(weight, bias)
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return OneDnnLinear(weight, bias)
    return None


def _linear(weights: WeightFormat) -> Any:
    """A factory `(weight, bias) -> module` packing as the engine's linears are packed."""
    from tuneforge.serve.layers import PlainLinear

    def linear(weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
        return _linear_forward(weight, bias, weights) or PlainLinear(weight, bias)

    return linear
