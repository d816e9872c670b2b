"""File-system helpers: atomic writes and joins that cannot escape their root."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

# what a trainer was built from (pipeline/trainers.py writes it; launchers check for it)
TRAINER_FILE = "trainer.json"


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` through a temp file, fsync and rename: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_dir(path: Path) -> Path:
    """A fresh temporary sibling of `path`; rename it onto `path` with `commit_dir`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))


def commit_dir(tmp: Path, path: Path, *, keep: Callable[[Path], bool] | None = None) -> None:
    """Move a completed temporary directory onto its final name, replacing what is there.

    keep: for content-addressed caches, where every writer of `path` writes the same
    content: a test of the directory found at `path` (another process's, committed before
    or while this one wrote); where it holds, that directory stays and `tmp` is removed.
    """
    import shutil

    if path.exists():
        if keep is not None and keep(path):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        shutil.rmtree(path)
    try:
        os.replace(tmp, path)
    except OSError:
        # a directory renamed onto a non-empty one fails (ENOTEMPTY): another writer
        # committed `path` between the check above and the rename
        if keep is None or not path.is_dir() or not keep(path):
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def copy_dir_atomic(source: Path, target: Path) -> Path:
    """Copy the folder `source` to `target`, whole or not at all (built in a temporary
    sibling, then renamed), hard-linking files where the file system allows it."""
    import os
    import shutil

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another file system, or links not allowed
            shutil.copy2(src, dst)

    tmp = atomic_dir(target)
    shutil.rmtree(tmp)
    shutil.copytree(source, tmp, copy_function=link_or_copy)
    commit_dir(tmp, target)
    return target


def read_json_lines(path: Path, start: int = 0) -> tuple[list[Any], int]:
    """The JSON records of the complete lines of `path` after byte `start`, and the offset
    after them: a line still being written is left for the next call, a line that is not
    JSON is skipped. ([], start) when the file is absent."""
    if not path.is_file():
        return [], start
    with path.open("rb") as fh:
        fh.seek(start)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records, start + end


class PathEscapeError(UserError):
    """A relative path points outside the directory it must stay in."""


def safe_join(root: Path, relative: str) -> Path:
    """Join `relative` under `root`, refusing `..` escapes and absolute paths elsewhere."""
    root_resolved = root.resolve()
    candidate = (root / relative).resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise PathEscapeError(
            f"{relative!r} escapes the directory {str(root)!r}; expected a path inside it"
        )
    return candidate


class RunPaths:
    """The layout of one run directory; the files alone inspect, resume or reproduce it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def trainer_log(self) -> Path:
        return self.root / "trainer_log.jsonl"

    @property
    def train_log(self) -> Path:
        return self.root / "train.log"

    @property
    def data_report(self) -> Path:
        return self.root / "data_report.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def stop_flag(self) -> Path:
        return self.root / "STOP"

    @property
    def loss_plot(self) -> Path:
        return self.root / "training_loss.png"

    @property
    def eval_loss_plot(self) -> Path:
        return self.root / "training_eval_loss.png"
