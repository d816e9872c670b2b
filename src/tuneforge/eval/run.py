"""`evaluate`: how well a model (with an optional adapter) does on a dataset, beside its base.

One flow, top to bottom: locate the model, adapter and run (small files only), load and
check the data, then load the models and measure each one:

- a chat (sft) dataset: eval loss and perplexity with training's tokenisation and masking
  (eval/loss.py), and greedy answers (train/generate.py) scored by the text metrics
  (eval/metrics.py);
- a plain-text (pt) dataset: eval loss and perplexity;
- a multiple-choice file (question, A, B, C, D, answer): accuracy (eval/choice.py);
- for an embedding model or a reranker (serve/encoders.py tells from the model's files):
  recall@k, MRR and nDCG@10 on a retrieval set, MRR and nDCG@10 on a rerank set
  (eval/retrieval.py).

The dataset's eval split is used when one is configured (val_size / eval_dataset, split as
training splits it with the same seed), else every record. With an adapter and
`compare_base`, the base is measured too, by switching the adapter off. The result is a
JSON-able dict; report.json/md/png go to the run's eval/ folder or to output_dir.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config.eval import EvalConfig
from tuneforge.config.run import RunConfig
from tuneforge.data.dataset_info import resolve_dataset
from tuneforge.data.load import load_data
from tuneforge.data.read import read_rows
from tuneforge.data.records import ChatExample, Example
from tuneforge.data.templates import Renderer, render_prompt
from tuneforge.errors import ConfigError, DataError, NotFoundError, UnsupportedError
from tuneforge.eval.choice import ChoiceQuestion, is_choice_row, read_choice_file
from tuneforge.eval.metrics import TEXT_METRICS
from tuneforge.eval.report import write_report
from tuneforge.models.sources import resolve_model
from tuneforge.serve.encoders import EncoderKind, encoder_kind
from tuneforge.settings import Settings

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
TEMPLATE_FILE = "tuneforge_template.json"  # written by train/stage.py next to the output
GENERATIONS_KEPT = 20  # side-by-side answers kept in report.json
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
_METRICS: dict[str, tuple[str, ...]] = {
    "sft": ("loss", *TEXT_METRICS), "pt": ("loss",), "choice": ("accuracy",)}


@dataclass(frozen=True)
class Sources:
    """The base model, the fine-tune (an adapter or a whole model), the run it came from."""

    model: Path
    tuned: Path | None
    is_adapter: bool
    run_dir: Path | None
    template: str | None  # the training template's name; None: the tokenizer's own


@dataclass
class EvalTask:
    """What is measured: the records (or questions) and the metrics asked for them."""

    kind: str
    metrics: tuple[str, ...]
    examples: list[Example] = field(default_factory=list)
    questions: list[ChoiceQuestion] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.questions) if self.kind == "choice" else len(self.examples)


def evaluate(config: RunConfig, options: EvalConfig, settings: Settings) -> dict[str, Any]:
    """Measure the model (and its base with `compare_base`); write the report if it has a home.

    Raises:
        NotFoundError: the model, adapter, run or dataset does not exist.
        ConfigError: a metric does not fit the dataset, or no model is given.
        DataError: the dataset has no usable records.
        UnsupportedError: the dataset's records are of a kind evaluation does not score.
    """
    from transformers.utils import logging as hf_logging

    from tuneforge.data.tokenizer import load_tokenizer

    hf_logging.disable_progress_bar()
    sources = locate_sources(config, options, settings)
    kind = encoder_kind(sources.model)
    if kind is not None:  # an embedding model, reranker or reward model: no generation
        return _evaluate_encoder(config, options, settings, sources, kind)
    task = load_task(config, options)
    own = sources.tuned if sources.tuned is not None else sources.model
    has_own = any((own / f).is_file() for f in _TOKENIZER_FILES)
    tokenizer = load_tokenizer(config.model.tokenizer or str(own if has_own else sources.model),
                               settings.cache)
    renderer = _renderer(tokenizer, config.model.template or sources.template, task.kind)
    tokenized = _tokenized(task, tokenizer, config)
    rows: list[dict[str, Any]] = []
    answers: dict[str, list[str]] = {}
    for name, model in _models(sources, options.compare_base):
        metrics, said = _measure(model, tokenizer, renderer, task, tokenized, options, config)
        rows.append({"name": name, "metrics": metrics})
        answers[name] = said
    result: dict[str, Any] = {
        "model": str(sources.model), "adapter": str(sources.tuned) if sources.tuned else None,
        "dataset": list(config.data.dataset), "kind": task.kind, "samples": len(task),
        "metrics": list(task.metrics), "rows": rows,
    }
    if tokenized is not None:
        result["loss_tokens"] = int(sum((tokenized.columns["labels"][i][1:] != -100).sum()
                                        for i in range(len(tokenized))))
        result["dropped_samples"] = len(tokenized.report.dropped)
    if len(rows) == 2:
        first, second = rows[0]["metrics"], rows[1]["metrics"]
        result["difference"] = {k: second[k] - first[k] for k in second if k in first}
    result["generations"] = _side_by_side(task, answers)
    target = _report_dir(options, sources)
    result["files"] = [str(p) for p in write_report(result, target)] if target else []
    return result


def _evaluate_encoder(config: RunConfig, options: EvalConfig, settings: Settings,
                      sources: Sources, kind: EncoderKind) -> dict[str, Any]:
    """`evaluate` for an embedding model or reranker: the set is checked whole, then each
    model (the base first with `compare_base`) is loaded and measured in turn."""
    from tuneforge.eval.retrieval import load_encoder_task
    from tuneforge.serve.encoders import EncoderEngine

    if kind == "reward":
        raise UnsupportedError("eval of a reward model", "not scored yet; expected an "
                               "embedding model or a reranker")
    if sources.is_adapter:
        raise UnsupportedError("eval --adapter with a LoRA adapter on an encoder",
                               "not loaded yet", hint="give the merged model as --adapter")
    task = load_encoder_task(config, options, kind)
    models = [("model", sources.model)] if sources.tuned is None else [
        *([("base", sources.model)] if options.compare_base else []),
        ("fine-tuned", sources.tuned)]
    rows = [{"name": name, "metrics": task.measure(
        EncoderEngine(str(path), settings, max_batch=options.batch_size))}
        for name, path in models]
    result: dict[str, Any] = {
        "model": str(sources.model), "adapter": str(sources.tuned) if sources.tuned else None,
        "dataset": list(config.data.dataset), "kind": task.kind, "samples": len(task),
        "documents": task.documents(), "metrics": list(task.metrics), "rows": rows,
        "generations": [],
    }
    if len(rows) == 2:
        result["difference"] = {k: rows[1]["metrics"][k] - rows[0]["metrics"][k]
                                for k in task.metrics}
    target = _report_dir(options, sources)
    result["files"] = [str(p) for p in write_report(result, target)] if target else []
    return result


def locate_sources(config: RunConfig, options: EvalConfig, settings: Settings) -> Sources:
    """Resolve --model and --adapter into directories, reading only small files.

    Raises:
        ConfigError: no model is given.
        NotFoundError: the model, adapter or run does not exist.
    """
    if not config.model.name_or_path:
        raise ConfigError.one("is required: the base model to evaluate",
                              field="model", source="command line")
    model = resolve_model(config.model.name_or_path, settings,
                          trust_remote_code=config.model.trust_remote_code)
    if options.adapter is None:
        return Sources(model, None, False, None, None)
    tuned = Path(options.adapter).expanduser()
    if not tuned.is_dir() and "/" not in options.adapter:
        tuned = settings.runs / options.adapter
    if not tuned.is_dir():
        raise NotFoundError("adapter", options.adapter, hint=(
            f"expected a run directory, a run id under {settings.runs}, or an adapter directory"))
    run_dir = None
    if (tuned / "output").is_dir():
        run_dir, tuned = tuned, tuned / "output"
    is_adapter = (tuned / ADAPTER_CONFIG).is_file()
    if not is_adapter and not (tuned / "config.json").is_file():
        raise NotFoundError("adapter", options.adapter, hint=(
            f"{tuned} holds neither {ADAPTER_CONFIG} nor config.json; expected a run "
            "directory, a run id, or a PEFT adapter directory"))
    return Sources(model, tuned.resolve(), is_adapter, run_dir, _training_template(tuned))


def load_task(config: RunConfig, options: EvalConfig) -> EvalTask:
    """The records (or multiple-choice questions) to score, and the metrics that fit them.

    Raises:
        DataError, NotFoundError: no dataset, or one with no usable records.
        ConfigError: a metric asked for does not fit the dataset.
        UnsupportedError: preference, kto, embedding or rerank records.
    """
    data = config.data
    if not data.dataset:
        raise DataError.one("no dataset given; expected a name or path", field="data.dataset")
    first = resolve_dataset(data.dataset[0], Path(data.dataset_dir), data.file_type)
    row = next(iter(read_rows(first.files[0], first.file_type)), (None, None))[0]
    if is_choice_row(row):
        questions = [q for name in data.dataset
                     for path in resolve_dataset(name, Path(data.dataset_dir), data.file_type).files
                     for q in read_choice_file(path, data.file_type)]
        task = EvalTask("choice", (), questions=questions[: data.max_samples])
    else:
        bundle = load_data(data, seed=config.training.seed)
        if bundle.kind not in ("sft", "pt"):
            raise UnsupportedError("eval", f"{bundle.kind} records are not scored yet; "
                                   "expected chat (sft), plain text (pt) or multiple choice")
        is_split = data.eval_split_ratio > 0 or bool(data.eval_dataset)
        task = EvalTask(bundle.kind, (), examples=bundle.eval if is_split else bundle.train)
    if not len(task):
        raise DataError.one("expected at least one record to evaluate, got none",
                            file=str(first.files[0]))
    fits = _METRICS[task.kind]
    bad = [m for m in options.metrics if m not in fits]
    if bad:
        raise ConfigError.one(
            f"expected metrics among {', '.join(fits)} for {task.kind} data, got "
            f"{', '.join(bad)}", field="metrics", source="command line")
    task.metrics = tuple(options.metrics) or fits
    return task


def generation_prompts(renderer: Renderer, examples: Sequence[Example],
                       default_system: str | None) -> list[str]:
    """Each conversation up to its last assistant turn, as the template renders it.

    data/templates.py's render_prompt over each conversation but its last reply.
    """
    prompts = []
    for ex in examples:
        assert isinstance(ex, ChatExample)
        prompts.append(render_prompt(renderer, ex.messages[:-1], ex.system or default_system,
                                     ex.tools))
    return prompts


def _renderer(tokenizer: Any, template: str | None, kind: str) -> Renderer | None:
    from tuneforge.data.templates import select_template

    return None if kind == "pt" else select_template(tokenizer, template)


def _tokenized(task: EvalTask, tokenizer: Any, config: RunConfig) -> Any:
    """Training's tokenisation of the records (never packed: one row per sample)."""
    if "loss" not in task.metrics:
        return None
    from tuneforge.data.tokenize import TokenizeOptions, tokenize_examples

    options = dataclasses.replace(TokenizeOptions.from_config(config), packing=False)
    return tokenize_examples(task.examples, tokenizer, options)


