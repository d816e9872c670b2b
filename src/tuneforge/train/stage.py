"""The steps every training recipe shares, around the part that differs (model and trainer).

A recipe (sft.py, preference.py) reads top to bottom (`train` has checked the machine):
`prepare_stage` resolves the adapter to start from, loads and tokenises the data (writing
data_report.json) and finds the model and tokenizer; the recipe builds its model and
trainer; `run_callbacks` gives the trainer our callbacks;
`train_and_save` trains (resuming when asked) and saves the output with its tokenizer and
template, atomically.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.config.run import RunConfig
from tuneforge.data.load import DataBundle, load_data
from tuneforge.data.tokenize import TokenizedData, TokenizeOptions, tokenize_examples
from tuneforge.data.tokenizer import load_tokenizer
from tuneforge.errors import DataError
from tuneforge.models.adapters import adapter_dir
from tuneforge.paths import RunPaths, atomic_write, commit_dir
from tuneforge.settings import Settings
from tuneforge.train.callback import Progress, RunCallback
from tuneforge.train.checkpoint import resolve_resume
from tuneforge.train.distributed import is_main_process, main_process_first, shared_atomic_dir
from tuneforge.train.hardware import training_device
from tuneforge.train.stopping import StopRequest

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, Trainer

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


@dataclass(frozen=True)
class StageInputs:
    """What a recipe starts from: the device, the model folder, tokenizer and tokenised data."""

    device: str
    model_dir: Path
    tokenizer: PreTrainedTokenizerBase
    train: TokenizedData
    eval: TokenizedData | None
    adapter: Path | None = None  # model.adapter_name_or_path, resolved


def prepare_stage(config: RunConfig, paths: RunPaths, settings: Settings,
                  options: TokenizeOptions | None = None) -> StageInputs:
    """Resolve the adapter to start from, load the stage's data (report under `paths`), find
    the model and tokenise the data with its tokenizer and template (`options`: default from
    `config`).

    Raises:
        NotFoundError: `model.adapter_name_or_path` holds no adapter.
        DataError: the data is missing, broken or of the wrong kind for the stage.
    """
    from transformers.utils import logging as hf_logging

    device = training_device()  # `train` has checked what the machine can do
    adapter = adapter_dir(config.model.adapter_name_or_path, settings) \
        if config.model.adapter_name_or_path else None  # a wrong path fails before any work
    hf_logging.disable_progress_bar()  # progress is ours: the callback's trainer_log records
    with main_process_first():  # rank 0 fills the model and token caches, the others read
        bundle, model_dir = load_stage_data(config, paths, settings)
        tokenizer = load_tokenizer(config.model.tokenizer or str(model_dir), settings.cache)
        options = options or TokenizeOptions.from_config(config)
        tokenize = dict(cache_dir=settings.cache, overwrite_cache=config.data.overwrite_cache)
        train_data = tokenize_examples(bundle.train, tokenizer, options, **tokenize)
        eval_data = tokenize_examples(bundle.eval, tokenizer, options, **tokenize) \
            if bundle.eval else None
    if len(train_data) == 0:  # else the Trainer's sampler fails with num_samples=0
        hint = ("expected some text" if config.method.stage == "pt" else
                f"every sample was dropped: {dict(train_data.report.reasons)}")
        raise DataError.one(f"no training samples left after tokenising; {hint}",
                            file=", ".join(config.data.dataset))
    logger.info("data: %d training rows, %d eval rows; %s", len(train_data),
                len(eval_data or []), train_data.report.reasons)
    return StageInputs(device, model_dir, tokenizer, train_data, eval_data, adapter)


def load_stage_data(config: RunConfig, paths: RunPaths, settings: Settings
                    ) -> tuple[DataBundle, Path]:
    """The stage's records (their report written under `paths` by rank 0) and the model
    folder; call it inside `main_process_first()` under several processes."""
    from tuneforge.models.sources import resolve_model

    bundle = load_data(config.data, stage=config.method.stage, seed=config.training.seed)
    if is_main_process():
        atomic_write(paths.data_report, json.dumps(bundle.report(), indent=2,
                                                   ensure_ascii=False))
    model_dir = resolve_model(config.model.name_or_path or "", settings,
                              trust_remote_code=config.model.trust_remote_code)
    return bundle, model_dir


def run_callbacks(config: RunConfig, paths: RunPaths, stop: StopRequest,
                  progress: Progress | None, *, has_eval: bool) -> tuple[RunCallback, list[Any]]:
    """Our callback (trainer_log.jsonl, stop, checkpoint marks) and early stopping if asked."""
    from transformers import EarlyStoppingCallback

    callback = RunCallback(paths.trainer_log, stop, progress, config.training.save_total_limit)
    callbacks: list[Any] = [callback]
    if config.training.early_stopping_steps and has_eval:
        callbacks.append(EarlyStoppingCallback(config.training.early_stopping_steps))
    return callback, callbacks


def train_and_save(trainer: Trainer, callback: RunCallback, config: RunConfig, paths: RunPaths,
                   inputs: StageInputs | None = None, *, has_eval: bool = False
                   ) -> TrainResult:
    """Train (from the checkpoint `config` resumes, if any), evaluate, then save output/ whole:
    the weights or adapter, the tokenizer and the template the data was rendered with.

    `inputs`: a tokenising recipe's (its tokenizer and template are saved with the model);
    an encoder recipe passes none (sentence-transformers saves its own) and says `has_eval`.
    """
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    resume = resolve_resume(config.training.resume_from_checkpoint, paths.checkpoints,
                            config.output.overwrite_output_dir)
    if resume is not None:
        logger.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    step = trainer.state.global_step
    checkpoint = Path(trainer.args.output_dir) / f"checkpoint-{step}"
    if callback.stopped:
        return TrainResult("stopped", step, None, checkpoint, dict(result.metrics))
    metrics = dict(result.metrics)
    if (inputs.eval is not None) if inputs is not None else has_eval:
        metrics.update(trainer.evaluate())
    staging = shared_atomic_dir(paths.output)  # the output appears whole or not at all
    trainer.save_model(str(staging))  # every rank: DeepSpeed / FSDP gather the weights here
    if is_main_process():
        reference = staging / "ref"  # TRL's frozen copy of a continued adapter (dpo/kto)
        if (reference / "adapter_config.json").is_file():
            shutil.rmtree(reference)  # the output is the trained adapter alone
        if inputs is not None:
            inputs.tokenizer.save_pretrained(str(staging))
            atomic_write(staging / TEMPLATE_FILE,
                         json.dumps(inputs.train.template, indent=2) + "\n")
        commit_dir(staging, paths.output)
    return TrainResult("completed", step, paths.output, checkpoint, metrics)
