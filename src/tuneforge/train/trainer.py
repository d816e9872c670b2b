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
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from tuneforge.train.collate import IGNORE_INDEX

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
        outputs = model(**inputs, use_cache=False, logits_to_keep=positions)
        logits = outputs.logits.float()
        picked = targets[:, positions]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), picked.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        if num_items_in_batch is None:
            num_items_in_batch = keep.sum()
        elif self.args.average_tokens_across_devices:
            # num_items_in_batch was summed over processes and DDP averages the gradients
            loss = loss * self.accelerator.num_processes
        loss = loss / max(num_items_in_batch, 1)  # a batch with nothing learned adds 0
        return (loss, outputs) if return_outputs else loss
