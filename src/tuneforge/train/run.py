"""Run a training job: create or reuse its run directory, pick the stage's recipe, record
how it ended. The CLI (and later the worker process) call `train`."""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from tuneforge.config.load import dump_run_config
from tuneforge.config.run import RunConfig
from tuneforge.errors import UnsupportedError
from tuneforge.paths import RunPaths, atomic_write
from tuneforge.settings import Settings
from tuneforge.train.callback import Progress
from tuneforge.train.distributed import (
    from_main,
    is_main_process,
    join_process_group,
    launched_world_size,
    wait_for_everyone,
)
from tuneforge.train.encoder import run_embedding, run_reranker
from tuneforge.train.events import EventLog
from tuneforge.train.hardware import bound_kernel_caches, check_hardware
from tuneforge.train.plot import plot_losses
from tuneforge.train.preference import run_dpo, run_kto, run_reward_model
from tuneforge.train.sft import TrainResult, run_causal_lm
from tuneforge.train.stopping import StopRequest

logger = logging.getLogger(__name__)
RECIPES = {"pt": run_causal_lm, "sft": run_causal_lm, "rm": run_reward_model, "dpo": run_dpo,
           "kto": run_kto, "embedding": run_embedding, "rerank": run_reranker}


@dataclass(frozen=True)
class RunOutcome:
    """A finished (or stopped) run: its directory and the recipe's result."""

    paths: RunPaths
    result: TrainResult
    plots: list[Path]


def new_run_id() -> str:
    """A sortable, unique run id."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def run_dir_for(config: RunConfig, settings: Settings) -> RunPaths:
    """output_dir when given (LLaMA-Factory's habit), else a new folder under runs/."""
    if config.output.output_dir:
        return RunPaths(Path(config.output.output_dir))
    return RunPaths(settings.runs / new_run_id())


def _write_state(paths: RunPaths, config: RunConfig, status: str, **extra: object) -> None:
    if not is_main_process():
        return
    state = {"status": status, "stage": config.method.stage, "run_dir": str(paths.root),
             "updated": time.time(), **extra}
    atomic_write(paths.state, json.dumps(state, indent=2, default=str) + "\n")


def _with_events(events: EventLog, progress: Progress | None) -> Progress:
    """A progress hook that also records each metrics record as a Running event."""

    def report(record: dict[str, object]) -> None:
        events.emit("Running", f"step {record['current_steps']}/{record['total_steps']}", record)
        if progress is not None:
            progress(record)

    return report


def train(config: RunConfig, settings: Settings, progress: Progress | None = None, *,
          record_events: bool = True) -> RunOutcome:
    """Train as `config` says; SIGTERM/SIGINT or the run's STOP file stop it gracefully.

    `record_events=False`: a pipeline owns events.jsonl and records what `progress` hears.
    """
    bound_kernel_caches()
    recipe = RECIPES.get(config.method.stage)
    if recipe is None:
        raise UnsupportedError(f"stage {config.method.stage}",
                               f"not implemented yet; available: {', '.join(RECIPES)}")
    check_hardware(config)  # what this machine cannot do fails before the run dir exists
    backend = join_process_group(config)  # several processes: rank 0 writes the run dir
    paths = RunPaths(Path(from_main(str(run_dir_for(config, settings).root))))
    if is_main_process():
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.stop_flag.unlink(missing_ok=True)
        atomic_write(paths.config, dump_run_config(config))
    wait_for_everyone()  # no rank sees an old STOP file
    handler: logging.Handler = logging.FileHandler(paths.train_log, encoding="utf-8") \
        if is_main_process() else logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_logger = logging.getLogger()
    root_logger.addHandler(handler)
    previous_level = root_logger.level
    root_logger.setLevel(min(previous_level or logging.INFO, logging.INFO))
    events = EventLog(paths.events, enabled=record_events and is_main_process())
    try:
        if backend is not None:
            logger.info("%d processes, backend %s", launched_world_size(), backend)
        _write_state(paths, config, "running")
        events.emit("Preceding", f"{config.method.stage} training starts",
                    {"run_dir": str(paths.root), "stage": config.method.stage})
        stop = StopRequest(paths.stop_flag)
        with stop.installed():
            result = recipe(config, paths, settings, stop, _with_events(events, progress))
        plots = plot_losses(paths.trainer_log, paths.loss_plot, paths.eval_loss_plot) \
            if config.output.plot_loss and is_main_process() else []
        _write_state(paths, config, result.status, global_step=result.global_step,
                     output=result.output_dir, checkpoint=result.checkpoint,
                     metrics=result.metrics)
        events.emit("Done" if result.status == "completed" else "Stopped",
                    f"training {result.status} after {result.global_step} steps",
                    {"output": result.output_dir, "checkpoint": result.checkpoint,
                     "metrics": result.metrics})
        return RunOutcome(paths, result, plots)
    except KeyboardInterrupt:
        _write_state(paths, config, "stopped", error="interrupted by a second signal")
        events.emit("Stopped", "training interrupted by a second signal")
        raise
    except BaseException as exc:
        _write_state(paths, config, "failed", error=str(exc))
        events.emit("Error", str(exc), {"error_type": type(exc).__name__})
        raise
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(previous_level)
        handler.close()
