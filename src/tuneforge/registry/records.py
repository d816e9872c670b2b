"""What the registry hands back: plain frozen values, never live ORM rows.

A caller can keep, compare or pickle a record after the session that read it is gone.
Timestamps are float seconds since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DatasetRecord:
    """A registered dataset file."""

    id: str
    name: str
    path: str
    format: str | None
    records: int | None
    created: float


@dataclass(frozen=True)
class RunRecord:
    """A training run as indexed; the run directory holds the rest."""

    id: str
    name: str | None
    kind: str
    stage: str
    status: str
    run_dir: str
    base_model: str | None
    parent_run_id: str | None
    dataset_ids: list[str]
    created: float
    updated: float


@dataclass(frozen=True)
class ModelRecord:
    """A published model name; its versions are ModelVersionRecords."""

    id: int
    name: str
    created: float


@dataclass(frozen=True)
class ModelVersionRecord:
    """One published version, with the lineage of runs and datasets it came from."""

    id: int
    model_id: int
    model_name: str
    version: int
    run_id: str | None
    base_model: str
    adapter_path: str | None
    model_path: str | None
    metrics: dict[str, Any]
    lineage: list[dict[str, Any]]
    description: str
    created: float


@dataclass(frozen=True)
class ServiceRecord:
    """A serving deployment: its processes, endpoints and config."""

    id: int
    name: str
    model_version_id: int | None
    service_type: str
    status: str
    endpoints: list[str]
    pids: list[int]
    config: dict[str, Any]
    created: float
    updated: float


@dataclass(frozen=True)
class JobRecord:
    """A job of the training service. `status`: queued, running, stopping, cancelling,
    completed, failed, stopped, cancelled or interrupted. `progress`: the worker's latest
    {phase, step, total, loss, eval_loss, epoch, eta_s, tokens, ...}; `request`: what the
    client asked, in the shape of the face that asked ({"api": ..., "body": ...})."""

    id: str
    kind: str
    status: str
    run_dir: str
    output_dir: str | None
    base_model: str | None
    request: dict[str, Any]
    progress: dict[str, Any]
    error: str | None
    worker_pid: int | None
    attempts: int
    created: float
    started: float | None
    finished: float | None
    updated: float
