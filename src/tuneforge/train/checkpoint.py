"""Checkpoints: which are complete, which is newest, and resuming from one.

transformers' Trainer writes `checkpoint-<step>/` in place; the callback marks a checkpoint
complete only after the Trainer has written all of it, so a checkpoint half-written by a
killed run is never picked (and is removed before resuming).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from tuneforge.errors import NotFoundError
from tuneforge.paths import atomic_write
from tuneforge.train.distributed import is_main_process, wait_for_everyone

COMPLETE = "tuneforge_complete.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def mark_complete(checkpoint: Path, step: int) -> None:
    """Record that `checkpoint` holds everything a resume needs."""
    atomic_write(checkpoint / COMPLETE, json.dumps({"step": step}) + "\n")


def is_complete(checkpoint: Path) -> bool:
    """True when the checkpoint was fully written."""
    return (checkpoint / COMPLETE).is_file()


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint folder, complete or not, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return sorted(found)


def find_latest_complete(folder: Path) -> Path | None:
    """The newest complete checkpoint under `folder`, or None."""
    complete = [path for _, path in checkpoints(folder) if is_complete(path)]
    return complete[-1] if complete else None


def remove_incomplete(folder: Path) -> list[Path]:
    """Delete checkpoints a killed run left half-written; returns what was removed."""
    removed = [path for _, path in checkpoints(folder) if not is_complete(path)]
    for path in removed:
        shutil.rmtree(path)
    return removed


def resolve_resume(setting: str | None, folder: Path, overwrite: bool) -> Path | None:
    """The checkpoint to resume from: an explicit path, "auto" / an existing run's newest
    (LLaMA-Factory resumes an output dir holding checkpoints unless overwrite_output_dir)."""
    if setting not in (None, "auto"):
        path = Path(setting)
        if not is_complete(path) and not (path / "trainer_state.json").is_file():
            raise NotFoundError("checkpoint", str(path),
                                hint="expected a checkpoint-<step> folder of a run")
        return path
    if overwrite:
        return None
    if is_main_process():
        remove_incomplete(folder)
    wait_for_everyone()  # no rank looks while rank 0 deletes
    return find_latest_complete(folder)
