"""Request bodies of the HTTP API: OpenAI's, vLLM's adapter calls, LLaMA-Factory's score
call, the common rerank shape and the REST-service seed's /models/load and /generate.

Unknown fields are ignored, as OpenAI-compatible servers do (clients send fields a CPU
engine has no use for, such as `user`); fields we cannot honour with a value that changes
the answer (`logprobs`, a non-zero `presence_penalty`, image parts) are refused with 422.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _stop_list(value: Any) -> Any:
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


class _Sampling(_Body):
    """The sampling fields shared by chat and text completions."""

    max_tokens: int | None = Field(default=None, ge=1, description="Most new tokens.")
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=-1, description="vLLM's extension; 0 or -1: off.")
    repetition_penalty: float = Field(default=1.0, gt=0.0, description="vLLM's extension.")
    n: int = Field(default=1, ge=1, le=16, description="Answers per request.")
    stop: list[str] = Field(default_factory=list, description="Strings that end an answer.")
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool | int | None = None
    ignore_eos: bool = Field(default=False, description="vLLM's extension.")

    _stops = field_validator("stop", mode="before")(_stop_list)

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0.0:
            raise ValueError(f"expected 0 (not supported; use repetition_penalty), got {value}")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | int | None) -> bool | int | None:
        if value:
            raise ValueError("expected false or null: log probabilities are not supported")
        return value

    @field_validator("stop")
    @classmethod
    def _stops_nonempty(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("expected non-empty strings, got an empty one")
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class ContentPart(_Body):
    type: Literal["text"] = Field(description="Only text parts are supported.")
    text: str


class FunctionCall(_Body):
    name: str
    arguments: str | dict[str, Any] = "{}"

    @field_validator("arguments")
    @classmethod
    def _json_text(cls, value: str | dict[str, Any]) -> str:
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class ToolCall(_Body):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class Tool(_Body):
    type: Literal["function"] = "function"
    function: dict[str, Any]


class ChatCompletionRequest(_Sampling):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: Any = None

    @model_validator(mode="after")
    def _max_completion_tokens(self) -> ChatCompletionRequest:
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self


class CompletionRequest(_Sampling):
    model: str
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _texts(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("expected a string or a non-empty list of strings, got []")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("expected null: suffix (fill in the middle) is not supported")
        return value


class EmbeddingRequest(_Body):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        if isinstance(value, list) and value and not isinstance(value[0], str):
            raise ValueError("expected a string or a list of strings (token ids are not "
                             "supported)")
        if isinstance(value, list) and not value:
            raise ValueError("expected a string or a non-empty list of strings, got []")
        return value


class RerankDocument(_Body):
    text: str


class RerankRequest(_Body):
    model: str | None = None
    query: str
    documents: list[str | RerankDocument] = Field(min_length=1)
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = True

    @property
    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class ScoreEvaluationRequest(_Body):
    """LLaMA-Factory's reward-model call: texts in, one score each."""

    model: str | None = None
    messages: list[str] = Field(min_length=1)
    max_length: int | None = Field(default=None, ge=1)


class LoadLoraAdapterRequest(_Body):
    """vLLM's POST /v1/load_lora_adapter."""

    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)
    base_model_name: str | None = Field(
        default=None, description="Our extension: the served model to put it on.")


class UnloadLoraAdapterRequest(_Body):
    """vLLM's POST /v1/unload_lora_adapter."""

    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = None


class LoadModelRequest(_Body):
    """The REST-service seed's POST /models/load."""

    model_name: str = Field(min_length=1)
    model_path: str = Field(min_length=1)
    lora_adapter: str | None = None


class GenerateRequest(_Body):
    """The REST-service seed's POST /generate."""

    prompt: str
    model_name: str | None = None
    max_tokens: int = Field(default=512, ge=1)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=-1)
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None

    _stops = field_validator("stop", mode="before")(_stop_list)
