"""Bad requests against a real `tuneforge serve`: each answers its 4xx naming the field (or
the file and line), never 500. A hand-written table first, then schemathesis over the
training service's OpenAPI operations."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from live_server import Server, wait_for

pytestmark = pytest.mark.serial

TOKEN = "bad-requests-token"
LONG_NAME = "n" * 201


@pytest.fixture(scope="module")
def places(workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Bad data files in the service's work folder, a file outside every root and a
    symlink in the work folder that points at it; the values the table's {names} take."""
    outside = tmp_path_factory.mktemp("outside-roots")
    secret = outside / "secret.jsonl"
    secret.write_text(json.dumps({"text": "not yours"}) + "\n", encoding="utf-8")
    data = workdir / "data"
    (data / "escape.jsonl").symlink_to(secret)
    good = json.dumps({"messages": [{"role": "user", "content": "q"},
                                    {"role": "assistant", "content": "a"}]})
    (data / "bad.jsonl").write_text(f"{good}\n{{\"messages\": [\n{good}\n", encoding="utf-8")
    # a bad record among good ones is dropped (as LLaMA-Factory does); with none good left
    # the data is refused, naming each bad line
    (data / "badrecords.jsonl").write_text(
        json.dumps({"messages": "not a list"}) + "\n"
        + json.dumps({"messages": [{"role": "user"}]}) + "\n", encoding="utf-8")
    (data / "empty.jsonl").write_text("", encoding="utf-8")
    # a model folder whose weights are pickled only: never loaded by the server
    pickled = workdir / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    (pickled / "pytorch_model.bin").write_bytes(b"not unpickled")
    return {"outside": str(outside), "secret": str(secret)}


@pytest.fixture(scope="module", autouse=True)
def small_starting(tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Future[Server]]:
    """A second service that runs no training (--worker-slots 0), takes uploads up to ~1 KiB
    and wants an API token; started in a thread with the module, while `service` starts."""
    home = tmp_path_factory.mktemp("small-home")
    work = tmp_path_factory.mktemp("small-work")
    args = [f"tiny={tiny_llm_dir}", "--root", str(tiny_llm_dir), "--worker-slots", "0",
            "--max-upload-mb", "0.001"]
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(Server, args, home, cwd=work, env={"TUNEFORGE_API_TOKEN": TOKEN})
        yield future
        if future.exception() is None:
            future.result().stop()


@pytest.fixture(scope="module")
def small(small_starting: Future[Server]) -> Server:
    """The second service; its client sends the token."""
    server = small_starting.result()
    server.http.headers["Authorization"] = f"Bearer {TOKEN}"
    return server


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, text in names.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_fill(v, names) for v in value)
    return value


def _train(**fields: Any) -> dict[str, Any]:
    """A POST /train body, good but for `fields` (None removes a field)."""
    body = {"base_model": "{tiny}", "dataset_path": "data/chat.jsonl", "max_steps": 1}
    return {k: v for k, v in (body | fields).items() if v is not None}


def _upload(name: str, content: bytes) -> dict[str, Any]:
    return {"files": {"file": (name, content, "application/octet-stream")}}


GOOD_LINE = b'{"messages": [{"role": "user", "content": "q"}, ' \
    b'{"role": "assistant", "content": "a"}]}\n'

