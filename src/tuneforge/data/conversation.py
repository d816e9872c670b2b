"""What a chat template renders: conversations in, texts plus the learnable spans out.

Both kinds of template (a named one from resources/templates, or the tokenizer's own jinja)
take conversations and return, for each, the full text and, for every assistant turn, the
character span that the template emits for it after the generation prompt (content plus
end-of-turn text). Which spans are learned is decided later by the masking policy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from tuneforge.data.records import Message

DEFAULT_TOOLS_PROMPT = (
    "\n\nYou have access to the following tools:{{tool_text}}\n\n"
    "To call a tool, reply with one JSON object per call, one per line: "
    '{"name": <tool name>, "arguments": <arguments object>}'
)
"""Appended to the system text when a template cannot render tool schemas itself."""


class Chat(Protocol):
    """Anything to render: a `Conversation`, or a ChatExample / KTOExample as it is."""

    @property
    def messages(self) -> tuple[Message, ...]: ...

    @property
    def system(self) -> str | None: ...

    @property
    def tools(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Conversation:
    """Messages to render; `system` is None when neither the record nor the options give one."""

    messages: tuple[Message, ...]
    system: str | None = None
    tools: str | None = None


@dataclass(frozen=True, slots=True)
class Span:
    """Characters [start, end) that one assistant turn contributes after the generation prompt."""

    start: int
    end: int
    weight: int | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered conversation: its text and one span per assistant turn, in order."""

    text: str
    spans: tuple[Span, ...]


@dataclass(slots=True)
class RenderedBatch:
    """Many rendered conversations, filled in order and stored flat.

    Columns rather than one `Rendered` per sample: the fast path renders tens of thousands
    of samples per second, and flat lists of ints leave nothing for the garbage collector.
    Text i owns spans first[i] to first[i + 1] - 1.
    """

    texts: list[str] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    weights: list[int | None] = field(default_factory=list)
    first: list[int] = field(default_factory=lambda: [0])

    @classmethod
    def of(cls, rendered: list[Rendered]) -> RenderedBatch:
        """A batch holding these renderings."""
        batch = cls()
        for r in rendered:
            batch.add(r)
        return batch

    def add(self, r: Rendered) -> None:
        """Append one rendering."""
        self.texts.append(r.text)
        for s in r.spans:
            self.starts.append(s.start)
            self.ends.append(s.end)
            self.weights.append(s.weight)
        self.first.append(len(self.starts))

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> Rendered:
        a, b = self.first[i], self.first[i + 1]
        spans = zip(self.starts[a:b], self.ends[a:b], self.weights[a:b], strict=True)
        return Rendered(self.texts[i], tuple(Span(*s) for s in spans))


def tool_calls_text(message: Message) -> str:
    """An assistant tool call as text: its content, then one JSON object per call."""
    calls = [
        json.dumps({"name": c.name, "arguments": _arguments(c.arguments)}, ensure_ascii=False)
        for c in message.tool_calls
    ]
    return "\n".join([message.content, *calls] if message.content else calls)


def with_tools(system: str, tools: list[dict[str, Any]], prompt: str) -> str:
    """The system text with the tool schemas appended: `prompt` with one JSON line per tool.

    As LLaMA-Factory's tool formatters, but leading blank lines are dropped when there is no
    system text to separate from.
    """
    lines = "".join(
        "\n" + json.dumps(t if t.get("type") == "function" else {"type": "function", "function": t},
                          ensure_ascii=False)
        for t in tools
    )
    text = prompt.replace("{{tool_text}}", lines)
    return system + text if system else text.lstrip("\n")


def native_tool_call(message: Message) -> list[dict[str, Any]]:
    """Tool calls in the transformers chat-template shape (arguments as an object)."""
    return [
        {"type": "function", "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
        | ({"id": c.id} if c.id is not None else {})
        for c in message.tool_calls
    ]


def _arguments(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments
