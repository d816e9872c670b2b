"""The causal-LM recipe on a tiny random model: run-dir layout, methods, resume, stop."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tuneforge.config import load_run_config
from tuneforge.data.summary import demo_dataset_dir
from tuneforge.errors import UnsupportedError
from tuneforge.settings import Settings
from tuneforge.train.checkpoint import COMPLETE
from tuneforge.train.run import train

LF_FIELDS = {"current_steps", "total_steps", "loss", "eval_loss", "lr", "epoch", "percentage",
             "elapsed_time", "remaining_time", "grad_norm", "tokens", "tokens_per_s"}


def config(model: Path, out: Path, **overrides: Any):
    values = {
        "model_name_or_path": str(model), "dataset": "forge_identity",
        "dataset_dir": str(demo_dataset_dir()), "output_dir": str(out), "max_steps": 6,
        "logging_steps": 1, "save_steps": 3, "per_device_train_batch_size": 2,
        "cutoff_len": 96, "learning_rate": 5e-3, "seed": 3, **overrides,
    }
    return load_run_config(values=values)


def log_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


def test_lora_run_writes_the_run_directory(tiny_llm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    outcome = train(config(tiny_llm_dir, out, plot_loss=True, val_size=0.2), Settings())
    assert outcome.result.status == "completed"
    assert {p.name for p in out.iterdir()} == {
        "config.yaml", "state.json", "trainer_log.jsonl", "train.log", "data_report.json",
        "events.jsonl", "checkpoints", "output", "training_loss.png", "training_eval_loss.png"}
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "checkpoint-3", "checkpoint-6"]
    assert {p.name for p in (out / "checkpoints" / "checkpoint-3").iterdir()} >= {
        "adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
        "trainer_state.json", COMPLETE}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json",
            "tuneforge_template.json"} <= {p.name for p in (out / "output").iterdir()}
    train_lines = [r for r in log_lines(out) if r["loss"] is not None]
    assert [r["current_steps"] for r in train_lines] == [1, 2, 3, 4, 5, 6]
    assert set(train_lines[0]) == LF_FIELDS
    assert train_lines[-1]["percentage"] == 100.0 and train_lines[-1]["tokens"] > 0
    assert any(r["eval_loss"] is not None for r in log_lines(out))
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "completed" and state["global_step"] == 6
    assert json.loads((out / "output" / "tuneforge_template.json").read_text())["template"]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    states = [e["action_state"] for e in events]
    assert states[0] == "Preceding" and states[-1] == "Done"
    assert states.count("Running") == len(log_lines(out))  # one per metrics record, in order
    running = [e["data"] for e in events if e["action_state"] == "Running"]
    assert running == log_lines(out)
    assert {"action_id", "description", "data", "time"} <= set(events[0])


def _trainable_changes(model_dir: Path, out: Path, finetuning_type: str, **extra: Any):
    import torch
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(str(model_dir)).state_dict()
    train(config(model_dir, out, finetuning_type=finetuning_type, max_steps=2, **extra),
          Settings())
    after = AutoModelForCausalLM.from_pretrained(str(out / "output")).state_dict()
    return {name: not torch.equal(before[name], after[name]) for name in before}


def test_full_finetuning_moves_every_parameter(tiny_llm_dir: Path, tmp_path: Path) -> None:
    moved = _trainable_changes(tiny_llm_dir, tmp_path / "full", "full")
    assert all(moved.values()), [n for n, m in moved.items() if not m]


def test_freeze_moves_only_the_last_layer(tiny_llm_dir: Path, tmp_path: Path) -> None:
    moved = _trainable_changes(tiny_llm_dir, tmp_path / "freeze", "freeze",
                               freeze_trainable_layers=1)
    assert {n for n, m in moved.items() if m} == {
        n for n in moved if n.startswith("model.layers.1.")}


def test_freeze_with_named_modules_moves_only_those_in_the_trained_layers(
        tiny_llm_dir: Path, tmp_path: Path) -> None:
    moved = _trainable_changes(tiny_llm_dir, tmp_path / "freeze", "freeze",
                               freeze_trainable_layers=1,
                               freeze_trainable_modules="mlp,input_layernorm")
    assert {n for n, m in moved.items() if m} == {
        n for n in moved if n.startswith(("model.layers.1.mlp.",
                                          "model.layers.1.input_layernorm."))}


@pytest.mark.parametrize("variant", ["use_dora", "use_rslora"])
def test_dora_and_rslora_train_and_save_their_variant(tiny_llm_dir: Path, tmp_path: Path,
                                                      variant: str) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / variant
    train(config(tiny_llm_dir, out, max_steps=2, lora_target="q_proj,v_proj",
                 **{variant: True}), Settings())
    adapter_config = json.loads((out / "output" / "adapter_config.json").read_text())
    assert adapter_config[variant] is True
    assert adapter_config["use_dora" if variant == "use_rslora" else "use_rslora"] is False
    adapter = load_file(str(out / "output" / "adapter_model.safetensors"))
    magnitudes = [k for k in adapter if "lora_magnitude_vector" in k]
    assert bool(magnitudes) == (variant == "use_dora")  # DoRA's learned per-column norms
    assert any(not torch.all(v == 0) for k, v in adapter.items() if "lora_B" in k)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir))
    model = PeftModel.from_pretrained(base, str(out / "output"))  # loads as its variant
    assert getattr(model.peft_config["default"], variant) is True


def test_lora_continues_the_adapter_it_is_given(tiny_llm_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    first = tmp_path / "first"
    train(config(tiny_llm_dir, first, max_steps=2, lora_target="q_proj,v_proj", lora_rank=4),
          Settings())
    second = tmp_path / "second"
    train(config(tiny_llm_dir, second, max_steps=2, lora_target="all", lora_rank=8,
                 adapter_name_or_path=str(first)), Settings())  # a run folder: its output/
    assert "continuing the LoRA adapter" in (second / "train.log").read_text()
    settings = json.loads((second / "output" / "adapter_config.json").read_text())
    assert settings["r"] == 4 and sorted(settings["target_modules"]) == ["q_proj", "v_proj"]
    before = load_file(str(first / "output" / "adapter_model.safetensors"))
    after = load_file(str(second / "output" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # trained on from there


def test_freeze_starts_from_the_base_with_the_adapter_merged(tiny_llm_dir: Path,
                                                             tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    lora = tmp_path / "lora"
    train(config(tiny_llm_dir, lora, max_steps=2, lora_target="q_proj"), Settings())
    frozen = tmp_path / "freeze"
    train(config(tiny_llm_dir, frozen, max_steps=2, finetuning_type="freeze",
                 freeze_trainable_layers=1, adapter_name_or_path=str(lora / "output")),
          Settings())
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir)),
                                       str(lora / "output")).merge_and_unload().state_dict()
    out = AutoModelForCausalLM.from_pretrained(str(frozen / "output")).state_dict()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir)).state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"  # layer 0 is frozen: merged, not trained
    assert torch.equal(out[name], merged[name]) and not torch.equal(out[name], base[name])


def test_a_missing_adapter_fails_before_any_work(tiny_llm_dir: Path, tmp_path: Path) -> None:
    from tuneforge.errors import NotFoundError

    out = tmp_path / "run"
    with pytest.raises(NotFoundError, match="adapter"):
        train(config(tiny_llm_dir, out, adapter_name_or_path=str(tmp_path / "nowhere")),
              Settings())
    assert not (out / "data_report.json").exists() and not (out / "checkpoints").exists()


def test_lora_trains_only_adapters_on_the_targets(tiny_llm_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "lora"
    train(config(tiny_llm_dir, out, max_steps=2, lora_target="q_proj,v_proj"), Settings())
    adapter = load_file(str(out / "output" / "adapter_model.safetensors"))
    assert adapter and all(("q_proj" in k or "v_proj" in k) and "lora_" in k for k in adapter)
    assert any(not torch.all(v == 0) for k, v in adapter.items() if "lora_B" in k)


def test_resume_after_stop_matches_uninterrupted_losses(tiny_llm_dir: Path, tmp_path: Path
                                                        ) -> None:
    whole = tmp_path / "whole"
    train(config(tiny_llm_dir, whole, save_steps=100), Settings())
    parted = tmp_path / "parted"

    def stop_at_3(record: dict[str, Any]) -> None:
        if record["current_steps"] == 3:
            (parted / "STOP").touch()

    first = train(config(tiny_llm_dir, parted, save_steps=100), Settings(), progress=stop_at_3)
    assert first.result.status == "stopped" and first.result.global_step == 3
    assert json.loads((parted / "state.json").read_text())["status"] == "stopped"
    assert (parted / "checkpoints" / "checkpoint-3" / COMPLETE).is_file()
    second = train(config(tiny_llm_dir, parted, save_steps=100), Settings())
    assert second.result.status == "completed" and second.result.global_step == 6
    expected = {r["current_steps"]: r["loss"] for r in log_lines(whole)}
    resumed = {r["current_steps"]: r["loss"] for r in log_lines(parted)}
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert resumed[step] == pytest.approx(expected[step], abs=1e-5)


def test_a_second_signal_ends_the_run_at_once(tiny_llm_dir: Path, tmp_path: Path) -> None:
    """Two real SIGTERMs to this process: the first asks for a checkpoint at the next step
    boundary, the second (before that boundary) ends the run there and then."""
    import os
    import signal
    import time

    out = tmp_path / "run"

    def signal_twice(record: dict[str, Any]) -> None:
        if record["current_steps"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the first handler runs (signals of one kind coalesce)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        train(config(tiny_llm_dir, out, max_steps=50, save_steps=100), Settings(),
              progress=signal_twice)
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "stopped" and state["error"] == "interrupted by a second signal"
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events[-1]["action_state"] == "Stopped"
    assert [r["current_steps"] for r in log_lines(out)] == [1, 2]  # no step after the signals
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())
    log = (out / "train.log").read_text()
    assert "SIGTERM: saving a checkpoint" in log and "second SIGTERM: stopping now" in log
    assert signal.getsignal(signal.SIGTERM) is before  # the run's handler was taken down


def test_half_written_checkpoint_is_never_picked(tiny_llm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(tiny_llm_dir, out, max_steps=3), Settings())
    broken = out / "checkpoints" / "checkpoint-9"
    shutil.copytree(out / "checkpoints" / "checkpoint-3", broken)
    (broken / COMPLETE).unlink()
    (broken / "optimizer.pt").write_bytes(b"half")
    outcome = train(config(tiny_llm_dir, out, max_steps=5), Settings())
    assert outcome.result.global_step == 5
    assert not broken.exists()
    assert "resuming from" in (out / "train.log").read_text()


def test_older_checkpoints_go_only_once_the_new_one_is_complete(tmp_path: Path) -> None:
    """The Trainer writes checkpoint-4 in place; only when the callback has marked it complete
    does checkpoint-2 go (save_total_limit=1), so a kill at any moment leaves one to resume."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from tuneforge.train.callback import RunCallback
    from tuneforge.train.stopping import StopRequest

    folder = tmp_path / "checkpoints"
    for step in (2, 4):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "optimizer.pt").write_bytes(b"state")
    (folder / "checkpoint-2" / COMPLETE).write_text('{"step": 2}\n')
    args = TrainingArguments(output_dir=str(folder), save_total_limit=None, report_to=[])
    callback = RunCallback(tmp_path / "log.jsonl", StopRequest(tmp_path / "STOP"),
                           save_total_limit=1)
    callback.on_save(args, TrainerState(global_step=4), TrainerControl())
    assert [p.name for p in folder.iterdir()] == ["checkpoint-4"]
    assert (folder / "checkpoint-4" / COMPLETE).is_file()


