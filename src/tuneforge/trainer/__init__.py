"""The SDK face, with Qianfan's `qianfan.trainer` names: so far its constants (`consts`),
events (`event`) and configuration classes (`configs`); the trainers, pipeline and actions
come with the Trainer SDK issue."""

from tuneforge.trainer.configs import (
    CorpusConfig,
    CorpusConfigItem,
    DatasetConfig,
    DeployConfig,
    TrainConfig,
)
from tuneforge.trainer.consts import ActionState, PeftType, ServiceType
from tuneforge.trainer.event import Event, EventHandler, dispatch_event

__all__ = ["ActionState", "CorpusConfig", "CorpusConfigItem", "DatasetConfig", "DeployConfig",
           "Event", "EventHandler", "PeftType", "ServiceType", "TrainConfig", "dispatch_event"]
