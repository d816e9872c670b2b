"""Guess the format and kind of a plain data file from its first record."""

from __future__ import annotations

from typing import Any

from tuneforge.data.records import Kind
from tuneforge.data.rows import Columns, FormatSpec, Tags
from tuneforge.errors import DataError


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
