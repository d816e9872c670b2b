"""The registry on real SQLite files (and a throwaway PostgreSQL when its binaries exist):
round trips, newest-first listings, lineage, not-found hints, and concurrent publishers."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuneforge.errors import ConfigError, NotFoundError
from tuneforge.registry import (
    DatasetRecord,
    ModelRecord,
    Registry,
    RunRecord,
    ServiceRecord,
)
from tuneforge.settings import Settings

WORKERS = 6
VERSIONS_EACH = 5


@pytest.fixture
def registry(url: str) -> Iterator[Registry]:
    """An open registry at `url`, closed after the test."""
    reg = Registry(url)
    yield reg
    reg.close()


def test_datasets_round_trip_newest_first_and_reuse(registry: Registry, tmp_path: Path) -> None:
    first = registry.add_dataset(str(tmp_path / "alpaca.json"), format="alpaca", records=3)
    second = registry.add_dataset(tmp_path / "chat.jsonl", name="chat")

    assert first == DatasetRecord(id=first.id, name="alpaca", path=str(tmp_path / "alpaca.json"),
                                  format="alpaca", records=3, created=first.created)
    assert first.id.startswith("ds-") and len(first.id) == 13
    assert int(first.id[3:], 16) >= 0
    assert registry.get_dataset(first.id) == first
    assert registry.get_dataset("chat") == second
    assert registry.list_datasets() == [second, first]

    # same resolved path and name: the same record, with the new count; another name: new
    again = registry.add_dataset(str(tmp_path / "." / "alpaca.json"), records=5)
    assert (again.id, again.records, again.format) == (first.id, 5, "alpaca")
    renamed = registry.add_dataset(str(tmp_path / "alpaca.json"), name="alpaca-v2")
    assert renamed.id != first.id
    assert [d.id for d in registry.list_datasets()] == [renamed.id, second.id, first.id]


def test_runs_round_trip_upsert_paging_and_status(registry: Registry) -> None:
    run = registry.save_run("r1", stage="sft", status="running", run_dir="/runs/r1",
                            base_model="tiny", name="first", dataset_ids=["ds-0000000001"])
    assert run == RunRecord(id="r1", name="first", kind="trainer", stage="sft",
                            status="running", run_dir="/runs/r1", base_model="tiny",
                            parent_run_id=None, dataset_ids=["ds-0000000001"],
                            created=run.created, updated=run.updated)
    assert registry.get_run("r1") == run

    saved = registry.save_run("r1", stage="dpo", status="queued", run_dir="/runs/r1b",
                              kind="worker")
    assert (saved.stage, saved.kind, saved.base_model, saved.created) == (
        "dpo", "worker", None, run.created)
    done = registry.set_run_status("r1", "succeeded", name="renamed")
    assert (done.status, done.name, done.run_dir, done.created) == (
        "succeeded", "renamed", "/runs/r1b", run.created)
    assert done.updated >= saved.updated >= run.updated

    for i in range(2, 8):
        registry.save_run(f"r{i}", stage="sft", status="failed" if i % 2 else "running",
                          run_dir=f"/runs/r{i}")
    assert [r.id for r in registry.list_runs()] == ["r7", "r6", "r5", "r4", "r3", "r2", "r1"]
    assert [r.id for r in registry.list_runs(limit=3, offset=2)] == ["r5", "r4", "r3"]
    assert [r.id for r in registry.list_runs(status="failed")] == ["r7", "r5", "r3"]
    assert [r.id for r in registry.list_runs(status="failed", limit=1, offset=1)] == ["r5"]
    assert registry.list_runs(status="nonesuch") == []


def test_models_versions_and_services_round_trip(registry: Registry) -> None:
    v1 = registry.publish("chat-bot", run_id=None, base_model="tiny", adapter_path="/a/1",
                          model_path=None, metrics={"loss": 0.5}, description="first")
    v2 = registry.publish("chat-bot", run_id=None, base_model="tiny", adapter_path=None,
                          model_path=Path("/m/2"))
    other = registry.publish("other", run_id=None, base_model="tiny", adapter_path=None,
                             model_path=None)
    assert (v1.version, v2.version, other.version) == (1, 2, 1)
    assert (v1.model_name, v1.metrics, v1.lineage, v1.description) == (
        "chat-bot", {"loss": 0.5}, [], "first")
    assert (v2.adapter_path, v2.model_path, v2.metrics) == (None, "/m/2", {})

    model = registry.get_model("chat-bot")
    assert model == ModelRecord(id=v1.model_id, name="chat-bot", created=model.created)
    assert registry.get_model(model.id) == registry.get_model(str(model.id)) == model
    assert [m.name for m in registry.list_models()] == ["other", "chat-bot"]
    assert registry.list_versions(model.id) == [v2, v1]
    assert registry.get_version(v1.id) == v1

    service = registry.add_service(name="svc", model_version_id=v2.id, service_type="openai",
                                   status="starting", endpoints=["http://127.0.0.1:8000"],
                                   pids=[123], config={"slots": 2})
    assert service == ServiceRecord(
        id=service.id, name="svc", model_version_id=v2.id, service_type="openai",
        status="starting", endpoints=["http://127.0.0.1:8000"], pids=[123],
        config={"slots": 2}, created=service.created, updated=service.updated)
    bare = registry.add_service(name="bare", model_version_id=None, service_type="embed",
                                status="running")
    assert (bare.endpoints, bare.pids, bare.config) == ([], [], {})
    running = registry.update_service(service.id, status="running", pids=[123, 124])
    assert (running.status, running.pids, running.endpoints, running.config) == (
        "running", [123, 124], ["http://127.0.0.1:8000"], {"slots": 2})
    assert registry.get_service(service.id) == running
    assert registry.list_services() == [bare, running]
    assert registry.list_services(status="running") == [bare, running]
    assert registry.list_services(model_version_id=v2.id) == [running]
    assert registry.list_services(status="starting") == []


def test_lineage_walks_the_parent_chain_with_datasets(registry: Registry,
                                                      tmp_path: Path) -> None:
    d1 = registry.add_dataset(str(tmp_path / "corpus.txt"), format="text")
    d2 = registry.add_dataset(str(tmp_path / "chat.json"), format="sharegpt")
    registry.save_run("A", stage="pt", status="succeeded", run_dir="/runs/A",
                      base_model="tiny", name="pretrain", dataset_ids=[d1.id])
    registry.save_run("B", stage="sft", status="succeeded", run_dir="/runs/B",
                      base_model="/runs/A/output", parent_run_id="A", dataset_ids=[d2.id])

    version = registry.publish("chat", run_id="B", base_model="tiny", adapter_path="/runs/B/o",
                               model_path=None)

    assert version.lineage == [
        {"run_id": "B", "stage": "sft", "name": None, "base_model": "/runs/A/output",
         "run_dir": "/runs/B", "datasets": [{"id": d2.id, "name": "chat", "path": d2.path}]},
        {"run_id": "A", "stage": "pt", "name": "pretrain", "base_model": "tiny",
         "run_dir": "/runs/A", "datasets": [{"id": d1.id, "name": "corpus", "path": d1.path}]},
    ]
    assert registry.get_version(version.id).lineage == version.lineage

    # a cycle (A's parent is B) ends the walk; the published lineage stays as it was
    registry.save_run("A", stage="pt", status="succeeded", run_dir="/runs/A",
                      parent_run_id="B", dataset_ids=[d1.id, "ds-unknown000"])
    again = registry.publish("chat", run_id="B", base_model="tiny", adapter_path=None,
                             model_path=None)
    assert [step["run_id"] for step in again.lineage] == ["B", "A"]
    assert again.lineage[1]["datasets"][1] == {"id": "ds-unknown000", "name": None,
                                               "path": None}
    assert registry.get_version(version.id).lineage[1]["name"] == "pretrain"


def test_unknown_ids_raise_not_found_with_a_hint(registry: Registry) -> None:
    registry.save_run("r1", stage="sft", status="running", run_dir="/runs/r1")
    with pytest.raises(NotFoundError, match="run not found: 'nope'") as err:
        registry.get_run("nope")
    assert err.value.hint == "known runs: r1"
    with pytest.raises(NotFoundError, match="no datasets are registered yet"):
        registry.get_dataset("nope")
    with pytest.raises(NotFoundError, match="run not found"):
        registry.set_run_status("nope", "failed")
    with pytest.raises(NotFoundError, match="run not found: 'ghost'"):
        registry.publish("m", run_id="ghost", base_model="tiny", adapter_path=None,
                         model_path=None)
    assert registry.list_models() == []  # the failed publish left nothing behind

    version = registry.publish("m", run_id=None, base_model="tiny", adapter_path=None,
                               model_path=None)
    with pytest.raises(NotFoundError, match="known models: m"):
        registry.get_model("nope")
    with pytest.raises(NotFoundError, match="model not found"):
        registry.get_model(version.model_id + 1)
    with pytest.raises(NotFoundError, match="model not found"):
        registry.list_versions(version.model_id + 1)
    with pytest.raises(NotFoundError, match=f"known version ids: {version.id}"):
        registry.get_version(version.id + 1)
    with pytest.raises(NotFoundError, match="model version not found"):
        registry.add_service(name="s", model_version_id=version.id + 1, service_type="openai",
                             status="starting")
    with pytest.raises(NotFoundError, match="no service ids are registered yet"):
        registry.get_service(1)
    with pytest.raises(NotFoundError, match="service not found"):
        registry.update_service(1, status="stopped")


def _publish_five(url: str, worker: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    """One concurrent publisher: its own Registry, 5 runs, 5 versions of the shared model."""
    registry = Registry(url)
    barrier.wait(timeout=60)
    for i in range(VERSIONS_EACH):
        run_id = f"w{worker}-{i}"
        registry.save_run(run_id, stage="sft", status="succeeded", run_dir=f"/runs/{run_id}")
        registry.publish("shared", run_id=run_id, base_model="tiny", adapter_path=None,
                         model_path=None, metrics={"worker": worker})
    registry.close()


def test_concurrent_publishers_get_distinct_versions(url: str) -> None:
    # spawned interpreters: each opens its own engine, as separate CLI/worker processes do.
    # The database is empty, so the workers also race to migrate it (test_migrate.py).
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    workers = [context.Process(target=_publish_five, args=(url, n, barrier))
               for n in range(WORKERS)]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 90
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        assert [w.exitcode for w in workers] == [0] * WORKERS
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()

    registry = Registry(url)
    try:
        versions = registry.list_versions(registry.get_model("shared").id)
        assert sorted(v.version for v in versions) == list(range(1, WORKERS * VERSIONS_EACH + 1))
        assert sorted(v.run_id for v in versions) == sorted(
            f"w{w}-{i}" for w in range(WORKERS) for i in range(VERSIONS_EACH))
        assert len(registry.list_runs(limit=1000)) == WORKERS * VERSIONS_EACH
    finally:
        registry.close()
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_open_uses_the_home_database_once_per_url(home: Path) -> None:
    registry = Registry.open(Settings())
    try:
        assert Registry.open(Settings()) is registry
        registry.save_run("r1", stage="sft", status="running", run_dir="/runs/r1")
        assert (home / "registry.db").is_file()
    finally:
        registry.close()
    reopened = Registry.open(Settings())
    try:
        assert reopened is not registry
        assert reopened.get_run("r1").status == "running"
    finally:
        reopened.close()


@pytest.mark.parametrize("bad", ["nosuchdb://x", "not a url", "postgresql+nosuchdriver://h/db"])
def test_a_bad_url_is_a_config_error_naming_db_url(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        Registry(bad)
    assert err.value.field == "db_url"
    assert "expected a SQLAlchemy URL" in str(err.value)