def test_resume_from_checkpoint_takes_a_path_or_auto(tiny_llm_dir: Path, tmp_path: Path
                                                     ) -> None:
    from tuneforge.errors import NotFoundError

    first = tmp_path / "first"
    train(config(tiny_llm_dir, first, max_steps=6, save_steps=2), Settings())
    # a path: another run's checkpoint starts a new folder at its step
    other = tmp_path / "other"
    outcome = train(config(tiny_llm_dir, other, max_steps=6,
                           resume_from_checkpoint=str(first / "checkpoints" / "checkpoint-4")),
                    Settings())
    assert outcome.result.global_step == 6
    assert [r["current_steps"] for r in log_lines(other)] == [5, 6]
    assert f"resuming from {first / 'checkpoints' / 'checkpoint-4'}" in (
        other / "train.log").read_text()
    # auto: the folder's newest complete checkpoint, even with overwrite_output_dir unset
    outcome = train(config(tiny_llm_dir, first, max_steps=8, save_steps=2,
                           resume_from_checkpoint="auto"), Settings())
    assert outcome.result.global_step == 8
    assert "checkpoint-6" in (first / "train.log").read_text()
    with pytest.raises(NotFoundError, match="checkpoint"):
        train(config(tiny_llm_dir, tmp_path / "third",
                     resume_from_checkpoint=str(tmp_path / "nowhere")), Settings())


