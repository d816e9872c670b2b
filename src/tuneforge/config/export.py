"""ExportConfig: what `tuneforge export` merges, converts and writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from tuneforge.config._base import Section, validate_values


class ExportConfig(Section):
    """One export: a base model (and adapter) in, a merged model with a Modelfile out."""

    model: str | None = Field(
        default=None,
        description="Base model: an alias, a transformers directory, a .gguf file or a cached "
        "hub id; default: the base named in the adapter's adapter_config.json.",
    )
    adapter: str | None = Field(
        default=None,
        description="A run directory (its output/ is used), a run id under the runs folder, or "
        "a PEFT adapter directory. A run of full fine-tuning gives a whole model instead.",
    )
    output_dir: str = Field(
        description="Where the exported model is written (whole or not at all)."
    )
    merge: bool = Field(
        default=False, description="Merge the adapter's weights into the base model."
    )
    format: Literal["safetensors", "gguf"] = Field(
        default="safetensors",
        description="safetensors writes a transformers directory; gguf also writes model.gguf "
        "and points the Modelfile at it.",
    )
    outtype: Literal["f32", "f16"] = Field(
        default="f32", description="GGUF tensor type (1-D tensors stay f32, as llama.cpp's)."
    )
    template: str | None = Field(
        default=None,
        description="Chat template for the Modelfile and the exported tokenizer; default: the "
        "one training used (tuneforge_template.json), else the tokenizer's own.",
    )

    @model_validator(mode="after")
    def _something_to_export(self) -> ExportConfig:
        if self.model is None and self.adapter is None:
            raise ValueError(
                "model, adapter: expected a base model, an adapter or both, got neither"
            )
        return self

    @model_validator(mode="after")
    def _adapter_needs_merge(self) -> ExportConfig:
        if self.adapter is not None and not self.merge:
            raise ValueError(
                "adapter, merge: an adapter is exported merged into its base; expected --merge"
            )
        return self


def build_export_config(values: Mapping[str, Any], source: str = "command line") -> ExportConfig:
    """An ExportConfig from plain values; every validation problem becomes one ConfigError.

    Raises:
        ConfigError: a value is missing, of the wrong type, or the combination is invalid.
    """
    return validate_values(ExportConfig, values, source)
