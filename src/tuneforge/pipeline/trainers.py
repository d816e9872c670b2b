"""Trainers: preset pipelines of the fine-tuning actions (Qianfan's LLMFinetune,
PostPreTrain, the reward-model and DPO stages, EmbeddingFinetune and RerankerFinetune), run
synchronously on this machine.

A trainer is a run: `runs/<run_id>/` holds the training files (config.yaml, state.json,
trainer_log.jsonl, checkpoints/, output/), plus trainer.json (what the trainer was built
from), pipeline.json (where the pipeline stands, rewritten atomically at every action's
start and end) and events.jsonl (every event, in order). `Trainer.load(run_id)` builds the
trainer again from these, so `resume()` finishes a run whose process died.

Pipeline: load_dataset -> train -> evaluate (sft, pt, embedding, rerank) -> publish -> deploy
(with a DeployConfig). Evaluating before publishing puts the eval metrics on the model version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from tuneforge.config.load import load_run_config
from tuneforge.errors import ConfigError, NotFoundError, StateError, UserError
from tuneforge.models.sources import resolve_model
from tuneforge.paths import TRAINER_FILE, RunPaths, atomic_write
from tuneforge.pipeline.actions import (
    DeployAction,
    EvaluateAction,
    LoadDataSetAction,
    ModelPublishAction,
    TrainAction,
)
from tuneforge.pipeline.base import BaseAction, Pipeline
from tuneforge.pipeline.configs import (
    CorpusConfig,
    DatasetConfig,
    DeployConfig,
    TrainConfig,
    run_values,
)
from tuneforge.pipeline.consts import ActionState, FinetuneStatus
from tuneforge.pipeline.dataset import Dataset
from tuneforge.pipeline.event import Event, EventHandler
from tuneforge.registry import Registry
from tuneforge.settings import Settings
from tuneforge.train.run import new_run_id

logger = logging.getLogger(__name__)
PIPELINE_FILE = "pipeline.json"
# each action's status while it runs, once done, when it failed, when stopped (None: as
# the training's)
_S = FinetuneStatus
_PHASES: dict[str, tuple[_S, _S, _S, _S | None]] = {
    "load_dataset": (_S.DatasetLoading, _S.DatasetLoaded, _S.DatasetLoadFailed,
                     _S.DatasetLoadStopped),
    "train": (_S.Training, _S.TrainFinished, _S.TrainFailed, _S.TrainStopped),
    "evaluate": (_S.Evaluating, _S.Evaluated, _S.EvaluateFailed, None),
    "publish": (_S.ModelPublishing, _S.ModelPublished, _S.ModelPublishFailed, None),
    "deploy": (_S.Deploying, _S.Deployed, _S.DeployFailed, None),
}


class Trainer(ABC):
    """Qianfan's Trainer: `run()`, `stop()`, `resume()`, `status`, `output` over `ppls`."""

    ppls: list[Pipeline]
    result: list[Any]

    @abstractmethod
    def run(self, **kwargs: Any) -> Trainer: ...

    @abstractmethod
    def stop(self, **kwargs: Any) -> Trainer: ...

    @abstractmethod
    def resume(self, **kwargs: Any) -> Trainer: ...

    @property
    @abstractmethod
    def output(self) -> Any: ...

    @property
    def status(self) -> str:
        return FinetuneStatus.Unknown.value

    @property
    def actions(self) -> dict[str, BaseAction]:
        """Every pipeline's actions by id."""
        return {a.id: a for ppl in self.ppls for a in [*ppl.actions, *ppl.post_actions]}

    def register_event_handler(self, event_handler: EventHandler,
                               ppl_id: str | None = None) -> None:
        """Send the events of the pipeline `ppl_id` (default: all) to `event_handler`."""
        chosen = [ppl for ppl in self.ppls if ppl_id is None or ppl.id == ppl_id]
        for ppl in chosen:
            ppl.register_event_handler(event_handler)
        if not chosen:
            raise NotFoundError("pipeline", str(ppl_id),
                            hint=f"pipelines: {', '.join(p.id for p in self.ppls)}")

    def get_log(self) -> Any:
        """The training log (Qianfan: "coming soon")."""
        return []

    def get_evaluate_result(self) -> Any:
        """The evaluation result (Qianfan: "coming soon")."""
        return None


