"""OpenAI's fine-tuning JSONL (messages with weights, tool calls, tools), its DPO JSONL, and
explicit preference columns (plain strings or TRL's conversational messages)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tuneforge.data.records import (
    ChatExample,
    Example,
    KTOExample,
    Location,
    Message,
    PreferenceExample,
    ToolCall,
)
from tuneforge.data.rows import (
    FormatSpec,
    RowProblem,
    as_string,
    get_column,
    kto_tag,
    optional_string,
    require_response,
    tools_json,
    type_name,
)

OPENAI_ROLES = ("system", "user", "assistant", "tool")


def openai_message(raw: Any, where: str) -> Message:
    if not isinstance(raw, dict):
        raise RowProblem("wrong type", where, f"expected a message object, got {type_name(raw)}")
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
    content = as_string(content or "", f"{where}.content")
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
        raise RowProblem("wrong type", where, f"expected a list, got {type_name(raw)}")
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


def openai_messages(value: Any, column: str) -> tuple[str | None, list[Message]]:
    if not isinstance(value, list) or not value:
        raise RowProblem(
            "wrong type", column, f"expected a non-empty list of messages, got {type_name(value)}"
        )
    messages = [openai_message(m, f"{column}[{i}]") for i, m in enumerate(value)]
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


def convert_openai(row: Mapping[str, Any], loc: Location, spec: FormatSpec) -> Example:
    cols = spec.columns
    if spec.kind == "pairwise":
        return _openai_preference(row, loc)
    column = cols.messages if cols.messages != "conversations" else "messages"
    system, messages = openai_messages(get_column(row, column), column)
    if not messages or messages[-1].role != "assistant":
        raise RowProblem(
            "invalid message count",
            column,
            "expected the conversation to end with an assistant message",
        )
    if not any(m.role == "user" for m in messages):
        raise RowProblem("invalid message count", column, "expected at least one user message")
    require_response(messages[-1], f"{column}[{len(row[column]) - 1}]")
    tools = tools_json(row, cols.tools or "tools")
    if spec.kind == "kto":
        return KTOExample(tuple(messages), kto_tag(row, cols), loc, system, tools)
    return ChatExample(tuple(messages), loc, system, tools)


def _openai_preference(row: Mapping[str, Any], loc: Location) -> Example:
    """OpenAI's DPO JSONL: input.messages, preferred_output, non_preferred_output."""
    payload = get_column(row, "input")
    if not isinstance(payload, dict):
        raise RowProblem("wrong type", "input", f"expected an object, got {type_name(payload)}")
    system, prompt = openai_messages(get_column(payload, "messages"), "input.messages")
    if prompt[-1].role not in ("user", "tool"):
        raise RowProblem(
            "invalid message count",
            "input.messages",
            "expected the prompt to end with a user or tool message",
        )
    outputs = []
    for column in ("preferred_output", "non_preferred_output"):
        value = get_column(row, column)
        if not isinstance(value, list) or len(value) != 1:
            raise RowProblem("wrong type", column, "expected a list of one assistant message")
        message = openai_message(value[0], f"{column}[0]")
        if message.role != "assistant":
            raise RowProblem(
                "invalid role", f"{column}[0].role", f"expected 'assistant', got {message.role!r}"
            )
        require_response(message, f"{column}[0]")
        outputs.append(message)
    tools = tools_json(payload, "tools")
    return PreferenceExample(tuple(prompt), outputs[0], outputs[1], loc, system, tools)


def _preference_side(value: Any, column: str) -> Message:
    if isinstance(value, str):
        return Message("assistant", as_string(value, column, empty_ok=False))
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        message = openai_message(value, column)
        require_response(message, column)
        return message
    raise RowProblem(
        "wrong type", column, f"expected a string or an assistant message, got {type_name(value)}"
    )


def convert_preference(row: Mapping[str, Any], loc: Location, spec: FormatSpec) -> Example:
    """{prompt|instruction, chosen, rejected}: strings or TRL's conversational messages."""
    column = "prompt" if "prompt" in row else (spec.columns.prompt or "instruction")
    value = get_column(row, column)
    if isinstance(value, list):
        system, prompt = openai_messages(value, column)
    else:
        system = optional_string(row, spec.columns.system or "system")
        prompt = [Message("user", as_string(value, column, empty_ok=False))]
    chosen = _preference_side(get_column(row, "chosen"), "chosen")
    rejected = _preference_side(get_column(row, "rejected"), "rejected")
    return PreferenceExample(
        tuple(prompt), chosen, rejected, loc, system, tools_json(row, spec.columns.tools or "tools")
    )
