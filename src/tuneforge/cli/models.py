"""`tuneforge models ...`: prepare the bundled models and list what is available."""

from __future__ import annotations

from typing import Annotated

import typer

from tuneforge.cli import render
from tuneforge.models import list_models, prepare_model
from tuneforge.settings import Settings

models_app = typer.Typer(help="Prepare and list models.", no_args_is_help=True)

NameArg = Annotated[
    str, typer.Argument(help="An alias (see `tuneforge models list`) or a .gguf file.")
]
Force = Annotated[
    bool, typer.Option("--force", help="Prepare again, replacing the prepared directory.")
]


@models_app.command("prepare")
def models_prepare(name: NameArg, force: Force = False) -> None:
    """Dequantise a GGUF model once into a checked float32 transformers directory."""
    render.print_prepared(name, prepare_model(name, Settings(), force=force))


@models_app.command("list")
def models_list() -> None:
    """List the bundled aliases (and whether they are ready) and the prepared models."""
    render.print_models(list_models(Settings()))