def _models(sources: Sources, compare_base: bool) -> Iterator[tuple[str, Any]]:
    """(row name, model): the base first when compared, then the fine-tune."""
    if sources.tuned is None:
        yield "model", _load(sources.model)
        return
    if sources.is_adapter:
        from peft import PeftModel

        tuned = PeftModel.from_pretrained(_load(sources.model), str(sources.tuned))
        if compare_base:
            with tuned.disable_adapter():
                yield "base", tuned
        yield "fine-tuned", tuned
        return
    if compare_base:
        yield "base", _load(sources.model)
    yield "fine-tuned", _load(sources.tuned)


def _load(path: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)


def _measure(model: Any, tokenizer: Any, renderer: Renderer | None, task: EvalTask,
             tokenized: Any, options: EvalConfig, config: RunConfig
             ) -> tuple[dict[str, float], list[str]]:
    """The asked metrics of one model, and its answers (for the text metrics)."""
    from tuneforge.eval.choice import choice_accuracy, predict_choices
    from tuneforge.eval.loss import eval_loss
    from tuneforge.eval.metrics import generation_scores
    from tuneforge.train.generate import greedy_answers

    out: dict[str, float] = {}
    answers: list[str] = []
    if tokenized is not None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        loss = eval_loss(model, tokenized, pad_token_id=pad, batch_size=options.batch_size)
        out |= {"loss": loss.loss, "perplexity": loss.perplexity}
    text = [m for m in task.metrics if m in TEXT_METRICS]
    if text and renderer is not None:
        prompts = generation_prompts(renderer, task.examples, config.model.default_system)
        for start in range(0, len(prompts), options.batch_size):
            answers += greedy_answers(model, tokenizer, prompts[start:start + options.batch_size],
                                      max_new_tokens=options.max_new_tokens)
        out |= generation_scores(answers, _references(task.examples), text)
    if "accuracy" in task.metrics and renderer is not None:
        picks = predict_choices(model, tokenizer, renderer, task.questions,
                                system=config.model.default_system, batch_size=options.batch_size)
        out["accuracy"] = choice_accuracy(picks, task.questions)
    return out, answers


