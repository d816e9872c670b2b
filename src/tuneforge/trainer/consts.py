"""Qianfan's `qianfan.trainer.consts`, from the pipeline core."""

from tuneforge.pipeline.consts import (
    ActionState,
    DeployPoolType,
    FinetuneStatus,
    PeftType,
    ServiceStatus,
    ServiceType,
)

__all__ = ["ActionState", "DeployPoolType", "FinetuneStatus", "PeftType", "ServiceStatus",
           "ServiceType"]
