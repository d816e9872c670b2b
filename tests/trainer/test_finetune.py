"""The Trainer SDK end to end on a tiny model: LLMFinetune's pipeline and events, stop and
resume (from another thread, and after a killed process), PostPreTrain -> LLMFinetune
chaining with lineage, dumps/loads, and the errors a user meets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tuneforge.data.summary import demo_dataset_dir
from tuneforge.dataset import Dataset
from tuneforge.errors import ConfigError, DataError, NotFoundError
from tuneforge.registry import Registry
from tuneforge.settings import Settings
from tuneforge.train.checkpoint import COMPLETE
from tuneforge.trainer import (
    DPO,
    ActionState,
    DatasetConfig,
    Event,
    EventHandler,
    LLMFinetune,
    Model,
    PostPreTrain,
    RewardModel,
    TrainConfig,
)

IDENTITY = demo_dataset_dir() / "forge_identity.json"


def tiny_config(**extras: Any) -> TrainConfig:
    return TrainConfig(epoch=1, batch_size=2, learning_rate=5e-3, max_seq_len=96,
                       peft_type="LoRA", extras={"max_steps": 4, "logging_steps": 1,
                                                 "save_steps": 2, "seed": 3} | extras)


def start_training(model: Path, home: Path, tmp_path: Path, run_id: str, *,
                   save_steps: int) -> subprocess.Popen[bytes]:
    """A separate Python process running a long LLMFinetune (run id `run_id`) that prints
    the trainer's status when run() returns."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        from tuneforge.trainer import LLMFinetune, TrainConfig
        trainer = LLMFinetune(train_type={str(model)!r}, dataset={str(IDENTITY)!r},
            train_config=TrainConfig(epoch=1, batch_size=2, learning_rate=5e-3,
                max_seq_len=96, extras={{"max_steps": 400, "logging_steps": 1,
                                         "save_steps": {save_steps}, "seed": 3}}),
            evaluate=False, run_id={run_id!r})
        trainer.run()
        print("status", trainer.status, flush=True)
    """))
    return subprocess.Popen([sys.executable, str(script)], env=os.environ | {
        "TUNEFORGE_HOME": str(home)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Collect(EventHandler):
    def __init__(self) -> None:
        self.events: list[Event] = []

    def dispatch(self, event: Event) -> None:
        self.events.append(event)


def test_llm_finetune_runs_the_pipeline_with_events_in_order(tiny_llm_dir: Path) -> None:
    handler = Collect()
    trainer = LLMFinetune(train_type=str(tiny_llm_dir), dataset=Dataset.load(data_file=IDENTITY),
                          train_config=tiny_config(), event_handler=handler)
    assert trainer.run() is trainer
    assert trainer.status == "ModelPublished"
    output = trainer.output
    assert output["task_id"] == output["job_id"] == trainer.run_id
    assert isinstance(output["model_id"], int) and isinstance(output["model_version_id"], int)
    assert [a for a in trainer.actions] == ["load_dataset", "train", "evaluate", "publish"]

    per_action: dict[str, list[str]] = {}
    for event in handler.events:
        per_action.setdefault(str(event.action_id), []).append(event.action_state.value)
    for action in trainer.actions:
        states = per_action[action]
        assert states[0] == "Preceding" and states[-1] == "Done"
        assert set(states[1:-1]) <= {"Running"}
    running = [e.data for e in handler.events
               if e.action_id == "train" and e.action_state is ActionState.Running]
    assert [r["step"] for r in running if r["loss"] is not None] == [1, 2, 3, 4]
    assert all(r["total"] == 4 for r in running)
    order = [e.action_id for e in handler.events if e.action_state is ActionState.Preceding]
    assert order == list(trainer.actions)
    pipeline_states = per_action[trainer.ppl.id]
    assert pipeline_states == ["Running", "Done"]

    recorded = [json.loads(line) for line in
                (trainer.paths.events).read_text().splitlines()]
    assert [(r["action_id"], r["action_state"]) for r in recorded] == [
        (e.action_id, e.action_state.value) for e in handler.events]

    log = trainer.get_log()
    assert [r["current_steps"] for r in log if r["loss"] is not None] == [1, 2, 3, 4]
    result = trainer.get_evaluate_result()
    assert result["samples"] > 0 and "loss" in result["rows"][0]["metrics"]
    version = Registry.open(Settings()).get_version(output["model_version_id"])
    assert version.adapter_path == output["output_dir"]
    assert version.metrics["evaluate"] == result["rows"][-1]["metrics"]
    assert version.lineage[0]["run_id"] == trainer.run_id
    assert version.lineage[0]["datasets"][0]["path"] == str(IDENTITY.resolve())


def test_a_custom_event_handler_as_in_the_guide_sees_the_error(
        tiny_llm_dir: Path, write, capsys: pytest.CaptureFixture[str]) -> None:
    class MyEventHandler(EventHandler):
        def dispatch(self, event: Event) -> None:
            print("receive:<", event)
            if event.action_state == ActionState.Error:
                print(f"action {event.action_id} error :{event.data}")

    bad = write("bad.jsonl", '{"instruction": "hi", "output": "there"}\n{"instruction": "x",\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        Dataset.load(data_file=bad)  # Dataset.load reads the file: it fails here already
    trainer = LLMFinetune(train_type=str(tiny_llm_dir), dataset=str(bad),
                          train_config=tiny_config(), event_handler=MyEventHandler())
    with pytest.raises(DataError) as caught:
        trainer.run()
    said = capsys.readouterr().out
    assert "receive:< Event(action_id='load_dataset', state=Preceding" in said
    assert "action load_dataset error :" in said and "bad.jsonl" in said
    assert "bad.jsonl" in str(caught.value) and ":2" in str(caught.value)
    assert trainer.status == "DatasetLoadFailed"
    assert isinstance(trainer.result[0], DataError)


def _adapter(run_output: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(Path(run_output) / "adapter_model.safetensors"))


def test_stop_from_another_thread_then_resume_matches_an_uninterrupted_run(
        tiny_llm_dir: Path) -> None:
    import torch

    config = tiny_config(max_steps=6, save_steps=1)
    whole = LLMFinetune(train_type=str(tiny_llm_dir), dataset=str(IDENTITY),
                        train_config=config, evaluate=False).run()

    reached = threading.Event()

    class StopAtTwo(EventHandler):
        def dispatch(self, event: Event) -> None:
            if event.action_id == "train" and event.action_state is ActionState.Running \
                    and event.data.get("step") == 2:
                reached.set()
                time.sleep(0.5)  # the other thread asks for the stop before step 3 starts

    parted = LLMFinetune(train_type=str(tiny_llm_dir), dataset=str(IDENTITY),
                         train_config=config, evaluate=False, event_handler=StopAtTwo())
    stopper = threading.Thread(target=lambda: reached.wait(60) and parted.stop())
    stopper.start()
    parted.run()
    stopper.join(60)
    assert parted.status == "TrainStopped"
    assert parted.ppl.current == "train"
    stopped_at = json.loads((parted.paths.state).read_text())["global_step"]
    assert 2 <= stopped_at < 6
    load_runs = parted.actions["load_dataset"]
    parted.resume()
    assert parted.status == "ModelPublished"
    assert load_runs.state is ActionState.Done
    events = [json.loads(line) for line in parted.paths.events.read_text().splitlines()]
    assert [e["action_id"] for e in events if e["action_state"] == "Preceding"].count(
        "load_dataset") == 1  # finished actions are not redone
    expected, got = _adapter(whole.output["output_dir"]), _adapter(parted.output["output_dir"])
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)


@pytest.mark.serial
def test_a_killed_process_is_resumed_by_run_id(tiny_llm_dir: Path, home: Path,
                                               tmp_path: Path) -> None:
    process = start_training(tiny_llm_dir, home, tmp_path, "killed-run", save_steps=2)
    checkpoints = home / "runs" / "killed-run" / "checkpoints"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if len(list(checkpoints.glob(f"checkpoint-*/{COMPLETE}"))) >= 2:
                break
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    trainer = LLMFinetune.load("killed-run")
    assert trainer.ppl.current == "train"
    assert trainer.actions["load_dataset"].state is ActionState.Done
    handler = Collect()
    trainer.register_event_handler(handler)
    trainer.ppl["train"].train_config = TrainConfig(**(trainer.train_config.model_dump(
        exclude_unset=True) | {"extras": trainer.train_config.extras | {"max_steps": 8}}))
    trainer.resume()
    assert trainer.status == "ModelPublished"
    assert trainer.get_log()[-1]["current_steps"] == 8
    assert "resuming from" in (home / "runs" / "killed-run" / "train.log").read_text()
    assert [e.action_id for e in handler.events if e.action_state is ActionState.Preceding
            ] == ["train", "publish"]


def test_post_pretrain_then_finetune_chain_with_lineage(tiny_llm_dir: Path, write) -> None:
    corpus = write("corpus.txt", "\n".join(f"Forge trains open models, line {i}."
                                           for i in range(40)) + "\n")
    ppt = PostPreTrain(train_type=str(tiny_llm_dir), dataset=Dataset.load(data_file=corpus),
                       train_config=tiny_config())
    ppt.run()
    assert ppt.output["stage"] == "pt"
    sft = LLMFinetune(
        train_type=str(tiny_llm_dir),
        dataset=DatasetConfig(datasets=[Dataset.load(data_file=IDENTITY)],
                              eval_split_ratio=20, sampling_rate=1.0),
        train_config=tiny_config(), name="qianfantrainer01", previous_trainer=ppt)
    sft.run()
    output = sft.output
    assert output["model_name"] == "qianfantrainer01"
    assert Path(output["base_model"]) == ppt.paths.root / "merged"
    model = Model(version_id=output["model_version_id"])
    lineage = model.record.lineage
    assert [step["run_id"] for step in lineage] == [sft.run_id, ppt.run_id]
    assert [step["stage"] for step in lineage] == ["sft", "pt"]
    assert lineage[1]["datasets"][0]["path"] == str(corpus.resolve())
    assert lineage[0]["datasets"][0]["name"] == "forge_identity"
    answer = model.exec({"messages": [{"role": "user", "content": "Who are you?"}]},
                        max_tokens=4)
    model.close()
    assert isinstance(answer["result"], str) and answer["usage"]["completion_tokens"] <= 4


def test_dumps_and_loads_round_trip(tiny_llm_dir: Path) -> None:
    trainer = LLMFinetune(train_type=str(tiny_llm_dir), dataset=str(IDENTITY),
                          train_config=tiny_config(max_steps=2), evaluate=False).run()
    again = LLMFinetune.load(trainer.run_id)
    assert again.status == trainer.status == "ModelPublished"
    assert again.output == trainer.output
    assert again.ppl.dumps() == trainer.ppl.dumps()
    model = Model(version_id=trainer.output["model_version_id"])
    copy = Model().loads(model.dumps())
    assert (copy.id, copy.version_id, copy.name) == (model.id, model.version_id, model.name)
    assert copy.record == model.record


def test_dataset_load_local_and_registered(write) -> None:
    path = write("qa.jsonl", '{"instruction": "a", "output": "b"}\n'
                 '{"instruction": "c", "output": "d"}\n')
    local = Dataset.load(data_file=path)
    assert len(local) == 2 and local.list()[1]["instruction"] == "c"
    saved = local.save(name="qa")
    assert saved.id.startswith("ds-")
    assert Dataset.load(name="qa").path == path.resolve()
    assert Dataset.load(dataset_id=saved.id).name == "qa"
    assert Dataset.load(qianfan_dataset_id=saved.id).path == path.resolve()
    written = Dataset.create_from_pyobj({"prompt": ["x", "y"]}).save(
        data_file=path.parent / "out.jsonl")
    assert [r["prompt"] for r in written.list()] == ["x", "y"]
    with pytest.raises(NotFoundError, match="nowhere.jsonl"):
        Dataset.load(data_file=path.parent / "nowhere.jsonl")
    with pytest.raises(NotFoundError, match="no-such-name"):
        Dataset.load(name="no-such-name")


def test_errors_name_what_is_wrong(tiny_llm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as unknown:
        LLMFinetune(train_type="ERNIE-Speed", dataset=str(IDENTITY))
    assert "train_type" in str(unknown.value) and "ERNIE-Speed" in str(unknown.value)
    with pytest.raises(ConfigError) as bad:
        LLMFinetune(train_type=str(tiny_llm_dir), dataset=str(IDENTITY),
                    train_config=TrainConfig(batch_size=0))
    assert "TrainConfig" in str(bad.value) and "batch_size" in str(bad.value)
    with pytest.raises(ConfigError, match="learning_rat"):
        LLMFinetune(train_type=str(tiny_llm_dir), dataset=str(IDENTITY),
                    learning_rat=0.1)
    missing = LLMFinetune(train_type=str(tiny_llm_dir), dataset=str(tmp_path / "gone.json"))
    with pytest.raises(NotFoundError, match="gone.json"):
        missing.run()
    assert missing.status == "DatasetLoadFailed"
    with pytest.raises(ConfigError) as extras:  # when the trainer is built
        LLMFinetune(train_type=str(tiny_llm_dir), dataset=str(IDENTITY),
                    train_config=TrainConfig(extras={"lora_rank": "big"}))
    assert "lora_rank" in str(extras.value)


@pytest.mark.serial
def test_launcher_torchrun_reports_the_ranks_progress_as_events(tiny_llm_dir: Path) -> None:
    handler = Collect()
    trainer = LLMFinetune(train_type=str(tiny_llm_dir), dataset=str(IDENTITY),
                          train_config=tiny_config(launcher="torchrun", nproc_per_node=2),
                          evaluate=False, event_handler=handler)
    trainer.run()
    assert trainer.status == "ModelPublished"
    steps = [e.data["step"] for e in handler.events if e.action_id == "train"
             and e.action_state is ActionState.Running and e.data.get("loss") is not None]
    assert steps == [1, 2, 3, 4]
    recorded = [json.loads(line) for line in trainer.paths.events.read_text().splitlines()]
    assert len(recorded) == len(handler.events)  # the ranks wrote no events of their own


PAIRS = [{"instruction": f"Question {i}?", "input": "", "chosen": f"A kind answer {i}.",
          "rejected": "No."} for i in range(8)]


@pytest.mark.parametrize(("trainer_class", "stage"), [(DPO, "dpo"), (RewardModel, "rm")])
def test_preference_trainers_publish_their_stage(trainer_class: type, stage: str,
                                                 tiny_llm_dir: Path, write) -> None:
    trainer = trainer_class(train_type=str(tiny_llm_dir),
                            dataset=str(write("pairs.json", PAIRS)),
                            train_config=tiny_config(max_steps=2))
    trainer.run()
    assert list(trainer.actions) == ["load_dataset", "train", "publish"]
    assert trainer.output["stage"] == stage and trainer.status == "ModelPublished"
    version = Model(version_id=trainer.output["model_version_id"]).record
    assert version.lineage[0]["stage"] == stage


@pytest.mark.serial
def test_ctrl_c_stops_the_training_and_resume_finishes(tiny_llm_dir: Path, home: Path,
                                                        tmp_path: Path) -> None:
    process = start_training(tiny_llm_dir, home, tmp_path, "interrupted", save_steps=50)
    log = home / "runs" / "interrupted" / "trainer_log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not (
            log.is_file() and log.read_text().count("\n") >= 2):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()[-2000:]
    assert "status TrainStopped" in out.decode()
    trainer = LLMFinetune.load("interrupted")
    assert trainer.status == "TrainStopped"
    stopped_at = json.loads(trainer.paths.state.read_text())["global_step"]
    assert (trainer.paths.checkpoints / f"checkpoint-{stopped_at}" / COMPLETE).is_file()
