"""Rows -> canonical records: alpaca, sharegpt, OpenAI messages, preference, KTO, text,
FlagEmbedding pairs and rerank triples.

Follows LLaMA-Factory's converter rules (sharegpt roles alternate user/observation then
assistant/function; an SFT sample ends with an assistant turn, a ranking sample with a user
turn) but a bad row raises `RowProblem` naming the field and the reason instead of being
skipped silently; the loader turns those into a drop report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuneforge.data.records import (
    ChatExample,
    EmbeddingExample,
    Example,
    Kind,
    KTOExample,
    Location,
    Message,
    PreferenceExample,
    RerankExample,
    TextExample,
    ToolCall,
)
from tuneforge.errors import DataError


class RowProblem(Exception):
    """One row cannot become a record: `reason` is the short category counted in reports."""

    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Columns:
    """dataset_info.json `columns`, with LLaMA-Factory's defaults."""

    prompt: str | None = "instruction"
    query: str | None = "input"
    response: str | None = "output"
    history: str | None = None
    messages: str = "conversations"
    system: str | None = None
    tools: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    kto_tag: str | None = None


@dataclass(frozen=True)
class Tags:
    """dataset_info.json `tags` for sharegpt, with LLaMA-Factory's defaults."""

    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str = "system"


@dataclass(frozen=True)
class FormatSpec:
    """How to read the rows of one dataset."""

    formatting: str
    kind: Kind
    columns: Columns = field(default_factory=Columns)
    tags: Tags = field(default_factory=Tags)
    ranking: bool = False


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _get(row: Mapping[str, Any], column: str, *, required: bool = True) -> Any:
    if column not in row:
        if required:
            raise RowProblem("missing column", column, f"missing column {column!r}")
        return None
    return row[column]


def _string(value: Any, where: str, *, empty_ok: bool = True, reason: str = "wrong type") -> str:
    if not isinstance(value, str):
        raise RowProblem(reason, where, f"expected a string, got {_type_name(value)} {value!r:.60}")
    if not empty_ok and not value.strip():
        raise RowProblem("empty text", where, "expected non-empty text, got an empty string")
    return value


def _optional_string(row: Mapping[str, Any], column: str | None) -> str | None:
    if not column or row.get(column) in (None, ""):
        return None
    return _string(row[column], column)


def _tools(row: Mapping[str, Any], column: str | None) -> str | None:
    if not column or row.get(column) in (None, "", []):
        return None
    value = row[column]
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError as exc:
            raise RowProblem(
                "invalid tools", column, f"expected JSON tool schemas: {exc.msg}"
            ) from None
        return value
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    raise RowProblem("wrong type", column, f"expected a list of tools, got {_type_name(value)}")


