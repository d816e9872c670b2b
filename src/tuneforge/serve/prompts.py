"""Chat messages -> prompt text, with the template a model or adapter was trained with.

Training writes `tuneforge_template.json` next to its output ({"template": "<name>" |
"tokenizer" | "none", ...}). A served fine-tune renders chat requests with that template, cut
where the assistant's turn starts: the text training put before every learned answer (the
same cut as train/generate.py's `generation_prompt`, for whole conversations).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuneforge.data.records import Message, ToolCall
from tuneforge.data.templates import Renderer, render_prompt, select_template
from tuneforge.errors import NotFoundError
from tuneforge.serve.requests import ChatMessage, GenerationRequest

TEMPLATE_FILE = "tuneforge_template.json"  # written by train/stage.py next to the output
BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch; the model's own renderer


def training_renderer(directory: Path, tokenizer: Any) -> Renderer:
    """The template `directory` was trained with; else (or for pt, "none") the tokenizer's own
    chat template, else `empty`."""
    path = directory / TEMPLATE_FILE
    name = None
    if path.is_file():
        name = json.loads(path.read_text(encoding="utf-8")).get("template")
    if name in (None, "tokenizer", "none"):
        return select_template(tokenizer, None)
    return select_template(tokenizer, str(name))


def chat_prompt(renderer: Renderer, messages: Sequence[ChatMessage],
                tools: str | None = None) -> str:
    """The text before the assistant's answer to `messages`, as `renderer` renders it, with
    `tools` (a JSON list of function schemas) where the template puts them.

    A leading system message becomes the conversation's system prompt.
    """
    system = None
    turns = list(messages)
    if turns and turns[0].role == "system":
        system, turns = turns[0].content, turns[1:]
    return render_prompt(renderer, [_message(m) for m in turns], system, tools)


def _message(message: ChatMessage) -> Message:
    calls = tuple(ToolCall(c.name, c.arguments, c.id) for c in message.tool_calls)
    return Message(message.role, message.content, calls, name=message.name)


def request_prompt(renderers: dict[str, Renderer], request: GenerationRequest) -> str:
    """The prompt text the model sees: the raw prompt, or the chat rendered with the training
    template of the request's adapter (`renderers[BASE]`: the model's).

    Raises:
        NotFoundError: the request names an adapter without a renderer (not loaded).
    """
    if request.prompt is not None:
        return request.prompt
    assert request.messages is not None
    renderer = renderers.get(request.adapter or BASE)
    if renderer is None:
        raise NotFoundError("adapter", request.adapter or "")
    return chat_prompt(renderer, request.messages, request.tools)
