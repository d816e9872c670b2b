"""The tokenizer's own chat template (jinja), rendered per sample or through derived pieces.

The reference rendering is transformers' `apply_chat_template` for the whole conversation,
plus one prefix render before and after each assistant turn to find its learnable span.
That costs 1 + 2 * turns jinja renders per sample, so `TokenizerTemplate` also probes the
template once with sentinel contents: when the template is a plain concatenation of
per-message pieces (head, then open + content + close per message), those pieces render a
sample with string joins alone. The pieces are used only after they reproduce the reference
exactly on a set of probe conversations and, per call, on a spread of the real samples;
otherwise every sample takes the reference path (templates that rewrite earlier turns,
position-dependent logic, ...).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateError

from tuneforge.data.conversation import (
    DEFAULT_TOOLS_PROMPT,
    Chat,
    Conversation,
    Rendered,
    RenderedBatch,
    Span,
    native_tool_call,
    tool_calls_text,
    with_tools,
)
from tuneforge.data.records import Message, tools_list

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

_RENDER_ERRORS = (TemplateError, KeyError, TypeError, ValueError, IndexError)
_SPOT_CHECKS = 16
_PROBE_CONTENTS = (
    "Hello!", "  spaced out  ", "\nnew\nlines\n", "中文：你好，世界。", "{{ x }} {% y %} ' \"",
    "<think>\nhm\n</think>\n\nok", "", "Last one.",
)

Messages = list[dict[str, Any]]


def _sentinel(tag: str) -> str:
    return f"@@{tag}@@"


@dataclass(frozen=True)
class _Pieces:
    """A concatenative template: head, then open[role] + content + close[role] per message."""

    head: str
    head_system: str
    close_system: str
    open: dict[str, str]
    close: dict[str, str]
    generation: str


class TokenizerTemplate:
    """Renders with the tokenizer's chat template, falling back to JSON text for tool calls."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self.jinja: str = tokenizer.chat_template
        self.renders_tool_calls = self._probe_tool_calls()
        self.renders_tool_role = self._probe_tool_role()
        self.renders_tools = self._probe_tools()
        # The conversation shapes the pieces are verified on: user first, then alternating
        # turns (tool results may follow a tool call when the template renders them).
        self._steps = {("", "user"), ("user", "assistant"), ("assistant", "user")}
        if self.renders_tool_role:
            self._steps |= {("assistant", "tool"), ("tool", "tool"), ("tool", "assistant")}
        pieces = _derive_pieces(self._try_render, self.renders_tool_role)
        self._pieces = pieces if pieces is not None and self._verify(pieces) else None
        if self._pieces is None:
            logger.info("chat template is not a plain concatenation; rendering per sample")

    @property
    def is_concatenative(self) -> bool:
        """Whether samples can be rendered from derived pieces instead of per-sample jinja."""
        return self._pieces is not None

    def describe(self) -> dict[str, str]:
        return {"template": "tokenizer", "sha1": hashlib.sha1(self.jinja.encode()).hexdigest()}

    def render_all(self, chats: Sequence[Chat]) -> RenderedBatch:
        """Render every conversation: pieces where they apply, checked against a spread."""
        if self._pieces is None:
            return RenderedBatch.of([self.render_reference(c) for c in chats])
        batch = RenderedBatch()
        fast: list[int] = []
        for i, chat in enumerate(chats):
            if self._add_pieces(self._pieces, chat, batch):
                fast.append(i)
            else:
                batch.add(self.render_reference(chat))
        stride = max(1, len(fast) // _SPOT_CHECKS)
        for i in sorted(set(fast[:_SPOT_CHECKS] + fast[::stride])):
            if batch[i] != self.render_reference(chats[i]):
                logger.warning("chat template pieces disagree with jinja on sample %d", i)
                return RenderedBatch.of([self.render_reference(c) for c in chats])
        return batch

    def render_reference(self, conversation: Chat) -> Rendered:
        """apply_chat_template on the whole conversation; spans from prefix renders.

        Turn k starts where the conversation up to it plus the generation prompt ends, and
        ends where the conversation up to and including it ends. A template may render a turn
        differently once later turns follow it (reasoning stripped from history, say); then
        the turn is the longest text at its start that ends as its own rendering does.
        """
        messages, tools, weights = self._messages(conversation)
        full = self._render(messages, tools=tools)
        spans: list[Span] = []
        weight_of = iter(weights)
        for k, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self._render(messages[:k], generation=True, tools=tools)
            upto = self._render(messages[: k + 1], tools=tools)
            start = _prefix_len(full, before)
            if full.startswith(upto):
                end = len(upto)
            else:
                end = _turn_end(full, start, upto[_prefix_len(upto, before) :])
            spans.append(Span(start, max(start, end), next(weight_of)))
        return Rendered(full, tuple(spans))

    def _messages(
        self, conversation: Chat
    ) -> tuple[Messages, list[dict[str, Any]] | None, list[int | None]]:
        """Chat-template messages, converting what the template cannot render to text."""
        system = conversation.system or None
        tools = tools_list(conversation.tools)
        if tools and not self.renders_tools:
            system = with_tools(system or "", tools, DEFAULT_TOOLS_PROMPT)
            tools = None
        messages: Messages = [{"role": "system", "content": system}] if system else []
        weights: list[int | None] = []
        for m in conversation.messages:
            messages.append(self._message(m))
            if m.role == "assistant":
                weights.append(m.weight)
        return messages, tools, weights

    def _message(self, m: Message) -> dict[str, Any]:
        if m.role == "assistant" and m.tool_calls:
            if self.renders_tool_calls:
                calls = native_tool_call(m)
                return {"role": "assistant", "content": m.content, "tool_calls": calls}
            return {"role": "assistant", "content": tool_calls_text(m)}
        if m.role == "tool" and not self.renders_tool_role:
            return {"role": "user", "content": m.content}
        out: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.name is not None:
            out["name"] = m.name
        return out

    def render_pieces(self, chat: Chat) -> Rendered | None:
        """The derived pieces' rendering, or None where they do not apply."""
        batch = RenderedBatch()
        if self._pieces is None or not self._add_pieces(self._pieces, chat, batch):
            return None
        return batch[0]

    def _add_pieces(self, pieces: _Pieces, chat: Chat, batch: RenderedBatch) -> bool:
        """Render `chat` from the pieces, converting as `_messages` does, and add it to `batch`.

        False, with nothing added, for conversations the pieces were not verified on.
        """
        system = chat.system or None
        tools = tools_list(chat.tools) if chat.tools else None
        if tools:
            if self.renders_tools:
                return False
            system = with_tools(system or "", tools, DEFAULT_TOOLS_PROMPT)
        parts = [pieces.head_system, system, pieces.close_system] if system else [pieces.head]
        pos = sum(map(len, parts))
        generation = len(pieces.generation)
        starts: list[int] = []
        ends: list[int] = []
        weights: list[int | None] = []
        previous = ""
        for m in chat.messages:
            role, content = m.role, m.content
            if m.name is not None or (m.tool_calls and self.renders_tool_calls):
                return False
            if m.tool_calls:
                content = tool_calls_text(m)
            elif role == "tool" and not self.renders_tool_role:
                role = "user"
            if (previous, role) not in self._steps:
                return False
            opening, closing = pieces.open[role], pieces.close[role]
            parts += (opening, content, closing)
            end = pos + len(opening) + len(content) + len(closing)
            if role == "assistant":
                starts.append(pos + generation)
                ends.append(end)
                weights.append(m.weight)
            pos = end
            previous = role
        if previous != "assistant":
            return False
        batch.texts.append("".join(parts))
        batch.starts += starts
        batch.ends += ends
        batch.weights += weights
        batch.first.append(len(batch.starts))
        return True

    def _render(
        self, messages: Messages, *, generation: bool = False,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        text = self._tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=generation, tokenize=False
        )
        assert isinstance(text, str)
        return text

    def _try_render(
        self, messages: Messages, *, generation: bool = False,
        tools: list[dict[str, Any]] | None = None,
    ) -> str | None:
        try:
            return self._render(messages, generation=generation, tools=tools)
        except _RENDER_ERRORS:
            return None

    def _probe_tool_calls(self) -> bool:
        call = {"type": "function", "function": {"name": _sentinel("fn"), "arguments": {"a": 1}}}
        messages = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
        ]
        text = self._try_render(messages)
        return text is not None and _sentinel("fn") in text

    def _probe_tool_role(self) -> bool:
        messages = [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"},
            {"role": "tool", "content": _sentinel("tool")}, {"role": "assistant", "content": "b"},
        ]
        text = self._try_render(messages)
        return text is not None and _sentinel("tool") in text

    def _probe_tools(self) -> bool:
        tool = {"type": "function", "function": {
            "name": _sentinel("schema"), "description": "d",
            "parameters": {"type": "object", "properties": {}},
        }}
        messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]
        text = self._try_render(messages, tools=[tool])
        return text is not None and _sentinel("schema") in text

    def _verify(self, pieces: _Pieces) -> bool:
        """Whether the pieces reproduce the reference on varied probe conversations."""
        shapes = ["ua", "uaua", "uauaua"] + (["uata", "uatta"] if self.renders_tool_role else [])
        role_of = {"u": "user", "a": "assistant", "t": "tool"}
        k = 0
        for shape in shapes:
            for system in (None, "", "A system prompt.\n"):
                contents = [
                    _PROBE_CONTENTS[(k + j) % len(_PROBE_CONTENTS)] for j in range(len(shape))
                ]
                k += 1
                messages = zip(shape, contents, strict=True)
                conversation = Conversation(
                    tuple(Message(role_of[r], c) for r, c in messages), system=system
                )
                try:
                    expected = self.render_reference(conversation)
                except _RENDER_ERRORS:
                    return False
                batch = RenderedBatch()
                if not self._add_pieces(pieces, conversation, batch) or batch[0] != expected:
                    return False
        return True


