"""The fused RMSNorm: the same forward as transformers' Llama norm, gradients equal to float32
rounding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from tuneforge.train.rmsnorm import fuse_rmsnorm


def _loss_and_grads(model: torch.nn.Module, ids: torch.Tensor
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_fused_norms_train_as_the_plain_ones(tiny_llm_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir), dtype=torch.float32)
    generator = torch.Generator().manual_seed(1)
    for name, param in model.named_parameters():  # norms at 1 would hide a wrong weight grad
        if "norm" in name:
            torch.nn.init.normal_(param, mean=1.0, std=0.3, generator=generator)
    ids = torch.randint(3, 100, (2, 24), generator=torch.Generator().manual_seed(0))
    loss, grads = _loss_and_grads(model, ids)

    assert fuse_rmsnorm(model) == 2 * model.config.num_hidden_layers + 1
    fused_loss, fused_grads = _loss_and_grads(model, ids)

    assert torch.equal(fused_loss, loss)  # the forward is the same operations
    for name, grad in grads.items():
        assert torch.allclose(fused_grads[name], grad, atol=1e-6, rtol=1e-5), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_norm_takes_low_precision_input_as_transformers_does(dtype: torch.dtype) -> None:
    """Qwen3's q/k norms see bf16 input under autocast: computed in float32, cast back."""
    norm = LlamaRMSNorm(8, eps=1e-6)
    torch.nn.init.normal_(norm.weight, mean=1.0, std=0.3)
    x = torch.randn(3, 5, 8).to(dtype).requires_grad_(True)
    grad = torch.randn(3, 5, 8)
    plain = norm(x)
    plain.backward(grad.to(plain.dtype))
    want = (plain.detach(), x.grad.clone(), norm.weight.grad.clone())
    x.grad, norm.weight.grad = None, None

    fuse_rmsnorm(norm)
    fused = norm(x)
    fused.backward(grad.to(fused.dtype))
    assert fused.dtype == plain.dtype
    assert torch.equal(fused.detach(), want[0])
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    assert torch.allclose(x.grad.float(), want[1].float(), rtol=tolerance, atol=tolerance)
    assert torch.allclose(norm.weight.grad, want[2], rtol=1e-5, atol=1e-5)
