"""How the CLI ends: typer.Exit codes reach the shell."""

from __future__ import annotations

import typer

from tuneforge.cli.errors import run_cli


def test_a_typer_exit_code_is_the_exit_status() -> None:
    app = typer.Typer()

    @app.command()
    def fail() -> None:
        raise typer.Exit(3)

    @app.command()
    def succeed() -> None:
        pass

    command = typer.main.get_command(app)
    assert run_cli(command, ["fail"]) == 3
    assert run_cli(command, ["succeed"]) == 0
