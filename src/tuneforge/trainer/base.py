"""Qianfan's `qianfan.trainer.base`, from the pipeline core."""

from tuneforge.pipeline.base import BaseAction, Pipeline
from tuneforge.pipeline.trainers import Trainer

__all__ = ["BaseAction", "Pipeline", "Trainer"]
