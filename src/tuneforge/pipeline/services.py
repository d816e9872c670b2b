"""Published models and the services that host them (Qianfan's `qianfan.trainer.model`).

`Model(id, version_id)` is a version in the registry; `publish()` registers a run's result,
`deploy(DeployConfig)` starts `replicas` `tuneforge serve` processes (or reuses running
ones) and returns the `Service`, `exec(input)` answers (through its service when deployed,
else in this process), `batch_run(dataset)` answers every record. A `Service` talks to its
server processes over HTTP (OpenAI's API), reports its status, and can be listed and stopped.
Answers are dicts with Qianfan's `result` (the text) beside the OpenAI response `body`.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError, NotFoundError, StateError, UserError
from tuneforge.pipeline.configs import DeployConfig
from tuneforge.pipeline.consts import ServiceStatus, ServiceType
from tuneforge.pipeline.dataset import Dataset
from tuneforge.registry import ModelVersionRecord, Registry, ServiceRecord
from tuneforge.settings import Settings

READY = re.compile(rb"tuneforge serving on (http://\S+)")
START_TIMEOUT_S = 300.0  # loading a model on a busy 2-core machine
REQUEST_TIMEOUT_S = 600.0
# DeployConfig.extras keys that become `tuneforge serve` options
SERVE_OPTIONS = ("max_batch", "max_queue", "max_adapters", "backend", "weights", "api_key")


class DeployError(UserError):
    """A server process did not come up; the message holds the end of its log."""


class Model:
    """A published model version; see the module docstring."""

    def __init__(self, id: int | str | None = None, version_id: int | None = None,  # noqa: A002
                 task_id: str | None = None, job_id: str | None = None,
                 name: str | None = None, *, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.id, self.version_id, self.name = id, version_id, name
        self.task_id, self.job_id = task_id, job_id or task_id
        self.service: Service | None = None
        self._engine: Any = None
        if version_id is not None or id is not None:
            self._bind(self._version())

    @property
    def registry(self) -> Registry:
        return Registry.open(self.settings)

    def _version(self) -> ModelVersionRecord:
        if self.version_id is not None:
            return self.registry.get_version(int(self.version_id))
        model = self.registry.get_model(self.id if self.id is not None else str(self.name))
        versions = self.registry.list_versions(model.id)
        if not versions:
            raise NotFoundError("model version", f"{model.name} (any)",
                                hint="publish() a trained run first")
        return versions[0]

    def _bind(self, version: ModelVersionRecord) -> None:
        self.id, self.version_id, self.name = version.model_id, version.id, version.model_name
        self.task_id = self.job_id = version.run_id
        self.record = version

    # -- publish / deploy --------------------------------------------------------------------

    def publish(self, name: str = "", *, description: str = "",
                metrics: dict[str, Any] | None = None, **kwargs: Any) -> Model:
        """Register the trained run `task_id` as a new version of `name` (default
        m_<task_id>) with `metrics` (default: the training's); a model already published is
        returned as is.

        Raises:
            StateError: no run to publish, or the run has not finished.
        """
        if self.version_id is not None:
            return self
        if self.task_id is None:
            raise StateError("expected a trained run to publish: Model(task_id=<run id>)")
        run = self.registry.get_run(str(self.task_id))
        state_file = Path(run.run_dir) / "state.json"
        state = json.loads(state_file.read_text(encoding="utf-8")) \
            if state_file.is_file() else {}
        if state.get("status") != "completed" or not state.get("output"):
            raise StateError(f"run {run.id}: expected a completed training, got "
                             f"{state.get('status', 'no state.json')}", hint="resume it first")
        output = Path(state["output"])
        adapter = (output / "adapter_config.json").is_file()
        version = self.registry.publish(
            name or self.name or f"m_{run.id}", run_id=run.id,
            base_model=str(run.base_model), adapter_path=str(output) if adapter else None,
            model_path=None if adapter else str(output),
            metrics=metrics if metrics is not None else state.get("metrics"),
            description=description)
        self._bind(version)
        return self

    def deploy(self, deploy_config: DeployConfig | None = None, **kwargs: Any) -> Service:
        """Start (or reuse) the service hosting this version; see Service.deploy."""
        self.publish()
        service = Service(model=self, deploy_config=deploy_config or DeployConfig(),
                          settings=self.settings)
        self.service = service.deploy()
        return self.service

    # -- answering ---------------------------------------------------------------------------

    def exec(self, input: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        """Answer `input` ({"messages": [...]} for chat, {"prompt": ...} for completion):
        through the deployed service, or with the model loaded in this process."""
        if self.service is not None:
            return self.service.exec(input, **kwargs)
        from tuneforge.serve.requests import GenerationRequest

        engine = self._local_engine()
        body = _check_input(input, ServiceType.Chat if input and "messages" in input
                            else ServiceType.Completion)
        settings = {"max_tokens": 128, "temperature": 0.0} | {
            k: v for k, v in kwargs.items() if k in GenerationRequest.model_fields}
        request = GenerationRequest(messages=tuple(body["messages"])
                                    if "messages" in body else None,
                                    prompt=body.get("prompt"), adapter=self._adapter_name(),
                                    **settings)
        answer = engine.complete(request)
        return {"result": answer.text, "finish_reason": answer.finish_reason,
                "usage": {"prompt_tokens": answer.usage.prompt_tokens,
                          "completion_tokens": answer.usage.completion_tokens,
                          "total_tokens": answer.usage.total_tokens}}

    def batch_run(self, dataset: Dataset, *, output_field: str = "output",
                  **kwargs: Any) -> Dataset:
        """Answer every record of `dataset` (chat: its messages/conversations up to the last
        user turn; alpaca: instruction + input; else prompt/text/query) and return the
        records with the answer in `output_field`."""
        rows = []
        for row in dataset.rows():
            answer = self.exec(_request_of(row), **kwargs)
            rows.append(dict(row) | {output_field: answer["result"]})
        return Dataset.create_from_pyobj(rows, name=f"{dataset.name}_{self.name}_output")

    def close(self) -> None:
        """Free the model loaded in this process by exec() (the service keeps running)."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def _adapter_name(self) -> str | None:
        return self.name if self.record.adapter_path else None

    def _local_engine(self) -> Any:
        if self.version_id is None:
            self.publish()
        if self._engine is None:
            from tuneforge.serve.engine import Engine

            record = self.record
            source = record.model_path or record.base_model
            engine = Engine(source, self.settings, max_batch=4).start()
            if record.adapter_path:
                engine.load_adapter(str(self.name), record.adapter_path)
            self._engine = engine
        return self._engine

    # -- persistence -------------------------------------------------------------------------

    def dumps(self) -> bytes | None:
        return json.dumps({"id": self.id, "version_id": self.version_id, "name": self.name,
                           "task_id": self.task_id, "job_id": self.job_id,
                           "service_id": self.service.id if self.service else None}).encode()

    def loads(self, data: bytes) -> Model:
        saved = json.loads(data)
        self.task_id, self.job_id = saved.get("task_id"), saved.get("job_id")
        self.id, self.version_id, self.name = saved["id"], saved["version_id"], saved["name"]
        if self.version_id is not None:
            self._bind(self._version())
        if saved.get("service_id") is not None:
            self.service = Service(id=saved["service_id"], settings=self.settings)
        return self

    def __repr__(self) -> str:
        return f"Model(id={self.id}, version_id={self.version_id}, name={self.name!r})"


class Service:
    """Server processes hosting a model version; see the module docstring."""

    def __init__(self, id: int | None = None, endpoint: str | None = None,  # noqa: A002
                 model: Model | str | None = None, deploy_config: DeployConfig | None = None,
                 service_type: ServiceType | None = None, *,
                 settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.id, self.endpoint = id, endpoint
        # a model named by its registry name (or id): its newest version
        self.model = Model(id=model, settings=self.settings) if isinstance(model, str) \
            else model
        self.deploy_config = deploy_config
        self.service_type = ServiceType(service_type or (
            deploy_config.service_type if deploy_config else ServiceType.Chat))
        self.endpoints: list[str] = [endpoint] if endpoint else []
        self.served_name: str | None = None
        self._turn = itertools.count()
        if id is not None:
            self._bind(Registry.open(self.settings).get_service(id))

    def _bind(self, record: ServiceRecord) -> None:
        self.id, self.endpoints = record.id, list(record.endpoints)
        self.endpoint = self.endpoints[0] if self.endpoints else None
        self.service_type = ServiceType(record.service_type)
        self.served_name = (record.config or {}).get("served_name")
        self.deploy_config = DeployConfig(**(record.config or {}).get("deploy_config", {}))
        if record.model_version_id is not None and self.model is None:
            self.model = Model(version_id=record.model_version_id, settings=self.settings)
        self.record = record

    @classmethod
    def list(cls, *, status: ServiceStatus | None = None,
             settings: Settings | None = None) -> list[Service]:
        """The recorded services (with `status`: in that status), newest first; a Deployed
        service whose processes are gone is marked DeployStopped on the way."""
        settings = settings or Settings()
        services = [cls(id=r.id, settings=settings)
                    for r in Registry.open(settings).list_services()]
        return [s for s in services if status is None or s.status is ServiceStatus(status)]

    # -- lifecycle ---------------------------------------------------------------------------

    def deploy(self, **kwargs: Any) -> Service:
        """Start `replicas` server processes for the model (a running service for the same
        version and type is reused) and record the Service with its endpoints.

        Raises:
            ConfigError: no model to deploy.
            DeployError: a server process ended or did not answer in time (its log's end).
        """
        if self.model is None:
            raise ConfigError.one("expected the model to deploy", field="model",
                                  source="Service")
        self.model.publish()
        config = self.deploy_config or DeployConfig()
        registry = Registry.open(self.settings)
        for record in registry.list_services(status=ServiceStatus.Deployed.value,
                                             model_version_id=self.model.version_id):
            if record.service_type == self.service_type.value and _alive(record):
                self._bind(record)
                return self
        version = self.model.record
        served = config.name or str(self.model.name)
        record = registry.add_service(
            name=served, model_version_id=version.id, service_type=self.service_type.value,
            status=ServiceStatus.Deploying.value,
            config={"deploy_config": config.model_dump(mode="json"), "served_name": served})
        folder = self.settings.home / "services" / str(record.id)
        folder.mkdir(parents=True, exist_ok=True)
        command = _serve_command(version, served, config)
        processes: list[subprocess.Popen[bytes]] = []
        try:
            endpoints = []
            for replica in range(config.replicas):
                process, url = _start(command, folder / f"replica-{replica}.log", self.settings)
                processes.append(process)
                endpoints.append(url)
        except BaseException:
            for process in processes:
                _terminate(process.pid)
            registry.update_service(record.id, status=ServiceStatus.DeployFailed.value,
                                    pids=[p.pid for p in processes])
            raise
        self._bind(registry.update_service(
            record.id, status=ServiceStatus.Deployed.value, endpoints=endpoints,
            pids=[p.pid for p in processes]))
        return self

    @property
    def status(self) -> ServiceStatus:
        """Deployed while its processes run; DeployStopped once they are gone.

        Raises:
            NotFoundError: the service was never deployed.
        """
        if self.id is None:
            raise NotFoundError("service", "(not deployed)", hint="deploy() it first")
        record = Registry.open(self.settings).get_service(self.id)
        if record.status == ServiceStatus.Deployed.value and not _alive(record):
            record = Registry.open(self.settings).update_service(
                record.id, status=ServiceStatus.DeployStopped.value)
        return ServiceStatus(record.status)

    def stop(self) -> Service:
        """Stop the server processes (SIGTERM, then SIGKILL after 20 s)."""
        if self.id is None:
            return self
        registry = Registry.open(self.settings)
        for pid in registry.get_service(self.id).pids:
            _terminate(pid)
        self._bind(registry.update_service(self.id, status=ServiceStatus.DeployStopped.value))
        return self

    # -- answering ---------------------------------------------------------------------------

    def exec(self, input: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        """Chat ({"messages": [...]}), completion ({"prompt": ...}) or embedding
        ({"texts": [...]}, or "input") over HTTP; kwargs are OpenAI request fields."""
        body = _check_input(input, self.service_type)
        if self.service_type is ServiceType.Embedding:
            return self.get_res().do(texts=body.get("texts") or body.get("input"), **kwargs)
        return self.get_res().do(**body, **kwargs)

    def get_res(self) -> ChatCompletion | Completion | Embedding:
        """A client of the service's kind: ChatCompletion, Completion or Embedding, each
        with Qianfan's `do(...)`."""
        if not self.endpoints:
            raise StateError(f"service {self.id}: expected a deployed service, got none",
                             hint="deploy() it first")
        endpoint = self.endpoints[next(self._turn) % len(self.endpoints)]
        kind = {ServiceType.Chat: ChatCompletion, ServiceType.Completion: Completion,
                ServiceType.Embedding: Embedding}[self.service_type]
        api_key = ((self.deploy_config.extras or {}).get("api_key")
                   if self.deploy_config else None)
        return kind(endpoint, str(self.served_name), api_key=api_key)

    def dumps(self) -> bytes | None:
        return json.dumps({"id": self.id, "endpoint": self.endpoint,
                           "service_type": self.service_type.value}).encode()

    def loads(self, data: bytes) -> Service:
        saved = json.loads(data)
        if saved.get("id") is not None:
            self._bind(Registry.open(self.settings).get_service(saved["id"]))
        else:
            self.endpoint, self.service_type = saved["endpoint"], ServiceType(
                saved["service_type"])
        return self

    def __repr__(self) -> str:
        return f"Service(id={self.id}, endpoint={self.endpoint!r}, type={self.service_type})"


class _Resource:
    """One endpoint and the model name requests carry."""

    path = ""

    def __init__(self, endpoint: str, model: str, *, api_key: str | None = None) -> None:
        self.endpoint, self.model = endpoint.rstrip("/"), model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        response = httpx.post(f"{self.endpoint}{self.path}", json={"model": self.model} | body,
                              headers=self.headers, timeout=REQUEST_TIMEOUT_S)
        if response.status_code >= 400:
            raise UserError(f"{self.path}: the service answered {response.status_code}: "
                            f"{response.text[:500]}")
        return response.json()


class ChatCompletion(_Resource):
    """Qianfan's ChatCompletion: `do(messages=[...], **openai_fields)`."""

    path = "/v1/chat/completions"

    def do(self, messages: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        body = self._post({"messages": messages} | kwargs)
        return {"result": body["choices"][0]["message"]["content"], "body": body}


class Completion(_Resource):
    """Qianfan's Completion: `do(prompt=..., **openai_fields)`."""

    path = "/v1/completions"

    def do(self, prompt: str, **kwargs: Any) -> dict[str, Any]:
        body = self._post({"prompt": prompt} | kwargs)
        return {"result": body["choices"][0]["text"], "body": body}


class Embedding(_Resource):
    """Qianfan's Embedding: `do(texts=[...])`; `result` holds one vector per text."""

    path = "/v1/embeddings"

    def do(self, texts: list[str], **kwargs: Any) -> dict[str, Any]:
        body = self._post({"input": texts} | kwargs)
        return {"result": [d["embedding"] for d in body["data"]], "body": body}


# -- helpers ---------------------------------------------------------------------------------

def _check_input(input: dict[str, Any] | None, kind: ServiceType) -> dict[str, Any]:  # noqa: A002
    needed = {ServiceType.Chat: "messages", ServiceType.Completion: "prompt",
              ServiceType.Embedding: "texts"}[kind]
    if not isinstance(input, dict) or not ({needed} | ({"input"} if needed == "texts"
                                                       else set())) & set(input):
        raise ConfigError.one(f"expected a dict with {needed!r} for a {kind.value} model, got "
                              f"{input!r}"[:300], field=needed, source="input")
    return input


def _request_of(row: dict[str, Any]) -> dict[str, Any]:
    """The chat request a dataset record asks: its turns up to the last user turn."""
    turns = row.get("messages") or row.get("conversations")
    if isinstance(turns, list) and turns:
        roles = {"human": "user", "gpt": "assistant", "system": "system", "user": "user",
                 "assistant": "assistant"}
        messages = [{"role": roles.get(t.get("role") or t.get("from"), "user"),
                     "content": t.get("content") if "content" in t else t.get("value", "")}
                    for t in turns]
        while len(messages) > 1 and messages[-1]["role"] != "user":
            messages.pop()
        return {"messages": messages}
    if "instruction" in row:
        text = "\n".join(p for p in (row["instruction"], row.get("input") or "") if p)
        return {"messages": [{"role": "user", "content": text}]}
    for key in ("prompt", "query", "question", "text"):
        if isinstance(row.get(key), str):
            return {"messages": [{"role": "user", "content": row[key]}]}
    raise ConfigError.one(f"expected messages, conversations, instruction, prompt, query or "
                          f"text in the record, got {sorted(row)}", field="dataset",
                          source="batch_run")


def _serve_command(version: ModelVersionRecord, served: str, config: DeployConfig) -> list[str]:
    # a replica serves; the training service's jobs are run by the user's own server
    command = [sys.executable, "-m", "tuneforge", "serve", "--host", "127.0.0.1", "--port", "0",
               "--worker-slots", "0"]
    if version.adapter_path:
        command += ["--model", f"base={version.base_model}",
                    "--adapter", f"{served}={version.adapter_path}"]
    else:
        command += ["--model", f"{served}={version.model_path}"]
    extras = dict(config.extras or {})
    unknown = sorted(set(extras) - set(SERVE_OPTIONS))
    if unknown:
        raise ConfigError.one(f"unknown serve option(s) {', '.join(unknown)}; expected "
                              f"{', '.join(SERVE_OPTIONS)}", field="extras",
                              source="DeployConfig")
    for key, value in extras.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    return command


def _environment(settings: Settings) -> dict[str, str]:
    """This process's environment with its Settings spelled out, so a server started from
    code with its own Settings finds the same home."""
    env = dict(os.environ)
    for field, value in settings.model_dump().items():
        if value is not None:
            env[f"TUNEFORGE_{field.upper()}"] = str(value)
    return env


def _start(command: list[str], log_path: Path, settings: Settings
           ) -> tuple[subprocess.Popen[bytes], str]:
    with log_path.open("ab") as log:
        # its own session: the service outlives this process, as a deployed service does
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env=_environment(settings))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        match = READY.search(log_path.read_bytes())
        if match:
            return process, match.group(1).decode()
        if process.poll() is not None:
            break
        time.sleep(0.2)
    else:
        _terminate(process.pid)
    tail = log_path.read_bytes()[-1500:].decode(errors="replace").strip()
    raise DeployError(f"the server process did not start (log {log_path}):\n{tail}")


def _alive(record: ServiceRecord) -> bool:
    return bool(record.pids) and all(_pid_alive(pid) for pid in record.pids)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a finished child of this process stays a zombie until reaped
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _terminate(pid: int, timeout: float = 20.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
        _pid_alive(pid)
    except ProcessLookupError:
        pass
