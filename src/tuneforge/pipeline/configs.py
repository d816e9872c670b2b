"""Qianfan's `qianfan.trainer.configs`: TrainConfig, DatasetConfig, CorpusConfig(Item),
DeployConfig, with the reference's fields.

Each turns into RunConfig values under Qianfan's own names (`run_values()`); the alias table
(resources/aliases/qianfan.yaml) maps them onto the canonical fields, as for every face.
A bad value is a ConfigError naming the class and the field.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from tuneforge.config._base import config_error
from tuneforge.config.data import CorpusConfig, CorpusItem
from tuneforge.errors import ConfigError
from tuneforge.pipeline.consts import DeployPoolType, PeftType, ServiceType

CorpusConfigItem = CorpusItem  # Qianfan's name for one corpus to mix in

__all__ = ["CorpusConfig", "CorpusConfigItem", "DatasetConfig", "DeployConfig", "TrainConfig",
           "run_values"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, type(self).__name__) from None


class TrainConfig(_Config):
    """Training settings by Qianfan's names; `extras` takes any other RunConfig option by
    its LLaMA-Factory or canonical name (e.g. {"lora_rank": 16, "save_steps": 50})."""

    epoch: int | None = Field(default=None, ge=1, validation_alias=AliasChoices(
        "epoch", "epochs"), description="Passes over the data (the guide also writes epochs).")
    batch_size: int | None = Field(default=None, ge=1, description="Samples per step.")
    learning_rate: float | None = Field(default=None, gt=0, description="Peak learning rate.")
    max_seq_len: int | None = Field(default=None, ge=1, description="Tokens per sample.")
    peft_type: PeftType | None = Field(
        default=None, description="ALL (every weight), LoRA, QLoRA or Freeze.")
    trainset_rate: int = Field(default=20, ge=0, lt=100,
                               description="Percent of the data held out for evaluation.")
    extras: dict[str, Any] | None = Field(default=None, description="Other options.")

    @field_validator("peft_type", mode="before")
    @classmethod
    def _peft_name(cls, value: Any) -> Any:
        if isinstance(value, str):  # "lora", "all": the alias table's spellings too
            for member in PeftType:
                if value.lower() == member.value.lower():
                    return member
        return value

    def run_values(self) -> dict[str, Any]:
        """RunConfig values by Qianfan's names (extras last, so they win). `trainset_rate`
        only when set here: see `run_values` for how it meets DatasetConfig's split."""
        values = {k: v for k, v in self.model_dump(exclude={"extras"}).items()
                  if v is not None and (k != "trainset_rate" or k in self.model_fields_set)}
        return values | (self.extras or {})


class DatasetConfig(_Config):
    """The datasets to train on, the share held out for evaluation and a sampling rate."""

    datasets: list[Any] = Field(min_length=1, description="Datasets: `Dataset` objects, "
                                "dataset names, file or folder paths.")
    eval_split_ratio: float = Field(default=0, ge=0, lt=100,
                                    description="Percent held out for evaluation.")
    sampling_rate: float = Field(default=1.0, gt=0, le=1,
                                 description="Fraction of the data kept, sampled.")

    def run_values(self) -> dict[str, Any]:
        return {"datasets": [dataset_reference(d, f"datasets[{i}]")
                             for i, d in enumerate(self.datasets)],
                "eval_split_ratio": self.eval_split_ratio, "sampling_rate": self.sampling_rate}


class DeployConfig(_Config):
    """A service to start for a model: name, replicas (server processes) and what it serves.
    `pool_type` is accepted for Qianfan code; every service runs on this machine."""

    name: str = ""
    endpoint_prefix: str = ""
    description: str = ""
    replicas: int = Field(default=1, ge=1, description="Server processes.")
    pool_type: DeployPoolType = DeployPoolType.PrivateResource
    service_type: ServiceType = ServiceType.Chat
    extras: dict[str, Any] | None = Field(default=None, description="`tuneforge serve` "
                                          "options, e.g. {\"max_batch\": 8}.")

    @field_validator("service_type")
    @classmethod
    def _served(cls, value: ServiceType) -> ServiceType:
        try:
            return ServiceType(value).check_supported()
        except Exception as exc:  # an UnsupportedError, reported as this field's problem
            raise ValueError(str(exc)) from None


# extras that set the held-out share themselves (LLaMA-Factory's val_size, the canonical name)
SPLIT_KEYS = ("val_size", "eval_split_ratio")


def run_values(train_config: TrainConfig | None = None, dataset: DatasetConfig | None = None,
               corpus_config: CorpusConfig | None = None) -> dict[str, Any]:
    """The RunConfig values of a trainer's configs, as Qianfan combines them: the held-out
    share is DatasetConfig's `eval_split_ratio` when a DatasetConfig is given, else
    TrainConfig's `trainset_rate` (20 by default, unless `extras` set val_size).

    Raises:
        ConfigError: both set it, to different values.
    """
    train_config = train_config or TrainConfig()
    values = train_config.run_values()
    if dataset is not None:
        split = "trainset_rate" in train_config.model_fields_set
        if split and train_config.trainset_rate != dataset.eval_split_ratio:
            raise ConfigError.one(
                f"expected one held-out share, got trainset_rate {train_config.trainset_rate}"
                f" and DatasetConfig eval_split_ratio {dataset.eval_split_ratio}",
                field="trainset_rate", source="TrainConfig")
        values.pop("trainset_rate", None)
        values |= dataset.run_values()
    elif "trainset_rate" in train_config.model_fields_set or not any(
            key in (train_config.extras or {}) for key in SPLIT_KEYS):
        values.setdefault("trainset_rate", train_config.trainset_rate)
    if corpus_config is not None:
        values["corpus_config"] = corpus_config.model_dump()
    return values


def dataset_reference(dataset: Any, field: str = "dataset") -> str:
    """What RunConfig's `dataset` takes for a Dataset object, a name or a path.

    Raises:
        ConfigError: `dataset` is none of these.
    """
    if isinstance(dataset, str | os.PathLike):
        return os.fspath(dataset)
    reference = getattr(dataset, "reference", None)
    if isinstance(reference, str):
        return reference
    raise ConfigError.one(f"expected a Dataset, a dataset name or a path, got "
                          f"{type(dataset).__name__}", field=field, source="DatasetConfig")
