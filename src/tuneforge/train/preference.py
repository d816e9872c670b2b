"""The preference recipes on TRL 1.x: reward model (rm), DPO (dpo) and KTO (kto).

Each reads top to bottom like sft.py: prepare the stage (the data rendered with *our*
template, so chosen and rejected are scored under exactly the prompt format used at
serving), load the model, apply the method, build TRL's trainer over those token ids, train,
save. The loss is TRL's `compute_loss`; TRL's own tokenisation is skipped (`_pretokenized`).

ORPO is not offered: TRL 1.x moved ORPOTrainer to `trl.experimental` ("may change or be
removed without notice") and its data path re-tokenises text with its own template, so
stage orpo and pref_loss=orpo are refused with UnsupportedError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from tuneforge.config.run import RunConfig
from tuneforge.data.tokenize import IGNORE_INDEX, TokenizedData
from tuneforge.errors import ConfigError, UnsupportedError
from tuneforge.paths import RunPaths
from tuneforge.settings import Settings
from tuneforge.train.arguments import training_arguments
from tuneforge.train.callback import Progress
from tuneforge.train.methods import apply_method, load_model, policy_and_adapter
from tuneforge.train.stage import TrainResult, prepare_stage, run_callbacks, train_and_save
from tuneforge.train.stopping import StopRequest

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)


def run_reward_model(config: RunConfig, paths: RunPaths, settings: Settings, stop: StopRequest,
                     progress: Progress | None = None) -> TrainResult:
    """rm: a sequence classifier with one output, trained to score chosen above rejected."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    inputs = prepare_stage(config, paths, settings)
    torch.manual_seed(config.training.seed)  # the score head is new: its init follows the seed
    model = load_model(config, inputs.model_dir, AutoModelForSequenceClassification,
                       num_labels=1)
    model = apply_method(model, config.method, task_type="SEQ_CLS", adapter=inputs.adapter)
    has_eval = inputs.eval is not None
    args = training_arguments(config, paths.checkpoints, has_eval=has_eval, device=inputs.device,
                              cls=RewardConfig, max_length=config.data.max_length,
                              trust_remote_code=config.model.trust_remote_code)
    callback, callbacks = run_callbacks(config, paths, stop, progress, has_eval=has_eval)
    trainer = _pretokenized(RewardTrainer)(
        model=model, args=args, train_dataset=reward_rows(inputs.train),
        eval_dataset=reward_rows(inputs.eval) if inputs.eval is not None else None,
        processing_class=inputs.tokenizer, callbacks=callbacks,
    )
    return train_and_save(trainer, callback, config, paths, inputs)


def run_dpo(config: RunConfig, paths: RunPaths, settings: Settings, stop: StopRequest,
            progress: Progress | None = None) -> TrainResult:
    """dpo: raise the policy's log-odds of chosen over rejected relative to a frozen reference,
    the model with its LoRA adapter disabled (full/freeze: a second copy, loaded by TRL)."""
    from trl import DPOConfig, DPOTrainer

    if config.method.pref_loss == "orpo":
        raise UnsupportedError("method.pref_loss=orpo", _ORPO_REASON,
                               hint="use pref_loss sigmoid, hinge or ipo, or stage kto")
    return _run_preference(config, paths, settings, stop, progress, DPOTrainer, DPOConfig,
                           pair_rows, loss_type=[config.method.pref_loss])


def _run_preference(config: RunConfig, paths: RunPaths, settings: Settings, stop: StopRequest,
                    progress: Progress | None, trainer_cls: Any, args_cls: Any,
                    rows: Callable[[Any], Any], **args_extra: Any) -> TrainResult:
    """dpo and kto: the policy, TRL's arguments and trainer fed our tokenised `rows`."""
    inputs = prepare_stage(config, paths, settings)
    model, peft_config = _policy(config, inputs)
    has_eval = inputs.eval is not None
    args = training_arguments(config, paths.checkpoints, has_eval=has_eval, device=inputs.device,
                              cls=args_cls, beta=config.method.pref_beta,
                              max_length=config.data.max_length,
                              trust_remote_code=config.model.trust_remote_code, **args_extra)
    callback, callbacks = run_callbacks(config, paths, stop, progress, has_eval=has_eval)
    trainer = _pretokenized(trainer_cls)(
        model=model, args=args, train_dataset=rows(inputs.train),
        eval_dataset=rows(inputs.eval) if inputs.eval is not None else None,
        processing_class=inputs.tokenizer, callbacks=callbacks, peft_config=peft_config,
    )
    return train_and_save(trainer, callback, config, paths, inputs)