def _derive_pieces(render: Any, tool_role: bool) -> _Pieces | None:
    """Per-role open/close strings, found by rendering probes with sentinel contents."""
    u1, a1, u2, a2, s, t1 = (_sentinel(x) for x in ("U1", "A1", "U2", "A2", "S", "T1"))
    user, assistant = "user", "assistant"

    def msg(role: str, content: str) -> dict[str, str]:
        return {"role": role, "content": content}

    p = _split(render([msg(user, u1), msg(assistant, a1), msg(user, u2), msg(assistant, a2)]),
               [u1, a1, u2, a2])
    q = _split(render([msg(user, u1)]), [u1])
    with_generation = render([msg(user, u1)], generation=True)
    r = _split(render([msg("system", s), msg(user, u1), msg(assistant, a1)]), [s, u1, a1])
    if p is None or q is None or r is None or with_generation is None:
        return None
    close_user, close_assistant = q[1], p[4]
    generation = with_generation[len(q[0]) + len(u1) + len(close_user):]
    if (q[0] != p[0] or p[1] != p[3] or not p[1].startswith(close_user)
            or not with_generation.startswith(q[0] + u1 + close_user)
            or not p[2].startswith(close_assistant)):
        return None
    open_assistant = p[1][len(close_user):]
    open_user = p[2][len(close_assistant):]
    if not (open_assistant.startswith(generation) and p[0].endswith(open_user)
            and r[1].endswith(open_user)):
        return None
    opens = {user: open_user, assistant: open_assistant}
    closes = {user: close_user, assistant: close_assistant}
    if tool_role:
        x = _split(render([msg(user, u1), msg(assistant, a1), msg("tool", t1),
                           msg(assistant, a2)]), [u1, a1, t1, a2])
        if x is None or not x[2].startswith(close_assistant) or not x[3].endswith(open_assistant):
            return None
        opens["tool"] = x[2][len(close_assistant):]
        closes["tool"] = x[3][: len(x[3]) - len(open_assistant)]
    return _Pieces(
        head=p[0][: len(p[0]) - len(open_user)],
        head_system=r[0],
        close_system=r[1][: len(r[1]) - len(open_user)],
        open=opens,
        close=closes,
        generation=generation,
    )


def _split(text: str | None, sentinels: list[str]) -> list[str] | None:
    """`text` cut at each sentinel, which must each appear once and in order; else None."""
    if text is None or any(text.count(x) != 1 for x in sentinels):
        return None
    starts = [text.index(x) for x in sentinels]
    if starts != sorted(starts):
        return None
    ends = [start + len(x) for start, x in zip(starts, sentinels, strict=True)]
    return [text[a:b] for a, b in zip([0, *ends], [*starts, len(text)], strict=True)]


def _prefix_len(full: str, prefix: str) -> int:
    """len(prefix) when `full` starts with it, else the length they have in common."""
    if full.startswith(prefix):
        return len(prefix)
    return len(os.path.commonprefix([full, prefix]))


def _turn_end(full: str, start: int, alone: str) -> int:
    """The largest end such that full[start:end] is how `alone` (the turn rendered last) ends."""
    for end in range(min(len(full), start + len(alone)), start, -1):
        if alone.endswith(full[start:end]):
            return end
    return start
