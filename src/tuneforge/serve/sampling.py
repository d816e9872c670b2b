"""Next-token choice for one sequence: repetition penalty, temperature, top-k, top-p.

The same rules as transformers' logits processors (RepetitionPenaltyLogitsProcessor,
TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper), applied to one row, since
every row of a continuous batch has its own settings and its own seeded generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tuneforge.serve.requests import GenerationRequest

if TYPE_CHECKING:
    import torch


def next_tokens(logits: torch.Tensor, requests: Sequence[GenerationRequest],
                seen: Sequence[Sequence[int]],
                generators: Sequence[torch.Generator | None]) -> list[int]:
    """`next_token` for each row of a batch's last-position logits; the plain greedy rows
    (temperature 0, no repetition penalty) take one batched argmax."""
    import torch

    plain = [r.temperature == 0.0 and r.repetition_penalty == 1.0 for r in requests]
    greedy = torch.argmax(logits, dim=-1).tolist() if any(plain) else []
    return [greedy[i] if plain[i] else next_token(logits[i], requests[i], seen[i], generators[i])
            for i in range(len(requests))]


def next_token(logits: torch.Tensor, request: GenerationRequest, seen: Sequence[int],
               generator: torch.Generator | None) -> int:
    """The token to append, from one row of last-position logits (greedy at temperature 0)."""
    import torch

    logits = logits.float()
    if request.repetition_penalty != 1.0 and seen:
        logits = logits.clone()  # written in place below; the caller's row stays as it was
        index = torch.tensor(sorted(set(seen)), dtype=torch.long)
        picked = logits[index]
        logits[index] = torch.where(picked > 0, picked / request.repetition_penalty,
                                    picked * request.repetition_penalty)
    if request.temperature == 0.0:
        return int(torch.argmax(logits))
    logits = logits / request.temperature
    if 0 < request.top_k < logits.numel():
        kth = torch.topk(logits, request.top_k).values[-1]
        logits[logits < kth] = float("-inf")
    if request.top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        # drop a token when the tokens before it already hold top_p of the mass
        dropped = torch.cumsum(probs, dim=-1) - probs > request.top_p
        logits[order[dropped]] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
