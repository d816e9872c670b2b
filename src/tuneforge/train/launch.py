"""`tuneforge train --launcher torchrun`: the same command, run again as torchrun's processes.

The parent checks the machine, picks the run directory (so every process trains into the same
one: it adds --output_dir when none was given), starts `python -m torch.distributed.run ...
-m tuneforge.train <the same arguments>` in its own session and waits, then returns torchrun's
exit status. A SIGINT/SIGTERM to the parent becomes the run's STOP file, which every rank
checks and agrees on at each step (train/callback.py), so all of them checkpoint and stop at
the same step; a second signal terminates torchrun, which signals the processes and kills
them after its shutdown timeout (30 s; TORCH_ELASTIC_SHUTDOWN_TIMEOUT).
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tuneforge.config.run import RunConfig
from tuneforge.paths import RunPaths, atomic_write
from tuneforge.settings import Settings
from tuneforge.train.distributed import is_launched
from tuneforge.train.hardware import check_hardware
from tuneforge.train.run import RunOutcome, TrainResult, run_dir_for
from tuneforge.train.stopping import StopRequest

logger = logging.getLogger(__name__)
# LLaMA-Factory's `FORCE_TORCHRUN=1 llamafactory-cli train ...` reads these variables
TORCHRUN_ENV = {"NPROC_PER_NODE": "nproc_per_node", "NNODES": "nnodes",
                "NODE_RANK": "node_rank", "MASTER_ADDR": "master_addr",
                "MASTER_PORT": "master_port"}


def force_torchrun_flags(environ: Mapping[str, str]) -> list[str]:
    """LLaMA-Factory's FORCE_TORCHRUN=1 habit as flags (a face passes os.environ): launcher
    torchrun, plus NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT when set."""
    if environ.get("FORCE_TORCHRUN", "").lower() not in ("1", "true", "yes", "y"):
        return []
    flags = ["--launcher", "torchrun"]
    for variable, key in TORCHRUN_ENV.items():
        if variable in environ:
            flags += [f"--{key}", environ[variable]]
    return flags


def needs_launch(config: RunConfig) -> bool:
    """launcher=torchrun asked for, and this is not already one of the launched processes."""
    return config.distributed.launcher == "torchrun" and not is_launched()


def torchrun_command(config: RunConfig, args: Sequence[str]) -> list[str]:
    """`python -m torch.distributed.run <rendezvous> -m tuneforge.train <args>`."""
    d = config.distributed
    nproc = d.nproc_per_node or _gpu_count() or 1
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--nnodes={d.nnodes}", f"--node_rank={d.node_rank}"]
    if d.master_port is not None:  # without one (one node only) torchrun picks a free port
        command += [f"--master_addr={d.master_addr}", f"--master_port={d.master_port}"]
    return [*command, "-m", "tuneforge.train", *args]


def launch(config: RunConfig, args: Sequence[str], settings: Settings
           ) -> tuple[int, RunOutcome | None]:
    """Run `tuneforge.train <args>` under torchrun and wait: its exit status, and the run's
    outcome when it completed or stopped (rank 0 recorded it in state.json).

    Raises:
        UnsupportedError: the machine cannot do what `config` asks (checked once, here).
    """
    check_hardware(config)
    paths = run_dir_for(config, settings)
    if config.output.output_dir is None:
        args = [*args, "--output_dir", str(paths.root)]
    command = torchrun_command(config, args)
    logger.info("launching %s", shlex.join(command))
    # its own session: a terminal's Ctrl-C reaches only this process, which asks for a stop
    process = subprocess.Popen(command, start_new_session=True)
    code = _wait(process, paths)
    if code != 0:
        _record_failure(paths, code)
        return code, None
    return code, read_outcome(paths)


def _wait(process: subprocess.Popen[bytes], paths: RunPaths) -> int:
    stop = StopRequest(paths.stop_flag)
    with stop.installed():
        while True:
            try:
                code = process.poll()
                if code is not None:
                    return code
                if stop.signalled and not paths.stop_flag.exists():
                    # again if needed: rank 0 removes an old STOP file when it starts
                    paths.root.mkdir(parents=True, exist_ok=True)
                    paths.stop_flag.touch()
                time.sleep(0.2)
            except KeyboardInterrupt:  # a second signal
                process.terminate()


def _record_failure(paths: RunPaths, code: int) -> None:
    """A process crashed or was killed before rank 0 could record it: say so in state.json."""
    if not paths.state.is_file():
        return
    state = json.loads(paths.state.read_text(encoding="utf-8"))
    if state["status"] == "running":
        state.update(status="failed", updated=time.time(),
                     error=f"the training processes ended with exit status {code}")
        atomic_write(paths.state, json.dumps(state, indent=2, default=str) + "\n")


def read_outcome(paths: RunPaths) -> RunOutcome | None:
    """The outcome rank 0 wrote to state.json, when the run completed or stopped."""
    if not paths.state.is_file():
        return None
    state = json.loads(paths.state.read_text(encoding="utf-8"))
    if state["status"] not in ("completed", "stopped"):
        return None
    output, checkpoint = state["output"], state["checkpoint"]
    result = TrainResult(state["status"], state["global_step"],
                         Path(output) if output else None,
                         Path(checkpoint) if checkpoint else None, state["metrics"])
    plots = [plot for plot in (paths.loss_plot, paths.eval_loss_plot) if plot.is_file()]
    return RunOutcome(paths, result, plots)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()
