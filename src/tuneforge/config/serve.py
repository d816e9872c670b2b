"""ServeConfig: what `tuneforge serve` loads and how it queues requests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from tuneforge.config._base import Section, split_commas, validate_values

DEFAULT_MODEL = "smollm2-135m-instruct"


class ServeConfig(Section):
    """One server process: its address, its models and adapters, its queue bounds."""

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port; 0 picks a free one.")
    models: list[str] = Field(
        default_factory=lambda: [DEFAULT_MODEL],
        description="Models served from the start: `NAME=SOURCE` or a SOURCE (an alias, a "
        "model directory, a run whose output is a whole model, a .gguf file); its name is "
        "then the alias or the directory's name. Causal LMs answer chat and completions; "
        "embedding models, rerankers and reward models answer their own endpoints.",
    )
    adapters: list[str] = Field(
        default_factory=list,
        description="LoRA adapters loaded from the start: `NAME=PATH` (a run directory, run "
        "id or adapter directory) on the first causal LM, or `BASE:NAME=PATH`.",
    )
    max_batch: int = Field(default=16, ge=1, description="Most sequences decoded at once.")
    max_queue: int = Field(
        default=64, ge=1,
        description="Most requests waiting per model; past it the server answers 503 with "
        "Retry-After.",
    )
    max_adapters: int = Field(
        default=8, ge=1, description="Adapters kept per model; the least recently used idle "
        "one is unloaded past it.")
    backend: Literal["auto", "transformers", "vllm"] = Field(
        default="auto", description="Inference backend of causal LMs: transformers (CPU or "
        "GPU), vllm (needs vLLM and a CUDA GPU), or auto: vllm where both are present.")
    weights: Literal["float16", "float32"] = Field(
        default="float16", description="How the transformers backend keeps a causal LM's "
        "linear weights on the CPU: float16 (half the memory read per token, math still in "
        "float32; about 1.5x faster) or float32 (exact, and a row's result independent of "
        "the batch).")
    api_key: str | None = Field(
        default=None, description="When set, every /v1 request needs `Authorization: Bearer "
        "<api_key>` (as OpenAI clients send it).")

    _split = field_validator("models", "adapters", mode="before")(split_commas)


def build_serve_config(values: Mapping[str, Any], source: str = "command line") -> ServeConfig:
    """A ServeConfig from plain values; None values take the defaults.

    Raises:
        ConfigError: a value is missing, of the wrong type, or unknown.
    """
    return validate_values(ServeConfig, {k: v for k, v in values.items() if v is not None},
                           source)
