"""TrainableModule: LazyLLM's chain of fine-tune, deploy and evaluate, on tuneforge's core.

```python
m = TrainableModule("smollm2-135m-instruct").mode("finetune").trainset("data.json") \\
    .finetune_method((finetune.llamafactory, {"num_train_epochs": 1.0}))
m.update()          # fine-tune, deploy the result, run the eval set through it
m("hello")          # answered by the deployed fine-tune
```

`update()` builds the trainer of the stage (LLMFinetune, EmbeddingFinetune or
RerankerFinetune, with the framework's arguments as RunConfig options: the same pipeline,
run directory, events and registry as every other face) and runs it in this process, or
through the framework's `launcher` (slurm, ray: the run's worker there, followed until it
ends). The result is copied to `target_path` when one is given. `TrainableModule(base,
target_path)` in the default "server" mode serves an existing fine-tune from `target_path`.

What the module is comes from the base model: a causal LM answers text (`m(question)`);
an embedding model gives vectors (`m(text)`, `m.embed_texts([...])`), as Document and
Retriever use it; a reranker scores (`m.rerank(query, texts)`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError, NotFoundError, StateError
from tuneforge.jobs.launchers import Launcher, LocalLauncher
from tuneforge.lazy import deploy as deploy_methods
from tuneforge.lazy import finetune as frameworks
from tuneforge.models.sources import resolve_model
from tuneforge.paths import copy_dir_atomic
from tuneforge.pipeline.configs import TrainConfig
from tuneforge.pipeline.trainers import TRAINERS as TRAINER_CLASSES
from tuneforge.pipeline.trainers import FinetuneTrainer
from tuneforge.serve.encoders import encoder_kind
from tuneforge.settings import Settings

logger = logging.getLogger(__name__)
SOURCE = "TrainableModule"
MODES = ("server", "finetune")
# the trainer of each stage: LLMFinetune (sft), PostPreTrain (pt), DPO, RewardModel (rm),
# EmbeddingFinetune, RerankerFinetune
TRAINERS: dict[str, type[FinetuneTrainer]] = {t.stage: t for t in TRAINER_CLASSES.values()}


class TrainableModule:
    """A model that can be fine-tuned, deployed and called (LazyLLM's TrainableModule)."""

    def __init__(self, base_model: str = "", target_path: str | Path | None = None, *,
                 settings: Settings | None = None) -> None:
        """`base_model`: an alias, a prepared model or a path. `target_path`: where the
        fine-tune goes (and, in server mode, the fine-tune to serve).

        Raises:
            ConfigError: no base model, or one that cannot be found.
        """
        if not base_model:
            raise ConfigError.one("expected the base model (an alias, a prepared model or a "
                                  "path)", field="base_model", source=SOURCE)
        self.settings = settings or Settings()
        try:
            self.base_dir = resolve_model(str(base_model), self.settings)
        except NotFoundError as exc:
            raise ConfigError.one(f"unknown model {base_model!r}: {exc}", field="base_model",
                                  source=SOURCE) from None
        self.base_model = str(base_model)
        self.target_path = Path(target_path).expanduser() if target_path else None
        self.kind = encoder_kind(self.base_dir)  # None: a causal LM
        self._mode = "server"
        self._trainset: Any = None
        self._evalset: Any = None
        self._system: str | None = None
        self._framework: Any = frameworks.auto
        self._framework_kwargs: dict[str, Any] = {}
        self._deploy = deploy_methods.auto
        self._trained: Path | None = None
        self._engine: Any = None
        self._lock = threading.Lock()
        self.trainer: FinetuneTrainer | None = None
        self.eval_result: Any = None

    # -- configuration (each returns the module, for chaining) -------------------------------

    def mode(self, mode: str) -> TrainableModule:
        """"finetune": `update()` trains first; "server": it serves the model as it is."""
        if mode not in MODES:
            raise ConfigError.one(f"expected one of {', '.join(MODES)}, got {mode!r}",
                                  field="mode", source=SOURCE)
        self._mode = mode
        return self

    def trainset(self, path: Any) -> TrainableModule:
        """The training data: a file, folder or dataset name the data path reads."""
        self._trainset = str(path) if isinstance(path, Path) else path
        return self

    def evalset(self, evalset: Any) -> TrainableModule:
        """Inputs run through the deployed model by `update()`: a list of strings, or a
        file (JSON/JSONL of strings or of records with instruction/input, query or text);
        for an embedding model also a retrieval set (its metrics become `eval_result`)."""
        self._evalset = evalset
        return self

    def prompt(self, prompt: str | None = None, history: Any = None) -> TrainableModule:
        """A system prompt for every call of a causal LM (None: the template's default)."""
        if prompt is not None and not isinstance(prompt, str):
            raise ConfigError.one(f"expected a string, got {type(prompt).__name__}",
                                  field="prompt", source=SOURCE)
        self._system = prompt
        return self

    def finetune_method(self, method: Any, **kwargs: Any) -> TrainableModule:
        """`(framework, {arguments})` as LazyLLM takes it, or `framework, **arguments`."""
        if isinstance(method, tuple):
            if len(method) != 2 or not isinstance(method[1], dict):
                raise ConfigError.one("expected (framework, {arguments}), a tuple of two",
                                      field="finetune_method", source=SOURCE)
            method, kwargs = method[0], {**method[1], **kwargs}
        self._framework = frameworks.framework(method, self.kind)
        self._framework_kwargs = dict(kwargs)
        return self

    def deploy_method(self, method: Any, **kwargs: Any) -> TrainableModule:
        """How the result is served (deploy.auto; see tuneforge.lazy.deploy)."""
        if isinstance(method, tuple):
            method, kwargs = method[0], {**method[1], **kwargs}
        self._deploy = deploy_methods.deploy_method(method, kwargs)
        return self

    # -- running -------------------------------------------------------------------------------

    @property
    def needs_update(self) -> bool:
        """True while a fine-tune is asked for and not done (Retriever.update() asks)."""
        return self._mode == "finetune" and self._trained is None

    @property
    def finetuned_path(self) -> Path | None:
        """The fine-tuned model or adapter folder, once there is one."""
        return self._trained

    def update(self) -> TrainableModule:
        """Fine-tune (in finetune mode), deploy the result, then run the eval set through it
        (kept in `eval_result`).

        Raises:
            ConfigError: no training data, or a bad framework argument (naming it).
            StateError: the training failed or stopped (resume with `.trainer.resume()`).
        """
        if self.needs_update:
            self._finetune()
        self.start()
        if self._evalset is not None:
            self.eval_result = self._evaluate()
        return self

    def start(self) -> TrainableModule:
        """Deploy without training: the fine-tune at target_path if there is one (in server
        mode), else the base model."""
        with self._lock:
            if self._engine is None:
                self._engine = self._load_engine()
        return self

    def stop(self) -> None:
        """Stop serving (a causal LM's engine thread ends)."""
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None and hasattr(engine, "close"):
            engine.close()

    def _finetune(self) -> None:
        if self._trainset is None:
            raise ConfigError.one("expected training data: call .trainset(path) first",
                                  field="trainset", source=SOURCE)
        method = frameworks.framework(self._framework, self.kind)  # auto: by the model
        options, launcher = method.options(self._framework_kwargs, encoder=self.kind)
        stage = options.pop("stage")
        if launcher is not None and not isinstance(launcher, Launcher):
            raise ConfigError.one(f"expected a launcher from tuneforge.launchers, got "
                                  f"{type(launcher).__name__}", field="launcher", source=SOURCE)
        if launcher is not None:
            options |= launcher.distributed()
        split = {} if any(k in options for k in ("val_size", "eval_split_ratio")) \
            else {"trainset_rate": 0}  # LLaMA-Factory holds nothing out unless asked
        trainer_class = TRAINERS.get(stage)
        if trainer_class is None:
            raise ConfigError.one(f"expected a stage among {', '.join(TRAINERS)}, got "
                                  f"{stage!r}", field="stage", source=SOURCE)
        config = TrainConfig(**split, extras=options or None)
        trainer = trainer_class(train_type=self.base_model, dataset=self._trainset,
                                train_config=config, settings=self.settings)
        if launcher is None or isinstance(launcher, LocalLauncher):
            trainer.run()  # in this process (torchrun: the train action starts it)
        else:
            trainer.prepare()
            state = launcher.launch(trainer.paths.root, self.settings).wait()
            logger.info("launcher %s: run %s ended %s", launcher, trainer.run_id, state)
            trainer = FinetuneTrainer.load(trainer.paths.root, settings=self.settings)
        self.trainer = trainer
        output = trainer.output or {}
        if trainer.ppl.output is None or "output_dir" not in output:
            raise StateError(f"fine-tune {trainer.run_id} ended {trainer.status}; expected a "
                             "finished training", hint=f"see {trainer.paths.root}/train.log; "
                             "module.trainer.resume() continues it")
        result = Path(output["output_dir"])
        if self.target_path is not None:
            result = copy_dir_atomic(result, self.target_path)
        self._trained = result
        self.stop()  # the next start() serves the fine-tune

    def _served_dir(self) -> tuple[Path, Path | None]:
        """(model to load, adapter or None)."""
        tuned = self._trained
        if tuned is None and self._mode == "server" and self.target_path is not None:
            if not self.target_path.is_dir():
                raise NotFoundError("fine-tune", str(self.target_path), hint=(
                    "expected the folder a fine-tune was written to (target_path); set "
                    ".mode('finetune') to train one there"))
            tuned = self.target_path
        if tuned is None:
            return self.base_dir, None
        if (tuned / "adapter_config.json").is_file():
            return self.base_dir, tuned
        return tuned, None

    def _load_engine(self) -> Any:
        model, adapter = self._served_dir()
        if self.kind is not None:
            from tuneforge.serve.encoders import EncoderEngine

            return EncoderEngine(str(model), self.settings, kind=encoder_kind(model)
                                 or self.kind)
        from tuneforge.serve.engine import Engine

        engine = Engine(str(model), self.settings)
        if adapter is not None:
            engine.load_adapter("tuned", adapter)
        return engine.start()

    # -- calling -------------------------------------------------------------------------------

    def __call__(self, query: Any, **kwargs: Any) -> Any:
        """A causal LM's answer to `query` (a string); an embedding model's vector of it;
        a list of strings gives a list of answers (or vectors)."""
        if isinstance(query, list | tuple):
            if self.kind == "embedding":
                return self.embed_texts(list(query))
            return [self(q, **kwargs) for q in query]
        if not isinstance(query, str):
            raise ConfigError.one(f"expected a string, got {type(query).__name__}",
                                  field="query", source=SOURCE)
        if self.kind == "embedding":
            return self.embed_texts([query])[0]
        if self.kind is not None:
            raise StateError(f"{self.base_model} is a {self.kind} model; call "
                             "module.rerank(query, texts)")
        return self._answer(query, **kwargs)

    def forward(self, query: Any, **kwargs: Any) -> Any:
        """The same as calling the module (LazyLLM's name)."""
        return self(query, **kwargs)

    def embed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        """Normalised vectors of `texts` (an embedding model)."""
        engine = self._encoder("embedding")
        vectors, _ = engine.embed(list(texts))
        return vectors

    def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        """Relevance scores of `texts` for `query` (a reranker, or cosine for an embedding
        model)."""
        engine = self._encoder("rerank")
        scores, _ = engine.rerank(query, list(texts))
        return [float(s) for s in scores]

    def _encoder(self, use: str) -> Any:
        if self.kind is None:
            raise StateError(f"{self.base_model} is a causal LM; {use} needs an embedding "
                             "model or a reranker")
        return self.start()._engine

    def _answer(self, query: str, **kwargs: Any) -> str:
        from tuneforge.serve.requests import ChatMessage, GenerationRequest

        engine = self.start()._engine
        settings = {"max_tokens": 256, "temperature": 0.0, **self._deploy.kwargs, **kwargs}
        system = [ChatMessage(role="system", content=self._system)] if self._system else []
        request = GenerationRequest(
            messages=(*system, ChatMessage(role="user", content=query)),
            adapter="tuned" if "tuned" in engine.adapter_names() else None, **settings)
        return engine.complete(request).text

    def _evaluate(self) -> Any:
        evalset = self._evalset
        if isinstance(evalset, str | Path) and self.kind == "embedding":
            from tuneforge.eval.retrieval import is_retrieval_set

            if is_retrieval_set(Path(evalset)):
                return self._retrieval_metrics(Path(evalset))
        inputs = _eval_inputs(evalset)
        return [self(text) for text in inputs]

    def _retrieval_metrics(self, path: Path) -> dict[str, Any]:
        from tuneforge.eval.retrieval import RETRIEVAL_METRICS, EncoderTask, read_retrieval_set

        task = EncoderTask("retrieval", RETRIEVAL_METRICS, retrieval=read_retrieval_set(path))
        return task.measure(self._encoder("embedding"))


def _eval_inputs(evalset: Any) -> list[str]:
    """An eval set as the texts to send: a list of strings, or a JSON/JSONL file of strings
    or of records (alpaca instruction + input, or query, prompt, text).

    Raises:
        ConfigError: anything else, naming the file and line.
    """
    if isinstance(evalset, list | tuple):
        items: list[Any] = list(evalset)
        where = "evalset"
    else:
        from tuneforge.data.read import read_rows

        path = Path(str(evalset)).expanduser()
        if not path.is_file():
            raise NotFoundError("eval set", str(evalset), hint="expected a JSON or JSONL file")
        items = [row for row, _ in read_rows(path)]
        where = str(path)
    texts = []
    for number, item in enumerate(items, 1):
        if isinstance(item, dict):
            text = "\n".join(str(item[k]) for k in ("instruction", "input") if item.get(k)) \
                or item.get("query") or item.get("prompt") or item.get("text")
        else:
            text = item
        if not isinstance(text, str) or not text:
            raise ConfigError.one(f"expected a string or a record with instruction, query, "
                                  f"prompt or text; got {json.dumps(item, default=str):.60}",
                                  field="evalset", source=where, line=number)
        texts.append(text)
    return texts
