"""`tuneforge`: one function per command, each *build config -> call the core -> render*."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tuneforge import __version__
from tuneforge.cli import render
from tuneforge.cli.errors import run_cli
from tuneforge.cli.models import models_app
from tuneforge.config import dump_run_config, load_run_config
from tuneforge.errors import DataError, Issue
from tuneforge.settings import Settings

app = typer.Typer(
    help="Fine-tune, publish, serve and evaluate open models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Check and look at datasets.", no_args_is_help=True)
config_app = typer.Typer(help="Resolve and describe run configurations.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
DatasetArg = Annotated[str, typer.Argument(help="A data file or folder, or a dataset_info name.")]
DatasetDir = Annotated[
    str, typer.Option("--dataset_dir", "--dataset-dir", help="Folder with dataset_info.json.")
]
Tokenizer = Annotated[
    str | None,
    typer.Option(help="Tokenizer: a model/tokenizer folder, a .gguf file or an alias."),
]
Template = Annotated[
    str | None, typer.Option(help="Named chat template; default: the tokenizer's own.")
]
CutoffLen = Annotated[int, typer.Option("--cutoff_len", "--cutoff-len", help="Max tokens.")]
Formatting = Annotated[str, typer.Option(help="Record format; auto infers it.")]
Stage = Annotated[
    str | None, typer.Option(help="Training stage the data is for (pt, sft, rm, dpo, ...).")
]


def _version(value: bool) -> None:
    if value:
        render.print_text(f"tuneforge {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """tuneforge: one core, three faces (SDK, CLI, REST)."""


def _data_values(dataset_dir: str, cutoff_len: int, formatting: str, template: str | None,
                 tokenizer: str | None) -> dict[str, object]:
    return {"dataset_dir": dataset_dir, "cutoff_len": cutoff_len, "formatting": formatting,
            "template": template, "tokenizer": tokenizer}


@data_app.command("validate")
def data_validate(
    dataset: DatasetArg,
    dataset_dir: DatasetDir = "data",
    tokenizer: Tokenizer = None,
    template: Template = None,
    cutoff_len: CutoffLen = 2048,
    formatting: Formatting = "auto",
    stage: Stage = None,
    show_all: Annotated[bool, typer.Option("--all", help="List every problem.")] = False,
) -> None:
    """Check a dataset: kind, counts, the first problems, and token lengths with --tokenizer."""
    from tuneforge.data.summary import inspect_dataset

    values = _data_values(dataset_dir, cutoff_len, formatting, template, tokenizer)
    config = load_run_config(values=values, source="command line")
    summary = inspect_dataset(dataset, config, stage=stage, settings=Settings())
    render.print_summary(summary, show_all)
    if summary["dropped"]:
        raise DataError([Issue(f"{summary['dropped']} of {summary['rows']} rows are invalid",
                               file=summary["files"][0] if summary["files"] else None)])


@data_app.command("preview")
def data_preview(
    dataset: DatasetArg,
    tokenizer: Annotated[str, typer.Option(help="Tokenizer: a folder, a .gguf file or an alias.")],
    dataset_dir: DatasetDir = "data",
    template: Template = None,
    cutoff_len: CutoffLen = 2048,
    formatting: Formatting = "auto",
    stage: Stage = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Samples shown.")] = 3,
) -> None:
    """Show the rendered training text of a few samples with the learned spans marked."""
    from tuneforge.data.summary import preview_dataset

    values = _data_values(dataset_dir, cutoff_len, formatting, template, tokenizer)
    config = load_run_config(values=values, source="command line")
    header, samples = preview_dataset(dataset, config, stage=stage, count=count,
                                      settings=Settings())
    render.print_preview(samples, header)


@config_app.command("show", context_settings=EXTRA)
def config_show(
    ctx: typer.Context,
    config: Annotated[str | None, typer.Argument(help="A YAML or JSON config file.")] = None,
) -> None:
    """Resolve a config (file, then --key value overrides) and print it with canonical names;
    as `train` does, with train_lora.py's flags the LoRA defaults of ./config/models.yaml."""
    overrides = list(ctx.args)
    if config is not None and config.startswith("--"):  # no file: the first override
        config, overrides = None, [config, *overrides]
    from tuneforge.config.models_yaml import script_defaults

    render.print_yaml(dump_run_config(load_run_config(
        config, overrides=overrides, defaults=script_defaults(overrides, Path.cwd()))))


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of RunConfig."""
    import json

    from tuneforge.config import RunConfig

    render.print_yaml(json.dumps(RunConfig.model_json_schema(), indent=2) + "\n")


@app.command("train", context_settings=EXTRA,
             short_help="Fine-tune a model (LLaMA-Factory / Qianfan / REST option names).")
def train_command(
    ctx: typer.Context,
    config: Annotated[str | None, typer.Argument(help="A YAML or JSON config file.")] = None,
) -> None:
    """Fine-tune a model. Takes LLaMA-Factory's, Qianfan's and the REST service's option
    names, from a YAML/JSON file and as --key value flags (flags win). With --launcher
    torchrun --nproc_per_node N (or FORCE_TORCHRUN=1) it runs as N processes under torchrun."""
    from tuneforge.config.models_yaml import script_defaults
    from tuneforge.train.launch import force_torchrun_flags, launch, needs_launch
    from tuneforge.train.run import train

    overrides = list(ctx.args)
    if config is not None and config.startswith("--"):
        config, overrides = None, [config, *overrides]
    overrides = [*force_torchrun_flags(os.environ), *overrides]
    run_config = load_run_config(config, overrides=overrides,
                                 defaults=script_defaults(overrides, Path.cwd()))
    if needs_launch(run_config):  # this same command again, as torchrun's processes
        code, launched = launch(run_config, [*filter(None, [config]), *overrides], Settings())
        if launched is not None:
            render.print_train_outcome(launched)
        raise typer.Exit(code)
    try:
        with render.training_progress() as progress:
            outcome = train(run_config, Settings(), progress=progress)
    except KeyboardInterrupt:  # a second Ctrl-C/SIGTERM (the first asks for a checkpoint)
        render.print_error("stopped at once by a second signal, without a checkpoint; the same "
                           "command resumes from the last complete one")
        raise typer.Exit(130) from None
    render.print_train_outcome(outcome)


@app.command("export", short_help="Merge an adapter; write an Ollama Modelfile and GGUF.")
def export_command(
    output_dir: Annotated[str, typer.Option("--output_dir", "--output-dir",
                                            help="Where the exported model is written.")],
    model: Annotated[str | None, typer.Option(
        help="Base model (alias, directory, .gguf, cached hub id); default: the adapter's."),
    ] = None,
    adapter: Annotated[str | None, typer.Option(
        help="A run directory or run id (its output/), or a PEFT adapter directory.")] = None,
    merge: Annotated[
        bool, typer.Option("--merge", help="Merge the adapter into the base.")] = False,
    export_format: Annotated[str, typer.Option(
        "--format", help="safetensors, or gguf (also writes model.gguf).")] = "safetensors",
    outtype: Annotated[str, typer.Option(help="GGUF tensor type: f32 or f16.")] = "f32",
    template: Annotated[str | None, typer.Option(
        help="Named chat template; default: the one training used.")] = None,
) -> None:
    """Write a merged safetensors model with its tokenizer and an Ollama Modelfile whose
    TEMPLATE and stop tokens are the training template's; --format gguf adds a GGUF file."""
    from tuneforge.config.export import build_export_config
    from tuneforge.export.run import export_model

    config = build_export_config({
        "model": model, "adapter": adapter, "output_dir": output_dir, "merge": merge,
        "format": export_format, "outtype": outtype, "template": template})
    render.print_export(export_model(config, Settings()))


