"""OpenAI's fine-tuning API over the same jobs as /train: /v1/files and
/v1/fine_tuning/jobs (create, list with after/limit, retrieve, cancel, pause, resume,
events, checkpoints), in the shapes the official `openai` client reads.

A job's `fine_tuned_model` is its run id, which /v1/chat/completions serves (the adapter
goes on its base model); a checkpoint's `fine_tuned_model_checkpoint` is
`<run id>/checkpoints/checkpoint-<step>`, served the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneforge.errors import ConfigError, NotFoundError
from tuneforge.jobs.queue import JobQueue
from tuneforge.paths import RunPaths, read_json_lines
from tuneforge.registry import DatasetRecord, JobRecord, Registry
from tuneforge.server.jobs import Training, submit_training
from tuneforge.server.security import PathPolicy
from tuneforge.server.training import register_upload, store_upload
from tuneforge.settings import Settings
from tuneforge.train.checkpoint import checkpoints, is_complete

BASE_LEARNING_RATE = 2e-4  # learning_rate_multiplier 1.0 (LoRA's usual rate)
OPENAI_STATUS = {"queued": "queued", "running": "running", "stopping": "running",
                 "cancelling": "running", "completed": "succeeded", "failed": "failed",
                 "stopped": "paused", "cancelled": "cancelled", "interrupted": "paused"}
Auto = Literal["auto"]


class _Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: int | Auto | None = Field(default=None, description="Passes over the data.")
    batch_size: int | Auto | None = None
    learning_rate_multiplier: float | Auto | None = Field(
        default=None, description=f"Times {BASE_LEARNING_RATE} (LoRA's usual rate).")
    beta: float | Auto | None = Field(default=None, description="DPO's beta.")

    @field_validator("n_epochs", "batch_size", "learning_rate_multiplier", "beta")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not value > 0:
            raise ValueError(f"expected a number greater than 0 or 'auto', got {value!r}")
        return value


class _MethodBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: _Hyperparameters | None = None


class _Method(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo"] = "supervised"
    supervised: _MethodBody | None = None
    dpo: _MethodBody | None = None


class FineTuningJobRequest(BaseModel):
    """POST /v1/fine_tuning/jobs."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, description="The base model: alias, folder or run id.")
    training_file: str = Field(min_length=1, description="A file id from /v1/files.")
    validation_file: str | None = None
    hyperparameters: _Hyperparameters | None = None
    method: _Method | None = None
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None


