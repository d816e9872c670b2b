"""Mixed precision without the weight copies: frozen linear weights stored as autocast uses them.

Under bf16 (or fp16) autocast every linear layer casts its float32 weight to the low
precision at every forward pass (autocast caches the cast only for weights that train), and
autograd keeps the cast copy until the backward pass has used it. For LoRA on SmolLM2-135M
that is 106M frozen weights cast each step, and held in bf16 beside the float32 originals.
Stored in the low precision, the frozen weights are exactly what autocast would have made of
them, so every product multiplies the same numbers, and the step saves those casts and
0.4 GiB (BENCHMARKS.md).

Only the frozen weights change: what trains, the output head (tied to the embedding, which
looks up float32 rows), norms, embeddings and the residual stream stay float32. (Handing
the norms' outputs over already cast, so that q, k and v share one copy, saved 67 MiB more
on a 2,048-token row, but autograd then sums their gradients in bf16: not done.)
"""

from __future__ import annotations

from typing import Any

import torch


def store_frozen_linears(model: Any, dtype: torch.dtype) -> int:
    """Keep the frozen linear layers' weights in `dtype`, the dtype autocast multiplies in;
    return how many layers were cast. The output head and layers with a trained weight or
    bias keep float32."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    cast = 0
    for module in model.modules():
        if type(module) is not torch.nn.Linear or module is head:
            continue
        params = [p for p in (module.weight, module.bias) if p is not None]
        if all(p.dtype == torch.float32 and not p.requires_grad for p in params):
            module.to(dtype)
            cast += 1
    return cast


def mixed_precision_dtype(args: Any) -> torch.dtype | None:
    """The dtype autocast multiplies in under TrainingArguments `args` (None: no autocast)."""
    return torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
