"""Qianfan's `qianfan.trainer.configs`: TrainConfig, DatasetConfig, CorpusConfig(Item),
DeployConfig (defined in the pipeline core, which the actions share)."""

from tuneforge.pipeline.configs import (
    CorpusConfig,
    CorpusConfigItem,
    DatasetConfig,
    DeployConfig,
    TrainConfig,
    run_values,
)

__all__ = ["CorpusConfig", "CorpusConfigItem", "DatasetConfig", "DeployConfig", "TrainConfig",
           "run_values"]
