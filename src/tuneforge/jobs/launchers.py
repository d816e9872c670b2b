"""Launchers: where the worker of a prepared run (`python -m tuneforge.jobs.worker RUN_DIR`)
runs, and how to follow it, stop it and read its log. LazyLLM's names:

- `local()` / `empty()`: a subprocess on this machine; its log is RUN_DIR/worker.log.
- `torchrun(nproc=N)`: the same, with the training inside the worker under torchrun.
- `slurm(partition)`: a batch job (RUN_DIR/slurm.sbatch, log RUN_DIR/slurm-<id>.out).
- `ray(address)`: a Ray job, through Ray's job submission API (`pip install 'ray[default]'`).
- `remote()` picks one from TUNEFORGE_DEFAULT_LAUNCHER; `sco()` is slurm with a warning.

A run directory is written by `FinetuneTrainer.prepare()`; `launch(run_dir, settings)` starts
its worker and returns a `LaunchedRun`. Afterwards `FinetuneTrainer.load(run_dir).status`
says how the training ended. `distributed()` gives the RunConfig values (flat names) that
make the training inside the worker use every process the launcher asked for; the caller
merges them into the trainer's config before `prepare()`.

The factory functions read the environment (TUNEFORGE_*) when they are called; the
launcher classes take every value as an argument.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError, NotFoundError, StateError, UnsupportedError
from tuneforge.paths import TRAINER_FILE
from tuneforge.settings import Settings

logger = logging.getLogger(__name__)

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = (
    "pending", "running", "completed", "failed", "cancelled")
FINAL = (COMPLETED, FAILED, CANCELLED)
WORKER_LOG = "worker.log"
SBATCH_FILE = "slurm.sbatch"
# Seconds Ray waits after its SIGTERM before a SIGKILL (its own default is 3 s): time for the
# worker to finish the step and write a checkpoint.
RAY_STOP_WAIT_S = 120
# Settings the worker must share with the launching process, as TUNEFORGE_* variables.
SETTINGS_ENV = ("home", "db_url", "runs_dir", "models_dir", "datasets_dir", "cache_dir")
ONE_NODE_HINT = ("the pipeline runs on one node; to train across nodes start "
                 "`torchrun --nnodes N ... -m tuneforge.train` on every node (docs/training.md, "
                 "'Several machines')")


class LaunchTimeoutError(StateError, TimeoutError):
    """`LaunchedRun.wait(timeout=...)` ran out of time; the run goes on."""


class LaunchedRun:
    """A worker that a launcher started: its id, state, log, and a graceful cancel."""

    id: str

    def state(self) -> str:
        """pending, running, completed, failed or cancelled: the launcher's view."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Ask the worker to stop at the next step (it saves a checkpoint first)."""
        raise NotImplementedError

    def logs(self) -> str:
        """The worker's output so far ('' before it started)."""
        raise NotImplementedError

    def wait(self, timeout: float | None = None, poll_s: float = 1.0) -> str:
        """Wait for a final state (completed, failed or cancelled) and return it.

        Raises:
            LaunchTimeoutError: still not final after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while (state := self.state()) not in FINAL:
            if deadline is not None and time.monotonic() >= deadline:
                raise LaunchTimeoutError(
                    f"{type(self).__name__} {self.id}: still {state} after {timeout} s",
                    hint="wait() again, or cancel() it")
            pause = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            time.sleep(max(pause, 0.0))
        return state


class Launcher:
    """Where a run's worker runs, with how many nodes, processes per node and GPUs."""

    name = "launcher"

    def __init__(self, nnode: int = 1, nproc: int = 1, ngpus: int | None = None, *,
                 sync: bool = True, python: str | None = None) -> None:
        source = f"launchers.{self.name}"
        self.nnode = _positive("nnode", nnode, source)
        self.nproc = _positive("nproc", nproc, source)
        self.ngpus = None if ngpus is None else _positive("ngpus", ngpus, source)
        if self.nnode > 1:  # the worker runs the whole pipeline, on one node
            raise UnsupportedError(f"{source}(nnode={self.nnode})", "expected nnode=1",
                                   hint=ONE_NODE_HINT)
        self.sync = sync  # the caller waits for the run (LazyLLM's flag); launch() never does
        self.python = python or sys.executable

    def __repr__(self) -> str:
        return (f"launchers.{self.name}(nnode={self.nnode}, nproc={self.nproc}, "
                f"ngpus={self.ngpus})")

    def distributed(self) -> dict[str, Any]:
        """RunConfig values for the training inside the worker: torchrun when nproc > 1."""
        return {"launcher": "torchrun", "nproc_per_node": self.nproc} if self.nproc > 1 else {}

    def launch(self, run_dir: Path, settings: Settings) -> LaunchedRun:
        """Start the worker of `run_dir` (written by FinetuneTrainer.prepare())."""
        raise NotImplementedError

    def worker_command(self, run_dir: Path) -> list[str]:
        """The command that runs the run to its end."""
        return [self.python, "-m", "tuneforge.jobs.worker", str(run_dir)]


