"""Chat templates: the tokenizer's own jinja, or a named one from resources/templates/*.yaml.

Named templates follow LLaMA-Factory's `register_template` definitions field for field
(format_user, format_assistant, ...), with `{{bos_token}}` / `{{eos_token}}` written inline
where LLaMA-Factory uses its `{"bos_token"}` slots. `select_template` picks one:
an explicit name wins, else the tokenizer's chat template, else `empty` (as LLaMA-Factory).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneforge.data.chat_template import TokenizerTemplate
from tuneforge.data.conversation import (
    DEFAULT_TOOLS_PROMPT,
    Chat,
    Conversation,
    Rendered,
    RenderedBatch,
    Span,
    tool_calls_text,
    with_tools,
)
from tuneforge.data.records import Message, tools_list
from tuneforge.errors import NotFoundError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
_KNOWN = {"content", "bos_token", "eos_token"}


class Renderer(Protocol):
    """What the tokenizer needs from a template."""

    def describe(self) -> dict[str, str]:
        """A small record naming the template, stored with every artifact."""
        ...

    def render_all(self, chats: Sequence[Chat]) -> RenderedBatch:
        """Render many conversations, as fast as the template allows."""
        ...

    def render_reference(self, conversation: Chat) -> Rendered:
        """Render one conversation the straightforward way (the definition of correct)."""
        ...


class TemplateSpec(BaseModel):
    """One named chat template (a YAML file under tuneforge/resources/templates)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The template name, as `model.template` gives it.")
    format_prefix: str = Field(default="", description="Text before everything else.")
    format_user: str = Field(default="{{content}}", description="A user turn.")
    format_assistant: str = Field(
        default="{{content}}{{eos_token}}", description="An assistant turn (the learned text)."
    )
    format_system: str = Field(default="{{content}}", description="The system prompt.")
    format_function: str | None = Field(
        default=None, description="An assistant tool call; default: format_assistant."
    )
    format_observation: str | None = Field(
        default=None, description="A tool result; default: format_user."
    )
    tools_prompt: str = Field(
        default=DEFAULT_TOOLS_PROMPT,
        description="Appended to the system text when tools are given; {{tool_text}} is "
        "replaced by one JSON line per tool.",
    )
    default_system: str = Field(default="", description="System prompt when a sample has none.")
    stop_words: list[str] = Field(default_factory=list, description="Extra stop strings.")
    replace_eos: bool = Field(
        default=False, description="stop_words[0] replaces the tokenizer's eos token."
    )
    fuse_system: bool = Field(
        default=False,
        description="Put the system text inside the first user turn (LLaMA-Factory's "
        "Llama2Template).",
    )

    @field_validator(
        "format_prefix", "format_user", "format_assistant", "format_system", "format_function",
        "format_observation",
    )
    @classmethod
    def _placeholders(cls, value: str | None) -> str | None:
        unknown = set(_PLACEHOLDER.findall(value or "")) - _KNOWN
        if unknown:
            raise ValueError(f"expected placeholders among {sorted(_KNOWN)}, got {sorted(unknown)}")
        return value


def template_names() -> list[str]:
    """The names of every template shipped in resources/templates."""
    root = resources.files("tuneforge.resources.templates")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _template_text(name: str) -> str:
    return resources.files("tuneforge.resources.templates").joinpath(f"{name}.yaml").read_text(
        encoding="utf-8"
    )


def load_template_spec(name: str) -> tuple[TemplateSpec, str]:
    """The named template and the sha1 of its YAML text.

    Raises:
        NotFoundError: no template has that name; the hint lists the valid ones.
    """
    names = template_names()
    if name not in names:
        raise NotFoundError("template", name, hint="expected one of " + ", ".join(names))
    text = _template_text(name)
    spec = TemplateSpec.model_validate(yaml.safe_load(text))
    return spec, hashlib.sha1(text.encode("utf-8")).hexdigest()


class NamedTemplate:
    """A LLaMA-Factory style template: a plain concatenation of per-message formats."""

    def __init__(
        self, spec: TemplateSpec, *, bos_token: str | None, eos_token: str | None, sha1: str = ""
    ) -> None:
        self.spec = spec
        self._sha1 = sha1
        if spec.replace_eos and spec.stop_words:
            eos_token = spec.stop_words[0]
        tokens = {"bos_token": bos_token or "", "eos_token": eos_token or ""}

        def split(fmt: str) -> tuple[str, str]:
            fmt = _PLACEHOLDER.sub(lambda m: tokens.get(m[1], m[0]), fmt)
            before, _, after = fmt.partition("{{content}}")
            return before, after

        self._prefix = split(spec.format_prefix)[0]
        self._system = split(spec.format_system)
        self._user = split(spec.format_user)
        self._assistant = split(spec.format_assistant)
        self._function = split(spec.format_function or spec.format_assistant)
        self._observation = split(spec.format_observation or spec.format_user)

    def describe(self) -> dict[str, str]:
        return {"template": self.spec.name, "sha1": self._sha1}

    def render_all(self, chats: Sequence[Chat]) -> RenderedBatch:
        return RenderedBatch.of([self.render_reference(c) for c in chats])

    def render_reference(self, conversation: Chat) -> Rendered:
        """Render as LLaMA-Factory's Template._encode does, joined into one text."""
        system = conversation.system or self.spec.default_system
        tools = tools_list(conversation.tools)
        if tools:
            system = with_tools(system, tools, self.spec.tools_prompt)
        parts = [self._prefix]
        pos = len(self._prefix)
        fused = ""
        if system:
            before, after = self._system
            if self.spec.fuse_system:
                fused = before + system + after
            else:
                parts.append(before + system + after)
                pos += len(parts[-1])
        spans: list[Span] = []
        for i, message in enumerate(conversation.messages):
            content = fused + message.content if i == 0 else message.content
            if message.role == "assistant":
                before, after = self._assistant
                if message.tool_calls:
                    before, after = self._function
                    content = tool_calls_text(message)
                piece = before + content + after
                spans.append(Span(pos, pos + len(piece), message.weight))
            else:
                before, after = self._observation if message.role == "tool" else self._user
                piece = before + content + after
            parts.append(piece)
            pos += len(piece)
        return Rendered("".join(parts), tuple(spans))


def render_prompt(renderer: Renderer, messages: Sequence[Message], system: str | None = None,
                  tools: str | None = None) -> str:
    """The text before the assistant's reply to `messages`, as `renderer` renders it: the
    same text, token for token, that training put before every learned answer (the template's
    rendering with a placeholder reply, cut where that reply starts). Training's demo, the
    serving engine and evaluation all prompt through here."""
    rendered = renderer.render_reference(
        Conversation((*messages, Message("assistant", "x")), system=system, tools=tools))
    return rendered.text[: rendered.spans[-1].start]


def select_template(tokenizer: PreTrainedTokenizerBase, name: str | None) -> Renderer:
    """The template to use: `name` if given, else the tokenizer's own, else `empty`."""
    if name is None and isinstance(tokenizer.chat_template, str) and tokenizer.chat_template:
        return TokenizerTemplate(tokenizer)
    spec, sha1 = load_template_spec(name or "empty")
    return NamedTemplate(
        spec, bos_token=_token(tokenizer, "bos_token"), eos_token=_token(tokenizer, "eos_token"),
        sha1=sha1,
    )


def _token(tokenizer: Any, attr: str) -> str | None:
    value = getattr(tokenizer, attr, None)
    return value if isinstance(value, str) else None
