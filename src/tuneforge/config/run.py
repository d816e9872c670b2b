"""RunConfig: the one configuration every face builds, with every cross-field rule."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from tuneforge.config._base import Section
from tuneforge.config.data import DataConfig
from tuneforge.config.distributed import DistributedConfig
from tuneforge.config.model import ModelConfig
from tuneforge.config.output import OutputConfig
from tuneforge.config.train import MethodConfig, TrainingConfig

ENCODER_STAGES = ("embedding", "rerank")
SECTIONS: dict[str, type[Section]] = {
    "model": ModelConfig,
    "data": DataConfig,
    "method": MethodConfig,
    "training": TrainingConfig,
    "output": OutputConfig,
    "distributed": DistributedConfig,
}


class RunConfig(Section):
    """A whole run: model, data, method, training, output and distributed."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model.")
    data: DataConfig = Field(default_factory=DataConfig, description="The data.")
    method: MethodConfig = Field(default_factory=MethodConfig, description="Stage and method.")
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="The optimisation loop."
    )
    output: OutputConfig = Field(default_factory=OutputConfig, description="Outputs.")
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig, description="Several processes per run."
    )

    @model_validator(mode="after")
    def _mask_history_or_train_on_prompt(self) -> RunConfig:
        if self.data.mask_history and self.data.train_on_prompt:
            raise ValueError(
                "data.mask_history cannot be combined with data.train_on_prompt; "
                "set at most one of them"
            )
        return self

    @model_validator(mode="after")
    def _one_half_precision(self) -> RunConfig:
        if self.training.bf16 and self.training.fp16:
            raise ValueError("training.bf16 and training.fp16 are both set; choose one")
        return self

    @model_validator(mode="after")
    def _quantization_needs_qlora(self) -> RunConfig:
        if (
            self.model.quantization_bit is not None
            and self.method.finetuning_type != "lora"
            and self.method.finetuning_type != "qlora"
        ):
            raise ValueError(
                f"method.finetuning_type={self.method.finetuning_type} does not accept "
                f"model.quantization_bit={self.model.quantization_bit}; use finetuning_type=lora "
                "or qlora, or drop quantization_bit"
            )
        return self

    @model_validator(mode="after")
    def _eval_split_or_eval_dataset(self) -> RunConfig:
        if self.data.eval_split_ratio > 0 and self.data.eval_dataset:
            raise ValueError(
                "data.eval_split_ratio and data.eval_dataset are both set; "
                "hold out a split or name an eval dataset, not both"
            )
        return self

    @model_validator(mode="after")
    def _eval_settings_need_eval_data(self) -> RunConfig:
        # without held-out data the Trainer never evaluates: these would silently do nothing
        t = self.training
        asked = [name for name, value in (("training.early_stopping_steps",
                                           t.early_stopping_steps),
                                          ("training.load_best_model_at_end",
                                           t.load_best_model_at_end)) if value]
        if asked and self.data.eval_split_ratio <= 0 and not self.data.eval_dataset:
            raise ValueError(
                f"{' and '.join(asked)} need{'s' if len(asked) == 1 else ''} evaluation data; "
                "set data.eval_split_ratio "
                "(val_size) or data.eval_dataset, or drop them"
            )
        return self

    @model_validator(mode="after")
    def _interleave_probs_match(self) -> RunConfig:
        probs = self.data.interleave_probs
        if probs is not None and len(probs) != len(self.data.dataset):
            raise ValueError(
                f"data.interleave_probs has {len(probs)} values but data.dataset names "
                f"{len(self.data.dataset)} datasets; give one probability per dataset"
            )
        return self

    @model_validator(mode="after")
    def _preference_stages_learn_responses(self) -> RunConfig:
        # as in LLaMA-Factory, rm/dpo/kto/orpo score responses only; a learned prompt would
        # move the split between prompt and response that the preference losses rely on
        if self.data.train_on_prompt and self.method.stage in ("rm", "dpo", "kto", "orpo"):
            raise ValueError(
                f"method.stage={self.method.stage} does not accept data.train_on_prompt=true; "
                "preference stages score the responses only, so drop train_on_prompt"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _encoders_default_to_full(cls, data: Any) -> Any:
        # FlagEmbedding and sentence-transformers fine-tune every weight of a small encoder,
        # and the served encoders load whole models: full is these stages' default method
        method = data.get("method") if isinstance(data, dict) else None
        if isinstance(method, MethodConfig):
            if method.stage in ENCODER_STAGES and "finetuning_type" not in method.model_fields_set:
                return {**data, "method": method.model_copy(update={"finetuning_type": "full"})}
        elif isinstance(method, dict) and method.get("stage") in ENCODER_STAGES:
            return {**data, "method": {"finetuning_type": "full", **method}}
        return data

    @model_validator(mode="after")
    def _encoders_train_whole(self) -> RunConfig:
        if self.method.stage in ENCODER_STAGES and self.method.finetuning_type != "full":
            raise ValueError(
                f"method.stage={self.method.stage} trains the whole encoder; got "
                f"method.finetuning_type={self.method.finetuning_type}, expected full (or "
                "leave it out)")
        return self

    @model_validator(mode="after")
    def _encoders_take_no_adapter(self) -> RunConfig:
        if self.method.stage in ENCODER_STAGES and self.model.adapter_name_or_path:
            raise ValueError(
                f"method.stage={self.method.stage} trains a whole encoder and takes no "
                "model.adapter_name_or_path; drop it"
            )
        return self

    @model_validator(mode="after")
    def _launch_settings_need_launcher(self) -> RunConfig:
        d = self.distributed
        if d.launcher == "none" and ((d.nproc_per_node or 1) > 1 or d.nnodes > 1):
            raise ValueError(
                f"distributed.nproc_per_node={d.nproc_per_node} and distributed.nnodes="
                f"{d.nnodes} need distributed.launcher=torchrun; set it, or start tuneforge "
                "under torchrun / accelerate launch yourself and drop them"
            )
        return self

    @model_validator(mode="after")
    def _node_rank_below_nnodes(self) -> RunConfig:
        d = self.distributed
        if d.node_rank >= d.nnodes:
            raise ValueError(
                f"distributed.node_rank={d.node_rank} is not below distributed.nnodes="
                f"{d.nnodes}; number the machines 0 .. {d.nnodes - 1}"
            )
        return self

    @model_validator(mode="after")
    def _several_nodes_need_master_port(self) -> RunConfig:
        d = self.distributed
        if d.nnodes > 1 and d.master_port is None:
            raise ValueError(
                f"distributed.nnodes={d.nnodes} needs distributed.master_port (and "
                "distributed.master_addr): every machine must meet at the same address"
            )
        return self

    @model_validator(mode="after")
    def _several_nodes_need_output_dir(self) -> RunConfig:
        if self.distributed.nnodes > 1 and not self.output.output_dir:
            raise ValueError(
                f"distributed.nnodes={self.distributed.nnodes} needs output.output_dir: every "
                "machine must name the same run folder (on storage they share)"
            )
        return self

    @model_validator(mode="after")
    def _deepspeed_or_fsdp(self) -> RunConfig:
        if self.distributed.deepspeed and self.distributed.fsdp:
            raise ValueError(
                "distributed.deepspeed and distributed.fsdp are both set; shard with one of them"
            )
        return self

    @model_validator(mode="after")
    def _fsdp_config_needs_fsdp(self) -> RunConfig:
        if self.distributed.fsdp_config and not self.distributed.fsdp:
            raise ValueError(
                "distributed.fsdp_config is set but distributed.fsdp is not; set fsdp: true "
                "or drop fsdp_config"
            )
        return self

    @property
    def effective_quantization_bit(self) -> int | None:
        """qlora without an explicit bit width means 4-bit, as in the QLoRA paper."""
        if self.method.finetuning_type == "qlora":
            return self.model.quantization_bit or 4
        return self.model.quantization_bit
