"""How the CLI ends on a user's mistake: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

from typing import Any

import typer

from tuneforge.cli.render import print_error
from tuneforge.errors import TuneforgeError, UserError


def one_line(error: TuneforgeError) -> str:
    """`file:line: field: message` for the first problem, and how many more there are."""
    issues = getattr(error, "issues", None)
    if issues:
        text = str(issues[0])
        if len(issues) > 1:
            text += f" (and {len(issues) - 1} more)"
        if error.hint:
            text += f" [{error.hint}]"
        return text
    return str(error)


def run_cli(command: Any, argv: list[str] | None = None) -> int:
    """Run the typer/click command; user errors become one line and exit 2."""
    try:
        # without standalone mode click returns a typer.Exit's code instead of raising it
        code = command.main(args=argv, prog_name="tuneforge", standalone_mode=False)
    except UserError as exc:
        print_error(one_line(exc))
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        print_error("aborted")
        return 130
    except typer.TyperException as exc:  # click's usage errors, through typer
        exc.show()  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", 2))
    return code if isinstance(code, int) else 0
