"""RunConfig: the one configuration every face builds, with every cross-field rule."""

from __future__ import annotations

from pydantic import Field, model_validator

from tuneforge.config._base import Section
from tuneforge.config.data import DataConfig
from tuneforge.config.model import ModelConfig
from tuneforge.config.output import OutputConfig
from tuneforge.config.train import MethodConfig, TrainingConfig

SECTIONS: dict[str, type[Section]] = {
    "model": ModelConfig,
    "data": DataConfig,
    "method": MethodConfig,
    "training": TrainingConfig,
    "output": OutputConfig,
}


class RunConfig(Section):
    """A whole run: model, data, method, training and output."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model.")
    data: DataConfig = Field(default_factory=DataConfig, description="The data.")
    method: MethodConfig = Field(default_factory=MethodConfig, description="Stage and method.")
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="The optimisation loop."
    )
    output: OutputConfig = Field(default_factory=OutputConfig, description="Outputs.")

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
    def _interleave_probs_match(self) -> RunConfig:
        probs = self.data.interleave_probs
        if probs is not None and len(probs) != len(self.data.dataset):
            raise ValueError(
                f"data.interleave_probs has {len(probs)} values but data.dataset names "
                f"{len(self.data.dataset)} datasets; give one probability per dataset"
            )
        return self

    @property
    def effective_quantization_bit(self) -> int | None:
        """qlora without an explicit bit width means 4-bit, as in the QLoRA paper."""
        if self.method.finetuning_type == "qlora":
            return self.model.quantization_bit or 4
        return self.model.quantization_bit