def _tool_calls_from_text(text: str, where: str) -> tuple[ToolCall, ...]:
    """A sharegpt function_call turn's value: {"name", "arguments"} or a list of them."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowProblem(
            "invalid tool call", where, f"expected a JSON function call: {exc.msg}"
        ) from None
    calls = value if isinstance(value, list) else [value]
    out = []
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise RowProblem("invalid tool call", where, 'expected {"name": ..., "arguments": ...}')
        arguments = call.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        out.append(ToolCall(call["name"], arguments))
    return tuple(out)


# ---------------------------------------------------------------- alpaca


def _alpaca_prompt(row: Mapping[str, Any], cols: Columns) -> list[Message]:
    messages: list[Message] = []
    if cols.history and row.get(cols.history) not in (None, ""):
        history = row[cols.history]
        if not isinstance(history, list):
            raise RowProblem(
                "invalid history",
                cols.history,
                f"expected a list of [user, assistant] pairs, got {_type_name(history)}",
            )
        for i, pair in enumerate(history):
            where = f"{cols.history}[{i}]"
            if not (
                isinstance(pair, list | tuple)
                and len(pair) == 2
                and all(isinstance(t, str) for t in pair)
            ):
                raise RowProblem(
                    "invalid history",
                    where,
                    f"expected a [user, assistant] pair of strings, got {pair!r:.80}",
                )
            messages += [Message("user", pair[0]), Message("assistant", pair[1])]
    parts = []
    if cols.prompt:
        prompt = _get(row, cols.prompt)
        if _string(prompt, cols.prompt):
            parts.append(prompt)
    if cols.query and row.get(cols.query) not in (None, ""):
        parts.append(_string(row[cols.query], cols.query))
    if not parts:
        raise RowProblem(
            "empty prompt",
            cols.prompt or cols.query or "",
            "expected a non-empty instruction or input",
        )
    # the seed: `query` is joined to `prompt` with a newline, as LLaMA-Factory does
    messages.append(Message("user", "\n".join(parts)))
    return messages


def _alpaca(row: Mapping[str, Any], loc: Location, spec: FormatSpec) -> Example:
    cols = spec.columns
    if spec.kind == "pt":
        column = cols.prompt or "text"
        return TextExample(_string(_get(row, column), column, empty_ok=False), loc)
    prompt = _alpaca_prompt(row, cols)
    system, tools = _optional_string(row, cols.system), _tools(row, cols.tools)
    if spec.kind == "pairwise":
        chosen, rejected = _alpaca_pair(row, cols)
        return PreferenceExample(
            tuple(prompt),
            Message("assistant", chosen),
            Message("assistant", rejected),
            loc,
            system,
            tools,
        )
    response_col = cols.response or "output"
    response = _string(_get(row, response_col), response_col)
    if not response.strip():
        raise RowProblem("empty response", response_col, "expected a non-empty response")
    messages = (*prompt, Message("assistant", response))
    if spec.kind == "kto":
        return KTOExample(messages, _kto_tag(row, cols), loc, system, tools)
    return ChatExample(messages, loc, system, tools)


def _alpaca_pair(row: Mapping[str, Any], cols: Columns) -> tuple[str, str]:
    if cols.chosen and cols.rejected:
        return (
            _string(_get(row, cols.chosen), cols.chosen, empty_ok=False),
            _string(_get(row, cols.rejected), cols.rejected, empty_ok=False),
        )
    column = cols.response or "output"
    value = _get(row, column)
    if not isinstance(value, list) or len(value) != 2:
        got = f"{len(value)} items" if isinstance(value, list) else _type_name(value)
        raise RowProblem(
            "ranking output not two items",
            column,
            f"expected [chosen, rejected], a list of two strings, got {got}",
        )
    return (
        _string(value[0], f"{column}[0]", empty_ok=False),
        _string(value[1], f"{column}[1]", empty_ok=False),
    )


def _kto_tag(row: Mapping[str, Any], cols: Columns) -> bool:
    column = cols.kto_tag or "kto_tag"
    value = _get(row, column)
    if not isinstance(value, bool):
        raise RowProblem("wrong type", column, f"expected true or false, got {value!r:.40}")
    return value


# ---------------------------------------------------------------- sharegpt


def _sharegpt_turn(turn: Any, where: str, tags: Tags) -> tuple[str, str]:
    if not isinstance(turn, dict):
        raise RowProblem("wrong type", where, f"expected a message object, got {_type_name(turn)}")
    role = _get(turn, tags.role_tag, required=False)
    if role is None:
        raise RowProblem(
            "missing column", f"{where}.{tags.role_tag}", f"missing key {tags.role_tag!r}"
        )
    content = _get(turn, tags.content_tag, required=False)
    if content is None:
        raise RowProblem(
            "missing column", f"{where}.{tags.content_tag}", f"missing key {tags.content_tag!r}"
        )
    return str(role), _string(content, f"{where}.{tags.content_tag}")


def _sharegpt_message(role_tag: str, content: str, where: str, tags: Tags) -> Message:
    if role_tag == tags.user_tag:
        return Message("user", content)
    if role_tag == tags.observation_tag:
        return Message("tool", content)
    if role_tag == tags.function_tag:
        return Message("assistant", "", tool_calls=_tool_calls_from_text(content, where))
    return Message("assistant", content)


def _sharegpt(row: Mapping[str, Any], loc: Location, spec: FormatSpec) -> Example:
    cols, tags = spec.columns, spec.tags
    turns = _get(row, cols.messages)
    if not isinstance(turns, list):
        raise RowProblem(
            "wrong type", cols.messages, f"expected a list of messages, got {_type_name(turns)}"
        )
    system = _optional_string(row, cols.system)
    parsed = [_sharegpt_turn(t, f"{cols.messages}[{i}]", tags) for i, t in enumerate(turns)]
    offset = 0
    if parsed and tags.system_tag and parsed[0][0] == tags.system_tag:
        system, offset = parsed[0][1] or None, 1
    odd, even = (tags.user_tag, tags.observation_tag), (tags.assistant_tag, tags.function_tag)
    messages = []
    for i, (role, content) in enumerate(parsed[offset:]):
        where = f"{cols.messages}[{i + offset}]"
        allowed = odd if i % 2 == 0 else even
        if role not in allowed:
            raise RowProblem(
                "invalid role order",
                f"{where}.{tags.role_tag}",
                f"expected {' or '.join(map(repr, allowed))} at this turn, got {role!r}",
            )
        messages.append(_sharegpt_message(role, content, where, tags))
    tools = _tools(row, cols.tools)
    if spec.kind == "pairwise":
        if len(messages) % 2 == 0:
            raise RowProblem(
                "invalid message count",
                cols.messages,
                f"expected an odd number of turns ending with a user turn, got {len(messages)}",
            )
        chosen, rejected = (
            _sharegpt_choice(row, name, tags, even)
            for name in (cols.chosen or "chosen", cols.rejected or "rejected")
        )
        return PreferenceExample(tuple(messages), chosen, rejected, loc, system, tools)
    if not messages or len(messages) % 2 != 0:
        raise RowProblem(
            "invalid message count",
            cols.messages,
            f"expected user/assistant pairs ending with an assistant turn, "
            f"got {len(messages)} turns",
        )
    _require_response(messages[-1], f"{cols.messages}[{len(parsed) - 1}]")
    if spec.kind == "kto":
        return KTOExample(tuple(messages), _kto_tag(row, cols), loc, system, tools)
    return ChatExample(tuple(messages), loc, system, tools)


def _sharegpt_choice(
    row: Mapping[str, Any], column: str, tags: Tags, even: tuple[str, str]
) -> Message:
    role, content = _sharegpt_turn(_get(row, column), column, tags)
    if role not in even:
        raise RowProblem(
            "invalid role order",
            f"{column}.{tags.role_tag}",
            f"expected {' or '.join(map(repr, even))}, got {role!r}",
        )
    message = _sharegpt_message(role, content, column, tags)
    _require_response(message, column)
    return message


def _require_response(message: Message, where: str) -> None:
    if not message.tool_calls and not message.content.strip():
        raise RowProblem("empty response", where, "expected a non-empty assistant response")


# ---------------------------------------------------------------- OpenAI messages

OPENAI_ROLES = ("system", "user", "assistant", "tool")


def _openai_message(raw: Any, where: str) -> Message:
    if not isinstance(raw, dict):
        raise RowProblem("wrong type", where, f"expected a message object, got {_type_name(raw)}")
    role = raw.get("role")
    if role == "developer":
        role = "system"
    if role not in OPENAI_ROLES:
        raise RowProblem(
            "invalid role",
            f"{where}.role",
            f"expected one of {'/'.join(OPENAI_ROLES)}, got {role!r}",
        )
    calls = _openai_tool_calls(raw.get("tool_calls"), f"{where}.tool_calls")
    content = raw.get("content")
    if content is None and not calls:
        raise RowProblem("missing column", f"{where}.content", "missing key 'content'")
    content = _string(content or "", f"{where}.content")
    weight = raw.get("weight")
    if weight is not None:
        if role != "assistant":
            raise RowProblem(
                "invalid weight", f"{where}.weight", "expected weight only on assistant messages"
            )
        if weight not in (0, 1) or isinstance(weight, bool):
            raise RowProblem(
                "invalid weight", f"{where}.weight", f"expected 0 or 1, got {weight!r}"
            )
    name = raw.get("name")
    return Message(role, content, calls, weight, name if isinstance(name, str) else None)


def _openai_tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    if raw in (None, []):
        return ()
    if not isinstance(raw, list):
        raise RowProblem("wrong type", where, f"expected a list, got {_type_name(raw)}")
    calls = []
    for i, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RowProblem(
                "invalid tool call",
                f"{where}[{i}]",
                'expected {"type": "function", "function": {"name", "arguments"}}',
            )
        arguments = function.get("arguments", "{}")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append(ToolCall(function["name"], arguments, call.get("id")))
    return tuple(calls)


def _openai_messages(value: Any, column: str) -> tuple[str | None, list[Message]]:
    if not isinstance(value, list) or not value:
        raise RowProblem(
            "wrong type", column, f"expected a non-empty list of messages, got {_type_name(value)}"
        )
    messages = [_openai_message(m, f"{column}[{i}]") for i, m in enumerate(value)]
    system = None
    if messages[0].role == "system":
        system, messages = messages[0].content, messages[1:]
    for i, message in enumerate(messages):
        if message.role == "system":
            raise RowProblem(
                "invalid role order",
                f"{column}[{i + (system is not None)}].role",
                "expected a system message only as the first message",
            )
    return system, messages


def _openai(row: Mapping[str, Any], loc: Location, spec: FormatSpec) -> Example:
    cols = spec.columns
    if spec.kind == "pairwise":
        return _openai_preference(row, loc)
    column = cols.messages if cols.messages != "conversations" else "messages"
    system, messages = _openai_messages(_get(row, column), column)
    if not messages or messages[-1].role != "assistant":
        raise RowProblem(
            "invalid message count",
            column,
            "expected the conversation to end with an assistant message",
        )
    if not any(m.role == "user" for m in messages):
        raise RowProblem("invalid message count", column, "expected at least one user message")
    _require_response(messages[-1], f"{column}[{len(row[column]) - 1}]")
    tools = _tools(row, cols.tools or "tools")
    if spec.kind == "kto":
        return KTOExample(tuple(messages), _kto_tag(row, cols), loc, system, tools)
    return ChatExample(tuple(messages), loc, system, tools)


def _openai_preference(row: Mapping[str, Any], loc: Location) -> Example:
    """OpenAI's DPO JSONL: input.messages, preferred_output, non_preferred_output."""
    payload = _get(row, "input")
    if not isinstance(payload, dict):
        raise RowProblem("wrong type", "input", f"expected an object, got {_type_name(payload)}")
    system, prompt = _openai_messages(_get(payload, "messages"), "input.messages")
    if prompt[-1].role not in ("user", "tool"):
        raise RowProblem(
            "invalid message count",
            "input.messages",
            "expected the prompt to end with a user or tool message",
        )
    outputs = []
    for column in ("preferred_output", "non_preferred_output"):
        value = _get(row, column)
        if not isinstance(value, list) or len(value) != 1:
            raise RowProblem("wrong type", column, "expected a list of one assistant message")
        message = _openai_message(value[0], f"{column}[0]")
        if message.role != "assistant":
            raise RowProblem(
                "invalid role", f"{column}[0].role", f"expected 'assistant', got {message.role!r}"
            )
        _require_response(message, f"{column}[0]")
        outputs.append(message)
    tools = _tools(payload, "tools")
    return PreferenceExample(tuple(prompt), outputs[0], outputs[1], loc, system, tools)


