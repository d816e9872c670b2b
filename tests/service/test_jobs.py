"""The training service's job queue over HTTP: OpenAI's fine-tuning API with the official
client, stop and resume, events and metrics, a server killed with SIGKILL and started
again, a worker that dies, and the API token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from live_server import Server, make_workdir, wait_for

pytestmark = pytest.mark.serial

LONG = {"max_steps": 400, "save_steps": 3, "logging_steps": 1, "batch_size": 1}


def _train(server: Server, base: Path, **options: Any) -> str:
    response = server.http.post("/train", json={
        "base_model": str(base), "dataset_path": "data/chat.jsonl", **options})
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


def _until(check: Any, timeout: float = 120, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _steps(server: Server, task_id: str) -> int:
    return server.http.get(f"/train/status/{task_id}").json()["current_step"] or 0


def test_openai_client_fine_tunes_and_the_model_answers(service: Server, workdir: Path,
                                                        tiny_llm_dir: Path) -> None:
    client = service.openai()
    with (workdir / "data" / "chat.jsonl").open("rb") as fh:
        uploaded = client.files.create(file=fh, purpose="fine-tune")
    assert uploaded.filename == "chat.jsonl" and uploaded.status == "processed"
    assert client.files.retrieve(uploaded.id).id == uploaded.id

    job = client.fine_tuning.jobs.create(
        model=str(tiny_llm_dir), training_file=uploaded.id, suffix="mine", seed=7,
        metadata={"team": "a"},
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 2}}})
    assert job.status == "queued" and job.metadata == {"team": "a"}
    assert job.hyperparameters.n_epochs == 2
    done = _until(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in (
        "succeeded", "failed") and j, what="the job to end")
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model and done.trained_tokens
    assert [j.id for j in client.fine_tuning.jobs.list(limit=50).data].count(job.id) == 1

    events = client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=100).data
    kinds = {e.type for e in events}
    assert kinds == {"message", "metrics"}
    assert events[0].created_at >= events[-1].created_at  # newest first
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics[0].data["train_loss"] is not None

    checkpoints = client.fine_tuning.jobs.checkpoints.list(fine_tuning_job_id=job.id).data
    assert checkpoints and checkpoints[0].step_number >= checkpoints[-1].step_number

    for model in (done.fine_tuned_model, checkpoints[0].fine_tuned_model_checkpoint):
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "question 1"}], max_tokens=4,
            temperature=0)
        assert answer.choices[0].message.content is not None
        assert answer.model == model
    # the same job through the seed's shape
    status = service.http.get(f"/train/status/{job.id}").json()
    assert status["status"] == "completed" and status["fine_tuned_model"] == job.id


def test_openai_dpo_job_on_openai_preference_data(service: Server, workdir: Path,
                                                  tiny_llm_dir: Path) -> None:
    rows = [{"input": {"messages": [{"role": "user", "content": f"pick {i}"}]},
             "preferred_output": [{"role": "assistant", "content": f"good {i}"}],
             "non_preferred_output": [{"role": "assistant", "content": f"bad {i}"}]}
            for i in range(4)]
    path = workdir / "data" / "dpo.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    client = service.openai()
    with path.open("rb") as fh:
        uploaded = client.files.create(file=fh, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=str(tiny_llm_dir), training_file=uploaded.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1}}})
    assert job.method.type == "dpo"
    done = _until(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in (
        "succeeded", "failed") and j, what="the DPO job to end")
    assert done.status == "succeeded", done.error
    config = (Path(service.http.get(f"/train/status/{job.id}").json()["run_dir"])
              / "config.yaml").read_text()
    assert "stage: dpo" in config and "pref_beta: 0.2" in config


def test_cursor_paging_lists_each_job_once(service: Server, tiny_llm_dir: Path) -> None:
    client = service.openai()
    for _ in range(2):  # queued jobs, stopped at once: nothing trains
        task = _train(service, tiny_llm_dir, max_steps=1)
        service.http.post(f"/train/{task}/stop")
    # OpenAI's pause, resume and cancel on one of them (/train's stop and resume)
    assert client.fine_tuning.jobs.resume(task).status == "queued"
    assert client.fine_tuning.jobs.pause(task).status in ("paused", "running")
    _until(lambda: client.fine_tuning.jobs.retrieve(task).status == "paused")
    assert client.fine_tuning.jobs.resume(task).status == "queued"
    assert client.fine_tuning.jobs.cancel(task).status in ("cancelled", "running")
    _until(lambda: client.fine_tuning.jobs.retrieve(task).status == "cancelled")
    seen: list[str] = []
    page = client.fine_tuning.jobs.list(limit=1)
    seen += [j.id for j in page.data]
    while page.has_next_page():
        page = page.get_next_page()
        seen += [j.id for j in page.data]
    assert len(seen) == len(set(seen)) >= 3
    history = service.http.get("/train/history", params={"limit": 2, "offset": 1}).json()
    assert len(history["tasks"]) == 2 and history["total"] == len(seen)


def test_stop_and_resume_over_http_continue_to_the_end(service: Server,
                                                       tiny_llm_dir: Path) -> None:
    task = _train(service, tiny_llm_dir, **(LONG | {"max_steps": 60}))
    _until(lambda: _steps(service, task) >= 4, what="4 steps")
    stopped = service.http.post(f"/train/{task}/stop").json()
    assert stopped["state"] in ("stopping", "stopped")
    status = wait_for(service, task, ("stopped",))
    at = status["current_step"]
    assert 0 < at < 60 and status["status"] == "stopped"
    assert service.http.post(f"/train/{task}/stop").status_code == 409

    resumed = service.http.post(f"/train/{task}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    status = wait_for(service, task, ("completed", "failed"))
    assert status["state"] == "completed", status
    assert status["current_step"] == 60 and status["attempts"] == 2
    assert service.http.post(f"/train/{task}/resume").status_code == 409

    log = service.http.get(f"/train/{task}/metrics").json()["log"]
    steps = [r["current_steps"] for r in log if r.get("loss") is not None]
    assert steps[-1] == 60 and set(range(1, 61)) <= set(steps)  # nothing lost
    png = service.http.get(f"/train/{task}/loss.png")
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    assert "resum" in service.http.get(f"/train/{task}/logs", params={"tail": 500}).text

    events = _sse(service, task)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end" and "metrics" in kinds and "pipeline" in kinds
    assert events[-2][1]["state"] == "completed"

    assert service.http.delete(f"/train/{task}").json() == {"deleted": task}
    assert service.http.get(f"/train/status/{task}").status_code == 404


def _sse(server: Server, task: str) -> list[tuple[str, Any]]:
    events = []
    with server.http.stream("GET", f"/train/{task}/events", timeout=60) as response:
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


def test_a_dead_worker_fails_its_job_and_the_server_serves_on(service: Server,
                                                              tiny_llm_dir: Path) -> None:
    task = _train(service, tiny_llm_dir, **LONG)
    _until(lambda: _steps(service, task) >= 2, what="2 steps")
    pid = json.loads(service.http.get(f"/train/status/{task}").text)["run_dir"]
    worker = _worker_pid(service, task)
    os.kill(worker, signal.SIGKILL)
    status = wait_for(service, task, ("failed",))
    assert "SIGKILL" in status["error"] and pid
    assert service.http.get("/health").status_code == 200
    # resumable: it continues from its newest checkpoint
    service.http.post(f"/train/{task}/resume")
    _until(lambda: service.http.get(f"/train/status/{task}").json()["state"] == "running")
    service.http.post(f"/train/{task}/stop")
    wait_for(service, task, ("stopped",))


def _worker_pid(server: Server, task: str) -> int:
    from tuneforge.registry import Registry
    from tuneforge.settings import Settings

    registry = Registry(Settings(home=server.home).registry_url)
    try:
        return _until(lambda: registry.get_job(task).worker_pid, what="the worker's pid")
    finally:
        registry.close()


def test_sigkill_and_restart_resume_the_job_and_keep_the_queue(
        tiny_llm_dir: Path, tmp_path: Path) -> None:
    work, home = make_workdir(tmp_path / "work"), tmp_path / "home"
    args = [f"tiny={tiny_llm_dir}", "--root", str(tiny_llm_dir)]
    first = Server(args, home, cwd=work)
    try:
        # enough steps that the worker cannot finish in the second its server's death
        # takes to notice (progress reaches the registry up to 0.5 s late)
        running = _train(first, tiny_llm_dir, **(LONG | {"max_steps": 120}))
        waiting = _train(first, tiny_llm_dir, max_steps=2)
        _until(lambda: _steps(first, running) >= 5, what="5 steps")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=30)
    finally:
        first.stop()
    # the orphaned worker checkpoints and ends `interrupted` by itself
    second = Server(args, home, cwd=work)
    try:
        status = wait_for(second, running, ("completed", "failed"))
        assert status["state"] == "completed", status
        assert status["attempts"] == 2 and status["current_step"] == 120
        log = second.http.get(f"/train/{running}/metrics").json()["log"]
        assert set(range(1, 121)) <= {r["current_steps"] for r in log}
        assert wait_for(second, waiting, ("completed",))["attempts"] == 1
    finally:
        second.stop()


def test_a_token_is_required_beyond_loopback(tiny_llm_dir: Path, tmp_path: Path) -> None:
    env = dict(os.environ, TUNEFORGE_HOME=str(tmp_path / "home"))
    env.pop("TUNEFORGE_API_TOKEN", None)
    refused = subprocess.run(
        [sys.executable, "-m", "tuneforge", "serve", "--host", "0.0.0.0", "--port", "0",
         "--worker-slots", "0", str(tiny_llm_dir)], env=env, capture_output=True, text=True,
        timeout=120)
    assert refused.returncode == 2
    assert "TUNEFORGE_API_TOKEN" in refused.stderr and "Traceback" not in refused.stderr

    server = Server(["--host", "0.0.0.0", "--worker-slots", "0", str(tiny_llm_dir)],
                    tmp_path / "home", env={"TUNEFORGE_API_TOKEN": "s3cret"})
    try:
        url = server.url.replace("0.0.0.0", "127.0.0.1")
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.get("/health").status_code == 200
            for path in ("/train/history", "/v1/models", "/models", "/openapi.json"):
                answer = http.get(path)
                assert answer.status_code == 401, path
                assert "Bearer" in answer.json()["detail"]
            assert http.get("/train/history", headers={
                "Authorization": "Bearer wrong"}).status_code == 401
            assert http.get("/train/history", headers={
                "Authorization": "Bearer s3cret"}).status_code == 200
            assert http.get("/").status_code == 200  # the page asks for the token itself
    finally:
        server.stop()
