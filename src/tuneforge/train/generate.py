"""Greedy answers from a trained model, prompted exactly as training rendered its data.

A small helper for the demo and the tests (the serving engine is the general path). The
prompt is the training template's own rendering of the conversation cut where the assistant
turn starts: the same text, token for token, that training put before every learned answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuneforge.data.records import Message
from tuneforge.data.templates import Renderer, render_prompt


def generation_prompt(renderer: Renderer, question: str, system: str | None = None) -> str:
    """The text before the assistant's answer to `question`, as the template renders it."""
    return render_prompt(renderer, (Message("user", question),), system)


def greedy_answers(model: Any, tokenizer: Any, prompts: Sequence[str], *,
                   max_new_tokens: int = 64) -> list[str]:
    """Each prompt's greedy continuation, up to the end of the assistant's turn.

    The prompts go through generate() as one left-padded batch: one forward pass per new
    token for all of them.
    """
    import torch

    stop = {tokenizer.eos_token_id, *_ids(model.generation_config.eos_token_id)} - {None}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop)
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=sorted(stop), pad_token_id=pad)
    # a reply cut by max_new_tokens may end inside a multi-byte character: drop that half
    return [tokenizer.decode(row[width:], skip_special_tokens=True).rstrip("\ufffd").strip()
            for row in out]


def _ids(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)