class LocalLauncher(Launcher):
    """A subprocess on this machine; stdout and stderr go to RUN_DIR/worker.log."""

    name = "local"

    def launch(self, run_dir: Path, settings: Settings) -> LocalRun:
        run_dir = _prepared(run_dir)
        with (run_dir / WORKER_LOG).open("ab") as log:  # appended: a relaunch keeps the past
            process = subprocess.Popen(self.worker_command(run_dir), stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=os.environ | settings_env(settings))
        logger.info("run %s: worker pid %d", run_dir.name, process.pid)
        return LocalRun(process, run_dir / WORKER_LOG)


class TorchrunLauncher(LocalLauncher):
    """local(), with the training inside the worker always under torchrun."""

    name = "torchrun"

    def distributed(self) -> dict[str, Any]:
        return {"launcher": "torchrun", "nproc_per_node": self.nproc, "nnodes": self.nnode}


class LocalRun(LaunchedRun):
    """A worker subprocess of this process; its id is the pid."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process, self.log, self.id = process, log, str(process.pid)
        self.cancelled = False

    def state(self) -> str:
        code = self.process.poll()
        if code is None:
            return RUNNING
        if self.cancelled:  # the worker exits 0 after a graceful stop
            return CANCELLED
        return COMPLETED if code == 0 else FAILED

    def cancel(self) -> None:
        if self.process.poll() is None:
            self.cancelled = True
            self.process.send_signal(signal.SIGTERM)

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") \
            if self.log.is_file() else ""


# -- Slurm -------------------------------------------------------------------------------------

# Every job state Slurm documents (squeue(1) "JOB STATE CODES"), to ours.
SLURM_STATES = {
    **dict.fromkeys(("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                     "RESV_DEL_HOLD"), PENDING),
    **dict.fromkeys(("RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING",
                     "STAGE_OUT", "RESIZING"), RUNNING),
    "COMPLETED": COMPLETED,
    "CANCELLED": CANCELLED,
    **dict.fromkeys(("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                     "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"), FAILED),
}


def slurm_state(raw: str) -> str:
    """Our state for what squeue, sacct or scontrol print ('CANCELLED by 1000' included)."""
    word = raw.split()[0].rstrip("+") if raw.strip() else ""
    if word not in SLURM_STATES:
        logger.warning("unknown Slurm job state %r: taken as running", raw)
        return RUNNING
    return SLURM_STATES[word]


class SlurmLauncher(Launcher):
    """A Slurm batch job on one node: writes RUN_DIR/slurm.sbatch and submits it."""

    name = "slurm"

    def __init__(self, partition: str | None = None, nnode: int = 1, nproc: int = 1,
                 ngpus: int | None = None, *, sync: bool = True, time: str | int | None = None,
                 account: str | None = None, sbatch_args: tuple[str, ...] | list[str] = (),
                 python: str | None = None) -> None:
        super().__init__(nnode, nproc, ngpus, sync=sync, python=python)
        self.partition, self.time, self.account = partition, time, account
        self.sbatch_args = tuple(sbatch_args)

    def script(self, run_dir: Path, settings: Settings) -> str:
        """The batch script for `run_dir`: #SBATCH options, the settings, srun the worker."""
        options = [f"--job-name=tuneforge-{run_dir.name}", "--nodes=1", "--ntasks=1",
                   f"--cpus-per-task={self.nproc}", f"--output={run_dir}/slurm-%j.out"]
        if self.partition:
            options.append(f"--partition={self.partition}")
        if self.ngpus is not None:
            options.append(f"--gpus-per-node={self.ngpus}")
        if self.time is not None:  # Slurm reads a bare number as minutes
            options.append(f"--time={self.time}")
        if self.account:
            options.append(f"--account={self.account}")
        overridden = {arg.split("=")[0] for arg in self.sbatch_args}
        lines = ["#!/bin/bash"]
        lines += [f"#SBATCH {o}" for o in options if o.split("=")[0] not in overridden]
        lines += [f"#SBATCH {arg}" for arg in self.sbatch_args]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in settings_env(settings).items()]
        lines.append(f"srun {shlex.join(self.worker_command(run_dir))}")
        return "\n".join(lines) + "\n"

    def launch(self, run_dir: Path, settings: Settings) -> SlurmRun:
        run_dir = _prepared(run_dir)
        path = run_dir / SBATCH_FILE
        path.write_text(self.script(run_dir, settings), encoding="utf-8")
        path.chmod(0o600)  # it may name the registry's URL, password included
        done = _slurm("sbatch", "--parsable", str(path))
        if done.returncode != 0:
            raise ConfigError.one(f"sbatch refused the job (exit {done.returncode}): "
                                  f"{done.stderr.strip() or done.stdout.strip()}",
                                  source=str(path))
        job_id = done.stdout.strip().split(";")[0]  # "ID" or "ID;CLUSTER"
        logger.info("run %s: Slurm job %s", run_dir.name, job_id)
        return SlurmRun(job_id, run_dir)