@app.command("demo", context_settings=EXTRA,
             short_help="The main job: teach SmolLM2 a new identity, answers before/after.")
def demo(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="The model to teach the new identity.")] = (
        "smollm2-135m-instruct"
    ),
    embedding: Annotated[bool, typer.Option(
        "--embedding/--no-embedding",
        help="Then fine-tune all-MiniLM-L6-v2 on the shipped FAQ and compare retrieval "
        "before and after.")] = True,
) -> None:
    """Run the main job on the embedded defaults: LoRA-tune SmolLM2-135M-Instruct on the
    shipped identity dataset and compare held-out answers before and after; then fine-tune
    the embedding model on the shipped FAQ and compare recall@5 and MRR on held-out
    questions. Extra --key value flags change the LLM's training settings, as for
    `tuneforge train`."""
    from tuneforge.train.demo import demo_config, run_demo

    config = demo_config(model, overrides=list(ctx.args))
    with render.training_progress() as progress:
        result = run_demo(Settings(), config, progress=progress, on_stage=render.print_stage)
    render.print_demo(result)
    if embedding:
        from tuneforge.eval.faq_demo import run_faq_demo

        render.print_stage("fine-tuning minilm-l6-v2 on the FAQ's 400 training questions")
        with render.training_progress() as progress:
            report = run_faq_demo(Settings(), progress)
        render.print_eval(report)