class _Recorder(EventHandler):
    """Writes every event to events.jsonl, the pipeline's progress to pipeline.json and the
    run's status to the registry, then hands the event to the user's handler."""

    def __init__(self, trainer: FinetuneTrainer) -> None:
        self.trainer = trainer
        self.user: EventHandler | None = None

    def dispatch(self, event: Event) -> None:
        trainer = self.trainer
        paths = trainer.paths
        paths.root.mkdir(parents=True, exist_ok=True)
        record = {"action_id": event.action_id, "action_state": event.action_state.value,
                  "description": event.description, "data": _plain(event.data),
                  "time": time.time()}
        with paths.events.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        if event.action_state is not ActionState.Running or event.action_id == trainer.ppl.id:
            trainer.save()
        if self.user is not None:
            self.user.dispatch(event)


class FinetuneTrainer(Trainer):
    """A run of the fine-tuning pipeline for one stage; the public trainers set `stage`."""

    stage: ClassVar[str] = "sft"
    evaluates: ClassVar[bool] = True

    def __init__(self, train_type: str | None = None, dataset: Any = None,
                 train_config: TrainConfig | None = None,
                 deploy_config: DeployConfig | None = None,
                 event_handler: EventHandler | None = None, base_model: str | None = None,
                 *, corpus_config: CorpusConfig | None = None,
                 previous_trainer: FinetuneTrainer | None = None, name: str | None = None,
                 eval_dataset: Any = None, evaluate: bool = True,
                 dataset_dir: str | None = None, run_id: str | None = None,
                 settings: Settings | None = None, **kwargs: Any) -> None:
        source = type(self).__name__
        if kwargs:
            raise ConfigError.one(f"unknown argument(s) {', '.join(sorted(kwargs))}",
                                  field=next(iter(kwargs)), source=source)
        if dataset is None:
            raise ConfigError.one("expected the dataset to train on", field="dataset",
                                  source=source)
        if train_type is None and base_model is None and previous_trainer is None:
            raise ConfigError.one("expected the model to train (an alias, a prepared model "
                                  "or a path)", field="train_type", source=source)
        self.settings = settings or Settings()
        for field, model in (("train_type", train_type), ("base_model", base_model)):
            if model is not None and previous_trainer is None:
                _check_model(model, field, source, self.settings)
        self.train_type, self.base_model = train_type, base_model
        self.dataset, self.eval_dataset = dataset, eval_dataset
        self.train_config = train_config or TrainConfig()
        # a bad `extras` option fails here, naming it, not after the data is loaded
        load_run_config(values=run_values(self.train_config, None, corpus_config)
                        | {"stage": self.stage}, source="TrainConfig")
        self.deploy_config, self.corpus_config = deploy_config, corpus_config
        self.previous_trainer, self.name = previous_trainer, name
        self.evaluate, self.dataset_dir = evaluate, dataset_dir
        self.run_id = run_id or new_run_id()
        self.paths = RunPaths(self.settings.runs / self.run_id)
        self.result: list[Any] = [None]
        self._recorder = _Recorder(self)
        self._recorder.user = event_handler
        self.ppl = Pipeline(self._actions(), event_handler=self._recorder,
                            id=f"pipeline_{self.run_id}")
        self.ppls = [self.ppl]

    def _actions(self) -> list[BaseAction]:
        common = {"run_dir": self.paths.root, "settings": self.settings}
        actions: list[BaseAction] = [
            LoadDataSetAction(self.dataset, eval_dataset=self.eval_dataset, stage=self.stage,
                              dataset_dir=self.dataset_dir, id="load_dataset", **common),
            TrainAction(self.train_type, self.train_config, self.base_model, stage=self.stage,
                        corpus_config=self.corpus_config, id="train", **common)]
        if self.evaluates and self.evaluate:
            actions.append(EvaluateAction(id="evaluate", **common))
        actions.append(ModelPublishAction(self.name, id="publish", **common))
        if self.deploy_config is not None:
            actions.append(DeployAction(self.deploy_config, id="deploy", **common))
        return actions

    # -- running -----------------------------------------------------------------------------

    def run(self, **kwargs: Any) -> FinetuneTrainer:
        """Run the whole pipeline and wait for it (stopped: returns early; see status).

        kwargs: {"input": {...}} is merged into the first action's input.

        Raises:
            Exception: what a failing action raised (also kept in `result`).
        """
        if self.ppl.current is not None or self.ppl.output is not None:
            raise StateError(f"trainer {self.run_id} has run already",
                             hint="resume() continues it; a new trainer starts afresh")
        first = self.prepare(kwargs.get("input"))
        return self._go(lambda: self.ppl.exec(first))

    def prepare(self, input: dict[str, Any] | None = None) -> dict[str, Any]:  # noqa: A002
        """Write the run's trainer.json without running anything, so that another process
        can `load(run_id)` and `resume()` it from the first action (the training service's
        workers do); the first action's input."""
        self.paths.root.mkdir(parents=True, exist_ok=True)
        first = self._first_input() | dict(input or {})
        atomic_write(self.paths.root / TRAINER_FILE, json.dumps(self._spec(first), indent=2,
                                                                default=str) + "\n")
        return first

    def resume(self, **kwargs: Any) -> FinetuneTrainer:
        """Continue from the action that stopped, failed or was cut off by a crash; training
        continues from its newest checkpoint. Finished actions are not run again."""
        return self._go(self.ppl.resume)

    def stop(self, **kwargs: Any) -> FinetuneTrainer:
        """Stop at the next training step (from any thread); `resume()` continues."""
        self.ppl.stop()
        return self

    def _go(self, start: Any) -> FinetuneTrainer:
        try:
            self.result = [start()]
        except Exception as error:
            self.result = [error]
            self._set_run_status("failed")
            raise
        if self.ppl.current is not None:  # stopped
            self._set_run_status("stopped")
        return self

    def _first_input(self) -> dict[str, Any]:
        first: dict[str, Any] = {"trainer_name": self.name}
        previous = self.previous_trainer
        if previous is not None:
            first |= {"base_model": previous.output_model(), "parent_run_id": previous.run_id}
        return first

    def output_model(self) -> str:
        """A model directory to train on next: the full model, or the base merged with the
        adapter (written once, to merged/ in the run)."""
        output = self.output or {}
        if "output_dir" not in output:
            raise StateError(f"trainer {self.run_id}: expected a finished training to build "
                             "on, got none", hint="run() (or resume()) it first")
        if not output.get("adapter"):
            return str(output["output_dir"])
        merged = self.paths.root / "merged"
        if not (merged / "config.json").is_file():
            from tuneforge.config.export import build_export_config
            from tuneforge.export.run import export_model

            export_model(build_export_config({
                "model": output["base_model"], "adapter": output["output_dir"],
                "output_dir": str(merged), "merge": True}), self.settings)
        return str(merged)

    # -- state -------------------------------------------------------------------------------

    @property
    def output(self) -> dict[str, Any] | None:
        """The pipeline's output (task_id, job_id, model_id, model_version_id, ...); while
        stopped, what the finished actions produced."""
        if self.ppl.output is not None:
            return self.ppl.output
        done = [a for a in self.ppl.actions if a.state is ActionState.Done]
        return getattr(done[-1], "result", None) if done else None

    @property
    def status(self) -> str:
        """A FinetuneStatus value, from the state of the latest action that ran."""
        for action in reversed(self.ppl.actions):
            if action.state is None:
                continue
            running, done, failed, stopped = _PHASES[action.id]
            return {ActionState.Preceding: running, ActionState.Running: running,
                    ActionState.Done: done, ActionState.Error: failed,
                    ActionState.Stopped: stopped or _S.TrainStopped}[action.state].value
        return FinetuneStatus.TrainCreated.value

    def get_log(self) -> list[dict[str, Any]]:
        """The training log so far: one record per logging step (LLaMA-Factory's names:
        current_steps, total_steps, loss, eval_loss, lr, epoch, ..., tokens_per_s)."""
        if not self.paths.trainer_log.is_file():
            return []
        return [json.loads(line) for line in
                self.paths.trainer_log.read_text(encoding="utf-8").splitlines() if line]

    def get_evaluate_result(self) -> dict[str, Any] | None:
        """The evaluation report (metrics per model, generations) once evaluate has run."""
        action = self.actions.get("evaluate")
        result = getattr(action, "result", None)
        if result is not None:
            return result.get("eval_result")
        report = self.paths.root / "eval" / "report.json"
        return json.loads(report.read_text(encoding="utf-8")) if report.is_file() else None

    def register_event_handler(self, event_handler: EventHandler,
                               ppl_id: str | None = None) -> None:
        """Send every event (or those of the pipeline `ppl_id`) to `event_handler`."""
        if ppl_id is not None and ppl_id != self.ppl.id:
            raise NotFoundError("pipeline", ppl_id, hint=f"pipelines: {self.ppl.id}")
        self._recorder.user = event_handler

    def save(self) -> None:
        """Write the pipeline's progress to pipeline.json (atomically)."""
        atomic_write(self.paths.root / PIPELINE_FILE, self.ppl.dumps().decode() + "\n")

    def _set_run_status(self, status: str) -> None:
        with contextlib.suppress(NotFoundError):  # training never started: no run recorded
            Registry.open(self.settings).set_run_status(self.run_id, status)

    def _spec(self, first: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": type(self).__name__, "run_id": self.run_id, "train_type": self.train_type,
            "base_model": self.base_model, "name": self.name, "evaluate": self.evaluate,
            "dataset": _dataset_spec(self.dataset),
            "eval_dataset": _dataset_spec(self.eval_dataset),
            "dataset_dir": self.dataset_dir,
            "train_config": self.train_config.model_dump(mode="json", exclude_unset=True),
            "deploy_config": self.deploy_config.model_dump(mode="json")
            if self.deploy_config else None,
            "corpus_config": self.corpus_config.model_dump(mode="json")
            if self.corpus_config else None,
            "input": first,
        }

    @classmethod
    def load(cls, run: str | os.PathLike[str], event_handler: EventHandler | None = None,
             *, settings: Settings | None = None) -> FinetuneTrainer:
        """The trainer of run `run` (a run id or run directory) as its files left it; its
        `resume()` finishes the job after a stop, a failure or a crash.

        Raises:
            NotFoundError: no such run, or it was not made by a trainer.
        """
        settings = settings or Settings()
        root = Path(run).expanduser()
        if not (root / TRAINER_FILE).is_file():
            root = settings.runs / str(run)
        if not (root / TRAINER_FILE).is_file():
            raise NotFoundError("trainer run", str(run), hint=(
                f"expected a run id under {settings.runs} or a run directory holding "
                f"{TRAINER_FILE}"))
        spec = json.loads((root / TRAINER_FILE).read_text(encoding="utf-8"))
        kind = TRAINERS.get(spec["type"], cls)
        if root.parent != settings.runs:
            settings = settings.model_copy(update={"runs_dir": root.parent})
        trainer = kind(
            spec["train_type"], _dataset_from(spec["dataset"]),
            TrainConfig(**spec["train_config"]),
            DeployConfig(**spec["deploy_config"]) if spec["deploy_config"] else None,
            event_handler, spec["base_model"], name=spec["name"], evaluate=spec["evaluate"],
            corpus_config=CorpusConfig(**spec["corpus_config"])
            if spec["corpus_config"] else None,
            eval_dataset=_dataset_from(spec["eval_dataset"]), dataset_dir=spec["dataset_dir"],
            run_id=root.name, settings=settings)
        pipeline_file = root / PIPELINE_FILE
        if pipeline_file.is_file():
            trainer.ppl.loads(pipeline_file.read_bytes())
        if trainer.ppl.current is None and trainer.ppl.output is None:
            # the process died before the first action recorded its start
            trainer.ppl.current = trainer.ppl.actions[0].id
            trainer.ppl.inputs[trainer.ppl.current] = spec["input"]
        return trainer


