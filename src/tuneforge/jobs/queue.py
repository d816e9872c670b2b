"""The training service's job queue: jobs in the registry, run by worker processes.

A job is a trainer run (pipeline/trainers.py) whose trainer.json the server wrote when the
request came in (`FinetuneTrainer.prepare`); its row in the registry's `jobs` table is
written before the request returns. A scheduler thread in the server starts the oldest
queued jobs while fewer than `slots` workers run; each worker is its own process
(`python -m tuneforge.jobs.worker RUN_DIR`), which loads the trainer, resumes it (from the
first action, or from where an earlier attempt stopped) and writes the job's progress and
final status to the registry itself.

Statuses: queued -> running -> completed | failed | stopped | cancelled | interrupted, with
stopping and cancelling in between when a stop or cancel was asked while it ran.

Restart safety: a worker whose server is gone (SIGKILL, crash, shutdown) checkpoints at the
next step and ends `interrupted`; a new server finds running jobs whose worker died without
a word and marks them interrupted too. With `auto_resume`, interrupted jobs are queued again
and continue from their newest checkpoint. A worker that dies on its own (OOM, crash) while
its server lives leaves its job `failed`, with the reason from its log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tuneforge.errors import StateError
from tuneforge.pipeline.trainers import FinetuneTrainer
from tuneforge.registry import JobRecord, Registry
from tuneforge.settings import Settings

logger = logging.getLogger(__name__)

ACTIVE = ("running", "stopping", "cancelling")  # a worker runs (or ran) it
ENDED = ("completed", "failed", "stopped", "cancelled", "interrupted")
RESUMABLE = ("stopped", "interrupted", "failed")
WORKER_LOG = "worker.log"
# set in a job's progress by its worker once SIGTERM stops it gracefully; before that, a stop
# is only recorded, and the worker reads it when it gets there
READY = "worker_ready"
SERVER_PID_ENV = "TUNEFORGE_JOB_SERVER_PID"  # the worker ends `interrupted` when it is gone
LOG_TAIL_LINES = 12


class JobQueue:
    """Jobs of one TUNEFORGE_HOME, run `slots` at a time by worker processes.

    `start()` recovers what an earlier server left and starts the scheduler thread;
    `close()` stops the thread (workers notice their server is gone and end interrupted).
    """

    def __init__(self, settings: Settings, *, slots: int = 1, auto_resume: bool = True,
                 poll_s: float = 0.5) -> None:
        self.settings, self.slots, self.auto_resume = settings, slots, auto_resume
        self.poll_s = poll_s
        self.registry = Registry.open(settings)
        self._workers: dict[str, subprocess.Popen[bytes]] = {}  # ours, by job id
        self._foreign: dict[str, int] = {}  # an earlier server's workers still alive
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> JobQueue:
        self._recover()
        self._thread = threading.Thread(target=self._loop, name="tuneforge-jobs", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- requests -----------------------------------------------------------------------------

    def submit(self, trainer: FinetuneTrainer, request: dict[str, Any], *,
               output_dir: Path | None = None, base_model: str | None = None) -> JobRecord:
        """Write the trainer's run and queue it; the job is in the registry on return."""
        trainer.prepare()
        job = self.registry.add_job(
            trainer.run_id, kind=type(trainer).__name__, run_dir=trainer.paths.root,
            request=request, base_model=base_model or trainer.base_model or trainer.train_type,
            output_dir=output_dir)
        self._wake.set()
        return job

    def stop(self, job_id: str, *, cancel: bool = False) -> JobRecord:
        """Stop a job: a queued one at once; a running one checkpoints at its next step and
        ends stopped (cancel: cancelled, which `resume` does not continue).

        Raises:
            NotFoundError: no such job.
            StateError: it has ended already (HTTP 409).
        """
        ended, asking = ("cancelled", "cancelling") if cancel else ("stopped", "stopping")
        now = time.time()
        job = self.registry.update_job(job_id, expect=("queued",), status=ended, finished=now)
        if job is not None:
            return job
        job = self.registry.update_job(job_id, expect=("running", "stopping"), status=asking)
        if job is not None:
            if job.progress.get(READY):  # else the worker reads the status once it is ready
                self._signal(job)
            return job
        job = self.registry.get_job(job_id)
        if job.status in ("stopping", "cancelling"):
            return job
        raise StateError(f"job {job_id} has ended ({job.status}); there is nothing to stop",
                         hint="resume continues a stopped, interrupted or failed job")

    def resume(self, job_id: str) -> JobRecord:
        """Queue a stopped, interrupted or failed job again; it continues from its newest
        checkpoint without redoing finished actions.

        Raises:
            NotFoundError: no such job.
            StateError: it is queued, running, completed or cancelled (HTTP 409).
        """
        job = self.registry.update_job(job_id, expect=RESUMABLE, status="queued", error=None,
                                       finished=None)
        if job is None:
            status = self.registry.get_job(job_id).status
            raise StateError(f"job {job_id} is {status}; only a stopped, interrupted or "
                             "failed job can be resumed")
        self._wake.set()
        return job

    def delete(self, job_id: str) -> JobRecord:
        """Forget a job that is not running and remove its run directory.

        Raises:
            NotFoundError: no such job.
            StateError: a worker runs it (HTTP 409): stop it first.
        """
        job = self.registry.get_job(job_id)
        if job.status in ACTIVE:
            raise StateError(f"job {job_id} is {job.status}; stop it before deleting it")
        job = self.registry.delete_job(job_id)
        run_dir = Path(job.run_dir)
        if run_dir.parent == self.settings.runs and run_dir.is_dir():
            shutil.rmtree(run_dir, ignore_errors=True)
        return job

    def running(self) -> int:
        with self._lock:
            return len(self._workers) + len(self._foreign)

    # -- the scheduler ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                self._tick()
            except Exception:  # keep scheduling; one bad row must not stop the queue
                logger.exception("job scheduler")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _tick(self) -> None:
        self._reap()
        if self.auto_resume:
            for job in self.registry.list_jobs(statuses=("interrupted",), oldest_first=True):
                if self.registry.update_job(job.id, expect=("interrupted",), status="queued",
                                            finished=None) is not None:
                    logger.info("job %s: interrupted; queued again to resume", job.id)
        free = self.slots - self.running()
        if free <= 0:
            return
        for job in self.registry.list_jobs(statuses=("queued",), oldest_first=True,
                                           limit=free):
            self._launch(job)

    def _launch(self, job: JobRecord) -> None:
        claimed = self.registry.update_job(job.id, expect=("queued",), status="running",
                                           started=time.time(), attempts=job.attempts + 1,
                                           error=None, progress=job.progress | {READY: False})
        if claimed is None:  # stopped or deleted meanwhile
            return
        run_dir = Path(job.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, TUNEFORGE_HOME=str(self.settings.home),
                   **{SERVER_PID_ENV: str(os.getpid())})
        if self.settings.db_url:
            env["TUNEFORGE_DB_URL"] = self.settings.db_url
        if self.settings.runs_dir:
            env["TUNEFORGE_RUNS_DIR"] = str(self.settings.runs_dir)
        try:
            with (run_dir / WORKER_LOG).open("ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "tuneforge.jobs.worker", str(run_dir)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        except OSError as exc:  # no process, no file: the job cannot start here
            self.registry.update_job(job.id, status="failed", finished=time.time(),
                                     error=f"cannot start a worker: {exc}")
            return
        self.registry.update_job(job.id, worker_pid=process.pid)
        with self._lock:
            self._workers[job.id] = process
        logger.info("job %s: worker %d started (attempt %d)", job.id, process.pid,
                    job.attempts + 1)

    def _reap(self) -> None:
        """Settle the jobs of workers that ended."""
        with self._lock:
            ended = {i: p.returncode for i, p in self._workers.items() if p.poll() is not None}
            gone = [i for i, pid in self._foreign.items() if not _alive(pid, i)]
            for job_id in ended:
                del self._workers[job_id]
            for job_id in gone:
                del self._foreign[job_id]
        for job_id, code in ended.items():
            self._settle(job_id, code, interrupted=False)
        for job_id in gone:
            self._settle(job_id, None, interrupted=True)

    def _settle(self, job_id: str, code: int | None, *, interrupted: bool) -> None:
        """A worker ended: when it did not write the job's final status, write it here."""
        with contextlib.suppress(Exception):
            job = self.registry.get_job(job_id)
            if job.status not in ACTIVE:
                return
            if interrupted:
                status, error = "interrupted", "its server stopped while it ran"
            else:
                status, error = "failed", _death(code, Path(job.run_dir) / WORKER_LOG)
            self.registry.update_job(job_id, expect=ACTIVE, status=status, error=error,
                                     finished=time.time(), worker_pid=None)
            logger.warning("job %s: %s (%s)", job_id, status, error)

    def _recover(self) -> None:
        """What an earlier server left: workers still alive are watched until they end;
        jobs whose worker is gone are interrupted. Queued jobs stay queued."""
        for job in self.registry.list_jobs(statuses=ACTIVE, oldest_first=True):
            if job.worker_pid is not None and _alive(job.worker_pid, job.id):
                with self._lock:
                    self._foreign[job.id] = job.worker_pid
                logger.info("job %s: worker %d of an earlier server still runs", job.id,
                            job.worker_pid)
            else:
                self._settle(job.id, None, interrupted=True)

    def _signal(self, job: JobRecord) -> None:
        """Ask the job's worker to stop at its next step (SIGTERM; the worker checkpoints)."""
        pid = job.worker_pid
        if pid is not None and _alive(pid, job.id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def _alive(pid: int, job_id: str) -> bool:
    """Whether `pid` is a live worker of `job_id` (not a reused pid; zombies are dead)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else ""
    return state != "Z" and b"tuneforge.jobs.worker" in cmdline and job_id.encode() in cmdline


def _death(code: int | None, log: Path) -> str:
    """Why a worker ended without a word: its exit status and the end of its log."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"the worker was killed by {name}" + (
            " (out of memory?)" if -code == signal.SIGKILL else "")
    else:
        how = f"the worker exited with status {code}"
    tail = ""
    if log.is_file():
        lines = [line for line in log.read_text(encoding="utf-8", errors="replace")
                 .splitlines() if line.strip()]
        tail = "; log: " + " | ".join(lines[-LOG_TAIL_LINES:]) if lines else ""
    return how + tail