def _references(examples: Sequence[Example]) -> list[str]:
    return [ex.messages[-1].content for ex in examples if isinstance(ex, ChatExample)]


def _side_by_side(task: EvalTask, answers: dict[str, list[str]]) -> list[dict[str, str]]:
    """The first answers of every model beside the question and the reference."""
    if not any(answers.values()):
        return []
    rows = []
    for i, ex in enumerate(task.examples[:GENERATIONS_KEPT]):
        if not isinstance(ex, ChatExample):
            continue
        row = {"prompt": ex.messages[-2].content if len(ex.messages) > 1 else "",
               "reference": ex.messages[-1].content}
        row |= {name: said[i] for name, said in answers.items() if said}
        rows.append(row)
    return rows


def _report_dir(options: EvalConfig, sources: Sources) -> Path | None:
    if options.output_dir is not None:
        return Path(options.output_dir).expanduser()
    return sources.run_dir / "eval" if sources.run_dir is not None else None


def _training_template(directory: Path) -> str | None:
    """The named template training used; None for the tokenizer's own (or unknown)."""
    path = directory / TEMPLATE_FILE
    if not path.is_file():
        return None
    name = json.loads(path.read_text(encoding="utf-8")).get("template")
    return name if isinstance(name, str) and name not in ("tokenizer", "none") else None