class SlurmRun(LaunchedRun):
    """A Slurm job: squeue while Slurm holds it, then sacct (or scontrol, without
    accounting); its id is the job id."""

    def __init__(self, job_id: str, run_dir: Path) -> None:
        self.id, self.run_dir = job_id, run_dir
        self.cancelled = False
        self.final: str | None = None

    def raw_state(self) -> str:
        """Slurm's own word for the job, e.g. RUNNING or 'CANCELLED by 0'."""
        queued = _slurm_out("squeue", "-h", "-j", self.id, "-o", "%T")
        if queued.strip():
            return queued.strip().splitlines()[0]
        accounted = _slurm_out("sacct", "-n", "-X", "-P", "-j", self.id, "-o", "State")
        if accounted.strip():
            return accounted.strip().splitlines()[0]
        # a cluster without accounting still shows a finished job for MinJobAge (300 s)
        shown = re.search(r"\bJobState=(\S+)",
                          _slurm_out("scontrol", "show", "job", "-o", self.id))
        if shown:
            return shown[1]
        raise NotFoundError("Slurm job", self.id, hint=(
            "squeue, sacct and scontrol do not know it: ended over MinJobAge ago on a "
            f"cluster without accounting? See {self.run_dir}/slurm-{self.id}.out"))

    def state(self) -> str:
        if self.final is not None:
            return self.final
        state = slurm_state(self.raw_state())
        if state == COMPLETED and self.cancelled:  # the worker exits 0 after a graceful stop
            state = CANCELLED
        if state in FINAL:
            self.final = state
        return state

    def cancel(self) -> None:
        self.cancelled = True
        state = self.state()
        if state == PENDING:
            _slurm("scancel", self.id)
        elif state == RUNNING:  # to the steps only: srun's worker stops, then the job ends
            _slurm("scancel", "--signal=TERM", self.id)

    def logs(self) -> str:
        log = self.run_dir / f"slurm-{self.id}.out"
        return log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""


