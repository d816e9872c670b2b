"""`--launcher torchrun`: the command built, FORCE_TORCHRUN, exit status, stop forwarding.

torchrun itself is replaced by a small Python child here; tests/train/test_distributed.py
runs the real one.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from tuneforge.cli.main import main
from tuneforge.config import load_run_config
from tuneforge.settings import Settings
from tuneforge.train import launch as launch_module
from tuneforge.train.launch import force_torchrun_flags, launch, needs_launch, torchrun_command


def test_torchrun_command_runs_tuneforge_train_with_the_same_arguments() -> None:
    config = load_run_config(overrides=["--launcher", "torchrun", "--nproc_per_node", "2"])
    assert torchrun_command(config, ["sft.yaml", "--max_steps", "3"]) == [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
        "--node_rank=0", "-m", "tuneforge.train", "sft.yaml", "--max_steps", "3"]


def test_torchrun_command_names_the_rendezvous_when_a_port_is_given() -> None:
    config = load_run_config(overrides=[
        "--launcher", "torchrun", "--nproc_per_node", "8", "--nnodes", "2", "--node_rank", "1",
        "--master_addr", "10.0.0.1", "--master_port", "29500", "--output_dir", "/shared/run"])
    command = torchrun_command(config, [])
    assert command[3:8] == ["--nproc_per_node=8", "--nnodes=2", "--node_rank=1",
                            "--master_addr=10.0.0.1", "--master_port=29500"]


def test_force_torchrun_env_becomes_flags_that_later_flags_override() -> None:
    environ = {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "4", "MASTER_PORT": "29501"}
    flags = force_torchrun_flags(environ)
    config = load_run_config(overrides=[*flags, "--nproc_per_node", "2"])
    assert config.distributed.launcher == "torchrun"
    assert config.distributed.nproc_per_node == 2 and config.distributed.master_port == 29501
    assert force_torchrun_flags({"NPROC_PER_NODE": "4"}) == []


def test_a_launched_process_never_launches_again(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_run_config(overrides=["--launcher", "torchrun"])
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert needs_launch(config)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not needs_launch(config)


def fake_torchrun(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    monkeypatch.setattr(launch_module, "torchrun_command",
                        lambda config, args: [sys.executable, "-c", code, *args])


def test_cli_exits_with_the_processes_status_and_records_the_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text(json.dumps({"status": "running"}))
    fake_torchrun(monkeypatch, "raise SystemExit(3)")
    with pytest.raises(SystemExit) as info:
        main(["train", "--launcher", "torchrun", "--dataset", "x", "--output_dir", str(run)])
    assert info.value.code == 3
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "failed" and "exit status 3" in state["error"]


def test_launch_names_the_run_folder_for_every_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    child = ("import sys, json, pathlib; out = pathlib.Path(sys.argv[sys.argv.index("
             "'--output_dir') + 1]); out.mkdir(parents=True); (out / 'state.json').write_text("
             "json.dumps({'status': 'completed', 'global_step': 2, 'output': str(out / 'output'),"
             " 'checkpoint': None, 'metrics': {'train_loss': 1.5}}))")
    fake_torchrun(monkeypatch, child)
    config = load_run_config(overrides=["--launcher", "torchrun", "--dataset", "x"])
    code, outcome = launch(config, ["--dataset", "x"], Settings())
    assert code == 0 and outcome is not None
    assert outcome.paths.root.parent == Settings().runs
    assert outcome.result.status == "completed" and outcome.result.global_step == 2


@pytest.mark.serial
def test_a_signal_to_the_launcher_becomes_the_stop_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    # the child ends cleanly once it sees STOP, as the ranks do after their checkpoint
    fake_torchrun(monkeypatch, f"import pathlib, time\nwhile not pathlib.Path({str(run)!r}, "
                               "'STOP').exists(): time.sleep(0.05)")
    config = load_run_config(overrides=["--launcher", "torchrun", "--dataset", "x",
                                        "--output_dir", str(run)])
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    code, outcome = launch(config, [], Settings())
    timer.join()
    assert code == 0 and (run / "STOP").is_file() and outcome is None
