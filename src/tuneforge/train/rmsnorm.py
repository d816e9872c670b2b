"""The Llama-family RMSNorm as one autograd function: the same forward, a leaner backward.

transformers' RMSNorm is six tensor operations (pow, mean, add, rsqrt, two products), each
recorded by autograd, whose backward pass is about ten more, with the intermediate results
kept. On CPUs these passes over [tokens, hidden] tensors are memory-bound: for SmolLM2-135M
the 61 norms took about a tenth of a LoRA training step. This function computes the forward
with the very same operations (bitwise equal output), keeps only the input and the
per-token reciprocal RMS, and writes the backward out by hand,

    dx = rstd * (g - x * rstd^2 * mean(g * x)),  g = dy * weight,

in half the time (1.9 vs 3.6 ms for 1,024 x 576 here; gradients equal to float32 rounding).
Liger-Kernel fuses the same on GPUs (Triton only); torch's F.rms_norm decomposes into the
same many operations on CPUs.
"""

from __future__ import annotations

import types
from typing import Any

import torch

# RMSNorm classes whose forward is exactly
# weight * (x.float() * rsqrt(mean(x.float()^2) + eps)).to(x.dtype)
LLAMA_NORMS = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"}


class RMSNorm(torch.autograd.Function):
    """weight * (x * rsqrt(mean(x^2) + eps)), computed in float32, as the Llama norms do."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        x32 = x.to(torch.float32)
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, rstd, weight)
        return weight * (x32 * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, rstd, weight = ctx.saved_tensors
        x32 = x.to(torch.float32)
        g = (grad * weight).to(torch.float32)
        dot = (g * x32).mean(-1, keepdim=True).mul_(rstd.pow(2))
        grad_x = (g - x32 * dot).mul_(rstd).to(x.dtype) if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            normed = (x32 * rstd).to(x.dtype)
            grad_weight = (grad * normed).sum(tuple(range(grad.dim() - 1))).to(weight.dtype)
        return grad_x, grad_weight, None


def _forward(self: Any, hidden: torch.Tensor) -> torch.Tensor:
    return RMSNorm.apply(hidden, self.weight, self.variance_epsilon)


def fuse_rmsnorm(model: Any) -> int:
    """Give each Llama-family RMSNorm of `model` the forward through `RMSNorm`; return how
    many. Other norms (Gemma's 1 + weight, LayerNorms) are left alone."""
    fused = 0
    for module in model.modules():
        if type(module).__name__ in LLAMA_NORMS and hasattr(module, "variance_epsilon"):
            module.forward = types.MethodType(_forward, module)
            fused += 1
    return fused
