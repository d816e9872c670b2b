"""A worker of the training service: `python -m tuneforge.jobs.worker RUN_DIR`.

Loads the trainer of the run (written by the server when the job was submitted), resumes
it (a fresh run starts at its first action; a stopped or interrupted one continues from its
newest checkpoint) and keeps the job's row in the registry up to date: progress at every
logged step (at most twice a second), then the final status. SIGTERM or SIGINT stop it at
the next step boundary; so does the death of the server that started it (then the job ends
`interrupted`, and the next server resumes it).

A run prepared outside the service (a launcher's: `tuneforge.launchers`, under Slurm, Ray or
on this machine) has no job row: the worker then just resumes the trainer to its end, with
the same signals, and exits 0 when it completed (or stopped), 1 when it failed.

When the training wrote a PEFT adapter, it is also placed at `<output_dir>/lora_adapter`
(the REST-service seed's layout; a full model goes to `<output_dir>/model`), hard-linked
where the file system allows it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from tuneforge.errors import NotFoundError
from tuneforge.jobs.queue import ACTIVE, READY, SERVER_PID_ENV
from tuneforge.paths import copy_dir_atomic
from tuneforge.pipeline.consts import ActionState
from tuneforge.pipeline.event import Event, EventHandler
from tuneforge.pipeline.trainers import FinetuneTrainer
from tuneforge.registry import Registry
from tuneforge.settings import Settings

logger = logging.getLogger("tuneforge.jobs.worker")
PROGRESS_EVERY_S = 0.5
PARENT_POLL_S = 0.5


class _Progress(EventHandler):
    """Copies the training's latest numbers to the job's row, at most every 0.5 s."""

    def __init__(self, registry: Registry, job_id: str) -> None:
        self.registry, self.job_id = registry, job_id
        self.trainer: FinetuneTrainer | None = None
        self.latest: dict[str, Any] = {}
        self._written = 0.0

    def dispatch(self, event: Event) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        if event.action_id == "train" and "current_steps" in data:
            self.latest |= _numbers(data)
        if self.trainer is not None:
            self.latest["phase"] = self.trainer.status
        now = time.monotonic()
        if event.action_state is ActionState.Running and now - self._written < PROGRESS_EVERY_S:
            return
        self._written = now
        self.registry.update_job(self.job_id, progress=dict(self.latest))


def _numbers(record: dict[str, Any]) -> dict[str, Any]:
    step, total = record.get("current_steps"), record.get("total_steps")
    numbers = {"step": step, "total": total, "loss": record.get("loss"),
               "epoch": record.get("epoch"), "lr": record.get("lr"),
               "tokens": record.get("tokens"), "tokens_per_s": record.get("tokens_per_s"),
               "eta_s": _seconds(record.get("remaining_time")),
               "elapsed_s": _seconds(record.get("elapsed_time"))}
    if record.get("eval_loss") is not None:
        numbers["eval_loss"] = record["eval_loss"]
    return {k: v for k, v in numbers.items() if v is not None}


def _seconds(clock: Any) -> float | None:
    """'H:MM:SS' (LLaMA-Factory's time fields) or a number, in seconds."""
    if isinstance(clock, int | float):
        return float(clock)
    if not isinstance(clock, str):
        return None
    try:
        parts = [float(p) for p in clock.split(":")]
    except ValueError:
        return None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


def publish_output(output: dict[str, Any], target: Path) -> Path:
    """Place the run's output at target/lora_adapter (an adapter) or target/model, whole or
    not at all (built in a temporary sibling, then renamed)."""
    final = target / ("lora_adapter" if output.get("adapter") else "model")
    return copy_dir_atomic(Path(output["output_dir"]), final)


def run_standalone(run_dir: Path, settings: Settings) -> int:
    """Resume the trainer of `run_dir` (no job row: a launcher started this process) to its
    end or a stop; 0 unless it failed."""
    trainer = FinetuneTrainer.load(run_dir, settings=settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        logger.warning("%s: stopping at the next step", signal.Signals(signum).name)
        trainer.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        if trainer.ppl.current is not None or trainer.ppl.output is None:
            trainer.resume()
    except Exception:
        logger.exception("run %s failed", run_dir.name)
        return 1
    logger.info("run %s: %s", run_dir.name, trainer.status)
    return 0


def run(run_dir: Path, settings: Settings) -> int:
    """Run the job of `run_dir` to its end, a stop or an interruption; the exit status."""
    job_id = run_dir.name
    registry = Registry.open(settings)
    try:
        job = registry.get_job(job_id)
    except NotFoundError:  # prepared by a launcher, not by the service's queue
        return run_standalone(run_dir, settings)
    progress = _Progress(registry, job_id)
    progress.latest = dict(job.progress)
    trainer = FinetuneTrainer.load(run_dir, progress, settings=settings)
    progress.trainer = trainer
    orphaned, stopping = threading.Event(), threading.Event()
    parent = int(os.environ.get(SERVER_PID_ENV, os.getppid()))

    def stop(signum: int, frame: FrameType | None) -> None:
        logger.warning("%s: stopping at the next step", signal.Signals(signum).name)
        stopping.set()
        trainer.stop()

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        logger.warning("the server is gone: checkpointing, then stopping (interrupted)")
        orphaned.set()
        trainer.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    threading.Thread(target=watch_parent, daemon=True).start()
    # from here a SIGTERM stops at a step boundary; a stop asked before it is read now
    ready = registry.update_job(job_id, expect=ACTIVE, progress=progress.latest | {READY: True})
    if ready is None:  # settled meanwhile (its server gave up on it): not ours to run
        return 0
    if ready.status != "running" or orphaned.is_set():
        status = "interrupted" if orphaned.is_set() else {
            "cancelling": "cancelled"}.get(ready.status, "stopped")
        registry.update_job(job_id, status=status, finished=time.time(), worker_pid=None)
        return 0
    progress.latest[READY] = True
    try:
        if trainer.ppl.current is not None or trainer.ppl.output is None:
            trainer.resume()  # else it finished before an earlier worker could say so
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        registry.update_job(job_id, status="failed", error=f"{type(exc).__name__}: {exc}",
                            finished=time.time(), worker_pid=None,
                            progress=progress.latest | {"phase": trainer.status})
        return 1
    latest = progress.latest | {"phase": trainer.status}
    if trainer.ppl.current is not None:  # stopped at a step boundary
        asked = registry.get_job(job_id).status
        status = {"cancelling": "cancelled", "stopping": "stopped"}.get(
            asked, "interrupted" if orphaned.is_set() else "stopped")
        registry.update_job(job_id, status=status, finished=time.time(), worker_pid=None,
                            progress=latest)
        logger.info("job %s: %s", job_id, status)
        return 0
    output = trainer.output or {}
    placed = publish_output(output, Path(job.output_dir or run_dir)) \
        if output.get("output_dir") else None
    latest |= {"adapter_path": str(placed) if placed else None,
               "model_name": output.get("model_name"),
               "model_version": output.get("model_version")}
    if latest.get("total") is not None:
        latest["step"] = latest["total"]
    registry.update_job(job_id, status="completed", finished=time.time(), worker_pid=None,
                        progress=latest)
    logger.info("job %s: completed", job_id)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m tuneforge.jobs.worker RUN_DIR\n")
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(Path(args[0]).resolve(), Settings())


if __name__ == "__main__":
    sys.exit(main())
