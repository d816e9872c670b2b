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
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

PACKED_ATTENTION = "tuneforge_packed_sdpa"


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
    pieces = [
        F.scaled_dot_product_attention(
            query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout_p=dropout,
            is_causal=True, scale=scaling, enable_gqa=gqa)
        for s, e in zip(starts, ends, strict=True)
    ]
    out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_ATTENTION, packed_sdpa)
