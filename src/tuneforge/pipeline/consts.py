"""States and kinds, with the names and values of Qianfan's `qianfan.trainer.consts`."""

from __future__ import annotations

from enum import StrEnum

from tuneforge.errors import UnsupportedError


class ActionState(StrEnum):
    """Where an action's execution is; every event carries one."""

    Preceding = "Preceding"  # before exec
    Running = "Running"  # during exec (with progress)
    Done = "Done"  # exec finished
    Error = "Error"  # exec failed
    Stopped = "Stopped"  # stop() was called


class FinetuneStatus(StrEnum):
    """The status of a fine-tuning pipeline, as Qianfan reports it."""

    Unknown = "Unknown"
    DatasetLoading = "DatasetLoading"
    DatasetLoaded = "DatasetLoaded"
    DatasetLoadFailed = "DatasetLoadFailed"
    DatasetLoadStopped = "DatasetLoadStopped"
    TrainCreated = "TrainCreated"
    Training = "Training"
    TrainFinished = "TrainFinished"
    TrainFailed = "TrainFailed"
    TrainStopped = "TrainStopped"
    ModelPublishing = "ModelPublishing"
    ModelPublished = "ModelPublished"
    ModelPublishFailed = "ModelPublishFailed"
    # beyond Qianfan: tuneforge's pipelines also evaluate and deploy
    Evaluating = "Evaluating"
    Evaluated = "Evaluated"
    EvaluateFailed = "EvaluateFailed"
    Deploying = "Deploying"
    Deployed = "Deployed"
    DeployFailed = "DeployFailed"


class ServiceStatus(StrEnum):
    """The status of a deployed service."""

    Unknown = "Unknown"
    Created = "Created"
    Deploying = "Deploying"
    Deployed = "Deployed"
    DeployFailed = "DeployFailed"
    DeployStopped = "DeployStopped"


class ServiceType(StrEnum):
    """What a deployed service answers."""

    Chat = "Chat"
    Completion = "Completion"
    Embedding = "Embedding"
    Text2Image = "Text2Image"

    def check_supported(self) -> ServiceType:
        """This type, if tuneforge serves it.

        Raises:
            UnsupportedError: Text2Image (tuneforge serves text models only).
        """
        if self is ServiceType.Text2Image:
            raise UnsupportedError("service_type Text2Image", "tuneforge serves text models "
                                   "(Chat, Completion, Embedding); it has no image models")
        return self


class DeployPoolType(StrEnum):
    """Qianfan's resource pools; locally every service runs on this machine."""

    PublicResource = "PublicResource"
    PrivateResource = "PrivateResource"


class PeftType(StrEnum):
    """Fine-tuning methods by Qianfan's names; the values are what `peft_type` accepts."""

    ALL = "ALL"  # every weight: method full
    LoRA = "LoRA"
    QLoRA = "QLoRA"
    Freeze = "Freeze"
