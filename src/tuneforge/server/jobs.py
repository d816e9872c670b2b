"""Jobs for the HTTP faces: a request becomes a trainer, the trainer a queued job, and a job
is shown in the REST-service seed's shape (`task_view`) or OpenAI's (openai_jobs.py).

Both faces submit through `submit_training`, so a job made by `POST /train` and one made by
`POST /v1/fine_tuning/jobs` are the same kind of job, seen through two shapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tuneforge.config.load import load_run_config
from tuneforge.config.models_yaml import LORA_KEYS, lora_defaults
from tuneforge.data.infer import infer_spec
from tuneforge.data.load import load_data
from tuneforge.data.read import read_rows
from tuneforge.errors import ConfigError, DataError, ForbiddenError
from tuneforge.jobs.queue import JobQueue
from tuneforge.pipeline.configs import TrainConfig
from tuneforge.pipeline.trainers import (
    DPO,
    EmbeddingFinetune,
    FinetuneTrainer,
    LLMFinetune,
    PostPreTrain,
    RerankerFinetune,
    RewardModel,
)
from tuneforge.registry import JobRecord
from tuneforge.server.security import PathPolicy
from tuneforge.settings import Settings

# the seed's five statuses; the finer state stays in `state`
PUBLIC_STATUS = {"queued": "queued", "running": "running", "stopping": "running",
                 "cancelling": "running", "completed": "completed", "failed": "failed",
                 "stopped": "stopped", "cancelled": "stopped", "interrupted": "stopped"}
STATES_OF = {public: tuple(s for s, p in PUBLIC_STATUS.items() if p == public)
             for public in set(PUBLIC_STATUS.values())}
STAGES: dict[str, type[FinetuneTrainer]] = {
    "sft": LLMFinetune, "pt": PostPreTrain, "rm": RewardModel, "dpo": DPO,
    "embedding": EmbeddingFinetune, "rerank": RerankerFinetune}
KIND_STAGE = {"pt": "pt", "sft": "sft", "pairwise": "dpo", "embedding": "embedding",
              "rerank": "rerank"}
# RunConfig options that name files or folders: they must stay inside the roots too
PATH_OPTIONS = ("dataset_dir", "resume_from_checkpoint", "adapter_name_or_path", "deepspeed",
                "tokenizer_name_or_path", "media_dir", "cache_dir", "logging_dir",
                "export_dir", "template_file")
REMOTE_CODE = ("trust_remote_code",)


@dataclass(frozen=True)
class Training:
    """What a face asks to train, in canonical terms."""

    model: str
    dataset: str
    stage: str = "auto"
    eval_dataset: str | None = None
    output_dir: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    name: str | None = None
    options: dict[str, Any] | None = None  # any other RunConfig option, by any alias


def submit_training(training: Training, request: dict[str, Any], *, queue: JobQueue,
                    policy: PathPolicy, settings: Settings) -> JobRecord:
    """Check `training` (paths, options, the data itself) and queue it as a job.

    Raises:
        ForbiddenError: a path outside the roots, or remote code asked for (HTTP 403).
        ConfigError, DataError: a bad option or bad data, naming the field or the file,
            line and field (HTTP 422).
        NotFoundError: the model or a file does not exist (HTTP 404).
    """
    options = dict(training.options or {})
    for key in REMOTE_CODE:
        if options.get(key):
            raise ForbiddenError("expected false: the service never runs a model's remote "
                                 "code", field=key)
    for key in PATH_OPTIONS:
        if isinstance(options.get(key), str):
            options[key] = str(policy.path(options[key], key))
    model = policy.source(training.model, "base_model", settings.runs)
    dataset = policy.path(training.dataset, "dataset_path")
    if not dataset.exists():
        raise ConfigError.one(f"expected an existing file or folder, got {training.dataset!r}"
                              f" ({dataset} does not exist)", field="dataset_path",
                              source="request")
    eval_dataset = policy.path(training.eval_dataset, "eval_dataset_path") \
        if training.eval_dataset else None
    output_dir = policy.path(training.output_dir, "output_dir") \
        if training.output_dir else None
    stage = training.stage if training.stage != "auto" else data_stage(dataset)
    if stage not in STAGES:
        raise ConfigError.one(f"expected one of {', '.join(STAGES)} or auto, got {stage!r}",
                              field="stage", source="request")
    if stage not in ("embedding", "rerank") and not any(
            key in options for key in ("lora_config", *LORA_KEYS.values())):
        for key, value in lora_defaults(policy.base).items():
            options.setdefault(key, value)
    split: dict[str, Any] = {}
    if "trainset_rate" in options:
        split["trainset_rate"] = options.pop("trainset_rate")
    elif not any(key in options for key in ("val_size", "eval_split_ratio")):
        split["trainset_rate"] = 0  # the seed holds nothing out unless asked
    try:
        train_config = TrainConfig(epoch=training.epochs, batch_size=training.batch_size,
                                   learning_rate=training.learning_rate, **split,
                                   extras=options or None)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError.one(f"expected {error['msg']}, got {error.get('input')!r}",
                              field=".".join(str(p) for p in error["loc"]),
                              source="request") from None
    trainer = STAGES[stage](
        dataset=str(dataset), train_config=train_config, base_model=model,
        eval_dataset=str(eval_dataset) if eval_dataset else None, name=training.name,
        settings=settings)
    check_data(dataset, eval_dataset, stage)
    return queue.submit(trainer, request | {"stage": stage}, output_dir=output_dir,
                        base_model=training.model)


def data_stage(dataset: Path) -> str:
    """The stage the data is for: plain text -> pt, conversations -> sft, chosen/rejected
    pairs -> dpo, FlagEmbedding's {query, pos, neg} -> embedding, {query, passage, label}
    -> rerank.

    Raises:
        DataError: the data is empty or of a kind no stage trains on.
    """
    first = next(_first_rows(dataset), None)
    if first is None:
        raise DataError.one("expected at least one record, got none", file=str(dataset),
                            field="dataset_path")
    row, location = first
    kind = infer_spec(row).kind
    if kind not in KIND_STAGE:
        raise DataError.one(f"holds {kind} records; expected text (pt), conversations "
                            "(sft), chosen/rejected pairs (dpo) or query/passage rows "
                            "(embedding, rerank)",
                            file=location.file, line=location.line, field="dataset_path")
    return KIND_STAGE[kind]


def _first_rows(dataset: Path) -> Iterator[tuple[Any, Any]]:
    files = sorted(p for p in dataset.rglob("*") if p.is_file()) if dataset.is_dir() \
        else [dataset]
    for file in files:
        yield from read_rows(file)


def check_data(dataset: Path, eval_dataset: Path | None, stage: str, *,
               strict: bool = False) -> int:
    """Read the data as training will, so bad data fails now; the number of samples.
    Training drops a bad record and reports it; `strict` (uploads) refuses the file for it.

    Raises:
        DataError: naming the file, line and field of the first bad record (not strict:
            when no record is usable).
    """
    values: dict[str, Any] = {"dataset": [str(dataset)], "stage": stage, "strict": strict}
    if eval_dataset is not None:
        values["eval_dataset"] = [str(eval_dataset)]
    config = load_run_config(values=values, source="request")
    bundle = load_data(config.data, stage=stage, seed=config.training.seed)
    return len(bundle.train)


# -- the seed's shape ----------------------------------------------------------------------


def task_view(job: JobRecord) -> dict[str, Any]:
    """A job as `GET /train/status/{task_id}` shows it (the seed's fields first)."""
    progress = job.progress
    step, total = progress.get("step") or 0, progress.get("total") or 0
    if job.status == "completed":
        percent = 100.0
    else:
        percent = round(min(step / total * 100, 100.0), 2) if total else 0.0
    body = job.request.get("body", {})
    return {
        "task_id": job.id, "status": PUBLIC_STATUS.get(job.status, job.status),
        "progress": percent, "state": job.status, "phase": progress.get("phase"),
        "current_step": step, "total_steps": total, "loss": progress.get("loss"),
        "eval_loss": progress.get("eval_loss"), "epoch": progress.get("epoch"),
        "eta_seconds": progress.get("eta_s") if job.status == "running" else None,
        "tokens_per_s": progress.get("tokens_per_s"),
        "error": job.error, "message": _message(job),
        "stage": job.request.get("stage"), "base_model": job.base_model,
        "dataset_path": body.get("dataset_path") or body.get("training_file"),
        "output_dir": job.output_dir or job.run_dir,
        "adapter_path": progress.get("adapter_path"),
        "fine_tuned_model": job.id if job.status == "completed" else None,
        "run_dir": job.run_dir, "attempts": job.attempts,
        "created_at": job.created, "started_at": job.started, "finished_at": job.finished,
    }


def _message(job: JobRecord) -> str:
    return {
        "queued": "waiting for a worker slot", "running": "training",
        "stopping": "stopping at the next step", "cancelling": "cancelling at the next step",
        "completed": "finished", "failed": "failed: see error",
        "stopped": "stopped; resume continues from the newest checkpoint",
        "cancelled": "cancelled",
        "interrupted": "interrupted by a server restart; resume continues it",
    }.get(job.status, job.status)


def statuses_for(status: str | None) -> tuple[str, ...] | None:
    """The job states a `status` filter means (a public status or a finer state; commas
    join several).

    Raises:
        ConfigError: an unknown status (HTTP 422).
    """
    if not status:
        return None
    chosen: list[str] = []
    for part in (p.strip() for p in status.split(",")):
        if part in STATES_OF:
            chosen += STATES_OF[part]
        elif part in PUBLIC_STATUS:
            chosen.append(part)
        else:
            raise ConfigError.one(f"expected one of {', '.join(sorted(PUBLIC_STATUS))}, got "
                                  f"{part!r}", field="status", source="query")
    return tuple(dict.fromkeys(chosen))


def tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a text file ('' when absent)."""
    if not path.is_file():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 256 * 1024))
        data = fh.read().decode("utf-8", errors="replace")
    return "\n".join(data.splitlines()[-lines:]) + "\n" if data else ""
