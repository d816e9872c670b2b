"""Terminal output of the CLI: rich tables and text. The only module that prints."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

_out = Console(soft_wrap=True)
_err = Console(stderr=True, soft_wrap=True)


def print_error(message: str) -> None:
    """One line on stderr: `error: <message>`; newlines folded so it stays one line."""
    print(f"error: {message}".replace("\n", " "), file=sys.stderr)


def print_text(text: str) -> None:
    """Plain text to stdout, with no markup interpretation."""
    _out.print(Text(text))


def print_summary(summary: Mapping[str, Any], show_all: bool) -> None:
    """The report of `tuneforge data validate`."""
    table = Table(title=f"dataset {summary['name']}", show_header=False)
    for key in ("kind", "files", "rows", "kept", "dropped", "train", "eval"):
        if key in summary:
            value = summary[key]
            if isinstance(value, list):
                value = ", ".join(map(str, value))
            table.add_row(key, str(value))
    for reason, count in summary.get("reasons", {}).items():
        table.add_row(f"dropped: {reason}", str(count))
    tokens = summary.get("tokens")
    if tokens:
        table.add_row("tokenizer", str(tokens["tokenizer"]))
        table.add_row("template", str(tokens["template"]))
        table.add_row(
            "tokens per sample",
            "min {min}  p50 {p50}  p90 {p90}  p99 {p99}  max {max}  mean {mean:.1f}".format(
                **tokens["lengths"]
            ),
        )
        table.add_row(f"truncated by cutoff_len={tokens['cutoff_len']}", str(tokens["truncated"]))
        table.add_row("dropped by cutoff_len", str(tokens["dropped"]))
    _out.print(table)
    issues: Sequence[str] = [*summary.get("issues", []), *(tokens or {}).get("dropped_samples", [])]
    shown = issues if show_all else issues[:5]
    for issue in shown:
        print_text(f"  {issue}")
    if len(issues) > len(shown):
        print_text(f"  ... {len(issues) - len(shown)} more (use --all)")


def print_preview(samples: Sequence[Sequence[tuple[str, bool]]], header: str) -> None:
    """Rendered training text; learned spans highlighted (and bracketed when not a tty)."""
    _out.print(Text(header, style="bold"))
    plain = not _out.is_terminal
    for i, pieces in enumerate(samples):
        _out.rule(f"sample {i}")
        text = Text()
        for piece, learned in pieces:
            if learned and plain:
                text.append("[[" + piece + "]]")
            else:
                text.append(piece, style="black on green" if learned else "")
        _out.print(text)
    if plain:
        print_text("(text between [[ and ]] is learned)")


def print_yaml(text: str) -> None:
    """A YAML document, verbatim."""
    print(text, end="")
