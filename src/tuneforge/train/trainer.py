"""transformers' Trainer with a causal-LM loss that computes logits only where they are learned.

A causal LM's head (hidden x vocab, 28M parameters of SmolLM2's 135M) and the cross-entropy
over a 49k vocabulary cost about a fifth of a forward pass, and the float32 logits of a
4 x 512 batch take 400 MB, twice over with their gradient. In SFT most prompt tokens are
masked, so the logits at those positions are computed only to be thrown away. This loss
asks the model for hidden states' logits at the learned positions alone (`logits_to_keep`
with a tensor of positions, a transformers API) and reduces exactly as transformers'
ForCausalLMLoss does (sum over learned tokens / num_items_in_batch), so the loss values equal
the stock loss's; a test checks that.

Rows arrive padding-free (one packed row, position_ids restarting per sample; see
collate.py) or padded; the model must run with use_cache=False so that transformers detects
the packed samples from position_ids and keeps attention inside each.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from tuneforge.train.collate import IGNORE_INDEX
from tuneforge.train.precision import mixed_precision_dtype

# transformers 5 calls its own deprecated property inside Trainer; the warning is not the user's
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                        category=FutureWarning)


class CausalLMTrainer(Trainer):  # type: ignore[misc]
    """Trainer whose loss computes logits at learned positions only."""

    # compute_loss divides by num_items_in_batch itself: no further scaling for accumulation
    loss_is_scaled_for_ga = True

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        # one set of positions for the whole batch: their union (exact for a packed row)
        positions = keep.any(dim=0).nonzero().squeeze(1)
        picked = targets[:, positions].reshape(-1)
        head = plain_output_head(self.accelerator.unwrap_model(model))
        if head is None:
            outputs = model(**inputs, use_cache=False, logits_to_keep=positions)
            logits = outputs.logits.float()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), picked,
                                   ignore_index=IGNORE_INDEX, reduction="sum")
        else:
            with _head_returns_its_input(head):
                outputs = model(**inputs, use_cache=False, logits_to_keep=positions)
            hidden = outputs.logits  # the final hidden states at the learned positions
            # accelerate's autocast wraps the model's forward only: the chunked head, which
            # runs after it, casts for itself, as autocast would have cast the model's head
            loss = chunked_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), picked, head,
                                         mixed_precision_dtype(self.args))
        if num_items_in_batch is None:
            num_items_in_batch = keep.sum()
        elif self.args.average_tokens_across_devices:
            # num_items_in_batch was summed over processes and DDP averages the gradients
            loss = loss * self.accelerator.num_processes
        loss = loss / max(num_items_in_batch, 1)  # a batch with nothing learned adds 0
        return (loss, outputs) if return_outputs else loss


# Model types whose logits are exactly lm_head(final hidden state): no soft-capping or scaling
# after the head (Gemma 2's final_logit_softcapping, Granite's logits_scaling, Cohere's
# logit_scale would be skipped by the chunked loss, so those keep the plain path).
PLAIN_HEAD_MODEL_TYPES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3", "olmo2",
})
CHUNK = 256  # learned positions per chunk: 256 x 49k vocab x 4 bytes = 50 MB of logits
# exp(x) for x below about -87.3, where float32 results turn subnormal or zero, takes a slow
# path in PyTorch's vectorised CPU exp: 64 x 49k values of -88 take 50 ms, of -80 1.4 ms (2-core
# AMD EPYC). A trained model's logits span more than 87 nats, so aten's log_softmax and the
# softmax after it spent most of the head's time there. Clamped at -80, a token's probability
# becomes at most e^-80 (1.8e-35) instead of less: its share of the sum over 49k tokens is
# below float32's resolution by more than 20 orders, and its gradient is as good as zero.
EXP_FLOOR = -80.0


def plain_output_head(model: Any) -> torch.nn.Linear | None:
    """The output head when the loss may compute it chunk by chunk, else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    if type(head) is not torch.nn.Linear or model_type not in PLAIN_HEAD_MODEL_TYPES:
        return None  # a LoRA-wrapped or quantised head, or logits post-processed
    return head


@contextmanager
def _head_returns_its_input(head: torch.nn.Linear) -> Iterator[None]:
    """For one forward pass the model's "logits" are the hidden states the head would see."""
    head.forward = lambda hidden: hidden  # type: ignore[method-assign]
    try:
        yield
    finally:
        del head.forward  # back to nn.Linear.forward


