"""The causal-LM recipe: supervised fine-tuning (sft) and post-pretraining (pt).

Reads top to bottom: check the machine, load and tokenise the data, load the model, apply
the method, train with transformers' Trainer (resuming when asked), save the output with its
tokenizer and template. pt runs through here too: its records are raw text, chunked into
blocks with every token learned.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config.run import RunConfig
from tuneforge.data.load import load_data
from tuneforge.data.tokenize import TokenizeOptions, tokenize_examples
from tuneforge.data.tokenizer import load_tokenizer
from tuneforge.paths import RunPaths, atomic_dir, atomic_write, commit_dir
from tuneforge.settings import Settings
from tuneforge.train.arguments import training_arguments
from tuneforge.train.callback import Progress, RunCallback
from tuneforge.train.checkpoint import resolve_resume
from tuneforge.train.collate import PaddingCollator, TokenizedDataset
from tuneforge.train.hardware import check_hardware
from tuneforge.train.methods import apply_method
from tuneforge.train.stopping import StopRequest

logger = logging.getLogger(__name__)
TEMPLATE_FILE = "tuneforge_template.json"


@dataclass(frozen=True)
class TrainResult:
    """How a training run ended and where its products are."""

    status: str  # completed | stopped
    global_step: int
    output_dir: Path | None
    checkpoint: Path | None
    metrics: dict[str, Any]


def run_causal_lm(config: RunConfig, paths: RunPaths, settings: Settings, stop: StopRequest,
                  progress: Progress | None = None) -> TrainResult:
    """Train a causal LM on pt or sft data as `config` says; outputs under `paths`."""
    import torch
    from transformers import AutoModelForCausalLM, EarlyStoppingCallback, PrinterCallback, Trainer
    from transformers.utils import logging as hf_logging

    from tuneforge.models.sources import resolve_model

    device = check_hardware(config)
    hf_logging.disable_progress_bar()  # progress is ours: the callback's trainer_log records
    bundle = load_data(config.data, stage=config.method.stage, seed=config.training.seed)
    atomic_write(paths.data_report, json.dumps(bundle.report(), indent=2, ensure_ascii=False))
    model_dir = resolve_model(config.model.name_or_path or "", settings,
                              trust_remote_code=config.model.trust_remote_code)
    tokenizer = load_tokenizer(config.model.tokenizer or str(model_dir), settings.cache)
    options = TokenizeOptions.from_config(config)
    tokenize = dict(cache_dir=settings.cache, overwrite_cache=config.data.overwrite_cache)
    train_data = tokenize_examples(bundle.train, tokenizer, options, **tokenize)
    eval_data = tokenize_examples(bundle.eval, tokenizer, options, **tokenize) \
        if bundle.eval else None
    logger.info("data: %d training rows, %d eval rows; %s", len(train_data),
                len(eval_data or []), train_data.report.reasons)

    torch.manual_seed(config.training.seed)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, trust_remote_code=config.model.trust_remote_code)
    model = apply_method(model, config.method)
    args = training_arguments(config, paths.checkpoints, has_eval=eval_data is not None,
                              device=device)
    callback = RunCallback(paths.trainer_log, stop, progress)
    callbacks: list[Any] = [callback]
    if config.training.early_stopping_steps and eval_data is not None:
        callbacks.append(EarlyStoppingCallback(config.training.early_stopping_steps))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    trainer = Trainer(
        model=model, args=args, train_dataset=TokenizedDataset(train_data),
        eval_dataset=TokenizedDataset(eval_data) if eval_data is not None else None,
        data_collator=PaddingCollator(pad_id), callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    resume = resolve_resume(config.training.resume_from_checkpoint, paths.checkpoints,
                            config.output.overwrite_output_dir)
    if resume is not None:
        logger.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    checkpoint = Path(args.output_dir) / f"checkpoint-{trainer.state.global_step}"
    if callback.stopped:
        return TrainResult("stopped", trainer.state.global_step, None, checkpoint,
                           dict(result.metrics))
    metrics = dict(result.metrics)
    if eval_data is not None:
        metrics.update(trainer.evaluate())
    staging = atomic_dir(paths.output)  # the output appears whole or not at all
    trainer.save_model(str(staging))
    tokenizer.save_pretrained(str(staging))
    atomic_write(staging / TEMPLATE_FILE, json.dumps(train_data.template, indent=2) + "\n")
    commit_dir(staging, paths.output)
    return TrainResult("completed", trainer.state.global_step, paths.output, checkpoint,
                       metrics)
