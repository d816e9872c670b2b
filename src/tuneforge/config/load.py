"""YAML / JSON / argv / dict -> RunConfig, with every error placed at its file, line and key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tuneforge.config.aliases import Normalizer, Path_, display, normalize
from tuneforge.config.run import RunConfig
from tuneforge.errors import ConfigError, Issue


def _node_lines(node: yaml.Node, prefix: Path_, out: dict[Path_, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            out[path] = key_node.start_mark.line + 1
            _node_lines(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = (*prefix, index)
            out[path] = item.start_mark.line + 1
            _node_lines(item, path, out)


def read_yaml(path: Path) -> tuple[Any, dict[Path_, int]]:
    """Parse a YAML (or JSON) file and the 1-based line of every key and list item."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError.one("file not found", source=source) from None
    except UnicodeDecodeError as exc:
        raise ConfigError.one(f"expected UTF-8 text: {exc.reason}", source=source) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError.one(f"invalid YAML: {exc.problem}", source=source, line=line) from None
    lines: dict[Path_, int] = {}
    if node is not None:
        _node_lines(node, (), lines)
    return data, lines


def _scalar(text: str) -> Any:
    """A command-line value typed as YAML would type it ("4" -> 4, "true" -> True)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, str | int | float | bool) and value is not None else text


def parse_overrides(argv: Sequence[str]) -> dict[str, Any]:
    """`--key value`, `--key=value` and bare `--flag` (true) as LLaMA-Factory's CLI takes them."""
    out: dict[str, Any] = {}
    items = list(argv)
    i = 0
    while i < len(items):
        token = items[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError.one(
                f"expected an option like --learning_rate 1e-4, got {token!r}",
                source="command line",
            )
        key = token[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            out[key] = _scalar(value)
        elif i + 1 < len(items) and not items[i + 1].startswith("--"):
            out[key] = _scalar(items[i + 1])
            i += 1
        else:
            out[key] = True
        i += 1
    return out


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    for prefix in ("Input should be ", "Value error, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
            if prefix == "Input should be ":
                msg = "expected " + msg
    if err["type"] == "missing":
        return "is required"
    if "got " not in msg and "input" in err and not isinstance(err["input"], Mapping):
        msg += f", got {err['input']!r}"
    return msg


def _validation_issues(exc: ValidationError, sources: Sequence[Normalizer]) -> list[Issue]:
    issues = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        origin = None
        for normalizer in reversed(sources):  # the later source (argv) won the merge
            if len(loc) >= 2 and (loc[0], loc[1]) in normalizer.origins:
                origin = normalizer.origins[(str(loc[0]), str(loc[1]))], normalizer
                break
        if origin is None:
            issues.append(
                Issue(
                    _message(err),
                    field=display(loc) if loc else None,
                    file=sources[-1].source if sources else None,
                )
            )
            continue
        where, normalizer = origin
        raw_path = (*where.raw_path, *loc[2:])
        line = normalizer.lines.get(raw_path) or normalizer.lines.get(where.raw_path)
        issues.append(Issue(_message(err), file=where.source, line=line, field=display(raw_path)))
    return issues


def build_run_config(
    *layers: tuple[Mapping[str, Any], str | None, Mapping[Path_, int] | None],
) -> RunConfig:
    """Merge (raw dict, source, lines) layers, later ones winning, and validate once."""
    normalizers = [normalize(raw, source, lines) for raw, source, lines in layers]
    issues = [issue for n in normalizers for issue in n.issues]
    merged: dict[str, dict[str, Any]] = {}
    for normalizer in normalizers:
        for section, values in normalizer.nested.items():
            merged.setdefault(section, {}).update(values)
    try:
        config = RunConfig.model_validate(merged)
    except ValidationError as exc:
        # report unknown keys and bad values together: every problem at once
        raise ConfigError(issues + _validation_issues(exc, normalizers)) from None
    if issues:
        raise ConfigError(issues)
    return config


def load_run_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    values: Mapping[str, Any] | None = None,
    source: str = "request",
    defaults: tuple[Mapping[str, Any], str] | None = None,
) -> RunConfig:
    """A RunConfig from `defaults` (values and where they come from), then a YAML/JSON file,
    then `values` (a dict), then argv-style overrides; later ones win."""
    layers: list[tuple[Mapping[str, Any], str | None, Mapping[Path_, int] | None]] = []
    if defaults is not None:
        layers.append((defaults[0], defaults[1], None))
    if path is not None:
        data, lines = read_yaml(Path(path))
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError.one(
                f"expected a mapping of options, got {type(data).__name__}",
                source=str(path),
                line=1,
            )
        layers.append((data, str(path), lines))
    if values is not None:
        layers.append((values, source, None))
    if overrides:
        layers.append((parse_overrides(overrides), "command line", None))
    return build_run_config(*layers)


def dump_run_config(config: RunConfig) -> str:
    """The resolved config as YAML, canonical names only: alone it reproduces the run."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
