"""`tuneforge train`: the seeds' flags, one-line errors, and a real SIGTERM mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuneforge.cli.main import main
from tuneforge.data.summary import demo_dataset_dir


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code), out, err


def lf_flags(model: Path, out: Path, steps: int) -> list[str]:
    return [
        "--stage", "sft", "--model_name_or_path", str(model), "--do_train",
        "--dataset", "forge_identity", "--dataset_dir", str(demo_dataset_dir()),
        "--finetuning_type", "lora", "--lora_target", "q_proj,v_proj", "--output_dir", str(out),
        "--overwrite_output_dir", "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1", "--lr_scheduler_type", "cosine",
        "--logging_steps", "1", "--save_steps", "2", "--learning_rate", "5e-3",
        "--num_train_epochs", "1.0", "--max_steps", str(steps), "--cutoff_len", "96",
        "--plot_loss",
    ]


def test_train_takes_llamafactory_flags_and_says_where_things_are(tiny_llm_dir, tmp_path,
                                                                  capsys) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run(["train", *lf_flags(tiny_llm_dir, out, 2)], capsys)
    assert code == 0
    assert "completed" in stdout
    assert str(out / "output") in stdout and "training_loss.png" in stdout
    assert f"metrics:    {out / 'trainer_log.jsonl'}" in stdout
    # the bar's last state (a terminal redraws it in place): steps, loss and tokens/s
    last = json.loads((out / "trainer_log.jsonl").read_text().splitlines()[-1])
    assert re.search(rf"training .* 2/2 loss {last['loss']:.4f} \d+ tok/s", stderr)


def test_train_takes_the_rest_service_script_flags(tiny_llm_dir, tmp_path, capsys,
                                                   monkeypatch) -> None:
    """Run as the seed runs scripts/train_lora.py: from the project folder, whose
    config/models.yaml holds the LoRA defaults (no file named on the command line)."""
    data = tmp_path / "train.json"
    data.write_text(json.dumps([{"text": "用户：你好\n助手：你好！有什么可以帮助你的吗？"}] * 8,
                               ensure_ascii=False))
    project = tmp_path / "project"
    (project / "config").mkdir(parents=True)
    (project / "config" / "models.yaml").write_text(
        "lora_config:\n  r: 4\n  lora_alpha: 8\n  target_modules:\n    - q_proj\n"
        "    - v_proj\n  lora_dropout: 0.05\n  bias: none\nmodels:\n  - Qwen/Qwen2-7B\n")
    monkeypatch.chdir(project)
    out = tmp_path / "my_task"
    script_flags = ["--base_model", str(tiny_llm_dir), "--dataset_path", str(data),
                    "--output_dir", str(out), "--num_epochs", "1", "--batch_size", "4",
                    "--learning_rate", "2e-4", "--dataset_format", "json"]
    code, _, _ = run(["train", *script_flags, "--stage", "pt", "--cutoff_len", "32"], capsys)
    assert code == 0
    adapter = json.loads((out / "output" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    assert adapter["lora_alpha"] == 8 and adapter["lora_dropout"] == 0.05
    # a flag wins over the file; LLaMA-Factory's flags alone do not read the file
    code, shown, _ = run(["config", "show", *script_flags, "--lora_rank", "2"], capsys)
    assert code == 0 and "lora_rank: 2\n" in shown and "lora_alpha: 8\n" in shown
    code, shown, _ = run(["config", "show", "--model_name_or_path", str(tiny_llm_dir)], capsys)
    assert code == 0 and "lora_rank: 8\n" in shown and "lora_alpha: null\n" in shown


# full-flow-training-llama-factory.zh.md's `accelerate launch src/train_bash.py` flags, verbatim
SEED_FLAGS = (Path(__file__).parents[1] / "assets" / "llamafactory_seed_flags.txt").read_text(
    encoding="utf-8").split()


def test_seed_command_as_written_says_what_to_drop_then_trains(tiny_llm_dir, tmp_path, capsys,
                                                               monkeypatch) -> None:
    import shutil

    import torch

    if torch.cuda.is_available():
        pytest.skip("quantization works on a CUDA machine")
    monkeypatch.chdir(tmp_path)  # the seed runs in its project folder: ./model, data/, output
    code, _, err = run(["train", *SEED_FLAGS], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "quantization_bit=4 (QLoRA: bitsandbytes) and fp16 (float16 mixed precision): " \
           "need a CUDA GPU" in err
    assert "drop --quantization_bit and --fp16" in err  # both at once, before any work
    assert not (tmp_path / "output").exists()
    # once the model and data are local (the seed's ./Llama-2-7b-chat-hf and its `mm` entry
    # of data/dataset_info.json) and the two flags dropped, the rest trains as written
    shutil.copytree(tiny_llm_dir, tmp_path / "Llama-2-7b-chat-hf")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mm.json").write_text(json.dumps(
        [{"instruction": f"Say {i}.", "input": "", "output": f"{i}."} for i in range(8)]))
    (tmp_path / "data" / "dataset_info.json").write_text('{"mm": {"file_name": "mm.json"}}')
    local = [f for i, f in enumerate(SEED_FLAGS) if f not in ("--quantization_bit", "--fp16")
             and SEED_FLAGS[i - 1] != "--quantization_bit"]
    code, stdout, err = run(["train", *local], capsys)
    assert code == 0, err
    assert "completed after 2 steps" in stdout  # 8 rows, 8 x 4 a step: one step an epoch
    assert (tmp_path / "output" / "output" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "output" / "training_loss.png").is_file()


@pytest.mark.parametrize(("flag", "words"), [
    (["--learning_rat", "1e-4"], "did you mean 'learning_rate'"),
    (["--lora_rank", "0"], "lora_rank: expected greater than or equal to 1"),
])
def test_bad_flags_are_one_line_exit_2(tmp_path, flag, words, capsys) -> None:
    code, _, err = run(["train", "--dataset", "x", *flag], capsys)
    assert code == 2 and words in err and err.count("\n") == 1


@pytest.mark.serial
def test_sigterm_checkpoints_and_stops_then_resume_finishes(tiny_llm_dir, tmp_path,
                                                            home) -> None:
    out = tmp_path / "out"
    def flags(steps: int) -> list[str]:
        return [f for f in lf_flags(tiny_llm_dir, out, steps) if f != "--overwrite_output_dir"]

    env = {**os.environ, "TUNEFORGE_HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-m", "tuneforge", "train", *flags(400)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "trainer_log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not log.exists() or
                                           len(log.read_text().splitlines()) < 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "stopped"
    step = state["global_step"]
    assert 3 <= step < 400
    assert (out / "checkpoints" / f"checkpoint-{step}" / "tuneforge_complete.json").is_file()
    resumed = subprocess.run([sys.executable, "-m", "tuneforge", "train", *flags(step + 2)],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "state.json").read_text())["global_step"] == step + 2


def test_signals_show_on_the_terminal_and_a_second_exits_130(tiny_llm_dir, tmp_path, capsys,
                                                              monkeypatch) -> None:
    """Real SIGTERMs to this process at step 2, sent from the progress bar's callback (the one
    point the CLI lets a test act between steps): the notices show above the bar, and the
    second signal ends `tuneforge train` with one line and exit 130."""
    from contextlib import contextmanager

    from tuneforge.cli import render

    real_progress = render.training_progress

    @contextmanager
    def signalling_progress():
        with real_progress() as update:
            def hook(record):
                update(record)
                if record["current_steps"] == 2:
                    for _ in range(2):
                        os.kill(os.getpid(), signal.SIGTERM)
                        time.sleep(0.05)  # the handler runs (signals of one kind coalesce)
            yield hook

    monkeypatch.setattr(render, "training_progress", signalling_progress)
    out = tmp_path / "out"
    code, stdout, stderr = run(["train", *lf_flags(tiny_llm_dir, out, 50)], capsys)
    assert code == 130 and stdout == ""
    assert "SIGTERM: saving a checkpoint at the next step" in stderr
    assert "second SIGTERM: stopping now" in stderr and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "error: stopped at once by a second signal, without a checkpoint; the same command "
        "resumes from the last complete one")
    assert json.loads((out / "state.json").read_text())["status"] == "stopped"


@pytest.mark.serial
def test_sigkill_resumes_from_the_last_complete_checkpoint(tiny_llm_dir, tmp_path, home) -> None:
    out = tmp_path / "out"
    flags = [f for f in lf_flags(tiny_llm_dir, out, 400) if f != "--overwrite_output_dir"]
    flags[flags.index("--save_steps") + 1] = "2"
    env = {**os.environ, "TUNEFORGE_HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-m", "tuneforge", "train", *flags], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = out / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(checkpoints.glob("*/tuneforge_complete.json")):
        time.sleep(0.1)
    process.kill()  # SIGKILL: no handler runs, a checkpoint may be half-written
    process.wait(timeout=30)
    complete = sorted(int(p.parent.name.split("-")[1])
                      for p in checkpoints.glob("*/tuneforge_complete.json"))
    assert complete and json.loads((out / "state.json").read_text())["status"] == "running"
    flags[flags.index("--max_steps") + 1] = str(max(complete) + 2)
    resumed = subprocess.run([sys.executable, "-m", "tuneforge", "train", *flags], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    log = (out / "train.log").read_text()
    assert f"resuming from {checkpoints / f'checkpoint-{max(complete)}'}" in log
    assert json.loads((out / "state.json").read_text())["status"] == "completed"
    assert all((p / "tuneforge_complete.json").is_file() for p in checkpoints.iterdir())
