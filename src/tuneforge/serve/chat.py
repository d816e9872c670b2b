"""A conversation with one engine: the history a terminal chat (or any face) keeps."""

from __future__ import annotations

from collections.abc import Iterator

from tuneforge.serve.engine import Engine
from tuneforge.serve.requests import ChatMessage, GenerationRequest


class ChatSession:
    """Turns so far, and the next answer streamed; `clear()` starts over."""

    def __init__(self, engine: Engine, *, adapter: str | None = None, system: str | None = None,
                 max_tokens: int = 512, temperature: float = 0.7, top_p: float = 0.9,
                 repetition_penalty: float = 1.0) -> None:
        self.engine, self.adapter, self.system = engine, adapter, system
        self.settings = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                             repetition_penalty=repetition_penalty)
        self.history: list[ChatMessage] = []

    def clear(self) -> None:
        self.history.clear()

    def send(self, text: str) -> Iterator[str]:
        """Ask `text`; yields the answer's text as it is generated, then keeps both turns.
        Closing the iterator early (Ctrl-C) cancels the generation and keeps nothing."""
        turns = [*self.history, ChatMessage(role="user", content=text)]
        system = [ChatMessage(role="system", content=self.system)] if self.system else []
        request = GenerationRequest(messages=tuple(system + turns), adapter=self.adapter,
                                    **self.settings)  # type: ignore[arg-type]
        answer = []
        with self.engine.submit(request) as stream:
            for delta in stream:
                answer.append(delta)
                yield delta
        self.history = [*turns, ChatMessage(role="assistant", content="".join(answer))]
