"""The SDK face, with Qianfan's `qianfan.trainer` names: so far its constants (`consts`),
events (`event`), configuration classes (`configs`), BaseAction and Pipeline (`base`); the
trainers and the fine-tuning actions come with the Trainer SDK issue."""

from tuneforge.trainer.base import BaseAction, Pipeline
from tuneforge.trainer.configs import (
    CorpusConfig,
    CorpusConfigItem,
    DatasetConfig,
    DeployConfig,
    TrainConfig,
)
from tuneforge.trainer.consts import ActionState, PeftType, ServiceType
from tuneforge.trainer.event import Event, EventHandler, dispatch_event

__all__ = ["ActionState", "BaseAction", "CorpusConfig", "CorpusConfigItem", "DatasetConfig",
           "DeployConfig", "Event", "EventHandler", "PeftType", "Pipeline", "ServiceType",
           "TrainConfig", "dispatch_event"]
