"""ModelConfig: which model, which template, how it is loaded."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.config._base import Section


class ModelConfig(Section):
    """The base model and how its text is rendered."""

    name_or_path: str | None = Field(
        default=None,
        description="Base model: a local transformers directory, a GGUF file, a prepared alias "
        "(e.g. smollm2-135m-instruct) or a hub id already in the local cache.",
    )
    adapter_name_or_path: str | None = Field(
        default=None,
        description="A PEFT adapter to start from (a directory, run folder or run id): LoRA "
        "training of a causal LM continues it; full, freeze and rm merge it into the base.",
    )
    tokenizer: str | None = Field(
        default=None, description="Tokenizer location when it differs from the model's."
    )
    template: str | None = Field(
        default=None,
        description="Chat template: None uses the tokenizer's own; else a named template "
        "(default, empty, alpaca, chatml, qwen, llama2, llama3, vicuna).",
    )
    default_system: str | None = Field(
        default=None, description="System prompt used when a sample has none."
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow model code shipped with the model to run."
    )
    quantization_bit: Literal[4, 8] | None = Field(
        default=None, description="Load the base model quantised to 4 or 8 bits (QLoRA)."
    )
    flash_attn: Literal["auto", "disabled", "sdpa", "fa2"] = Field(
        default="auto", description="Attention implementation, as in LLaMA-Factory."
    )