class LLMFinetune(FinetuneTrainer):
    """Supervised fine-tuning (sft) of a chat model: Qianfan's LLMFinetune."""

    stage = "sft"


class PostPreTrain(FinetuneTrainer):
    """Continued pre-training (pt) on plain text: Qianfan's PostPreTrain."""

    stage = "pt"


class RewardModel(FinetuneTrainer):
    """A reward model (rm) trained on chosen/rejected pairs."""

    stage = "rm"
    evaluates = False


class DPO(FinetuneTrainer):
    """Direct preference optimisation (dpo) on chosen/rejected pairs."""

    stage = "dpo"
    evaluates = False


class EmbeddingFinetune(FinetuneTrainer):
    """An embedding model fine-tuned on FlagEmbedding's {query, pos, neg} rows, with
    in-batch and hard negatives (sentence-transformers); evaluated by retrieval (recall@k,
    MRR, nDCG@10) on its held-out queries; served on /v1/embeddings."""

    stage = "embedding"


class RerankerFinetune(FinetuneTrainer):
    """A cross-encoder reranker fine-tuned on {query, pos, neg} or {query, passage, label}
    rows (listwise or pointwise); evaluated by MRR and nDCG@10; served on /v1/rerank."""

    stage = "rerank"


TRAINERS: dict[str, type[FinetuneTrainer]] = {
    t.__name__: t for t in (LLMFinetune, PostPreTrain, RewardModel, DPO, EmbeddingFinetune,
                            RerankerFinetune)}


