"""The causal-LM recipe: supervised fine-tuning (sft) and post-pretraining (pt).

Reads top to bottom: check the machine, load and tokenise the data (stage.py), load the
model, apply the method, train with transformers' Trainer (resuming when asked), save the
output with its tokenizer and template (stage.py). pt runs through here too: its records are
raw text, chunked into blocks with every token learned.
"""

from __future__ import annotations

import logging

from tuneforge.config.run import RunConfig
from tuneforge.paths import RunPaths
from tuneforge.settings import Settings
from tuneforge.train.arguments import training_arguments
from tuneforge.train.attention import PACKED_ATTENTION
from tuneforge.train.callback import Progress
from tuneforge.train.collate import PaddingCollator, TokenizedDataset
from tuneforge.train.methods import apply_method, load_model
from tuneforge.train.precision import mixed_precision_dtype, store_frozen_linears
from tuneforge.train.stage import TrainResult, prepare_stage, run_callbacks, train_and_save
from tuneforge.train.stopping import StopRequest
from tuneforge.train.trainer import CausalLMTrainer

logger = logging.getLogger(__name__)
__all__ = ["TrainResult", "run_causal_lm"]


def run_causal_lm(config: RunConfig, paths: RunPaths, settings: Settings, stop: StopRequest,
                  progress: Progress | None = None) -> TrainResult:
    """Train a causal LM on pt or sft data as `config` says; outputs under `paths`."""
    import torch
    from transformers import AutoModelForCausalLM

    inputs = prepare_stage(config, paths, settings)
    device, model_dir, tokenizer = inputs.device, inputs.model_dir, inputs.tokenizer
    train_data, eval_data = inputs.train, inputs.eval

    torch.manual_seed(config.training.seed)
    model = load_model(config, model_dir, AutoModelForCausalLM)
    if config.data.padding_free:  # attention per packed sample, with no L x L mask
        model.set_attn_implementation(PACKED_ATTENTION)
    model = apply_method(model, config.method, adapter=inputs.adapter)
    args = training_arguments(config, paths.checkpoints, has_eval=eval_data is not None,
                              device=device)
    compute = mixed_precision_dtype(args)
    if config.method.finetuning_type == "lora" and compute is not None \
            and not (args.deepspeed or args.fsdp):  # sharding wants one dtype per module
        store_frozen_linears(model, compute)
    callback, callbacks = run_callbacks(config, paths, stop, progress,
                                        has_eval=eval_data is not None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    model.config.use_cache = False  # a cache would hide packed samples' boundaries
    trainer = CausalLMTrainer(
        model=model, args=args, train_dataset=TokenizedDataset(train_data),
        eval_dataset=TokenizedDataset(eval_data) if eval_data is not None else None,
        data_collator=PaddingCollator(pad_id, padding_free=config.data.padding_free),
        callbacks=callbacks,
    )
    return train_and_save(trainer, callback, config, paths, inputs)