# (id, method, path, request keywords for httpx, expected status, texts the detail holds)
CASES: list[tuple[str, str, str, dict[str, Any], int, tuple[str, ...]]] = [
    # POST /train: missing, empty and wrong-typed fields
    ("train-no-base_model", "POST", "/train", {"json": _train(base_model=None)}, 422,
     ("base_model", "Field required")),
    ("train-empty-base_model", "POST", "/train", {"json": _train(base_model="")}, 422,
     ("base_model",)),
    ("train-int-base_model", "POST", "/train", {"json": _train(base_model=7)}, 422,
     ("base_model",)),
    ("train-no-dataset_path", "POST", "/train", {"json": _train(dataset_path=None)}, 422,
     ("dataset_path",)),
    ("train-list-dataset_path", "POST", "/train", {"json": _train(dataset_path=["a"])}, 422,
     ("dataset_path",)),
    ("train-num_epochs-0", "POST", "/train", {"json": _train(num_epochs=0)}, 422,
     ("num_epochs",)),
    ("train-num_epochs-three", "POST", "/train", {"json": _train(num_epochs="three")}, 422,
     ("num_epochs", "'three'")),
    ("train-num_epochs-negative", "POST", "/train", {"json": _train(num_epochs=-2)}, 422,
     ("num_epochs",)),
    ("train-num_epochs-fraction", "POST", "/train", {"json": _train(num_epochs=1.5)}, 422,
     ("num_epochs",)),
    ("train-batch_size-0", "POST", "/train", {"json": _train(batch_size=0)}, 422,
     ("batch_size",)),
    ("train-batch_size-str", "POST", "/train", {"json": _train(batch_size="big")}, 422,
     ("batch_size",)),
    ("train-learning_rate-0", "POST", "/train", {"json": _train(learning_rate=0)}, 422,
     ("learning_rate",)),
    ("train-learning_rate-str", "POST", "/train", {"json": _train(learning_rate="fast")},
     422, ("learning_rate",)),
    ("train-dataset_format-unknown", "POST", "/train", {"json": _train(dataset_format="xml")},
     422, ("dataset_format", "xml")),
    ("train-stage-unknown", "POST", "/train", {"json": _train(stage="rlhf")}, 422,
     ("stage", "rlhf")),
    ("train-unknown-option", "POST", "/train", {"json": _train(lora_rnk=8)}, 422,
     ("lora_rnk",)),
    ("train-option-wrong-type", "POST", "/train", {"json": _train(lora_rank="many")}, 422,
     ("lora_rank",)),
    ("train-name-too-long", "POST", "/train", {"json": _train(name=LONG_NAME)}, 422,
     ("name",)),
    ("train-trust_remote_code", "POST", "/train", {"json": _train(trust_remote_code=True)},
     403, ("trust_remote_code",)),
    # POST /train: paths outside the roots
    ("train-dataset-etc-passwd", "POST", "/train", {"json": _train(dataset_path="/etc/passwd")},
     403, ("dataset_path", "outside")),
    ("train-dataset-dotdot", "POST", "/train",
     {"json": _train(dataset_path="../../etc/passwd")}, 403, ("dataset_path",)),
    ("train-dataset-tmp-outside", "POST", "/train",
     {"json": _train(dataset_path="{secret}")}, 403, ("dataset_path",)),
    ("train-dataset-symlink-out", "POST", "/train",
     {"json": _train(dataset_path="data/escape.jsonl")}, 403, ("dataset_path", "{secret}")),
    ("train-dataset-nul", "POST", "/train", {"json": _train(dataset_path="data/a\x00b")},
     403, ("dataset_path",)),
    ("train-eval-outside", "POST", "/train",
     {"json": _train(eval_dataset_path="/etc/hosts")}, 403, ("eval_dataset_path",)),
    ("train-output_dir-dotdot", "POST", "/train",
     {"json": _train(output_dir="../escaped")}, 403, ("output_dir",)),
    ("train-output_dir-tmp", "POST", "/train",
     {"json": _train(output_dir="{outside}/out")}, 403, ("output_dir",)),
    ("train-base_model-outside", "POST", "/train", {"json": _train(base_model="/etc")}, 403,
     ("base_model",)),
    ("train-path-option-outside", "POST", "/train",
     {"json": _train(adapter_name_or_path="/etc")}, 403, ("adapter_name_or_path",)),
    # POST /train: data that is missing or broken
    ("train-dataset-missing", "POST", "/train",
     {"json": _train(dataset_path="data/missing.jsonl")}, 422, ("dataset_path", "missing")),
    ("train-dataset-broken-json", "POST", "/train",
     {"json": _train(dataset_path="data/bad.jsonl")}, 422, ("bad.jsonl:2",)),
    ("train-dataset-bad-records", "POST", "/train",
     {"json": _train(dataset_path="data/badrecords.jsonl")}, 422,
     ("badrecords.jsonl:1", "badrecords.jsonl:2", "messages[0].content")),
    ("train-dataset-empty", "POST", "/train",
     {"json": _train(dataset_path="data/empty.jsonl")}, 422, ("empty.jsonl",)),
    # malformed bodies
    ("train-not-json", "POST", "/train",
     {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422,
     ("JSON",)),
    ("train-json-list", "POST", "/train", {"json": []}, 422, ()),
    ("train-no-body", "POST", "/train", {}, 422, ()),
    ("evaluate-not-json", "POST", "/evaluate",
     {"content": b"{\"model_name\": ", "headers": {"content-type": "application/json"}},
     422, ("JSON",)),
    # unknown task ids
    ("status-unknown", "GET", "/train/status/no-such-job", {}, 404, ("no-such-job",)),
    ("stop-unknown", "POST", "/train/no-such-job/stop", {}, 404, ("no-such-job",)),
    ("resume-unknown", "POST", "/train/no-such-job/resume", {}, 404, ("no-such-job",)),
    ("delete-unknown", "DELETE", "/train/no-such-job", {}, 404, ("no-such-job",)),
    ("events-unknown", "GET", "/train/no-such-job/events", {}, 404, ("no-such-job",)),
    ("logs-unknown", "GET", "/train/no-such-job/logs", {}, 404, ("no-such-job",)),
    ("logs-tail-0", "GET", "/train/no-such-job/logs", {"params": {"tail": 0}}, 422,
     ("tail",)),
    ("metrics-unknown", "GET", "/train/no-such-job/metrics", {}, 404, ("no-such-job",)),
    ("loss-png-unknown", "GET", "/train/no-such-job/loss.png", {}, 404, ("no-such-job",)),
    # history
    ("history-limit-0", "GET", "/train/history", {"params": {"limit": 0}}, 422, ("limit",)),
    ("history-limit-str", "GET", "/train/history", {"params": {"limit": "ten"}}, 422,
     ("limit",)),
    ("history-offset-negative", "GET", "/train/history", {"params": {"offset": -1}}, 422,
     ("offset",)),
    ("history-status-bogus", "GET", "/train/history", {"params": {"status": "bogus"}}, 422,
     ("status", "bogus")),
    # /evaluate
    ("evaluate-no-model", "POST", "/evaluate", {"json": {"dataset_path": "data/chat.jsonl"}},
     422, ("model_name", "task_id")),
    ("evaluate-both", "POST", "/evaluate", {"json": {
        "model_name": "tiny", "task_id": "x", "dataset_path": "data/chat.jsonl"}}, 422,
     ("model_name", "task_id")),
    ("evaluate-unknown-field", "POST", "/evaluate", {"json": {
        "model_name": "tiny", "dataset_path": "data/chat.jsonl", "max_sample": 3}}, 422,
     ("max_sample",)),
    ("evaluate-max_samples-0", "POST", "/evaluate", {"json": {
        "model_name": "tiny", "dataset_path": "data/chat.jsonl", "max_samples": 0}}, 422,
     ("max_samples",)),
    ("evaluate-dataset-outside", "POST", "/evaluate", {"json": {
        "model_name": "tiny", "dataset_path": "/etc/passwd"}}, 403, ("dataset_path",)),
    ("evaluate-dataset-missing", "POST", "/evaluate", {"json": {
        "model_name": "tiny", "dataset_path": "data/missing.jsonl"}}, 404, ("missing.jsonl",)),
    ("evaluate-task-unknown", "POST", "/evaluate", {"json": {
        "task_id": "no-such-job", "dataset_path": "data/chat.jsonl"}}, 404, ("no-such-job",)),
    # /models/load and vLLM's /v1/load_lora_adapter: paths inside the roots, no pickles
    ("load-model-outside", "POST", "/models/load", {"json": {
        "model_name": "m", "model_path": "/etc"}}, 403, ("model_path",)),
    ("load-adapter-escape", "POST", "/models/load", {"json": {
        "model_name": "m", "model_path": "tiny", "lora_adapter": "../../etc"}}, 403,
     ("lora_adapter",)),
    ("load-lora-outside", "POST", "/v1/load_lora_adapter", {"json": {
        "lora_name": "x", "lora_path": "/etc/ssl"}}, 403, ("lora_path",)),
    ("load-model-pickled", "POST", "/models/load", {"json": {
        "model_name": "p", "model_path": "pickled"}}, 403, ("model_path", "pickled")),
    ("evaluate-model-outside", "POST", "/evaluate", {"json": {
        "model_name": "/etc", "dataset_path": "data/chat.jsonl"}}, 403, ("model_name",)),
    # POST /datasets
    ("datasets-no-file", "POST", "/datasets", {"data": {"name": "x"}}, 422, ("file",)),
    ("datasets-no-extension", "POST", "/datasets", _upload("noext", GOOD_LINE), 422,
     ("file", "extension")),
    ("datasets-dotfile", "POST", "/datasets", _upload(".jsonl", GOOD_LINE), 422, ("file",)),
    ("datasets-broken-lines", "POST", "/datasets",
     _upload("broken.jsonl", GOOD_LINE + b"{oops\n"), 422, ("broken.jsonl:2",)),
    # an upload is refused for one bad record among good ones (training would drop it)
    ("datasets-one-bad-record", "POST", "/datasets",
     _upload("mixed.jsonl", GOOD_LINE + b'{"messages": [{"role": "user"}]}\n' + GOOD_LINE),
     422, ("mixed.jsonl:2", "messages[0].content")),
    ("datasets-empty", "POST", "/datasets", _upload("empty.jsonl", b""), 422,
     ("empty.jsonl",)),
    ("datasets-not-utf8", "POST", "/datasets", _upload("latin.jsonl", b"\xff\xfe\x00{"), 422,
     ("latin.jsonl",)),
    ("datasets-unknown-extension", "POST", "/datasets", _upload("data.exe", GOOD_LINE), 422,
     ("data.exe",)),
    # OpenAI's /v1/files and /v1/fine_tuning/jobs
    ("files-purpose-assistants", "POST", "/v1/files",
     {**_upload("ok.jsonl", GOOD_LINE), "data": {"purpose": "assistants"}}, 422,
     ("purpose", "assistants")),
    ("files-no-purpose", "POST", "/v1/files", _upload("ok.jsonl", GOOD_LINE), 422,
     ("purpose",)),
    ("files-broken", "POST", "/v1/files",
     {**_upload("bad.jsonl", b"[1, 2\n"), "data": {"purpose": "fine-tune"}}, 422,
     ("bad.jsonl:1",)),
    ("files-unknown", "GET", "/v1/files/file-nope", {}, 404, ("file-nope",)),
    ("ft-unknown-training_file", "POST", "/v1/fine_tuning/jobs", {"json": {
        "model": "tiny", "training_file": "file-nope"}}, 404, ("training_file", "file-nope")),
    ("ft-no-training_file", "POST", "/v1/fine_tuning/jobs", {"json": {"model": "tiny"}}, 422,
     ("training_file",)),
    ("ft-method-reinforcement", "POST", "/v1/fine_tuning/jobs", {"json": {
        "model": "tiny", "training_file": "file-nope", "method": {"type": "reinforcement"}}},
     422, ("method.type", "reinforcement")),
    ("ft-n_epochs-0", "POST", "/v1/fine_tuning/jobs", {"json": {
        "model": "tiny", "training_file": "file-nope", "hyperparameters": {"n_epochs": 0}}},
     422, ("n_epochs",)),
    ("ft-method-n_epochs-0", "POST", "/v1/fine_tuning/jobs", {"json": {
        "model": "tiny", "training_file": "file-nope", "method": {
            "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}}},
     422, ("n_epochs",)),
    ("ft-batch_size-str", "POST", "/v1/fine_tuning/jobs", {"json": {
        "model": "tiny", "training_file": "file-nope",
        "hyperparameters": {"batch_size": "huge"}}}, 422, ("batch_size",)),
    ("ft-learning_rate_multiplier-negative", "POST", "/v1/fine_tuning/jobs", {"json": {
        "model": "tiny", "training_file": "file-nope",
        "hyperparameters": {"learning_rate_multiplier": -1}}}, 422,
     ("learning_rate_multiplier",)),
    ("ft-unknown-hyperparameter", "POST", "/v1/fine_tuning/jobs", {"json": {
        "model": "tiny", "training_file": "file-nope", "hyperparameters": {"epochs": 2}}},
     422, ("hyperparameters.epochs",)),
    ("ft-retrieve-unknown", "GET", "/v1/fine_tuning/jobs/ftjob-nope", {}, 404,
     ("ftjob-nope",)),
    ("ft-cancel-unknown", "POST", "/v1/fine_tuning/jobs/ftjob-nope/cancel", {}, 404,
     ("ftjob-nope",)),
    ("ft-resume-unknown", "POST", "/v1/fine_tuning/jobs/ftjob-nope/resume", {}, 404,
     ("ftjob-nope",)),
    ("ft-events-unknown", "GET", "/v1/fine_tuning/jobs/ftjob-nope/events", {}, 404,
     ("ftjob-nope",)),
    ("ft-checkpoints-unknown", "GET", "/v1/fine_tuning/jobs/ftjob-nope/checkpoints", {}, 404,
     ("ftjob-nope",)),
    ("ft-list-limit-0", "GET", "/v1/fine_tuning/jobs", {"params": {"limit": 0}}, 422,
     ("limit",)),
    # wrong methods
    ("get-train", "GET", "/train", {}, 405, ()),
    ("put-status", "PUT", "/train/status/x", {}, 405, ()),
    ("get-evaluate", "GET", "/evaluate", {}, 405, ()),
    ("delete-datasets", "DELETE", "/datasets", {}, 405, ()),
    ("patch-ft-jobs", "PATCH", "/v1/fine_tuning/jobs", {}, 405, ()),
]


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text
    detail = body.get("detail") if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else json.dumps(detail)


@pytest.mark.parametrize(("method", "path", "request_kwargs", "expected", "texts"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_a_bad_request_answers_its_status_naming_the_field(
        service: Server, places: dict[str, str], tiny_llm_dir: Path, method: str, path: str,
        request_kwargs: dict[str, Any], expected: int, texts: tuple[str, ...]) -> None:
    names = places | {"tiny": str(tiny_llm_dir)}
    response = service.http.request(method, path, **_fill(request_kwargs, names))
    detail = _detail(response)
    assert response.status_code == expected, detail
    for text in _fill(texts, names):
        assert text in detail, detail
    if response.status_code in (403, 413, 422) and response.status_code != 405:
        assert response.json()["error"]["message"] == detail  # OpenAI's shape too


def test_an_upload_over_the_limit_answers_413(small: Server) -> None:
    big = GOOD_LINE * 64  # ~4 KiB against a 1 KiB limit
    for path, data in (("/datasets", {}), ("/v1/files", {"purpose": "fine-tune"})):
        response = small.http.post(path, data=data, **_upload("big.jsonl", big))
        assert response.status_code == 413, response.text
        assert "file" in _detail(response)
    response = small.http.post("/datasets", **_upload("fits.jsonl", GOOD_LINE))
    assert response.status_code == 200, response.text
    assert not list((small.home / "datasets" / "uploads").glob("*/big.jsonl"))


def test_no_token_answers_401(small: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = httpx.post(small.url + "/train", json=_train(), headers=headers)
        assert response.status_code == 401, response.text
        assert "Authorization" in _detail(response)
    assert httpx.get(small.url + "/health").status_code == 200


def test_queued_and_cancelled_jobs_do_not_resume(small: Server, tiny_llm_dir: Path) -> None:
    """--worker-slots 0: a job stays queued."""
    uploaded = small.http.post("/v1/files", data={"purpose": "fine-tune"},
                               **_upload("one.jsonl", GOOD_LINE))
    assert uploaded.status_code == 200, uploaded.text
    created = small.http.post("/v1/fine_tuning/jobs", json={
        "model": str(tiny_llm_dir), "training_file": uploaded.json()["id"]})
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    for path in (f"/train/{job_id}/resume", f"/v1/fine_tuning/jobs/{job_id}/resume"):
        response = small.http.post(path)
        assert response.status_code == 409, response.text
        assert "queued" in _detail(response)
    cancelled = small.http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    assert cancelled.json()["status"] == "cancelled", cancelled.text
    for path in (f"/train/{job_id}/resume", f"/train/{job_id}/stop"):
        response = small.http.post(path)
        assert response.status_code == 409, response.text
    assert small.http.get(f"/train/{job_id}/loss.png").status_code == 404
    assert small.http.delete(f"/train/{job_id}").status_code == 200
    assert small.http.get(f"/train/status/{job_id}").status_code == 404


def test_a_completed_job_neither_resumes_nor_stops(service: Server, tiny_llm_dir: Path) -> None:
    created = service.http.post("/train", json=_train(base_model=str(tiny_llm_dir)))
    assert created.status_code == 200, created.text
    task_id = created.json()["task_id"]
    assert wait_for(service, task_id, ("completed", "failed"))["state"] == "completed"
    for method, path in (("POST", f"/train/{task_id}/resume"),
                         ("POST", f"/train/{task_id}/stop"),
                         ("POST", f"/v1/fine_tuning/jobs/{task_id}/resume"),
                         ("POST", f"/v1/fine_tuning/jobs/{task_id}/cancel")):
        response = service.http.request(method, path)
        assert response.status_code == 409, (path, response.text)
        assert "completed" in _detail(response)


# -- schemathesis ------------------------------------------------------------------------------
# schemathesis' pytest loader (`schemathesis.pytest.from_fixture`) fails on pytest 9 (it sets
# Function._nodeid), so one test drives every operation's strategy itself.

# the training service's operations (not /models/load: it loads models)
TRAINING_PATHS = r"^/(train|datasets|models$|services|evaluate|v1/files|v1/fine_tuning)"
FUZZ_EXAMPLES = int(os.environ.get("TUNEFORGE_FUZZ_EXAMPLES", "15"))


def test_no_generated_request_answers_5xx(small: Server) -> None:
    """Schema-valid and schema-breaking requests to every training-service operation,
    against the worker-less service (so /train and /v1/fine_tuning/jobs only queue jobs,
    and request paths stay inside its roots: its tmp work folder and TUNEFORGE_HOME)."""
    import schemathesis
    from schemathesis import GenerationMode

    auth = {"Authorization": f"Bearer {TOKEN}"}
    schema = schemathesis.openapi.from_url(small.url + "/openapi.json", headers=auth) \
        .include(path_regex=TRAINING_PATHS)
    failures: list[str] = []
    calls: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        # schema-breaking cases for bodies and queries (a path parameter is any string)
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) \
            if operation.body or operation.query else (GenerationMode.POSITIVE,)
        for mode in modes:
            _fuzz(operation.as_strategy(generation_mode=mode), label, auth, calls, failures)
    assert len(calls) >= 20, calls  # every training-service operation was called
    print(f"schemathesis: {sum(calls.values())} requests over {len(calls)} operations")
    assert not failures, "\n\n".join(failures[:10])
    assert small.process.poll() is None


def _fuzz(strategy: Any, label: str, auth: dict[str, str], calls: dict[str, int],
          failures: list[str]) -> None:
    """Send FUZZ_EXAMPLES cases of `strategy`; a 5xx goes to `failures`."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error

    @given(case=strategy)
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        response = case.call(headers=auth, timeout=60)
        calls[label] = calls.get(label, 0) + 1
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except Exception as failure:  # noqa: BLE001 - every 5xx is listed by the test
            failures.append(f"{label}: {response.status_code} {response.text[:300]}\n"
                            f"{case.as_curl_command()}\n{failure}")

    with contextlib.suppress(Unsatisfiable):  # no schema-breaking case can be made
        call()