# ---------------------------------------------------------------- explicit preference columns


def _preference_side(value: Any, column: str) -> Message:
    if isinstance(value, str):
        return Message("assistant", _string(value, column, empty_ok=False))
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        message = _openai_message(value, column)
        _require_response(message, column)
        return message
    raise RowProblem(
        "wrong type", column, f"expected a string or an assistant message, got {_type_name(value)}"
    )


def _preference(row: Mapping[str, Any], loc: Location, spec: FormatSpec) -> Example:
    """{prompt|instruction, chosen, rejected}: strings or TRL's conversational messages."""
    column = "prompt" if "prompt" in row else (spec.columns.prompt or "instruction")
    value = _get(row, column)
    if isinstance(value, list):
        system, prompt = _openai_messages(value, column)
    else:
        system = _optional_string(row, spec.columns.system or "system")
        prompt = [Message("user", _string(value, column, empty_ok=False))]
    chosen = _preference_side(_get(row, "chosen"), "chosen")
    rejected = _preference_side(_get(row, "rejected"), "rejected")
    return PreferenceExample(
        tuple(prompt), chosen, rejected, loc, system, _tools(row, spec.columns.tools or "tools")
    )


# ---------------------------------------------------------------- text, embedding, rerank


def _text(row: Mapping[str, Any], loc: Location, spec: FormatSpec) -> Example:
    column = spec.columns.prompt if spec.columns.prompt not in (None, "instruction") else "text"
    return TextExample(_string(_get(row, column), column, empty_ok=False), loc)


