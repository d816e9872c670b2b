"""The fine-tuning actions (Qianfan's `qianfan.trainer.actions`), run on this machine.

LoadDataSetAction -> TrainAction -> ModelPublishAction -> DeployAction / EvaluateAction, each
taking the previous one's output dict and adding to it, with the reference's keys: datasets;
task_id and job_id (both the run id); model_id and model_version_id (the registry's);
service_id and service_endpoint. Every action can also run alone, as in the reference's
samples; its `run_dir` and `settings` default to a new run under TUNEFORGE_HOME.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from tuneforge.config.eval import build_eval_config
from tuneforge.config.load import dump_run_config, load_run_config
from tuneforge.config.run import RunConfig
from tuneforge.data.dataset_info import resolve_dataset
from tuneforge.data.load import load_data
from tuneforge.errors import ConfigError, NotFoundError, StateError
from tuneforge.eval.run import evaluate
from tuneforge.models.sources import resolve_model
from tuneforge.paths import RunPaths, atomic_write, read_json_lines
from tuneforge.pipeline.base import BaseAction
from tuneforge.pipeline.configs import (
    CorpusConfig,
    DatasetConfig,
    DeployConfig,
    TrainConfig,
    run_values,
)
from tuneforge.pipeline.consts import ActionState
from tuneforge.pipeline.dataset import Dataset
from tuneforge.pipeline.services import Model
from tuneforge.registry import Registry
from tuneforge.settings import Settings
from tuneforge.train.launch import launch, needs_launch
from tuneforge.train.run import RunOutcome, new_run_id, train

logger = logging.getLogger(__name__)
ADAPTER_CONFIG = "adapter_config.json"


class _RunAction(BaseAction):
    """An action that works in a run directory and reads the registry."""

    def __init__(self, *, run_dir: str | Path | None = None, settings: Settings | None = None,
                 **kwargs: Any) -> None:
        super().__init__(id=kwargs.pop("id", None), name=kwargs.pop("name", None),
                         event_handler=kwargs.pop("event_handler", None), **kwargs)
        self.settings = settings or Settings()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.result: dict[str, Any] | None = None

    @property
    def paths(self) -> RunPaths:
        if self.run_dir is None:  # a standalone action: a run of its own
            self.run_dir = self.settings.runs / new_run_id()
        return RunPaths(self.run_dir)

    @property
    def registry(self) -> Registry:
        return Registry.open(self.settings)

    def resume(self, **kwargs: Any) -> dict[str, Any]:
        """Nothing of its own to continue: run again on the input it had."""
        return self.exec(self.input, **kwargs)

    def _done(self, output: dict[str, Any]) -> dict[str, Any]:
        self.result = output
        return output


def _dataset_entry(dataset: Dataset, settings: Settings) -> dict[str, Any]:
    dataset.register(settings=settings)
    return {"id": dataset.id, "name": dataset.name, "path": dataset.reference}


class LoadDataSetAction(_RunAction):
    """Checks the datasets and registers them. Input: none. Output:
    {"datasets": [{"id", "name", "path"}], "eval_split_ratio", "sampling_rate"} (the last
    two when a DatasetConfig gave them), plus "eval_datasets" when an eval set is given.

    `dataset`: a Dataset, a DatasetConfig, a file or folder path, a registered name or id, or
    a list of these. The records are read and checked as training will read them, so a bad
    file fails here, naming its file, line and field.
    """

    def __init__(self, dataset: Any = None, *, eval_dataset: Any = None, stage: str = "sft",
                 dataset_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if dataset is None:
            raise ConfigError.one("expected a dataset to train on", field="dataset",
                                  source=type(self).__name__)
        self.dataset, self.eval_dataset, self.stage = dataset, eval_dataset, stage
        self.dataset_dir = dataset_dir

    def exec(self, input: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        output: dict[str, Any] = dict(input or {})
        chosen = self.dataset
        if isinstance(chosen, DatasetConfig):
            output |= {"eval_split_ratio": chosen.eval_split_ratio,
                       "sampling_rate": chosen.sampling_rate}
            chosen = chosen.datasets
        datasets = [self._resolve(d, f"dataset[{i}]") for i, d in enumerate(_listed(chosen))]
        evals = [self._resolve(d, f"eval_dataset[{i}]")
                 for i, d in enumerate(_listed(self.eval_dataset))]
        self.action_event(ActionState.Running, f"checking {len(datasets) + len(evals)} "
                          "dataset(s)", {"step": 0, "total": 1})
        self._check([d.reference for d in datasets], [d.reference for d in evals])
        output["datasets"] = [_dataset_entry(d, self.settings) for d in datasets]
        if evals:
            output["eval_datasets"] = [_dataset_entry(d, self.settings) for d in evals]
        if self.dataset_dir:
            output["dataset_dir"] = self.dataset_dir
        self.action_event(ActionState.Running, "datasets checked", {"step": 1, "total": 1})
        return self._done(output)

    def _resolve(self, dataset: Any, field: str) -> Dataset:
        if isinstance(dataset, Dataset):
            return dataset
        if not isinstance(dataset, str | Path):
            raise ConfigError.one(f"expected a Dataset, a path or a registered name, got "
                                  f"{type(dataset).__name__}", field=field,
                                  source=type(self).__name__)
        if Path(dataset).expanduser().exists():
            return Dataset.load(data_file=dataset)
        try:
            return Dataset.load(dataset_id=str(dataset), settings=self.settings)
        except NotFoundError:
            pass
        try:  # a dataset_info.json name
            spec = resolve_dataset(str(dataset), Path(self.dataset_dir or "data"))
        except NotFoundError:
            raise NotFoundError("dataset", str(dataset), hint=(
                "expected a file or folder, a registered dataset name or id (Dataset.list), "
                "or a dataset_info.json name with dataset_dir")) from None
        path = spec.files[0] if len(spec.files) == 1 else spec.files[0].parent
        return Dataset(path, name=str(dataset))

    def _check(self, references: list[str], evals: list[str]) -> None:
        values: dict[str, Any] = {"dataset": references, "stage": self.stage,
                                  "eval_dataset": evals or None}
        if self.dataset_dir:
            values["dataset_dir"] = self.dataset_dir
        config = load_run_config(values={k: v for k, v in values.items() if v is not None},
                                 source=type(self).__name__)
        load_data(config.data, stage=config.method.stage, seed=config.training.seed)


class TrainAction(_RunAction):
    """Trains `train_type` (or `base_model`, or the input's base_model from a previous
    trainer) on the input's datasets, in this process, into the run directory. Input: the
    LoadDataSetAction output. Output: the input plus task_id, job_id (the run id), run_dir,
    output_dir, base_model, adapter (True for a PEFT adapter), global_step, metrics.

    `stop()` (any thread) or Ctrl-C: a checkpoint at the next step, then state Stopped;
    `resume()` continues from the newest complete checkpoint. With `launcher: torchrun` (in
    `extras`) the training runs as torchrun's processes and their log becomes the events.
    """

    def __init__(self, train_type: str | None = None, train_config: TrainConfig | None = None,
                 base_model: str | None = None, *, stage: str = "sft",
                 corpus_config: CorpusConfig | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if train_type is None and base_model is None:
            raise ConfigError.one("expected the model to train", field="train_type",
                                  source=type(self).__name__)
        self.train_type, self.base_model = train_type, base_model
        self.train_config = train_config or TrainConfig()
        self.stage, self.corpus_config = stage, corpus_config

    def run_config(self, input: dict[str, Any]) -> RunConfig:  # noqa: A002
        """The RunConfig this action trains with, from its configs and `input`."""
        datasets = [d["path"] for d in input.get("datasets", [])]
        if not datasets:
            raise StateError(f"{self.id}: expected input datasets (from LoadDataSetAction), "
                             "got none")
        split = {k: input[k] for k in ("eval_split_ratio", "sampling_rate") if k in input}
        dataset_config = DatasetConfig(datasets=datasets, **split) if split else None
        values = run_values(self.train_config, dataset_config, self.corpus_config)
        if dataset_config is None:
            values["dataset"] = datasets
        values |= {"model_name_or_path": input.get("base_model") or self.base_model
                   or self.train_type, "stage": self.stage,
                   "output_dir": str(self.paths.root)}
        if input.get("eval_datasets"):
            values["eval_dataset"] = [d["path"] for d in input["eval_datasets"]]
        if input.get("dataset_dir"):
            values["dataset_dir"] = input["dataset_dir"]
        return load_run_config(values=values, source="TrainConfig")

    def exec(self, input: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        input = dict(input or {})  # noqa: A001
        config = self.run_config(input)
        base = str(resolve_model(str(config.model.name_or_path), self.settings))
        run_id = self.paths.root.name
        self.registry.save_run(
            run_id, stage=self.stage, status="running", run_dir=str(self.paths.root),
            base_model=base, name=input.get("trainer_name"),
            parent_run_id=input.get("parent_run_id"),
            dataset_ids=[d["id"] for d in input.get("datasets", []) if d.get("id")])
        outcome = self._launched(config) if needs_launch(config) else train(
            config, self.settings, self._progress, record_events=False)
        result = outcome.result
        output_dir = result.output_dir
        self.registry.set_run_status(run_id, result.status)
        if result.status != "completed" or output_dir is None:
            self.action_event(ActionState.Stopped, f"training stopped at step "
                              f"{result.global_step}; resume() continues from checkpoint "
                              f"{result.checkpoint}", {"step": result.global_step,
                                                       "checkpoint": str(result.checkpoint)})
            return input
        return self._done(input | {
            "task_id": run_id, "job_id": run_id, "run_id": run_id,
            "run_dir": str(self.paths.root), "stage": self.stage, "base_model": base,
            "output_dir": str(output_dir), "adapter": (output_dir / ADAPTER_CONFIG).is_file(),
            "global_step": result.global_step, "metrics": result.metrics})

    def _launched(self, config: RunConfig) -> RunOutcome:
        """launcher torchrun: the training runs as torchrun's processes while this thread
        follows their trainer_log.jsonl and reports each record as a Running event."""
        paths = self.paths
        paths.root.mkdir(parents=True, exist_ok=True)
        config_file = paths.root / "launch.yaml"
        atomic_write(config_file, dump_run_config(config))
        done: dict[str, Any] = {}

        def run() -> None:
            try:
                done["result"] = launch(config, [str(config_file), "--no-events"],
                                        self.settings)
            except BaseException as exc:  # e.g. the machine cannot do what config asks
                done["error"] = exc

        worker = threading.Thread(target=run, daemon=True)
        seen = paths.trainer_log.stat().st_size if paths.trainer_log.is_file() else 0
        worker.start()
        while True:
            try:
                finished = not worker.is_alive()
                seen = self._follow(paths.trainer_log, seen)
                if finished:
                    break
                worker.join(0.5)
            except KeyboardInterrupt:  # Ctrl-C: the processes checkpoint and stop
                paths.stop_flag.touch()
        if "error" in done:
            raise done["error"]
        code, outcome = done["result"]
        if outcome is None:
            state = json.loads(paths.state.read_text()) if paths.state.is_file() else {}
            raise StateError(f"{self.id}: the training processes ended with exit status "
                             f"{code}: {state.get('error', 'see ' + str(paths.train_log))}")
        return outcome

    def _follow(self, log: Path, seen: int) -> int:
        """Report the complete records appended to `log` after byte `seen`; the new end."""
        records, end = read_json_lines(log, seen)
        for record in records:
            self._progress(record)
        return end

    def resume(self, **kwargs: Any) -> dict[str, Any]:
        """Train on from the newest complete checkpoint in the run directory."""
        if self.input is None:
            raise StateError(f"{self.id}: expected an earlier run to resume, got none",
                             hint="exec() starts one")
        return self.exec(self.input, **kwargs)

    def stop(self, **kwargs: Any) -> None:
        """Ask the training to checkpoint at its next step and end (from any thread)."""
        if self.run_dir is not None and self.run_dir.is_dir():
            RunPaths(self.run_dir).stop_flag.touch()

    def _progress(self, record: dict[str, Any]) -> None:
        step, total = record.get("current_steps"), record.get("total_steps")
        self.action_event(ActionState.Running, f"step {step}/{total}",
                          {"step": step, "total": total, "loss": record.get("loss")} | record)


class ModelPublishAction(_RunAction):
    """Registers the trained model as a new version of `model_name` (default m_<task_id>),
    with the training's metrics and the evaluate action's (under "evaluate"). Input: the
    TrainAction (or EvaluateAction) output. Output: the input plus model_id,
    model_version_id, model_name, model_version."""

    def __init__(self, model_name: str | None = None, description: str = "",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name, self.description = model_name, description

    def exec(self, input: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        input = dict(input or {})  # noqa: A001
        if "task_id" not in input:
            raise StateError(f"{self.id}: expected a trained model (task_id, output_dir from "
                             f"TrainAction), got keys {sorted(input)}")
        metrics = dict(input.get("metrics") or {})
        report = input.get("eval_result")
        if report:  # the evaluate action's scores of the fine-tune (the last row)
            metrics["evaluate"] = report["rows"][-1]["metrics"]
        model = Model(task_id=input["task_id"], settings=self.settings).publish(
            self.model_name or "", description=self.description, metrics=metrics)
        version = model.record
        return self._done(input | {"model_id": version.model_id,
                                   "model_version_id": version.id,
                                   "model_name": version.model_name,
                                   "model_version": version.version})


class DeployAction(_RunAction):
    """Starts (or reuses) `tuneforge serve` processes hosting the published model. Input:
    the ModelPublishAction output. Output: the input plus service_id, service_endpoint."""

    def __init__(self, deploy_config: DeployConfig | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deploy_config = deploy_config or DeployConfig()

    def exec(self, input: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        input = dict(input or {})  # noqa: A001
        if "model_version_id" not in input:
            raise StateError(f"{self.id}: expected a published model (model_version_id from "
                             f"ModelPublishAction), got keys {sorted(input)}")
        service = Model(version_id=input["model_version_id"], settings=self.settings).deploy(
            self.deploy_config)
        return self._done(input | {"service_id": service.id,
                                   "service_endpoint": service.endpoint})


class EvaluateAction(_RunAction):
    """Scores the trained model on its held-out split (or `eval_dataset`) with
    `tuneforge eval`'s metrics, beside its base with `compare_base`. Input: a TrainAction
    output. Output: the input plus eval_result (the report, also in the run's eval/ folder).
    """

    def __init__(self, eval_dataset: Any = None, metrics: list[str] | None = None, *,
                 compare_base: bool = False, max_new_tokens: int = 64,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eval_dataset, self.compare_base = eval_dataset, compare_base
        self.metrics, self.max_new_tokens = metrics, max_new_tokens

    def exec(self, input: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        input = dict(input or {})  # noqa: A001
        run_dir = Path(input.get("run_dir") or self.paths.root)
        paths = RunPaths(run_dir)
        if not paths.config.is_file():
            raise StateError(f"{self.id}: expected a trained run (run_dir from TrainAction)"
                             f", got {run_dir} without config.yaml")
        values: dict[str, Any] = {}
        if self.eval_dataset is not None:
            values = {"eval_dataset": [d.reference if isinstance(d, Dataset) else str(d)
                                       for d in _listed(self.eval_dataset)]}
        config = load_run_config(paths.config, values=values, source=type(self).__name__)
        held_out = config.data.eval_dataset or config.data.eval_split_ratio > 0
        if not held_out:
            self.action_event(ActionState.Running, "no held-out data to evaluate on")
            return self._done(input | {"eval_result": None})
        options = build_eval_config({
            "adapter": str(run_dir), "metrics": self.metrics or [],
            "compare_base": self.compare_base, "max_new_tokens": self.max_new_tokens},
            source=type(self).__name__)
        self.action_event(ActionState.Running, "evaluating", {"step": 0, "total": 1})
        report = evaluate(config, options, self.settings)
        self.action_event(ActionState.Running, "evaluated", {"step": 1, "total": 1})
        return self._done(input | {"eval_result": json.loads(json.dumps(report, default=str))})


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