def _slurm(*command: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise _no_slurm() from None


def _slurm_out(*command: str) -> str:
    """stdout of a Slurm command that succeeded, else ''."""
    done = _slurm(*command)
    return done.stdout if done.returncode == 0 else ""


def _no_slurm() -> UnsupportedError:
    return UnsupportedError("launchers.slurm", "Slurm's commands (sbatch, squeue, sacct, "
                            "scancel) were not found on PATH", hint=(
                                "run on a Slurm login node, or use launchers.local() or "
                                "launchers.ray()"))


# -- Ray ---------------------------------------------------------------------------------------

RAY_STATES = {"PENDING": PENDING, "RUNNING": RUNNING, "SUCCEEDED": COMPLETED,
              "FAILED": FAILED, "STOPPED": CANCELLED}


class RayLauncher(Launcher):
    """A Ray job: the worker command as the entrypoint, through JobSubmissionClient."""

    name = "ray"

    def __init__(self, address: str, nnode: int = 1, nproc: int = 1, ngpus: int | None = None,
                 *, sync: bool = True, runtime_env: dict[str, Any] | None = None,
                 num_cpus: float | None = None, python: str | None = None) -> None:
        super().__init__(nnode, nproc, ngpus, sync=sync, python=python)
        self.address, self.runtime_env = address, dict(runtime_env or {})
        self.num_cpus = self.nproc if num_cpus is None else num_cpus

    def launch(self, run_dir: Path, settings: Settings) -> RayRun:
        from ray.job_submission import JobSubmissionClient

        run_dir = _prepared(run_dir)
        env = {"RAY_JOB_STOP_WAIT_TIME_S": str(RAY_STOP_WAIT_S)} | settings_env(settings)
        runtime_env = self.runtime_env | {
            "env_vars": env | dict(self.runtime_env.get("env_vars") or {})}
        client = JobSubmissionClient(self.address)
        job_id = client.submit_job(entrypoint=shlex.join(self.worker_command(run_dir)),
                                   entrypoint_num_cpus=self.num_cpus,
                                   entrypoint_num_gpus=self.ngpus or 0,
                                   runtime_env=runtime_env,
                                   metadata={"tuneforge_run": run_dir.name})
        logger.info("run %s: Ray job %s at %s", run_dir.name, job_id, self.address)
        return RayRun(client, job_id)


class RayRun(LaunchedRun):
    """A Ray job; its id is the submission id."""

    def __init__(self, client: Any, job_id: str) -> None:
        self.client, self.id = client, job_id

    def state(self) -> str:
        return RAY_STATES[str(getattr(self.client.get_job_status(self.id), "value", ""))]

    def cancel(self) -> None:
        self.client.stop_job(self.id)  # SIGTERM, SIGKILL after RAY_JOB_STOP_WAIT_TIME_S

    def logs(self) -> str:
        return str(self.client.get_job_logs(self.id))


# -- the factories: LazyLLM's names ------------------------------------------------------------


def local(nnode: int = 1, nproc: int = 1, ngpus: int | None = None, *, sync: bool = True,
          python: str | None = None) -> LocalLauncher:
    """A worker subprocess on this machine (log: RUN_DIR/worker.log)."""
    return LocalLauncher(nnode, nproc, ngpus, sync=sync, python=python)


def torchrun(nnode: int = 1, nproc: int = 1, ngpus: int | None = None, *, sync: bool = True,
             python: str | None = None) -> TorchrunLauncher:
    """local(), with the training inside the worker under torchrun (nproc processes)."""
    return TorchrunLauncher(nnode, nproc, ngpus, sync=sync, python=python)


def slurm(partition: str | None = None, nnode: int = 1, nproc: int = 1,
          ngpus: int | None = None, *, sync: bool = True, time: str | int | None = None,
          account: str | None = None, sbatch_args: tuple[str, ...] | list[str] = (),
          python: str | None = None) -> SlurmLauncher:
    """A Slurm batch job; partition defaults to TUNEFORGE_SLURM_PART (else Slurm's default).

    Raises:
        UnsupportedError: sbatch is not on PATH, or nnode > 1.
    """
    launcher = SlurmLauncher(partition or os.environ.get("TUNEFORGE_SLURM_PART") or None,
                             nnode, nproc, ngpus, sync=sync, time=time, account=account,
                             sbatch_args=sbatch_args, python=python)
    if shutil.which("sbatch") is None:
        raise _no_slurm()
    return launcher


def ray(address: str | None = None, nnode: int = 1, nproc: int = 1, ngpus: int | None = None,
        *, sync: bool = True, runtime_env: dict[str, Any] | None = None,
        num_cpus: float | None = None, python: str | None = None) -> RayLauncher:
    """A Ray job at `address` (default TUNEFORGE_RAY_ADDRESS, else RAY_ADDRESS).

    Raises:
        UnsupportedError: ray is not installed, or nnode > 1.
        ConfigError: no address given or configured.
    """
    address = address or os.environ.get("TUNEFORGE_RAY_ADDRESS") or os.environ.get(
        "RAY_ADDRESS")
    if not address:
        raise ConfigError.one(
            "expected the Ray cluster's address (its dashboard, e.g. http://127.0.0.1:8265), "
            "got none: pass address= or set TUNEFORGE_RAY_ADDRESS or RAY_ADDRESS",
            field="address", source="launchers.ray")
    launcher = RayLauncher(address, nnode, nproc, ngpus, sync=sync, runtime_env=runtime_env,
                           num_cpus=num_cpus, python=python)
    try:
        import ray.job_submission  # noqa: F401
    except ImportError:
        raise UnsupportedError("launchers.ray", "the ray package is not installed",
                               hint="pip install 'ray[default]'") from None
    return launcher


def sco(partition: str | None = None, nnode: int = 1, nproc: int = 1, ngpus: int | None = None,
        **kwargs: Any) -> SlurmLauncher:
    """LazyLLM's SenseCore launcher, accepted as slurm() with a warning."""
    message = ("launchers.sco: SenseCore's `sco` exists only on SenseTime's cluster; "
               "tuneforge submits this run to Slurm instead (launchers.slurm)")
    logger.warning(message)
    warnings.warn(message, UserWarning, stacklevel=2)
    return slurm(partition, nnode, nproc, ngpus, **kwargs)


empty = local  # LazyLLM's name for this machine

LAUNCHERS = {"slurm": slurm, "ray": ray, "sco": sco, "empty": empty, "local": local}


def remote(nnode: int = 1, nproc: int = 1, ngpus: int | None = None,
           **kwargs: Any) -> Launcher:
    """The launcher TUNEFORGE_DEFAULT_LAUNCHER names (slurm, ray, sco, empty or local);
    kwargs go to it.

    Raises:
        ConfigError: TUNEFORGE_DEFAULT_LAUNCHER is unset or unknown, or a kwarg does not
            fit the launcher it names.
    """
    source, field = "launchers.remote", "TUNEFORGE_DEFAULT_LAUNCHER"
    choice = os.environ.get(field, "").strip().lower()
    if choice not in LAUNCHERS:
        got = f"{choice!r}" if choice else "nothing"
        raise ConfigError.one(
            f"expected one of {', '.join(LAUNCHERS)}, got {got}: set {field} (with slurm also "
            "TUNEFORGE_SLURM_PART, with ray TUNEFORGE_RAY_ADDRESS), or call launchers.slurm() "
            "or launchers.ray() directly", field=field, source=source)
    factory = LAUNCHERS[choice]
    accepted = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ConfigError.one(f"{field}={choice}: launchers.{choice}() takes no "
                                  f"argument {', '.join(unknown)}", field=unknown[0],
                                  source=source)
    return factory(nnode=nnode, nproc=nproc, ngpus=ngpus, **kwargs)


# -- shared pieces -----------------------------------------------------------------------------


def settings_env(settings: Settings) -> dict[str, str]:
    """The TUNEFORGE_* variables that give the worker the same home, registry and folders."""
    values = {name: getattr(settings, name) for name in SETTINGS_ENV}
    return {f"TUNEFORGE_{name.upper()}": str(v) for name, v in values.items() if v is not None}


def _positive(field: str, value: Any, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError.one(f"expected a positive integer, got {value!r}", field=field,
                              source=source)
    return value


def _prepared(run_dir: Path) -> Path:
    run_dir = Path(run_dir).expanduser().resolve()
    if not (run_dir / TRAINER_FILE).is_file():
        raise NotFoundError("prepared run", str(run_dir), hint=(
            f"expected {TRAINER_FILE} in it: FinetuneTrainer.prepare() writes it"))
    return run_dir
