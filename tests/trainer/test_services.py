"""publish -> deploy -> exec over a real `tuneforge serve` process on 127.0.0.1, services
listed, reused and stopped; Model.batch_run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.data.summary import demo_dataset_dir
from tuneforge.dataset import Dataset
from tuneforge.errors import ConfigError
from tuneforge.trainer import (
    DeployConfig,
    LLMFinetune,
    Model,
    Service,
    ServiceStatus,
    ServiceType,
    TrainConfig,
)
from tuneforge.trainer.model import ChatCompletion, Completion

IDENTITY = demo_dataset_dir() / "forge_identity.json"


@pytest.fixture(scope="module")
def published(tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny LoRA fine-tune run and published under its own home (module scope)."""
    home = tmp_path_factory.mktemp("services-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNEFORGE_HOME", str(home))
        trainer = LLMFinetune(
            train_type=str(tiny_llm_dir), dataset=str(IDENTITY), name="identity",
            train_config=TrainConfig(epoch=1, batch_size=2, learning_rate=5e-3,
                                     max_seq_len=96, extras={"max_steps": 2}),
            evaluate=False)
        trainer.run()
    return {"home": home, "output": trainer.output}


@pytest.fixture
def in_home(published: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("TUNEFORGE_HOME", str(published["home"]))
    return published


@pytest.mark.serial
def test_publish_deploy_exec_over_a_real_server(in_home: dict) -> None:
    model = Model(version_id=in_home["output"]["model_version_id"])
    assert model.publish() is model and model.name == "identity"
    service = model.deploy(DeployConfig(name="identity-svc", replicas=2,
                                        service_type=ServiceType.Chat))
    try:
        assert service.status is ServiceStatus.Deployed
        assert len(service.endpoints) == 2 and service.endpoint.startswith("http://127.0.0.1:")
        messages = [{"role": "user", "content": "Who are you?"}]
        first = service.exec({"messages": messages}, max_tokens=4, temperature=0)
        second = model.exec({"messages": messages}, max_tokens=4, temperature=0)
        assert first["result"] == second["result"]  # both replicas answer alike (greedy)
        assert first["body"]["model"] == "identity-svc"
        assert isinstance(service.get_res(), ChatCompletion)
        res = service.get_res().do(messages=messages, max_tokens=2)
        assert res["body"]["usage"]["completion_tokens"] <= 2
        completion = Completion(service.endpoints[1], "identity-svc").do(
            prompt="Hello", max_tokens=2)
        assert isinstance(completion["result"], str)
        # deploying the same version again reuses the running service
        again = Model(version_id=model.version_id).deploy(DeployConfig(name="identity-svc"))
        assert again.id == service.id
        assert [s.id for s in Service.list(status=ServiceStatus.Deployed)] == [service.id]
        loaded = Service().loads(service.dumps())
        assert (loaded.id, loaded.endpoints) == (service.id, service.endpoints)
        with pytest.raises(ConfigError, match="messages"):
            service.exec({"prompt": "hi"})
    finally:
        service.stop()
    assert service.status is ServiceStatus.DeployStopped
    assert Service(id=service.id).status is ServiceStatus.DeployStopped


def test_batch_run_answers_every_record_in_process(in_home: dict, write) -> None:
    questions = write("q.jsonl", '{"instruction": "Who are you?"}\n'
                      '{"messages": [{"role": "user", "content": "Hi"}]}\n')
    model = Model(version_id=in_home["output"]["model_version_id"])
    try:
        answered = model.batch_run(Dataset.load(data_file=questions), max_tokens=3)
    finally:
        model.close()
    rows = answered.list()
    assert len(rows) == 2 and all(isinstance(r["output"], str) for r in rows)
    assert rows[0]["instruction"] == "Who are you?"


def test_deploy_config_refuses_what_it_cannot_serve() -> None:
    with pytest.raises(ConfigError, match="service_type"):
        DeployConfig(service_type="Text2Image")
    with pytest.raises(ConfigError, match="replicas"):
        DeployConfig(replicas=0)
