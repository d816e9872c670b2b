"""The registry: every query lives here, and each returns plain records (records.py).

It indexes runs, datasets, published models and services; it is never the only copy of
anything (run directories and model files stay on disk). Each public method is one
transaction. Writes that allocate a unique key (a model name, a version number) retry from
the start when a concurrent writer took the key first: on PostgreSQL two writers can read
the same "latest version"; on SQLite BEGIN IMMEDIATE already keeps writers apart.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from sqlalchemy import func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tuneforge.errors import NotFoundError
from tuneforge.registry.db import (
    READ_ONLY,
    DatasetRow,
    JobRow,
    ModelRow,
    ModelVersionRow,
    RunRow,
    ServiceRow,
    create_registry_engine,
)
from tuneforge.registry.records import (
    DatasetRecord,
    JobRecord,
    ModelRecord,
    ModelVersionRecord,
    RunRecord,
    ServiceRecord,
)
from tuneforge.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_ATTEMPTS = 10
HINT_LISTED = 10


class Registry:
    """Runs, datasets, published models and services in one SQL database.

    `Registry(url)` opens (and creates) the database at any SQLAlchemy URL; `Registry.open`
    reuses one instance per URL and process.
    """

    _open: ClassVar[dict[tuple[int, str], Registry]] = {}
    _open_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = create_registry_engine(url)
        self._read_engine = self._engine.execution_options(**{READ_ONLY: True})

    @classmethod
    def open(cls, settings: Settings) -> Registry:
        """The registry at `settings.registry_url`, one instance (and engine) per URL.

        The process id is part of the key: a forked child must never reuse its parent's
        pooled SQLite connections, which is how SQLite files get corrupted.
        """
        key = (os.getpid(), settings.registry_url)
        with cls._open_lock:
            registry = cls._open.get(key)
            if registry is None:
                registry = cls._open[key] = cls(settings.registry_url)
            return registry

    def close(self) -> None:
        """Close every pooled connection; `Registry.open` then builds a new instance."""
        with self._open_lock:
            for key, registry in list(self._open.items()):
                if registry is self:
                    del self._open[key]
        self._engine.dispose()

    # -- datasets ------------------------------------------------------------------------

    def add_dataset(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        format: str | None = None,
        records: int | None = None,
    ) -> DatasetRecord:
        """Register a dataset file; the same resolved path and name returns the existing
        record, with `format` and `records` updated when given. `name` defaults to the stem.
        """
        resolved = str(Path(path).expanduser().resolve())
        name = name or Path(path).stem

        def work(session: Session) -> DatasetRecord:
            row = session.scalar(
                select(DatasetRow).where(DatasetRow.path == resolved, DatasetRow.name == name)
            )
            if row is None:
                row = DatasetRow(id="ds-" + secrets.token_hex(5), name=name, path=resolved,
                                 format=format, records=records, created=time.time())
                session.add(row)
            else:
                row.format = format if format is not None else row.format
                row.records = records if records is not None else row.records
            session.flush()
            return _dataset(row)

        return self._write(work)

    def get_dataset(self, id_or_name: str) -> DatasetRecord:
        """The dataset with this id, else the newest one with this name.

        Raises:
            NotFoundError: neither matches; the hint lists registered names.
        """
        with self._read() as session:
            row = session.get(DatasetRow, id_or_name) or session.scalar(
                select(DatasetRow).where(DatasetRow.name == id_or_name)
                .order_by(DatasetRow.created.desc(), DatasetRow.id.desc()).limit(1)
            )
            if row is None:
                names = session.scalars(select(DatasetRow.name).order_by(
                    DatasetRow.created.desc()).limit(100))
                raise NotFoundError("dataset", id_or_name, hint=_hint("datasets", names))
            return _dataset(row)

    def list_datasets(self) -> list[DatasetRecord]:
        """Every registered dataset, newest first."""
        with self._read() as session:
            rows = session.scalars(
                select(DatasetRow).order_by(DatasetRow.created.desc(), DatasetRow.id.desc())
            )
            return [_dataset(row) for row in rows]

    # -- runs ----------------------------------------------------------------------------

    def save_run(
        self,
        run_id: str,
        *,
        stage: str,
        status: str,
        run_dir: str | Path,
        base_model: str | None = None,
        name: str | None = None,
        parent_run_id: str | None = None,
        dataset_ids: Sequence[str] = (),
        kind: str = "trainer",
    ) -> RunRecord:
        """Insert the run, or replace every field of a saved one except `created`."""
        values = {"name": name, "kind": kind, "stage": stage, "status": status,
                  "run_dir": str(run_dir), "base_model": base_model,
                  "parent_run_id": parent_run_id, "dataset_ids": list(dataset_ids)}

        def work(session: Session) -> RunRecord:
            now = time.time()
            row = session.get(RunRow, run_id)
            if row is None:
                row = RunRow(id=run_id, created=now, updated=now, **values)
                session.add(row)
            else:
                for key, value in values.items():
                    setattr(row, key, value)
                row.updated = now
            session.flush()
            return _run(row)

        return self._write(work)

    def set_run_status(
        self,
        run_id: str,
        status: str,
        *,
        name: str | None = None,
        base_model: str | None = None,
        run_dir: str | Path | None = None,
    ) -> RunRecord:
        """Set a run's status, and any of `name`, `base_model`, `run_dir` given.

        Raises:
            NotFoundError: no run has this id.
        """

        def work(session: Session) -> RunRecord:
            row = self._find_run(session, run_id)
            row.status = status
            row.name = name if name is not None else row.name
            row.base_model = base_model if base_model is not None else row.base_model
            row.run_dir = str(run_dir) if run_dir is not None else row.run_dir
            row.updated = time.time()
            session.flush()
            return _run(row)

        return self._write(work)

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id.

        Raises:
            NotFoundError: no run has this id; the hint lists the newest ids.
        """
        with self._read() as session:
            return _run(self._find_run(session, run_id))

    def list_runs(
        self, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[RunRecord]:
        """Runs newest first, optionally only those with `status`, a page at a time."""
        query = select(RunRow).order_by(RunRow.created.desc(), RunRow.id.desc())
        if status is not None:
            query = query.where(RunRow.status == status)
        with self._read() as session:
            return [_run(row) for row in session.scalars(query.limit(limit).offset(offset))]

    # -- models --------------------------------------------------------------------------

    def publish(
        self,
        name: str,
        *,
        run_id: str | None,
        base_model: str,
        adapter_path: str | Path | None,
        model_path: str | Path | None,
        metrics: dict[str, Any] | None = None,
        description: str = "",
    ) -> ModelVersionRecord:
        """Publish the next version of model `name`, creating the model when the name is new.

        The lineage (the run, its parent, its parent's parent, ..., each with its datasets)
        is copied into the version now, so it survives later edits to those runs.

        Raises:
            NotFoundError: `run_id` is given but no run has it.
        """

        def work(session: Session) -> ModelVersionRecord:
            now = time.time()
            lineage = _lineage(session, run_id) if run_id is not None else []
            model = session.scalar(select(ModelRow).where(ModelRow.name == name))
            if model is None:
                model = ModelRow(name=name, created=now)
                session.add(model)
                session.flush()
            latest = session.scalar(
                select(func.max(ModelVersionRow.version)).where(ModelVersionRow.model_id
                                                                == model.id)
            )
            row = ModelVersionRow(
                model_id=model.id, version=(latest or 0) + 1, run_id=run_id,
                base_model=base_model, adapter_path=_str_or_none(adapter_path),
                model_path=_str_or_none(model_path), metrics=dict(metrics or {}),
                lineage=lineage, description=description, created=now,
            )
            session.add(row)
            session.flush()
            return _version(row, model.name)

        return self._write(work)

    def get_model(self, id_or_name: int | str) -> ModelRecord:
        """The model with this integer id or name (a string of digits is tried as an id
        when no model has it as a name).

        Raises:
            NotFoundError: no model matches; the hint lists model names.
        """
        with self._read() as session:
            row = self._find_model(session, id_or_name)
            return _model(row)

    def get_version(self, version_id: int) -> ModelVersionRecord:
        """The published version with this id (ids are unique across models).

        Raises:
            NotFoundError: no version has this id; the hint lists the newest ids.
        """
        with self._read() as session:
            found = session.execute(
                select(ModelVersionRow, ModelRow.name).join(ModelRow)
                .where(ModelVersionRow.id == version_id)
            ).first()
            if found is None:
                ids = session.scalars(select(ModelVersionRow.id)
                                      .order_by(ModelVersionRow.id.desc()).limit(100))
                raise NotFoundError("model version", str(version_id),
                                    hint=_hint("version ids", ids))
            return _version(found[0], found[1])

    def list_models(self) -> list[ModelRecord]:
        """Every published model, newest first."""
        with self._read() as session:
            return [_model(row) for row in session.scalars(
                select(ModelRow).order_by(ModelRow.id.desc()))]

    def list_versions(self, model_id: int) -> list[ModelVersionRecord]:
        """The versions of one model, newest version first.

        Raises:
            NotFoundError: no model has this id.
        """
        with self._read() as session:
            model = self._find_model(session, model_id)
            rows = session.scalars(select(ModelVersionRow).where(
                ModelVersionRow.model_id == model.id).order_by(ModelVersionRow.version.desc()))
            return [_version(row, model.name) for row in rows]

    @staticmethod
    def _find_model(session: Session, id_or_name: int | str) -> ModelRow:
        if isinstance(id_or_name, int):
            row = session.get(ModelRow, id_or_name)
        else:
            row = session.scalar(select(ModelRow).where(ModelRow.name == id_or_name))
            if row is None and id_or_name.isdigit():
                row = session.get(ModelRow, int(id_or_name))
        if row is None:
            names = session.scalars(select(ModelRow.name).order_by(ModelRow.id.desc())
                                    .limit(100))
            raise NotFoundError("model", str(id_or_name), hint=_hint("models", names))
        return row

    # -- services ------------------------------------------------------------------------

    def add_service(
        self,
        *,
        name: str,
        model_version_id: int | None,
        service_type: str,
        status: str,
        endpoints: Sequence[str] = (),
        pids: Sequence[int] = (),
        config: dict[str, Any] | None = None,
    ) -> ServiceRecord:
        """Record a service.

        Raises:
            NotFoundError: `model_version_id` is given but no version has it.
        """

        def work(session: Session) -> ServiceRecord:
            if model_version_id is not None and session.get(
                ModelVersionRow, model_version_id
            ) is None:
                raise NotFoundError("model version", str(model_version_id),
                                    hint="publish it first, or pass model_version_id=None")
            now = time.time()
            row = ServiceRow(name=name, model_version_id=model_version_id,
                             service_type=service_type, status=status,
                             endpoints=list(endpoints), pids=list(pids),
                             config=dict(config or {}), created=now, updated=now)
            session.add(row)
            session.flush()
            return _service(row)

        return self._write(work)

    def update_service(
        self,
        service_id: int,
        *,
        status: str | None = None,
        endpoints: Sequence[str] | None = None,
        pids: Sequence[int] | None = None,
        config: dict[str, Any] | None = None,
    ) -> ServiceRecord:
        """Change any of a service's status, endpoints, pids and config; others stay.

        Raises:
            NotFoundError: no service has this id.
        """

        def work(session: Session) -> ServiceRecord:
            row = self._find_service(session, service_id)
            row.status = status if status is not None else row.status
            row.endpoints = list(endpoints) if endpoints is not None else row.endpoints
            row.pids = list(pids) if pids is not None else row.pids
            row.config = dict(config) if config is not None else row.config
            row.updated = time.time()
            session.flush()
            return _service(row)

        return self._write(work)

    def get_service(self, service_id: int) -> ServiceRecord:
        """The service with this id.

        Raises:
            NotFoundError: no service has this id; the hint lists the newest ids.
        """
        with self._read() as session:
            return _service(self._find_service(session, service_id))

    def list_services(
        self, *, status: str | None = None, model_version_id: int | None = None
    ) -> list[ServiceRecord]:
        """Services newest first, optionally only those with `status` or serving a version."""
        query = select(ServiceRow).order_by(ServiceRow.id.desc())
        if status is not None:
            query = query.where(ServiceRow.status == status)
        if model_version_id is not None:
            query = query.where(ServiceRow.model_version_id == model_version_id)
        with self._read() as session:
            return [_service(row) for row in session.scalars(query)]

    # -- jobs (the training service's queue) ---------------------------------------------

    def add_job(self, job_id: str, *, kind: str, run_dir: str | Path, request: dict[str, Any],
                base_model: str | None = None, output_dir: str | Path | None = None,
                status: str = "queued") -> JobRecord:
        """Record a new job (queued unless `status` says otherwise)."""
        now = time.time()

        def work(session: Session) -> JobRecord:
            row = JobRow(id=job_id, kind=kind, status=status, run_dir=str(run_dir),
                         output_dir=_str_or_none(output_dir), base_model=base_model,
                         request=request, progress={}, error=None, worker_pid=None,
                         attempts=0, created=now, started=None, finished=None, updated=now)
            session.add(row)
            session.flush()
            return _job(row)

        return self._write(work)

    def get_job(self, job_id: str) -> JobRecord:
        """The job `job_id`.

        Raises:
            NotFoundError: no such job; the hint lists recent ones.
        """
        with self._read() as session:
            return _job(self._find_job(session, job_id))

    def list_jobs(self, *, statuses: Sequence[str] | None = None, limit: int | None = None,
                  offset: int = 0, after: str | None = None,
                  oldest_first: bool = False) -> list[JobRecord]:
        """Jobs newest first (or oldest first), of the given statuses; `after`: only those
        past that job id in this order (cursor paging)."""
        with self._read() as session:
            order = (JobRow.created.asc(), JobRow.id.asc()) if oldest_first else (
                JobRow.created.desc(), JobRow.id.desc())
            query = select(JobRow).order_by(*order).offset(offset).limit(limit)
            if statuses is not None:
                query = query.where(JobRow.status.in_(list(statuses)))
            if after is not None:
                cursor = self._find_job(session, after)
                key = (JobRow.created, JobRow.id)
                query = query.where(tuple_(*key) > (cursor.created, cursor.id)) if oldest_first \
                    else query.where(tuple_(*key) < (cursor.created, cursor.id))
            return [_job(row) for row in session.scalars(query)]

    def count_jobs(self, *, statuses: Sequence[str] | None = None) -> int:
        """How many jobs have one of `statuses` (all jobs: None)."""
        with self._read() as session:
            query = select(func.count()).select_from(JobRow)
            if statuses is not None:
                query = query.where(JobRow.status.in_(list(statuses)))
            return int(session.scalar(query) or 0)

    def update_job(self, job_id: str, *, expect: Sequence[str] | None = None,
                   **fields: Any) -> JobRecord | None:
        """Set `fields` on the job (status, progress, error, worker_pid, attempts, started,
        finished, output_dir) in one transaction; with `expect`, only while its status is
        one of those (a compare-and-set: None when it was not).

        Raises:
            NotFoundError: no such job.
        """
        unknown = set(fields) - {"status", "progress", "error", "worker_pid", "attempts",
                                 "started", "finished", "output_dir", "request"}
        if unknown:
            raise TypeError(f"update_job: unknown field(s) {', '.join(sorted(unknown))}")

        def work(session: Session) -> JobRecord | None:
            row = self._find_job(session, job_id)
            if expect is not None and row.status not in expect:
                return None
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated = time.time()
            session.flush()
            return _job(row)

        return self._write(work)

    def delete_job(self, job_id: str) -> JobRecord:
        """Remove the job's row (its run directory is the caller's to remove).

        Raises:
            NotFoundError: no such job.
        """

        def work(session: Session) -> JobRecord:
            row = self._find_job(session, job_id)
            record = _job(row)
            session.delete(row)
            return record

        return self._write(work)

    @staticmethod
    def _find_job(session: Session, job_id: str) -> JobRow:
        row = session.get(JobRow, job_id)
        if row is None:
            ids = session.scalars(select(JobRow.id).order_by(JobRow.created.desc()).limit(100))
            raise NotFoundError("job", job_id, hint=_hint("jobs", ids))
        return row

    @staticmethod
    def _find_run(session: Session, run_id: str) -> RunRow:
        row = session.get(RunRow, run_id)
        if row is None:
            raise NotFoundError("run", run_id, hint=_hint("runs", _run_ids(session)))
        return row

    @staticmethod
    def _find_service(session: Session, service_id: int) -> ServiceRow:
        row = session.get(ServiceRow, service_id)
        if row is None:
            ids = session.scalars(select(ServiceRow.id).order_by(ServiceRow.id.desc())
                                  .limit(100))
            raise NotFoundError("service", str(service_id), hint=_hint("service ids", ids))
        return row

    # -- transactions --------------------------------------------------------------------

    def _write(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one write transaction; run it again from the start when a unique
        key it allocated was taken by a concurrent writer (IntegrityError)."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with Session(self._engine, expire_on_commit=False) as session, session.begin():
                    return work(session)
            except IntegrityError:
                if attempt == WRITE_ATTEMPTS:
                    raise
                logger.debug("registry write lost a race for a unique key (attempt %d)", attempt)
                time.sleep(random.uniform(0, 0.01 * attempt))
        raise AssertionError("unreachable")

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A session whose transaction only reads: on SQLite it never takes the write lock."""
        with Session(self._read_engine) as session:
            yield session


def _lineage(session: Session, run_id: str) -> list[dict[str, Any]]:
    """The run, then its parent, and so on; stops at a run seen before (a cycle) and keeps
    an unregistered parent as an entry with only its id."""
    steps: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: str | None = run_id
    while current is not None and current not in seen:
        seen.add(current)
        run = session.get(RunRow, current)
        if run is None and current == run_id:
            raise NotFoundError("run", run_id, hint=_hint("runs", _run_ids(session)))
        if run is None:
            steps.append({"run_id": current, "stage": None, "name": None, "base_model": None,
                          "run_dir": None, "datasets": []})
            break
        steps.append({"run_id": run.id, "stage": run.stage, "name": run.name,
                      "base_model": run.base_model, "run_dir": run.run_dir,
                      "datasets": _datasets_of(session, run.dataset_ids)})
        current = run.parent_run_id
    return steps


def _datasets_of(session: Session, ids: list[str]) -> list[dict[str, Any]]:
    """`{"id", "name", "path"}` for each id in order; an unregistered id keeps its id only."""
    rows = {row.id: row for row in session.scalars(
        select(DatasetRow).where(DatasetRow.id.in_(ids)))} if ids else {}
    return [{"id": i, "name": rows[i].name if i in rows else None,
             "path": rows[i].path if i in rows else None} for i in ids]


def _run_ids(session: Session) -> Iterable[str]:
    return session.scalars(select(RunRow.id).order_by(RunRow.created.desc()).limit(100))


def _hint(what: str, values: Iterable[object]) -> str:
    """'known runs: a, b, c and 4 more', newest first, or that there are none yet."""
    unique = list(dict.fromkeys(str(v) for v in values))
    if not unique:
        return f"no {what} are registered yet"
    shown = ", ".join(unique[:HINT_LISTED])
    more = len(unique) - HINT_LISTED
    return f"known {what}: {shown}" + (f" and {more} more" if more > 0 else "")


def _str_or_none(value: str | Path | None) -> str | None:
    return None if value is None else str(value)


def _dataset(row: DatasetRow) -> DatasetRecord:
    return DatasetRecord(id=row.id, name=row.name, path=row.path, format=row.format,
                         records=row.records, created=row.created)


def _run(row: RunRow) -> RunRecord:
    return RunRecord(id=row.id, name=row.name, kind=row.kind, stage=row.stage,
                     status=row.status, run_dir=row.run_dir, base_model=row.base_model,
                     parent_run_id=row.parent_run_id, dataset_ids=list(row.dataset_ids),
                     created=row.created, updated=row.updated)


def _model(row: ModelRow) -> ModelRecord:
    return ModelRecord(id=row.id, name=row.name, created=row.created)


def _version(row: ModelVersionRow, model_name: str) -> ModelVersionRecord:
    return ModelVersionRecord(
        id=row.id, model_id=row.model_id, model_name=model_name, version=row.version,
        run_id=row.run_id, base_model=row.base_model, adapter_path=row.adapter_path,
        model_path=row.model_path, metrics=dict(row.metrics), lineage=list(row.lineage),
        description=row.description, created=row.created,
    )


def _service(row: ServiceRow) -> ServiceRecord:
    return ServiceRecord(
        id=row.id, name=row.name, model_version_id=row.model_version_id,
        service_type=row.service_type, status=row.status, endpoints=list(row.endpoints),
        pids=list(row.pids), config=dict(row.config), created=row.created, updated=row.updated,
    )


def _job(row: JobRow) -> JobRecord:
    return JobRecord(
        id=row.id, kind=row.kind, status=row.status, run_dir=row.run_dir,
        output_dir=row.output_dir, base_model=row.base_model, request=dict(row.request),
        progress=dict(row.progress), error=row.error, worker_pid=row.worker_pid,
        attempts=row.attempts, created=row.created, started=row.started,
        finished=row.finished, updated=row.updated,
    )
