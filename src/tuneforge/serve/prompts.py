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

from tuneforge.data.records import Message
from tuneforge.data.templates import Renderer, render_prompt, select_template
from tuneforge.serve.requests import ChatMessage

TEMPLATE_FILE = "tuneforge_template.json"  # written by train/stage.py next to the output


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


def chat_prompt(renderer: Renderer, messages: Sequence[ChatMessage]) -> str:
    """The text before the assistant's answer to `messages`, as `renderer` renders it.

    A leading system message becomes the conversation's system prompt.
    """
    system = None
    turns = list(messages)
    if turns and turns[0].role == "system":
        system, turns = turns[0].content, turns[1:]
    return render_prompt(renderer, [Message(m.role, m.content) for m in turns], system)
