"""Qianfan's `qianfan.trainer.actions`, run on this machine (see tuneforge.pipeline.actions)."""

from tuneforge.pipeline.actions import (
    DeployAction,
    EvaluateAction,
    LoadDataSetAction,
    ModelPublishAction,
    TrainAction,
)

__all__ = ["DeployAction", "EvaluateAction", "LoadDataSetAction", "ModelPublishAction",
           "TrainAction"]
