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
    weights: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        default="auto", description="How the transformers backend keeps a causal LM's "
        "linear weights on the CPU: float16 (half the memory read per token, math still in "
        "float32; about 1.5x faster than float32), bfloat16 (weights and products in bf16, on "
        "CPUs with native bf16 such as AMX: fastest for batches there), auto (float16 for "
        "fewer than 6 rows, bfloat16 from 6, where the CPU has AMX; else float16) or float32 "
        "(exact, and a row's result independent of the batch).")
    api_key: str | None = Field(
        default=None, description="API token (also TUNEFORGE_API_TOKEN): when set, every "
        "request but /health needs `Authorization: Bearer <token>` (as OpenAI clients send "
        "it). Required when `host` is not a loopback address.")
    worker_slots: int = Field(
        default=1, ge=0, le=64, description="Training jobs run at once, each in its own "
        "worker process; the rest wait in order. 0: this server runs no jobs (it still "
        "takes them).")
    auto_resume: bool = Field(
        default=True, description="Queue again, at start, the jobs a stopped or killed "
        "server interrupted; they continue from their newest checkpoint. Off: they wait "
        "for a resume request.")
    roots: list[str] = Field(
        default_factory=list, description="Folders request paths may name, besides "
        "TUNEFORGE_HOME and the working directory.")
    max_upload_mb: float = Field(
        default=100, gt=0, le=1_000_000, description="Largest dataset upload, in MiB.")

    _split = field_validator("models", "adapters", "roots", mode="before")(split_commas)


def build_serve_config(values: Mapping[str, Any], source: str = "command line") -> ServeConfig:
    """A ServeConfig from plain values; None values take the defaults.

    Raises:
        ConfigError: a value is missing, of the wrong type, or unknown.
    """
    return validate_values(ServeConfig, {k: v for k, v in values.items() if v is not None},
                           source)
