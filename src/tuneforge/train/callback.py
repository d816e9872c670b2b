"""The only hook into the Trainer loop: trainer_log.jsonl, the stop check, checkpoint marks
and their rotation.

trainer_log.jsonl uses LLaMA-Factory's field names (current_steps, total_steps, loss,
eval_loss, lr, epoch, percentage, elapsed_time, remaining_time) so tools that read its log
read ours, plus grad_norm, tokens and tokens_per_s.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import rotate_checkpoints

from tuneforge.train.checkpoint import mark_complete
from tuneforge.train.distributed import any_rank, wait_for_everyone
from tuneforge.train.stopping import StopRequest

Progress = Callable[[dict[str, Any]], None]
# rm / dpo / kto: TRL's preference metrics are logged under TRL's names, and the share of pairs
# ranked right also under LLaMA-Factory's `accuracy` (TRL's DPO calls it rewards/accuracies).
_PREFERENCE_PREFIXES = ("rewards/", "logps/", "eval_rewards/", "eval_logps/")
_PREFERENCE_NAMES = ("accuracy", "margin", "kl", "eval_accuracy", "eval_margin", "eval_kl")


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


def _preference_metrics(logs: dict[str, float]) -> dict[str, float]:
    found = {key: value for key, value in logs.items()
             if key.startswith(_PREFERENCE_PREFIXES) or key in _PREFERENCE_NAMES}
    for prefix in ("", "eval_"):
        if f"{prefix}rewards/accuracies" in logs:
            found[f"{prefix}accuracy"] = logs[f"{prefix}rewards/accuracies"]
    return found


class RunCallback(TrainerCallback):  # type: ignore[misc]
    """Writes the metrics log, honours stop requests, marks complete checkpoints."""

    def __init__(self, log_file: Path, stop: StopRequest, progress: Progress | None = None,
                 save_total_limit: int | None = None) -> None:
        self.log_file = log_file
        self.save_total_limit = save_total_limit
        self.stop = stop
        self.progress = progress
        self.stopped = False
        self._start = time.monotonic()
        self._start_step = 0
        self._last = (time.monotonic(), 0)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start = time.monotonic()
        self._start_step = state.global_step
        self._last = (self._start, state.num_input_tokens_seen or 0)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        if ("loss" not in logs and "eval_loss" not in logs) or not state.is_world_process_zero:
            return  # with several processes rank 0 writes; the others log the same numbers
        now = time.monotonic()
        elapsed = now - self._start
        done = state.global_step - self._start_step
        remaining = elapsed / done * (state.max_steps - state.global_step) if done else 0.0
        tokens = int(state.num_input_tokens_seen or 0)
        last_time, last_tokens = self._last
        self._last = (now, tokens)
        record = {
            "current_steps": state.global_step,
            "total_steps": state.max_steps,
            "loss": logs.get("loss"),
            "eval_loss": logs.get("eval_loss"),
            "lr": logs.get("learning_rate"),
            "epoch": round(state.epoch or 0.0, 4),
            "percentage": round(state.global_step / max(state.max_steps, 1) * 100, 2),
            "elapsed_time": _clock(elapsed),
            "remaining_time": _clock(remaining),
            "grad_norm": logs.get("grad_norm"),
            "tokens": tokens,
            "tokens_per_s": round((tokens - last_tokens) / max(now - last_time, 1e-9), 2),
        }
        record.update(_preference_metrics(logs))
        with self.log_file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.progress is not None:
            self.progress(record)
        if args.world_size == 1:  # logging comes before saving at this same step boundary
            self._check_stop(control, self.stop.requested)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # every rank asks at every step, so all stop (and checkpoint) at the same step
        self._check_stop(control, any_rank(self.stop.requested))

    def _check_stop(self, control: Any, requested: bool) -> None:
        if requested and not self.stopped:
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        wait_for_everyone()  # each rank writes its own RNG state into the checkpoint
        if checkpoint.is_dir() and args.should_save:
            mark_complete(checkpoint, state.global_step)
            # older checkpoints go only now that this one is complete (the Trainer, which is
            # given no limit, would delete them before): a kill between the two always leaves
            # a complete checkpoint to resume from. transformers' own rotation, by step.
            rotate_checkpoints(args.output_dir, self.save_total_limit,
                               state.best_model_checkpoint)