def chunked_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Linear,
                          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Summed cross-entropy of head(hidden) against targets, CHUNK positions at a time, the
    products in `dtype` (mixed precision: the weight is cast once, not once per chunk, and a
    frozen weight once for all steps) and the softmax in float32.

    The float32 logits of every learned position, their softmax and their gradient (three
    times positions x vocab x 4 bytes, 700 MB for 1,200 positions of a 49k vocabulary) never
    exist at once: each chunk's logits give its loss and, right away, the gradients of the
    hidden states (and of the head, when it is trained), which the backward pass only scales.
    So no logits are recomputed: the head costs what it costs unchunked. This is
    Liger-Kernel's fused linear cross-entropy (Triton, GPU only) in plain PyTorch; no library
    offers it for CPUs.
    """
    return _FusedLinearCrossEntropy.apply(hidden, targets, head.weight, head.bias, dtype)


def _low_precision_copy(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`weight` in `dtype`; a frozen weight's copy is kept on it from step to step (as
    autocast keeps its casts of weights that train within a step) until the weight changes,
    in place or by its data being replaced. SmolLM2's head is 28M parameters: casting it
    anew took 57 ms a step (its 56 MB mapped and faulted in afresh each time)."""
    if weight.requires_grad:
        return weight.to(dtype)
    # the version counts in-place changes; the address changes when `.data` is replaced
    # (a device move, a loaded state), which the version does not count
    key = (weight._version, weight.data_ptr(), dtype)
    kept = getattr(weight, "_tuneforge_low_precision", None)
    if kept is None or kept[0] != key:
        kept = (key, weight.detach().to(dtype))
        weight._tuneforge_low_precision = kept  # type: ignore[attr-defined]
    return kept[1]


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Loss and gradients of cross_entropy(linear(hidden, weight, bias)), chunk by chunk."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor:
        wants_hidden, _, wants_weight, wants_bias, _ = ctx.needs_input_grad
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.zeros_like(hidden) if wants_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if wants_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) \
            if wants_bias and bias is not None else None
        w = weight if dtype is None else _low_precision_copy(weight, dtype)
        b = bias if dtype is None or bias is None else bias.to(dtype)
        # one buffer for every chunk's logits (float32) and one for their low-precision
        # product and gradient: a fresh 256 x 49k float32 tensor per chunk is 50 MB, which
        # glibc maps anew each time, and faulting its pages in took longer than the softmax
        size = min(CHUNK, hidden.shape[0])
        logits_buffer = hidden.new_empty((size, w.shape[0]), dtype=torch.float32)
        low_buffer = None if w.dtype == torch.float32 else torch.empty_like(logits_buffer,
                                                                            dtype=w.dtype)
        for start in range(0, hidden.shape[0], CHUNK):
            h, t = hidden[start:start + CHUNK].to(w.dtype), targets[start:start + CHUNK]
            logits = logits_buffer[:h.shape[0]]
            low = logits if low_buffer is None else low_buffer[:h.shape[0]]
            if b is None:
                torch.mm(h, w.T, out=low)
            else:
                torch.addmm(b, h, w.T, out=low)
            if low is not logits:
                logits.copy_(low)
            learned = t != IGNORE_INDEX
            rows, picked = learned.nonzero().squeeze(1), t[learned]
            # the log-softmax written out (x - max - log(sum(exp(x - max)))), so that exp never
            # sees an exponent below EXP_FLOOR: see there
            shifted = logits.sub_(logits.amax(dim=-1, keepdim=True))
            target_shifted = shifted[rows, picked]
            grad = shifted.clamp_(min=EXP_FLOOR).exp_()
            sums = grad.sum(dim=-1, keepdim=True)
            total += (sums[rows, 0].log() - target_shifted).sum()
            # d(sum of CE)/d(logits) = softmax - one_hot(target), zero on ignored rows
            grad.div_(sums)
            grad[rows, picked] -= 1.0
            grad.index_fill_(0, (~learned).nonzero().squeeze(1), 0.0)  # few rows, if any
            product = grad if low is logits else low.copy_(grad)
            if grad_hidden is not None:
                grad_hidden[start:start + CHUNK] = (product @ w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += (product.T @ h).float()
            if grad_bias is not None:
                grad_bias += grad.sum(0)
        ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight, grad_bias)
                                if g is not None))
        ctx.weight_dtype = weight.dtype
        ctx.present = (grad_hidden is not None, grad_weight is not None, grad_bias is not None)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = iter(ctx.saved_tensors)
        grad_hidden, grad_weight, grad_bias = (next(saved) if present else None
                                               for present in ctx.present)
        scale = grad_output.float()
        return (None if grad_hidden is None else grad_hidden * scale.to(grad_hidden.dtype),
                None,
                None if grad_weight is None else (grad_weight * scale).to(ctx.weight_dtype),
                None if grad_bias is None else grad_bias * scale,
                None)
