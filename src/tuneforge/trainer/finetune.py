"""Qianfan's `qianfan.trainer.finetune` and its siblings: the trainers."""

from tuneforge.pipeline.trainers import DPO, LLMFinetune, PostPreTrain, RewardModel

__all__ = ["DPO", "LLMFinetune", "PostPreTrain", "RewardModel"]
