"""The interface every inference backend offers; faces and eval call only this.

The transformers backend is `engine.Engine`. A vLLM backend would implement the same few
methods over its own scheduler (AsyncLLMEngine with LoRARequest per request).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tuneforge.serve.requests import Completion, GenerationRequest
from tuneforge.serve.stream import TextStream


class Backend(Protocol):
    """One base model, named adapters, and requests answered as streams."""

    def submit(self, request: GenerationRequest) -> TextStream:
        """Queue `request`; its text arrives on the returned stream.

        Raises:
            OverloadedError: the queue is full.
            NotFoundError: the request names an adapter that is not loaded.
        """
        ...

    def complete(self, request: GenerationRequest) -> Completion:
        """Submit `request` and wait for its whole answer."""
        ...

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load a LoRA adapter (an adapter directory or a run) under `name`."""
        ...

    def unload_adapter(self, name: str) -> None:
        """Forget the adapter `name`."""
        ...

    def adapter_names(self) -> list[str]:
        """The loaded adapters, least recently used first."""
        ...

    def close(self) -> None:
        """Stop the scheduler; unfinished requests end with finish_reason "cancelled"."""
        ...
