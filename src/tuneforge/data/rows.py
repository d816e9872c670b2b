"""Reading fields of a raw row: the problem type, the column/tag specs and typed getters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuneforge.data.records import Kind, Message, ToolCall


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


def type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def get_column(row: Mapping[str, Any], column: str, *, required: bool = True) -> Any:
    if column not in row:
        if required:
            raise RowProblem("missing column", column, f"missing column {column!r}")
        return None
    return row[column]


def as_string(value: Any, where: str, *, empty_ok: bool = True, reason: str = "wrong type") -> str:
    if not isinstance(value, str):
        raise RowProblem(reason, where, f"expected a string, got {type_name(value)} {value!r:.60}")
    if not empty_ok and not value.strip():
        raise RowProblem("empty text", where, "expected non-empty text, got an empty string")
    return value


def optional_string(row: Mapping[str, Any], column: str | None) -> str | None:
    if not column or row.get(column) in (None, ""):
        return None
    return as_string(row[column], column)


def tools_json(row: Mapping[str, Any], column: str | None) -> str | None:
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
    raise RowProblem("wrong type", column, f"expected a list of tools, got {type_name(value)}")


def tool_calls_from_text(text: str, where: str) -> tuple[ToolCall, ...]:
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


def require_response(message: Message, where: str) -> None:
    if not message.tool_calls and not message.content.strip():
        raise RowProblem("empty response", where, "expected a non-empty assistant response")


def kto_tag(row: Mapping[str, Any], cols: Columns) -> bool:
    column = cols.kto_tag or "kto_tag"
    value = get_column(row, column)
    if not isinstance(value, bool):
        raise RowProblem("wrong type", column, f"expected true or false, got {value!r:.40}")
    return value