def _policy(config: RunConfig, inputs: Any) -> tuple[Any, Any]:
    """The causal LM to train and the LoRA config TRL applies (None: train it as it is)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(config.training.seed)
    model = load_model(config, inputs.model_dir, AutoModelForCausalLM)
    return policy_and_adapter(model, config.method, inputs.adapter)


def run_kto(config: RunConfig, paths: RunPaths, settings: Settings, stop: StopRequest,
            progress: Progress | None = None) -> TrainResult:
    """kto: single responses labelled desirable or not, each weighed against a KL estimate
    from mismatched (prompt, response) pairs of its batch; reference as in dpo."""
    from trl import KTOConfig, KTOTrainer

    batch = config.training.per_device_train_batch_size
    if batch < 2:  # TRL's KL term pairs each prompt with a neighbour's response in its batch
        raise ConfigError.one(f"stage kto needs at least 2 samples per batch, got {batch}",
                              field="training.per_device_train_batch_size")
    seed = config.training.seed
    return _run_preference(config, paths, settings, stop, progress, KTOTrainer, KTOConfig,
                           lambda data: kto_rows(data, batch, seed))


_ORPO_REASON = ("TRL 1.x keeps ORPOTrainer in trl.experimental (unstable, may be removed "
                "without notice), and tuneforge trains only on TRL's stable trainers")


def _pretokenized(trainer_cls: type) -> Any:
    """`trainer_cls` (a TRL 1.x trainer) taking our token ids as they are.

    TRL tokenises in `_prepare_dataset` (trl/trainer/dpo_trainer.py, kto_trainer.py and
    reward_trainer.py in https://github.com/huggingface/trl/tree/v1.16.0): it applies the
    tokenizer's own chat template and appends eos to each completion. Our rows are already
    rendered with the run's template, cut to max_length and masked as LLaMA-Factory does, so
    that step returns them unchanged. TRL's per-trainer telemetry ping is skipped too: a
    training run never reaches the network.
    """

    class PreTokenized(trainer_cls):  # type: ignore[misc, valid-type]
        def _prepare_dataset(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
            return dataset

        def _send_telemetry(self) -> None:
            return None

    PreTokenized.__name__ = PreTokenized.__qualname__ = f"PreTokenized{trainer_cls.__name__}"
    return PreTokenized


def _prompt_length(ids: np.ndarray, labels: np.ndarray) -> int:
    """Where the learned response starts: the first token with a label."""
    learned = np.flatnonzero(labels != IGNORE_INDEX)
    return int(learned[0]) if len(learned) else len(ids)


def pair_rows(data: TokenizedData) -> Dataset:
    """Pairwise rows as TRL's DPO collator takes them: prompt_ids, chosen_ids, rejected_ids.

    The two sides share the prompt up to their first learned token (data/tokenize.py renders
    and cuts them together); should their ids part earlier, the completions start there, as
    TRL's own tokenisation does.
    """
    from datasets import Dataset

    rows: dict[str, list[list[int]]] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    cols = data.columns
    for i in range(len(data)):
        chosen, rejected = cols["chosen_input_ids"][i], cols["rejected_input_ids"][i]
        start = min(_prompt_length(chosen, cols["chosen_labels"][i]),
                    _prompt_length(rejected, cols["rejected_labels"][i]))
        differs = np.flatnonzero(chosen[:start] != rejected[:start])
        start = int(differs[0]) if len(differs) else start
        rows["prompt_ids"].append(chosen[:start].tolist())
        rows["chosen_ids"].append(chosen[start:].tolist())
        rows["rejected_ids"].append(rejected[start:].tolist())
    return Dataset.from_dict(rows)


def reward_rows(data: TokenizedData) -> Dataset:
    """Pairwise rows as TRL's reward collator takes them: whole chosen_ids and rejected_ids."""
    from datasets import Dataset

    cols = data.columns
    return Dataset.from_dict({
        "chosen_ids": [cols["chosen_input_ids"][i].tolist() for i in range(len(data))],
        "rejected_ids": [cols["rejected_input_ids"][i].tolist() for i in range(len(data))],
    })


def kto_rows(data: TokenizedData, batch_size: int, seed: int) -> Dataset:
    """KTO rows as TRL's collator takes them: prompt_ids, completion_ids, label and the
    KL_completion_ids TRL pairs each prompt with (the previous row's completion in its batch).

    TRL reads KTO rows in order, so they are shuffled here once, by `seed`, and the KL pairs
    are made within the batches it will read.
    """
    from datasets import Dataset

    order = np.random.default_rng(seed).permutation(len(data))
    prompts, completions, labels = [], [], []
    for i in order.tolist():
        ids, learned = data.columns["input_ids"][i], data.columns["labels"][i]
        start = _prompt_length(ids, learned)
        prompts.append(ids[:start].tolist())
        completions.append(ids[start:].tolist())
        labels.append(bool(data.flags["kto_tag"][i]))
    mismatched: list[list[int]] = []
    for begin in range(0, len(completions), batch_size):
        part = completions[begin:begin + batch_size]
        mismatched += part[-1:] + part[:-1]
    return Dataset.from_dict({"prompt_ids": prompts, "completion_ids": completions,
                              "label": labels, "KL_completion_ids": mismatched})
