"""Generators for docs/cli.md and docs/config.md, run by cog (`make docs`, checked in tests)."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from tuneforge.cli.main import app


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        out.append(path)
        if hasattr(command, "commands"):
            out += _commands(command, path)
    return out


def command_paths() -> list[tuple[str, ...]]:
    """Every command and group of the CLI, as argv prefixes."""
    return [(), *_commands(typer.main.get_command(app))]


def cli_reference() -> str:
    """`--help` of every command, as Markdown sections."""
    runner = CliRunner()
    parts = []
    for path in command_paths():
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100", "NO_COLOR": "1"},
                               terminal_width=100, prog_name="tuneforge")
        title = " ".join(("tuneforge", *path))
        body = "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())
        parts.append(f"### `{title}`\n\n```text\n{body}\n```\n")
    return "\n".join(parts)


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "").replace("tuneforge.config.data.", "")
    if text.startswith("Optional[") and text.endswith("]"):
        text = f"{text[len('Optional['):-1]} | None"
    return text.replace("|", "\\|")


def config_reference() -> str:
    """Every RunConfig field with its type, default, description and accepted aliases."""
    from tuneforge.config.aliases import SCHEMES, alias_table
    from tuneforge.config.run import SECTIONS

    aliases: dict[str, list[str]] = {}
    for key, alias in alias_table().items():
        targets = list(alias.route.values()) if alias.route else [alias.target]
        targets += list(alias.section.values()) if alias.section else []
        for target in targets:
            if target and not target.endswith("." + key):
                prefix = f"{key}." if alias.section else ""
                names = [f"{prefix}{k}" for k, v in (alias.section or {}).items() if v == target]
                aliases.setdefault(target, []).extend(names or [key])
    lines = [f"Alias tables: {', '.join(f'`resources/aliases/{s}.yaml`' for s in SCHEMES)}.\n"]
    for section, model in SECTIONS.items():
        lines += [f"## `{section}`\n", model.__doc__ or "", "",
                  "| field | type | default | aliases | description |", "|---|---|---|---|---|"]
        for name, info in model.model_fields.items():
            annotation = _type_name(info.annotation)
            default = repr(info.get_default(call_default_factory=True))
            names = ", ".join(f"`{a}`" for a in sorted(set(aliases.get(f"{section}.{name}", []))))
            lines.append(f"| `{name}` | `{annotation}` | `{default}` | {names} | "
                         f"{info.description} |")
        lines.append("")
    return "\n".join(lines)