def _check_model(model: str, field: str, source: str, settings: Settings) -> None:
    try:
        resolve_model(model, settings)
    except UserError as exc:
        raise ConfigError.one(f"unknown model {model!r}: {exc}", field=field,
                              source=source) from None


def _dataset_spec(dataset: Any) -> Any:
    if dataset is None or isinstance(dataset, str):
        return dataset
    if isinstance(dataset, os.PathLike):
        return os.fspath(dataset)
    if isinstance(dataset, Dataset):
        return {"dataset": dataset.reference, "name": dataset.name, "id": dataset.id}
    if isinstance(dataset, DatasetConfig):
        return {"config": dataset.model_dump(mode="json", exclude={"datasets"}) | {
            "datasets": [_dataset_spec(d) for d in dataset.datasets]}}
    if isinstance(dataset, list | tuple):
        return [_dataset_spec(d) for d in dataset]
    raise ConfigError.one(f"expected a Dataset, a DatasetConfig, a path or a name, got "
                          f"{type(dataset).__name__}", field="dataset", source="trainer")


def _dataset_from(spec: Any) -> Any:
    if spec is None or isinstance(spec, str):
        return spec
    if isinstance(spec, list):
        return [_dataset_from(s) for s in spec]
    if "config" in spec:
        config = spec["config"]
        return DatasetConfig(**(config | {"datasets": [_dataset_from(d)
                                                        for d in config["datasets"]]}))
    return Dataset(spec["dataset"], name=spec["name"], id=spec["id"])


def _plain(data: Any) -> Any:
    if isinstance(data, BaseException):
        return {"error": str(data), "error_type": type(data).__name__}
    return data
