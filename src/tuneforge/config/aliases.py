"""The one place where the seeds' names meet the canonical ones.

LLaMA-Factory's `num_train_epochs`, Qianfan's `epoch` and the REST service's `num_epochs` all
become `training.epochs` here, before validation. The tables are data, in
`resources/aliases/*.yaml`; this module applies them and remembers what the user typed, so
that errors quote it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from tuneforge.config.run import SECTIONS
from tuneforge.errors import Issue

SCHEMES = ("llamafactory", "qianfan", "rest")
Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Alias:
    """How one external key maps onto a canonical `section.field`."""

    target: str | None = None
    scale: float | None = None
    values: Mapping[str, Any] | None = None
    route: Mapping[str, str] | None = None
    section: Mapping[str, str] | None = None

    def resolve(self, value: Any) -> tuple[str, Any]:
        """The canonical target and the converted value, or ValueError naming what fits."""
        if self.route is not None:
            key = str(value)
            if key not in self.route:
                raise ValueError(f"expected one of {', '.join(self.route)}, got {value!r}")
            return self.route[key], value
        assert self.target is not None
        if self.values is not None:
            if str(value) not in self.values:
                raise ValueError(f"expected one of {', '.join(self.values)}, got {value!r}")
            return self.target, self.values[str(value)]
        if (
            self.scale is not None
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            return self.target, round(value * self.scale, 10)
        return self.target, value


@dataclass(frozen=True)
class Origin:
    """Where a canonical value came from: the key path as typed and its source."""

    raw_path: Path_
    source: str | None


def _parse_entry(raw: Any) -> Alias:
    if isinstance(raw, str):
        return Alias(target=raw)
    return Alias(
        target=raw.get("to"),
        scale=raw.get("scale"),
        values=raw.get("values"),
        route=raw.get("route"),
        section=raw.get("section"),
    )


@cache
def alias_table() -> dict[str, Alias]:
    """Every accepted key: canonical field names first, then each seed's aliases."""
    table: dict[str, Alias] = {}
    for section, model in SECTIONS.items():
        for name in model.model_fields:
            table[name] = Alias(target=f"{section}.{name}")
    for scheme in SCHEMES:
        text = resources.files("tuneforge.resources.aliases").joinpath(f"{scheme}.yaml")
        for key, raw in yaml.safe_load(text.read_text(encoding="utf-8")).items():
            table.setdefault(key, _parse_entry(raw))
    return table


def suggest(name: str, candidates: list[str] | None = None) -> str:
    """' (did you mean 'x'?)' for the closest known name, or ''."""
    pool = candidates if candidates is not None else list(alias_table())
    match = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def display(path: Path_) -> str:
    """A key path as a user reads it: a.b[0].c."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class Normalizer:
    """Turns one source's keys (flat, nested or mixed naming) into canonical nested dicts."""

    def __init__(self, source: str | None, lines: Mapping[Path_, int] | None = None) -> None:
        self.source = source
        self.lines = lines or {}
        self.nested: dict[str, dict[str, Any]] = {}
        self.origins: dict[tuple[str, str], Origin] = {}
        self.issues: list[Issue] = []

    def _issue(self, raw_path: Path_, message: str) -> None:
        self.issues.append(
            Issue(message, file=self.source, line=self.lines.get(raw_path), field=display(raw_path))
        )

    def _put(self, target: str, value: Any, raw_path: Path_) -> None:
        section, name = target.split(".", 1)
        previous = self.origins.get((section, name))
        if previous is not None:
            self._issue(
                raw_path,
                f"sets {target} which {display(previous.raw_path)!s} already sets; keep one",
            )
            return
        self.nested.setdefault(section, {})[name] = value
        self.origins[(section, name)] = Origin(raw_path, self.source)

    def add(
        self, key: str, value: Any, raw_path: Path_ = (), only_section: str | None = None
    ) -> None:
        """Map one key (as typed, at `raw_path`) onto its canonical place."""
        raw_path = raw_path or (key,)
        table = alias_table()
        if key in SECTIONS and isinstance(value, Mapping) and only_section is None:
            for sub_key, sub_value in value.items():
                self.add(str(sub_key), sub_value, (*raw_path, str(sub_key)), only_section=key)
            return
        if "." in key and key.split(".", 1)[0] in SECTIONS and only_section is None:
            section, name = key.split(".", 1)
            self.add(name, value, raw_path, only_section=section)
            return
        alias = table.get(key)
        if alias is not None and alias.section is not None:
            if not isinstance(value, Mapping):
                self._issue(raw_path, f"expected a mapping of {', '.join(alias.section)}")
                return
            for sub_key, sub_value in value.items():
                sub_path = (*raw_path, str(sub_key))
                if str(sub_key) not in alias.section:
                    hint = suggest(str(sub_key), list(alias.section))
                    self._issue(sub_path, f"unknown key {sub_key!r}{hint}")
                    continue
                self._put(alias.section[str(sub_key)], sub_value, sub_path)
            return
        if alias is None:
            pool = None
            if only_section is not None:
                pool = list(SECTIONS[only_section].model_fields)
            self._issue(raw_path, f"unknown key {key!r}{suggest(key, pool)}")
            return
        try:
            target, converted = alias.resolve(value)
        except ValueError as exc:
            self._issue(raw_path, str(exc))
            return
        if only_section is not None and not target.startswith(only_section + "."):
            self._issue(
                raw_path,
                f"{key!r} belongs to section {target.split('.')[0]!r}, not {only_section!r}",
            )
            return
        self._put(target, converted, raw_path)


def normalize(
    raw: Mapping[str, Any], source: str | None, lines: Mapping[Path_, int] | None = None
) -> Normalizer:
    """Apply the alias tables to every key of `raw`; problems are collected, not raised."""
    normalizer = Normalizer(source, lines)
    for key, value in raw.items():
        normalizer.add(str(key), value)
    return normalizer