@app.command("eval", short_help="Score a model or fine-tune (loss, text metrics, choice); report.")
def eval_command(
    model: Annotated[str, typer.Option(
        "--model", "--model_name_or_path", help="Base model: alias, directory, .gguf, hub id.")],
    dataset: Annotated[str, typer.Option(
        help="Data file(s) or dataset_info name(s), comma-separated; a file with question, "
        "A, B, C, D, answer columns is scored as multiple choice.")],
    adapter: Annotated[str | None, typer.Option(
        "--adapter", "--adapter_name_or_path",
        help="A run directory or run id (its output/), or a PEFT adapter directory.")] = None,
    dataset_dir: DatasetDir = "data",
    metrics: Annotated[str | None, typer.Option(
        help="Comma-separated: loss, exact_match, f1, rouge_l, bleu, chrf, accuracy; "
        "recall@1, recall@5, recall@10, mrr, ndcg@10 (embedding models, rerankers); "
        "default: all that fit the data and model.")] = None,
    compare_base: Annotated[bool, typer.Option(
        "--compare-base", "--compare_base", help="Also evaluate the base; report both.")] = False,
    max_samples: Annotated[int | None, typer.Option(
        "--max_samples", "--max-samples", min=1, help="Samples per dataset.")] = None,
    val_size: Annotated[float, typer.Option(
        "--val_size", "--val-size", help="Score only this held-out fraction (as training).")] = 0,
    output_dir: Annotated[str | None, typer.Option(
        "--output_dir", "--output-dir", help="Report folder; default: the run's eval/.")] = None,
    template: Template = None,
    cutoff_len: CutoffLen = 2048,
    max_new_tokens: Annotated[int, typer.Option(
        "--max_new_tokens", "--max-new-tokens", help="Tokens per generated answer.")] = 64,
) -> None:
    """Evaluate a model (and adapter): eval loss and perplexity, EM/F1/ROUGE-L/BLEU/chrF of
    greedy answers, or multiple-choice accuracy; with --compare-base beside its base, writing
    report.json/md/png."""
    from tuneforge.config.eval import build_eval_config
    from tuneforge.eval.run import evaluate

    run_config = load_run_config(values={
        "model_name_or_path": model, "dataset": dataset, "dataset_dir": dataset_dir,
        "max_samples": max_samples, "val_size": val_size, "template": template,
        "cutoff_len": cutoff_len}, source="command line")
    options = build_eval_config({
        "adapter": adapter, "metrics": metrics or [], "compare_base": compare_base,
        "output_dir": output_dir, "max_new_tokens": max_new_tokens})
    render.print_eval(evaluate(run_config, options, Settings()))


