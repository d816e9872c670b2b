"""Several processes, one run: who writes, and how the processes agree.

torchrun, `accelerate launch` and `tuneforge train --launcher torchrun` start one process per
device and tell each its place through RANK / WORLD_SIZE / LOCAL_RANK (torch's env://
protocol). The global rank 0 process writes the run directory (config.yaml, state.json,
trainer_log.jsonl, train.log, data_report.json, output/); every process trains. Each helper
here is a no-op in a single process, so recipes call them unconditionally.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from tuneforge.config.run import RunConfig
from tuneforge.paths import atomic_dir


def launched_world_size() -> int:
    """How many processes the launcher started (WORLD_SIZE); 1 when run without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_launched() -> bool:
    """True inside a process that torchrun or accelerate launch started."""
    return "LOCAL_RANK" in os.environ or launched_world_size() > 1


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 in a single process)."""
    if launched_world_size() <= 1:
        return 0
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True for the one process that writes the run directory."""
    return rank() == 0


def join_process_group(config: RunConfig) -> str | None:
    """Start torch.distributed when a launcher started several processes; its backend name.

    The process group is made the way transformers' TrainingArguments makes it (through
    accelerate's PartialState, which the Trainer then reuses), only earlier: the processes must
    agree on the run directory and wait for each other before the Trainer exists.
    """
    if launched_world_size() <= 1:
        return None
    import torch
    import torch.distributed as dist
    from accelerate import PartialState

    if not dist.is_initialized():
        d = config.distributed
        PartialState(cpu=not torch.cuda.is_available(), backend=d.ddp_backend,
                     timeout=timedelta(seconds=d.ddp_timeout))
    return str(dist.get_backend())


def wait_for_everyone() -> None:
    """A barrier across every process (nothing in a single process)."""
    if _initialized():
        import torch.distributed as dist

        dist.barrier()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (filling caches), then the others run it (reading them)."""
    if not is_main_process():
        wait_for_everyone()
    yield
    if is_main_process():
        wait_for_everyone()


def any_rank(flag: bool) -> bool:
    """True on every process when `flag` is true on any one (one all-reduce per call)."""
    if not _initialized():
        return flag
    import torch
    import torch.distributed as dist

    on_gpu = "nccl" in str(dist.get_backend()) and torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else "cpu"
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def from_main(value: str) -> str:
    """Rank 0's `value`, on every process."""
    if not _initialized():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def shared_atomic_dir(path: Path) -> Path:
    """A fresh temporary sibling of `path` made by rank 0, the same on every process (the
    DeepSpeed / FSDP gathers in `Trainer.save_model` need every rank to name it)."""
    return Path(from_main(str(atomic_dir(path)) if is_main_process() else ""))
