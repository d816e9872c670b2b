"""DDP on CPU: two gloo processes train one run; rank 0 alone writes it; a stop stops both.

Each test starts real processes (torchrun and two workers, each importing torch and
transformers), so each takes 10-30 s on the 2-core box; that is the point of them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuneforge.train.checkpoint import COMPLETE
from tuneforge.train.distributed import any_rank, from_main, is_main_process, main_process_first

RUN_FILES = {"config.yaml", "state.json", "events.jsonl", "trainer_log.jsonl", "train.log",
             "data_report.json", "checkpoints", "output"}


def sft_rows(tmp_path: Path) -> Path:
    path = tmp_path / "train.json"
    rows = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."}
            for i in range(16)]
    path.write_text(json.dumps(rows))
    return path


def flags(model: Path, data: Path, steps: int) -> list[str]:
    return ["--model_name_or_path", str(model), "--dataset", str(data),
            "--finetuning_type", "lora", "--lora_target", "q_proj,v_proj",
            "--per_device_train_batch_size", "2", "--logging_steps", "1", "--save_steps", "2",
            "--max_steps", str(steps), "--cutoff_len", "64", "--learning_rate", "5e-3",
            "--ddp_timeout", "60"]  # a rank left waiting in a collective fails the test fast


def env(home: Path) -> dict[str, str]:
    return {**os.environ, "TUNEFORGE_HOME": str(home)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def only_run_dir(home: Path) -> Path:
    runs = list((home / "runs").iterdir())
    assert len(runs) == 1, runs  # every rank trained into the one folder rank 0 named
    return runs[0]


def test_single_process_helpers_are_no_ops() -> None:
    assert is_main_process()
    assert any_rank(True) is True and any_rank(False) is False
    assert from_main("x") == "x"
    with main_process_first():
        pass


@pytest.mark.serial
def test_launcher_torchrun_trains_two_ranks_and_rank_zero_writes_once(
        tiny_llm_dir: Path, tmp_path: Path, home: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    command = [sys.executable, "-m", "tuneforge", "train", "--launcher", "torchrun",
               "--nproc_per_node", "2", *flags(tiny_llm_dir, sft_rows(tmp_path), 4)]
    result = subprocess.run(command, env=env(home), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    run = only_run_dir(home)
    assert f"run {run}: completed after 4 steps" in result.stdout
    assert {p.name for p in run.iterdir()} == RUN_FILES  # no temp folders, no STOP, no plots
    assert json.loads((run / "state.json").read_text())["status"] == "completed"
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["action_state"] for e in events] == ["Preceding", *["Running"] * 4, "Done"]
    # 16 rows, 2 per process per step, 2 processes: one epoch is 4 steps, each logged once
    log = [json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["current_steps"] for r in log] == [1, 2, 3, 4] and log[-1]["epoch"] == 1.0
    train_log = (run / "train.log").read_text()
    assert "2 processes, backend gloo" in train_log and train_log.count("step 1/4") == 1
    for step in (2, 4):
        files = {p.name for p in (run / "checkpoints" / f"checkpoint-{step}").iterdir()}
        assert {"rng_state_0.pth", "rng_state_1.pth", COMPLETE} <= files
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir))
    model = PeftModel.from_pretrained(base, str(run / "output"))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # LoRA B starts at zero
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[-1] == base.vocab_size


@pytest.mark.serial
def test_accelerate_launch_trains_two_cpu_ranks_into_one_run(
        tiny_llm_dir: Path, tmp_path: Path, home: Path) -> None:
    """`accelerate launch --multi_gpu -m tuneforge.train`, as docs/training.md shows it: on a
    machine without GPUs accelerate's multi-GPU launcher starts CPU processes (gloo)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
               "--main_process_port", str(free_port()),
               "-m", "tuneforge.train", *flags(tiny_llm_dir, sft_rows(tmp_path), 4)]
    result = subprocess.run(command, env={**env(home), "HF_HOME": str(tmp_path / "hf")},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    run = only_run_dir(home)
    assert {p.name for p in run.iterdir()} == RUN_FILES
    assert json.loads((run / "state.json").read_text())["status"] == "completed"
    log = [json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["current_steps"] for r in log] == [1, 2, 3, 4]  # rank 0 alone logged
    assert "2 processes, backend gloo" in (run / "train.log").read_text()
    files = {p.name for p in (run / "checkpoints" / "checkpoint-4").iterdir()}
    assert {"rng_state_0.pth", "rng_state_1.pth", COMPLETE} <= files
    assert (run / "output" / "adapter_model.safetensors").is_file()


@pytest.mark.serial
def test_plain_torchrun_module_agrees_on_the_run_dir_and_stops_every_rank(
        tiny_llm_dir: Path, tmp_path: Path, home: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", f"--master_port={free_port()}",
               "-m", "tuneforge.train", *flags(tiny_llm_dir, sft_rows(tmp_path), 4000)]
    process = subprocess.Popen(command, env=env(home), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    log = None
    while time.monotonic() < deadline and process.poll() is None:
        logs = list(home.glob("runs/*/trainer_log.jsonl"))
        if logs and len(logs[0].read_text().splitlines()) >= 3:
            log = logs[0]
            break
        time.sleep(0.2)
    assert log is not None, process.communicate()[1] if process.poll() is not None else "slow"
    (log.parent / "STOP").touch()  # seen by every rank; they agree on the step
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    run = only_run_dir(home)
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "stopped" and 3 <= state["global_step"] < 4000
    files = {p.name for p in (run / "checkpoints" / f"checkpoint-{state['global_step']}").iterdir()}
    assert {"rng_state_0.pth", "rng_state_1.pth", COMPLETE} <= files  # both ranks saved
