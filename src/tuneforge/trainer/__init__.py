"""The SDK face, with Qianfan's `qianfan.trainer` names: trainers (LLMFinetune, PostPreTrain,
RewardModel, DPO, EmbeddingFinetune, RerankerFinetune), the actions they chain, Model and
Service, configs, constants and events. Everything runs on this machine; ids are the local
registry's."""

from tuneforge.pipeline.actions import (
    DeployAction,
    EvaluateAction,
    LoadDataSetAction,
    ModelPublishAction,
    TrainAction,
)
from tuneforge.pipeline.base import BaseAction, Pipeline
from tuneforge.pipeline.configs import (
    CorpusConfig,
    CorpusConfigItem,
    DatasetConfig,
    DeployConfig,
    TrainConfig,
)
from tuneforge.pipeline.consts import (
    ActionState,
    DeployPoolType,
    FinetuneStatus,
    PeftType,
    ServiceStatus,
    ServiceType,
)
from tuneforge.pipeline.event import Event, EventHandler, dispatch_event
from tuneforge.pipeline.services import Model, Service
from tuneforge.pipeline.trainers import (
    DPO,
    EmbeddingFinetune,
    LLMFinetune,
    PostPreTrain,
    RerankerFinetune,
    RewardModel,
    Trainer,
)

__all__ = ["DPO", "ActionState", "BaseAction", "CorpusConfig", "CorpusConfigItem",
           "DatasetConfig", "DeployAction", "DeployConfig", "DeployPoolType", "EmbeddingFinetune",
           "EvaluateAction", "Event", "EventHandler", "FinetuneStatus", "LLMFinetune",
           "LoadDataSetAction", "Model", "ModelPublishAction", "PeftType", "Pipeline",
           "PostPreTrain", "RerankerFinetune", "RewardModel", "Service", "ServiceStatus",
           "ServiceType", "TrainAction", "TrainConfig", "Trainer", "dispatch_event"]
