"""Attention for padding-free rows: each packed sample attends within itself, with no mask.

transformers keeps packed samples apart by building a block-diagonal mask from the position
ids, over the whole row: on CPU that is an L x L mask and attention over all L^2 pairs, most
of them masked out, and no flash kernel (it does not take such a mask). A row of four
512-token samples then costs more time and memory than four padded rows. This attention
function, registered with transformers' AttentionInterface (its documented extension point),
splits the row where the position ids restart and runs PyTorch's scaled_dot_product_attention
per sample with is_causal=True: the flash kernel, memory linear in length, the same result.
The mask function transformers would call is not registered under this name, so no mask is
built at all. It serves padding-free training batches only (one row, position ids given, no
padding mask); anything else is refused rather than attended wrongly.

Under CPU autocast, samples shorter than `FP32_BELOW` tokens are attended in float32: the
CPU flash kernel's bfloat16 backward pass has a fixed cost that makes it 2-3x slower than
float32's for short samples (on a 2-core Sapphire Rapids: 64 tokens 1.35 vs 0.49 ms forward
and backward, 200 tokens 3.25 vs 2.32 ms; from about 330 tokens bfloat16 is faster), and
float32 is the more exact of the two.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

PACKED_ATTENTION = "tuneforge_packed_sdpa"
FP32_BELOW = 320  # tokens: shorter samples are attended in float32 under CPU autocast


def packed_sdpa(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, dropout: float = 0.0,
                scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Causal attention within each packed sample; query [1, heads, L, dim], as transformers'
    sdpa_attention_forward takes it, and the output [1, L, heads, dim], as it returns it."""
    positions = kwargs.get("position_ids")
    if query.shape[0] != 1 or positions is None or attention_mask is not None:
        raise ValueError(f"{PACKED_ATTENTION} takes one packed row with position_ids and no "
                         "attention mask (padding-free batches)")
    length = query.shape[2]
    starts = (positions.reshape(-1)[:length] == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    ends = [*starts[1:], length]
    gqa = query.shape[1] != key.shape[1]
    cpu_autocast = query.device.type == "cpu" and torch.is_autocast_enabled("cpu")
    # split, not sliced: the backward pass then joins the pieces' gradients in one cat, where
    # each slice's would be copied into a zero-filled tensor of the whole row
    sizes = [e - s for s, e in zip(starts, ends, strict=True)]
    pieces = []
    for q, k, v in zip(*(t.split(sizes, dim=2) for t in (query, key, value)), strict=True):
        if cpu_autocast and q.shape[2] < FP32_BELOW:
            with torch.autocast("cpu", enabled=False):
                piece = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), dropout_p=dropout, is_causal=True,
                    scale=scaling, enable_gqa=gqa)
            piece = piece.to(torch.get_autocast_dtype("cpu"))  # as the autocast path's
        else:
            piece = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True,
                                                   scale=scaling, enable_gqa=gqa)
        pieces.append(piece)
    out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_ATTENTION, packed_sdpa)
