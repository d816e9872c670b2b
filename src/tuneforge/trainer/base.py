"""Qianfan's `qianfan.trainer.base`, from the pipeline core."""

from tuneforge.pipeline.base import BaseAction, Pipeline

__all__ = ["BaseAction", "Pipeline"]
