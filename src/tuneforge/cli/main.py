"""`tuneforge`: one function per command, each *build config -> call the core -> render*."""

from __future__ import annotations

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
    """Resolve a config (file, then --key value overrides) and print it with canonical names."""
    overrides = list(ctx.args)
    if config is not None and config.startswith("--"):  # no file: the first override
        config, overrides = None, [config, *overrides]
    render.print_yaml(dump_run_config(load_run_config(config, overrides=overrides)))


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of RunConfig."""
    import json

    from tuneforge.config import RunConfig

    render.print_yaml(json.dumps(RunConfig.model_json_schema(), indent=2) + "\n")


@app.command("train", context_settings=EXTRA)
def train_command(
    ctx: typer.Context,
    config: Annotated[str | None, typer.Argument(help="A YAML or JSON config file.")] = None,
) -> None:
    """Fine-tune a model. Takes LLaMA-Factory's, Qianfan's and the REST service's option
    names, from a YAML/JSON file and as --key value flags (flags win)."""
    from tuneforge.train.run import train

    overrides = list(ctx.args)
    if config is not None and config.startswith("--"):
        config, overrides = None, [config, *overrides]
    run_config = load_run_config(config, overrides=overrides)
    with render.training_progress() as progress:
        outcome = train(run_config, Settings(), progress=progress)
    render.print_train_outcome(outcome)


@app.command("demo")
def demo(
    tokenizer: Annotated[str, typer.Option(help="Tokenizer for the preview.")] = (
        "smollm2-135m-instruct"
    ),
) -> None:
    """Run the main job on the embedded defaults: validate and preview the demo dataset."""
    from tuneforge.data.summary import demo_dataset_dir, inspect_dataset, preview_dataset

    values = {"dataset_dir": str(demo_dataset_dir()), "tokenizer": tokenizer, "cutoff_len": 512}
    config = load_run_config(values=values, source="demo")
    settings = Settings()
    render.print_summary(inspect_dataset("forge_identity", config, settings=settings), False)
    header, samples = preview_dataset("forge_identity", config, count=2, settings=settings)
    render.print_preview(samples, header)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    raise SystemExit(run_cli(typer.main.get_command(app), argv))