def _string_list(value: Any, column: str, *, empty_ok: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise RowProblem(
            "wrong type", column, f"expected a list of strings, got {_type_name(value)}"
        )
    if not value and not empty_ok:
        raise RowProblem("empty text", column, "expected at least one passage")
    return tuple(_string(v, f"{column}[{i}]", empty_ok=False) for i, v in enumerate(value))


def _embedding(row: Mapping[str, Any], loc: Location, spec: FormatSpec) -> Example:
    query = _string(_get(row, "query"), "query", empty_ok=False)
    pos = _string_list(_get(row, "pos"), "pos", empty_ok=False)
    neg = _string_list(row.get("neg", []), "neg", empty_ok=True)
    return EmbeddingExample(query, pos, neg, loc, _optional_string(row, "prompt"))


def _rerank(row: Mapping[str, Any], loc: Location, spec: FormatSpec) -> list[Example]:
    query = _string(_get(row, "query"), "query", empty_ok=False)
    if "passage" in row:
        label = _get(row, "label")
        if isinstance(label, str):  # CSV cells are text
            try:
                label = float(label)
            except ValueError:
                pass
        if isinstance(label, bool) or not isinstance(label, int | float):
            raise RowProblem("wrong type", "label", f"expected a number, got {label!r:.40}")
        return [
            RerankExample(
                query, _string(row["passage"], "passage", empty_ok=False), float(label), loc
            )
        ]
    pos = _string_list(_get(row, "pos"), "pos", empty_ok=False)
    neg = _string_list(row.get("neg", []), "neg", empty_ok=True)
    return [RerankExample(query, p, 1.0, loc) for p in pos] + [
        RerankExample(query, n, 0.0, loc) for n in neg
    ]


CONVERTERS = {
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "openai": _openai,
    "preference": _preference,
    "text": _text,
    "embedding": _embedding,
}


def convert(row: Any, loc: Location, spec: FormatSpec) -> list[Example]:
    """One row as canonical records (rerank rows may expand); RowProblem when it is bad."""
    if not isinstance(row, dict):
        raise RowProblem("wrong type", "", f"expected a JSON object, got {_type_name(row)}")
    if spec.formatting == "rerank":
        return _rerank(row, loc, spec)
    return [CONVERTERS[spec.formatting](row, loc, spec)]


# ---------------------------------------------------------------- inference


def infer_spec(row: Any, formatting: str = "auto", kind: Kind | None = None) -> FormatSpec:
    """Guess the format (and kind) of a plain file from its first record."""
    keys = set(row) if isinstance(row, dict) else set()
    if formatting == "auto":
        formatting = _infer_formatting(keys, row)
    if kind is None:
        kind = _infer_kind(formatting, keys, row)
    columns = Columns(
        system="system",
        history="history",
        tools="tools",
        kto_tag="kto_tag" if "kto_tag" in keys else ("label" if "label" in keys else None),
        messages="messages" if formatting == "openai" else "conversations",
        chosen="chosen" if "chosen" in keys else None,
        rejected="rejected" if "rejected" in keys else None,
    )
    if formatting == "sharegpt" and "conversations" not in keys and "messages" in keys:
        columns = Columns(**{**columns.__dict__, "messages": "messages"})
    return FormatSpec(
        formatting, kind, columns, _infer_tags(row, columns), ranking=kind == "pairwise"
    )


def _infer_formatting(keys: set[str], row: Any) -> str:
    if {"query", "pos"} <= keys:
        return "embedding"
    if {"query", "passage"} <= keys:
        return "rerank"
    if "preferred_output" in keys:
        return "openai"
    if "conversations" in keys:
        return "sharegpt"
    if "messages" in keys:
        first = row["messages"][0] if isinstance(row["messages"], list) and row["messages"] else {}
        return "sharegpt" if isinstance(first, dict) and "from" in first else "openai"
    if "instruction" in keys:
        return "alpaca"
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if "text" in keys:
        return "text"
    raise DataError.one(
        f"cannot infer the dataset format from the keys {sorted(keys)}; expected alpaca "
        "(instruction/input/output), sharegpt (conversations), openai (messages), text, "
        "preference (chosen/rejected), embedding (query/pos/neg) or rerank "
        "(query/passage/label), or set formatting",
    )


def _infer_kind(formatting: str, keys: set[str], row: Any) -> Kind:
    if formatting == "text":
        return "pt"
    if formatting in ("embedding", "rerank"):
        return formatting  # type: ignore[return-value]
    if formatting == "preference" or "preferred_output" in keys or {"chosen", "rejected"} <= keys:
        return "pairwise"
    if "kto_tag" in keys or isinstance(row.get("label"), bool):
        return "kto"
    if formatting == "alpaca" and isinstance(row.get("output"), list):
        return "pairwise"
    return "sft"


def _infer_tags(row: Any, columns: Columns) -> Tags:
    turns = row.get(columns.messages) if isinstance(row, dict) else None
    first = turns[0] if isinstance(turns, list) and turns else None
    if isinstance(first, dict) and "role" in first and "from" not in first:
        return Tags(
            role_tag="role",
            content_tag="content",
            user_tag="user",
            assistant_tag="assistant",
            observation_tag="tool",
            function_tag="function_call",
            system_tag="system",
        )
    return Tags()