def openai_router(queue: JobQueue, settings: Settings, policy: PathPolicy, *,
                  max_upload_bytes: int) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["openai fine-tuning"])
    registry = Registry.open(settings)

    @router.post("/files")
    async def create_file(file: UploadFile, purpose: Annotated[str, Form()]
                          ) -> dict[str, Any]:
        """Upload a training file (purpose fine-tune); checked as training reads it."""
        if purpose != "fine-tune":
            raise ConfigError.one(f"expected 'fine-tune', got {purpose!r}", field="purpose",
                                  source="request")
        stored = await store_upload(file, settings, max_upload_bytes, "file")
        record = await run_in_threadpool(register_upload, stored, None, settings)
        return _file(record)

    @router.get("/files")
    async def list_files() -> dict[str, Any]:
        records = await run_in_threadpool(registry.list_datasets)
        return {"object": "list", "data": [_file(r) for r in records], "has_more": False}

    @router.get("/files/{file_id}")
    async def retrieve_file(file_id: str) -> dict[str, Any]:
        return _file(await run_in_threadpool(_file_record, registry, file_id, "file_id"))

    @router.post("/fine_tuning/jobs")
    async def create_job(body: FineTuningJobRequest) -> dict[str, Any]:
        def submit() -> JobRecord:
            method = body.method or _Method()
            chosen = (method.dpo if method.type == "dpo" else method.supervised)
            params = (chosen.hyperparameters if chosen else None) or body.hyperparameters \
                or _Hyperparameters()
            options: dict[str, Any] = {}
            if body.seed is not None:
                options["seed"] = body.seed
            if _given(params.beta):
                options["pref_beta"] = params.beta
            train = _file_record(registry, body.training_file, "training_file")
            valid = _file_record(registry, body.validation_file, "validation_file") \
                if body.validation_file else None
            multiplier = params.learning_rate_multiplier
            training = Training(
                model=body.model, dataset=train.path,
                stage="dpo" if method.type == "dpo" else "sft",
                eval_dataset=valid.path if valid else None,
                epochs=params.n_epochs if _given(params.n_epochs) else None,
                batch_size=params.batch_size if _given(params.batch_size) else None,
                learning_rate=BASE_LEARNING_RATE * float(multiplier)
                if _given(multiplier) else None,
                name=f"{Path(body.model).name}-{body.suffix}" if body.suffix else None,
                options=options)
            request = {"api": "openai", "body": body.model_dump(mode="json"),
                       "hyperparameters": params.model_dump(mode="json", exclude_none=True),
                       "training_file": train.id,
                       "validation_file": valid.id if valid else None}
            return submit_training(training, request, queue=queue, policy=policy,
                                   settings=settings)

        return _job(await run_in_threadpool(submit))

    @router.get("/fine_tuning/jobs")
    async def list_jobs(after: str | None = None,
                        limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
        """Jobs newest first; `after`: those older than that job id (cursor paging)."""
        records = await run_in_threadpool(
            lambda: registry.list_jobs(after=after, limit=limit + 1))
        return {"object": "list", "data": [_job(r) for r in records[:limit]],
                "has_more": len(records) > limit}

    @router.get("/fine_tuning/jobs/{job_id}")
    async def retrieve_job(job_id: str) -> dict[str, Any]:
        return _job(await run_in_threadpool(registry.get_job, job_id))

    @router.post("/fine_tuning/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str) -> dict[str, Any]:
        return _job(await run_in_threadpool(lambda: queue.stop(job_id, cancel=True)))

    @router.post("/fine_tuning/jobs/{job_id}/pause")
    async def pause_job(job_id: str) -> dict[str, Any]:
        return _job(await run_in_threadpool(queue.stop, job_id))

    @router.post("/fine_tuning/jobs/{job_id}/resume")
    async def resume_job(job_id: str) -> dict[str, Any]:
        return _job(await run_in_threadpool(queue.resume, job_id))

    @router.get("/fine_tuning/jobs/{job_id}/events")
    async def job_events(job_id: str, after: str | None = None,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict[str, Any]:
        """fine_tuning.job.event objects, newest first: messages, and a metrics event per
        logged step."""
        record = await run_in_threadpool(registry.get_job, job_id)
        listed = await run_in_threadpool(_events, record)
        if after is not None:
            ids = [e["id"] for e in listed]
            if after not in ids:
                raise NotFoundError("event", after, hint=f"events of job {job_id}")
            listed = listed[ids.index(after) + 1:]
        return {"object": "list", "data": listed[:limit], "has_more": len(listed) > limit}

    @router.get("/fine_tuning/jobs/{job_id}/checkpoints")
    async def job_checkpoints(job_id: str, after: str | None = None,
                              limit: Annotated[int, Query(ge=1, le=100)] = 10
                              ) -> dict[str, Any]:
        """The job's complete checkpoints, newest first, each with a servable model id."""
        record = await run_in_threadpool(registry.get_job, job_id)
        listed = await run_in_threadpool(_checkpoints, record)
        if after is not None:
            ids = [c["id"] for c in listed]
            listed = listed[ids.index(after) + 1:] if after in ids else []
        page = listed[:limit]
        return {"object": "list", "data": page, "has_more": len(listed) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None}

    return router


def _given(value: Any) -> bool:
    return value is not None and value != "auto"


def _file_record(registry: Registry, file_id: str, field: str) -> DatasetRecord:
    try:
        return registry.get_dataset(file_id)
    except NotFoundError as exc:
        raise NotFoundError("file", file_id, hint=f"{field}: {exc.hint}") from None


def _file(record: DatasetRecord) -> dict[str, Any]:
    path = Path(record.path)
    return {"id": record.id, "object": "file",
            "bytes": path.stat().st_size if path.is_file() else 0,
            "created_at": int(record.created), "filename": path.name,
            "purpose": "fine-tune", "status": "processed", "status_details": None}


def _job(job: JobRecord) -> dict[str, Any]:
    body = job.request.get("body", {})
    openai = job.request.get("api") == "openai"
    params = job.request.get("hyperparameters") or {}
    progress = job.progress
    hyper = {"n_epochs": params.get("n_epochs") or body.get("num_epochs") or "auto",
             "batch_size": params.get("batch_size") or body.get("batch_size") or "auto",
             "learning_rate_multiplier": params.get("learning_rate_multiplier") or (
                 body["learning_rate"] / BASE_LEARNING_RATE if body.get("learning_rate")
                 else "auto")}
    stage = job.request.get("stage", "sft")
    method_type = "dpo" if stage == "dpo" else "supervised"
    error = {"code": "training_failed", "message": job.error, "param": None} \
        if job.status == "failed" and job.error else None
    eta = progress.get("eta_s") if job.status == "running" else None
    return {
        "id": job.id, "object": "fine_tuning.job", "created_at": int(job.created),
        "error": error,
        "fine_tuned_model": job.id if job.status == "completed" else None,
        "finished_at": int(job.finished) if job.finished else None,
        "hyperparameters": hyper, "model": job.base_model or "",
        "organization_id": "org-tuneforge", "result_files": [],
        "seed": body.get("seed") if openai else None,
        "status": OPENAI_STATUS.get(job.status, job.status),
        "trained_tokens": progress.get("tokens"),
        "training_file": job.request.get("training_file") or body.get("dataset_path") or "",
        "validation_file": job.request.get("validation_file"),
        "estimated_finish": int(job.updated + eta) if eta else None,
        "integrations": [], "metadata": body.get("metadata") if openai else None,
        "method": {"type": method_type, method_type: {"hyperparameters": hyper}},
        "user_provided_suffix": body.get("suffix") if openai else None,
    }


def _events(job: JobRecord) -> list[dict[str, Any]]:
    """The job's events as OpenAI's objects, newest first; ids follow the record order."""
    records, _ = read_json_lines(RunPaths(Path(job.run_dir)).events)
    listed = []
    for index, record in enumerate(records):
        data = record.get("data") if isinstance(record.get("data"), dict) else {}
        state = record.get("action_state", "")
        event: dict[str, Any] = {
            "object": "fine_tuning.job.event", "id": f"ftevent-{job.id}-{index}",
            "created_at": int(record.get("time", job.created)),
            "level": "error" if state == "Error" else "info"}
        if record.get("action_id") == "train" and "current_steps" in data:
            step, total = data.get("current_steps"), data.get("total_steps")
            metrics = {"step": step, "total_steps": total, "train_loss": data.get("loss"),
                       "valid_loss": data.get("eval_loss"), "epoch": data.get("epoch"),
                       "learning_rate": data.get("lr")}
            event |= {"type": "metrics", "data": metrics,
                      "message": f"Step {step}/{total}: training loss={data.get('loss')}"}
        else:
            message = record.get("description") or ""
            event |= {"type": "message", "data": json.loads(json.dumps(
                data, default=str)) if data else None,
                "message": f"{record.get('action_id')}: {state}" + (
                    f" ({message})" if message else "")}
        listed.append(event)
    return listed[::-1]


def _checkpoints(job: JobRecord) -> list[dict[str, Any]]:
    paths = RunPaths(Path(job.run_dir))
    log, _ = read_json_lines(paths.trainer_log)
    by_step = {r.get("current_steps"): r for r in log}
    listed = []
    for step, folder in checkpoints(paths.checkpoints):
        if not is_complete(folder):
            continue
        record = by_step.get(step, {})
        listed.append({
            "object": "fine_tuning.job.checkpoint", "id": f"ftckpt-{job.id}-{step}",
            "created_at": int(folder.stat().st_mtime),
            "fine_tuned_model_checkpoint": f"{job.id}/checkpoints/{folder.name}",
            "fine_tuning_job_id": job.id, "step_number": step,
            "metrics": {"step": step, "train_loss": record.get("loss"),
                        "valid_loss": record.get("eval_loss")}})
    return listed[::-1]
