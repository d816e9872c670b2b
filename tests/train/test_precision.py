"""Frozen linear weights stored in bf16: the same loss and gradients as plain autocast, with
less kept for the backward pass."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from tuneforge.config.train import MethodConfig
from tuneforge.train.methods import apply_method
from tuneforge.train.precision import store_frozen_linears


def _lora(tiny_llm_dir: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir), dtype=torch.float32)
    model = apply_method(model, MethodConfig(finetuning_type="lora", lora_rank=4,
                                             lora_target=["q_proj", "v_proj"]))
    for name, param in model.named_parameters():  # B starts at zero: give it a gradient path
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    return model


def _loss_grads_kept(model: torch.nn.Module, ids: torch.Tensor
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """Loss, the trained parameters' gradients, and the bytes autograd kept beside the
    parameters (each storage once) for one bf16-autocast forward and backward."""
    storages: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), \
            torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, sum(storages.values())


def test_frozen_bf16_weights_multiply_the_same_numbers_and_keep_less(tiny_llm_dir: Path) -> None:
    ids = torch.randint(3, 100, (2, 40), generator=torch.Generator().manual_seed(0))
    model = _lora(tiny_llm_dir)
    loss, grads, kept = _loss_grads_kept(model, ids)

    assert store_frozen_linears(model, torch.bfloat16) == 2 * 7  # q, k, v, o, gate, up, down
    laid_loss, laid_grads, laid_kept = _loss_grads_kept(model, ids)

    assert torch.equal(laid_loss, loss)
    assert grads.keys() == laid_grads.keys() and grads
    for name, grad in grads.items():
        assert torch.equal(laid_grads[name], grad), name
    # the bf16 copies of the frozen weights, which autocast made and kept, are gone (all
    # but layer 0's q, k and v: their input needs no gradient, so no copy was kept)
    first = model.get_base_model().model.layers[0].self_attn
    unkept = sum(m.weight.numel() for m in (first.q_proj.base_layer, first.k_proj,
                                            first.v_proj.base_layer))
    frozen = sum(p.numel() for p in model.parameters() if p.dtype == torch.bfloat16)
    assert kept - laid_kept == 2 * (frozen - unkept)
    base = model.get_base_model()
    attention = base.model.layers[0].self_attn
    assert attention.q_proj.base_layer.weight.dtype == torch.bfloat16  # frozen: stored bf16
    assert attention.k_proj.weight.dtype == torch.bfloat16
    assert attention.q_proj.lora_A["default"].weight.dtype == torch.float32  # trained
    assert base.lm_head.weight.dtype == torch.float32  # the head keeps float32
