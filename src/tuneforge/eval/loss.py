"""Eval loss and perplexity over tokenised data, with training's masking.

The data comes from data/tokenize.py, exactly as training builds it (the same template, the
same learned spans, the same cut at max_length), so the labels are training's labels. The
loss is the mean next-token cross-entropy over every learned token of the set: the
transformers loss of each sample, weighted by its learned-token count. It equals training's
eval_loss when training evaluates the whole set in one batch (the Trainer averages per batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tuneforge.data.tokenized import IGNORE_INDEX, TokenizedData


@dataclass(frozen=True, slots=True)
class LossResult:
    """Mean loss per learned token, its perplexity, and how many tokens it covers."""

    loss: float
    perplexity: float
    tokens: int


def eval_loss(model: Any, data: TokenizedData, *, pad_token_id: int = 0,
              batch_size: int = 8) -> LossResult:
    """The summed cross-entropy of every learned token over their count (right-padded rows)."""
    import torch
    import torch.nn.functional as F

    input_ids, labels = data.columns["input_ids"], data.columns["labels"]
    total, count = 0.0, 0
    model.eval()
    for start in range(0, len(input_ids), batch_size):
        rows = range(start, min(start + batch_size, len(input_ids)))
        width = max(len(input_ids[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
        target = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, i in enumerate(rows):
            n = len(input_ids[i])
            ids[j, :n] = torch.as_tensor(input_ids[i], dtype=torch.long)
            target[j, :n] = torch.as_tensor(labels[i], dtype=torch.long)
            mask[j, :n] = 1
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        # position t predicts token t + 1, as the transformers causal-LM loss shifts
        shifted = target[:, 1:]
        total += float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                       shifted.reshape(-1), ignore_index=IGNORE_INDEX,
                                       reduction="sum"))
        count += int((shifted != IGNORE_INDEX).sum())
    loss = total / count if count else float("nan")
    return LossResult(loss, math.exp(loss) if count else float("nan"), count)
