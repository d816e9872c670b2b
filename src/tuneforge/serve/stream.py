"""A request's side of the engine: an iterator of text deltas, and the text they come from.

The scheduler thread writes into a `TextStream` (a thread-safe queue); the caller reads it
with `for delta in stream` or `async for delta in stream`. `cancel()` (or `close()`, or
leaving a `with` block) tells the scheduler to stop the request and free its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from tuneforge.serve.requests import Completion, FinishReason, Usage

_END = object()


class TextStream:
    """Text deltas of one request, readable once, from any thread or an event loop."""

    def __init__(self, request_id: int, prompt_tokens: int) -> None:
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: FinishReason | None = None
        self._items: queue.Queue[Any] = queue.Queue()
        self._cancelled = threading.Event()
        self._guard = threading.Lock()
        self._wake: Callable[[], None] | None = None  # set by an `async for` reader

    # -- the caller's side ---------------------------------------------------------------

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self._items.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __aiter__(self) -> AsyncIterator[str]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[str]:
        # The scheduler thread wakes the event loop with call_soon_threadsafe; no thread is
        # parked per reader (asyncio.to_thread would park one in the loop's small default
        # pool for every open stream, so 16 streams would queue behind 6 workers).
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(ready.set)

        with self._guard:
            self._wake = wake
        while True:
            try:
                item = self._items.get_nowait()
            except queue.Empty:
                await ready.wait()
                ready.clear()
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def cancel(self) -> None:
        """Stop generating: the scheduler drops the request at its next step."""
        self._cancelled.set()

    close = cancel

    @property
    def is_cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens)

    def collect(self) -> Completion:
        """Read the whole answer (blocking) and return it with its finish reason and usage."""
        text = "".join(self)
        assert self.finish_reason is not None
        return Completion(text, self.finish_reason, self.usage)

    # -- the scheduler's side ------------------------------------------------------------

    def put(self, delta: str) -> None:
        if delta:
            self._push(delta)

    def finish(self, reason: FinishReason, completion_tokens: int) -> None:
        self.completion_tokens = completion_tokens
        self.finish_reason = reason
        self._push(_END)

    def fail(self, error: BaseException) -> None:
        self._push(error)

    def _push(self, item: Any) -> None:
        self._items.put(item)
        with self._guard:
            wake = self._wake
        if wake is not None:
            wake()


class Detokenizer:
    """Completion token ids -> safe text deltas, ending at the first stop string.

    Decoding is incremental: `tokenizers`' DecodeStream decodes each new token with a few
    tokens of context before it (the scheme of vLLM's and TGI's detokenizers), so merges across
    tokens come out right at a constant cost per token, and it returns nothing while the text
    ends in half a multi-byte character. A tokenizer that cleans up spaces after decoding (a
    Python step of transformers that can change text already decoded) gets the whole
    completion decoded again at each token instead. Text is held back while it could be the
    start of a stop string.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str]) -> None:
        from tokenizers.decoders import DecodeStream

        from tuneforge.data.segments import backend_of

        self._tokenizer = tokenizer
        self._stop = tuple(stop)
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self._incremental = not getattr(tokenizer, "clean_up_tokenization_spaces", False)
        if self._incremental:
            self._backend = backend_of(tokenizer)
            self._stream = DecodeStream(skip_special_tokens=True)
        self.ids: list[int] = []
        self.text = ""  # the decoded completion, without a trailing half character
        self.emitted = ""

    def add(self, token_id: int) -> tuple[str, bool]:
        """Take one token; return the new text to send and whether a stop string was hit."""
        self.ids.append(token_id)
        if self._incremental:
            chunk = self._stream.step(self._backend, token_id)
            if chunk is None:  # half a character so far (or a skipped special token)
                return "", False
            self.text += chunk
        else:
            decoded = self._tokenizer.decode(self.ids, skip_special_tokens=True)
            self.text = decoded.rstrip("\ufffd")
        # the sent text holds no stop string nor the start of one: only its tail can be in one
        start = max(0, len(self.emitted) - self._longest_stop)
        cut = min((i for i in (self.text.find(s, start) for s in self._stop) if i >= 0),
                  default=-1)
        if cut >= 0:
            return self._advance(self.text[:cut]), True
        return self._advance(self.text[: len(self.text) - self._held(self.text)]), False

    def flush(self) -> str:
        """The held-back text, at the end of the request (still without a half character)."""
        return self._advance(self.text)

    def _held(self, text: str) -> int:
        """Length of the longest suffix of `text` that starts a stop string."""
        longest = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest

    def _advance(self, text: str) -> str:
        if not text.startswith(self.emitted) or len(text) <= len(self.emitted):
            return ""  # decoding never takes back what was sent; wait for more tokens
        delta, self.emitted = text[len(self.emitted):], text
        return delta
