"""Canonical records: every input format becomes one of these, one kind per dataset.

Frozen dataclasses (in-process values). Each carries its `Location` so that a later drop
(empty after truncation, say) can still name the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["pt", "sft", "pairwise", "kto", "embedding", "rerank"]
KINDS: tuple[Kind, ...] = ("pt", "sft", "pairwise", "kto", "embedding", "rerank")
Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Location:
    """Where a record came from: file, 1-based line, and its index in a JSON array."""

    file: str
    line: int
    index: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    def field(self, name: str) -> str:
        """A field path prefixed with the array index, as errors print it: [3].output."""
        if self.index is None:
            return name
        return f"[{self.index}].{name}" if name else f"[{self.index}]"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call made by the assistant; `arguments` is a JSON string."""

    name: str
    arguments: str
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        call: dict[str, Any] = {
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }
        if self.id is not None:
            call["id"] = self.id
        return call


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. `weight` None follows the masking policy; 0 or 1 forces it (OpenAI)."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    weight: int | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI / transformers chat-message shape."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.name is not None:
            out["name"] = self.name
        return out


def tools_list(tools: str | None) -> list[dict[str, Any]] | None:
    """The tools JSON text of a record as a list of schemas (None when there are none)."""
    if not tools:
        return None
    value = json.loads(tools)
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True, slots=True)
class TextExample:
    """pt: raw text."""

    text: str
    loc: Location
    kind: Kind = field(default="pt", init=False)


@dataclass(frozen=True, slots=True)
class ChatExample:
    """sft: a conversation that ends with an assistant turn; system kept apart."""

    messages: tuple[Message, ...]
    loc: Location
    system: str | None = None
    tools: str | None = None
    kind: Kind = field(default="sft", init=False)


@dataclass(frozen=True, slots=True)
class PreferenceExample:
    """pairwise (rm, dpo, orpo): a prompt ending with a user/tool turn, chosen and rejected."""

    prompt: tuple[Message, ...]
    chosen: Message
    rejected: Message
    loc: Location
    system: str | None = None
    tools: str | None = None
    kind: Kind = field(default="pairwise", init=False)


@dataclass(frozen=True, slots=True)
class KTOExample:
    """kto: a conversation ending with an assistant turn, labelled desirable or not."""

    messages: tuple[Message, ...]
    label: bool
    loc: Location
    system: str | None = None
    tools: str | None = None
    kind: Kind = field(default="kto", init=False)


@dataclass(frozen=True, slots=True)
class EmbeddingExample:
    """embedding: FlagEmbedding's {query, pos, neg, prompt}."""

    query: str
    pos: tuple[str, ...]
    neg: tuple[str, ...]
    loc: Location
    prompt: str | None = None
    kind: Kind = field(default="embedding", init=False)


@dataclass(frozen=True, slots=True)
class RerankExample:
    """rerank: one (query, passage, label) pair; FlagEmbedding rows expand into several."""

    query: str
    passage: str
    label: float
    loc: Location
    kind: Kind = field(default="rerank", init=False)


Example = (
    TextExample | ChatExample | PreferenceExample | KTOExample | EmbeddingExample | RerankExample
)