def test_the_last_step_is_checkpointed_off_the_save_grid(tiny_llm_dir: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "run"
    outcome = train(config(tiny_llm_dir, out, max_steps=5, save_steps=2), Settings())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "checkpoint-2", "checkpoint-4", "checkpoint-5"]
    assert outcome.result.checkpoint == out / "checkpoints" / "checkpoint-5"
    assert (out / "checkpoints" / "checkpoint-5" / COMPLETE).is_file()


def test_warmup_and_report_to_reach_the_trainer(tiny_llm_dir: Path, tmp_path: Path) -> None:
    from tuneforge.train.arguments import training_arguments

    steps = training_arguments(config(tiny_llm_dir, tmp_path, warmup_steps=3, report_to="none"),
                               tmp_path, has_eval=False, device="cpu")
    assert steps.warmup_steps == 3 and steps.report_to == []
    ratio = training_arguments(config(tiny_llm_dir, tmp_path, warmup_ratio=0.1),
                               tmp_path, has_eval=False, device="cpu")
    assert ratio.warmup_steps == 0.1  # transformers 5 takes a ratio through warmup_steps
    out = tmp_path / "run"  # and the schedule follows: the lr climbs over the first 3 steps
    train(config(tiny_llm_dir, out, max_steps=6, warmup_steps=3,
                 lr_scheduler_type="constant_with_warmup"), Settings())
    peak = 5e-3
    assert [r["lr"] for r in log_lines(out)] == pytest.approx(
        [0, peak / 3, 2 * peak / 3, peak, peak, peak])


