"""A request's side of the engine: an iterator of text deltas, and the text they come from.

The scheduler thread writes into a `TextStream` (a thread-safe queue); the caller reads it
with `for delta in stream` or `async for delta in stream`. `cancel()` (or `close()`, or
leaving a `with` block) tells the scheduler to stop the request and free its slot.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
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
        while True:
            # a worker thread waits on the queue so the event loop never blocks
            item = await asyncio.to_thread(self._items.get)
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
            self._items.put(delta)

    def finish(self, reason: FinishReason, completion_tokens: int) -> None:
        self.completion_tokens = completion_tokens
        self.finish_reason = reason
        self._items.put(_END)

    def fail(self, error: BaseException) -> None:
        self._items.put(error)


class Detokenizer:
    """Completion token ids -> safe text deltas, ending at the first stop string.

    The whole completion is decoded again at each token (cheap next to a forward pass), so
    merges across tokens come out right. Text is held back while it ends in half a
    multi-byte character (U+FFFD) or in what could be the start of a stop string.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str]) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(stop)
        self.ids: list[int] = []
        self.emitted = ""

    def add(self, token_id: int) -> tuple[str, bool]:
        """Take one token; return the new text to send and whether a stop string was hit."""
        self.ids.append(token_id)
        text = self._tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            return self._advance(text[:cut]), True
        safe = text.rstrip("\ufffd")
        return self._advance(safe[: len(safe) - self._held(safe)]), False

    def flush(self) -> str:
        """The held-back text, at the end of the request (still without a half character)."""
        text = self._tokenizer.decode(self.ids, skip_special_tokens=True).rstrip("\ufffd")
        return self._advance(text)

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
