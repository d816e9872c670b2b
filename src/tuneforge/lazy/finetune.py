"""LazyLLM's fine-tuning frameworks, mapped onto the one RunConfig.

`TrainableModule.finetune_method((finetune.llamafactory, {...}))` names a framework and its
arguments as LazyLLM users write them; each framework here only translates names:

- `llamafactory`: LLaMA-Factory's argument names (learning_rate, cutoff_len, max_samples,
  val_size, per_device_train_batch_size, num_train_epochs, lora_rank, stage, ...), which
  RunConfig's alias table already knows; stage sft unless given.
- `alpacalora` (also `peft`): alpaca-lora's finetune.py names (micro_batch_size, batch_size
  as the global batch, num_epochs, lora_r, lora_target_modules, val_set_size,
  train_on_inputs); LoRA.
- `flagembedding`: FlagEmbedding's names (train_group_size, temperature,
  query_instruction_for_retrieval, query_max_len, passage_max_len, ...) for the embedding
  stage, or rerank when the base model is a reranker or `stage: rerank` is given.
- `auto`: flagembedding for an embedding model or reranker, llamafactory otherwise.

`launcher` (any framework) is taken out and returned separately. Arguments that only steer
a framework's own machinery (FlagEmbedding's negatives_cross_device, say) are accepted with
a warning that they have no effect here; an unknown one fails when the config is built,
naming it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuneforge.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Framework:
    """A fine-tuning framework's argument names, translated to RunConfig's."""

    name: str
    stage: str | None = None  # None: sft, or what the arguments say
    renames: Mapping[str, str] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def options(self, kwargs: Mapping[str, Any], *, encoder: str | None = None
                ) -> tuple[dict[str, Any], Any]:
        """(RunConfig options, launcher or None) for this framework's `kwargs`; `encoder`:
        what the base model is ("embedding", "rerank" or None for a causal LM)."""
        options = dict(self.fixed)
        launcher = None
        for key, value in kwargs.items():
            if key == "launcher":
                launcher = value
            elif key in self.ignored:
                message = (f"finetune.{self.name}: {key}={value!r} has no effect in tuneforge "
                           "(it steers that framework's own machinery); ignored")
                logger.warning(message)
                warnings.warn(message, UserWarning, stacklevel=3)
            else:
                options[self.renames.get(key, key)] = value
        stage = options.get("stage") or self.stage
        if self.name == "flagembedding":
            stage = stage or ("rerank" if encoder == "rerank" else "embedding")
            lengths = [options.pop(k) for k in ("query_max_len", "passage_max_len")
                       if k in options]
            if lengths:
                options["max_length"] = max(lengths)
        options["stage"] = stage or "sft"
        if self.name == "alpacalora" and "batch_size" in options:
            micro = int(options.get("per_device_train_batch_size", 4))
            total = int(options.pop("batch_size"))
            if total % micro:
                raise ConfigError.one(f"expected batch_size a multiple of micro_batch_size "
                                      f"{micro}, got {total}", field="batch_size",
                                      source=f"finetune.{self.name}")
            options["gradient_accumulation_steps"] = total // micro
        return options, launcher


llamafactory = Framework("llamafactory")
alpacalora = Framework(
    "alpacalora", stage="sft",
    renames={"micro_batch_size": "per_device_train_batch_size", "num_epochs": "epochs",
             "lora_r": "lora_rank", "lora_target_modules": "lora_target",
             "val_set_size": "val_size", "train_on_inputs": "train_on_prompt"},
    ignored=frozenset({"group_by_length", "wandb_project", "wandb_run_name", "wandb_watch",
                       "wandb_log_model", "prompt_template_name", "add_eos_token"}),
    fixed={"finetuning_type": "lora"})
peft = alpacalora
flagembedding = Framework(
    "flagembedding",
    ignored=frozenset({"pad_to_multiple_of", "dataloader_drop_last", "negatives_cross_device",
                       "normalize_embeddings", "sentence_pooling_method",
                       "query_instruction_format", "passage_instruction_for_retrieval",
                       "passage_instruction_format", "same_dataset_within_batch",
                       "small_threshold", "drop_threshold", "knowledge_distillation",
                       "kd_loss_type", "overwrite_output_dir"}))
auto = Framework("auto")

FRAMEWORKS = {f.name: f for f in (llamafactory, alpacalora, flagembedding, auto)} | {
    "peft": peft, "alpaca-lora": alpacalora, "alpaca_lora": alpacalora}


def framework(value: Any, encoder: str | None) -> Framework:
    """The Framework `value` names (an object here, or its name); `auto` resolved by the
    base model's kind.

    Raises:
        ConfigError: an unknown framework.
    """
    found = value if isinstance(value, Framework) else FRAMEWORKS.get(str(value).lower())
    if found is None:
        raise ConfigError.one(f"expected one of finetune.{', finetune.'.join(FRAMEWORKS)}, "
                              f"got {value!r}", field="finetune_method",
                              source="TrainableModule")
    if found is auto:
        return flagembedding if encoder else llamafactory
    return found
