"""The training service's routes: the REST-service seed's /train, /train/status/{id},
/train/history and /evaluate, ours beyond it (stop, resume, delete, events, logs, metrics,
loss.png), datasets, and the lists the dashboard shows (models, services).

Handlers translate HTTP to `submit_training` and `JobQueue` calls and back; registry and
file reads run in the thread pool, so a status request never waits behind another.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneforge.config.eval import build_eval_config
from tuneforge.config.load import load_run_config
from tuneforge.errors import ConfigError, NotFoundError, TooLargeError
from tuneforge.eval.run import evaluate
from tuneforge.jobs.queue import ENDED, WORKER_LOG, JobQueue
from tuneforge.paths import RunPaths, atomic_dir, commit_dir, read_json_lines
from tuneforge.registry import DatasetRecord, JobRecord, Registry
from tuneforge.server.jobs import (
    Training,
    check_data,
    data_stage,
    statuses_for,
    submit_training,
    tail,
    task_view,
)
from tuneforge.server.models import ServedModels
from tuneforge.server.security import PathPolicy
from tuneforge.settings import Settings

EVENT_POLL_S = 0.25
RECENT_S = 0.3  # how long a status or history answer is reused
RECENT_MAX = 1024
UPLOAD_CHUNK = 1 << 20
SAFE_NAME = "".join(chr(c) for c in range(128) if chr(c).isalnum()) + "._-"


class TrainRequest(BaseModel):
    """POST /train: the seed's fields; any other RunConfig option (by its LLaMA-Factory,
    Qianfan or canonical name) is accepted too."""

    model_config = ConfigDict(extra="allow")

    base_model: str = Field(min_length=1, description="Alias, model folder, run id or hub "
                            "id (in the local cache).")
    dataset_path: str = Field(min_length=1, description="A JSON, JSONL or TXT file (or "
                              "folder) inside the server's roots.")
    output_dir: str | None = Field(default=None, description="Where lora_adapter/ goes "
                                   "(relative to the server's working directory); default: "
                                   "the run's folder.")
    num_epochs: int = Field(default=3, ge=1, le=10_000)
    batch_size: int = Field(default=4, ge=1, le=65_536)
    learning_rate: float = Field(default=2e-4, gt=0, le=10)
    dataset_format: str | None = Field(default=None, description="json, jsonl or txt (or a "
                                       "record format: alpaca, sharegpt, openai, text).")
    stage: Literal["auto", "sft", "pt", "rm", "dpo"] = Field(
        default="auto", description="auto: pt for plain text, sft for conversations, dpo "
        "for chosen/rejected pairs.")
    eval_dataset_path: str | None = Field(default=None, description="Held-out data.")
    name: str | None = Field(default=None, max_length=200,
                             description="Name of the published model.")


class EvaluateRequest(BaseModel):
    """POST /evaluate: a served model (or adapter) by name, or a finished job."""

    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(default=None, min_length=1)
    task_id: str | None = Field(default=None, min_length=1)
    dataset_path: str = Field(min_length=1)
    metrics: list[str] | None = None
    max_samples: int | None = Field(default=None, ge=1, le=100_000)
    max_new_tokens: int = Field(default=64, ge=1, le=4096)

    @model_validator(mode="after")
    def _one_model(self) -> EvaluateRequest:
        if (self.model_name is None) == (self.task_id is None):
            raise ValueError("expected exactly one of model_name and task_id")
        return self


def training_router(queue: JobQueue, settings: Settings, policy: PathPolicy,
                    models: ServedModels, *, max_upload_bytes: int) -> APIRouter:
    """The routes; `max_upload_bytes` bounds a dataset upload (HTTP 413 past it)."""
    router = APIRouter()
    registry = Registry.open(settings)
    evaluating = threading.Lock()  # one evaluation at a time: each loads a model
    recent = _Recent()

    async def job(task_id: str) -> JobRecord:
        return await run_in_threadpool(registry.get_job, task_id)

    @router.post("/train", tags=["training"])
    async def train(body: TrainRequest) -> dict[str, Any]:
        """Queue a training job; answers at once with its task_id."""
        known = set(TrainRequest.model_fields)
        extra = {k: v for k, v in (body.model_extra or {}).items() if k not in known}
        if body.dataset_format is not None:
            extra["dataset_format"] = body.dataset_format
        training = Training(
            model=body.base_model, dataset=body.dataset_path, stage=body.stage,
            eval_dataset=body.eval_dataset_path, output_dir=body.output_dir,
            epochs=body.num_epochs, batch_size=body.batch_size,
            learning_rate=body.learning_rate, name=body.name, options=extra)
        record = await run_in_threadpool(
            submit_training, training, {"api": "train", "body": body.model_dump()},
            queue=queue, policy=policy, settings=settings)
        recent.clear()
        return {"task_id": record.id, "status": "queued",
                "message": f"queued; GET /train/status/{record.id}"}

    @router.get("/train/status/{task_id}", tags=["training"], response_model=dict[str, Any])
    async def status(task_id: str) -> Response:
        return await recent.get(("status", task_id), lambda: task_view(
            registry.get_job(task_id)))

    @router.get("/train/history", tags=["training"], response_model=dict[str, Any])
    async def history(limit: Annotated[int, Query(ge=1, le=500)] = 50,
                      offset: Annotated[int, Query(ge=0)] = 0,
                      status: str | None = None) -> Response:
        """Jobs, newest first; `status` filters (queued, running, completed, failed, stopped,
        or a finer state; commas join several)."""
        chosen = statuses_for(status)

        def read() -> dict[str, Any]:
            jobs = registry.list_jobs(statuses=chosen, limit=limit, offset=offset)
            return {"tasks": [task_view(j) for j in jobs],
                    "total": registry.count_jobs(statuses=chosen), "limit": limit,
                    "offset": offset}

        return await recent.get(("history", limit, offset, chosen), read)

    @router.post("/train/{task_id}/stop", tags=["training"])
    async def stop(task_id: str) -> dict[str, Any]:
        """A queued job stops at once; a running one checkpoints at its next step."""
        recent.clear()
        return task_view(await run_in_threadpool(queue.stop, task_id))

    @router.post("/train/{task_id}/resume", tags=["training"])
    async def resume(task_id: str) -> dict[str, Any]:
        """Queue a stopped, interrupted or failed job again; it continues from its newest
        checkpoint."""
        recent.clear()
        return task_view(await run_in_threadpool(queue.resume, task_id))

    @router.delete("/train/{task_id}", tags=["training"])
    async def delete(task_id: str) -> dict[str, Any]:
        """Forget a job that is not running, with its run folder."""
        record = await run_in_threadpool(queue.delete, task_id)
        recent.clear()
        return {"deleted": record.id}

    @router.get("/train/{task_id}/events", tags=["training"])
    async def events(task_id: str) -> StreamingResponse:
        """Server-sent events: `pipeline` (the pipeline's events), `metrics` (one per logged
        step, LLaMA-Factory's trainer_log fields), `status` (the job, when it changes), then
        `end` once the job has ended."""
        first = await job(task_id)
        return StreamingResponse(_event_stream(registry, first),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    @router.get("/train/{task_id}/logs", tags=["training"],
                response_class=PlainTextResponse)
    async def logs(task_id: str, tail_lines: Annotated[int, Query(
            alias="tail", ge=1, le=10_000)] = 200) -> str:
        """The end of the job's log (its worker's output)."""
        record = await job(task_id)
        run_dir = Path(record.run_dir)
        log = run_dir / WORKER_LOG
        return await run_in_threadpool(tail, log if log.is_file() else
                                       RunPaths(run_dir).train_log, tail_lines)

    @router.get("/train/{task_id}/metrics", tags=["training"])
    async def metrics(task_id: str) -> dict[str, Any]:
        """Every logged step (trainer_log.jsonl) and the evaluation report, if any."""
        record = await job(task_id)
        paths = RunPaths(Path(record.run_dir))

        def read() -> dict[str, Any]:
            log, _ = read_json_lines(paths.trainer_log)
            report = paths.root / "eval" / "report.json"
            evaluation = json.loads(report.read_text(encoding="utf-8")) \
                if report.is_file() else None
            return {"task_id": record.id, "log": log, "eval": evaluation}

        return await run_in_threadpool(read)

    @router.get("/train/{task_id}/loss.png", tags=["training"],
                response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def loss_png(task_id: str) -> Response:
        """The training-loss curve (raw and smoothed) so far."""
        record = await job(task_id)
        png = await run_in_threadpool(_loss_plot, RunPaths(Path(record.run_dir)))
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @router.post("/evaluate", tags=["training"])
    async def evaluate_model(body: EvaluateRequest) -> dict[str, Any]:
        """Evaluate a served model (or adapter) or a finished job on a dataset: loss and
        perplexity, and the generation metrics that fit the data."""

        def run() -> dict[str, Any]:
            model, adapter = _evaluated(body, registry, models, policy, settings)
            dataset = policy.path(body.dataset_path, "dataset_path")
            if not dataset.exists():
                raise NotFoundError("dataset", body.dataset_path)
            config = load_run_config(values={
                "model_name_or_path": model, "dataset": [str(dataset)],
                "max_samples": body.max_samples}, source="request")
            options = build_eval_config({
                "adapter": adapter, "metrics": body.metrics or [],
                "max_new_tokens": body.max_new_tokens}, source="request")
            with evaluating:
                return evaluate(config, options, settings)

        report = await run_in_threadpool(run)
        return json.loads(json.dumps(report, default=str))

    @router.post("/datasets", tags=["datasets"])
    async def upload_dataset(file: UploadFile, name: Annotated[str | None, Form()] = None
                             ) -> dict[str, Any]:
        """Upload a data file (JSON, JSONL, TXT, CSV, Parquet); it is read and checked as
        training reads it before it is kept (422 naming the line and field otherwise)."""
        stored = await store_upload(file, settings, max_upload_bytes, "file")
        record = await run_in_threadpool(register_upload, stored, name, settings)
        return _dataset(record)

    @router.get("/datasets", tags=["datasets"])
    async def datasets() -> dict[str, Any]:
        records = await run_in_threadpool(registry.list_datasets)
        return {"datasets": [_dataset(r) for r in records]}

    @router.get("/models", tags=["models"])
    async def listed_models() -> dict[str, Any]:
        """Published models with their versions, and what this server serves now."""

        def read() -> list[dict[str, Any]]:
            return [{"id": m.id, "name": m.name, "created": m.created, "versions": [
                {"id": v.id, "version": v.version, "run_id": v.run_id,
                 "base_model": v.base_model, "adapter_path": v.adapter_path,
                 "model_path": v.model_path, "metrics": v.metrics, "created": v.created}
                for v in registry.list_versions(m.id)]} for m in registry.list_models()]

        published = await run_in_threadpool(read)
        served = [{"id": r["id"], "kind": r["kind"], "parent": r["parent"]}
                  for r in models.listing()]
        return {"models": published, "served": served}

    @router.get("/services", tags=["models"])
    async def services() -> dict[str, Any]:
        records = await run_in_threadpool(registry.list_services)
        return {"services": [{"id": s.id, "name": s.name, "status": s.status,
                              "service_type": s.service_type, "endpoints": s.endpoints,
                              "model_version_id": s.model_version_id, "created": s.created}
                             for s in records]}

    return router


class _Recent:
    """Answers of the hot read-only endpoints (status, history), kept for RECENT_S as the
    JSON bytes they are sent as.

    Workers write a job's progress at most twice a second, so a 0.3 s old answer shows the
    same numbers; under many pollers this spares a registry read, a JSON view and FastAPI's
    validation and encoding of it per request (each request costs the server CPU that the
    training beside it on a small machine then lacks). This server's own writes (submit,
    stop, resume, delete) clear it. Several requests for the same key while it is read
    share one read.
    """

    def __init__(self) -> None:
        self._answers: dict[Any, tuple[float, asyncio.Future[bytes]]] = {}

    def clear(self) -> None:
        self._answers.clear()

    async def get(self, key: Any, read: Any) -> Response:
        now = time.monotonic()
        kept = self._answers.get(key)
        if kept is None or kept[0] < now or (kept[1].done() and kept[1].exception()):
            if len(self._answers) > RECENT_MAX:
                self._answers = {k: v for k, v in self._answers.items() if v[0] >= now}
            future = asyncio.ensure_future(run_in_threadpool(
                lambda: JSONResponse(jsonable_encoder(read())).body))
            kept = self._answers[key] = (now + RECENT_S, future)
        return Response(await asyncio.shield(kept[1]), media_type="application/json")


# -- uploads -------------------------------------------------------------------------------


async def store_upload(upload: UploadFile, settings: Settings, limit: int,
                       field: str) -> Path:
    """Write an upload under datasets/uploads/<new folder>/<its file name>, whole or not at
    all.

    Raises:
        TooLargeError: it is larger than `limit` bytes (HTTP 413).
        ConfigError: it has no usable file name.
    """
    name = Path(upload.filename or "").name
    safe = "".join(c if c in SAFE_NAME else "_" for c in name).lstrip(".")
    if not safe or "." not in safe:
        raise ConfigError.one(f"expected a file name with an extension (.json, .jsonl, .txt,"
                              f" .csv, .parquet), got {upload.filename!r}", field=field,
                              source="request")
    from tuneforge.train.run import new_run_id

    final = settings.datasets / "uploads" / new_run_id() / safe
    tmp = atomic_dir(final.parent)
    written = 0
    try:
        with (tmp / safe).open("wb") as fh:
            while chunk := await upload.read(UPLOAD_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise TooLargeError(f"expected at most {limit} bytes, got more",
                                        field=field)
                fh.write(chunk)
        commit_dir(tmp, final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def register_upload(path: Path, name: str | None, settings: Settings) -> DatasetRecord:
    """Check an uploaded file as training reads it, then register it; a file with a bad
    record is removed and the record named in the error (file, line, field).

    Raises:
        DataError: a record training could not use.
    """
    try:
        stage = data_stage(path)
        records = check_data(path, None, stage, strict=True)
    except BaseException:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    return Registry.open(settings).add_dataset(path, name=name or path.stem, format=stage,
                                               records=records)


def _dataset(record: DatasetRecord) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "path": record.path,
            "format": record.format, "records": record.records, "created": record.created}


# -- helpers -------------------------------------------------------------------------------


async def _event_stream(registry: Registry, job: JobRecord) -> AsyncIterator[str]:
    paths = RunPaths(Path(job.run_dir))
    offset, seen = 0, None
    while True:
        current = await run_in_threadpool(_job_or_none, registry, job.id)
        records, offset = await run_in_threadpool(read_json_lines, paths.events, offset)
        for record in records:
            data = record.get("data") if isinstance(record.get("data"), dict) else {}
            if record.get("action_id") == "train" and "current_steps" in data:
                yield _sse("metrics", {k: v for k, v in data.items()
                                       if k not in ("step", "total")})
            else:
                yield _sse("pipeline", record)
        if current is None:
            yield _sse("end", {"task_id": job.id, "state": "deleted"})
            return
        if current.updated != seen:
            seen = current.updated
            yield _sse("status", task_view(current))
        if current.status in ENDED and not records:
            yield _sse("end", {"task_id": job.id, "state": current.status})
            return
        await asyncio.sleep(EVENT_POLL_S)


def _job_or_none(registry: Registry, job_id: str) -> JobRecord | None:
    try:
        return registry.get_job(job_id)
    except NotFoundError:
        return None


def _sse(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


def _loss_plot(paths: RunPaths) -> bytes:
    """The run's training_loss.png, drawn again when the log is newer than it.

    Raises:
        NotFoundError: no step has been logged yet.
    """
    from tuneforge.train.plot import plot_losses

    log, png = paths.trainer_log, paths.root / "loss.png"
    if not log.is_file():
        raise NotFoundError("loss curve", paths.root.name,
                            hint="no training step has been logged yet")
    if not png.is_file() or png.stat().st_mtime < log.stat().st_mtime:
        written = plot_losses(log, png, paths.root / "eval_loss.png")
        if png not in written:
            raise NotFoundError("loss curve", paths.root.name,
                                hint="no training loss has been logged yet")
    return png.read_bytes()


def _evaluated(body: EvaluateRequest, registry: Registry, models: ServedModels,
               policy: PathPolicy, settings: Settings) -> tuple[str, str | None]:
    """(model, adapter) that an /evaluate request names."""
    if body.task_id is not None:
        record = registry.get_job(body.task_id)
        if record.status != "completed":
            raise ConfigError.one(f"expected a completed job, got {record.status}",
                                  field="task_id", source="request")
        config = load_run_config(RunPaths(Path(record.run_dir)).config, source="run")
        output = Path(record.run_dir) / "output"
        if (output / "adapter_config.json").is_file():
            return str(config.model.name_or_path), record.run_dir
        return str(output), None
    name = str(body.model_name)
    for served in models.engines():
        if name == served.name:
            return str(served.model_dir), None
        if name in served.adapters:
            return str(served.model_dir), str(served.adapters[name])
    return policy.source(name, "model_name", settings.runs), None
