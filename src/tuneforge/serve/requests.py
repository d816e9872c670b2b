"""What a caller asks the engine for, and what it gets back besides the text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneforge.data.records import Role


class ChatMessage(BaseModel):
    """One turn of a chat request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role = Field(description="system, user, assistant or tool.")
    content: str = Field(description="The turn's text.")


class GenerationRequest(BaseModel):
    """One generation: a prompt (text or chat messages), an adapter and sampling settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str | None = Field(
        default=None, description="Raw prompt text, sent to the model as is.")
    messages: tuple[ChatMessage, ...] | None = Field(
        default=None, description="Chat turns, rendered with the training template of the "
        "adapter (or model) up to where the assistant's answer starts.")
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
