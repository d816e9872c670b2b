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

Under CPU autocast, samples shorter than `fp32_below()` tokens are attended in float32:
the CPU flash kernel's bfloat16 path is slower than float32's for short samples. Where the
CPU has AMX (2-core Sapphire Rapids: 64 tokens 1.35 vs 0.49 ms forward and backward, 200
tokens 3.25 vs 2.32 ms) bfloat16 wins from about 330 tokens; with AVX512-BF16 alone (2-core
AMD EPYC, Zen 4: 128 tokens 3.96 vs 1.23 ms, 384 tokens 10.8 vs 9.4-10.6 ms, 512 tokens 17.4
vs 17.7 ms) only from about 512. float32 is also the more exact of the two.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from tuneforge.models.hardware import cpu_has_amx

PACKED_ATTENTION = "tuneforge_packed_sdpa"
FP32_BELOW = {"amx": 320, "other": 512}  # tokens, by CPU: shorter samples are attended in
# float32 under CPU autocast


def fp32_below() -> int:
    """Samples shorter than this many tokens are attended in float32 under CPU autocast."""
    return FP32_BELOW["amx" if cpu_has_amx() else "other"]


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
        if cpu_autocast and q.shape[2] < fp32_below():
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
