"""tuneforge.trainer's Qianfan names: consts, events and configs land on RunConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.config import load_run_config
from tuneforge.errors import ConfigError
from tuneforge.trainer import (
    ActionState,
    CorpusConfig,
    CorpusConfigItem,
    DatasetConfig,
    DeployConfig,
    Event,
    EventHandler,
    PeftType,
    ServiceType,
    TrainConfig,
    dispatch_event,
)
from tuneforge.trainer.configs import run_values
from tuneforge.trainer.consts import FinetuneStatus, ServiceStatus


def test_consts_have_the_reference_members() -> None:
    assert [s.value for s in ActionState] == ["Preceding", "Running", "Done", "Error",
                                              "Stopped"]
    assert {s.value for s in FinetuneStatus} >= {  # plus the evaluate and deploy stages
        "Unknown", "DatasetLoading", "DatasetLoaded", "DatasetLoadFailed", "DatasetLoadStopped",
        "TrainCreated", "Training", "TrainFinished", "TrainFailed", "TrainStopped",
        "ModelPublishing", "ModelPublished", "ModelPublishFailed"}
    assert {s.value for s in ServiceStatus} == {"Unknown", "Created", "Deploying", "Deployed",
                                                "DeployFailed", "DeployStopped"}
    assert ActionState.Done == "Done" and ServiceType("Chat") is ServiceType.Chat


def test_the_guides_event_handler_receives_events() -> None:
    received: list[Event] = []

    class MyEventHandler(EventHandler):  # as the guide writes it
        def dispatch(self, event: Event) -> None:
            received.append(event)
            if event.action_state == ActionState.Error:
                received.append(Event(event.action_id, ActionState.Stopped, "seen"))

    handler = MyEventHandler()
    dispatch_event(handler, Event("train", ActionState.Running, "step 3/10", {"step": 3}))
    dispatch_event(handler, Event("train", state=ActionState.Error, data="boom"))
    dispatch_event(None, Event("x", ActionState.Done))  # no handler: nothing happens
    assert [e.action_state for e in received] == [ActionState.Running, ActionState.Error,
                                                  ActionState.Stopped]
    assert received[0].data == {"step": 3} and "Running" in str(received[0])
    EventHandler().dispatch(received[0])  # the base handler ignores events


def test_train_config_lands_on_canonical_fields() -> None:
    # the guide's spelling (epochs) and the reference's (epoch) are both accepted
    config = TrainConfig(epochs=1, batch_size=32, learning_rate=0.00002, max_seq_len=4096,
                         peft_type=PeftType.ALL, extras={"lora_rank": 16})
    assert config.epoch == 1 and TrainConfig(epoch=2).epoch == 2
    run = load_run_config(values=run_values(config))
    assert run.training.epochs == 1
    assert run.training.per_device_train_batch_size == 32
    assert run.training.learning_rate == pytest.approx(2e-5)
    assert run.data.max_length == 4096
    assert run.method.finetuning_type == "full"
    assert run.data.eval_split_ratio == 20  # Qianfan's default trainset_rate
    lora = load_run_config(values=TrainConfig(peft_type="lora").run_values())
    assert lora.method.finetuning_type == "lora"


def test_dataset_and_corpus_configs(tmp_path: Path) -> None:
    data = tmp_path / "sft.jsonl"
    data.write_text('{"instruction": "hi", "output": "hello"}\n')
    dataset = DatasetConfig(datasets=[str(data)], eval_split_ratio=10, sampling_rate=0.5)
    corpus = CorpusConfig(data_copy=True, corpus_configs=[
        CorpusConfigItem(corpus_type=str(data), corpus_proportion="1:2")])
    run = load_run_config(values=run_values(None, dataset, corpus))
    assert run.data.dataset == [str(data)] and run.data.eval_split_ratio == 10
    assert run.data.sampling_rate == 0.5
    assert run.data.corpus is not None and run.data.corpus.corpus_configs[0].amount(3, 100) == 6


def test_deploy_config_defaults_and_text2image() -> None:
    deploy = DeployConfig(name="svc", replicas=2)
    assert deploy.service_type == "Chat" and deploy.replicas == 2
    with pytest.raises(ConfigError, match="service_type.*Text2Image"):
        DeployConfig(service_type=ServiceType.Text2Image)


@pytest.mark.parametrize(("build", "field"), [
    (lambda: TrainConfig(batch_size=0), "batch_size"),
    (lambda: TrainConfig(peft_type="P-tuning"), "peft_type"),
    (lambda: TrainConfig(epochs="many"), "epoch"),
    (lambda: DatasetConfig(datasets=[]), "datasets"),
    (lambda: DeployConfig(replicas=0), "replicas"),
    (lambda: TrainConfig(learning_rat=0.1), "learning_rat"),
])
def test_bad_values_name_the_class_and_field(build: object, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()  # type: ignore[operator]
    assert caught.value.field is not None and field in caught.value.field
    assert caught.value.file in ("TrainConfig", "DatasetConfig", "DeployConfig")


def test_a_dataset_object_needs_a_reference() -> None:
    with pytest.raises(ConfigError, match=r"datasets\[0\]"):
        DatasetConfig(datasets=[object()]).run_values()


def test_the_held_out_share_comes_from_one_place(tmp_path: Path) -> None:
    dataset = DatasetConfig(datasets=["a.json"], eval_split_ratio=10)
    assert run_values(TrainConfig(), dataset)["eval_split_ratio"] == 10
    assert "trainset_rate" not in run_values(TrainConfig(), dataset)
    assert run_values(TrainConfig())["trainset_rate"] == 20
    assert run_values(TrainConfig(trainset_rate=10), dataset)["eval_split_ratio"] == 10
    with pytest.raises(ConfigError, match="one held-out share"):
        run_values(TrainConfig(trainset_rate=30), dataset)
