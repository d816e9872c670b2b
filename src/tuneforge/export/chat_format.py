"""The training chat template as per-turn pieces, for an Ollama TEMPLATE and a jinja template.

A runtime that formats one turn at a time (Ollama's System/Prompt/Response template) can only
reproduce a template that is a plain concatenation: a prefix once, then for every turn
`user_open + prompt + mid + response + end`, with the system text inside the first turn.
`derive_format` finds those pieces by rendering conversations whose contents are sentinels
with the template used in training (named or the tokenizer's jinja), then keeps them only if
they reproduce that template exactly on a set of probe conversations; otherwise the template
cannot be exported and UnsupportedError says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuneforge.data.conversation import Conversation
from tuneforge.data.records import Message
from tuneforge.data.templates import NamedTemplate, Renderer
from tuneforge.errors import InternalError, UnsupportedError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Turns = Sequence[tuple[str, str | None]]
"""(user, assistant) pairs; the last assistant is None for a prompt awaiting generation."""

_S, _U1, _A1, _U2, _A2 = (f"@@{tag}@@" for tag in ("S", "U1", "A1", "U2", "A2"))
_PROBE_TEXTS = ("Hello!", "two\nlines", "中文：你好。", "{{ .Prompt }} {% x %} \"q\"", "Last.")
_PROBE_SYSTEMS = (None, "", "You answer briefly.", "Line one.\nLine two.")


@dataclass(frozen=True)
class TurnFormat:
    """A conversation as `prefix`, then per turn
    `before_system [system_open SYSTEM system_close] after_system PROMPT mid RESPONSE end`,
    the bracketed part in the first turn only and only when there is a system text."""

    prefix: str
    before_system: str
    system_open: str
    system_close: str
    after_system: str
    mid: str
    end: str
    default_system: str
    stops: tuple[str, ...]

    def render(self, system: str | None, turns: Turns) -> str:
        """The text the template gives; `system` None or "" uses default_system."""
        system = system or self.default_system
        parts = [self.prefix]
        for i, (user, assistant) in enumerate(turns):
            parts.append(self.before_system)
            if i == 0 and system:
                parts += [self.system_open, system, self.system_close]
            parts += [self.after_system, user, self.mid]
            if assistant is not None:
                parts += [assistant, self.end]
        return "".join(parts)

    def jinja(self) -> str:
        """A transformers chat template rendering exactly as `render` does.

        The assistant opening belongs to `mid`, so it follows every user turn whether or not
        add_generation_prompt is set (as in LLaMA-Factory's templates).
        """
        q = json.dumps  # a JSON string is a valid jinja string literal
        return (
            "{%- if messages and messages[0]['role'] == 'system' -%}"
            "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
            f"{{%- else -%}}{{%- set system = {q(self.default_system)} -%}}"
            "{%- set turns = messages -%}{%- endif -%}"
            f"{{{{- {q(self.prefix)} -}}}}"
            "{%- for message in turns -%}"
            "{%- if message['role'] == 'user' -%}"
            f"{{{{- {q(self.before_system)} -}}}}"
            "{%- if loop.first and system -%}"
            f"{{{{- {q(self.system_open)} + system + {q(self.system_close)} -}}}}"
            "{%- endif -%}"
            f"{{{{- {q(self.after_system)} + message['content'] + {q(self.mid)} -}}}}"
            "{%- elif message['role'] == 'assistant' -%}"
            f"{{{{- message['content'] + {q(self.end)} -}}}}"
            "{%- endif -%}{%- endfor -%}"
        )


def derive_format(
    renderer: Renderer, tokenizer: PreTrainedTokenizerBase, *, default_system: str | None = None
) -> TurnFormat:
    """The per-turn pieces of `renderer`, checked to reproduce it on probe conversations.

    `default_system` (training's model.default_system) replaces the template's own default.

    Raises:
        UnsupportedError: the template is not a plain per-turn concatenation.
    """
    name = renderer.describe().get("template", "?")

    def fail(reason: str) -> UnsupportedError:
        return UnsupportedError(
            f"chat template {name!r}",
            f"{reason}; Ollama's per-turn TEMPLATE cannot reproduce it",
            hint="pass --template with a named template (chatml, llama3, ...) that fits",
        )

    def text(system: str | None, turns: Turns) -> str:
        return renderer.render_reference(_conversation(system, turns)).text

    with_system = _split(text(_S, [(_U1, _A1), (_U2, _A2)]), [_S, _U1, _A1, _U2, _A2])
    without = _split(text(None, [(_U1, _A1), (_U2, _A2)]), [_U1, _A1, _U2, _A2])
    if with_system is None or without is None:
        raise fail("it does not render each message's text once and in order")
    head_s, close_s, mid, between, mid2, end = with_system
    head_n, mid_n, between_n, mid2_n, end_n = without
    if len({mid, mid2, mid_n, mid2_n}) > 1 or (between, end) != (between_n, end_n):
        raise fail("its turns are not all rendered alike")
    if not between.startswith(end):
        raise fail(f"the text after the last reply ({end!r}) does not begin the next turn")
    user_open = between[len(end):]
    pieces = _system_pieces(head_s, close_s, head_n, user_open, _token(tokenizer, "bos_token"))
    if pieces is None:
        raise fail("its system prompt is not a block inside the first turn")
    prefix, before, system_open, system_close, after, template_default = pieces
    fmt = TurnFormat(
        prefix=prefix, before_system=before, system_open=system_open, system_close=system_close,
        after_system=after, mid=mid, end=end,
        default_system=default_system if default_system is not None else template_default,
        stops=_stops(renderer, tokenizer, end),
    )
    mismatch = first_mismatch(fmt.render, renderer, default_system)
    if mismatch is not None:
        raise fail(f"the derived pieces render {mismatch!r} differently")
    return fmt


def first_mismatch(
    render: Callable[[str | None, Turns], str], renderer: Renderer,
    default_system: str | None = None,
) -> str | None:
    """The first probe conversation's text where `render` and `renderer` differ, else None.

    `default_system` stands in for a missing system prompt on the renderer's side, as
    training's model.default_system does.
    """
    k = 0
    for n_turns in (1, 2, 3):
        for system in _PROBE_SYSTEMS:
            turns = []
            for _ in range(n_turns):
                user, assistant = (_PROBE_TEXTS[(k + j) % len(_PROBE_TEXTS)] for j in (0, 1))
                turns.append((user, assistant))
                k += 1
            training_system = system or default_system
            expected = renderer.render_reference(_conversation(training_system, turns)).text
            if render(system, turns) != expected:
                return expected
    return None


def set_jinja(tokenizer: PreTrainedTokenizerBase, fmt: TurnFormat, renderer: Renderer) -> None:
    """Give `tokenizer` the jinja form of `fmt`, checked to render as `renderer` (training's).

    Raises:
        InternalError: the jinja renders a probe conversation differently (a bug).
    """
    from tuneforge.data.chat_template import TokenizerTemplate

    tokenizer.chat_template = fmt.jinja()
    jinja = TokenizerTemplate(tokenizer)
    mismatch = first_mismatch(
        lambda system, turns: jinja.render_reference(_conversation(system, turns)).text,
        renderer, fmt.default_system)
    if mismatch is not None:
        raise InternalError(f"the generated jinja chat template renders {mismatch!r} differently")


def _conversation(system: str | None, turns: Turns) -> Conversation:
    messages: list[Message] = []
    for user, assistant in turns:
        messages.append(Message("user", user))
        if assistant is not None:
            messages.append(Message("assistant", assistant))
    return Conversation(tuple(messages), system=system)


def _system_pieces(
    head_s: str, close_s: str, head_n: str, user_open: str, bos: str | None
) -> tuple[str, str, str, str, str, str] | None:
    """(prefix, before_system, system_open, system_close, after_system, default_system).

    With a system text the first turn opens `head_s SYSTEM close_s`, without it `head_n`.
    `user_open` splits into before + after the system block; a prefix (BOS only) comes once.
    """
    for prefix in ("", bos or ""):
        if not (head_s.startswith(prefix) and head_n.startswith(prefix)):
            continue
        hs, hn = head_s[len(prefix):], head_n[len(prefix):]
        for k in range(len(user_open) + 1):
            before, after = user_open[:k], user_open[k:]
            if not (hs.startswith(before) and close_s.endswith(after)):
                continue
            system_open = hs[len(before):]
            system_close = close_s[: len(close_s) - len(after)]
            if hn == user_open:
                return prefix, before, system_open, system_close, after, ""
            head, tail = before + system_open, system_close + after
            if hn.startswith(head) and hn.endswith(tail) and len(hn) > len(head) + len(tail):
                default = hn[len(head): len(hn) - len(tail)]
                return prefix, before, system_open, system_close, after, default
    return None


def _stops(renderer: Renderer, tokenizer: PreTrainedTokenizerBase, end: str) -> tuple[str, ...]:
    """The special token that ends a reply, then the eos token and the template's stop words."""
    specials = {*tokenizer.all_special_tokens,
                *(t.content for t in tokenizer.added_tokens_decoder.values() if t.special)}
    special = sorted((t for t in specials if t and end.startswith(t)), key=len, reverse=True)
    stops = special[:1]
    words: list[str] = []
    eos = _token(tokenizer, "eos_token")
    if isinstance(renderer, NamedTemplate):
        words = list(renderer.spec.stop_words)
        if renderer.spec.replace_eos and words:
            eos = words[0]
    stops += [eos] if eos else []
    stops += words
    return tuple(dict.fromkeys(stops))


def _split(text: str, sentinels: list[str]) -> list[str] | None:
    """`text` cut around each sentinel, which must each appear once and in order; else None."""
    if any(text.count(s) != 1 for s in sentinels):
        return None
    starts = [text.index(s) for s in sentinels]
    if starts != sorted(starts):
        return None
    ends = [start + len(s) for start, s in zip(starts, sentinels, strict=True)]
    return [text[a:b] for a, b in zip([0, *ends], [*starts, len(text)], strict=True)]


def _token(tokenizer: PreTrainedTokenizerBase, attr: str) -> str | None:
    value = getattr(tokenizer, attr, None)
    return value if isinstance(value, str) and value else None