@app.command("serve", short_help="Serve models over HTTP: OpenAI API, adapters, /generate.")
def serve_command(
    models: Annotated[list[str] | None, typer.Argument(
        help="Models to serve: SOURCE or NAME=SOURCE (alias, directory, run, .gguf); "
        "default: smollm2-135m-instruct.", show_default=False)] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "--model_name_or_path", help="Another model to serve (repeatable).",
        show_default=False)] = None,
    adapter: Annotated[list[str] | None, typer.Option(
        "--adapter", "--lora", help="NAME=PATH or BASE:NAME=PATH: a LoRA adapter (run "
        "directory, run id or adapter directory) loaded at start (repeatable).",
        show_default=False)] = None,
    host: Annotated[str | None, typer.Option(help="Address; default 127.0.0.1.")] = None,
    port: Annotated[int | None, typer.Option(help="Port; default 8000; 0 picks one.")] = None,
    max_batch: Annotated[int | None, typer.Option(
        "--max-batch", "--max_batch", help="Sequences decoded at once; default 16.")] = None,
    max_queue: Annotated[int | None, typer.Option(
        "--max-queue", "--max_queue", help="Waiting requests per model before 503; "
        "default 64.")] = None,
    max_adapters: Annotated[int | None, typer.Option(
        "--max-adapters", "--max_loras", help="Adapters kept per model; default 8.")] = None,
    backend: Annotated[str | None, typer.Option(
        help="transformers, vllm (CUDA + vLLM) or auto (vllm where possible).")] = None,
    weights: Annotated[str | None, typer.Option(
        help="CPU linear weights: auto (default: float16 for a few rows, bfloat16 for "
        "batches where the CPU has AMX), float16 (math in float32), bfloat16 or "
        "float32 (exact).")] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", "--api_key", envvar=["TUNEFORGE_API_TOKEN", "TUNEFORGE_API_KEY"],
        help="Require `Authorization: Bearer KEY` on every request but /health (needed "
        "with a --host other than loopback).")] = None,
    worker_slots: Annotated[int | None, typer.Option(
        "--worker-slots", "--worker_slots", help="Training jobs run at once; default 1.")
    ] = None,
    auto_resume: Annotated[bool | None, typer.Option(
        "--auto-resume/--no-auto-resume", help="Resume jobs a restart interrupted; "
        "default on.", show_default=False)] = None,
    root: Annotated[list[str] | None, typer.Option(
        "--root", help="Another folder request paths may name (repeatable); "
        "TUNEFORGE_HOME and the working directory always may.", show_default=False)] = None,
    max_upload_mb: Annotated[float | None, typer.Option(
        "--max-upload-mb", "--max_upload_mb", help="Largest upload in MiB; default 100.")
    ] = None,
) -> None:
    """Serve causal LMs (with LoRA adapters), embedding models, rerankers and reward models:
    OpenAI's /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models, plus
    /v1/rerank, /v1/score/evaluation, /v1/load_lora_adapter, /models/load, /generate,
    /health and /metrics; and the training service: /train (a job queue run by worker
    processes), OpenAI's /v1/files and /v1/fine_tuning/jobs, and a dashboard at /. Ctrl-C
    stops it."""
    from tuneforge.config.serve import build_serve_config
    from tuneforge.server.run import serve

    chosen = [*(models or []), *(model or [])]
    config = build_serve_config({
        "models": chosen or None, "adapters": adapter, "host": host, "port": port,
        "max_batch": max_batch, "max_queue": max_queue, "max_adapters": max_adapters,
        "backend": backend, "weights": weights, "api_key": api_key,
        "worker_slots": worker_slots, "auto_resume": auto_resume, "roots": root,
        "max_upload_mb": max_upload_mb})
    serve(config, Settings(), on_ready=render.print_serving)


@app.command("chat", short_help="Chat with a model (and adapter) in the terminal.")
def chat_command(
    model: Annotated[str, typer.Argument(
        help="Alias, model directory or .gguf file.")] = "smollm2-135m-instruct",
    adapter: Annotated[str | None, typer.Option(
        "--adapter", "--adapter_name_or_path",
        help="A run directory or run id (its output/), or a PEFT adapter directory.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", "--max_new_tokens", min=1, help="Most tokens per answer.")] = 512,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 is greedy.")] = 0.7,
    top_p: Annotated[float, typer.Option("--top-p", "--top_p", min=0.0, max=1.0)] = 0.9,
    weights: Annotated[str, typer.Option(
        help="CPU linear weights: auto (float16 for a few rows, bfloat16 for more where the "
        "CPU has AMX), float16 (math in float32), bfloat16 or float32 (exact).")
    ] = "auto",
) -> None:
    """A terminal conversation: type a message, read the answer as it is generated.
    `clear` forgets the conversation, `exit` (or Ctrl-D) quits, Ctrl-C stops an answer."""
    from tuneforge.config.serve import build_serve_config
    from tuneforge.serve.chat import ChatSession
    from tuneforge.serve.engine import Engine

    checked = build_serve_config({"weights": weights}).weights  # a bad value: one line, exit 2
    with Engine(model, Settings(), max_batch=1, weights=checked) as engine:
        if adapter is not None:
            engine.load_adapter("adapter", adapter)
        session = ChatSession(engine, adapter="adapter" if adapter else None, system=system,
                              max_tokens=max_tokens, temperature=temperature,
                              top_p=top_p or 1.0)
        render.chat_loop(session)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    raise SystemExit(run_cli(typer.main.get_command(app), argv))
