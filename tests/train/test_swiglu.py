"""The fused SwiGLU MLP: the same loss and gradients as transformers' MLP, less kept for the
backward pass."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from tuneforge.train.swiglu import fuse_swiglu


def _loss_and_grads(model: torch.nn.Module, ids: torch.Tensor
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """The loss, every parameter's gradient, and the bytes autograd kept for the backward."""
    kept = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal kept
        kept += tensor.numel() * tensor.element_size()
        return tensor

    model.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, kept


def test_fused_mlp_trains_as_the_plain_one_and_keeps_less(tiny_llm_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir), dtype=torch.float32)
    config = model.config
    ids = torch.randint(3, config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    loss, grads, kept = _loss_and_grads(model, ids)

    assert fuse_swiglu(model) == config.num_hidden_layers
    fused_loss, fused_grads, fused_kept = _loss_and_grads(model, ids)

    assert torch.equal(fused_loss, loss)
    for name, grad in grads.items():
        assert torch.allclose(fused_grads[name], grad, atol=1e-6, rtol=1e-5), name
    # one [tokens, intermediate] float32 tensor less per layer: silu(gate)
    saved = config.num_hidden_layers * ids.numel() * config.intermediate_size * 4
    assert kept - fused_kept == saved


def test_other_activations_are_left_alone(tiny_llm_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir), dtype=torch.float32)
    model.config.hidden_act = "gelu"
    assert fuse_swiglu(model) == 0
