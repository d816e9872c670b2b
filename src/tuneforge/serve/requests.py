"""What a caller asks the engine for, and what it gets back besides the text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneforge.data.records import Role


class ToolCallSpec(BaseModel):
    """A function call an assistant turn made; `arguments` is JSON text (OpenAI's shape)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The function's name.")
    arguments: str = Field(default="{}", description="The arguments as JSON text.")
    id: str | None = Field(default=None, description="The call's id, if the client gave one.")


class ChatMessage(BaseModel):
    """One turn of a chat request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role = Field(description="system, user, assistant or tool.")
    content: str = Field(description="The turn's text.")
    tool_calls: tuple[ToolCallSpec, ...] = Field(
        default=(), description="Function calls made by an assistant turn.")
    name: str | None = Field(default=None, description="The tool's name, for a tool turn.")


class GenerationRequest(BaseModel):
    """One generation: a prompt (text or chat messages), an adapter and sampling settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str | None = Field(
        default=None, description="Raw prompt text, sent to the model as is.")
    messages: tuple[ChatMessage, ...] | None = Field(
        default=None, description="Chat turns, rendered with the training template of the "
        "adapter (or model) up to where the assistant's answer starts.")
    tools: str | None = Field(
        default=None, description="Function schemas (a JSON list) shown to a chat prompt the "
        "way the template renders tools (the tokenizer's template natively, else in the "
        "system text as LLaMA-Factory's formatters put them).")
    adapter: str | None = Field(
        default=None, description="The name of a loaded LoRA adapter; None: the base model.")
    max_tokens: int = Field(default=128, ge=1, description="Most new tokens to generate.")
    temperature: float = Field(
        default=1.0, ge=0.0, description="Sampling temperature; 0 is greedy (deterministic).")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(default=0, ge=0, description="Keep the k likeliest tokens; 0: all.")
    repetition_penalty: float = Field(
        default=1.0, gt=0.0, description="Penalty on tokens already in prompt or output (HF).")
    stop: tuple[str, ...] = Field(
        default=(), description="Strings that end the answer; they are not part of it.")
    seed: int | None = Field(default=None, description="Seed of this request's sampling.")
    ignore_eos: bool = Field(
        default=False, description="Go on past the end-of-sequence token, up to max_tokens "
        "(vLLM's extension; for benchmarks).")

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerationRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("expected exactly one of prompt and messages")
        if self.messages is not None and not self.messages:
            raise ValueError("messages: expected at least one message, got none")
        if any(not s for s in self.stop):
            raise ValueError("stop: expected non-empty strings, got an empty one")
        return self


FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class Usage:
    """Token counts of one request, as the OpenAI API reports them."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Completion:
    """A whole answer: its text, why it ended and its usage."""

    text: str
    finish_reason: FinishReason
    usage: Usage
