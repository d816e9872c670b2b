"""How the CLI ends on a user's mistake: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import click

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


def run_cli(command: click.Command, argv: list[str] | None = None) -> int:
    """Run a click command; user errors become one line and exit 2."""
    try:
        command.main(args=argv, prog_name="tuneforge", standalone_mode=False)
    except UserError as exc:
        print_error(one_line(exc))
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        print_error("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2
    return 0