def test_report_to_a_sink_not_installed_or_unknown_fails_before_any_work(
        tiny_llm_dir: Path, tmp_path: Path) -> None:
    from transformers.integrations import get_available_reporting_integrations

    from tuneforge.errors import ConfigError

    out = tmp_path / "run"
    if "tensorboard" not in get_available_reporting_integrations():
        with pytest.raises(UnsupportedError, match="pip install tensorboard"):
            train(config(tiny_llm_dir, out, report_to="tensorboard"), Settings())
    with pytest.raises(ConfigError, match="got tensorbored"):
        train(config(tiny_llm_dir, out, report_to="tensorbored"), Settings())
    assert not out.exists()


def test_overwrite_output_dir_starts_afresh(tiny_llm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(tiny_llm_dir, out, max_steps=3), Settings())
    train(config(tiny_llm_dir, out, max_steps=3, overwrite_output_dir=True), Settings())
    assert "resuming from" not in (out / "train.log").read_text()


def test_pt_stage_trains_on_raw_text(tiny_llm_dir: Path, tmp_path: Path, write) -> None:
    text = write("corpus.txt", "The quick brown fox jumps over the lazy dog.\n" * 60)
    outcome = train(config(tiny_llm_dir, tmp_path / "pt", stage="pt", dataset=str(text),
                           cutoff_len=32, max_steps=2), Settings())
    assert outcome.result.status == "completed"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="these options work on a CUDA machine")
@pytest.mark.parametrize(("flags", "words"), [
    ({"quantization_bit": 4}, "quantization_bit=4"),
    ({"finetuning_type": "qlora"}, "QLoRA"),
    ({"fp16": True}, "fp16"),
])
def test_gpu_only_options_fail_before_any_work(tiny_llm_dir: Path, tmp_path: Path, flags,
                                               words) -> None:
    out = tmp_path / "run"
    with pytest.raises(UnsupportedError, match=words):
        train(config(tiny_llm_dir, out, **flags), Settings())
    assert not out.exists()  # refused before the run directory is made


def test_bf16_where_the_cpu_has_it_refused_where_it_does_not(tiny_llm_dir: Path,
                                                             tmp_path: Path) -> None:
    from tuneforge.train.hardware import SLOW_BF16, cpu_bf16_speedup

    if _has_cuda():
        pytest.skip("checks the CPU path")
    if cpu_bf16_speedup() < SLOW_BF16:
        with pytest.raises(UnsupportedError, match="no native bfloat16"):
            train(config(tiny_llm_dir, tmp_path / "bf16", bf16=True), Settings())
        assert not (tmp_path / "bf16" / "checkpoints").exists()
        return
    train(config(tiny_llm_dir, tmp_path / "bf16", bf16=True, max_steps=3), Settings())
    train(config(tiny_llm_dir, tmp_path / "fp32", bf16=False, max_steps=3), Settings())
    bf16 = [r["loss"] for r in log_lines(tmp_path / "bf16") if r["loss"] is not None]
    fp32 = [r["loss"] for r in log_lines(tmp_path / "fp32") if r["loss"] is not None]
    assert bf16 == pytest.approx(fp32, rel=0.05)  # the loss stays what it is in float32


def test_save_total_limit_keeps_the_newest_checkpoints(tiny_llm_dir: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(tiny_llm_dir, out, max_steps=6, save_steps=2, save_total_limit=2), Settings())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "checkpoint-4", "checkpoint-6"]


def test_early_stopping_on_eval_loss_keeps_the_best(tiny_llm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # a learning rate this large makes the eval loss worse after the first steps
    outcome = train(config(tiny_llm_dir, out, max_steps=30, save_steps=1, eval_steps=1,
                           val_size=0.2, learning_rate=3.0, early_stopping_steps=2,
                           load_best_model_at_end=True), Settings())
    assert outcome.result.status == "completed" and outcome.result.global_step < 30
    evals = [(r["current_steps"], r["eval_loss"]) for r in log_lines(out)
             if r["eval_loss"] is not None]
    best_step, best = min(evals, key=lambda e: e[1])
    assert outcome.result.global_step == best_step + 2  # patience of 2 evaluations
    state = json.loads((out / "checkpoints" / f"checkpoint-{outcome.result.global_step}" /
                        "trainer_state.json").read_text())
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    assert outcome.result.metrics["eval_loss"] == pytest.approx(best, rel=1e-4)
